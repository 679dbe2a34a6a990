"""Loading a user-supplied pretrained backbone (e.g. ImageNet) into a network built from scratch.

No weights can be downloaded at run time, so networks that would normally start from torchvision's
ImageNet weights take a local state dict instead. The classification head is never part of a
segmentation backbone, so its keys are dropped; anything else that does not match is refused with
an error naming the architecture the file should have held.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_backbone_state_dict"]


def load_backbone_state_dict(
    backbone: nn.Module,
    path: str | Path,
    *,
    option: str,
    architecture: str,
    head_prefixes: Sequence[str] = (),
    strip_prefixes: Sequence[str] = ("module.",),
) -> None:
    """Load the state dict at ``path`` into ``backbone``, ignoring its classification head.

    Args:
        backbone: the module to load into (its own head, if any, may stay untouched).
        path: a ``torch.save``d state dict, bare or under ``"state_dict"`` (training checkpoints).
        option: the config option that named the file, for the error messages.
        architecture: what the file should hold (e.g. ``"ResNet-50"``), for the error messages.
        head_prefixes: key prefixes of the classification head, dropped from file and module.
        strip_prefixes: wrapper prefixes removed from the file's keys (DataParallel's ``module.``...).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file's keys are not those of ``architecture``.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{option} file not found: {file}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    for prefix in strip_prefixes:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    heads = tuple(head_prefixes)
    state = {k: v for k, v in state.items() if not k.startswith(heads)}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(heads)]
    if missing or unexpected:
        raise ValueError(
            f"{option} {file} is not a {architecture} state dict: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}"
        )
