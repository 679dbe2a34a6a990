"""The V-Net of the 3D semi-supervised segmentation papers (UA-MT, SASSNet, DTC, SemiSAM, ...).

Those papers all train the same compact V-Net variant, defined in ``networks/vnet.py`` of their
public code, and report their left-atrium numbers with it; reproducing them needs this exact
network. It is **not** MONAI's :class:`monai.networks.nets.VNet` (Milletari et al.'s original:
5x5x5 convolutions, PReLU, residual stages, concatenated skips; about 45.6M parameters), which is
about 5x larger and much slower to train on a CPU.

Architecture (``n_filters=16``, 2 classes: 9,448,866 parameters with batch or group norm,
9,443,266 with instance norm or none, which have no affine weights in the reference code):

* encoder: ConvBlocks of 1, 2, 3, 3, 3 convolutions (3x3x3, padding 1, norm, ReLU) with 16, 32,
  64, 128, 256 channels, joined by stride-2 2x2x2 convolutions (+ norm, ReLU) that double the
  channels;
* decoder: stride-2 2x2x2 transposed convolutions (+ norm, ReLU) that halve the channels, each
  **added** to the encoder feature of the same scale (not concatenated), then ConvBlocks of 3,
  3, 2, 1 convolutions; a 1x1x1 output convolution gives the logits;
* optional ``Dropout3d(p=0.5)`` on the bottleneck features and before the output convolution,
  which UA-MT uses for its Monte-Carlo uncertainty passes. Like any dropout module it acts only
  in training mode, so ``model.eval()`` switches it off.

Four stride-2 stages mean every spatial size must be divisible by 16 (the papers' LA patch is
112x112x80).

``channels_last=True`` keeps weights and activations in ``torch.channels_last_3d`` (NDHWC), the
layout oneDNN's 3D convolutions run fastest in on CPUs, above all under bfloat16 autocast
(``tools/profile_training.py --compare "network_def#channels_last=true"`` measures it). The
arithmetic is the same; only the memory order differs, so a checkpoint loads either way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["VNet", "NORMALIZATIONS"]

NORMALIZATIONS = ("batchnorm", "groupnorm", "instancenorm", "none")
_GROUPNORM_GROUPS = 16  # as in the reference code


def _norm(normalization: str, channels: int) -> list[nn.Module]:
    if normalization == "batchnorm":
        return [nn.BatchNorm3d(channels)]
    if normalization == "groupnorm":
        return [nn.GroupNorm(num_groups=_GROUPNORM_GROUPS, num_channels=channels)]
    if normalization == "instancenorm":
        return [nn.InstanceNorm3d(channels)]
    return []


class ConvBlock(nn.Sequential):
    """``n_convs`` x (3x3x3 conv, padding 1 -> norm -> ReLU); only the first changes the channels."""

    def __init__(self, n_convs: int, in_channels: int, out_channels: int, normalization: str) -> None:
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers.append(nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1))
            layers += _norm(normalization, out_channels)
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DownsamplingConvBlock(nn.Sequential):
    """2x2x2 stride-2 convolution -> norm -> ReLU: halves the size, changes the channels."""

    def __init__(self, in_channels: int, out_channels: int, normalization: str) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 2, stride=2),
            *_norm(normalization, out_channels),
            nn.ReLU(inplace=True),
        )


class UpsamplingDeconvBlock(nn.Sequential):
    """2x2x2 stride-2 transposed convolution -> norm -> ReLU: doubles the size."""

    def __init__(self, in_channels: int, out_channels: int, normalization: str) -> None:
        super().__init__(
            nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2),
            *_norm(normalization, out_channels),
            nn.ReLU(inplace=True),
        )


class VNet(nn.Module):
    """V-Net of the SSL papers; see the module docstring for the architecture.

    Args:
        n_channels: input channels (1 for MRI).
        n_classes: output channels (logits), background included.
        n_filters: channels of the first stage; stage ``i`` has ``n_filters * 2**i``.
        normalization: ``"batchnorm"`` (the papers' choice), ``"groupnorm"`` (16 groups, so
            ``n_filters`` must be a multiple of 16), ``"instancenorm"`` or ``"none"``.
        has_dropout: ``Dropout3d(0.5)`` at the bottleneck and before the output convolution.
        channels_last: keep weights and activations in ``torch.channels_last_3d`` (see the module
            docstring); off by default, the layout of the reference code.
    """

    num_downsamplings = 4

    def __init__(
        self,
        n_channels: int = 1,
        n_classes: int = 2,
        n_filters: int = 16,
        normalization: str = "batchnorm",
        has_dropout: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # Instance copies: TorchScript (the deployed model.ts) reads instance attributes, not class ones.
        self.num_downsamplings: int = type(self).num_downsamplings
        self.input_multiple: int = 2**self.num_downsamplings
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
        if normalization == "groupnorm" and n_filters % _GROUPNORM_GROUPS:
            raise ValueError(
                f"groupnorm uses {_GROUPNORM_GROUPS} groups: n_filters must be a multiple of it, got {n_filters}."
            )
        self.has_dropout = has_dropout
        f, norm = n_filters, normalization

        self.block_one = ConvBlock(1, n_channels, f, norm)
        self.block_one_dw = DownsamplingConvBlock(f, 2 * f, norm)
        self.block_two = ConvBlock(2, 2 * f, 2 * f, norm)
        self.block_two_dw = DownsamplingConvBlock(2 * f, 4 * f, norm)
        self.block_three = ConvBlock(3, 4 * f, 4 * f, norm)
        self.block_three_dw = DownsamplingConvBlock(4 * f, 8 * f, norm)
        self.block_four = ConvBlock(3, 8 * f, 8 * f, norm)
        self.block_four_dw = DownsamplingConvBlock(8 * f, 16 * f, norm)
        self.block_five = ConvBlock(3, 16 * f, 16 * f, norm)

        self.block_five_up = UpsamplingDeconvBlock(16 * f, 8 * f, norm)
        self.block_six = ConvBlock(3, 8 * f, 8 * f, norm)
        self.block_six_up = UpsamplingDeconvBlock(8 * f, 4 * f, norm)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f, norm)
        self.block_seven_up = UpsamplingDeconvBlock(4 * f, 2 * f, norm)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f, norm)
        self.block_eight_up = UpsamplingDeconvBlock(2 * f, f, norm)
        self.block_nine = ConvBlock(1, f, f, norm)
        self.out_conv = nn.Conv3d(f, n_classes, 1)

        self.dropout = nn.Dropout3d(p=0.5)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last_3d)

    def _check_input(self, x: Tensor) -> None:
        # Written so that TorchScript compiles it too (the deployed model.ts keeps the check).
        if x.dim() != 5:
            raise ValueError(f"VNet expects a (B, C, H, W, D) tensor, got shape {list(x.shape)}.")
        factor = self.input_multiple
        for size in x.shape[2:]:
            if size % factor != 0:
                raise ValueError(
                    f"VNet input spatial size {list(x.shape[2:])} must be divisible by {factor} "
                    f"(the encoder halves it {self.num_downsamplings} times); pad or crop it, e.g. to 112x112x80."
                )

    def encoder(self, x: Tensor) -> list[Tensor]:
        """Features of the five encoder stages, full resolution first (dropout on the last)."""
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        if self.has_dropout:
            x5 = self.dropout(x5)
        return [x1, x2, x3, x4, x5]

    def decoder_features(self, features: list[Tensor]) -> Tensor:
        """Last decoder feature map (``n_filters`` channels, full resolution), before the output conv.

        This is where the dual-task variants (DTC) attach their extra SDF head.
        """
        x1, x2, x3, x4, x5 = features
        x = self.block_six(self.block_five_up(x5) + x4)
        x = self.block_seven(self.block_six_up(x) + x3)
        x = self.block_eight(self.block_seven_up(x) + x2)
        x = self.block_nine(self.block_eight_up(x) + x1)
        if self.has_dropout:
            x = self.dropout(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, n_classes, H, W, D)."""
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the last decoder features (``n_filters`` channels), for heads that share them."""
        self._check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        features = self.decoder_features(self.encoder(x))
        return self.out_conv(features), features
