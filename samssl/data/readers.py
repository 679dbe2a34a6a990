"""A MONAI image reader for the UA-MT HDF5 volumes (``mri_norm2.h5`` with ``image`` and ``label``).

UA-MT, SSL4MIS, SemiSAM and SFR all read the LA data from these files; one file holds both the
image and the label, so one reader instance reads one named dataset:

    LoadImaged(keys="image", reader=H5VolumeReader("image"))
    LoadImaged(keys="label", reader=H5VolumeReader("label"))

The arrays are stored in (x, y, z) order, the same order NIfTI readers return, so h5 and NIfTI
copies of a volume load to the same array. The files carry no geometry: the affine is a diagonal
of ``spacing`` (1 mm unless given or stored as a ``spacing`` attribute).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.data.utils import is_supported_format
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple, optional_import

h5py, _ = optional_import("h5py")

__all__ = ["H5VolumeReader", "H5_SUFFIXES", "UAMT_LA_SPACING"]

H5_SUFFIXES = ("h5", "hdf5")
#: Voxel size of the UA-MT preprocessed LA volumes (their h5 files do not store it).
UAMT_LA_SPACING = (0.625, 0.625, 0.625)


@dataclass
class _H5Read:
    """What :meth:`H5VolumeReader.read` found in one file: the array, or the error to report."""

    path: Path
    array: np.ndarray | None = None
    spacing: np.ndarray | None = None
    error: Exception | None = None


class H5VolumeReader(ImageReader):
    """Reads one dataset (``"image"`` or ``"label"``) of an HDF5 volume file.

    Args:
        dataset: name of the HDF5 dataset to read.
        spacing: voxel size (one value or one per axis) for the affine. ``None`` uses the file's
            ``spacing`` attribute (on the dataset or the file) when present, else 1 mm.
    """

    def __init__(self, dataset: str = "image", spacing: float | Sequence[float] | None = None) -> None:
        super().__init__()
        self.dataset = dataset
        self.spacing = spacing

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        return is_supported_format(filename, H5_SUFFIXES)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> list[_H5Read]:
        """Loads the dataset fully (the file is closed again) and its voxel size, per file.

        A file that is not HDF5 raises here, so that ``LoadImage`` falls back to its other readers.
        A missing file or dataset is only recorded and raised from :meth:`get_data`: ``LoadImage``
        swallows ``read`` errors and then tries its other readers (PIL "opens" an h5 file and
        fails with an unrelated message), which would hide the one message that matters.
        """
        return [self._read_one(Path(name)) for name in ensure_tuple(data)]

    def _read_one(self, path: Path) -> _H5Read:
        if not path.is_file():
            return _H5Read(path, error=FileNotFoundError(f"HDF5 volume not found: {path}"))
        if not h5py.is_hdf5(path):
            raise ValueError(f"{path} is not an HDF5 file")
        with h5py.File(path, "r") as f:
            if self.dataset not in f:
                present = ", ".join(sorted(f.keys())) or "none"
                message = f"{path} has no dataset '{self.dataset}' (datasets present: {present})"
                return _H5Read(path, error=ValueError(message))
            array = np.asarray(f[self.dataset][()])
            stored_spacing = f[self.dataset].attrs.get("spacing", f.attrs.get("spacing"))
        spacing = self.spacing if self.spacing is not None else stored_spacing
        if spacing is None:
            spacing = 1.0
        spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (array.ndim,)).copy()
        return _H5Read(path, array=array, spacing=spacing)

    def get_data(self, img: list[_H5Read]) -> tuple[np.ndarray, dict]:
        """Array (no channel axis; several files are stacked as channels) and meta of the first file."""
        for item in img:
            if item.error is not None:
                raise item.error
        arrays = [item.array for item in img]
        first, spacing = arrays[0], img[0].spacing
        affine = np.diag([*spacing, 1.0])
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(first.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
        }
        if len(arrays) == 1:
            return first, meta
        if any(a.shape != first.shape for a in arrays):
            raise ValueError(f"cannot stack HDF5 volumes of different shapes: {[a.shape for a in arrays]}")
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta
