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
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.metrics import results_table  # noqa: E402

BUNDLE = ROOT / "bundles" / "uamt_skin"
# run folder -> (table row, override config files, extra "--key value" overrides)
VARIANTS: dict[str, tuple[str, list[str], list[str]]] = {
    "suponly": ("SupOnly", ["configs/baselines/suponly.json"], []),
    "mean_teacher": ("MT", ["configs/baselines/mean_teacher.json"], []),
    "uamt": ("UAMT", [], []),
    "uamt_rampup": ("UAMT, L = Ls + lambda Lu", [], ["--method#loss_weighting", "consistency_rampup"]),
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
    parser.add_argument("overrides", nargs="*", help="extra --key value pairs passed to every run")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    rows, seconds = {}, {}
    for name in args.variants:
        label, files, extra = VARIANTS[name]
        configs = ["configs/train.json"] + ([f"configs/{args.preset}.json"] if args.preset else []) + files
        config_arg = "[" + ",".join(f"'{BUNDLE / c}'" for c in configs) + "]"
        run_dir = out / name
        command = [
            sys.executable, "-m", "monai.bundle", "run", "training",
            "--config_file", config_arg,
            "--dataset_dir", str(Path(args.train_dir).resolve()),
            "--val_dataset_dir", str(Path(args.test_dir).resolve()),
            "--num_labelled", str(args.num_labelled),
            "--seed", str(args.seed),
            "--output_dir", str(run_dir),
            "--model_dir", str(run_dir),
            *extra,
            *args.overrides,
        ]
        print(f"\n### {label}\n{shlex.join(command)}", flush=True)
        start = time.time()
        subprocess.run(command, check=True, cwd=ROOT)
        seconds[label] = time.time() - start
        rows[label] = json.loads((run_dir / "validation_metrics.json").read_text())["cases"]

    table = results_table(rows, metrics=("dice", "iou", "sensitivity", "specificity"))
    timing = "\n".join(f"- {name}: {s / 60:.1f} min" for name, s in seconds.items())
    report = f"{table}\n\nwall-clock per run (train + test):\n{timing}\n"
    (out / "results.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
