r"""UAMT's comparison: SupOnly, MT and UAMT with the same labels and schedule, over seeds, paired tests.

The runs differ only by the UAMT bundle's method switches (``configs/baselines/*.json``); see
``experiment_runner`` for what each run does and what the report holds.

Example (the figures in bundles/uamt_skin/docs/README.md):

    OMP_NUM_THREADS=1 python tools/uamt_experiments.py --train_dir ../shared/data/dermoscopy/ph2 \
        --num_labelled 8 --test_dir ../shared/data/dermoscopy/isic2017 --variants suponly uamt
"""

from __future__ import annotations

from experiment_runner import BundleExperiment, Variant, main

SPEC = BundleExperiment(
    bundle="uamt_skin",
    variants={
        "suponly": Variant("SupOnly", ["configs/baselines/suponly.json"]),
        "mean_teacher": Variant("MT", ["configs/baselines/mean_teacher.json"]),
        "uamt": Variant("UAMT"),
        "uamt_paper_weighting": Variant("UAMT, eq. 4 as printed", ["configs/baselines/paper_weighting.json"]),
    },
    method="uamt",
    default_variants=("suponly", "mean_teacher", "uamt"),
)

if __name__ == "__main__":
    main(SPEC, description=__doc__)
