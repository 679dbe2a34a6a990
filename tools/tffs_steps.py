r"""Each step's share of TFFS pseudo-label quality on LA pool volumes, per volume.

For each of the first ``--volumes`` unlabelled pool volumes of a split (``samssl.data.split_labelled``
on the first ``--pool`` cases by id, ``--num_labelled`` labelled drawn by ``--seed``: the bundles'
LA split), TFFS runs exactly as the bundle does (R insertions per labelled volume, every labelled
frame a conditioning frame) with the affinity-memory propagator, and the averaged pseudo-label is
scored three ways: the coarse label read-out alone (upsampled, before LiteMedSAM), the refined
pseudo-label (LiteMedSAM prompted with the coarse map's box; what TFFS writes), and, with
``--box_chain``, the LiteMedSAM box chain (depth-matched seed; the previous default).
The unlabelled volumes' labels are read here only to score: the propagators get images only.

Example (the table in bundles/ssl_medsam2/docs/README.md):

    OMP_NUM_THREADS=1 python tools/tffs_steps.py --data ../shared/data/la --volumes 6 --box_chain
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from samssl.data import msd_datalist, split_labelled, volume_transforms
from samssl.foundation import build_foundation_model
from samssl.foundation.affinity_memory import AffinityMemoryPropagator
from samssl.foundation.propagation import BoxChainPropagator
from samssl.metrics import binary_dice
from samssl.utils.bundles import import_bundle_scripts

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "ssl_medsam2"


class _Tap:
    """Runs the affinity memory once per TFFS run, hands TFFS the refined maps and keeps the coarse ones."""

    def __init__(self, propagator: AffinityMemoryPropagator) -> None:
        self.propagator, self.coarse = propagator, []

    def propagate(self, frames, mask_prompts):
        refined, coarse = self.propagator.propagate_steps(frames, mask_prompts)
        self.coarse.append(coarse)
        return refined


class _Replay:
    """Gives TFFS the recorded coarse maps in order (same insertions: same seed), so they are averaged alike."""

    def __init__(self, recorded: list[torch.Tensor]) -> None:
        self.recorded = list(recorded)

    def propagate(self, frames, mask_prompts):
        return self.recorded.pop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="MSD-style folder (dataset.json), e.g. LA")
    parser.add_argument("--pool", type=int, default=60, help="the first N cases by id form the pool (LA: 60)")
    parser.add_argument("--num_labelled", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="split seed (also TFFS's insertion seed)")
    parser.add_argument("--volumes", type=int, default=4, help="unlabelled pool volumes to score, in id order")
    parser.add_argument("--skip", type=int, default=0, help="start at this unlabelled volume")
    parser.add_argument("--repeats", type=int, default=2, help="R (the CPU preset's)")
    parser.add_argument("--spacing", type=float, default=1.25, help="mm (the CPU preset's)")
    parser.add_argument("--frame_size", type=int, default=256)
    parser.add_argument("--runtime", default="openvino_bf16", help="LiteMedSAM encoder runtime")
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--num_conditioning", type=int, default=None, help="None: all")
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--radius", type=int, default=None)
    parser.add_argument("--box_chain", action="store_true", help="also score the box chain")
    args = parser.parse_args()
    print("command: python tools/tffs_steps.py " + " ".join(sys.argv[1:]), flush=True)

    tffs = import_bundle_scripts(BUNDLE, "scripts.tffs")
    cases = sorted(msd_datalist(args.data), key=lambda e: e["id"])[: args.pool]
    truth = {e["id"]: e["label"] for e in cases}
    split = split_labelled(cases, num_labelled=args.num_labelled, seed=args.seed)
    print("labelled:", ", ".join(e["id"] for e in split["labelled"]), flush=True)
    model = build_foundation_model("litemedsam", cache={"max_bytes": 2 << 30}, encoder_runtime=args.runtime)
    support = tffs.load_support(split["labelled"], args.spacing)
    memory = AffinityMemoryPropagator(model, top_k=args.top_k, temperature=args.temperature, window=args.window,
                                      num_conditioning=args.num_conditioning, threshold=args.threshold,
                                      stride=args.stride, radius=args.radius)
    tap = _Tap(memory)
    method = tffs.TrainingFreeFewShot(tap, repeats=args.repeats, frame_size=args.frame_size, seed=args.seed)
    prepared = method.prepare_support(support)
    chain = tffs.TrainingFreeFewShot(BoxChainPropagator(model), repeats=args.repeats, frame_size=args.frame_size,
                                     seed=args.seed, support_frames="depth_matched")
    chain_prepared = chain.prepare_support(support)
    images = volume_transforms("infer", target_spacing=args.spacing)
    labels = volume_transforms("eval", target_spacing=args.spacing)
    rows = []
    header = "| volume | coarse map Dice (%) | refined Dice (%) | box chain Dice (%) | s |"
    for entry in split["unlabelled"][args.skip: args.skip + args.volumes]:
        start = time.time()
        image = images({"image": entry["image"]})["image"].as_tensor()  # what TFFS reads: the image only
        name = Path(str(entry["image"])).name
        tap.coarse = []
        refined = method.probability_from(image, prepared, method.generator_for(name))
        replay = tffs.TrainingFreeFewShot(_Replay(tap.coarse), repeats=args.repeats, frame_size=args.frame_size,
                                          seed=args.seed)
        coarse = replay.probability_from(image, prepared, method.generator_for(name))
        target = labels({"image": entry["image"], "label": truth[entry["id"]]})["label"].as_tensor()[0] > 0.5
        row = [binary_dice(coarse > 0.5, target), binary_dice(refined > 0.5, target)]
        if args.box_chain:
            row.append(binary_dice(chain.probability_from(image, chain_prepared, chain.generator_for(name)) > 0.5, target))
        if not rows:
            print(header + "\n|---|---:|---:|---:|---:|", flush=True)
        rows.append(row)
        cells = " | ".join(f"{100 * v:.1f}" for v in row) + ("" if args.box_chain else " | -")
        print(f"| {entry['id']} | {cells} | {time.time() - start:.0f} |", flush=True)
    means = [100 * sum(r[i] for r in rows) / len(rows) for i in range(len(rows[0]))]
    print(f"| mean of {len(rows)} | " + " | ".join(f"**{m:.1f}**" for m in means)
          + ("" if args.box_chain else " | -") + " | |", flush=True)


if __name__ == "__main__":
    main()
