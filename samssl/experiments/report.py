"""A comparison's Markdown report: per-seed means, mean ± sd over seeds, paired tests of the method.

:mod:`samssl.metrics.comparison` says what each pairing answers (over seeds: will the method help on
my split; over test cases: is the gain consistent across images). These functions only lay the
numbers out; the leaderboard reuses :func:`seed_mean` and :func:`paired_comparisons` so its
figures are the reports' to the digit.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from samssl.experiments.records import Results
from samssl.experiments.variants import BundleExperiment
from samssl.metrics import DISPLAY_NAMES, PERCENT_METRICS, PairedComparison, case_means_over_runs, paired_wilcoxon

__all__ = ["comparison_report", "metric_scale", "paired_comparisons", "paired_table", "seed_mean", "seeds_table"]


def metric_scale(metric: str) -> float:
    """100 for overlap scores reported in percent, 1 for distances."""
    return 100.0 if metric in PERCENT_METRICS else 1.0


def seed_mean(records: Sequence[Mapping[str, Any]], metric: str) -> float:
    """Mean of ``metric`` over one run's test cases (in the table's unit; NaN cases dropped, NaN if none)."""
    values = [float(r[metric]) for r in records if r.get(metric) is not None and r[metric] == r[metric]]
    return metric_scale(metric) * statistics.mean(values) if values else float("nan")


def paired_comparisons(results: Results, method: str, other: str, seeds: Sequence[int],
                       metric: str) -> tuple[PairedComparison, PairedComparison]:
    """``method`` against ``other`` on ``metric``: paired over seeds (per-seed means, table unit) and
    over test cases (each case's value averaged over the seeds, the metric's own unit)."""
    by_seed = paired_wilcoxon([seed_mean(results[other][s], metric) for s in seeds],
                              [seed_mean(results[method][s], metric) for s in seeds], metric)
    for seed in seeds:  # pairs are made within a seed: both variants of a seed must share its test set
        if sorted(str(r["id"]) for r in results[other][seed]) != sorted(str(r["id"]) for r in results[method][seed]):
            raise ValueError(f"{method} and {other} seed {seed} were tested on different cases: they cannot be paired.")
    # the seeds may test different cases (--folds: each seed its own held-out fold); a case's value is
    # its mean over the seeds that tested it
    base_cases = case_means_over_runs([results[other][s] for s in seeds], metric, same_cases=False)
    method_cases = case_means_over_runs([results[method][s] for s in seeds], metric, same_cases=False)
    ids = sorted(base_cases)
    by_case = paired_wilcoxon([base_cases[i] for i in ids], [method_cases.get(i) for i in ids], metric)
    return by_seed, by_case


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
        cells = [f"{seed_mean(results[name][s], 'dice'):.2f}" for s in seeds]
        for metric in metrics:
            values = [seed_mean(results[name][s], metric) for s in seeds]
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
            by_seed, by_case = paired_comparisons(results, method, other, seeds, metric)
            lines.append(
                f"| {spec.variants[method].label} vs {spec.variants[other].label} "
                f"| {DISPLAY_NAMES.get(metric, metric)} "
                f"| {by_seed.mean_difference:+.2f} | {by_seed.num_better}/{by_seed.num_worse} | {by_seed.p_value:.3g} "
                f"| {metric_scale(metric) * by_case.mean_difference:+.2f} | {by_case.num_better}/{by_case.num_worse} "
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
