"""Paired comparisons of two methods run on the same splits: is a gain more than seed-to-seed noise?

With a handful of labelled images, which images are labelled (the seed draws them) and even the
float rounding of one run move a test Dice by several points, so a gain is only worth reporting
with a paired test. Two pairings answer two questions:

* **over seeds**: the per-seed mean of the method against that of the baseline trained on the
  same labelled images; this is the question a user asks ("will the method help on my split?"),
  but with 5 seeds the exact two-sided Wilcoxon test cannot go below ``2 / 2**5 = 0.0625``;
* **over test cases**: each case's metric averaged over the seeds, method against baseline;
  many more pairs, but they share the seeds' training runs, so it measures whether the gain is
  consistent across images, not across training runs.

Both use the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``; exact for small samples), which
assumes no distribution for the differences; pairs where either value is undefined (e.g. HD95 of
an empty prediction) are dropped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

__all__ = ["LOWER_IS_BETTER", "PairedComparison", "case_means_over_runs", "paired_wilcoxon"]

# Distance metrics: smaller is better (every other metric here is an overlap score).
LOWER_IS_BETTER = frozenset({"hd95", "asd", "hd95_voxel", "asd_voxel"})


@dataclass(frozen=True)
class PairedComparison:
    """Method against baseline over paired values of one metric.

    Attributes:
        metric: the metric compared.
        num_pairs: pairs with both values defined.
        num_dropped: pairs dropped because a value was undefined (NaN / None).
        mean_difference: mean of ``method - baseline`` over the pairs (in the metric's own unit).
        num_better: pairs where the method is better (higher, or lower for distances).
        num_worse: pairs where it is worse.
        p_value: two-sided Wilcoxon signed-rank p-value (1.0 when every difference is zero,
            NaN with fewer than 2 pairs).
        smallest_possible_p: the smallest two-sided p the exact test can reach with this many
            pairs (``2 / 2**n``): with 5 seeds it is 0.0625, so "not significant at 0.05" is a
            property of the design, not evidence of no effect.
    """

    metric: str
    num_pairs: int
    num_dropped: int
    mean_difference: float
    num_better: int
    num_worse: int
    p_value: float
    smallest_possible_p: float

    def verdict(self, alpha: float = 0.05) -> str:
        """Plain words for a results table: which way, and whether the test says it is real."""
        if self.num_pairs < 2 or math.isnan(self.p_value):
            return "too few pairs to test"
        if self.num_better == self.num_worse == 0:
            return "no difference"
        if self.p_value < alpha:
            return "better (significant)" if self.num_better > self.num_worse else "worse (significant)"
        if self.smallest_possible_p >= alpha:
            return f"not testable at {alpha} with {self.num_pairs} pairs"
        return "not significant"


def _defined(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def paired_wilcoxon(
    baseline: Sequence[float | None], method: Sequence[float | None], metric: str = "dice"
) -> PairedComparison:
    """Compare ``method`` with ``baseline`` value by value (same order = same pair).

    Raises:
        ValueError: when the two sequences differ in length (they would not be paired).
    """
    if len(baseline) != len(method):
        raise ValueError(f"paired values needed: baseline has {len(baseline)}, method has {len(method)}.")
    pairs = [(float(b), float(m)) for b, m in zip(baseline, method) if _defined(b) and _defined(m)]
    dropped = len(baseline) - len(pairs)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    differences = np.asarray([m - b for b, m in pairs], dtype=float)
    n = len(pairs)
    if n == 0:
        return PairedComparison(metric, 0, dropped, math.nan, 0, 0, math.nan, math.nan)
    better = int(np.sum(sign * differences > 0))
    worse = int(np.sum(sign * differences < 0))
    nonzero = int(np.count_nonzero(differences))
    if n < 2:
        p = math.nan
    elif nonzero == 0:
        p = 1.0
    else:
        p = float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)
    smallest = 2.0 / 2 ** max(nonzero, 1) if nonzero else 1.0
    return PairedComparison(metric, n, dropped, float(differences.mean()), better, worse, p, min(1.0, smallest))


def case_means_over_runs(runs: Sequence[Sequence[Mapping[str, object]]], metric: str,
                         same_cases: bool = True) -> dict[str, float]:
    """Per test case, the mean of ``metric`` over several runs (e.g. one run per seed).

    ``runs`` holds each run's per-case records (``{"id": ..., metric: value}``, as the bundles'
    ``validation_metrics.json`` store them). Undefined values are left out of a case's mean; a
    case undefined in every run maps to NaN. ``same_cases=False`` accepts runs tested on different
    cases (cross-validation: each run on its own held-out fold): a case's mean is over the runs that
    tested it.

    Raises:
        ValueError: when ``same_cases`` and the runs were not tested on the same cases.
    """
    if not runs:
        return {}
    ids = list(dict.fromkeys(str(r["id"]) for records in runs for r in records))
    if same_cases:
        first = sorted(str(r["id"]) for r in runs[0])
        for records in runs[1:]:
            if sorted(str(r["id"]) for r in records) != first:
                raise ValueError("the runs were tested on different cases: a per-case comparison needs the same "
                                 "test set.")
    values: dict[str, list[float]] = {case: [] for case in ids}
    for records in runs:
        for record in records:
            value = record.get(metric)
            if _defined(value):
                values[str(record["id"])].append(float(value))  # type: ignore[arg-type]
    return {case: (float(np.mean(v)) if v else math.nan) for case, v in values.items()}
