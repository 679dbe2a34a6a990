"""Train and test a bundle's variants over seeds on the same splits, resuming whatever already ran.

Each run is ``configs/train.json``, an optional preset (e.g. ``configs/cpu.json``) and the variant's
own override files and ``--key value`` pairs, trained by ``python -m monai.bundle run training`` in
a subprocess exactly as a user would; it ends by evaluating its final model on the test set (the
trainer's validation set, used once at the end: no model selection happens on it) and writes
``validation_metrics.json`` with per-case metrics.

Runs go to ``<out>/seed<k>/<variant>``. A run whose metrics file exists is not trained again, and a
killed run resumes from its last checkpoint, so re-running the same command finishes an interrupted
comparison. Because a finished run is found by its folder name alone, ``<out>/comparison.json``
records the data, split sizes, preset and overrides, and a comparison with other settings is
refused the folder.

Two ways to test on more than one folder without training twice: ``--folds K`` cuts a dermoscopy
train pool into ``K`` folds (seed ``s`` trains on all but fold ``s mod K`` and is tested on it: an
in-domain test set), and ``--models_from DIR`` tests the finished models of the comparison in
``DIR`` on this comparison's test set (``evaluate.json`` with each run's ``model.pt``) instead of
training, so the same models are scored on another folder, with the same paired tests.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from samssl.experiments.records import Records, Results, differing_settings, project_relative
from samssl.experiments.variants import BundleExperiment
from samssl.utils.bundles import config_with_base

__all__ = [
    "SETTINGS_FILE",
    "bundle_config_arg",
    "check_comparison_folder",
    "check_models_from",
    "comparison_settings",
    "data_arguments",
    "evaluate_command",
    "predictions_command",
    "preset_values",
    "recorded_cases",
    "run_child",
    "run_experiment",
    "train_command",
]

SETTINGS_FILE = "comparison.json"
#: The seed that cuts ``--folds``: fixed, so every comparison of one pool shares its folds.
FOLD_SEED = 0
#: A seed's data arguments (``--dataset_dir ... --val_dataset_dir ...``): with ``--folds`` they differ by seed.
SeedArguments = Callable[[int], list[str]]


def bundle_config_arg(bundle: Path, configs: Sequence[str]) -> str:
    """The ``--config_file`` argument of ``monai.bundle`` merging ``configs`` (bundle-relative) in order."""
    return "[" + ",".join(f"'{bundle / c}'" for c in configs) + "]"


def train_command(spec: BundleExperiment, name: str, run_dir: Path, run_args: Sequence[str], preset: str) -> list[str]:
    """The ``monai.bundle`` command that trains and tests variant ``name`` into ``run_dir``."""
    variant = spec.variants[name]
    configs = ["configs/train.json"] + ([f"configs/{preset}.json"] if preset else []) + list(variant.configs)
    return [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", bundle_config_arg(spec.bundle_dir, configs),
        *run_args,
        "--output_dir", str(run_dir),
        "--model_dir", str(run_dir),
        *variant.overrides,
    ]


def evaluate_command(spec: BundleExperiment, checkpoint: Path, output_dir: Path, test_location: str, preset: str,
                     eval_name: str = "test", prediction_dir: Path | None = None) -> list[str]:
    """The bundle's ``evaluate.json`` (merged onto its shared ``configs/base_evaluate.json``, as its docs'
    command lists it) scoring ``checkpoint`` on the test set: per-case metrics in
    ``output_dir/<eval_name>_metrics.json``, and with ``prediction_dir`` every predicted mask on its
    input's own grid and naming."""
    evaluate = config_with_base(spec.bundle_dir / "configs" / "evaluate.json")
    configs = [str(p.relative_to(spec.bundle_dir)) for p in evaluate] + ([f"configs/{preset}.json"] if preset else [])
    command = [
        sys.executable, "-m", "monai.bundle", "run", "evaluating",
        "--config_file", bundle_config_arg(spec.bundle_dir, configs),
        "--dataset_dir", test_location,
        "--checkpoint", str(checkpoint),
        "--output_dir", str(output_dir),
        "--eval_name", eval_name,
    ]
    if prediction_dir is not None:
        command += ["--prediction_dir", str(prediction_dir)]
        # ISIC challenge naming for images (ISIC_0000000_segmentation.png); <case>_seg.nii.gz for volumes
        command += ["--output_postfix", "segmentation"] if spec.data == "dermoscopy" else []
    return command


def predictions_command(spec: BundleExperiment, run_dir: Path, test_location: str, preset: str) -> list[str]:
    """The bundle's ``evaluate.json`` on the test set with the run's final model, writing every
    predicted mask on its input's own grid and naming to ``<run_dir>/test_predictions/masks``."""
    out = run_dir / "test_predictions"
    return evaluate_command(spec, run_dir / "model.pt", out, test_location, preset, prediction_dir=out / "masks")


def run_experiment(
    spec: BundleExperiment,
    names: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    run_args: SeedArguments,
    preset: str = "",
    retrain: bool = False,
    earlier: Results | None = None,
    keep_checkpoints: bool = False,
    save_predictions: bool = False,
    models_from: Path | None = None,
) -> tuple[Records, dict[str, float]]:
    """Train and test every variant in ``names`` for every seed; return per-case records and run times.

    Seeds are the outer loop, so an interrupted comparison has whole seeds (all variants) done.
    ``earlier`` holds per-case records of runs finished elsewhere (a ``results.json`` of an earlier
    comparison with the same settings); those runs are not trained again. A finished run keeps its
    final ``model.pt`` and metrics; its ``checkpoints/`` folder, only needed to resume, is removed
    unless ``keep_checkpoints`` (5 seeds x 3 variants of full training states fill tens of GB).
    ``save_predictions`` also writes each run's test-set masks in the test folder's own layout
    (:func:`predictions_command`), for finished runs too. ``models_from`` (a comparison folder with
    the same training settings) tests its runs' ``model.pt`` on this test set instead of training.
    """
    results: Records = {name: {} for name in names}
    seconds: dict[str, float] = {}
    for seed in seeds:
        for name in names:
            run_dir = out / f"seed{seed}" / name
            metrics_file = run_dir / "validation_metrics.json"
            data_args = run_args(seed)
            test_location = data_args[data_args.index("--val_dataset_dir") + 1]
            if models_from is not None:
                command = evaluate_command(spec, models_from / f"seed{seed}" / name / "model.pt", run_dir,
                                           test_location, preset, eval_name="validation")
            else:
                seed_args = ["--seed", str(seed)]
                if spec.seed_shared_key:
                    seed_args += [f"--{spec.seed_shared_key}", str(out / f"seed{seed}" / "shared")]
                command = train_command(spec, name, run_dir, [*data_args, *seed_args], preset)
            print(f"\n### {spec.variants[name].label}, seed {seed}\n{shlex.join(command)}", flush=True)
            if earlier and seed in earlier.get(name, {}) and not retrain:
                print("(finished earlier: reusing its records from --earlier_results)", flush=True)
                results[name][seed] = list(earlier[name][seed])
                continue
            if metrics_file.is_file() and not retrain:
                print(f"(finished earlier: reusing {metrics_file})", flush=True)
            else:
                if models_from is not None:
                    _require_model(models_from, seed, name)
                start = time.time()
                run_child(command, spec.project_root)
                seconds[f"{name} seed {seed}"] = time.time() - start
            results[name][seed] = json.loads(metrics_file.read_text())["cases"]
            if not keep_checkpoints:
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            if models_from is not None:
                continue  # the model is the other comparison's; --save_predictions belongs to a training comparison
            if save_predictions and not (run_dir / "model.pt").is_file():
                print(f"(no model.pt in {run_dir}: a variant without a deployed network writes no masks)", flush=True)
            elif save_predictions and not (run_dir / "test_predictions" / "test_metrics.json").is_file():
                command = predictions_command(spec, run_dir, test_location, preset)
                print(f"(test-set masks)\n{shlex.join(command)}", flush=True)
                run_child(command, spec.project_root)
    return results, seconds


def run_child(command: Sequence[str], cwd: Path, grace_seconds: float = 10.0) -> None:
    """Run one training or prediction command to its end; a harness that is stopped stops it too.

    A run writes checkpoints into the comparison's folder. If ``kill``, a scheduler or a closed
    terminal stopped only the harness, the training would go on unseen, and the next
    ``samssl-compare`` would resume the same run folder beside it: two trainers writing one
    checkpoint. So SIGTERM (and SIGHUP) become an exception while a child runs, and any exception
    (Ctrl-C included) stops the child (SIGTERM, then SIGKILL after ``grace_seconds``) before the
    harness exits. A failed run raises :class:`subprocess.CalledProcessError` as ``check=True`` would.
    """
    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(f"samssl-compare: stopped by signal {signal.Signals(signum).name}; "
                         "the run it was training was stopped too and resumes from its last checkpoint.")

    handled = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in handled} if in_main_thread else {}
    for s in previous:
        signal.signal(s, stop)
    try:
        child = subprocess.Popen(list(command), cwd=cwd)
        try:
            code = child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code != 0:
        raise subprocess.CalledProcessError(code, list(command))


def _require_model(models_from: Path, seed: int, name: str) -> None:
    model = models_from / f"seed{seed}" / name / "model.pt"
    if not model.is_file():
        raise SystemExit(f"--models_from: no {model} (train {name} seed {seed} in that comparison first; a variant "
                         "without a deployed network has no model to test).")


def data_arguments(spec: BundleExperiment, args: argparse.Namespace, out: Path) -> tuple[SeedArguments, str]:
    """Each seed's data arguments and a sentence describing the split (an MSD split or the folds are
    written under ``out``)."""
    folds = getattr(args, "folds", None)
    extra = ["--num_labelled", str(args.num_labelled)]
    if spec.sam_cache_key and args.sam_cache_dir:  # else the bundle's default: the folder every run shares
        extra += [f"--{spec.sam_cache_key}", str(Path(args.sam_cache_dir).resolve())]
    if spec.data == "dermoscopy" and folds:
        from samssl.data import dermoscopy_fold_folders

        pairs = dermoscopy_fold_folders(args.train_dir, out / "folds", num_folds=folds, seed=FOLD_SEED)
        test_dir = str(Path(args.test_dir).resolve()) if args.test_dir else None

        def fold_arguments(seed: int) -> list[str]:
            train, held_out = pairs[seed % folds]
            return ["--dataset_dir", str(train), "--val_dataset_dir", test_dir or str(held_out), *extra]

        tested = f"test {args.test_dir}" if args.test_dir else f"test: fold (seed mod {folds}) itself"
        notes = (f"Train pool {args.train_dir} cut into {folds} folds (fold seed {FOLD_SEED}); seed s trains on all "
                 f"but fold s mod {folds}, {args.num_labelled} labelled (drawn by the seed), the rest unlabelled; "
                 f"{tested}.")
        return fold_arguments, notes
    if spec.data == "dermoscopy":
        run_args = ["--dataset_dir", str(Path(args.train_dir).resolve()),
                    "--val_dataset_dir", str(Path(args.test_dir).resolve())]
        notes = (f"Train pool {args.train_dir}, {args.num_labelled} labelled (drawn by the seed), the rest unlabelled; "
                 f"test {args.test_dir}.")
    else:
        from samssl.data import msd_datalist, write_msd_description

        cases = sorted(msd_datalist(args.data), key=lambda e: e["id"])
        if args.pool + args.test > len(cases):
            raise SystemExit(f"{args.data} has {len(cases)} cases, fewer than pool {args.pool} + test {args.test}.")
        pool_json = write_msd_description(out / "split" / "pool" / "dataset.json", cases[: args.pool], "train pool")
        test_json = write_msd_description(out / "split" / "test" / "dataset.json", cases[-args.test :], "test")
        run_args = ["--dataset_dir", str(pool_json), "--val_dataset_dir", str(test_json)]
        notes = (f"{args.num_labelled} labelled (drawn by the seed) + {args.pool - args.num_labelled} unlabelled of "
                 f"the first {args.pool} cases by id; test: the last {args.test}.")
    return (lambda seed: [*run_args, *extra]), notes


def preset_values(spec: BundleExperiment, preset: str) -> dict[str, Any]:
    """The values a preset sets (``configs/<preset>.json`` without its ``_comment`` keys; ``{}`` for none).

    Recorded with a comparison because a preset's name says nothing of what it held when the runs were
    made: a preset given longer schedules or another precision must not join the records of the old one.
    """
    if not preset:
        return {}
    path = spec.bundle_dir / "configs" / f"{preset}.json"
    if not path.is_file():
        presets = sorted(p.stem for p in (spec.bundle_dir / "configs").glob("*.json")
                         if p.stem.startswith("cpu") or p.stem == "demo")
        raise SystemExit(f"--preset {preset}: {path} does not exist (presets there: {', '.join(presets) or 'none'}).")
    try:
        values = json.loads(path.read_text())
    except ValueError as error:
        raise SystemExit(f"--preset {preset}: {path} is not valid JSON ({error}).") from None
    return {k: v for k, v in values.items() if not k.startswith("_")}


def comparison_settings(spec: BundleExperiment, args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs of a variant and seed the same experiment: data, split sizes, the preset and
    what it sets, overrides (and, where used, the folds and the comparison whose models are tested)."""
    root = spec.project_root
    if spec.data == "dermoscopy":
        data = {"train_dir": project_relative(args.train_dir, root),
                "test_dir": project_relative(args.test_dir, root) if args.test_dir else None}
    else:
        data = {"data": project_relative(args.data, root), "pool": args.pool, "test": args.test}
    settings = {"bundle": spec.bundle, **data, "num_labelled": args.num_labelled, "preset": args.preset,
                "preset_values": preset_values(spec, args.preset), "overrides": list(args.overrides)}
    # only when used, so the records of comparisons made before these options existed stay joinable
    if getattr(args, "folds", None):
        settings["folds"] = args.folds
    if getattr(args, "models_from", None):
        settings["models_from"] = project_relative(args.models_from, root)
    return settings


def check_comparison_folder(out: Path, settings: Mapping[str, Any], root: Path, record: bool = True) -> None:
    """Refuse to mix runs of different settings in one ``--out`` folder; record the settings of a new one.

    A finished run is reused by its folder name alone (``seed<k>/<variant>``), so without this check
    a 1-labelled comparison pointed at a 4-labelled folder would silently report the 4-labelled runs.
    """
    path = out / SETTINGS_FILE
    if path.is_file():
        details = differing_settings(json.loads(path.read_text()), settings, root)
        if details:
            raise SystemExit(f"{out} holds a comparison with other settings ({details}). Its finished runs would be "
                             "reused as if they were this one's: give this comparison its own --out folder.")
    elif record:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(settings), indent=1) + "\n")


def check_models_from(models_from: Path, settings: Mapping[str, Any], root: Path) -> None:
    """Refuse ``--models_from`` a folder whose comparison trained with other settings than ``settings``
    (the test folder aside): its models would be reported as trained the way this command says."""
    path = models_from / SETTINGS_FILE
    if not path.is_file():
        raise SystemExit(f"--models_from: {models_from} holds no comparison ({SETTINGS_FILE} is missing).")
    training = {k: v for k, v in settings.items() if k not in ("test_dir", "models_from")}
    recorded = json.loads(path.read_text())
    details = differing_settings({k: v for k, v in recorded.items() if k != "test_dir"}, training, root)
    if details:
        raise SystemExit(f"--models_from: {models_from} trained its models with other settings ({details}); give this "
                         "command the same training options.")


def recorded_cases(out: Path, name: str, seed: int, earlier: Results | None) -> list[dict[str, Any]] | None:
    """A finished run's per-case records: from ``--earlier_results`` first, else its metrics file; None if neither."""
    if earlier and seed in earlier.get(name, {}):
        return list(earlier[name][seed])
    metrics_file = out / f"seed{seed}" / name / "validation_metrics.json"
    return json.loads(metrics_file.read_text())["cases"] if metrics_file.is_file() else None
