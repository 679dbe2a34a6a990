"""The 2D UNet baseline shared by the 2D (dermoscopy) bundles.

A :class:`monai.networks.nets.BasicUNet` fixed to two spatial dimensions, RGB input and
background/lesion output, so that every 2D bundle trains and reports the same baseline and its
checkpoints load into a plain ``BasicUNet`` (identical state-dict keys).

Defaults: MONAI's features ``(32, 32, 64, 128, 256, 32)``, LeakyReLU, transposed-convolution
upsampling, and **batch** norm instead of MONAI's instance norm, the usual choice for 2D
networks trained on batches of whole images. 1,979,042 parameters with these defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import BasicUNet
from torch import Tensor

__all__ = ["UNet2D"]


class UNet2D(BasicUNet):
    """2D UNet returning logits (B, out_channels, H, W).

    Args:
        in_channels: input channels (3 for RGB dermoscopy).
        out_channels: classes, background included.
        features: channels of the five encoder stages and of the last decoder stage.
        norm: MONAI norm spec, e.g. ``"batch"``, ``("instance", {"affine": True})``.
        dropout: dropout probability in every convolution block.

    Any spatial size works (the decoder pads odd sizes); multiples of 16 avoid that padding.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ) -> None:
        if len(features) != 6:
            raise ValueError(
                f"features needs 6 entries (5 encoder stages + last decoder stage), got {tuple(features)}."
            )
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            features=tuple(features),
            norm=norm,
            dropout=dropout,
        )
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet2D expects (B, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}.")
        return super().forward(x)
