"""A MobileNetV2 encoder-decoder with a dual (mask + signed distance) head, under 3M parameters.

The lightweight "main network" of the SAM-distillation dual-task method (Huynh et al.): the
network that is deployed, so it must be small and fast on a CPU. The encoder is torchvision's
MobileNetV2 feature extractor without its last 1x1 convolution (320 -> 1280 channels, 0.41M
parameters that only serve the ImageNet classifier); the decoder is a U-Net-style path of
depthwise-separable blocks (MobileNet's own building block, so the decoder costs little next to
the encoder) over the encoder's stride-2/4/8/16 skip connections, ending at half resolution;
the two 1x1 heads run there and their outputs are upsampled bilinearly to the input size.

The network keeps its weights and activations in ``channels_last`` (NHWC) memory format. On
CPUs, oneDNN runs MobileNet's 1x1 and depthwise convolutions much faster in NHWC: in NCHW a
single 16 -> 96 1x1 convolution at 128 x 128 costs ~6.5 ms on 2 threads against ~1.4 ms in
NHWC, and the whole network runs ~1.2x faster at inference and ~1.3x faster per training step
(``tools/benchmark_samkd_latency.py``). The format is internal: inputs of either format are
accepted and the outputs are ordinary contiguous tensors. For deployment,
:func:`samssl.networks.fold_batch_norm` also folds the batch norms into the convolutions.

``forward`` returns the mask logits only, so the network is a drop-in segmentation model for
MONAI evaluators, ``SupervisedEvaluator`` and TorchScript export; :meth:`forward_dual` returns
``(logits, sdf)`` for training.

No weights are downloaded: ``encoder_weights`` is a local file holding a torchvision
MobileNetV2 state dict (e.g. ImageNet weights saved once), ``None`` trains from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from samssl.networks.dual_head import DualTaskHead
from samssl.networks.pretrained import load_backbone_state_dict

__all__ = ["MobileNetDualTaskUNet", "SeparableBlock"]

# MobileNetV2 feature indices after which the resolution halves next: the skip connections.
_SKIP_INDICES = (1, 3, 6, 13)  # stride 2 (16 ch), 4 (24 ch), 8 (32 ch), 16 (96 ch)
_SKIP_CHANNELS = (16, 24, 32, 96)
_LAST_INDEX = 17  # stride 32, 320 channels (index 18 is the classifier's 1x1 conv, dropped)
_LAST_CHANNELS = 320


class SeparableBlock(nn.Sequential):
    """1x1 conv (channel mixing) -> depthwise 3x3 -> 1x1, batch norm and ReLU6 after each."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class MobileNetDualTaskUNet(nn.Module):
    """MobileNetV2 U-Net with mask logits and a tanh SDF output.

    Args:
        in_channels: 3 (RGB); other values replace the first convolution (no pretrained weights there).
        num_classes: classes, background included.
        decoder_channels: output channels of the four decoder stages (stride 16, 8, 4, 2).
        encoder_weights: optional local file with a torchvision ``mobilenet_v2`` state dict.
        width_mult: MobileNetV2 width multiplier (1.0 is the standard network).
        channels_last: keep weights and activations in NHWC (the fast layout on CPUs, see the
            module docstring); ``False`` gives PyTorch's default NCHW layout, e.g. for comparison.

    Input sizes must be multiples of 32. 1,904,195 parameters with the defaults (encoder 1.81M).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        decoder_channels: Sequence[int] = (128, 64, 32, 16),
        encoder_weights: str | Path | None = None,
        width_mult: float = 1.0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        if len(decoder_channels) != len(_SKIP_INDICES):
            raise ValueError(f"decoder_channels needs {len(_SKIP_INDICES)} entries, got {tuple(decoder_channels)}")
        backbone = mobilenet_v2(weights=None, width_mult=width_mult)
        if encoder_weights is not None:
            load_backbone_state_dict(backbone, encoder_weights, option="encoder_weights",
                                     architecture="torchvision MobileNetV2", head_prefixes=("classifier.",))
        features = backbone.features
        if in_channels != 3:
            first = features[0][0]
            features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, stride=2, padding=1, bias=False)
        self.in_channels = in_channels
        # Five stages, each ending where the next one halves the resolution (strides 2 ... 32).
        bounds = [0, *(i + 1 for i in _SKIP_INDICES), _LAST_INDEX + 1]
        self.encoder = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
        skip_channels = [_channels_after(features, i) for i in _SKIP_INDICES]
        deep = _channels_after(features, _LAST_INDEX)
        blocks = []
        for skip, out in zip(reversed(skip_channels), decoder_channels):
            blocks.append(SeparableBlock(deep + skip, out))
            deep = out
        self.decoder = nn.ModuleList(blocks)
        self.head = DualTaskHead(deep, num_classes)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W) input, got shape {x.shape}")
        if x.shape[-1] % 32 != 0 or x.shape[-2] % 32 != 0:
            raise ValueError(f"input height and width must be multiples of 32, got {x.shape}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        stages: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            stages.append(x)
        num_skips = len(stages) - 1
        for i, block in enumerate(self.decoder):
            skip = stages[num_skips - 1 - i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x

    def forward_dual(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask logits (B, C, H, W), sdf (B, 1, H, W) in [-1, 1])`` at the input size."""
        size = x.shape[-2:]
        logits, sdf = self.head(self._decode(x))
        return _upsample(logits, size), _upsample(sdf, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask logits only (the deployed output)."""
        return _upsample(self.head.mask(self._decode(x)), x.shape[-2:])


def _upsample(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Bilinear resize of a few-channel head output, in NCHW (NHWC resizes slowly at 1-2 channels)."""
    return F.interpolate(x.contiguous(), size=size, mode="bilinear", align_corners=False)


def _channels_after(features: nn.Sequential, index: int) -> int:
    for module in reversed(list(features[index].modules())):
        if isinstance(module, nn.Conv2d):
            return module.out_channels
    raise ValueError(f"no convolution in MobileNetV2 feature block {index}")

