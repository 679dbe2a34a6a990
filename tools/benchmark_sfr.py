"""Time SFR's three stages side by side in one run, on real LA volumes.

Rows (first step of each row is a warm-up and is not counted):

* ``fine-tuning step``: one AdamW step of the LoRA-tuned stitched LiteMedSAM on a batch of 3D
  patches (stitch, encode with LoRA, class-token decoder, unstitch, Dice + CE, backward), and the
  same per stitched volume;
* ``pseudo-labelling``: one whole unlabelled volume through the tuned SAM (sliding window of
  stitched patches, argmax, inverse resampling, NIfTI write);
* ``re-training``: one mean-teacher iteration of the V-Net without and with the pseudo-label term
  (same patches, same seeds).

Example (the figures in bundles/sfr_la/docs/README.md)::

    OMP_NUM_THREADS=2 python tools/benchmark_sfr.py --data ../shared/data/la --steps 4
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.data import CacheDataset, DataLoader
from monai.inferers import SlidingWindowInferer
from monai.utils import set_determinism

import samssl.data as data
from samssl.engines import build_consistency_trainer
from samssl.foundation import build_foundation_model
from samssl.losses import (
    ExponentialRampUp,
    PseudoLabelSupervision,
    dice_ce_loss,
)
from samssl.networks import EMATeacher, VNet
from samssl.stages.pseudo_labels import write_pseudo_labels
from samssl.utils.bundles import import_bundle_scripts

ROOT = Path(__file__).resolve().parents[1]


def _stitched_sam(merged: bool = False) -> torch.nn.Module:
    """SFR's stitched LiteMedSAM, from the bundle's own ``scripts`` as its configs build it."""
    stitched_sam = import_bundle_scripts(ROOT / "bundles" / "sfr_la", "scripts.stitched_sam")
    model = stitched_sam.StitchedSAM(build_foundation_model("litemedsam"), 2)
    return model.merge().eval() if merged else model.train()


def _mean_after_warmup(durations: list[float]) -> float:
    timed = durations[1:] or durations
    return sum(timed) / len(timed)


def time_finetuning(labelled: list[dict], spacing: float, patch: tuple[int, ...], batch: int, steps: int) -> float:
    """Mean seconds of one fine-tuning step (batch of ``batch`` stitched patches)."""
    torch.manual_seed(0)
    model = _stitched_sam()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
    dataset = CacheDataset(labelled, data.volume_transforms("labelled", patch, spacing), progress=False)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True)
    loss_function = dice_ce_loss(lambda_dice=0.8, lambda_ce=0.2)
    durations: list[float] = []
    batches = iter(loader)
    for _ in range(steps + 1):
        try:
            item = next(batches)
        except StopIteration:
            batches = iter(loader)
            item = next(batches)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_function(model(item["image"]), item["label"]).backward()
        optimizer.step()
        durations.append(time.perf_counter() - start)
    return _mean_after_warmup(durations)


def time_pseudo_labelling(volume: dict, spacing: float, patch: tuple[int, ...], overlap: float, out: Path) -> float:
    model = _stitched_sam(merged=True)
    transform = data.volume_transforms("infer", target_spacing=spacing)
    inferer = SlidingWindowInferer(roi_size=patch, sw_batch_size=1, overlap=overlap)
    durations = []
    for i in range(2):
        start = time.perf_counter()
        write_pseudo_labels(model, [volume], transform, inferer, out / f"run{i}", fingerprint=str(i), progress=False)
        durations.append(time.perf_counter() - start)
    return durations[-1]


def time_retraining(labelled: list[dict], pseudo: list[dict], spacing: float, patch: tuple[int, ...], batch: int,
                    steps: int, with_pseudo_labels: bool) -> float:
    set_determinism(seed=0)
    labelled_loader = DataLoader(CacheDataset(labelled, data.volume_transforms("labelled", patch, spacing),
                                              progress=False), batch_size=batch, shuffle=True)
    unlabelled_loader = DataLoader(CacheDataset(pseudo, data.volume_transforms("pseudo_labelled", patch, spacing),
                                                progress=False), batch_size=batch, shuffle=True)
    for loader in (labelled_loader, unlabelled_loader):
        loader.dataset.transform.set_random_state(seed=0)
    network = VNet(has_dropout=True)
    loss = dice_ce_loss(lambda_dice=0.5, lambda_ce=0.5)
    trainer = build_consistency_trainer(
        "mean_teacher", device="cpu", max_epochs=1, epoch_length=steps + 1, train_data_loader=labelled_loader,
        unlabeled_data_loader=unlabelled_loader, network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4),
        loss_function=loss, teacher=EMATeacher(network), consistency_weight=ExponentialRampUp(0.1, 300),
        auxiliary_terms=[PseudoLabelSupervision(loss)] if with_pseudo_labels else [],
    )
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: stamps.append(time.perf_counter()))
    trainer.add_event_handler(Events.COMPLETED, lambda e: stamps.append(time.perf_counter()))
    trainer.run()
    return _mean_after_warmup([b - a for a, b in zip(stamps[:-1], stamps[1:])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "la"), help="LA MSD folder")
    parser.add_argument("--spacing", type=float, default=1.25)
    parser.add_argument("--sam_patch", type=int, nargs=3, default=(64, 64, 16), help="stitched patch (CPU preset)")
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 48), help="re-training patch (CPU preset)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per row (+1 warm-up)")
    args = parser.parse_args()
    cases = sorted(data.msd_datalist(args.data), key=lambda e: e["id"])[:4]
    labelled = cases[:2]
    unlabelled = [{"image": c["image"]} for c in cases[2:]]
    sam_patch, patch = tuple(args.sam_patch), tuple(args.patch)

    finetune = time_finetuning(labelled, args.spacing, sam_patch, args.batch, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        pseudo_seconds = time_pseudo_labelling(unlabelled[0], args.spacing, sam_patch, args.overlap, Path(tmp))
        # pseudo-labels for the re-training rows: any valid label volumes do for timing
        pseudo = [{"image": c["image"], "pseudo_label": c["label"]} for c in cases[2:]]
        plain = time_retraining(labelled, pseudo, args.spacing, patch, args.batch, args.steps, False)
        with_pl = time_retraining(labelled, pseudo, args.spacing, patch, args.batch, args.steps, True)
    volume_shape = tuple(data.volume_transforms("infer", target_spacing=args.spacing)(unlabelled[0])["image"].shape[1:])
    grid = int((sam_patch[2] - 1) ** 0.5) + 1

    print(f"\nSFR on LA at {args.spacing} mm, {torch.get_num_threads()} thread(s), mean over {args.steps} steps "
          f"after a warm-up:\n")
    print("| stage | seconds | per |\n|---|---:|---|")
    print(f"| fine-tuning step, batch {args.batch} of {'x'.join(map(str, sam_patch))} stitched {grid}x{grid} "
          f"| {finetune:.2f} | step |")
    print(f"| fine-tuning, per stitched volume | {finetune / args.batch:.2f} | patch |")
    print(f"| pseudo-labelling one volume {volume_shape} (window {'x'.join(map(str, sam_patch))}, overlap "
          f"{args.overlap}) | {pseudo_seconds:.2f} | volume |")
    print(f"| re-training MT iteration, batch {args.batch}+{args.batch} of {'x'.join(map(str, patch))} "
          f"| {plain:.2f} | iteration |")
    print(f"| re-training MT + pseudo-label term | {with_pl:.2f} | iteration |")
    print(f"\ncommand: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {shlex.join(sys.argv)}")


if __name__ == "__main__":
    main()
