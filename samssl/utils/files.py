"""Atomic file writes and file fingerprints: the one home for both.

A training run is killed at any moment (a time limit, Ctrl-C, a preempted node); a file half
written at that moment must never be read back as a finished one. Every writer here writes a
sibling temporary file in the same folder (same filesystem, so the rename is atomic), flushes it
to disk and renames it over the target: a reader sees the old file or the new one, never a part.
Temporary names carry the process and thread ids, so several processes or threads writing the
same target (ranks of a multi-process run, runs sharing the embedding cache) never write into each
other's temporary file; the last rename wins and every reader sees one whole file.

Fingerprints (SHA-256 of a file's bytes, or of a JSON-able description) are how caches and stages
know that their inputs are the ones they were computed from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_save", "atomic_write_json", "atomic_write_text", "file_sha256",
           "fingerprint", "fsync_folder"]


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (a rename) to disk where the OS allows it (not on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(str(folder), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; renamed onto ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        yield partial
        with contextlib.suppress(OSError):  # flush the data before the rename makes it visible
            fd = os.open(str(partial), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(partial, path)
        fsync_folder(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as partial:
        partial.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> Path:
    """``save(temporary_path)`` (e.g. ``lambda p: torch.save(obj, p)``), then the atomic rename."""
    with atomic_path(path) as partial:
        save(partial)
    return Path(path)


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (weights can be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(description: Any) -> str:
    """Hex SHA-256 of a JSON-able description (keys sorted, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()
