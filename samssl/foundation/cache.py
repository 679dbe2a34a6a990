"""Embedding cache: encode each image (or volume slice) once across epochs and iterations.

The image encoder is the most expensive step of every teacher here (about 1.4 s per image for
LiteMedSAM and 11 s for SAM ViT-B on two CPU threads) and it is frozen, so its output for a
given image never changes. Entries are keyed by

    sha256(backend name | weights identity | preprocessing signature | image bytes + shape + dtype)

so a different checkpoint, a different input transform or a single changed pixel is a miss,
and a hit is bit-for-bit what a fresh encode returned when the entry was stored. Memory is
bounded (least recently used entries are evicted by byte size); an optional directory keeps
entries across runs (``torch.save``/``torch.load(weights_only=True)``, one file per entry).

Caching is refused while the encoder has trainable parameters (LoRA being tuned): its
embeddings change with every step, and a cache would silently return stale ones.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from samssl.foundation.base import ImageEmbeddings
from samssl.utils.files import atomic_save

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
    """Bounded LRU cache of per-image embeddings, optionally mirrored on disk.

    Args:
        max_bytes: memory budget of the in-memory part (LiteMedSAM: 4 MiB per image).
        directory: optional folder for a persistent cache; created if missing.
        store_device: where cached tensors live (CPU by default, so GPU memory stays free).
    """

    def __init__(self, max_bytes: int = 1 << 30, directory: str | Path | None = None,
                 store_device: str | torch.device = "cpu") -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.directory = None if directory is None else Path(directory).expanduser()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.store_device = torch.device(store_device)
        self._items: OrderedDict[str, ImageEmbeddings] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ mapping
    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items or (self._path(key) is not None and self._path(key).is_file())

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        """Empty the in-memory part (files on disk are kept)."""
        self._items.clear()
        self._bytes = 0

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key[:2] / f"{key}.pt"

    def get(self, key: str) -> ImageEmbeddings | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item
        path = self._path(key)
        if path is not None and path.is_file():
            item = _load_entry(path)
            self._remember(key, item)
            return item
        return None

    def put(self, key: str, item: ImageEmbeddings) -> None:
        if len(item) != 1:
            raise ValueError(f"cache entries hold one image, got {len(item)}")
        item = item.to(self.store_device)
        self._remember(key, item)
        path = self._path(key)
        if path is not None and not path.is_file():
            _save_entry(path, item)

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
            for j, i in enumerate(missing):
                item = fresh[j]
                self.put(keys[i], item)
                found[i] = item
        device = backend.device
        return ImageEmbeddings.cat(found[i] for i in range(len(keys))).to(device)


def _save_entry(path: Path, item: ImageEmbeddings) -> None:
    """Write atomically, so a crashed run never leaves a half-written entry behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "features": item.features.contiguous(),
        "high_res_features": [t.contiguous() for t in item.high_res_features],
        "original_sizes": [list(s) for s in item.original_sizes],
        "input_sizes": [list(s) for s in item.input_sizes],
    }
    atomic_save(path, lambda partial: torch.save(payload, partial))


def _load_entry(path: Path) -> ImageEmbeddings:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return ImageEmbeddings(
        features=payload["features"],
        high_res_features=tuple(payload["high_res_features"]),
        original_sizes=tuple(tuple(s) for s in payload["original_sizes"]),
        input_sizes=tuple(tuple(s) for s in payload["input_sizes"]),
    )
