r"""TFFS on real LA volumes: seconds per unlabelled volume and pseudo-label quality, per propagator setting.

Support = the first ``--labelled`` cases by id, unlabelled = the next ``--unlabelled`` ones (their
labels are read only here, to score the pseudo-labels). Every setting runs on the same cases in
one process, one after the other, sharing LiteMedSAM's embedding cache: the first setting's time
includes encoding every slice once, the later LiteMedSAM settings' times are decoding only. ``--sam2`` adds a random-init SAM2.1-t (speed only: random weights
cannot propagate anything meaningful).

Example (the figures in bundles/ssl_medsam2/docs/README.md):

    OMP_NUM_THREADS=2 python tools/benchmark_tffs.py --data ../shared/data/la --labelled 2 --unlabelled 3 --repeats 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bundles" / "ssl_medsam2"))

from common.data import msd_datalist, volume_transforms  # noqa: E402
from common.teachers import build_teacher  # noqa: E402
from common.teachers.propagation import BoxChainPropagator, VideoMemoryPropagator  # noqa: E402
from scripts.tffs import TrainingFreeFewShot, load_support  # noqa: E402


def dice(prediction: torch.Tensor, target: torch.Tensor) -> float:
    total = prediction.sum() + target.sum()
    return float(2 * (prediction & target).sum() / total) if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="MSD-style folder (dataset.json), e.g. LA")
    parser.add_argument("--labelled", type=int, default=2, help="support volumes M")
    parser.add_argument("--unlabelled", type=int, default=3, help="volumes to pseudo-label")
    parser.add_argument("--repeats", type=int, default=2, help="insertions per labelled volume R")
    parser.add_argument("--spacing", type=float, default=1.25, help="voxel size in mm (the CPU preset's)")
    parser.add_argument("--frame_size", type=int, default=256)
    parser.add_argument("--sam2", action="store_true", help="also time a random-init SAM2.1-t with memory attention")
    parser.add_argument("--sam2_size", type=int, default=512, help="SAM2 input size (MedSAM2: 512)")
    args = parser.parse_args()

    cases = sorted(msd_datalist(args.data), key=lambda e: e["id"])
    support = load_support(cases[: args.labelled], args.spacing)
    targets = cases[args.labelled: args.labelled + args.unlabelled]
    transform = volume_transforms("eval", target_spacing=args.spacing)
    volumes = [transform(e) for e in targets]
    litemedsam = build_teacher("litemedsam", cache={"max_bytes": 2 << 30})
    settings = [
        ("LiteMedSAM box chain, depth-matched seed, stop at predicted IoU < 0.8",
         BoxChainPropagator(litemedsam, min_score=0.8), "depth_matched"),
        ("LiteMedSAM box chain, whole labelled block inserted", BoxChainPropagator(litemedsam), "all"),
        ("LiteMedSAM box chain, depth-matched seed, stop where the mask vanishes (default)",
         BoxChainPropagator(litemedsam), "depth_matched"),
    ]
    if args.sam2:
        sam2 = build_teacher("sam2.1_hiera_t", random_init=True, image_size=args.sam2_size)
        settings.append((f"SAM2.1-t random init at {args.sam2_size}, memory attention (speed only)",
                         VideoMemoryPropagator(sam2), "all"))
    print(f"# TFFS on {len(volumes)} LA volumes at {args.spacing} mm, M = {args.labelled}, R = {args.repeats}, "
          f"frames {args.frame_size} px, {torch.get_num_threads()} threads")
    print(f"# {' '.join(sys.argv)}")
    print("| setting | s / volume | pseudo-label Dice (%) of each volume | Dice (%) |")
    print("|---|---:|---|---:|")
    for name, propagator, support_frames in settings:
        tffs = TrainingFreeFewShot(propagator, repeats=args.repeats, frame_size=args.frame_size,
                                   support_frames=support_frames)
        scores, start = [], time.perf_counter()
        for entry, item in zip(targets, volumes):
            probability = tffs.probability(item["image"].as_tensor(), support,
                                           tffs.generator_for(Path(entry["image"]).name))
            scores.append(dice(probability > 0.5, item["label"][0].as_tensor() > 0.5))
        seconds = (time.perf_counter() - start) / len(volumes)
        print(f"| {name} | {seconds:.1f} | {', '.join(f'{100 * s:.1f}' for s in scores)} | "
              f"{100 * sum(scores) / len(scores):.1f} |", flush=True)


if __name__ == "__main__":
    main()
