"""Transforms for 3D volumes (MSD NIfTI and UA-MT HDF5), and the dataset factory.

Modes as in :mod:`samssl.data.transforms_2d`:

* ``"labelled"`` / ``"unlabelled"``: training; a random ``patch_size`` crop (padded first where the
  volume is smaller), random flips and in-plane 90-degree rotations;
* ``"eval"``: image + label, whole volume, no randomness (sliding-window inference follows);
* ``"infer"``: image only, whole volume, invertible back to the input grid with ``Invertd``;
* ``"pseudo_labelled"``: an unlabelled image with a pseudo-label volume written by a teacher
  (``pseudo_label`` key, on the image's own grid), cropped and flipped together as in
  ``"labelled"``. The entry's ground truth is never read: there is no ``label`` key in this mode.

NIfTI files load with MONAI's default readers, ``.h5`` files with :class:`H5VolumeReader`, chosen
per file by its extension. ``target_spacing`` resamples first: the CPU presets use 1.25 mm for
LA (0.625 mm native), eight times fewer voxels.

Where a patch came from: with ``patch_location=True`` the unlabelled mode appends
:class:`PatchLocationd`, which stores the patch's voxel-to-world affine (``patch_affine``, updated
by MONAI through the crop, flips and rotations) and an integer key of its source file
(``case_key``). :class:`VolumeLookup` holds the whole preprocessed volumes by the same key, so a
method can map every patch voxel to its voxel in the whole volume (``inv(volume_affine) @
patch_affine``) and run a 2D teacher on whole slices, whose embeddings stay the same from one
random crop to the next and can therefore be cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, Dataset, MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropd,
    Spacingd,
    SpatialPadd,
)
from monai.utils import ensure_tuple_rep

from samssl.data.checks import BinarizeLabeld, CheckSpatialShapesMatchd
from samssl.data.readers import UAMT_LA_SPACING, H5VolumeReader

__all__ = ["VOLUME_MODES", "PatchLocationd", "VolumeLookup", "case_key", "volume_transforms", "make_dataset"]

VOLUME_MODES = ("labelled", "unlabelled", "eval", "infer", "pseudo_labelled")
TRAINING_MODES = ("labelled", "unlabelled", "pseudo_labelled")


def _keys_for(mode: str) -> tuple[str, ...]:
    if mode not in VOLUME_MODES:
        raise ValueError(f"unknown mode '{mode}': use one of {', '.join(VOLUME_MODES)}")
    if mode == "pseudo_labelled":
        return ("image", "pseudo_label")
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


def case_key(source: Any) -> int:
    """A stable 63-bit integer naming a case by its source file (a tensor-friendly case id)."""
    text = str(source)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _source_of(image: Any) -> str:
    meta = getattr(image, "meta", None)
    if not meta or "filename_or_obj" not in meta:
        raise ValueError("PatchLocationd needs a MetaTensor image loaded from a file (meta 'filename_or_obj').")
    return str(meta["filename_or_obj"])


class PatchLocationd(MapTransform):
    """Record where a training patch lies: ``patch_affine`` (4x4, float64) and ``case_key`` (int64).

    Put it after the random crop/flip/rotation of a MONAI pipeline with meta tracking on: the
    image's affine then maps patch voxel indices to world coordinates, and
    ``inv(volume_affine) @ patch_affine`` to voxel indices of the whole volume.
    """

    def __init__(self, key: Hashable = "image", affine_key: str = "patch_affine", case_key_name: str = "case_key") -> None:
        super().__init__([key])
        self.affine_key = affine_key
        self.case_key_name = case_key_name

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.keys[0]]
        if not isinstance(image, MetaTensor):
            raise ValueError("PatchLocationd needs a MetaTensor image (MONAI meta tracking switched on).")
        d[self.affine_key] = torch.as_tensor(image.affine, dtype=torch.float64).clone()
        d[self.case_key_name] = torch.tensor(case_key(_source_of(image)), dtype=torch.int64)
        return d


def volume_transforms(
    mode: str,
    patch_size: Sequence[int] = (112, 112, 80),
    target_spacing: float | Sequence[float] | None = None,
    h5: bool | None = None,
    h5_spacing: float | Sequence[float] | None = UAMT_LA_SPACING,
    normalize: bool = True,
    patch_location: bool = False,
) -> Compose:
    """Transforms of volume datalist entries for ``mode`` (see the module docstring).

    Args:
        mode: ``"labelled"``, ``"unlabelled"``, ``"pseudo_labelled"``, ``"eval"`` or ``"infer"``.
        patch_size: training crop; volumes smaller than it are zero-padded (after normalisation).
        target_spacing: resample to this voxel size in mm (one value or three); ``None`` keeps the grid.
        h5: ``True``/``False`` forces the h5/NIfTI readers; ``None`` decides per file extension.
        h5_spacing: voxel size of h5 volumes, which store none (UA-MT's LA files: 0.625 mm);
            ``None`` takes a ``spacing`` attribute of the file, else 1 mm.
        normalize: z-score the image (a no-op up to resampling for UA-MT's already z-scored LA).
        patch_location: in the training modes, append :class:`PatchLocationd` (``patch_affine`` and
            ``case_key`` entries) so that a patch can be mapped back into its whole volume.
    """
    keys = _keys_for(mode)
    has_label = "label" in keys
    interpolation = ("bilinear", "nearest")[: len(keys)]
    steps: list = [_loader(key, h5, h5_spacing) for key in keys]
    steps.append(EnsureChannelFirstd(keys))
    if len(keys) > 1:
        steps.append(CheckSpatialShapesMatchd(keys))
    if has_label:
        steps.append(BinarizeLabeld("label", threshold=0.5, relative=False))
    steps.append(Orientationd(keys, axcodes="RAS", labels=None))
    if target_spacing is not None:
        steps.append(Spacingd(keys, pixdim=ensure_tuple_rep(target_spacing, 3), mode=interpolation))
    if normalize:
        steps.append(NormalizeIntensityd("image"))
    if mode in TRAINING_MODES:
        patch = tuple(int(s) for s in patch_size)
        steps += [
            SpatialPadd(keys, spatial_size=patch),
            RandSpatialCropd(keys, roi_size=patch, random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
        ]
        if patch[0] == patch[1]:  # a 90-degree turn of a non-square patch would change its shape
            steps.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
        if patch_location:
            steps.append(PatchLocationd("image"))
    steps.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(steps)


class VolumeLookup:
    """Whole preprocessed volumes of a datalist, found by :func:`case_key` of their image file.

    Loaded on first use with ``transform`` (the deterministic part of the training pipeline, e.g.
    ``volume_transforms("infer", target_spacing=...)``, so the world frame matches the patches')
    and kept in memory (``max_volumes`` most recent ones; LA at 1.25 mm is about 1.3 MB a volume).
    Only the ``image`` key is read: the lookup cannot hand out a label.
    """

    def __init__(self, datalist: Sequence[Mapping[str, Any]], transform: Compose, max_volumes: int | None = None) -> None:
        self.transform = transform
        self.max_volumes = max_volumes
        self._sources: dict[int, str] = {}
        for entry in datalist:
            if "image" not in entry:
                raise ValueError(f"datalist entry without an 'image': {entry}")
            source = str(entry["image"])
            # the loader records the path as given; accept the resolved form too
            for name in (source, str(Path(source).expanduser().resolve())):
                self._sources.setdefault(case_key(name), source)
        self._volumes: dict[int, MetaTensor] = {}

    def __len__(self) -> int:
        return len({str(v) for v in self._sources.values()})

    def __contains__(self, key: int) -> bool:
        return int(key) in self._sources

    def volume(self, key: int) -> MetaTensor:
        """The preprocessed volume ``(C, X, Y, Z)`` of the case with this key (affine in its meta)."""
        key = int(key)
        if key in self._volumes:
            self._volumes[key] = self._volumes.pop(key)  # most recently used last
            return self._volumes[key]
        if key not in self._sources:
            raise KeyError(f"no volume with case key {key} in this lookup: was the patch drawn from another datalist?")
        volume = self.transform({"image": self._sources[key]})["image"]
        if not isinstance(volume, MetaTensor):
            raise ValueError("VolumeLookup's transform must keep MONAI meta data (the affine) on the image.")
        self._volumes[key] = volume
        if self.max_volumes is not None:
            while len(self._volumes) > self.max_volumes:
                self._volumes.pop(next(iter(self._volumes)))
        return volume


def make_dataset(data: Sequence[dict], transform: Compose, cache: bool = True, num_workers: int = 0) -> Dataset:
    """A MONAI ``CacheDataset`` (deterministic steps computed once, kept in memory) or ``Dataset``.

    Caching matters on CPU: loading, resampling and resizing cost more than the random steps
    that follow them, and are the same every epoch.
    """
    if cache:
        return CacheDataset(data, transform, cache_rate=1.0, num_workers=num_workers, progress=False)
    return Dataset(data, transform)
