"""Where the embedding cache lives on disk, and the bounded, multi-process-safe folder it uses.

One folder for every run, seed and bundle on a machine: an entry's key is a content hash of the
model, its preprocessing and the image (:func:`samssl.foundation.cache.image_key`), never a path,
so a frame embedded by one run is reused by every later run that feeds the same frame to the same
model, and sharing can never hand one model's embedding to another. The folder is chosen by
:func:`resolve_cache_dir`:

1. a path given in the config (a bundle's ``cache_dir`` key) or the call;
2. else ``$SAMSSL_CACHE_DIR``;
3. else the user cache folder: ``$XDG_CACHE_HOME/samssl/embeddings``, falling back to
   ``~/.cache/samssl/embeddings`` (``%LOCALAPPDATA%\\samssl\\embeddings`` on Windows).

``False`` or ``""`` turns the disk part off (memory only).

The folder is bounded (:data:`DEFAULT_MAX_BYTES`, or ``$SAMSSL_CACHE_MAX_BYTES``, e.g. ``8G``):
a read touches an entry's modification time, and when the folder grows past the bound the entries
read or written longest ago are deleted. The folder is measured once when the first entry is
written, then estimated from this process's writes and measured again every
:attr:`DiskStore.scan_every` writes (other processes write too) or when the estimate passes the
bound, so a write costs no directory walk.

Several processes may share the folder. Writes are atomic (:func:`samssl.utils.files.atomic_save`:
a reader sees the whole entry or none), two writers of one key leave one whole entry (the same
bytes), and an entry that vanishes (evicted by another process) or cannot be read is a miss.

Entries are stored in float16 (half the disk; SAM embeddings are of order 1, far from float16's
range limits) and read back in the dtype the encoder produced; entries written in float32 by an
earlier version carry no dtype field; they load, and are served rounded the same way as new ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from samssl.foundation.base import ImageEmbeddings
from samssl.utils.errors import InvalidInputError
from samssl.utils.files import atomic_save

__all__ = ["CACHE_DIR_ENV", "CACHE_MAX_BYTES_ENV", "DEFAULT_MAX_BYTES", "DiskStore", "default_cache_dir",
           "parse_bytes", "resolve_cache_dir", "resolve_max_bytes"]

logger = logging.getLogger(__name__)

#: Environment variable naming the shared cache folder (overrides the user cache folder).
CACHE_DIR_ENV = "SAMSSL_CACHE_DIR"
#: Environment variable bounding the folder's size (bytes, or with a K/M/G/T suffix).
CACHE_MAX_BYTES_ENV = "SAMSSL_CACHE_MAX_BYTES"
#: Default bound: about 8000 LiteMedSAM frames (4 MiB each in float32, 2 MiB stored). SSL-MedSAM2's CPU
#: preset alone embeds about 3300 LA frames (76 volumes x 44 slices at 1.25 mm, 6.7 GB) that every later
#: seed and variant reuses: a bound below that would evict them within one run and re-encode them all.
DEFAULT_MAX_BYTES = 16 << 30

#: Format of an entry file; entries without it are the float32 entries of earlier versions.
_FORMAT = 2
_UNREADABLE = (OSError, EOFError, RuntimeError, KeyError, ValueError, TypeError, pickle.UnpicklingError,
               zipfile.BadZipFile)


def default_cache_dir() -> Path:
    """``$SAMSSL_CACHE_DIR``, else the user cache folder's ``samssl/embeddings``."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base).expanduser() / "samssl" / "embeddings"


def resolve_cache_dir(setting: Any = None) -> Path | None:
    """The disk cache folder a config value asks for: ``None``/``True`` the shared default, ``False``/``""`` none.

    Raises:
        InvalidInputError: ``setting`` is not a path, a boolean or ``None``.
    """
    if setting is None or setting is True:
        return default_cache_dir()
    if setting is False:
        return None
    if isinstance(setting, (str, os.PathLike)):
        text = os.fspath(setting).strip()
        return Path(text).expanduser() if text else None
    raise InvalidInputError(
        f"embedding cache folder must be a path, null (the shared default, {default_cache_dir()}) or "
        f"false / \"\" (no disk cache), got {setting!r}"
    )


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(value: int | str) -> int:
    """``4294967296``, ``"4G"``, ``"4GiB"``, ``"512M"`` -> bytes (binary units).

    Raises:
        InvalidInputError: not a non-negative size.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(value), flags=re.IGNORECASE)
    if match is None:
        raise InvalidInputError(f"cache size must be a number of bytes or like '4G' / '512MiB', got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def resolve_max_bytes(setting: int | str | None = None) -> int:
    """The disk bound: ``setting``, else ``$SAMSSL_CACHE_MAX_BYTES``, else :data:`DEFAULT_MAX_BYTES`."""
    if setting is not None:
        return parse_bytes(setting)
    env = os.environ.get(CACHE_MAX_BYTES_ENV, "").strip()
    return parse_bytes(env) if env else DEFAULT_MAX_BYTES


def _to_storage(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``tensor`` in the storage dtype, unless that would turn finite values into infinities."""
    if dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype:
        return tensor.contiguous()
    stored = tensor.to(dtype)
    if not bool(torch.isfinite(stored).all()) and bool(torch.isfinite(tensor).all()):
        return tensor.contiguous()  # out of float16's range: keep the exact values
    return stored.contiguous()


class DiskStore:
    """One folder of embedding entries (``<key[:2]>/<key>.pt``), bounded by size, least recently used first out.

    Args:
        directory: the folder; created if missing.
        max_bytes: bound on the entries' total size; ``None`` for :func:`resolve_max_bytes`'s default.
        dtype: storage dtype of floating-point tensors (``None`` keeps the encoder's).
        scan_every: writes between two measurements of the folder.
        low_water: fraction of ``max_bytes`` an eviction brings the folder down to, so the next
            eviction waits for that much new data instead of following every write.
    """

    def __init__(self, directory: str | Path, max_bytes: int | str | None = None,
                 dtype: torch.dtype | None = torch.float16, scan_every: int = 64, low_water: float = 0.9) -> None:
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = resolve_max_bytes(max_bytes)
        self.dtype = dtype
        self.scan_every = max(1, int(scan_every))
        self.low_water = float(low_water)
        self._usage: int | None = None  # estimated bytes in the folder, None until first measured
        self._writes_since_scan = 0
        self.evicted = 0

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    # ------------------------------------------------------------------ entries
    def round_trip(self, item: ImageEmbeddings) -> ImageEmbeddings:
        """``item`` as it will read back from disk, so a fresh encode and a later read give the same values."""
        def back(t: torch.Tensor) -> torch.Tensor:
            return _to_storage(t, self.dtype).to(t.dtype)

        return ImageEmbeddings(features=back(item.features),
                               high_res_features=tuple(back(t) for t in item.high_res_features),
                               original_sizes=item.original_sizes, input_sizes=item.input_sizes)

    def get(self, key: str) -> ImageEmbeddings | None:
        """The entry, or ``None`` when it is absent, vanished while being read, or unreadable."""
        path = self.path(key)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            item = _from_payload(payload)
            if "dtype" not in payload:  # a float32 entry of an earlier version: serve what a new one serves
                item = self.round_trip(item)
        except FileNotFoundError:
            return None
        except _UNREADABLE as error:
            logger.warning("embedding cache entry %s cannot be read (%s); encoding it again", path, error)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):  # mark as recently used; it may have just been evicted
            os.utime(path)
        return item

    def put(self, key: str, item: ImageEmbeddings) -> None:
        """Write ``item`` atomically (skipped when another run already wrote it), then keep the bound."""
        path = self.path(key)
        if path.is_file():
            with contextlib.suppress(OSError):
                os.utime(path)
            return
        atomic_save(path, lambda partial: torch.save(self._payload(item), partial))
        self._writes_since_scan += 1
        if self._usage is not None:
            with contextlib.suppress(OSError):
                self._usage += path.stat().st_size
        if self._usage is None or self._usage > self.max_bytes or self._writes_since_scan >= self.scan_every:
            self.evict()

    def _payload(self, item: ImageEmbeddings) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "dtype": str(item.features.dtype).removeprefix("torch."),
            "high_res_dtypes": [str(t.dtype).removeprefix("torch.") for t in item.high_res_features],
            "features": _to_storage(item.features, self.dtype),
            "high_res_features": [_to_storage(t, self.dtype) for t in item.high_res_features],
            "original_sizes": [list(s) for s in item.original_sizes],
            "input_sizes": [list(s) for s in item.input_sizes],
        }

    # ------------------------------------------------------------------ size
    def _entries(self) -> list[tuple[float, int, Path]]:
        """``(mtime, size, path)`` of every entry; removes temporary files a killed writer left an hour ago."""
        entries = []
        stale = time.time() - 3600
        for sub in _scandir(self.directory):
            if not sub.is_dir():
                continue
            for entry in _scandir(sub.path):
                try:
                    stat = entry.stat()
                except OSError:  # removed meanwhile
                    continue
                if entry.name.endswith(".pt"):
                    entries.append((stat.st_mtime, stat.st_size, Path(entry.path)))
                elif entry.name.endswith(".partial") and stat.st_mtime < stale:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        return entries

    def usage(self) -> int:
        """Bytes the entries take now (a folder walk)."""
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> int:
        """Measure the folder; if over the bound, delete least recently used entries down to the low water mark."""
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        if total > self.max_bytes:
            target = int(self.max_bytes * self.low_water)
            for _, size, path in sorted(entries, key=lambda e: e[0]):
                if total <= target:
                    break
                with contextlib.suppress(FileNotFoundError):  # another process evicted it first
                    path.unlink()
                    removed += 1
                total -= size
            self.evicted += removed
            logger.debug("embedding cache %s: evicted %d entries, %d bytes left", self.directory, removed, total)
        self._usage = total
        self._writes_since_scan = 0
        return removed


def _scandir(path: str | Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _from_payload(payload: dict[str, Any]) -> ImageEmbeddings:
    """An entry read back in the encoder's dtype (entries without ``dtype`` are stored as encoded)."""
    features = payload["features"]
    high_res = list(payload["high_res_features"])
    if "dtype" in payload:
        features = features.to(getattr(torch, payload["dtype"]))
        dtypes = payload.get("high_res_dtypes") or [payload["dtype"]] * len(high_res)
        high_res = [t.to(getattr(torch, d)) for t, d in zip(high_res, dtypes)]
    return ImageEmbeddings(
        features=features,
        high_res_features=tuple(high_res),
        original_sizes=tuple(tuple(s) for s in payload["original_sizes"]),
        input_sizes=tuple(tuple(s) for s in payload["input_sizes"]),
    )
