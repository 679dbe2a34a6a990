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

from experiment_runner import ROOT, Variant, dermoscopy_experiment

BUNDLE = ROOT / "bundles" / "uamt_skin"
VARIANTS: dict[str, Variant] = {
    "suponly": Variant("SupOnly", ["configs/baselines/suponly.json"]),
    "mean_teacher": Variant("MT", ["configs/baselines/mean_teacher.json"]),
    "uamt": Variant("UAMT"),
    "uamt_rampup": Variant("UAMT, L = Ls + lambda Lu", overrides=["--method#loss_weighting", "consistency_rampup"]),
}


def main() -> None:
    dermoscopy_experiment(__doc__, BUNDLE, VARIANTS, ["suponly", "mean_teacher", "uamt"])


if __name__ == "__main__":
    main()
