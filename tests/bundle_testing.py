"""Helpers for the bundles' tests: one bundle's ``scripts`` at a time, the bundle CLI, real-data subsets.

Every bundle keeps its local code in a top-level ``scripts`` package (the model-zoo convention,
which MONAI Label relies on), so two bundles' ``scripts`` cannot live in ``sys.modules`` together.
A test module calls :func:`use_bundle` before it imports from ``scripts`` and again, through the
:func:`bundle_fixture` autouse fixture, before each of its tests: the bundle's modules are swapped
in (and the other bundle's swapped out and kept), so classes imported at collection time stay the
very classes the bundle's configs instantiate later.

:func:`run_bundle` runs ``python -m monai.bundle`` in a subprocess, as a user would;
:func:`ph2_subset` and :func:`la_subset` give a few real cases in a temporary folder (never in the
project); :func:`untrained_weights` writes a ``model.pt`` of a bundle's deployed network.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"

_parked: dict[str, dict[str, ModuleType]] = {}  # bundle name -> its ``scripts*`` modules while inactive


def _owner(module: ModuleType) -> str | None:
    """The bundle folder a loaded ``scripts`` module comes from (None for anything else)."""
    path = Path(getattr(module, "__file__", "") or "").resolve()
    try:
        return path.relative_to(BUNDLES).parts[0]
    except ValueError:
        return None


def use_bundle(name: str) -> Path:
    """Make ``bundles/<name>/scripts`` the importable ``scripts`` package; returns the bundle folder."""
    bundle = BUNDLES / name
    if not (bundle / "scripts" / "__init__.py").is_file():
        raise FileNotFoundError(f"no bundle scripts package at {bundle / 'scripts'}")
    loaded = {key: mod for key, mod in sys.modules.items() if key == "scripts" or key.startswith("scripts.")}
    if loaded.get("scripts") is not None and _owner(loaded["scripts"]) == name:
        return bundle
    for key, module in loaded.items():
        del sys.modules[key]
        owner = _owner(module)
        if owner is not None:
            _parked.setdefault(owner, {})[key] = module
    sys.modules.update(_parked.pop(name, {}))
    bundle_paths = {str(p) for p in BUNDLES.iterdir()}
    sys.path[:] = [p for p in sys.path if p not in bundle_paths]
    sys.path.insert(0, str(bundle))
    importlib.invalidate_caches()
    return bundle


def bundle_fixture(name: str):
    """An autouse fixture for a test module that works with bundle ``name``'s scripts."""

    @pytest.fixture(autouse=True)
    def _active_bundle_scripts():
        use_bundle(name)
        yield

    return _active_bundle_scripts


def run_bundle(
    bundle: Path, command: str, configs: list[str], *args: str, cwd: Path = ROOT, verb: str = "run", threads: int | None = None
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <verb> <command>`` on ``bundle``'s ``configs`` merged in order; fails the test on error."""
    config = "[" + ",".join(f"'{bundle / 'configs' / c}'" for c in configs) + "]"
    threads = threads or torch.get_num_threads()  # the test process's share of the cores (see conftest)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", verb, command, "--config_file", config, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"bundle {command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def ph2_subset(ph2_root: Path, dest: Path, count: int) -> Path:
    """A PH2-layout folder holding the first ``count`` real cases (copied to ``dest``, never committed)."""
    import samssl.data as data

    return data.ph2_subset(ph2_root, dest, count)


def la_subset(la_root: Path, dest: Path, count: int) -> Path:
    """An MSD-layout folder (``dataset.json``) listing the first ``count`` real LA cases by id, in place."""
    import samssl.data as data

    return data.msd_subset(la_root, dest, count, name="LA subset")


def untrained_weights(name: str, path: Path, inference_config: Path | None = None, key: str | None = "model") -> Path:
    """Save the randomly initialised (seed 0) weights of bundle ``name``'s deployed network ``network_def``.

    For tests of what happens around a trained model (packaging, serving) without training one.
    ``key`` nests the state dict as the bundles' ``model.pt`` does (None: a plain state dict).
    ``inference_config`` is read merged onto its ``base_inference.json``, as the bundle CLI reads it.
    """
    import torch
    from monai.bundle import ConfigParser

    from samssl.utils.bundles import config_with_base

    use_bundle(name)
    parser = ConfigParser()
    parser.read_config([str(p) for p in config_with_base(inference_config or BUNDLES / name / "configs" / "inference.json")])
    torch.manual_seed(0)
    state = parser.get_parsed_content("network_def").state_dict()
    torch.save({key: state} if key else state, path)
    return path
