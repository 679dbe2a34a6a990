"""Dual-task output head: segmentation logits and a signed distance map from one feature map.

The dual-task methods (DTC, Luo et al. AAAI 2021, and the SAM-distillation work built on it)
let a network predict, next to its class logits, the normalised signed distance map (SDF) of the
foreground: negative inside, 0 on the boundary, positive outside, in [-1, 1], exactly the
convention of :func:`samssl.data.signed_distance_map`. A ``tanh`` bounds the SDF output to
that range, so the regression target and the prediction live on the same scale.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DualTaskHead", "DualTaskOutputs"]


class DualTaskHead(nn.Module):
    """Two 1x1 convolutions on shared features: ``(B, num_classes, H, W)`` logits and
    ``(B, 1, H, W)`` tanh SDF (foreground distance, DTC sign convention).

    Args:
        in_channels: channels of the shared feature map.
        num_classes: classes, background included (2 for lesion segmentation).
    """

    def __init__(self, in_channels: int, num_classes: int = 2) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}.")
        self.mask = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        self.sdf = nn.Conv2d(in_channels, 1, kernel_size=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mask(features), torch.tanh(self.sdf(features))


class DualTaskOutputs(nn.Module):
    """``forward(x) = network.forward_dual(x)``: a dual-task network as a module returning both outputs.

    A deployable dual-task network returns its mask logits from ``forward`` (what evaluators,
    MONAI Label and TorchScript expect) and both outputs from ``forward_dual``. Training needs the
    pair through ``forward``, so that wrappers which hook ``forward`` (``DistributedDataParallel``'s
    gradient synchronisation, ``torch.compile``) see the training computation. The parameters are
    the wrapped network's own.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(network, "forward_dual", None)):
            raise TypeError(f"{type(network).__name__} has no forward_dual(x) -> (logits, sdf)")
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.forward_dual(x)
