"""Embedding cache: exact hits, keys that separate what must be separated, bounded memory, disk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samssl.foundation import EmbeddingCache, InputTransform, PromptableSegmenter
from samssl.foundation.cache import image_key


class CountingSegmenter(PromptableSegmenter):
    """A tiny real encoder that counts how many images it has encoded."""

    name = "counting"

    def __init__(self, transform: InputTransform | None = None, weights_id: str = "w1") -> None:
        super().__init__(transform or InputTransform(target_size=32), weights_id)
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.encoded = 0
        self.freeze()

    @property
    def image_encoder(self) -> nn.Module:
        return self.conv

    def _encode_input(self, x):
        self.encoded += x.shape[0]
        return self.conv(x), ()

    def _decode_flat(self, embeddings, flat, original_size, input_size, multimask_output):  # not needed here
        raise NotImplementedError


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 20, 24, generator=torch.Generator().manual_seed(seed))


def test_hits_are_bitwise_identical_and_skip_the_encoder():
    backend = CountingSegmenter()
    images = _images(3)
    fresh = backend.encode(images)
    backend.embedding_cache = EmbeddingCache()
    first = backend.encode(images)
    encoded = backend.encoded
    # a batch mixing hits and a miss, in a different order
    mixed = torch.stack([images[2], _images(1, seed=5)[0], images[0]])
    again = backend.encode(mixed)
    assert backend.encoded == encoded + 1  # only the new image went through the encoder
    assert torch.equal(first.features, fresh.features)
    assert torch.equal(again.features[0], fresh.features[2]) and torch.equal(again.features[2], fresh.features[0])
    assert again.original_sizes == ((20, 24),) * 3
    assert backend.embedding_cache.hits == 2 and backend.embedding_cache.misses == 4


def test_keys_separate_pixels_backends_weights_and_preprocessing():
    image = _images(1)[0]
    a = CountingSegmenter()
    keys = {
        image_key(a.cache_namespace(), image),
        image_key(a.cache_namespace(), image + 1e-6),  # one changed value
        image_key(CountingSegmenter(weights_id="w2").cache_namespace(), image),
        image_key(CountingSegmenter(InputTransform(target_size=32, intensity="none")).cache_namespace(), image),
        image_key(a.cache_namespace(), image.double()),
    }
    assert len(keys) == 5
    assert image_key(a.cache_namespace(), image) == image_key(CountingSegmenter().cache_namespace(), image.clone())


def test_memory_is_bounded_by_bytes_with_lru_eviction():
    backend = CountingSegmenter()
    per_image = 8 * 8 * 8 * 4  # (8, 8, 8) float32 embedding
    cache = EmbeddingCache(max_bytes=2 * per_image)
    backend.embedding_cache = cache
    images = _images(3)
    backend.encode(images[0:1])
    backend.encode(images[1:2])
    backend.encode(images[0:1])  # touch image 0, so image 1 is the least recently used
    backend.encode(images[2:3])  # evicts image 1
    assert len(cache) == 2 and cache.nbytes == 2 * per_image
    before = backend.encoded
    backend.encode(images[0:1])
    assert backend.encoded == before
    backend.encode(images[1:2])
    assert backend.encoded == before + 1


def test_disk_cache_survives_a_new_process_state(tmp_path):
    backend = CountingSegmenter()
    images = _images(2)
    backend.embedding_cache = EmbeddingCache(directory=tmp_path)
    stored = backend.encode(images)
    backend.embedding_cache = EmbeddingCache(directory=tmp_path)  # empty memory, same folder
    before = backend.encoded
    loaded = backend.encode(images)
    assert backend.encoded == before
    assert torch.equal(loaded.features, stored.features)
    assert len(list(tmp_path.rglob("*.pt"))) == 2


def test_cache_refuses_an_encoder_that_is_being_trained():
    backend = CountingSegmenter()
    backend.embedding_cache = EmbeddingCache()
    backend.conv.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="trainable parameters"):
        backend.encode(_images(1))
    # encoding with gradients bypasses the cache on purpose
    assert backend.encode(_images(1), requires_grad=True).features.requires_grad
