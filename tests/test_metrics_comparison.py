"""samssl.metrics.comparison: paired Wilcoxon tests between two methods' results."""

from __future__ import annotations

import math

import pytest

from samssl.metrics import case_means_over_runs, paired_wilcoxon


def test_consistent_gain_is_significant_with_enough_pairs():
    base = [0.50, 0.60, 0.55, 0.40, 0.70, 0.65, 0.52, 0.58]
    method = [b + 0.05 + 0.01 * i for i, b in enumerate(base)]
    result = paired_wilcoxon(base, method)
    assert result.num_pairs == 8 and result.num_better == 8 and result.num_worse == 0
    assert result.mean_difference == pytest.approx(0.085)
    assert result.p_value == pytest.approx(2 / 2**8)
    assert result.verdict() == "better (significant)"


def test_five_seeds_cannot_reach_005_and_the_verdict_says_so():
    result = paired_wilcoxon([40.0, 41, 42, 43, 44], [45.0, 46, 47, 48, 50])
    assert result.p_value == pytest.approx(0.0625) and result.smallest_possible_p == pytest.approx(0.0625)
    assert result.verdict() == "not testable at 0.05 with 5 pairs"


def test_distances_count_lower_as_better_and_undefined_pairs_are_dropped():
    result = paired_wilcoxon([10.0, 12.0, None, 9.0], [8.0, 11.0, 3.0, float("nan")], metric="hd95")
    assert result.num_pairs == 2 and result.num_dropped == 2
    assert result.num_better == 2 and result.mean_difference == pytest.approx(-1.5)


def test_identical_results_and_degenerate_inputs():
    assert paired_wilcoxon([0.5, 0.6], [0.5, 0.6]).p_value == 1.0
    assert paired_wilcoxon([0.5, 0.6], [0.5, 0.6]).verdict() == "no difference"
    assert math.isnan(paired_wilcoxon([0.5], [0.6]).p_value)
    assert paired_wilcoxon([], []).verdict() == "too few pairs to test"
    with pytest.raises(ValueError, match="paired"):
        paired_wilcoxon([0.5, 0.6], [0.5])


def test_case_means_over_runs_average_each_case_and_need_the_same_cases():
    runs = [[{"id": "a", "dice": 0.2}, {"id": "b", "dice": None}], [{"id": "b", "dice": 0.6}, {"id": "a", "dice": 0.4}]]
    assert case_means_over_runs(runs, "dice") == pytest.approx({"a": 0.3, "b": 0.6})
    with pytest.raises(ValueError, match="different cases"):
        case_means_over_runs([[{"id": "a", "dice": 0.1}], [{"id": "c", "dice": 0.1}]], "dice")
