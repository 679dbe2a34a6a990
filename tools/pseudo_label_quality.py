"""Score written pseudo-labels against the ground truth the training never read.

SFR (and any bundle that writes pseudo-labels with ``common.engines.pseudo_labelling``) keeps a
``manifest.json`` beside its NIfTI pseudo-labels. This tool matches each pseudo-labelled image with
its label in a labelled dataset folder (MSD ``dataset.json`` or UA-MT h5 layout) and prints the
Dice of every case, their mean and the mean confidence (SFR eq. 8): how good the teacher's
supervision of the unlabelled cases was. Evaluation only: the training never opens these labels.

Example::

    python tools/pseudo_label_quality.py bundles/sfr_la/runs/experiments/seed0/shared/round0/pseudo_labels \\
        --data ../shared/data/la
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import common.data as data  # noqa: E402


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    prediction, truth = prediction > 0, truth > 0
    total = int(prediction.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * float((prediction & truth).sum()) / total


def score(pseudo_label_dir: Path, dataset: Path) -> list[dict]:
    manifest = json.loads((pseudo_label_dir / "manifest.json").read_text())
    labels = {str(Path(e["image"]).resolve()): e["label"] for e in data.volume_datalist(dataset) if "label" in e}
    loader = data.volume_transforms("eval")
    rows = []
    for case in manifest["cases"]:
        image = str(Path(case["image"]).resolve())
        if image not in labels:
            raise SystemExit(f"{case['image']} has no label in {dataset}: pass the labelled folder it came from")
        truth = loader({"image": image, "label": labels[image]})["label"]
        pseudo = data.volume_transforms("eval")({"image": image, "label": case["pseudo_label"]})["label"]
        rows.append({"image": Path(image).name, "dice": dice(np.asarray(pseudo), np.asarray(truth)),
                     "confidence": float(case["confidence"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pseudo_label_dir", type=Path, help="folder with manifest.json and the pseudo-label NIfTIs")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "la",
                        help="labelled dataset folder the unlabelled cases come from")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-case values here")
    args = parser.parse_args()
    rows = score(args.pseudo_label_dir, args.data)
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
