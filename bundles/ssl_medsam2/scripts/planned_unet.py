"""nnU-Net-style planning of a MONAI ``DynUNet``, and the fold ensemble nnU-Net predicts with.

nnU-Net derives its network from the data: the target spacing is the median voxel size, an
axis is pooled only while its spacing is at most twice the finest one (so anisotropic volumes
are first pooled in-plane), an axis stops being pooled once its feature map would fall below
``min_feature_size`` voxels, and an axis whose spacing is more than twice the finest gets
``1``-wide kernels until pooling has evened the spacing out. :func:`plan_dynunet` applies the
same rules to a given patch (MONAI's DynUNet tutorial does the same), so the in-bundle network
matches what nnU-Net would build for the data, without nnU-Net's GPU-memory search for the patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.nets import DynUNet
from torch import nn

__all__ = ["DynUNetPlan", "FoldEnsemble", "plan_dynunet"]


@dataclass(frozen=True)
class DynUNetPlan:
    """Kernel sizes and strides per resolution level (the first stride is always 1)."""

    kernel_size: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]

    @property
    def divisor(self) -> tuple[int, ...]:
        """What every input side must be a multiple of (the product of the strides per axis)."""
        out = [1] * len(self.patch_size)
        for stride in self.strides:
            out = [o * s for o, s in zip(out, stride)]
        return tuple(out)

    def build(self, in_channels: int = 1, out_channels: int = 2, filters: Sequence[int] | None = None,
              deep_supervision: bool = False, norm_name: str | tuple = "instance") -> DynUNet:
        """The planned ``DynUNet`` (nnU-Net's defaults: instance norm, leaky ReLU, 32 base filters)."""
        levels = len(self.strides)
        filters = list(filters) if filters is not None else [min(32 * 2 ** i, 320) for i in range(levels)]
        if len(filters) != levels:
            raise ValueError(f"filters needs one entry per level ({levels}), got {len(filters)}")
        return DynUNet(
            spatial_dims=len(self.patch_size), in_channels=in_channels, out_channels=out_channels,
            kernel_size=[list(k) for k in self.kernel_size], strides=[list(s) for s in self.strides],
            upsample_kernel_size=[list(s) for s in self.strides[1:]], filters=filters, norm_name=norm_name,
            deep_supervision=deep_supervision, res_block=False,
        )


def plan_dynunet(patch_size: Sequence[int], spacing: Sequence[float], min_feature_size: int = 4,
                 max_levels: int = 6) -> DynUNetPlan:
    """nnU-Net's kernel/stride rules for a patch of ``patch_size`` voxels of ``spacing`` mm.

    Raises if a pooled side is not divisible by 2 (choose a patch that is a multiple of the
    ``divisor`` of the plan, e.g. 2^levels on isotropic data).
    """
    sizes = [int(s) for s in patch_size]
    spacings = [float(s) for s in spacing]
    if len(sizes) != len(spacings) or len(sizes) not in (2, 3):
        raise ValueError(f"patch_size and spacing must both have 2 or 3 entries, got {patch_size} and {spacing}")
    if min(spacings) <= 0:
        raise ValueError(f"spacings must be positive, got {spacing}")
    kernels: list[tuple[int, ...]] = []
    strides: list[tuple[int, ...]] = [tuple([1] * len(sizes))]
    while len(strides) < max_levels:
        ratio = [s / min(spacings) for s in spacings]
        stride = tuple(2 if r <= 2 and size >= 2 * min_feature_size else 1 for r, size in zip(ratio, sizes))
        kernel = tuple(3 if r <= 2 else 1 for r in ratio)
        if all(s == 1 for s in stride):
            break
        for axis, (size, s) in enumerate(zip(sizes, stride)):
            if size % s:
                raise ValueError(f"patch side {patch_size[axis]} (axis {axis}) cannot be halved {len(strides)} "
                                 f"times; use a multiple of {2 ** len(strides)}")
        kernels.append(kernel)
        strides.append(stride)
        sizes = [size // s for size, s in zip(sizes, stride)]
        spacings = [sp * s for sp, s in zip(spacings, stride)]
    kernels.append(tuple([3] * len(sizes)))  # the bottleneck
    return DynUNetPlan(tuple(kernels), tuple(strides), tuple(int(s) for s in patch_size))


class FoldEnsemble(nn.Module):
    """The mean of K models' softmax probabilities, returned as log-probabilities.

    nnU-Net predicts with the average of its fold models' probabilities. Returning their log
    keeps the output a valid "logit" for the usual post-processing: its softmax is exactly the
    averaged probability and its argmax the ensemble's decision.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("a fold ensemble needs at least one model")
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for model in self.models:
            out = model(x)
            if isinstance(out, (list, tuple)):  # deep supervision: the full-resolution head
                out = out[0]
            probabilities = torch.softmax(out.float(), dim=1)
            total = probabilities if total is None else total + probabilities
        return torch.log((total / len(self.models)).clamp_min(1e-8))
