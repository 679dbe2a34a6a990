"""Supervised training of one model on random patches of labelled volumes, resumable: one home for it.

Stages that train a fresh model on a fixed list of labelled (or pseudo-labelled) volumes before
anything else happens (SFR's SAM fine-tuning, each SSL-MedSAM2 fold) all need the same run: the
volumes cached once, seeded shuffling, the engine's epochs cut into at most 50 iterations so a
checkpoint interval in iterations is honoured, resume from the last checkpoint after a kill,
and a progress bar. The caller brings the model, optimiser, loss and (optionally) a scheduler
stepped every iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader
from monai.handlers import LrScheduleHandler
from torch import nn

from samssl.data import volume_transforms
from samssl.data.samplers import LabelledShareBatchSampler
from samssl.engines.precision import AmpSetting
from samssl.engines.semi_supervised import SemiSupervisedTrainer
from samssl.handlers.checkpoints import TrainingCheckpointer
from samssl.handlers.progress import TrainingProgressBar

__all__ = ["train_on_volume_patches"]

EPOCH_ITERATIONS = 50  # checkpoints fall on iteration counts, epochs are just the engine's unit


def train_on_volume_patches(model: nn.Module, optimizer: torch.optim.Optimizer,
                            loss_function: Callable[..., torch.Tensor], training_set: Sequence[Mapping[str, Any]],
                            patch_size: Sequence[int], target_spacing: float | Sequence[float] | None,
                            num_iterations: int, batch_size: int, checkpoint_dir: str | Path,
                            checkpoint_interval: int, seed: int = 0, device: torch.device | str = "cpu",
                            lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                            amp: AmpSetting = False, num_labelled: int | None = None,
                            labelled_share: float = 0.0) -> nn.Module:
    """Train ``model`` for ``num_iterations`` on random ``patch_size`` patches of ``training_set``.

    ``training_set`` entries carry ``image`` and ``label`` (other keys are ignored); they are read with
    ``volume_transforms("labelled")`` (resampled to ``target_spacing``, flips and rotations) and
    cached. Checkpoints (model, optimiser, scheduler, engine) go to ``checkpoint_dir`` every
    ``checkpoint_interval`` iterations; a killed run resumes from the latest one. ``amp`` is the
    precision switch of :mod:`samssl.engines.precision` (default float32). Returns ``model``.

    ``num_labelled``: the first ``num_labelled`` entries hold true labels, the others pseudo-labels
    (None: all true). With ``labelled_share`` > 0 and both kinds present, every batch holds at
    least that share of labelled patches (:class:`~samssl.data.samplers.LabelledShareBatchSampler`),
    so many weak pseudo-labels cannot swamp a few true labels; otherwise (SupOnly, a set of one
    kind, share 0) the batches are the plain shuffle's, unchanged.
    """
    if not training_set:
        raise ValueError(f"nothing to train on for {checkpoint_dir}: the training set is empty")
    iterations = int(num_iterations)
    if iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    # only image and label go in: entries from different sources (labelled cases with an ``id``,
    # pseudo-labelled ones with a ``confidence``) must collate into one batch
    cases = [{"image": str(e["image"]), "label": str(e["label"])} for e in training_set]
    dataset = CacheDataset(cases, volume_transforms("labelled", patch_size, target_spacing),
                           cache_rate=1.0, num_workers=0, progress=False)
    generator = torch.Generator().manual_seed(int(seed))
    labelled = len(cases) if num_labelled is None else int(num_labelled)
    if labelled_share > 0.0 and 0 < labelled < len(cases):
        # the sampler and the loader share one generator: a resumed run restores it (pass start)
        sampler = LabelledShareBatchSampler(labelled, len(cases), int(batch_size), float(labelled_share), generator)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=0, generator=generator)
    else:
        loader = DataLoader(dataset, batch_size=int(batch_size), shuffle=True, num_workers=0, generator=generator)
    epoch_length = max(1, min(iterations, EPOCH_ITERATIONS))
    handlers: list[Any] = [TrainingCheckpointer(Path(checkpoint_dir), model, optimizer, lr_scheduler=lr_scheduler,
                                                save_interval=int(checkpoint_interval))]
    if lr_scheduler is not None:
        handlers.append(LrScheduleHandler(lr_scheduler, epoch_level=False, print_lr=False))
    handlers.append(TrainingProgressBar(keys=("loss",)))
    trainer = SemiSupervisedTrainer(
        device=torch.device(device), max_epochs=max(1, -(-iterations // epoch_length)), epoch_length=epoch_length,
        train_data_loader=loader, network=model, optimizer=optimizer, loss_function=loss_function,
        train_handlers=handlers, amp=amp,
    )
    trainer.run()
    return model
