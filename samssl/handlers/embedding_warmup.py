"""Embed every training image with the frozen SAM encoder once, before the first iteration.

Methods that read SAM's embedding of the un-augmented training image (the dual-task SAM
distillation bundle) encode each image the first time a batch draws it. On a CPU that makes the
first epoch many times slower than the rest (LiteMedSAM: ~1.4 s per image on 2 threads) with
no sign of why, and an interrupted first epoch leaves the cache half filled. This handler does
the same encoding up front, at ``Events.STARTED``, with a progress bar and a log line that says
how many images were already cached. It reads each item only up to its first random transform,
so it leaves the training's random streams untouched. The embeddings are exactly the ones the training step
would compute (same cache keys), so results do not change; with the cache mirrored on disk (by
default one folder shared by every run and bundle, :mod:`samssl.foundation.cache_store`) a
resumed or repeated run finds them all and skips the pass in seconds. The pass ends with one log
line that shows it, e.g. ``embedding cache: 0 encoded, 48 reused (...)``;
:func:`log_embedding_cache` writes the same line for a whole run (a bundle's last step).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import convert_to_tensor, optional_import

from samssl.foundation.cache import image_key

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["PrecomputeEmbeddings", "log_embedding_cache"]

logger = logging.getLogger(__name__)


class PrecomputeEmbeddings:
    """At ``Events.STARTED``, encode the ``image_key`` image of every item of ``datasets`` not yet in the cache.

    Args:
        datasets: the training datasets whose items carry the image SAM reads (labelled and
            unlabelled); ``None`` entries are skipped.
        segmenter: the frozen promptable segmenter with an ``embedding_cache``. Default: ask the
            engine (``engine.embedding_segmenter()``), so the trainer, which knows whether any
            part of its step reads embeddings, decides; ``None`` from it (a baseline without
            SAM) makes the handler do nothing.
        image_key: the item key of that image (the un-augmented copy).
        batch_size: images per encoder call.
        progress: show a tqdm bar.
    """

    def __init__(self, datasets: Sequence[Any | None], segmenter: Any = None, image_key: str = "sam_image",
                 batch_size: int = 4, progress: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.segmenter = segmenter
        self.datasets = [d for d in datasets if d is not None]
        self.image_key = image_key
        self.batch_size = batch_size
        self.progress = progress and has_tqdm

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def _images(self) -> list[torch.Tensor]:
        images = []
        for dataset in self.datasets:
            for item in _deterministic_items(dataset):
                if self.image_key not in item:
                    raise KeyError(f"training items have no {self.image_key!r} before their first random transform "
                                   f"(keys: {sorted(item)}); set image_key to the un-augmented image the segmenter reads")
                images.append(convert_to_tensor(item[self.image_key], track_meta=False))
        return images

    def __call__(self, engine: Any = None) -> int:
        """Encode the missing images; returns how many were encoded."""
        segmenter = self.segmenter
        if segmenter is None and callable(getattr(engine, "embedding_segmenter", None)):
            segmenter = engine.embedding_segmenter()
        cache = getattr(segmenter, "embedding_cache", None)
        if segmenter is None or cache is None:
            return 0
        namespace = segmenter.cache_namespace()
        images = self._images()
        missing = [image for image in images if image_key(namespace, image) not in cache]
        logger.info("SAM embeddings: %d of %d training images cached, encoding %d now",
                    len(images) - len(missing), len(images), len(missing))
        bar = tqdm(total=len(missing), desc="SAM embeddings", unit="image") if self.progress and missing else None
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
            for image in chunk:
                by_shape.setdefault(tuple(image.shape), []).append(image)
            for same_shape in by_shape.values():
                segmenter.encode(torch.stack(same_shape))
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        logger.info("SAM warm-up %s", cache.summary(encoded=len(missing), reused=len(images) - len(missing)))
        return len(missing)


def log_embedding_cache(segmenter: Any) -> str | None:
    """Log (and return) what ``segmenter``'s embedding cache encoded and reused since it was built.

    A bundle calls it as the last step of a run, so that a second run on the same data shows
    ``embedding cache: 0 encoded, N reused``. Does nothing without a segmenter or a cache.
    """
    cache = getattr(segmenter, "embedding_cache", None)
    if cache is None:
        return None
    line = cache.summary()
    logger.info(line)
    return line


def _deterministic_items(dataset: Any) -> Iterator[Mapping[str, Any]]:
    """The items of ``dataset`` up to their first random transform (MONAI's ``CacheDataset`` split).

    The random transforms (colour jitter...) are not needed for an un-augmented image, and running
    them here would draw from their random state before training, so a run with the warm-up would
    not repeat a run without it. A dataset without a ``Compose`` transform is read item by item.
    """
    transform, data = getattr(dataset, "transform", None), getattr(dataset, "data", None)
    if not isinstance(transform, Compose) or data is None:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    first_random = transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    prefix = transform if first_random is None else Compose(transform.transforms[:first_random])
    for entry in data:
        yield prefix(dict(entry))
