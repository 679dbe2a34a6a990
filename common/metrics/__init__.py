"""Segmentation metrics per case and paper-style result tables."""

from .segmentation import (
    ALL_METRICS,
    PERCENT_METRICS,
    VOLUME_METRICS,
    EmptyMaskWarning,
    case_metrics,
    results_table,
    summarise,
    write_results,
)

__all__ = [
    "ALL_METRICS",
    "PERCENT_METRICS",
    "VOLUME_METRICS",
    "EmptyMaskWarning",
    "case_metrics",
    "results_table",
    "summarise",
    "write_results",
]
