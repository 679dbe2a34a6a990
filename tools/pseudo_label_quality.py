"""Score written pseudo-labels against the ground truth the training never read.

SFR (and any bundle that writes pseudo-labels with ``samssl.stages.pseudo_labels``) keeps a
``manifest.json`` beside its NIfTI pseudo-labels. This tool matches each pseudo-labelled image with
its label in a labelled dataset folder (MSD ``dataset.json`` or UA-MT h5 layout) and prints the
Dice of every case, their mean and the mean confidence (SFR eq. 8): how good the teacher's
supervision of the unlabelled cases was. Evaluation only: the training never opens these labels.

Several folders are scored as one pool: SSL-MedSAM2 writes a round's pseudo-labels in its K
folds' folders, so a round is scored by passing them all (the paper's claim: rounds refine them).

Examples::

    python tools/pseudo_label_quality.py bundles/sfr_la/runs/experiments/seed0/shared/round0/pseudo_labels \\
        --data ../shared/data/la
    # SSL-MedSAM2: TFFS's pseudo-labels, then those of FSL round 0 (every fold's held-out cases)
    python tools/pseudo_label_quality.py bundles/ssl_medsam2/runs/experiments/seed0/shared/tffs --data ../shared/data/la
    python tools/pseudo_label_quality.py bundles/ssl_medsam2/runs/experiments/seed0/shared/fsl/round0/fold*/held_out_pseudo_labels \\
        --data ../shared/data/la
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

import samssl.data as data
from samssl.metrics import binary_dice

ROOT = Path(__file__).resolve().parents[1]


def score(pseudo_label_dir: Path, dataset: Path) -> list[dict]:
    """Dice and confidence of every pseudo-label listed in ``pseudo_label_dir/manifest.json``."""
    manifest_file = pseudo_label_dir / "manifest.json"
    if not manifest_file.is_file():
        raise SystemExit(f"no manifest.json in {pseudo_label_dir}: pass a folder of written pseudo-labels")
    manifest = json.loads(manifest_file.read_text())
    labels = {str(Path(e["image"]).resolve()): e["label"] for e in data.volume_datalist(dataset) if "label" in e}
    loader = data.volume_transforms("eval")
    rows = []
    for case in manifest["cases"]:
        image = str(Path(case["image"]).resolve())
        if image not in labels:
            raise SystemExit(f"{case['image']} has no label in {dataset}: pass the labelled folder it came from")
        truth = loader({"image": image, "label": labels[image]})["label"]
        pseudo = data.volume_transforms("eval")({"image": image, "label": case["pseudo_label"]})["label"]
        rows.append({"image": Path(image).name, "dice": binary_dice(np.asarray(pseudo), np.asarray(truth)),
                     "confidence": float(case["confidence"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pseudo_label_dirs", type=Path, nargs="+",
                        help="folder(s) with manifest.json and the pseudo-label NIfTIs, scored as one pool")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "la",
                        help="labelled dataset folder the unlabelled cases come from")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-case values here")
    args = parser.parse_args()
    rows = [row for folder in args.pseudo_label_dirs for row in score(folder, args.data)]
    repeated = sorted({r["image"] for r in rows if sum(x["image"] == r["image"] for x in rows) > 1})
    if repeated:
        raise SystemExit(f"cases pseudo-labelled in several of the folders (pass one round at a time): {repeated[:3]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": f"python {' '.join(sys.argv)}", "cases": rows}, indent=1))
    for row in rows:
        print(f"{row['image']}: Dice {100 * row['dice']:.2f}, confidence {row['confidence']:.4f}")
    dices = [r["dice"] for r in rows]
    print(f"\n{len(rows)} pseudo-labels: Dice {100 * statistics.mean(dices):.2f} ± "
          f"{100 * (statistics.stdev(dices) if len(dices) > 1 else 0.0):.2f} (mean ± sd over cases), "
          f"mean confidence {statistics.mean(r['confidence'] for r in rows):.4f}")
    print(f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
