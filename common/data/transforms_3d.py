"""Transforms for 3D volumes (MSD NIfTI and UA-MT HDF5), and the dataset factory.

Modes as in :mod:`common.data.transforms_2d`:

* ``"labelled"`` / ``"unlabelled"``: training; a random ``patch_size`` crop (padded first where the
  volume is smaller), random flips and in-plane 90-degree rotations;
* ``"eval"``: image + label, whole volume, no randomness (sliding-window inference follows);
* ``"infer"``: image only, whole volume, invertible back to the input grid with ``Invertd``.

NIfTI files load with MONAI's default readers, ``.h5`` files with :class:`H5VolumeReader`, chosen
per file by its extension. ``target_spacing`` resamples first: the CPU presets use 1.25 mm for
LA (0.625 mm native), eight times fewer voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import CacheDataset, Dataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropd,
    Spacingd,
    SpatialPadd,
)
from monai.utils import ensure_tuple_rep

from .checks import BinarizeLabeld, CheckSpatialShapesMatchd
from .readers import UAMT_LA_SPACING, H5VolumeReader

__all__ = ["VOLUME_MODES", "volume_transforms", "make_dataset"]

VOLUME_MODES = ("labelled", "unlabelled", "eval", "infer")


def _keys_for(mode: str) -> tuple[str, ...]:
    if mode not in VOLUME_MODES:
        raise ValueError(f"unknown mode '{mode}': use one of {', '.join(VOLUME_MODES)}")
    return ("image", "label") if mode in ("labelled", "eval") else ("image",)


def _loader(key: str, h5: bool | None, h5_spacing: float | Sequence[float] | None) -> LoadImaged:
    """A loader for ``key``; an h5 file's dataset of the same name (``image``/``label``) is read.

    With ``h5=None`` the reader is chosen by file extension: the h5 reader is registered on a
    loader that auto-selects, which also lets its errors (missing dataset) reach the user as is.
    """
    h5_reader = H5VolumeReader(dataset=key, spacing=h5_spacing)
    if h5 is True:
        return LoadImaged(key, reader=h5_reader, image_only=True)
    loader = LoadImaged(key, image_only=True)
    if h5 is None:
        loader.register(h5_reader)
    return loader


def volume_transforms(
    mode: str,
    patch_size: Sequence[int] = (112, 112, 80),
    target_spacing: float | Sequence[float] | None = None,
    h5: bool | None = None,
    h5_spacing: float | Sequence[float] | None = UAMT_LA_SPACING,
    normalize: bool = True,
) -> Compose:
    """Transforms of volume datalist entries for ``mode`` (see the module docstring).

    Args:
        mode: ``"labelled"``, ``"unlabelled"``, ``"eval"`` or ``"infer"``.
        patch_size: training crop; volumes smaller than it are zero-padded (after normalisation).
        target_spacing: resample to this voxel size in mm (one value or three); ``None`` keeps the grid.
        h5: ``True``/``False`` forces the h5/NIfTI readers; ``None`` decides per file extension.
        h5_spacing: voxel size of h5 volumes, which store none (UA-MT's LA files: 0.625 mm);
            ``None`` takes a ``spacing`` attribute of the file, else 1 mm.
        normalize: z-score the image (a no-op up to resampling for UA-MT's already z-scored LA).
    """
    keys = _keys_for(mode)
    has_label = "label" in keys
    interpolation = ("bilinear", "nearest")[: len(keys)]
    steps: list = [_loader(key, h5, h5_spacing) for key in keys]
    steps.append(EnsureChannelFirstd(keys))
    if has_label:
        steps += [CheckSpatialShapesMatchd(keys), BinarizeLabeld("label", threshold=0.5, relative=False)]
    steps.append(Orientationd(keys, axcodes="RAS", labels=None))
    if target_spacing is not None:
        steps.append(Spacingd(keys, pixdim=ensure_tuple_rep(target_spacing, 3), mode=interpolation))
    if normalize:
        steps.append(NormalizeIntensityd("image"))
    if mode in ("labelled", "unlabelled"):
        patch = tuple(int(s) for s in patch_size)
        steps += [
            SpatialPadd(keys, spatial_size=patch),
            RandSpatialCropd(keys, roi_size=patch, random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
        ]
        if patch[0] == patch[1]:  # a 90-degree turn of a non-square patch would change its shape
            steps.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
    steps.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(steps)


def make_dataset(data: Sequence[dict], transform: Compose, cache: bool = True, num_workers: int = 0) -> Dataset:
    """A MONAI ``CacheDataset`` (deterministic steps computed once, kept in memory) or ``Dataset``.

    Caching matters on CPU: loading, resampling and resizing cost more than the random steps
    that follow them, and are the same every epoch.
    """
    if cache:
        return CacheDataset(data, transform, cache_rate=1.0, num_workers=num_workers, progress=False)
    return Dataset(data, transform)
