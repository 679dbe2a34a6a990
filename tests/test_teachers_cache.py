"""Embedding cache: exact hits, keys that separate what must be separated, bounded memory, and the
shared folder on disk (location, size bound, concurrent writers, vanished entries, float16, counts)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from samssl.foundation import EmbeddingCache, InputTransform, PromptableSegmenter
from samssl.foundation.base import ImageEmbeddings
from samssl.foundation.cache import image_key
from samssl.foundation.cache_store import (
    CACHE_DIR_ENV,
    CACHE_MAX_BYTES_ENV,
    DiskStore,
    default_cache_dir,
    parse_bytes,
    resolve_cache_dir,
)
from samssl.handlers import PrecomputeEmbeddings, log_embedding_cache
from samssl.utils.errors import InvalidInputError


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


# ---------------------------------------------------------------------- the shared folder on disk
def _entry_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.pt"))


def test_default_folder_environment_and_config_override(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "samssl" / "embeddings"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "samssl" / "embeddings"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    # config: null is the shared default, a path wins over the variable, false or "" turns the disk off
    assert EmbeddingCache.from_settings(directory=None).directory == tmp_path / "env"
    assert EmbeddingCache.from_settings(directory=str(tmp_path / "mine")).directory == tmp_path / "mine"
    assert EmbeddingCache.from_settings(directory=False).directory is None
    assert EmbeddingCache.from_settings(directory="").directory is None
    assert EmbeddingCache().directory is None  # the class itself stays memory-only unless given a folder
    with pytest.raises(InvalidInputError, match="false"):
        resolve_cache_dir(3)
    assert parse_bytes("512MiB") == 512 << 20 and parse_bytes("4G") == 4 << 30 and parse_bytes(123) == 123
    monkeypatch.setenv(CACHE_MAX_BYTES_ENV, "2G")
    assert EmbeddingCache.from_settings(directory=None).disk.max_bytes == 2 << 30
    with pytest.raises(InvalidInputError):
        parse_bytes("lots")


def test_folder_is_bounded_and_evicts_the_least_recently_used(tmp_path):
    backend = CountingSegmenter()
    images = _images(4)
    probe = EmbeddingCache(directory=tmp_path / "probe")
    backend.embedding_cache = probe
    backend.encode(images[:1])
    entry_bytes = _entry_files(tmp_path / "probe")[0].stat().st_size
    # no memory part: every read goes to the folder
    cache = EmbeddingCache(max_bytes=0, directory=tmp_path / "c", disk_max_bytes=int(3.5 * entry_bytes))
    backend.embedding_cache = cache
    keys = [image_key(backend.cache_namespace(), image) for image in images]
    for t, i in enumerate(range(3)):
        backend.encode(images[i:i + 1])
        os.utime(cache.disk.path(keys[i]), (1000 + t, 1000 + t))  # written long ago, in this order
    assert cache.disk._writes_since_scan == 2  # measured at the first write only, not at every write
    backend.encode(images[0:1])  # a hit touches entry 0: entry 1 is now the least recently used
    assert cache.disk_hits == 1
    backend.encode(images[3:4])  # over the bound: entry 1 goes
    assert [key in cache for key in keys] == [True, False, True, True]
    assert cache.disk.usage() <= 3.5 * entry_bytes and cache.disk.evicted == 1


def _write_many(folder: str, key: str, value: float, rounds: int) -> None:
    store = DiskStore(folder)
    item = ImageEmbeddings(features=torch.full((1, 8, 16, 16), value), high_res_features=(),
                           original_sizes=((20, 24),), input_sizes=((32, 32),))
    for _ in range(rounds):
        store.path(key).unlink(missing_ok=True)  # write again and again, racing the other writer
        store.put(key, item)


def test_two_processes_writing_one_key_leave_one_whole_entry(tmp_path):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method (cheap child processes)")
    context = multiprocessing.get_context("fork")
    key = "ab" + "0" * 62
    writers = [context.Process(target=_write_many, args=(str(tmp_path), key, value, 40)) for value in (1.0, 2.0)]
    for writer in writers:
        writer.start()
    reader = DiskStore(tmp_path)
    seen = set()
    while any(w.is_alive() for w in writers):
        item = reader.get(key)  # absent (just unlinked) or one writer's whole entry, never an error
        if item is not None:
            values = item.features.unique().tolist()
            assert values in ([1.0], [2.0])
            seen.add(values[0])
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert _entry_files(tmp_path) == [reader.path(key)]
    assert not list(tmp_path.rglob("*.partial"))
    assert reader.get(key).features.unique().tolist() in ([1.0], [2.0])


def test_a_vanished_or_unreadable_entry_is_a_miss(tmp_path, caplog):
    backend = CountingSegmenter()
    images = _images(1)
    backend.embedding_cache = EmbeddingCache(max_bytes=0, directory=tmp_path)
    stored = backend.encode(images)
    path = _entry_files(tmp_path)[0]
    path.unlink()  # evicted by another process
    assert backend.embedding_cache.get(image_key(backend.cache_namespace(), images[0])) is None
    path.write_bytes(b"not a torch file")
    before = backend.encoded
    again = backend.encode(images)
    assert backend.encoded == before + 1 and torch.equal(again.features, stored.features)
    assert "cannot be read" in caplog.text
    assert torch.equal(backend.embedding_cache.get(image_key(backend.cache_namespace(), images[0])).features,
                       stored.features)  # written again, whole


def test_entries_are_float16_on_disk_and_float32_when_read(tmp_path):
    backend = CountingSegmenter()
    images = _images(2)
    exact = backend.encode(images)  # no cache
    backend.embedding_cache = EmbeddingCache(directory=tmp_path)
    first = backend.encode(images)
    payload = torch.load(_entry_files(tmp_path)[0], weights_only=True)
    assert payload["features"].dtype == torch.float16
    backend.embedding_cache = EmbeddingCache(directory=tmp_path)  # read back from disk
    read = backend.encode(images)
    assert read.features.dtype == exact.features.dtype == torch.float32
    assert torch.equal(read.features, first.features)  # a fresh encode and a read give the same values
    torch.testing.assert_close(read.features, exact.features, rtol=1e-3, atol=1e-3)
    # an entry an earlier version wrote (float32, no dtype field) still loads, rounded like a new one
    key = image_key(backend.cache_namespace(), images[0])
    old = {"features": exact.features[:1], "high_res_features": [], "original_sizes": [[20, 24]],
           "input_sizes": [[32, 32]]}
    torch.save(old, backend.embedding_cache.disk.path(key))
    backend.embedding_cache = EmbeddingCache(directory=tmp_path)
    assert torch.equal(backend.encode(images[:1]).features, first.features[:1])


def test_counts_show_that_a_second_run_encodes_nothing(tmp_path, caplog):
    backend = CountingSegmenter()
    items = [{"sam_image": image} for image in _images(3)]
    backend.embedding_cache = EmbeddingCache.from_settings(directory=tmp_path)
    with caplog.at_level(logging.INFO):
        PrecomputeEmbeddings([items], segmenter=backend, progress=False)()
    assert "embedding cache: 3 encoded, 0 reused" in caplog.text
    backend.embedding_cache = EmbeddingCache.from_settings(directory=tmp_path)  # a second run, same folder
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert PrecomputeEmbeddings([items], segmenter=backend, progress=False)() == 0
        backend.encode(torch.stack([item["sam_image"] for item in items]))  # the training reads them
        line = log_embedding_cache(backend)
    assert "embedding cache: 0 encoded, 3 reused (" in caplog.text
    assert line == f"embedding cache: 0 encoded, 3 reused (3 from disk; {tmp_path}, 0 MiB)"
    assert log_embedding_cache(None) is None
