r"""TFFS on real LA volumes: seconds per unlabelled volume and pseudo-label quality, per propagator setting.

Support = the first ``--labelled`` cases by id, unlabelled = the next ``--unlabelled`` ones (their
labels are read only here, to score the pseudo-labels). Every setting runs on the same cases in
one process, one after the other, sharing LiteMedSAM's embedding cache: the first setting's time
includes encoding every slice once, the later LiteMedSAM settings' times are decoding only.
``--settings`` picks which run; ``sam2`` is a random-init SAM2.1-t with memory attention (speed
only: random weights cannot propagate anything meaningful). ``--fold_iterations N`` also times N
iterations of one FSL fold's training (the CPU preset's planned DynUNet on the same cases) and
prints the cost of one FSL round at the preset's schedule.

Examples (the figures in bundles/ssl_medsam2/docs/README.md):

    OMP_NUM_THREADS=2 python tools/benchmark_tffs.py --data ../shared/data/la --labelled 2 --unlabelled 3 --repeats 2
    OMP_NUM_THREADS=2 python tools/benchmark_tffs.py --data ../shared/data/la --labelled 2 --unlabelled 1 --repeats 1 \
        --settings default sam2 --fold_iterations 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from samssl.data import msd_datalist, volume_transforms
from samssl.foundation import build_foundation_model
from samssl.foundation.propagation import BoxChainPropagator, VideoMemoryPropagator
from samssl.metrics import binary_dice
from samssl.utils.bundles import import_bundle_scripts

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "ssl_medsam2"

SETTINGS = ("iou_stop", "whole_block", "default", "sam2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="MSD-style folder (dataset.json), e.g. LA")
    parser.add_argument("--labelled", type=int, default=2, help="support volumes M")
    parser.add_argument("--unlabelled", type=int, default=3, help="volumes to pseudo-label")
    parser.add_argument("--repeats", type=int, default=2, help="insertions per labelled volume R")
    parser.add_argument("--spacing", type=float, default=1.25, help="voxel size in mm (the CPU preset's)")
    parser.add_argument("--frame_size", type=int, default=256)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=["iou_stop", "whole_block", "default"],
                        help="propagator settings to run, in this order (sam2: random-init SAM2.1-t, speed only)")
    parser.add_argument("--sam2", action="store_true", help="same as adding 'sam2' to --settings")
    parser.add_argument("--sam2_size", type=int, default=512, help="SAM2 input size (MedSAM2: 512)")
    parser.add_argument("--fold_iterations", type=int, default=0,
                        help="also time this many iterations of one FSL fold's training (0: skip)")
    parser.add_argument("--patch_size", type=int, nargs=3, default=[64, 64, 48], help="FSL patch (the CPU preset's)")
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="DynUNet filters")
    parser.add_argument("--preset_iterations", type=int, default=200, help="iterations per fold of the preset")
    parser.add_argument("--folds", type=int, default=5, help="folds per round (K)")
    args = parser.parse_args()
    if args.sam2 and "sam2" not in args.settings:
        args.settings.append("sam2")

    bundle_tffs = import_bundle_scripts(BUNDLE, "scripts.tffs")  # the bundle's own TFFS, as its configs use it
    cases = sorted(msd_datalist(args.data), key=lambda e: e["id"])
    support = bundle_tffs.load_support(cases[: args.labelled], args.spacing)
    targets = cases[args.labelled: args.labelled + args.unlabelled]
    transform = volume_transforms("eval", target_spacing=args.spacing)
    volumes = [transform(e) for e in targets]
    litemedsam = build_foundation_model("litemedsam", cache={"max_bytes": 2 << 30})
    catalogue = {
        "iou_stop": lambda: ("LiteMedSAM box chain, depth-matched seed, stop at predicted IoU < 0.8",
                             BoxChainPropagator(litemedsam, min_score=0.8), "depth_matched"),
        "whole_block": lambda: ("LiteMedSAM box chain, whole labelled block inserted", BoxChainPropagator(litemedsam),
                                "all"),
        "default": lambda: ("LiteMedSAM box chain, depth-matched seed, stop where the mask vanishes (default)",
                            BoxChainPropagator(litemedsam), "depth_matched"),
        "sam2": lambda: (f"SAM2.1-t random init at {args.sam2_size}, memory attention (speed only)",
                         VideoMemoryPropagator(build_foundation_model("sam2.1_hiera_t", random_init=True,
                                                             image_size=args.sam2_size)), "all"),
    }
    settings = [catalogue[name]() for name in args.settings]
    print(f"# TFFS on {len(volumes)} LA volumes at {args.spacing} mm, M = {args.labelled}, R = {args.repeats}, "
          f"frames {args.frame_size} px, {torch.get_num_threads()} threads")
    print(f"# {' '.join(sys.argv)}")
    print("| setting | s / volume | pseudo-label Dice (%) of each volume | Dice (%) |")
    print("|---|---:|---|---:|")
    for name, propagator, support_frames in settings:
        tffs = bundle_tffs.TrainingFreeFewShot(propagator, repeats=args.repeats, frame_size=args.frame_size,
                                   support_frames=support_frames)
        scores, start = [], time.perf_counter()
        prepared = tffs.prepare_support(support)  # once per run, as the bundle does
        for entry, item in zip(targets, volumes):
            probability = tffs.probability_from(item["image"].as_tensor(), prepared,
                                                tffs.generator_for(Path(entry["image"]).name))
            scores.append(binary_dice(probability > 0.5, item["label"][0].as_tensor() > 0.5))
        seconds = (time.perf_counter() - start) / len(volumes)
        print(f"| {name} | {seconds:.1f} | {', '.join(f'{100 * s:.1f}' for s in scores)} | "
              f"{100 * sum(scores) / len(scores):.1f} |", flush=True)
    if args.fold_iterations > 0:
        time_fold_training(cases[: args.labelled + args.unlabelled], args)


def time_fold_training(cases: list[dict], args: argparse.Namespace) -> None:
    """Seconds per iteration of one FSL fold (fresh planned DynUNet, nnU-Net recipe) and one round's cost."""
    fsl = import_bundle_scripts(BUNDLE, "scripts.fsl")
    planned_unet = import_bundle_scripts(BUNDLE, "scripts.planned_unet")  # the network the bundle's configs plan
    plan = planned_unet.plan_dynunet(args.patch_size, [args.spacing] * 3)
    training_set = [{"image": e["image"], "label": e["label"]} for e in cases]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        fsl.train_network(lambda: plan.build(filters=args.filters), training_set, Path(folder) / "fold",
                      args.patch_size, args.spacing, {"num_iterations": args.fold_iterations,
                                                      "checkpoint_interval": args.fold_iterations})
        seconds = (time.perf_counter() - start) / args.fold_iterations
    round_hours = seconds * args.preset_iterations * args.folds / 3600
    print(f"\n# FSL fold training: {seconds:.2f} s / iteration (patch {args.patch_size}, filters {args.filters}, "
          f"{len(training_set)} volumes cached, {args.fold_iterations} iterations incl. data loading)")
    print(f"# one FSL round at {args.preset_iterations} iterations x {args.folds} folds: {round_hours:.2f} h "
          f"(plus re-predicting the held-out volumes)")


if __name__ == "__main__":
    main()
