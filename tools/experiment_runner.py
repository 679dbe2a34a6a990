"""Run a bundle's method variants with the same data and schedule, and tabulate their test metrics.

Shared by the ``tools/*_experiments.py`` scripts. Each variant is ``configs/train.json``, an
optional preset (e.g. ``configs/cpu.json``) and the variant's own override files and ``--key
value`` pairs; every run evaluates its final model on the test set (the trainer's validation set,
used once at the end: no model selection happens on it) and writes ``validation_metrics.json``.
Each command is printed before it runs, so any row of a table can be reproduced on its own, and
a killed run resumes from its last checkpoint when the same command runs again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.metrics import results_table  # noqa: E402

__all__ = ["Variant", "bundle_config_arg", "dermoscopy_experiment", "run_variants", "seeds_table"]

DERMOSCOPY_METRICS = ("dice", "iou", "sensitivity", "specificity")


@dataclass(frozen=True)
class Variant:
    """One row of a comparison: its table label, override config files and ``--key value`` pairs."""

    label: str
    configs: Sequence[str] = ()
    overrides: Sequence[str] = field(default_factory=tuple)


def bundle_config_arg(bundle: Path, configs: Sequence[str]) -> str:
    """The ``--config_file`` argument of ``monai.bundle`` merging ``configs`` (bundle-relative) in order."""
    return "[" + ",".join(f"'{bundle / c}'" for c in configs) + "]"


def run_variants(
    bundle: Path,
    variants: dict[str, Variant],
    names: Sequence[str],
    out: Path,
    run_args: Sequence[str],
    metrics: Sequence[str],
    preset: str = "",
    distance_unit: str | None = None,
    reuse: bool = False,
    notes: str = "",
) -> str:
    """Train and test each variant in ``names``; write and return the markdown results table.

    Args:
        bundle: the bundle folder.
        variants: run folder name -> :class:`Variant`.
        names: which variants to run, in order.
        out: the run folders (``out/<name>``) and ``results.md`` go here.
        run_args: ``--key value`` arguments given to every run (data, labels, seed, caches...).
        metrics: the table's columns (``common.metrics`` names).
        preset: a preset config in ``configs/`` merged after ``train.json`` ('' for none).
        distance_unit: unit printed next to HD95/ASD.
        reuse: take the metrics of a variant whose run folder already holds
            ``validation_metrics.json`` instead of training it again.
        notes: text printed under the table (data split, scale).
    """
    rows, seconds = {}, {}
    for name in names:
        variant = variants[name]
        run_dir = out / name
        metrics_file = run_dir / "validation_metrics.json"
        configs = ["configs/train.json"] + ([f"configs/{preset}.json"] if preset else []) + list(variant.configs)
        command = [
            sys.executable, "-m", "monai.bundle", "run", "training",
            "--config_file", bundle_config_arg(bundle, configs),
            *run_args,
            "--output_dir", str(run_dir),
            "--model_dir", str(run_dir),
            *variant.overrides,
        ]
        print(f"\n### {variant.label}\n{shlex.join(command)}", flush=True)
        if reuse and metrics_file.is_file():
            print(f"(reusing {metrics_file})", flush=True)
        else:
            start = time.time()
            subprocess.run(command, check=True, cwd=ROOT)
            seconds[variant.label] = time.time() - start
        rows[variant.label] = json.loads(metrics_file.read_text())["cases"]

    table = results_table(rows, metrics=tuple(metrics), distance_unit=distance_unit)
    timing = "\n".join(f"- {label}: {s / 60:.1f} min" for label, s in seconds.items())
    report = table + (f"\n{notes}\n" if notes else "\n")
    if timing:
        report += f"\nwall-clock per run (train + test):\n{timing}\n"
    report += f"\ncommand: python {shlex.join(sys.argv)}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report)
    print("\n" + report)
    return report


def seeds_table(out: Path, variants: dict[str, Variant], names: Sequence[str], seeds: Sequence[int],
                metrics: Sequence[str]) -> str:
    """Markdown table of each variant's test metrics over several seeds (runs in ``out/seed<k>/<name>``).

    With a handful of labelled images, which images are labelled (the seed draws them) and even the
    float rounding of one training run move the test Dice by several points, so a comparison
    from one seed can mislead. Per seed: the mean over the test cases; last columns: mean and
    standard deviation over the seeds, and the mean per-seed difference from the first variant.
    """
    def mean_of(name: str, seed: int, metric: str) -> float:
        summary = json.loads((out / f"seed{seed}" / name / "validation_metrics.json").read_text())["summary"]
        return 100 * summary[metric]["mean"]

    lines = [f"| method | {' | '.join(f'Dice seed {s}' for s in seeds)} | "
             + " | ".join(f"{m} (mean ± sd over seeds)" for m in metrics) + " | Dice vs first row |",
             "|---|" + "---:|" * len(seeds) + ":---:|" * len(metrics) + "---:|"]
    base = names[0]
    for name in names:
        cells = [f"{mean_of(name, s, 'dice'):.2f}" for s in seeds]
        for metric in metrics:
            values = [mean_of(name, s, metric) for s in seeds]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {sd:.2f}")
        gaps = [mean_of(name, s, "dice") - mean_of(base, s, "dice") for s in seeds]
        cells.append("" if name == base else f"{statistics.mean(gaps):+.2f} ({sum(g > 0 for g in gaps)}/{len(seeds)} seeds better)")
        lines.append(f"| {variants[name].label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def dermoscopy_experiment(
    description: str,
    bundle: Path,
    variants: dict[str, Variant],
    default_variants: Sequence[str],
    sam_cache: bool = False,
    notes: str = "",
) -> str:
    """The command line of a 2D bundle's comparison (ISIC/PH2-style train pool and test folder), run.

    With ``sam_cache`` every run shares one SAM embedding cache (``--sam_cache_dir``, default
    ``<out>/sam_embeddings``), so each training image is encoded once for all runs.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_dir", required=True, help="ISIC/PH2-style train pool")
    parser.add_argument("--test_dir", required=True, help="labelled ISIC/PH2-style test folder")
    parser.add_argument("--num_labelled", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="several seeds instead of --seed: runs in <out>/seed<k>, plus a table over the seeds")
    parser.add_argument("--preset", default="cpu", help="config preset in configs/ merged after train.json ('' for none)")
    parser.add_argument("--variants", nargs="+", default=list(default_variants), choices=list(variants))
    parser.add_argument("--out", default=str(bundle / "runs" / "experiments"), help="where runs and the table go")
    if sam_cache:
        parser.add_argument("--sam_cache_dir", default=None,
                            help="shared SAM embedding cache (default: <out>/sam_embeddings)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs' metrics instead of retraining")
    parser.add_argument("overrides", nargs="*", help="extra --key value pairs passed to every run")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    run_args = [
        "--dataset_dir", str(Path(args.train_dir).resolve()),
        "--val_dataset_dir", str(Path(args.test_dir).resolve()),
        "--num_labelled", str(args.num_labelled),
    ]
    if sam_cache:
        cache = Path(args.sam_cache_dir).resolve() if args.sam_cache_dir else out / "sam_embeddings"
        run_args += ["--sam_cache_dir", str(cache)]
    if args.seeds is None:
        return run_variants(bundle, variants, args.variants, out, [*run_args, "--seed", str(args.seed), *args.overrides],
                            metrics=DERMOSCOPY_METRICS, preset=args.preset, reuse=args.reuse, notes=notes)
    for seed in args.seeds:
        run_variants(bundle, variants, args.variants, out / f"seed{seed}",
                     [*run_args, "--seed", str(seed), *args.overrides], metrics=DERMOSCOPY_METRICS,
                     preset=args.preset, reuse=args.reuse, notes=notes)
    report = seeds_table(out, variants, args.variants, args.seeds, DERMOSCOPY_METRICS)
    report += f"\ncommand: python {shlex.join(sys.argv)}\n"
    (out / "results_seeds.md").write_text(report)
    print("\n" + report)
    return report
