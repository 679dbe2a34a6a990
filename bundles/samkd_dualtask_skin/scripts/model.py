"""Builders for the bundle's configs: SAM with its trainable parts, parameter groups, the saved state.

Kept out of the JSON so that the configs read like the method (which parts exist, what trains
them) and the wiring is tested Python.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from samssl.foundation import PromptableSegmenter, build_foundation_model
from samssl.foundation.peft_tuning import Adapter, add_decoder_adapters

__all__ = ["build_segmenter", "sam_adapters", "parameter_groups", "training_state"]


def build_segmenter(needed: bool, name: str = "litemedsam", checkpoint: str | None = None,
                    cache_dir: str | Path | bool | None = None, cache_bytes: int = 2 << 30,
                    cache_disk_bytes: int | str | None = None, adapters: bool = True,
                    adapter_ratio: float = 0.25, device: str | torch.device | None = None,
                    encoder_runtime: str = "fp32", tuned: str | Path | None = None) -> PromptableSegmenter | None:
    """The frozen SAM-family model whose encoder serves SAM and the teacher network (``None`` if not ``needed``).

    Its image embeddings are cached in memory (``cache_bytes``) and on disk, by default in the
    folder every run and bundle shares (``cache_dir`` ``None``; a path for another folder, ``False``
    for none; ``cache_disk_bytes`` bounds it: :mod:`samssl.foundation.cache_store`), so each
    training image is encoded once for all runs on the same data.
    ``adapters`` inserts trainable bottleneck adapters into its mask decoder (paper 2.2).
    ``encoder_runtime``: how the frozen encoder runs on a CPU (``fp32``, ``bf16``, ``openvino_bf16``,
    ``auto``, ...: :mod:`samssl.foundation.encoder_runtime`); the runtime is part of the cache key.
    ``tuned``: a promptable tuned-teacher file (:mod:`samssl.foundation.tuned`) put on the base model
    first; the adapters and the prompt decoder then train on top of the tuned model.
    """
    if not needed:
        return None
    cache = {"max_bytes": int(cache_bytes), "directory": cache_dir, "disk_max_bytes": cache_disk_bytes}
    segmenter = build_foundation_model(name, checkpoint=checkpoint, cache=cache, encoder_runtime=encoder_runtime,
                                       tuned=tuned)
    if device is not None:
        segmenter.to(device)
    if adapters:
        add_decoder_adapters(segmenter, adapter_ratio)
    return segmenter


def sam_adapters(segmenter: PromptableSegmenter | None) -> nn.ModuleList:
    """The decoder adapters of ``segmenter`` (empty when it has none)."""
    if segmenter is None:
        return nn.ModuleList()
    return nn.ModuleList(m for m in segmenter.mask_decoder.modules() if isinstance(m, Adapter))


def _trainable(module: nn.Module | None) -> list[nn.Parameter]:
    return [] if module is None else [p for p in module.parameters() if p.requires_grad]


def parameter_groups(main: nn.Module, teacher: nn.Module | None = None, prompt_decoder: nn.Module | None = None,
                     adapters: nn.Module | None = None, lr: float = 1e-3, teacher_lr: float | None = None,
                     sam_lr: float | None = None) -> list[dict]:
    """One optimiser parameter group per network: main, teacher, SAM's prompt decoder + adapters."""
    groups = [{"params": _trainable(main), "lr": lr, "name": "main"}]
    if teacher is not None:
        groups.append({"params": _trainable(teacher), "lr": teacher_lr or lr, "name": "teacher"})
    sam_params = _trainable(prompt_decoder) + _trainable(adapters)
    if sam_params:
        groups.append({"params": sam_params, "lr": sam_lr or lr, "name": "sam_prompt"})
    return groups


def training_state(main: nn.Module, teacher: nn.Module | None = None, prompt_decoder: nn.Module | None = None,
                   adapters: nn.Module | None = None) -> nn.ModuleDict:
    """Every trained module under one name, for the resumable checkpoint (SAM's frozen weights are not saved)."""
    parts = {"main": main, "teacher": teacher, "prompt_decoder": prompt_decoder,
             "sam_adapters": adapters if adapters is not None and len(adapters) else None}
    return nn.ModuleDict({k: v for k, v in parts.items() if v is not None})
