r"""SemiSAM's comparison on an MSD-style 3D folder (LA): SupOnly, MT and MT + SemiSAM with the same
labels and schedule, over seeds, paired tests.

The split: the cases sorted by id; the first ``--pool`` (60) form the training pool, of which
``--num_labelled`` (4) are labelled, drawn by the seed with ``samssl.data.split_labelled`` (the
rest are unlabelled and lose their label key); the last ``--test`` (20) are the test set, used once
at the end of each run. Both lists are written as MSD ``dataset.json`` files under ``--out``. The
runs differ only by the bundle's baseline configs; see ``experiment_runner`` for the rest.

Example (the figures in bundles/semisam_la/docs/README.md):

    OMP_NUM_THREADS=1 python tools/semisam_experiments.py --data ../shared/data/la --seeds 0
"""

from __future__ import annotations

from experiment_runner import BundleExperiment, Variant, main

SPEC = BundleExperiment(
    bundle="semisam_la",
    variants={
        "suponly": Variant("SupOnly", ["configs/baselines/suponly.json"]),
        "mean_teacher": Variant("MT", ["configs/baselines/mean_teacher.json"]),
        "mean_teacher_semisam": Variant("MT + SemiSAM", ["configs/baselines/mean_teacher_semisam.json"]),
        "mean_teacher_semisam_reliable": Variant(
            "MT + SemiSAM, reliability-gated (floor 0.5, lambda_s ramps up)",
            ["configs/baselines/mean_teacher_semisam_reliable.json"],
        ),
        "uamt": Variant("UA-MT", ["configs/baselines/uamt.json"]),
        "uamt_semisam": Variant("UA-MT + SemiSAM", ["configs/baselines/uamt_semisam.json"]),
    },
    method="mean_teacher_semisam",
    default_variants=("suponly", "mean_teacher", "mean_teacher_semisam"),
    data="msd",
    metrics=("dice", "iou", "hd95", "asd", "hd95_voxel", "asd_voxel"),
    tested_metrics=("dice", "hd95"),
    distance_unit="mm",
    sam_cache_key="sam#cache_dir",
)

if __name__ == "__main__":
    main(SPEC, description=__doc__)
