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
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.metrics import results_table  # noqa: E402

BUNDLE = ROOT / "bundles" / "samkd_dualtask_skin"
# run folder -> (table row, override config files, extra "--key value" overrides)
VARIANTS: dict[str, tuple[str, list[str], list[str]]] = {
    "suponly": ("SupOnly (main network, labelled only)", ["configs/baselines/suponly.json"], []),
    "no_sam": ("Main + teacher, no SAM", ["configs/baselines/no_sam.json"], []),
    "full": ("Full method (+ fused prompt, SAM, KD)", [], ["--run_name", "full"]),
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
    parser.add_argument("overrides", nargs="*", help="extra --key value pairs passed to every run")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    cache_dir = Path(args.sam_cache_dir).resolve() if args.sam_cache_dir else out / "sam_embeddings"
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
            "--sam_cache_dir", str(cache_dir),
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
    report = f"{table}\n\nwall-clock per run (train + test; the first SAM-using run also embeds the train pool):\n{timing}\n"
    (out / "results.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
