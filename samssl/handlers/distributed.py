"""What changes when a bundle trains in several processes (``torchrun``): backend, device, handlers.

The bundles' ``multi_gpu_train.json`` overrides use these so that one file runs on GPUs (NCCL, one
device per process) and on CPUs (gloo: CI, or a machine without GPUs) without a copy of the config.

Handlers: every process must keep the handlers that change its training state (resuming from the
checkpoint, the learning-rate schedule, the embedding warm-up of its own images), or the
processes' networks and schedules drift apart; only process 0 validates and reports. Checkpoint
files are written by process 0 alone inside the savers themselves (:class:`~.checkpoints.AtomicDiskSaver`),
so keeping the checkpoint handler on every process is what makes a resumed run load the same
weights everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.handlers import StatsHandler, TensorBoardStatsHandler, ValidationHandler

from samssl.handlers.progress import TrainingProgressBar
from samssl.handlers.training_trace import TrainingTrace

__all__ = ["RANK_ZERO_ONLY_HANDLERS", "distributed_backend", "handlers_for_rank", "process_device"]

# Handlers that only observe (validation, console, TensorBoard, the iteration trace): run by process 0 alone.
RANK_ZERO_ONLY_HANDLERS: tuple[type, ...] = (ValidationHandler, TrainingProgressBar, StatsHandler, TensorBoardStatsHandler,
                                             TrainingTrace)


def distributed_backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo`` (CPU processes)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def process_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` with GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def handlers_for_rank(handlers: Sequence[Any], rank: int | None = None) -> list[Any]:
    """The handlers this process attaches: all of them on process 0, the state-changing ones elsewhere.

    ``None`` entries (a handler switched off by config) are dropped. ``rank`` defaults to the
    process's rank in the initialised process group (0 when none is).
    """
    if rank is None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    present = [h for h in handlers if h is not None]
    if rank == 0:
        return present
    return [h for h in present if not isinstance(h, RANK_ZERO_ONLY_HANDLERS)]
