"""A learnable dense-prompt decoder ``psi``: SAM image embedding -> dense prompt embedding.

SemiSAM+ style prompt learning (Zhang et al.) and the dual-task SAM-distillation method (Huynh
et al., section 2.2) let a small network read SAM's frozen image embedding ``Z`` (B, D, H, W)
and produce learned prompts ``P_b = psi(Z)`` that are fed to SAM's mask decoder together with
the ordinary prompts. Here ``P_b`` is a dense prompt embedding of the embedding's own shape,
passed as ``decode(..., dense_prompt=P_b)`` and added to the prompt encoder's dense (mask)
embedding, i.e. one learned prompt token per embedding position.

The last convolution is zero-initialised, so an untrained ``psi`` leaves SAM exactly as it was
(the zero-shot behaviour); training moves it away only as far as the segmentation loss asks.
The embedding is detached on the way in: SAM's encoder is frozen and its output cached.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DensePromptDecoder"]


class DensePromptDecoder(nn.Module):
    """1x1 reduction, a 3x3 conv block (batch norm, GELU) and a zero-initialised 1x1 projection back to ``embed_dim``.

    Args:
        embed_dim: channels of the image embedding and of the dense prompt (256 for SAM/LiteMedSAM).
        hidden_channels: width of the bottleneck.
    """

    def __init__(self, embed_dim: int = 256, hidden_channels: int = 32) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.body = nn.Sequential(
            nn.Conv2d(embed_dim, hidden_channels, 1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.GELU(),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.GELU(),
        )
        self.project = nn.Conv2d(hidden_channels, embed_dim, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        if embedding.ndim != 4 or embedding.shape[1] != self.embed_dim:
            raise ValueError(f"expected an image embedding (B, {self.embed_dim}, H, W), got {tuple(embedding.shape)}")
        return self.project(self.body(embedding.detach()))
