"""Shared fixtures: locations of the real data sets, skipped with a clear message when absent.

The real data lives outside the repository (``../shared/data`` next to the project root, or the
folder named by ``SAM_SSL_DATA_DIR``); it is never copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests must be quick and reproducible on a 2-core machine. Under pytest-xdist (``-n 2``, as CI
# runs) each worker gets an equal share of the cores: two workers both spinning two OpenMP threads
# on two cores run several times slower than one. Set before torch loads, and inherited by the
# bundle subprocesses the tests start.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
TEST_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the thread settings above)

torch.set_num_threads(TEST_THREADS)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SAM_SSL_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _private_embedding_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the shared SAM embedding cache (``$SAMSSL_CACHE_DIR``) at a fresh folder for each test.

    Bundles cache embeddings in one user-wide folder by default; a test must neither fill the
    user's cache nor find embeddings an earlier test left there (tests count encodes). Bundle
    subprocesses inherit the variable.
    """
    folder = tmp_path_factory.mktemp("embedding_cache")
    monkeypatch.setenv("SAMSSL_CACHE_DIR", str(folder))
    return folder


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SAM_SSL_DATA_DIR to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _require(DATA_ROOT)


@pytest.fixture(scope="session")
def ph2_root() -> Path:
    return _require(DATA_ROOT / "dermoscopy" / "ph2")


@pytest.fixture(scope="session")
def isic_root() -> Path:
    return _require(DATA_ROOT / "dermoscopy" / "isic2017")


@pytest.fixture(scope="session")
def la_root() -> Path:
    """MSD-style LA folder: ``dataset.json`` + ``imagesTr``/``labelsTr``."""
    return _require(DATA_ROOT / "la")


@pytest.fixture(scope="session")
def la_h5_root() -> Path:
    """UA-MT HDF5 layout: ``2018LA_Seg_Training Set/<id>/mri_norm2.h5`` + ``train.list``."""
    return _require(DATA_ROOT / "la" / "h5")
