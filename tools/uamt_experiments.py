"""Train SupOnly, MT and UAMT with the same labels and schedule, test each, print one table.

The three runs differ only by the UAMT bundle's method switches (``configs/baselines/*.json``);
each run ends by evaluating its final student on the test folder (the trainer's validation set,
used once, at the end: no model selection happens on it). Every command is printed before it
runs, so any row of the table can be reproduced on its own.

Example (the figures in bundles/uamt_skin/docs/README.md):

    python tools/uamt_experiments.py --train_dir ../shared/data/dermoscopy/ph2 --num_labelled 8 \
        --test_dir ../shared/data/dermoscopy/isic2017 --preset cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiment_runner import ROOT, Variant, run_variants

BUNDLE = ROOT / "bundles" / "uamt_skin"
VARIANTS: dict[str, Variant] = {
    "suponly": Variant("SupOnly", ["configs/baselines/suponly.json"]),
    "mean_teacher": Variant("MT", ["configs/baselines/mean_teacher.json"]),
    "uamt": Variant("UAMT"),
    "uamt_rampup": Variant("UAMT, L = Ls + lambda Lu", overrides=["--method#loss_weighting", "consistency_rampup"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_dir", required=True, help="ISIC/PH2-style train pool")
    parser.add_argument("--test_dir", required=True, help="labelled ISIC/PH2-style test folder")
    parser.add_argument("--num_labelled", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="cpu", help="config preset in configs/ merged after train.json ('' for none)")
    parser.add_argument("--variants", nargs="+", default=["suponly", "mean_teacher", "uamt"], choices=list(VARIANTS))
    parser.add_argument("--out", default=str(BUNDLE / "runs" / "experiments"), help="where runs and the table go")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs' metrics instead of retraining")
    parser.add_argument("overrides", nargs="*", help="extra --key value pairs passed to every run")
    args = parser.parse_args()

    run_args = [
        "--dataset_dir", str(Path(args.train_dir).resolve()),
        "--val_dataset_dir", str(Path(args.test_dir).resolve()),
        "--num_labelled", str(args.num_labelled),
        "--seed", str(args.seed),
        *args.overrides,
    ]
    run_variants(BUNDLE, VARIANTS, args.variants, Path(args.out).resolve(), run_args,
                 metrics=("dice", "iou", "sensitivity", "specificity"), preset=args.preset, reuse=args.reuse)


if __name__ == "__main__":
    main()
