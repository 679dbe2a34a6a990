"""Train SupOnly, main+teacher without SAM, and the full dual-task SAM-distillation method with the
same labels and schedule, test each, print one table.

The three runs differ only by the bundle's method switches (``configs/baselines/*.json``); each
run ends by evaluating its final main network on the test folder (the trainer's validation set,
used once, at the end: no model selection happens on it). SAM's image embeddings of the train
pool are cached in one folder shared by the runs (``--sam_cache_dir``), so every training image
is encoded once for all of them. Every command is printed before it runs, so any row of the
table can be reproduced on its own.

Example (the figures in bundles/samkd_dualtask_skin/docs/README.md):

    OMP_NUM_THREADS=1 python tools/samkd_experiments.py --train_dir ../shared/data/dermoscopy/ph2 \
        --num_labelled 8 --test_dir ../shared/data/dermoscopy/isic2017 --preset cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiment_runner import ROOT, Variant, run_variants

BUNDLE = ROOT / "bundles" / "samkd_dualtask_skin"
VARIANTS: dict[str, Variant] = {
    "suponly": Variant("SupOnly (main network, labelled only)", ["configs/baselines/suponly.json"]),
    "no_sam": Variant("Main + teacher, no SAM", ["configs/baselines/no_sam.json"]),
    "full": Variant("Full method (+ fused prompt, SAM, KD)", overrides=["--run_name", "full"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_dir", required=True, help="ISIC/PH2-style train pool")
    parser.add_argument("--test_dir", required=True, help="labelled ISIC/PH2-style test folder")
    parser.add_argument("--num_labelled", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="cpu", help="config preset in configs/ merged after train.json ('' for none)")
    parser.add_argument("--variants", nargs="+", default=["suponly", "no_sam", "full"], choices=list(VARIANTS))
    parser.add_argument("--out", default=str(BUNDLE / "runs" / "experiments"), help="where runs and the table go")
    parser.add_argument("--sam_cache_dir", default=None, help="shared SAM embedding cache (default: <out>/sam_embeddings)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs' metrics instead of retraining")
    parser.add_argument("overrides", nargs="*", help="extra --key value pairs passed to every run")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    run_args = [
        "--dataset_dir", str(Path(args.train_dir).resolve()),
        "--val_dataset_dir", str(Path(args.test_dir).resolve()),
        "--num_labelled", str(args.num_labelled),
        "--seed", str(args.seed),
        "--sam_cache_dir", str(Path(args.sam_cache_dir).resolve() if args.sam_cache_dir else out / "sam_embeddings"),
        *args.overrides,
    ]
    run_variants(BUNDLE, VARIANTS, args.variants, out, run_args, metrics=("dice", "iou", "sensitivity", "specificity"),
                 preset=args.preset, reuse=args.reuse,
                 notes="The first run that uses SAM or the frozen teacher also embeds the train pool once.")


if __name__ == "__main__":
    main()
