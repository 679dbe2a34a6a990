"""Which files of a datalist cannot be read, found before a training run caches its first case.

A training run loads every case into its cache before the first iteration. One damaged image
there used to stop the run inside MONAI's cache fill, naming that file only: the user fixed it,
started again, and met the next one. :func:`check_readable` opens every file of the split first
and refuses the data set with one error that lists *every* file it could not read.

It must stay cheap next to the cache fill it precedes (which decodes everything once anyway), so
each kind of file is read only as far as needed to find the damage a copy or a download leaves
(a truncated file, a file that is not what its name says, random bytes):

* JPEG: decoded at 1/8 scale (libjpeg's DCT scaling reads the whole stream, so a truncated or
  corrupt one fails as in a full decode, at a fraction of the cost);
* PNG: every chunk read and its CRC checked (PIL's ``verify``), without inflating the pixels;
* other 2D images (BMP, TIFF): decoded;
* NIfTI: the header parsed and the data size it implies compared with the file (``.nii``) or with
  the size the gzip trailer records (``.nii.gz``); only a volume whose sizes disagree is
  decompressed to find out. A compressed volume of the right length whose content is damaged
  passes here and is reported by the loader when training reads it;
* HDF5: the file opened (the HDF5 library refuses a truncated file) and the entry key's dataset
  (``image`` / ``label``, as :class:`samssl.data.readers.H5VolumeReader` reads it) found;
* NRRD, MetaImage (``.nrrd``, ``.mha``, ``.mhd``): the header read (SimpleITK);
* anything else: it exists and is not empty.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import optional_import
from PIL import Image, UnidentifiedImageError

from samssl.data.datalists import IMAGE_SUFFIXES
from samssl.data.readers import H5_SUFFIXES
from samssl.utils.errors import InvalidInputError

h5py, _ = optional_import("h5py")
nibabel, _ = optional_import("nibabel")

__all__ = ["Unreadable", "check_readable", "find_unreadable", "short_reason", "unreadable_reason"]

#: Entry keys whose values are files to check.
FILE_KEYS = ("image", "label")
_JPEG_DRAFT_SCALE = 8
_MAX_REASON_CHARS = 160
_H5_ENDINGS = tuple(f".{suffix}" for suffix in H5_SUFFIXES)
_ITK_ENDINGS = (".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True, order=True)
class Unreadable:
    """A file that could not be read, and why (one phrase, without the path)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


def short_reason(error: BaseException, path: str | Path | None = None) -> str:
    """One line saying what is wrong, for a list of files: the path (already shown) is left out."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image file PIL can read (unknown format or damaged)"
    text = " ".join(str(error).split()) or type(error).__name__
    if path is not None:
        for quoted in (f"'{path}'", f'"{path}"', str(path)):
            text = text.replace(quoted, "")
        text = re.sub(r"\s+", " ", text).strip(" :,")
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return text or type(error).__name__


def _read_2d(path: Path) -> None:
    with Image.open(path) as image:
        if image.format == "PNG":
            image.verify()
            return
        image.draft(image.mode, (max(1, image.width // _JPEG_DRAFT_SCALE), max(1, image.height // _JPEG_DRAFT_SCALE)))
        image.load()


def _read_nifti(path: Path) -> str | None:
    image = nibabel.load(str(path))
    proxy = image.dataobj
    expected = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, 2)
            recorded = struct.unpack("<I", f.read(4))[0]  # gzip ISIZE: uncompressed size mod 2**32
        if recorded != expected % 2**32:
            np.asarray(proxy)  # sizes disagree (truncated, or several gzip members): decompress to find out
        return None
    size = path.stat().st_size
    return f"{size} bytes, the header needs {expected}: truncated" if size < expected else None


def _read_itk_header(path: Path) -> None:
    import SimpleITK as sitk  # a dependency; imported here, as only these rarer formats need it

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()


def _read_h5(path: Path, key: str) -> str | None:
    if not h5py.is_hdf5(path):
        return "not an HDF5 file"
    with h5py.File(path, "r") as f:
        if key not in f:
            return f"no dataset '{key}' (datasets present: {', '.join(sorted(f.keys())) or 'none'})"
        _ = f[key].shape
    return None


def unreadable_reason(path: str | Path, key: str = "image") -> str | None:
    """Why ``path`` (the value of entry key ``key``) cannot be read, or ``None`` if it can."""
    path = Path(path)
    if not path.exists():
        return "not found"
    if not path.is_file():
        return "not a file"
    if path.stat().st_size == 0:
        return "empty file"
    name = path.name.lower()
    try:
        if name.endswith(IMAGE_SUFFIXES):
            _read_2d(path)
        elif name.endswith((".nii", ".nii.gz")):
            return _read_nifti(path)
        elif name.endswith(_H5_ENDINGS):
            return _read_h5(path, key)
        elif name.endswith(_ITK_ENDINGS):
            _read_itk_header(path)
    except Exception as error:  # any failure to read is the answer, whatever its type
        return short_reason(error, path)
    return None


def _entries(datalist: Any, keys: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    """The entries of a list of entries, of a split (a dict of such lists), or of nested lists of them."""
    if isinstance(datalist, Mapping):
        if any(key in datalist for key in keys):
            yield datalist
        else:
            for part in datalist.values():
                yield from _entries(part, keys)
    elif isinstance(datalist, (list, tuple)):
        for item in datalist:
            yield from _entries(item, keys)


def find_unreadable(*datalists: Any, keys: Sequence[str] = FILE_KEYS) -> list[Unreadable]:
    """Every file under ``keys`` of the given datalists (lists of entries, or splits) that cannot be read.

    Each file is read once, however many entries or lists name it (an HDF5 file once per key,
    since image and label are two datasets of one file), and listed once per reason. Sorted by path.
    """
    seen: dict[tuple[str, str], str | None] = {}
    for entry in _entries(list(datalists), keys):
        for key in keys:
            value = entry.get(key)
            if not isinstance(value, (str, Path)):
                continue
            is_h5 = str(value).lower().endswith(_H5_ENDINGS)
            where = (str(value), key if is_h5 else "")
            if where not in seen:
                seen[where] = unreadable_reason(value, key)
    return sorted({Unreadable(path, reason) for (path, _), reason in seen.items() if reason is not None})


def check_readable(*datalists: Any, keys: Sequence[str] = FILE_KEYS, what: str = "training data") -> None:
    """Raise :class:`InvalidInputError` listing every unreadable file of ``datalists``; else nothing.

    Bundles call it as a step of ``training`` before anything is built from the data
    (``"$samssl.data.check_readable(@datalist, @val_datalist)"``), so a damaged file is reported
    with all the others before the first case is cached, not one per run. The unlabelled cases of
    a split carry no ``label`` key: their masks are never read by training, nor checked here.
    """
    bad = find_unreadable(*datalists, keys=keys)
    if bad:
        files = "; ".join(map(str, bad))
        raise InvalidInputError(
            f"{len({u.path for u in bad})} file(s) of the {what} cannot be read; replace them, or remove their "
            f"cases (image and mask), then run again: {files}"
        )
