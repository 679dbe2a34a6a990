"""Normalised signed distance maps (SDF) for the dual-task segmentation methods.

Convention of the dual-task papers (Luo et al., "Semi-supervised medical image segmentation
through dual-task consistency", AAAI 2021, and the SAM distillation work built on it): for a
foreground mask, the boundary is 0, the inside is negative and the outside positive, and each
side is min-max normalised by its own range, so that the map lies in [-1, 1]::

    sdf = -(d_in - min d_in) / (max d_in - min d_in)      inside the object
    sdf = +(d_out - min d_out) / (max d_out - min d_out)  outside the object
    sdf = 0                                               on the inner boundary

``d_in`` is the Euclidean distance of an object voxel to the nearest background voxel and
``d_out`` that of a background voxel to the nearest object voxel (``scipy.ndimage.
distance_transform_edt``, optionally in physical units via ``spacing``); the boundary is
``skimage.segmentation.find_boundaries(mode="inner")``, exactly as in the DTC code, so an SDF
head trained here matches what those papers' losses and ``sigmoid(-k * sdf)`` expect.

Degenerate masks, where one side has no voxels (the reference code divides by zero or returns a
constant 0):

* **empty mask -> +1 everywhere.** Every voxel is outside and infinitely far from an object, so
  the normalised outside distance saturates at its maximum. DTC's code returns 0, which states
  that every voxel lies *on* the boundary: an SDF regression loss would then pull the SDF head
  towards "boundary everywhere", and ``sigmoid(-k * 0) = 0.5`` turns that into a half-probability
  mask, whereas +1 maps to probability ~0, the right answer for an empty label.
* **full mask -> -1 everywhere**, by the same argument from the inside.

Distances are measured inside the array only: the array border is neither background nor
boundary, so an object cut by the field of view is treated as continuing beyond it (the
distance transform cannot see what lies outside the crop).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy.ndimage import distance_transform_edt
from skimage.segmentation import find_boundaries

__all__ = ["signed_distance_map", "sdf_to_mask_probability", "SignedDistanceMap", "SignedDistanceMapd"]

ArrayLike = np.ndarray | torch.Tensor


def _min_max_normalised(distance: np.ndarray) -> np.ndarray:
    return (distance - distance.min()) / (distance.max() - distance.min())


def _normalised_sdf(mask: np.ndarray, spacing: Sequence[float] | None) -> np.ndarray:
    """The DTC signed distance map of a boolean array (spatial dims only), as float32."""
    if not mask.any():
        return np.ones(mask.shape, dtype=np.float32)
    if mask.all():
        return -np.ones(mask.shape, dtype=np.float32)
    # Both sides are non-empty here, so max > min on each side (min is 0, max >= one voxel step).
    inside = _min_max_normalised(distance_transform_edt(mask, sampling=spacing))
    outside = _min_max_normalised(distance_transform_edt(~mask, sampling=spacing))
    sdf = outside - inside
    sdf[find_boundaries(mask, mode="inner")] = 0.0
    return sdf.astype(np.float32)


def _float32_like(values: np.ndarray, reference: ArrayLike) -> ArrayLike:
    """``values`` as float32 of ``reference``'s type and device (a MetaTensor keeps its metadata)."""
    dtype = torch.float32 if isinstance(reference, torch.Tensor) else np.float32
    return convert_to_dst_type(values, reference, dtype=dtype)[0]


def signed_distance_map(mask: ArrayLike, spacing: Sequence[float] | None = None) -> ArrayLike:
    """Normalised signed distance map of one binary mask (see the module docstring).

    Args:
        mask: binary mask with spatial dimensions only, (H, W) or (H, W, D); any non-zero value
            counts as foreground. numpy array or torch tensor (any device).
        spacing: voxel size per spatial dimension (e.g. mm), so that distances are physical;
            ``None`` measures them in voxels, as the papers do.

    Returns:
        float32 map of the same shape and type as ``mask`` (a tensor stays on its device), with
        values in [-1, 1]: negative inside, 0 on the inner boundary, positive outside.
    """
    if mask.ndim not in (2, 3):
        raise ValueError(
            f"signed_distance_map expects a 2D or 3D mask with spatial dimensions only, got shape "
            f"{tuple(mask.shape)}; drop channel/batch dimensions first or use SignedDistanceMap."
        )
    if spacing is not None and len(spacing) != mask.ndim:
        raise ValueError(f"spacing {tuple(spacing)} must have one entry per spatial dimension of {tuple(mask.shape)}.")
    return _float32_like(_normalised_sdf(convert_to_numpy(mask) != 0, spacing), mask)


def sdf_to_mask_probability(sdf: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """Turn an SDF (or an SDF head's tanh output) into a soft foreground mask, ``sigmoid(-k * sdf)``.

    This is DTC's differentiable approximation of the Heaviside step on the negative side: with
    ``k = 1500`` a voxel 1/1500 of the normalised range inside the object already gives p = 0.73,
    so the result is a near-binary mask through which gradients still flow to the SDF head.
    """
    if not isinstance(sdf, torch.Tensor):
        raise TypeError(f"sdf_to_mask_probability expects a torch.Tensor, got {type(sdf).__name__}.")
    return torch.sigmoid(-k * sdf)


class SignedDistanceMap(Transform):
    """Channel-first label -> one normalised SDF channel per (foreground) class.

    Accepts either a label map with one channel of integer class indices, (1, *spatial), or a
    one-hot label with ``num_classes`` channels, (num_classes, *spatial), and returns
    (num_classes - 1, *spatial) SDFs (``num_classes`` when ``include_background``), float32, of
    the same array type as the input (a ``MetaTensor`` keeps its metadata).

    Args:
        num_classes: number of classes including the background (class 0).
        include_background: also emit the SDF of the background class as the first channel.
        spacing: voxel size per spatial dimension for physical distances; ``None`` uses voxels.
    """

    def __init__(
        self, num_classes: int = 2, include_background: bool = False, spacing: Sequence[float] | None = None
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}.")
        self.num_classes = num_classes
        self.include_background = include_background
        self.spacing = spacing

    def _class_masks(self, label: np.ndarray) -> list[np.ndarray]:
        if label.ndim not in (3, 4):
            raise ValueError(
                f"SignedDistanceMap expects a channel-first 2D or 3D label (C, H, W[, D]), got shape {label.shape}."
            )
        first_class = 0 if self.include_background else 1
        classes = range(first_class, self.num_classes)
        if label.shape[0] == self.num_classes:  # one-hot (num_classes >= 2, so never the 1-channel map)
            return [label[c] > 0.5 for c in classes]
        if label.shape[0] != 1:
            raise ValueError(
                f"label has {label.shape[0]} channels: expected 1 (class-index map) or num_classes="
                f"{self.num_classes} (one-hot)."
            )
        values = np.unique(label)
        if not np.isin(values, np.arange(self.num_classes)).all():
            raise ValueError(
                f"label map values {values.tolist()[:10]} are not class indices in [0, {self.num_classes}); "
                "binarise masks stored as 0/255 before computing their SDF."
            )
        return [label[0] == c for c in classes]

    def __call__(self, label: ArrayLike) -> ArrayLike:
        masks = self._class_masks(convert_to_numpy(label))
        sdf = np.stack([_normalised_sdf(m, self.spacing) for m in masks])
        return _float32_like(sdf, label)


class SignedDistanceMapd(MapTransform):
    """Dictionary wrapper of :class:`SignedDistanceMap`: adds ``output_key`` next to the label.

    Place it in a ``Compose`` after loading, channel-first conversion and any resizing/cropping,
    so that the SDF matches the label the network sees.

    Args:
        keys: label key(s) to read.
        output_key: key(s) to write, one per key in ``keys``.
        num_classes, include_background, spacing: see :class:`SignedDistanceMap`.
        allow_missing_keys: don't raise if a key is absent (e.g. unlabelled samples).
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        output_key: str | Sequence[str] = "label_sdf",
        num_classes: int = 2,
        include_background: bool = False,
        spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = (output_key,) if isinstance(output_key, str) else tuple(output_key)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"need one output_key per key: keys={self.keys}, output_key={self.output_keys}.")
        self.converter = SignedDistanceMap(num_classes, include_background, spacing)

    def __call__(self, data: Mapping[Hashable, ArrayLike]) -> dict[Hashable, ArrayLike]:
        d = dict(data)
        for key, output_key in self.key_iterator(d, self.output_keys):
            d[output_key] = self.converter(d[key])
        return d
