r"""SSL-MedSAM2's comparison on an MSD-style 3D folder (LA): SupOnly, TFFS pseudo-labels alone,
TFFS + 1 FSL round and TFFS + N rounds with the fold ensemble, same labels and schedule, over
seeds, paired tests.

The split is the other 3D bundles' (``semisam_experiments``): cases sorted by id, the first
``--pool`` (60) form the training pool with ``--num_labelled`` labelled (drawn by the seed), the
last ``--test`` (20) the test set. TFFS and the FSL rounds depend on the seed only, so the runs of
one seed share them (``<out>/seed<k>/shared``): TFFS + 1 round is the full run's first round.

Example (the figures in bundles/ssl_medsam2/docs/README.md):

    OMP_NUM_THREADS=1 python tools/experiments.py ssl_medsam2 --data ../shared/data/la --num_labelled 4 --seeds 0 1 2
"""

from __future__ import annotations

from experiment_runner import BundleExperiment, Variant, main

SPEC = BundleExperiment(
    bundle="ssl_medsam2",
    variants={
        "suponly": Variant("SupOnly (planned DynUNet, labelled only)", ["configs/baselines/suponly.json"]),
        "tffs_alone": Variant("TFFS pseudo-labels alone (LiteMedSAM box chain)",
                              overrides=["--run_name", "tffs_alone", "--tffs#alone", "True"]),
        "one_round": Variant("TFFS + 1 FSL round (fold ensemble)", ["configs/baselines/one_round.json"]),
        "ssl_medsam2": Variant("SSL-MedSAM2: TFFS + FSL rounds (fold ensemble)", overrides=["--run_name", "ssl_medsam2"]),
    },
    method="ssl_medsam2",
    default_variants=("suponly", "tffs_alone", "one_round", "ssl_medsam2"),
    data="msd",
    metrics=("dice", "iou", "hd95", "asd", "hd95_voxel", "asd_voxel"),
    tested_metrics=("dice", "hd95"),
    distance_unit="mm",
    seed_shared_key="work_dir",
    sam_cache_key="tffs#cache_dir",
    notes="TFFS and the FSL rounds are shared by the runs of a seed (TFFS + 1 round is the full run's first round).",
)

if __name__ == "__main__":
    main(SPEC, description=__doc__)
