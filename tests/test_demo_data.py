"""Synthetic demo data: readable by the datalist builders, non-empty masks, seeded, atomic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from samssl.data import dermoscopy_transforms, isic_datalist, msd_datalist, volume_datalist, volume_transforms
from samssl.demo import ensure_demo_data, make_demo_dermoscopy, make_demo_volumes, resolve_dataset_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMALL_VOLUME = (48, 40, 32)


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_demo_dermoscopy_is_isic_readable_and_lesion_like(tmp_path: Path) -> None:
    root = make_demo_dermoscopy(tmp_path / "derm", num_cases=4, size=128, seed=0)
    datalist = isic_datalist(root)
    assert [e["id"] for e in datalist] == [f"ISIC_demo_{i:04d}" for i in range(4)]
    for entry in datalist:
        image, mask = _pixels(entry["image"]), _pixels(entry["label"])
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and mask.shape == (128, 128)
        assert set(np.unique(mask)) == {0, 255}
        assert 0.01 < (mask > 0).mean() < 0.6
        assert image[mask > 0].mean() < image[mask == 0].mean() - 20  # a dark lesion on lighter skin
    sample = dermoscopy_transforms("eval", image_size=64)(datalist[0])
    assert sample["image"].shape == (3, 64, 64) and float(sample["label"].sum()) > 0


def test_demo_dermoscopy_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = isic_datalist(make_demo_dermoscopy(tmp_path / "a", num_cases=3, size=64, seed=7))
    again = isic_datalist(make_demo_dermoscopy(tmp_path / "b", num_cases=2, size=64, seed=7))
    other = isic_datalist(make_demo_dermoscopy(tmp_path / "c", num_cases=2, size=64, seed=8))
    for key in ("image", "label"):
        # case i depends on (seed, i) only, not on how many cases were asked for
        assert all(np.array_equal(_pixels(x[key]), _pixels(y[key])) for x, y in zip(first, again))
    assert not np.array_equal(_pixels(first[0]["label"]), _pixels(other[0]["label"]))


def test_demo_volumes_are_msd_readable_with_spacing(tmp_path: Path) -> None:
    root = make_demo_volumes(tmp_path / "vol", num_cases=2, shape=SMALL_VOLUME, seed=0)
    description = json.loads((root / "dataset.json").read_text())
    assert description["numTraining"] == 2 and description["labels"]["1"]
    datalist = volume_datalist(root)
    assert [e["id"] for e in datalist] == ["demo_000", "demo_001"]
    for entry in datalist:
        image, label = nib.load(entry["image"]), nib.load(entry["label"])
        assert image.shape == SMALL_VOLUME and np.allclose(image.header.get_zooms(), 1.25)
        voxels, mask = image.get_fdata(), np.asarray(label.dataobj)
        assert set(np.unique(mask)) == {0, 1} and 0.01 < mask.mean() < 0.5
        assert voxels[mask > 0].mean() > voxels[mask == 0].mean() + 1.0  # bright blob, z-scored volume
    sample = volume_transforms("labelled", patch_size=(32, 32, 24)).set_random_state(0)(datalist[0])
    assert sample["image"].shape == (1, 32, 32, 24) and sample["label"].shape == (1, 32, 32, 24)


def test_demo_volumes_are_deterministic_per_seed(tmp_path: Path) -> None:
    volumes = [
        msd_datalist(make_demo_volumes(tmp_path / name, num_cases=1, shape=SMALL_VOLUME, seed=seed))[0]
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    arrays = [(nib.load(v["image"]).get_fdata(), np.asarray(nib.load(v["label"]).dataobj)) for v in volumes]
    assert np.array_equal(arrays[0][0], arrays[1][0]) and np.array_equal(arrays[0][1], arrays[1][1])
    assert not np.array_equal(arrays[0][1], arrays[2][1])


def test_generators_reject_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_cases must be >= 1"):
        make_demo_dermoscopy(tmp_path, num_cases=0)
    with pytest.raises(ValueError, match="shape must have 3 dimensions"):
        make_demo_volumes(tmp_path, shape=(8, 8))


def test_ensure_demo_data_is_idempotent_and_ignores_partial_runs(tmp_path: Path) -> None:
    (tmp_path / ".dermoscopy.partial-killed").mkdir()  # what a killed run leaves behind
    stale = tmp_path / ".dermoscopy.partial-old"
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    target = ensure_demo_data("dermoscopy", tmp_path)
    assert target == tmp_path / "dermoscopy" and len(isic_datalist(target)) == 24
    marker = target / "Demo_Input" / "ISIC_demo_0000.jpg"
    stamp = marker.stat().st_mtime_ns
    assert ensure_demo_data("dermoscopy", tmp_path) == target
    assert marker.stat().st_mtime_ns == stamp, "existing demo data must not be regenerated"
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".dermoscopy.partial-"))
    assert leftovers == [".dermoscopy.partial-killed"], "only a recent partial (maybe a running process) is kept"
    with pytest.raises(ValueError, match="unknown demo data kind 'ct'"):
        ensure_demo_data("ct", tmp_path)


def test_resolve_dataset_dir(tmp_path: Path, ph2_root: Path) -> None:
    assert resolve_dataset_dir(str(ph2_root), "dermoscopy", tmp_path) == ph2_root
    assert not (tmp_path / "dermoscopy").exists(), "a given dataset must not trigger demo generation"
    with pytest.raises(FileNotFoundError, match="dataset_dir .*not_here does not exist"):
        resolve_dataset_dir(str(tmp_path / "not_here"), "dermoscopy", tmp_path)
    (tmp_path / "volumes").mkdir()  # pretend it was generated before: must be reused as is
    assert resolve_dataset_dir("", "volumes", tmp_path) == tmp_path / "volumes"
    assert resolve_dataset_dir(None, "volumes", tmp_path) == tmp_path / "volumes"


def test_cli_writes_demo_data(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tools" / "make_demo_data.py"), "--kind", "dermoscopy",
         "--out", str(out), "--num-cases", "2", "--seed", "1"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(isic_datalist(out)) == 2 and "wrote 2 dermoscopy demo cases" in result.stdout
