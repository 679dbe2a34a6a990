"""Train SupOnly, main+teacher without SAM, and the full dual-task SAM-distillation method with the
same labels and schedule, test each, print one table.

The three runs differ only by the bundle's method switches (``configs/baselines/*.json``); each
run ends by evaluating its final main network on the test folder (the trainer's validation set,
used once, at the end: no model selection happens on it). SAM's image embeddings of the train
pool are cached in one folder shared by the runs (``--sam_cache_dir``), so every training image
is encoded once for all of them. Every command is printed before it runs, so any row of the
table can be reproduced on its own.

Examples (the figures in bundles/samkd_dualtask_skin/docs/README.md): one seed, all three
variants; then SupOnly and the full method over three seeds (each seed draws other labelled
images; runs in <out>/seed<k>, and a table over the seeds):

    OMP_NUM_THREADS=1 python tools/samkd_experiments.py --train_dir ../shared/data/dermoscopy/ph2 \
        --num_labelled 8 --test_dir ../shared/data/dermoscopy/isic2017 --preset cpu
    OMP_NUM_THREADS=1 python tools/samkd_experiments.py --train_dir ../shared/data/dermoscopy/ph2 \
        --num_labelled 8 --test_dir ../shared/data/dermoscopy/isic2017 --preset cpu \
        --variants suponly full --seeds 0 1 2
"""

from __future__ import annotations

from experiment_runner import ROOT, Variant, dermoscopy_experiment

BUNDLE = ROOT / "bundles" / "samkd_dualtask_skin"
VARIANTS: dict[str, Variant] = {
    "suponly": Variant("SupOnly (main network, labelled only)", ["configs/baselines/suponly.json"]),
    "no_sam": Variant("Main + teacher, no SAM", ["configs/baselines/no_sam.json"]),
    "full": Variant("Full method (+ fused prompt, SAM, KD)", overrides=["--run_name", "full"]),
}


def main() -> None:
    dermoscopy_experiment(__doc__, BUNDLE, VARIANTS, ["suponly", "no_sam", "full"], sam_cache=True,
                          notes="The first run that uses SAM or the frozen teacher also embeds the train pool once.")


if __name__ == "__main__":
    main()
