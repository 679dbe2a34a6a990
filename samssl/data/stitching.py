"""Stitching: a 3D volume laid out slice by slice as one large 2D image, and back (SFR, Li et al.).

SAM was trained on 1024 x 1024 natural images; a medical slice is small and loses its neighbours
when segmented alone. SFR's stitching module places the D slices of a volume (or a 3D patch)
``H x W x D``, **in slice order**, on a grid of ``g x g`` tiles with ``g = ceil(sqrt(D))``, at the
slices' own resolution, row by row, and fills the tiles after the last slice with zeros:

    slice k -> tile (row k // g, column k % g),    stitched image (g * H) x (g * W)

The inverse reads the first D tiles back into a volume, so ``unstitch(stitch(v), D) == v`` exactly
for images, labels and class-probability maps alike (any leading dimensions are carried along).
The paper's "simplified" variant (:class:`SimplifiedStitch`) first crops or pads every slice to a
fixed tile (96 x 96) and interpolates the depth to a square number, so every volume fills its grid
without empty tiles; its inverse interpolates back and restores the crop.

Arrays are channel-first as everywhere in MONAI: ``(..., H, W, D)`` volumes, ``(..., gH, gW)``
stitched images.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TraceKeys

__all__ = [
    "SimplifiedStitch",
    "StitchSlices",
    "StitchSlicesd",
    "grid_size",
    "stitch_slices",
    "unstitch_slices",
]

Array = torch.Tensor | np.ndarray


def grid_size(depth: int) -> int:
    """Tiles per side of the square grid that holds ``depth`` slices: ``ceil(sqrt(depth))``."""
    if depth < 1:
        raise ValueError(f"a volume to stitch needs at least one slice, got depth {depth}")
    return math.isqrt(depth - 1) + 1


def _as_tensor(x: Array) -> tuple[torch.Tensor, bool]:
    return (torch.as_tensor(x), True) if isinstance(x, np.ndarray) else (x, False)


def stitch_slices(volume: Array, grid: int | None = None, pad_value: float = 0.0) -> Array:
    """Lay the slices of ``volume`` ``(..., H, W, D)`` on a ``grid x grid`` image ``(..., grid*H, grid*W)``.

    Args:
        volume: tensor or array; the last axis is the slice axis.
        grid: tiles per side; default :func:`grid_size` of D. Must hold all D slices.
        pad_value: value of the tiles after the last slice (the paper: zeros).
    """
    x, was_numpy = _as_tensor(volume)
    if x.ndim < 3:
        raise ValueError(f"stitching needs a volume (..., H, W, D), got shape {tuple(x.shape)}")
    *lead, h, w, d = x.shape
    g = grid_size(d) if grid is None else int(grid)
    if g * g < d:
        raise ValueError(f"a {g} x {g} grid holds {g * g} slices, the volume has {d}")
    slices = x.movedim(-1, 0)  # (D, ..., H, W)
    if g * g > d:
        padding = torch.full((g * g - d, *slices.shape[1:]), pad_value, dtype=x.dtype, device=x.device)
        slices = torch.cat([slices, padding], 0)
    tiles = slices.reshape(g, g, *lead, h, w)  # (row, col, ..., H, W)
    n = len(lead)
    # (..., row, H, col, W) -> (..., row*H, col*W)
    order = [*range(2, 2 + n), 0, 2 + n, 1, 3 + n]
    image = tiles.permute(order).reshape(*lead, g * h, g * w)
    return image.numpy() if was_numpy else image


def unstitch_slices(image: Array, depth: int, grid: int | None = None) -> Array:
    """Inverse of :func:`stitch_slices`: ``(..., grid*H, grid*W)`` -> ``(..., H, W, depth)``."""
    x, was_numpy = _as_tensor(image)
    if x.ndim < 2:
        raise ValueError(f"unstitching needs an image (..., gH, gW), got shape {tuple(x.shape)}")
    g = grid_size(depth) if grid is None else int(grid)
    if g * g < depth:
        raise ValueError(f"a {g} x {g} grid holds {g * g} slices, asked for {depth}")
    *lead, gh, gw = x.shape
    if gh % g or gw % g:
        raise ValueError(f"a stitched image of {gh} x {gw} is not a {g} x {g} grid of equal tiles")
    h, w = gh // g, gw // g
    n = len(lead)
    tiles = x.reshape(*lead, g, h, g, w)
    # (..., row, H, col, W) -> (row, col, ..., H, W)
    order = [n, n + 2, *range(n), n + 1, n + 3]
    slices = tiles.permute(order).reshape(g * g, *lead, h, w)[:depth]
    volume = slices.movedim(0, -1).contiguous()
    return volume.numpy() if was_numpy else volume


class StitchSlices(Transform):
    """Array transform: ``(C, H, W, D)`` -> ``(C, gH, gW)``; :meth:`inverse` needs the depth back."""

    def __init__(self, grid: int | None = None, pad_value: float = 0.0) -> None:
        self.grid = grid
        self.pad_value = pad_value

    def __call__(self, volume: Array) -> Array:
        return stitch_slices(volume, self.grid, self.pad_value)

    def inverse(self, image: Array, depth: int) -> Array:
        return unstitch_slices(image, depth, self.grid)


class StitchSlicesd(MapTransform, InvertibleTransform):
    """Dictionary stitching of ``keys`` (images, labels, probability maps); invertible with MONAI.

    The depth and grid of each key are recorded in its applied-operations trace (MetaTensor) or,
    for plain arrays, under ``<key>_stitch``, so :meth:`inverse` (and ``monai.transforms.Invertd``)
    restores the volume exactly.
    """

    def __init__(self, keys: KeysCollection, grid: int | None = None, pad_value: float = 0.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stitcher = StitchSlices(grid, pad_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            depth = int(d[key].shape[-1])
            info = {"depth": depth, "grid": self.stitcher.grid or grid_size(depth)}
            d[key] = self.stitcher(d[key])
            if hasattr(d[key], "applied_operations"):
                self.push_transform(d[key], extra_info=info)
            else:
                d[f"{key}_stitch"] = info
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if hasattr(d[key], "applied_operations") and d[key].applied_operations:
                info = self.pop_transform(d[key])[TraceKeys.EXTRA_INFO]
            else:
                info = d.pop(f"{key}_stitch")
            d[key] = unstitch_slices(d[key], info["depth"], info["grid"])
        return d


class SimplifiedStitch:
    """SFR's "simplified" stitching: fixed tiles, depth interpolated to a square number.

    Every slice is centre-cropped (or zero-padded) to ``tile x tile``; the depth D is interpolated
    (linearly; nearest for labels) to ``g * g`` with ``g = ceil(sqrt(D))`` (or ``depth_slices``),
    so the grid has no empty tiles. :meth:`inverse` interpolates back to D slices and puts the
    tiles back into an ``H x W`` frame (zeros outside the crop).

    Works on tensors ``(B, C, H, W, D)``.
    """

    def __init__(self, tile: int = 96, depth_slices: int | None = None) -> None:
        if tile < 1:
            raise ValueError(f"tile must be positive, got {tile}")
        if depth_slices is not None and math.isqrt(depth_slices) ** 2 != depth_slices:
            raise ValueError(f"depth_slices must be a square number, got {depth_slices}")
        self.tile = tile
        self.depth_slices = depth_slices

    def _square_depth(self, depth: int) -> int:
        return self.depth_slices or grid_size(depth) ** 2

    @staticmethod
    def _crop_box(size: int, tile: int) -> tuple[int, int, int, int]:
        """(source start, source stop, target start, target stop) of a centred crop or pad."""
        if size >= tile:
            start = (size - tile) // 2
            return start, start + tile, 0, tile
        start = (tile - size) // 2
        return 0, size, start, start + size

    def _resize_depth(self, x: torch.Tensor, depth: int, nearest: bool) -> torch.Tensor:
        if x.shape[-1] == depth:
            return x
        mode = "nearest-exact" if nearest else "trilinear"
        kwargs = {} if nearest else {"align_corners": False}
        return F.interpolate(x, size=(*x.shape[-3:-1], depth), mode=mode, **kwargs)

    def __call__(self, volume: torch.Tensor, nearest: bool = False) -> torch.Tensor:
        if volume.ndim != 5:
            raise ValueError(f"SimplifiedStitch takes (B, C, H, W, D), got shape {tuple(volume.shape)}")
        b, c, h, w, d = volume.shape
        tiles = volume.new_zeros((b, c, self.tile, self.tile, d))
        sh0, sh1, th0, th1 = self._crop_box(h, self.tile)
        sw0, sw1, tw0, tw1 = self._crop_box(w, self.tile)
        tiles[:, :, th0:th1, tw0:tw1] = volume[:, :, sh0:sh1, sw0:sw1]
        return stitch_slices(self._resize_depth(tiles, self._square_depth(d), nearest))

    def inverse(self, image: torch.Tensor, shape: Sequence[int], nearest: bool = False) -> torch.Tensor:
        """Stitched ``(B, C, gT, gT)`` -> ``(B, C, *shape)`` with ``shape = (H, W, D)`` of the input."""
        h, w, d = (int(s) for s in shape)
        tiles = unstitch_slices(image, self._square_depth(d))
        tiles = self._resize_depth(tiles, d, nearest)
        volume = image.new_zeros((*image.shape[:2], h, w, d))
        sh0, sh1, th0, th1 = self._crop_box(h, self.tile)
        sw0, sw1, tw0, tw1 = self._crop_box(w, self.tile)
        volume[:, :, sh0:sh1, sw0:sw1] = tiles[:, :, th0:th1, tw0:tw1]
        return volume
