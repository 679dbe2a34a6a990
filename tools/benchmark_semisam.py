"""Time SemiSAM's training iteration with and without the SAM branch, and whole-volume inference.

Rows (same data, same patches, same seeds; the first iteration of each row is a warm-up and is
not counted):

* ``SupOnly``: labelled patches only;
* ``MT``: mean teacher, no SAM;
* ``MT + SAM, no cache``: the LiteMedSAM encoder runs on every slice SAM is asked about;
* ``MT + SAM, warm cache``: the same iterations again (same patches, same seeds) with every slice
  embedding already cached by a previous identical run (what an iteration costs once each volume
  slice has been seen: decoder passes only);
* sliding-window inference on one whole LA volume.

It also prints the number of encoder calls each SAM row made. Example (the figures in
bundles/semisam_la/docs/README.md)::

    OMP_NUM_THREADS=1 python tools/benchmark_semisam.py --data ../shared/data/la --iterations 6
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader
from monai.inferers import SlidingWindowInferer
from monai.utils import set_determinism

import samssl.data as data
from samssl.data.transforms_3d import VolumeLookup
from samssl.engines import build_consistency_trainer
from samssl.foundation import EmbeddingCache, build_foundation_model
from samssl.losses import (
    ExponentialRampDown,
    ExponentialRampUp,
    SAMAssistedConsistency,
    dice_ce_loss,
)
from samssl.networks import (
    EMATeacher,
    VNet,
)

ROOT = Path(__file__).resolve().parents[1]


def _loaders(cases: list[dict], spacing: float, patch: tuple[int, ...], batch: int) -> tuple[DataLoader, DataLoader, list[dict]]:
    split = data.split_labelled(cases, num_labelled=2, seed=0)
    labelled = CacheDataset(split["labelled"], data.volume_transforms("labelled", patch, spacing), progress=False)
    unlabelled = CacheDataset(
        split["unlabelled"], data.volume_transforms("unlabelled", patch, spacing, patch_location=True), progress=False
    )
    return DataLoader(labelled, batch_size=batch, shuffle=True), DataLoader(unlabelled, batch_size=batch, shuffle=True), split["unlabelled"]


def _time_run(framework: str, loaders: tuple, iterations: int, sam: SAMAssistedConsistency | None) -> tuple[float, list[float]]:
    """Mean seconds per iteration (warm-up excluded) of one fresh run."""
    set_determinism(seed=0)
    labelled, unlabelled = loaders
    for loader in (labelled, unlabelled):  # the same crops, flips and rotations in every row
        if loader is not None:
            loader.dataset.transform.set_random_state(seed=0)
    network = VNet(has_dropout=True)
    trainer = build_consistency_trainer(
        framework, device="cpu", max_epochs=1, epoch_length=iterations + 1, train_data_loader=labelled,
        unlabeled_data_loader=unlabelled, network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4),
        loss_function=dice_ce_loss(lambda_dice=0.5, lambda_ce=0.5), teacher=EMATeacher(network),
        consistency_weight=ExponentialRampUp(0.1, 300), auxiliary_terms=[sam] if sam is not None else [],
    )
    stamps: list[float] = []
    slices: list[float] = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: stamps.append(time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: slices.append(e.state.output.get("sam_slices", 0.0)))
    trainer.add_event_handler(Events.COMPLETED, lambda e: stamps.append(time.perf_counter()))
    trainer.run()
    durations = [b - a for a, b in zip(stamps[:-1], stamps[1:])][1:]
    return sum(durations) / len(durations), slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "la"), help="LA MSD folder")
    parser.add_argument("--cases", type=int, default=6, help="cases used (2 labelled, the rest unlabelled)")
    parser.add_argument("--spacing", type=float, default=1.25)
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 48))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=6, help="timed iterations per row (+1 warm-up)")
    parser.add_argument("--slices", type=int, default=1, help="SAM slices per patch and iteration")
    parser.add_argument("--uncertainty_passes", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)

    cases = sorted(data.msd_datalist(args.data), key=lambda e: e["id"])[: args.cases]
    patch = tuple(args.patch)
    labelled, unlabelled, unlabelled_list = _loaders(cases, args.spacing, patch, args.batch)
    volumes = VolumeLookup(unlabelled_list, data.volume_transforms("infer", target_spacing=args.spacing))
    teacher = build_foundation_model("litemedsam")
    rows: list[tuple[str, float, str]] = []

    def sam_branch() -> SAMAssistedConsistency:
        return SAMAssistedConsistency(
            teacher, ExponentialRampDown(0.1, 300), volumes, uncertainty_passes=args.uncertainty_passes,
            slices_per_sample=args.slices, margin=2,
        )

    seconds, _ = _time_run("suponly", (labelled, None), args.iterations, None)
    rows.append(("SupOnly (labelled only)", seconds, ""))
    seconds, _ = _time_run("mean_teacher", (labelled, unlabelled), args.iterations, None)
    rows.append(("MT, no SAM", seconds, ""))

    teacher.embedding_cache = None
    encodes = {"n": 0}
    original = teacher._encode_uncached

    def counting(images: torch.Tensor, grad: bool = False):
        encodes["n"] += images.shape[0]
        return original(images, grad=grad)

    teacher._encode_uncached = counting  # type: ignore[method-assign]
    seconds, slices = _time_run("mean_teacher", (labelled, unlabelled), args.iterations, sam_branch())
    rows.append(("MT + SAM, no cache", seconds, f"{encodes['n']} encoder calls, {sum(slices):.0f} SAM slices"))

    teacher.embedding_cache = EmbeddingCache(max_bytes=1 << 31)
    _time_run("mean_teacher", (labelled, unlabelled), args.iterations, sam_branch())  # fills the cache
    encodes["n"] = 0
    seconds, slices = _time_run("mean_teacher", (labelled, unlabelled), args.iterations, sam_branch())
    rows.append(("MT + SAM, warm cache", seconds, f"{encodes['n']} encoder calls, {sum(slices):.0f} SAM slices"))

    network = VNet(has_dropout=True).eval()
    volume = data.volume_transforms("infer", target_spacing=args.spacing)({"image": cases[-1]["image"]})["image"]
    inferer = SlidingWindowInferer(roi_size=patch, sw_batch_size=1, overlap=0.25)
    with torch.no_grad():
        inferer(volume[None], network)  # warm-up
        start = time.perf_counter()
        inferer(volume[None], network)
        infer_seconds = time.perf_counter() - start

    threads = torch.get_num_threads()
    print(f"\nSemiSAM training iteration, batch {args.batch}+{args.batch}, patch {'x'.join(map(str, patch))} at "
          f"{args.spacing} mm, {args.slices} SAM slice(s) per patch, {args.uncertainty_passes} uncertainty passes, "
          f"{threads} thread(s), mean over {args.iterations} iterations:\n")
    print("| variant | s / iteration | notes |\n|---|---:|---|")
    for name, value, note in rows:
        print(f"| {name} | {value:.2f} | {note} |")
    print(f"\nsliding-window inference (roi {'x'.join(map(str, patch))}, overlap 0.25) on one LA volume "
          f"{tuple(volume.shape[1:])} at {args.spacing} mm: {infer_seconds:.2f} s")
    print(f"\ncommand: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {shlex.join(sys.argv)}")


if __name__ == "__main__":
    main()
