r"""SFR's comparison on an MSD-style 3D folder (LA): SupOnly, MT, the fine-tuned SAM alone, MT + SFR
and MT + SFR+ with the same labels and schedule, over seeds, paired tests.

The split is SemiSAM's (``semisam_experiments``): cases sorted by id, the first ``--pool`` (60) form
the training pool with ``--num_labelled`` labelled (drawn by the seed), the last ``--test`` (20) the
test set. The fine-tuned SAM and its pseudo-labels depend on the seed only, so the runs of one seed
share them (``<out>/seed<k>/shared``): "SAM alone", MT + SFR and MT + SFR+ fine-tune SAM once, and
SFR+ adds its second round on top of SFR's first.

Example (the figures in bundles/sfr_la/docs/README.md):

    OMP_NUM_THREADS=1 python tools/experiments.py sfr_la --data ../shared/data/la --num_labelled 4 --seeds 0 1 2
"""

from __future__ import annotations

from experiment_runner import BundleExperiment, Variant, main

SPEC = BundleExperiment(
    bundle="sfr_la",
    variants={
        "suponly": Variant("SupOnly (V-Net, labelled only)", ["configs/baselines/suponly.json"]),
        "mean_teacher": Variant("MT", ["configs/baselines/mean_teacher.json"]),
        "sam_alone": Variant("Fine-tuned SAM alone (stitched, LoRA)", overrides=["--run_name", "sam_alone",
                                                                                 "--sfr#sam_alone", "True"]),
        "mean_teacher_sfr": Variant("MT + SFR", overrides=["--run_name", "mean_teacher_sfr"]),
        "mean_teacher_sfr_plus": Variant("MT + SFR+", ["configs/baselines/sfr_plus.json"]),
        "self_training_sfr": Variant("Self-training + SFR", ["configs/baselines/self_training_sfr.json"]),
        "uamt_sfr": Variant("UA-MT + SFR", ["configs/baselines/uamt_sfr.json"]),
    },
    method="mean_teacher_sfr",
    default_variants=("suponly", "mean_teacher", "sam_alone", "mean_teacher_sfr", "mean_teacher_sfr_plus"),
    data="msd",
    metrics=("dice", "iou", "hd95", "asd", "hd95_voxel", "asd_voxel"),
    tested_metrics=("dice", "hd95"),
    distance_unit="mm",
    seed_shared_key="sfr#work_dir",
    notes="The fine-tuned SAM is shared by the SAM-alone, SFR and SFR+ runs of a seed (SFR+ adds a second round).",
)

if __name__ == "__main__":
    main(SPEC, description=__doc__)
