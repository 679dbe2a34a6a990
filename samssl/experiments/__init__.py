"""The comparison harness and the leaderboard: ``samssl-compare BUNDLE ...``, ``samssl-leaderboard``.

Experiments belong to bundles (each declares its variants once, in ``configs/variants.json``:
:mod:`~samssl.experiments.variants`); the harness that runs them belongs here: ``runner`` trains and
tests variants x seeds on the same splits and resumes whatever already ran, ``records`` reads and
joins the per-case ``results.json`` files, ``report`` lays out the tables and paired tests,
``leaderboard`` puts every method against its own SupOnly per data set, ``cli`` is the command line.
"""

from samssl.experiments.records import Results, load_earlier_results, load_results
from samssl.experiments.report import comparison_report, paired_table, seeds_table
from samssl.experiments.variants import BundleExperiment, Variant, VariantsError, find_bundle, load_variants

__all__ = [
    "BundleExperiment",
    "Results",
    "Variant",
    "VariantsError",
    "comparison_report",
    "find_bundle",
    "load_earlier_results",
    "load_results",
    "load_variants",
    "paired_table",
    "seeds_table",
]
