r"""The dual-task SAM-distillation comparison: SupOnly, main + teacher without SAM, and the full
method with the same labels and schedule, over seeds, paired tests.

The runs differ only by the bundle's method switches (``configs/baselines/*.json``). SAM's image
embeddings of the train pool are cached in one folder shared by the runs (``--sam_cache_dir``), so
every training image is encoded once for all of them. See ``experiment_runner`` for the rest.

Example (the figures in bundles/samkd_dualtask_skin/docs/README.md):

    OMP_NUM_THREADS=1 python tools/samkd_experiments.py --train_dir ../shared/data/dermoscopy/ph2 \
        --num_labelled 8 --test_dir ../shared/data/dermoscopy/isic2017 --variants suponly full --seeds 0 1 2
"""

from __future__ import annotations

from experiment_runner import BundleExperiment, Variant, main

SPEC = BundleExperiment(
    bundle="samkd_dualtask_skin",
    variants={
        "suponly": Variant("SupOnly (main network, labelled only)", ["configs/baselines/suponly.json"]),
        "no_sam": Variant("Main + teacher, no SAM", ["configs/baselines/no_sam.json"]),
        "full": Variant("Full method (+ fused prompt, SAM, KD)", overrides=["--run_name", "full"]),
    },
    method="full",
    default_variants=("suponly", "no_sam", "full"),
    sam_cache_key="sam_cache_dir",
    notes="The first run that uses SAM or the frozen teacher also embeds the train pool once.",
)

if __name__ == "__main__":
    main(SPEC, description=__doc__)
