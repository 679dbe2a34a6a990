"""Train SupOnly, MT and MT+SemiSAM on LA with the same labels and schedule, test each, print one table.

The split: the LA cases of an MSD-style folder sorted by id; the first ``--pool`` (60) form the
training pool, of which ``--num_labelled`` (4) are labelled, drawn with ``--seed`` by
``common.data.split_labelled`` (the rest are unlabelled and lose their label key); the last
``--test`` (20) are the test set, used once at the end of each run (no model selection on it).
Both lists are written as MSD ``dataset.json`` files under ``--out``. The runs differ only by the
bundle's baseline configs; every command is printed before it runs, so any row can be reproduced
on its own. Runs resume after a kill (re-run the same command).

Example (the figures in bundles/semisam_la/docs/README.md):

    OMP_NUM_THREADS=1 python tools/semisam_experiments.py --data ../shared/data/la --preset cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiment_runner import ROOT, Variant, run_variants

from common.data import msd_datalist

BUNDLE = ROOT / "bundles" / "semisam_la"
VARIANTS: dict[str, Variant] = {
    "suponly": Variant("SupOnly", ["configs/baselines/suponly.json"]),
    "mean_teacher": Variant("MT", ["configs/baselines/mean_teacher.json"]),
    "mean_teacher_semisam": Variant("MT + SemiSAM", ["configs/baselines/mean_teacher_semisam.json"]),
    "uamt": Variant("UA-MT", ["configs/baselines/uamt.json"]),
    "uamt_semisam": Variant("UA-MT + SemiSAM", ["configs/baselines/uamt_semisam.json"]),
}
METRICS = ("dice", "iou", "hd95", "asd", "hd95_voxel", "asd_voxel")


def _write_msd(path: Path, entries: list[dict], name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    description = {
        "name": name,
        "tensorImageSize": "3D",
        "labels": {"0": "background", "1": "left atrium"},
        "numTraining": len(entries),
        "training": [{"image": e["image"], "label": e["label"]} for e in entries],
    }
    path.write_text(json.dumps(description, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "la"), help="LA MSD-style folder")
    parser.add_argument("--pool", type=int, default=60, help="first N cases (by id) form the training pool")
    parser.add_argument("--test", type=int, default=20, help="last N cases (by id) form the test set")
    parser.add_argument("--num_labelled", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="cpu", help="config preset in configs/ merged after train.json ('' for none)")
    parser.add_argument("--variants", nargs="+", default=["suponly", "mean_teacher", "mean_teacher_semisam"],
                        choices=list(VARIANTS))
    parser.add_argument("--out", default=str(BUNDLE / "runs" / "experiments"), help="where runs and the table go")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs' metrics instead of retraining")
    parser.add_argument("overrides", nargs="*", help="extra --key value pairs passed to every run")
    args = parser.parse_args()

    cases = sorted(msd_datalist(args.data), key=lambda e: e["id"])
    if args.pool + args.test > len(cases):
        raise SystemExit(f"{args.data} has {len(cases)} cases, fewer than pool {args.pool} + test {args.test}")
    out = Path(args.out).resolve()
    pool_json = _write_msd(out / "split" / "pool" / "dataset.json", cases[: args.pool], "LA train pool")
    test_json = _write_msd(out / "split" / "test" / "dataset.json", cases[-args.test :], "LA test")
    run_args = [
        "--dataset_dir", str(pool_json),
        "--val_dataset_dir", str(test_json),
        "--num_labelled", str(args.num_labelled),
        "--seed", str(args.seed),
        "--sam#cache_dir", str(out / "sam_embeddings"),
        *args.overrides,
    ]
    notes = (f"LA, {args.num_labelled} labelled (seed {args.seed}) + {args.pool - args.num_labelled} unlabelled "
             f"of the first {args.pool} cases by id; test: the last {args.test}.")
    run_variants(BUNDLE, VARIANTS, args.variants, out, run_args, metrics=METRICS, preset=args.preset,
                 distance_unit="mm", reuse=args.reuse, notes=notes)


if __name__ == "__main__":
    main()
