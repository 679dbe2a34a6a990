"""One harness for every bundle's comparison: variants x seeds on the same splits, paired tests.

A bundle joins by declaring a :class:`BundleExperiment` (its variants, which one is the method,
its data kind and metrics) in ``tools/<bundle>_experiments.py`` and listing it in
``tools/experiments.py``. Each run is ``configs/train.json``, an optional preset (e.g.
``configs/cpu.json``) and the variant's own override files and ``--key value`` pairs; it ends by
evaluating its final model on the test set (the trainer's validation set, used once at the end: no
model selection happens on it) and writes ``validation_metrics.json`` with per-case metrics.

Runs go to ``<out>/seed<k>/<variant>``. A run whose metrics file exists is not trained again (pass
``--retrain`` to force it), and a killed run resumes from its last checkpoint, so re-running the
same command finishes an interrupted comparison; ``<out>/comparison.json`` records the data, split
sizes, preset and overrides, and a comparison with other settings is refused the folder. Each
command is printed before it runs, so any row can be reproduced on its own. The report
(``<out>/results.md``, with every per-case value in ``<out>/results.json``) gives per-seed means,
mean and sd over seeds, and paired Wilcoxon tests of the method against every other variant,
over seeds and over test cases (:mod:`samssl.metrics.comparison` says what each pairing answers).
A finished run keeps its ``model.pt`` and metrics, not its training checkpoints (``--keep_checkpoints`` keeps them);
``--save_predictions`` also writes its test-set masks in the test folder's own layout, through the
bundle's ``evaluate.json``, for scoring with outside metric code. A comparison longer than one
sitting is finished in pieces: ``--earlier_results`` takes the ``results.json`` of each piece
(checked to be the same comparison) and reuses their runs; the ``results.json`` it writes keeps
their records beside its own, so it is the next piece's ``--earlier_results``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from samssl.metrics import DISPLAY_NAMES, PERCENT_METRICS, case_means_over_runs, paired_wilcoxon  # noqa: E402

__all__ = [
    "DERMOSCOPY_METRICS",
    "VOLUME_METRICS_MM",
    "BundleExperiment",
    "Variant",
    "bundle_config_arg",
    "comparison_report",
    "load_earlier_results",
    "load_results",
    "main",
    "paired_table",
    "run_experiment",
    "seeds_table",
]

DERMOSCOPY_METRICS = ("dice", "iou", "sensitivity", "specificity")
VOLUME_METRICS_MM = ("dice", "iou", "hd95", "asd")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)

# Per-case records of one comparison: results[variant][seed] = [{"id": ..., "dice": ...}, ...]
Results = Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]]


@dataclass(frozen=True)
class Variant:
    """One row of a comparison: its table label, override config files and ``--key value`` pairs."""

    label: str
    configs: Sequence[str] = ()
    overrides: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class BundleExperiment:
    """What the harness needs to know of a bundle to compare its variants.

    Attributes:
        bundle: folder name under ``bundles/``.
        variants: run-folder name -> :class:`Variant`.
        method: the variant the paired tests put against each other variant.
        default_variants: run when ``--variants`` is not given (SupOnly, the non-SAM baseline, the method).
        data: ``"dermoscopy"`` (ISIC/PH2-style train pool and test folders) or ``"msd"`` (an MSD-style
            3D folder split by sorted id into a pool and a test set).
        metrics: table columns (``samssl.metrics`` names); ``tested_metrics`` get paired tests.
        distance_unit: unit printed next to HD95/ASD.
        sam_cache_key: the bundle's config key for its SAM embedding cache; the harness points every
            run at one shared folder so each image is encoded once for all runs.
        seed_shared_key: a config key for work that depends on the seed but not on the variant
            (SFR's fine-tuned SAM and pseudo-labels): every run of one seed gets ``<out>/seed<k>/shared``.
        notes: printed under the tables.
    """

    bundle: str
    variants: Mapping[str, Variant]
    method: str
    default_variants: Sequence[str]
    data: str = "dermoscopy"
    metrics: Sequence[str] = DERMOSCOPY_METRICS
    tested_metrics: Sequence[str] = ("dice",)
    distance_unit: str | None = None
    sam_cache_key: str | None = None
    seed_shared_key: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        unknown = [n for n in (self.method, *self.default_variants) if n not in self.variants]
        if unknown:
            raise ValueError(f"{self.bundle}: variants {unknown} are not declared (known: {sorted(self.variants)}).")
        if self.data not in ("dermoscopy", "msd"):
            raise ValueError(f"{self.bundle}: data must be 'dermoscopy' or 'msd', got {self.data!r}.")

    @property
    def bundle_dir(self) -> Path:
        return ROOT / "bundles" / self.bundle


def bundle_config_arg(bundle: Path, configs: Sequence[str]) -> str:
    """The ``--config_file`` argument of ``monai.bundle`` merging ``configs`` (bundle-relative) in order."""
    return "[" + ",".join(f"'{bundle / c}'" for c in configs) + "]"


def _scale(metric: str) -> float:
    return 100.0 if metric in PERCENT_METRICS else 1.0


def _seed_mean(records: Sequence[Mapping[str, Any]], metric: str) -> float:
    values = [float(r[metric]) for r in records if r.get(metric) is not None and r[metric] == r[metric]]
    return _scale(metric) * statistics.mean(values) if values else float("nan")


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


def predictions_command(spec: BundleExperiment, run_dir: Path, test_location: str, preset: str) -> list[str]:
    """The bundle's ``evaluate.json`` on the test set with the run's final model, writing every
    predicted mask on its input's own grid and naming to ``<run_dir>/test_predictions/masks``."""
    configs = ["configs/evaluate.json"] + ([f"configs/{preset}.json"] if preset else [])
    out = run_dir / "test_predictions"
    return [
        sys.executable, "-m", "monai.bundle", "run", "evaluating",
        "--config_file", bundle_config_arg(spec.bundle_dir, configs),
        "--dataset_dir", test_location,
        "--checkpoint", str(run_dir / "model.pt"),
        "--output_dir", str(out),
        "--prediction_dir", str(out / "masks"),
        # ISIC challenge naming for images (ISIC_0000000_segmentation.png); <case>_seg.nii.gz for volumes
        *(["--output_postfix", "segmentation"] if spec.data == "dermoscopy" else []),
    ]


def run_experiment(
    spec: BundleExperiment,
    names: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    run_args: Sequence[str],
    preset: str = "",
    retrain: bool = False,
    earlier: Results | None = None,
    keep_checkpoints: bool = False,
    save_predictions: bool = False,
) -> tuple[dict[str, dict[int, list[dict[str, Any]]]], dict[str, float]]:
    """Train and test every variant in ``names`` for every seed; return per-case records and run times.

    Seeds are the outer loop, so an interrupted comparison has whole seeds (all variants) done.
    ``earlier`` holds per-case records of runs finished elsewhere (a ``results.json`` of an earlier
    comparison with the same settings); those runs are not trained again. A finished run keeps its
    final ``model.pt`` and metrics; its ``checkpoints/`` folder, only needed to resume, is removed
    unless ``keep_checkpoints`` (5 seeds x 3 variants of full training states fill tens of GB).
    ``save_predictions`` also writes each run's test-set masks in the test folder's own layout
    (:func:`predictions_command`), for finished runs too.
    """
    results: dict[str, dict[int, list[dict[str, Any]]]] = {name: {} for name in names}
    seconds: dict[str, float] = {}
    for seed in seeds:
        for name in names:
            run_dir = out / f"seed{seed}" / name
            metrics_file = run_dir / "validation_metrics.json"
            seed_args = ["--seed", str(seed)]
            if spec.seed_shared_key:
                seed_args += [f"--{spec.seed_shared_key}", str(out / f"seed{seed}" / "shared")]
            command = train_command(spec, name, run_dir, [*run_args, *seed_args], preset)
            print(f"\n### {spec.variants[name].label}, seed {seed}\n{shlex.join(command)}", flush=True)
            if earlier and seed in earlier.get(name, {}) and not retrain:
                print("(finished earlier: reusing its records from --earlier_results)", flush=True)
                results[name][seed] = list(earlier[name][seed])
                continue
            if metrics_file.is_file() and not retrain:
                print(f"(finished earlier: reusing {metrics_file})", flush=True)
            else:
                start = time.time()
                subprocess.run(command, check=True, cwd=ROOT)
                seconds[f"{name} seed {seed}"] = time.time() - start
            results[name][seed] = json.loads(metrics_file.read_text())["cases"]
            if not keep_checkpoints:
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            if save_predictions and not (run_dir / "model.pt").is_file():
                print(f"(no model.pt in {run_dir}: a variant without a deployed network writes no masks)", flush=True)
            elif save_predictions and not (run_dir / "test_predictions" / "test_metrics.json").is_file():
                command = predictions_command(spec, run_dir, run_args[run_args.index("--val_dataset_dir") + 1], preset)
                print(f"(test-set masks)\n{shlex.join(command)}", flush=True)
                subprocess.run(command, check=True, cwd=ROOT)
    return results, seconds


def seeds_table(spec: BundleExperiment, results: Results, names: Sequence[str], seeds: Sequence[int]) -> str:
    """Markdown: per variant, the test-set mean Dice of each seed, then each metric's mean ± sd over seeds."""
    metrics = list(spec.metrics)
    unit = f" ({spec.distance_unit})" if spec.distance_unit else ""
    headers = [f"Dice seed {s}" for s in seeds] + [
        f"{DISPLAY_NAMES.get(m, m)}{unit if m in ('hd95', 'asd') else ''}{' (%)' if m in PERCENT_METRICS else ''}"
        " mean ± sd over seeds" for m in metrics
    ]
    lines = ["| variant | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(seeds) + ":---:|" * len(metrics)]
    for name in names:
        cells = [f"{_seed_mean(results[name][s], 'dice'):.2f}" for s in seeds]
        for metric in metrics:
            values = [_seed_mean(results[name][s], metric) for s in seeds]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {sd:.2f}")
        lines.append(f"| {spec.variants[name].label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(spec: BundleExperiment, results: Results, names: Sequence[str], seeds: Sequence[int]) -> str:
    """Markdown: the method against each other variant, paired over seeds and over test cases."""
    lines = [
        "| comparison | metric | over seeds: mean diff | better/worse | Wilcoxon p | over cases: mean diff "
        "| better/worse | Wilcoxon p | verdict (seeds) |",
        "|---|---|---:|:---:|---:|---:|:---:|---:|---|",
    ]
    method = spec.method
    for other in (n for n in names if n != method):
        for metric in spec.tested_metrics:
            scale = _scale(metric)
            by_seed = paired_wilcoxon([_seed_mean(results[other][s], metric) for s in seeds],
                                      [_seed_mean(results[method][s], metric) for s in seeds], metric)
            base_cases = case_means_over_runs([results[other][s] for s in seeds], metric)
            method_cases = case_means_over_runs([results[method][s] for s in seeds], metric)
            ids = sorted(base_cases)
            by_case = paired_wilcoxon([base_cases[i] for i in ids], [method_cases.get(i) for i in ids], metric)
            lines.append(
                f"| {spec.variants[method].label} vs {spec.variants[other].label} "
                f"| {DISPLAY_NAMES.get(metric, metric)} "
                f"| {by_seed.mean_difference:+.2f} | {by_seed.num_better}/{by_seed.num_worse} | {by_seed.p_value:.3g} "
                f"| {scale * by_case.mean_difference:+.2f} | {by_case.num_better}/{by_case.num_worse} "
                f"| {by_case.p_value:.3g} | {by_seed.verdict()} |"
            )
    return "\n".join(lines) + "\n"


def comparison_report(spec: BundleExperiment, results: Results, names: Sequence[str], seeds: Sequence[int]) -> str:
    """The seeds table, then the paired tests when the method is among ``names`` with another variant."""
    report = seeds_table(spec, results, names, seeds)
    if spec.method in names and len(names) > 1:
        report += "\n" + paired_table(spec, results, names, seeds)
        if len(seeds) < 6:
            report += (f"\nWith {len(seeds)} seeds the exact two-sided Wilcoxon test cannot go below "
                       f"p = {2 / 2 ** len(seeds):.4g}: over seeds, read the direction and the better/worse count.\n")
    return report


def _data_arguments(spec: BundleExperiment, args: argparse.Namespace, out: Path) -> tuple[list[str], str]:
    """The runs' data arguments and a sentence describing the split."""
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
                 "the "
                 f"first {args.pool} cases by id; test: the last {args.test}.")
    run_args += ["--num_labelled", str(args.num_labelled)]
    if spec.sam_cache_key:
        cache = Path(args.sam_cache_dir).resolve() if args.sam_cache_dir else out / "sam_embeddings"
        run_args += [f"--{spec.sam_cache_key}", str(cache)]
    return run_args, notes


SETTINGS_FILE = "comparison.json"


PATH_SETTINGS = ("train_dir", "test_dir", "data")


def _project_relative(path: str | Path) -> str:
    """``path`` relative to the project root, so a recorded comparison (and a results file copied into
    the docs) names no machine's folders."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def comparison_settings(spec: BundleExperiment, args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs of a variant and seed the same experiment: data, split sizes, preset, overrides."""
    if spec.data == "dermoscopy":
        data = {"train_dir": _project_relative(args.train_dir), "test_dir": _project_relative(args.test_dir)}
    else:
        data = {"data": _project_relative(args.data), "pool": args.pool, "test": args.test}
    return {"bundle": spec.bundle, **data, "num_labelled": args.num_labelled, "preset": args.preset,
            "overrides": list(args.overrides)}


def check_comparison_folder(out: Path, settings: Mapping[str, Any], record: bool = True) -> None:
    """Refuse to mix runs of different settings in one ``--out`` folder; record the settings of a new one.

    A finished run is reused by its folder name alone (``seed<k>/<variant>``), so without this check
    a 1-labelled comparison pointed at a 4-labelled folder would silently report the 4-labelled runs.
    A folder made before settings were recorded adopts the current ones.
    """
    path = out / SETTINGS_FILE
    if path.is_file():
        details = _differing_settings(json.loads(path.read_text()), settings)
        if details:
            raise SystemExit(f"{out} holds a comparison with other settings ({details}). Its finished runs would be "
                             "reused as if they were this one's: give this comparison its own --out folder.")
    elif record:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(settings), indent=1) + "\n")


def _differing_settings(recorded: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The settings in which a recorded comparison differs from ``settings``, as text ('' when the same).

    Data folders compare resolved, so a comparison is the same however its paths were written.
    """
    def same(key: str, old: Any, new: Any) -> bool:
        if key in PATH_SETTINGS and old is not None:
            return (ROOT / old).resolve() == (ROOT / new).resolve()
        return old == new

    differing = {k: (recorded.get(k), v) for k, v in settings.items() if not same(k, recorded.get(k), v)}
    return "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differing.items())


def _recorded_cases(out: Path, name: str, seed: int, earlier: Results | None) -> list[dict[str, Any]] | None:
    """A finished run's per-case records: from ``--earlier_results`` first, else its metrics file; None if neither."""
    if earlier and seed in earlier.get(name, {}):
        return list(earlier[name][seed])
    metrics_file = out / f"seed{seed}" / name / "validation_metrics.json"
    return json.loads(metrics_file.read_text())["cases"] if metrics_file.is_file() else None


def load_results(path: str | Path) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """The per-case records of a ``results.json`` written by :func:`main`: ``{variant: {seed: records}}``."""
    stored = json.loads(Path(path).read_text())
    cases = stored["cases"]
    return {name: {int(seed): records for seed, records in by_seed.items()} for name, by_seed in cases.items()}


def load_earlier_results(
    paths: Sequence[str | Path], settings: Mapping[str, Any]
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Merge the records of earlier ``results.json`` files, each checked to be this comparison's.

    A comparison too long for one sitting is finished piecewise (a seed or a variant at a time) and
    its pieces joined here, so each file must have been made with the same data, split, preset and
    overrides (``settings``): records of another comparison would otherwise enter the tables as this
    one's. Two files holding the same variant and seed must agree case for case.
    """
    merged: dict[str, dict[int, list[dict[str, Any]]]] = {}
    origin: dict[tuple[str, int], Path] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise SystemExit(f"--earlier_results: {path} does not exist.")
        recorded = json.loads(path.read_text()).get("settings")
        details = _differing_settings(recorded, settings) if recorded is not None else ""
        if details:
            raise SystemExit(f"--earlier_results: {path} is a comparison with other settings ({details}); "
                             "its records are not this comparison's.")
        for name, by_seed in load_results(path).items():
            for seed, records in by_seed.items():
                if (name, seed) in origin and merged[name][seed] != records:
                    raise SystemExit(f"--earlier_results: {name} seed {seed} differs between {origin[name, seed]} "
                                     f"and {path}; keep one of them.")
                merged.setdefault(name, {})[seed] = records
                origin.setdefault((name, seed), path)
    return merged


def parser_for(spec: BundleExperiment, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description or f"Compare the variants of {spec.bundle} over seeds.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if spec.data == "dermoscopy":
        parser.add_argument("--train_dir", help="ISIC/PH2-style train pool")
        parser.add_argument("--test_dir", help="labelled ISIC/PH2-style test folder")
        parser.add_argument("--num_labelled", type=int, default=8)
    else:
        parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "la"), help="MSD-style 3D folder")
        parser.add_argument("--pool", type=int, default=60, help="first N cases (by id) form the training pool")
        parser.add_argument("--test", type=int, default=20, help="last N cases (by id) form the test set")
        parser.add_argument("--num_labelled", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        help="each seed draws the labelled cases and initialises the run (default 0-4)")
    parser.add_argument("--variants", nargs="+", default=list(spec.default_variants), choices=list(spec.variants))
    parser.add_argument("--preset", default="cpu",
                        help="config preset in configs/ merged after train.json ('' for none)")
    parser.add_argument("--out", default=str(spec.bundle_dir / "runs" / "experiments"),
                        help="where runs and the report go")
    if spec.sam_cache_key:
        parser.add_argument("--sam_cache_dir", default=None,
                            help="shared SAM embedding cache (default: <out>/sam_embeddings)")
    parser.add_argument("--retrain", action="store_true", help="train again even where a run's metrics exist")
    parser.add_argument("--save_predictions", action="store_true",
                        help="also write each run's test-set masks in the test folder's own layout "
                             "(<run>/test_predictions/masks: PNG in ISIC naming, NIfTI with the input affine)")
    parser.add_argument("--keep_checkpoints", action="store_true",
                        help="keep the training checkpoints of finished runs (default: removed, model.pt stays)")
    parser.add_argument("--earlier_results", nargs="+", default=None,
                        help="results.json files of earlier runs of this comparison (same settings, checked): "
                             "their runs are reused, so a comparison can be finished a seed or a variant at a time")
    parser.add_argument("--report_only", action="store_true",
                        help="tabulate the finished runs without training (every variant x seed must exist)")
    parser.add_argument("overrides", nargs="*", help="extra --key value pairs passed to every run (after --)")
    return parser


def main(spec: BundleExperiment, argv: Sequence[str] | None = None, description: str | None = None) -> str:
    """Parse the command line, run the comparison, write and print the report."""
    args = parser_for(spec, description).parse_args(argv)
    out = Path(args.out).resolve()
    if spec.data == "dermoscopy" and (not args.train_dir or not args.test_dir):
        raise SystemExit(f"{spec.bundle}: give --train_dir (ISIC/PH2-style pool) and --test_dir (labelled test folder).")
    settings = comparison_settings(spec, args)
    check_comparison_folder(out, settings, record=not args.report_only)
    run_args, split = _data_arguments(spec, args, out)
    run_args += list(args.overrides)
    earlier = load_earlier_results(args.earlier_results, settings) if args.earlier_results else None
    if args.report_only:
        found = {name: {s: _recorded_cases(out, name, s, earlier) for s in args.seeds} for name in args.variants}
        missing = [f"{name} seed {s}" for name, by_seed in found.items()
                   for s, cases in by_seed.items() if cases is None]
        if missing:
            raise SystemExit(f"--report_only: no finished run for {', '.join(missing)} in {out}; train them first.")
        results: dict[str, dict[int, list[dict[str, Any]]]] = found  # type: ignore[assignment]
        seconds: dict[str, float] = {}
    else:
        results, seconds = run_experiment(spec, args.variants, args.seeds, out, run_args, args.preset, args.retrain,
                                          earlier, args.keep_checkpoints, args.save_predictions)
    report = comparison_report(spec, results, args.variants, args.seeds)
    report += f"\n{split}\n" + (f"{spec.notes}\n" if spec.notes else "")
    if seconds:
        report += "\nwall-clock per run (train + test):\n"
        report += "".join(f"- {k}: {v / 60:.1f} min\n" for k, v in seconds.items())
    report += f"\ncommand: python {shlex.join(sys.argv)}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report)
    # every record this comparison knows, not only the report's: the file joins the pieces of a
    # comparison finished a seed at a time, and is what the next piece's --earlier_results reads
    known: dict[str, dict[int, list[dict[str, Any]]]] = {n: dict(by_seed) for n, by_seed in (earlier or {}).items()}
    for name in args.variants:
        known.setdefault(name, {}).update({s: results[name][s] for s in args.seeds})
    (out / "results.json").write_text(json.dumps(
        {"bundle": spec.bundle, "method": spec.method, "seeds": list(args.seeds), "settings": settings,
         "variants": {n: spec.variants[n].label if n in spec.variants else n for n in known},
         "cases": {n: {str(s): known[n][s] for s in sorted(known[n])} for n in known}}, indent=1))
    print("\n" + report)
    return report
