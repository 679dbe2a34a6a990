"""Per-iteration loss traces of the bundles' training runs: a behaviour baseline for refactors.

A refactor that means to change nothing numerically (moving code, renaming the library package)
must leave every training run's losses where they were. :func:`trace_losses` runs a bundle's
``configs/train.json`` + ``configs/cpu.json`` in this process with :class:`monai.bundle.ConfigParser`,
exactly as ``python -m monai.bundle run`` would resolve them, on a few real cases, and records the
scalar entries of ``engine.state.output`` (``loss``, ``supervised``, ``consistency``, ...) of the
first iterations of every *training* engine the run builds (evaluators are not traced), then
terminates that engine. ``tests/record_loss_traces.py`` writes them to ``tests/data/loss_traces.json``
and ``tests/test_loss_traces.py`` checks a later tree against that file.

Why these choices:

* The bundle configs, not library calls, are the entry point: the only names tied to the library
  are the config files, so the trace survives a rename of the package (or of any class the
  configs instantiate) and checks exactly what a user runs.
* Engines are stopped with ``engine.terminate()`` after ``iterations`` steps instead of lowering
  ``num_iterations``: ramps, learning-rate schedules and epoch lengths depend on the scheduled
  length, so the first steps of a terminated full run are the first steps users get.
* A run with several training stages (SFR's SAM fine-tuning, then the V-Net re-training) is traced
  stage by stage: a terminated stage still ends normally (its ``COMPLETED`` handlers run and its
  caller saves what it trained), so the next stage starts from the 20-iteration model. Once the
  last expected trainer has been traced the run is abandoned (nothing after it is traced).
* One thread, ``set_determinism(seed=0)`` (what the configs do), ``num_workers=0`` and a fresh
  output folder (a checkpoint left there would be resumed) make the numbers repeatable.
* Data: a handful of real cases, symlinked into a temporary folder in the layout the bundle's
  loader reads (files keep their names: SSL-MedSAM2's TFFS seeds its insertion positions from the
  file name). Labelled cases are listed with a label, unlabelled ones without, and
  ``num_labelled`` is the number of labelled ones, so the split does not depend on a shuffle.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from samssl.utils.errors import find_in_chain

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"
DATA_ROOT = Path(os.environ.get("SAM_SSL_DATA_DIR", ROOT.parent / "shared" / "data"))
RECORD_FILE = Path(__file__).resolve().parent / "data" / "loss_traces.json"

ITERATIONS = 20
#: The comparison the test applies: relative 1e-5, absolute 1e-7 for values near zero.
REL_TOL = 1e-5
ABS_TOL = 1e-7

# Real cases of the subsets (first ones by id; the LA files are all 88 slices deep).
LA_LABELLED = 2
LA_UNLABELLED = 2
PH2_LABELLED = 8
PH2_UNLABELLED = 16


@dataclass(frozen=True)
class TraceSpec:
    """What one trace runs.

    Attributes:
        bundle: folder under ``bundles/``.
        data: ``"la"`` (MSD-style LA volumes) or ``"ph2"`` (PH2 dermoscopy layout).
        configs: config files of the bundle merged in order (``train.json`` + ``cpu.json`` [+ a baseline]).
        trainers: training engines the run builds that are traced, in order; the run is abandoned
            after the last of them.
        overrides: config ids set after the files are merged (beyond the common ones that move every
            output into the trace's folder and take the data subset).
        note: what the trace covers, for the record.
        build_first: config expressions evaluated just before the ``training`` step that runs the
            stages (``run_stages``), so that objects are built in the order the config built them when the record
            was made. Moving SFR's and SSL-MedSAM2's steps out of config resolution into ``"stages"``
            changed that order, and with it the point of the global random stream at which each
            network is initialised and each data loader seeded; replaying the old order shows that
            nothing else changed (the numbers then match the record).
    """

    bundle: str
    data: str
    configs: tuple[str, ...] = ("train.json", "cpu.json")
    trainers: int = 1
    overrides: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    build_first: tuple[str, ...] = ()


#: Every trace, by name (the key in ``loss_traces.json``).
TRACES: dict[str, TraceSpec] = {
    "uamt_skin": TraceSpec(
        "uamt_skin", "ph2",
        note="UAMT trainer (dual-head student, EMA teacher, uncertainty-guided patch exchange), CPU preset"),
    "samkd_dualtask_skin": TraceSpec(
        "samkd_dualtask_skin", "ph2",
        note="dual-task SAM-KD trainer (LiteMedSAM embeddings precomputed at start), CPU preset"),
    "semisam_la": TraceSpec(
        "semisam_la", "la",
        note="mean-teacher V-Net + SAM-assisted consistency (LiteMedSAM slice-wise), CPU preset"),
    "sfr_la": TraceSpec(
        "sfr_la", "la", trainers=2,
        # before stages: the SAM-alone evaluator (V-Net, validation loader), the labelled loader, then
        # SAM's stages ran while the unlabelled loader was being built
        build_first=("$@validate#sam_alone_evaluator", "$@train#dataloader", "$@sfr_stages.run()"),
        note="trainer 0: stage 1 (StitchedSAM LoRA fine-tuning, terminated after the traced iterations, "
             "sfr#finetune#num_iterations kept at the preset's 200); stage 2 pseudo-labels the unlabelled "
             "volumes with that model; trainer 1: the V-Net re-training (mean teacher + pseudo-label term)"),
    "ssl_medsam2/suponly": TraceSpec(
        "ssl_medsam2", "la", configs=("train.json", "cpu.json", "baselines/suponly.json"),
        build_first=("$@validate#dataloader",),  # before stages: the validation loader, then the pipeline
        note="SupOnly baseline: the planned DynUNet's supervised fold training on the labelled cases"),
    "ssl_medsam2/fsl": TraceSpec(
        "ssl_medsam2", "la", overrides={"fsl#num_folds": 2, "fsl#guards": False},
        build_first=("$@validate#dataloader",),
        note="full method: TFFS (LiteMedSAM box chain) pseudo-labels the unlabelled volumes, then the first "
             "FSL fold's training (round 0, fold 0); fsl#num_folds lowered from 5 to 2 because the subset has "
             f"{LA_UNLABELLED} unlabelled volumes (K <= unlabelled cases); fsl#guards False: the paper's plain "
             "Algorithm 1, as recorded before the guards existed (the labelled share changes the batches)"),
}


# ------------------------------------------------------------------------------------------ data
def _link(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.is_symlink():
        dest.symlink_to(source.resolve())


def la_subset(la_root: Path, dest: Path, labelled: int = LA_LABELLED, unlabelled: int = LA_UNLABELLED) -> Path:
    """An MSD-style folder under ``dest``: the first ``labelled + unlabelled`` LA cases by id, symlinked.

    ``dataset.json`` lists the first ``labelled`` cases with their label and the next ``unlabelled``
    ones image only (an unannotated scan always goes to the unlabelled pool), so the bundle's split
    with ``num_labelled=labelled`` is these cases whatever the seed. Paths are relative.
    """
    description = json.loads((la_root / "dataset.json").read_text())
    cases = sorted(description["training"], key=lambda e: Path(e["image"]).name)[: labelled + unlabelled]
    if len(cases) < labelled + unlabelled:
        raise ValueError(f"{la_root} lists {len(cases)} cases, fewer than {labelled + unlabelled}")
    root = dest / "la_subset"
    entries = []
    for i, case in enumerate(cases):
        image = Path("imagesTr") / Path(case["image"]).name
        _link(la_root / case["image"], root / image)
        entry = {"image": str(image)}
        if i < labelled:
            label = Path("labelsTr") / Path(case["label"]).name
            _link(la_root / case["label"], root / label)
            entry["label"] = str(label)
        entries.append(entry)
    subset = {k: description[k] for k in ("name", "tensorImageSize", "modality", "labels") if k in description}
    subset.update(numTraining=len(entries), training=entries,
                  description=f"{labelled} labelled + {unlabelled} unlabelled cases of {la_root} (loss-trace subset)")
    (root / "dataset.json").write_text(json.dumps(subset, indent=1) + "\n")
    return root


def ph2_subset(ph2_root: Path, dest: Path, count: int = PH2_LABELLED + PH2_UNLABELLED) -> Path:
    """A PH2-layout folder (``images/IMDxxx.jpg``, ``masks/IMDxxx_lesion.png``) of the first ``count`` cases, symlinked.

    Every case keeps its mask: the dermoscopy bundles split labelled/unlabelled themselves
    (``num_labelled`` of them, seeded) and drop the unlabelled cases' masks.
    """
    images = sorted((ph2_root / "images").glob("IMD*.jpg"))[:count]
    if len(images) < count:
        raise ValueError(f"{ph2_root / 'images'} holds {len(images)} PH2 images, fewer than {count}")
    root = dest / "ph2_subset"
    for image in images:
        _link(image, root / "images" / image.name)
        mask = ph2_root / "masks" / f"{image.stem}_lesion.png"
        _link(mask, root / "masks" / mask.name)
    return root


def real_data_subset(kind: str, dest: Path, data_root: Path = DATA_ROOT) -> Path:
    """The subset a trace of data ``kind`` (``"la"`` / ``"ph2"``) reads, built under ``dest``.

    Raises FileNotFoundError when the real data is absent (tests skip on it).
    """
    source = {"la": data_root / "la", "ph2": data_root / "dermoscopy" / "ph2"}[kind]
    if not source.exists():
        raise FileNotFoundError(f"real data not found at {source} (set SAM_SSL_DATA_DIR to the shared data folder)")
    dest = Path(dest)
    return la_subset(source, dest) if kind == "la" else ph2_subset(source, dest)


def num_labelled(kind: str) -> int:
    """Labelled cases of the subset of ``kind``: the ``num_labelled`` override."""
    return LA_LABELLED if kind == "la" else PH2_LABELLED


# ------------------------------------------------------------------------------------- tracing
class _TracingComplete(Exception):
    """Raised once the last expected trainer has been traced: the rest of the run is not needed."""


def _scalars(output: Any) -> dict[str, float]:
    """Every float / int / one-element tensor entry of a trainer's ``state.output`` (a dict of terms)."""
    if isinstance(output, Sequence) and output and isinstance(output[0], Mapping):
        output = output[0]  # decollated output: the loss terms are the same in every sample's dict
    if not isinstance(output, Mapping):
        raise TypeError(f"expected a dict of loss terms as engine.state.output, got {type(output).__name__}")
    values: dict[str, float] = {}
    for key, value in output.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            values[str(key)] = float(value.detach().reshape(()).item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values[str(key)] = float(value)
    return values


class LossTracer:
    """While active, every MONAI ``Trainer`` that runs records its first ``iterations`` outputs and stops.

    ``ignite.engine.Engine.run`` is wrapped (MONAI's ``Workflow.run`` calls it): a trainer gets an
    ``ITERATION_COMPLETED`` handler, added last so it sees the output every other handler saw, that
    records the scalar terms and calls ``engine.terminate()`` after ``iterations`` steps. Evaluators
    (and any plain ignite engine) run untouched. After ``max_trainers`` trainers the run is
    abandoned by an exception :func:`trace_losses` catches.
    """

    def __init__(self, iterations: int, max_trainers: int) -> None:
        self.iterations = int(iterations)
        self.max_trainers = int(max_trainers)
        self.traces: list[list[dict[str, float]]] = []
        self.trainer_names: list[str] = []

    def _record(self, engine: Any, trace: list[dict[str, float]]) -> None:
        trace.append({"trainer": len(self.traces) - 1, "iteration": int(engine.state.iteration),
                      **_scalars(engine.state.output)})
        if len(trace) >= self.iterations:
            engine.terminate()

    @contextlib.contextmanager
    def active(self) -> Iterator[LossTracer]:
        from ignite.engine import Engine, Events
        from monai.engines import Trainer

        original = Engine.run
        tracer = self

        def run(engine: Engine, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(engine, Trainer) or len(tracer.traces) >= tracer.max_trainers:
                return original(engine, *args, **kwargs)
            trace: list[dict[str, float]] = []
            tracer.traces.append(trace)
            tracer.trainer_names.append(type(engine).__name__)
            handle = engine.add_event_handler(Events.ITERATION_COMPLETED, tracer._record, trace)
            try:
                result = original(engine, *args, **kwargs)
            finally:
                handle.remove()
            if len(trace) < tracer.iterations:
                raise RuntimeError(f"{type(engine).__name__} stopped after {len(trace)} of the "
                                   f"{tracer.iterations} traced iterations (shorter schedule than the trace?)")
            if len(tracer.traces) >= tracer.max_trainers:
                raise _TracingComplete
            return result

        Engine.run = run  # type: ignore[method-assign]
        try:
            yield self
        finally:
            Engine.run = original  # type: ignore[method-assign]


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is ``error`` or in its cause chain (ConfigExpression wraps errors in RuntimeError)."""
    return find_in_chain(error, kind) is not None


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Intra-op threads 1 for the trace (reductions split over threads round differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _use_bundle(bundle: str) -> Path:
    """Make ``bundles/<bundle>/scripts`` the importable ``scripts`` package (as the bundle tests do)."""
    from bundle_testing import use_bundle  # tests/ is on sys.path under pytest and for tests/*.py scripts

    return use_bundle(bundle)


def _config_ids(config: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(config, Mapping):
        for key, value in config.items():
            path = f"{prefix}#{key}" if prefix else str(key)
            yield path
            yield from _config_ids(value, path)


def trace_overrides(spec: TraceSpec, data_dir: Path, out_dir: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config values a trace sets: data subset, outputs into ``out_dir``, seed 0, no workers, no
    validation, float32 (``amp`` False and every frozen encoder's ``encoder_runtime`` ``fp32``,
    whatever the CPU supports).

    Every id whose last part ends in ``cache_dir`` (SAM embedding caches, some default to
    ``<bundle>/runs``) is moved into ``out_dir`` too, so nothing is written into the project and no
    cache of an earlier run is read.
    """
    overrides: dict[str, Any] = {
        "dataset_dir": str(data_dir),
        "output_dir": str(out_dir / "output"),
        "model_dir": str(out_dir / "models"),
        "demo_dir": str(out_dir / "demo_data"),
        "seed": 0,
        "num_workers": 0,
        "num_val": 0,
        "val_dataset_dir": None,
        "num_labelled": num_labelled(spec.data),
        "amp": False,  # the record is float32; "auto" would autocast to bfloat16 on a CPU that has it
    }
    for config_id in _config_ids(config):
        name = config_id.split("#")[-1]
        if name.endswith("cache_dir") and not name.startswith("_"):
            overrides[config_id] = str(out_dir / "cache" / config_id.replace("#", "_"))
        if name.endswith("encoder_runtime") and not name.startswith("_"):
            overrides[config_id] = "fp32"  # the frozen encoder eager, as recorded, whatever a preset chooses
    overrides.update(spec.overrides)
    return overrides


@dataclass
class LossTrace:
    """A finished trace: the recorded iterations and what produced them."""

    iterations: list[dict[str, float]]
    trainers: list[str]
    overrides: dict[str, Any]
    seconds: float


def run_trace(name: str, data_dir: Path, out_dir: Path, iterations: int = ITERATIONS) -> LossTrace:
    """Run trace ``name`` (a key of :data:`TRACES`) on ``data_dir``, writing only under ``out_dir``."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    spec = TRACES[name]
    out_dir = Path(out_dir)
    if (out_dir / "output").exists() and any((out_dir / "output").iterdir()):
        raise FileExistsError(f"{out_dir / 'output'} is not empty: a checkpoint there would be resumed")
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = _use_bundle(spec.bundle)
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in spec.configs])
    overrides = trace_overrides(spec, Path(data_dir).absolute(), out_dir.absolute(), parser.get())
    for key, value in overrides.items():
        parser[key] = value
    if spec.build_first:
        training = list(parser["training"])
        work = next(i for i, step in enumerate(training) if "run_stages(" in str(step))  # later steps only report
        parser["training"] = training[:work] + list(spec.build_first) + training[work:]
    tracer = LossTracer(iterations, spec.trainers)
    start = time.perf_counter()
    with _one_thread(), tracer.active():
        set_determinism(seed=0)  # the configs do it again before building anything random
        try:
            parser.get_parsed_content("run")
        except Exception as error:  # noqa: BLE001  (a ConfigExpression wraps everything in RuntimeError)
            if not _caused_by(error, _TracingComplete):
                raise
    seconds = time.perf_counter() - start
    if len(tracer.traces) != spec.trainers:
        raise RuntimeError(f"{name}: expected {spec.trainers} training engine(s), {len(tracer.traces)} ran")
    return LossTrace([row for trace in tracer.traces for row in trace], tracer.trainer_names, overrides, seconds)


def trace_losses(bundle: str, data_dir: Path, out_dir: Path, iterations: int = ITERATIONS) -> list[dict[str, float]]:
    """Per-iteration scalar outputs of the first ``iterations`` iterations of each traced trainer.

    ``bundle`` is a key of :data:`TRACES` (a bundle name, or ``bundle/variant``). Each row holds
    ``trainer`` (0-based index of the training engine in the run), ``iteration`` (1-based) and
    every scalar term of that iteration's ``engine.state.output``.
    """
    return run_trace(bundle, data_dir, out_dir, iterations).iterations


# ---------------------------------------------------------------------------------- comparison
def compare_traces(recorded: Sequence[Mapping[str, float]], current: Sequence[Mapping[str, float]],
                   rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> list[str]:
    """Differences between two traces (empty when they agree), each a readable line."""
    problems: list[str] = []
    if len(recorded) != len(current):
        problems.append(f"{len(current)} iterations traced, {len(recorded)} recorded")
    for i, (old, new) in enumerate(zip(recorded, current)):
        where = f"trainer {old.get('trainer')} iteration {old.get('iteration')}"
        if set(old) != set(new):
            problems.append(f"{where}: keys {sorted(new)} != recorded {sorted(old)}")
        for key in sorted(set(old) & set(new)):
            a, b = float(old[key]), float(new[key])
            if not (math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol) or (math.isnan(a) and math.isnan(b))):
                problems.append(f"{where}: {key} = {b!r}, recorded {a!r} (rel. diff {abs(a - b) / max(abs(a), 1e-30):.2e})")
        if len(problems) > 20:
            problems.append("...")
            break
    return problems


def load_record(path: Path = RECORD_FILE) -> dict[str, Any]:
    """The recorded traces, ``{name: {"settings": {...}, "iterations": [...]}}``."""
    return json.loads(Path(path).read_text())
