"""Segmentation metrics per case, paper-style result tables and paired method comparisons."""


from samssl.metrics.comparison import LOWER_IS_BETTER, PairedComparison, case_means_over_runs, paired_wilcoxon
from samssl.metrics.segmentation import (
    ALL_METRICS,
    DISPLAY_NAMES,
    PERCENT_METRICS,
    VOLUME_METRICS,
    EmptyMaskWarning,
    binary_dice,
    case_metrics,
    results_table,
    summarise,
    write_results,
)

__all__ = [
    "ALL_METRICS",
    "DISPLAY_NAMES",
    "EmptyMaskWarning",
    "LOWER_IS_BETTER",
    "PERCENT_METRICS",
    "PairedComparison",
    "VOLUME_METRICS",
    "binary_dice",
    "case_means_over_runs",
    "case_metrics",
    "paired_wilcoxon",
    "results_table",
    "summarise",
    "write_results",
]
