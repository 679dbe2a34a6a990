"""Embedding cache: encode each image (or volume slice) once across epochs and iterations.

The image encoder is the most expensive step of every teacher here (about 1.4 s per image for
LiteMedSAM and 11 s for SAM ViT-B on two CPU threads) and it is frozen, so its output for a
given image never changes. Entries are keyed by

    sha256(backend name | weights identity | preprocessing signature | image bytes + shape + dtype)

so a different checkpoint, a different input transform (its signature names the input size,
intensity scaling, mean/std and channels) or a single changed pixel is a miss, and the key never
depends on a file path: that is what makes one folder safe to share between every run, seed and
bundle (:mod:`samssl.foundation.cache_store`: the shared default location, the size bound with
least-recently-used eviction, multi-process safety, float16 storage). Memory is bounded too
(least recently used entries are evicted by byte size).

A memory-only cache returns bit-for-bit what a fresh encode returned. With a folder, entries are
stored in float16 and every use of an embedding, the first included, returns the float16 round
trip (in the encoder's dtype), so a run on an empty cache and a run on a full one compute the
same numbers.

:meth:`EmbeddingCache.summary` counts what a run encoded and reused, e.g.
``embedding cache: 0 encoded, 48 reused (48 from disk; ~/.cache/samssl/embeddings, 96 MiB)``.

Caching is refused while the encoder has trainable parameters (LoRA being tuned): its
embeddings change with every step, and a cache would silently return stale ones.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from samssl.foundation.base import ImageEmbeddings
from samssl.foundation.cache_store import DiskStore, default_cache_dir, resolve_cache_dir

__all__ = ["EmbeddingCache", "default_cache_dir", "image_key", "resolve_cache_dir"]

if TYPE_CHECKING:
    from samssl.foundation.base import PromptableSegmenter


def image_key(namespace: str, image: torch.Tensor) -> str:
    """Content hash of one image under a backend namespace."""
    array = image.detach().to("cpu").contiguous()
    digest = hashlib.sha256(namespace.encode())
    digest.update(f"|{tuple(array.shape)}|{array.dtype}|".encode())
    digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def _nbytes(item: ImageEmbeddings) -> int:
    return sum(t.numel() * t.element_size() for t in item.tensors)


class EmbeddingCache:
    """Bounded LRU cache of per-image embeddings, optionally mirrored in a bounded folder.

    Args:
        max_bytes: memory budget of the in-memory part (LiteMedSAM: 4 MiB per image).
        directory: folder of the persistent part, created if missing; ``None`` keeps everything in
            memory. (Configs go through :meth:`from_settings`, where ``None`` means the shared
            default folder.)
        store_device: where cached tensors live (CPU by default, so GPU memory stays free).
        disk_max_bytes: bound on the folder's size (default: ``$SAMSSL_CACHE_MAX_BYTES`` or 16 GiB).
        disk_dtype: storage dtype on disk (float16 halves the disk; ``None`` stores as encoded).
    """

    def __init__(self, max_bytes: int = 1 << 30, directory: str | Path | None = None,
                 store_device: str | torch.device = "cpu", disk_max_bytes: int | str | None = None,
                 disk_dtype: torch.dtype | None = torch.float16) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.disk = None if directory is None else DiskStore(directory, disk_max_bytes, dtype=disk_dtype)
        self.store_device = torch.device(store_device)
        self._items: OrderedDict[str, ImageEmbeddings] = OrderedDict()
        self._bytes = 0
        self.hits = 0  # images served without encoding (memory or disk)
        self.misses = 0  # images that had to be encoded
        self.disk_hits = 0  # of the hits, read from the folder
        self.encoded = 0  # images this cache sent through the encoder

    @classmethod
    def from_settings(cls, max_bytes: int = 1 << 30, directory: Any = None, disk_max_bytes: int | str | None = None,
                      **kwargs: Any) -> "EmbeddingCache":
        """The cache a config describes: ``directory`` ``None`` is the shared default folder, ``False``/``""`` none.

        This is what ``build_foundation_model(..., cache={...})`` and the bundles' ``cache_dir``
        keys use (:func:`~samssl.foundation.cache_store.resolve_cache_dir`).
        """
        return cls(max_bytes=max_bytes, directory=resolve_cache_dir(directory), disk_max_bytes=disk_max_bytes,
                   **kwargs)

    @property
    def directory(self) -> Path | None:
        return None if self.disk is None else self.disk.directory

    # ------------------------------------------------------------------ mapping
    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items or (self.disk is not None and key in self.disk)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        """Empty the in-memory part (files on disk are kept)."""
        self._items.clear()
        self._bytes = 0

    def _path(self, key: str) -> Path | None:
        return None if self.disk is None else self.disk.path(key)

    def get(self, key: str) -> ImageEmbeddings | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item
        if self.disk is not None:
            item = self.disk.get(key)
            if item is not None:
                self.disk_hits += 1
                item = item.to(self.store_device)
                self._remember(key, item)
                return item
        return None

    def put(self, key: str, item: ImageEmbeddings) -> ImageEmbeddings:
        """Store ``item``; returns what a later :meth:`get` returns (its float16 round trip with a folder)."""
        if len(item) != 1:
            raise ValueError(f"cache entries hold one image, got {len(item)}")
        item = item.to(self.store_device)
        if self.disk is not None:
            item = self.disk.round_trip(item)
            self.disk.put(key, item)
        self._remember(key, item)
        return item

    def _remember(self, key: str, item: ImageEmbeddings) -> None:
        size = _nbytes(item)
        if size > self.max_bytes:
            return
        if key in self._items:
            self._bytes -= _nbytes(self._items.pop(key))
        self._items[key] = item
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= _nbytes(evicted)

    # ------------------------------------------------------------------ encoding
    def encode(self, backend: "PromptableSegmenter", images: torch.Tensor) -> ImageEmbeddings:
        """``backend.encode`` through the cache: hits are reused, misses encoded in one batch."""
        trainable = [n for n, p in backend.image_encoder.named_parameters() if p.requires_grad]
        if trainable:
            raise RuntimeError(
                f"refusing to cache embeddings of {backend.name}: its image encoder has trainable parameters "
                f"(e.g. {trainable[0]}); detach the cache while tuning the encoder"
            )
        namespace = backend.cache_namespace()
        keys = [image_key(namespace, image) for image in images]
        found: dict[int, ImageEmbeddings] = {}
        missing: list[int] = []
        for i, key in enumerate(keys):
            item = self.get(key)
            if item is None:
                missing.append(i)
            else:
                found[i] = item
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            fresh = backend._encode_uncached(images[missing])
            self.encoded += len(missing)
            for j, i in enumerate(missing):
                found[i] = self.put(keys[i], fresh[j])
        device = backend.device
        return ImageEmbeddings.cat(found[i] for i in range(len(keys))).to(device)

    # ------------------------------------------------------------------ report
    def summary(self, encoded: int | None = None, reused: int | None = None) -> str:
        """One line for the log: images encoded and reused, and the folder with its size.

        ``encoded`` / ``reused`` default to this cache's counts since it was made (a warm-up
        passes the counts of its own pass). Measuring the folder walks it once.
        """
        encoded = self.encoded if encoded is None else encoded
        reused = self.hits if reused is None else reused
        if self.disk is None:
            where = "memory only"
        else:
            where = f"{self.disk_hits} from disk; {self.disk.directory}, {_mib(self.disk.usage())}"
        return f"embedding cache: {encoded} encoded, {reused} reused ({where})"


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.0f} MiB"
