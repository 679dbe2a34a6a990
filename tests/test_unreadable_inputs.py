"""Damaged input files: training refuses them all up front, inference skips them and lists them at the end.

Everything here runs on a few tiny files written in ``tmp_path``; the one inference run uses the
UAMT bundle's deployed network, untrained, at 64 px on three 32 px images.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from bundle_testing import BUNDLES, ROOT, untrained_weights, use_bundle  # same directory, on sys.path under pytest
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.transforms import LoadImaged
from PIL import Image

from samssl.data import SkipFailedCases, TolerantDataset, check_readable, find_unreadable
from samssl.utils.bundles import config_with_base
from samssl.utils.errors import InvalidInputError, find_input_error

RNG = np.random.default_rng(0)


def _image(path: Path, size: tuple[int, int] = (24, 32)) -> Path:
    Image.fromarray(RNG.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _truncated_copy(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _volume(path: Path) -> Path:
    nib.save(nib.Nifti1Image(RNG.random((12, 10, 8)).astype(np.float32), np.eye(4)), str(path))
    return path


def _damaged_and_good_files(folder: Path) -> tuple[list[dict], set[str], set[str]]:
    """Entries naming good files and one of each kind of damage; returns (entries, bad paths, good paths)."""
    good = [_image(folder / "good.jpg"), _image(folder / "good.png"), _image(folder / "good.bmp"),
            _volume(folder / "good.nii.gz"), _volume(folder / "good.nii")]
    with h5py.File(folder / "good.h5", "w") as f:
        f["image"], f["label"] = np.zeros((6, 6, 6), np.float32), np.zeros((6, 6, 6), np.uint8)
    good.append(folder / "good.h5")
    with h5py.File(folder / "no_label.h5", "w") as f:
        f["image"] = np.zeros((6, 6, 6), np.float32)
    (folder / "random.jpg").write_bytes(RNG.bytes(2000))
    (folder / "empty.png").write_bytes(b"")
    bad = [folder / "random.jpg", folder / "empty.png", folder / "no_label.h5", folder / "missing.png",
           _truncated_copy(folder / "good.jpg", folder / "truncated.jpg"),
           _truncated_copy(folder / "good.png", folder / "truncated.png"),
           _truncated_copy(folder / "good.nii.gz", folder / "truncated.nii.gz"),
           _truncated_copy(folder / "good.nii", folder / "truncated.nii"),
           _truncated_copy(folder / "good.h5", folder / "truncated.h5")]
    entries = [{"image": str(p), "label": str(p), "id": p.name} for p in good + bad]
    return entries, {str(p) for p in bad}, {str(p) for p in good}


def test_training_check_lists_every_unreadable_file(tmp_path):
    entries, bad, good = _damaged_and_good_files(tmp_path)
    split = {"labelled": entries[:6], "unlabelled": [{"image": e["image"], "id": e["id"]} for e in entries[6:]]}
    found = find_unreadable(split, entries[6:])  # a split and a list; a file named twice is read once
    assert {u.path for u in found} == bad
    assert [u.path for u in found if u.path.endswith("no_label.h5")] == [str(tmp_path / "no_label.h5")]
    assert "no dataset 'label'" in next(u.reason for u in found if u.path.endswith("no_label.h5"))
    with pytest.raises(InvalidInputError) as error:
        check_readable(split, entries[6:])
    message = str(error.value)
    assert message.startswith(f"{len(bad)} file(s) of the training data cannot be read")
    assert all(path in message for path in bad) and not any(f"{path} (" in message for path in good)
    check_readable({"labelled": entries[:6]})  # only good files: nothing raised


def test_a_volume_whose_gzip_trailer_disagrees_is_read_before_it_is_refused(tmp_path):
    """Two gzip members (as some tools write): the trailer holds the last member's size only."""
    source = _volume(tmp_path / "whole.nii.gz")
    raw = gzip.decompress(source.read_bytes())
    two_members = tmp_path / "two_members.nii.gz"
    two_members.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    assert find_unreadable([{"image": str(two_members)}]) == []


def test_every_training_config_checks_the_files_before_it_builds_anything():
    for bundle in sorted(p for p in BUNDLES.iterdir() if (p / "configs" / "train.json").is_file()):
        for name in ("train.json", "multi_gpu_train.json"):
            steps = json.loads((bundle / "configs" / name).read_text()).get("training")
            if steps is None:  # inherits train.json's steps
                continue
            check = "$samssl.data.check_readable(@datalist, @val_datalist)"
            assert check in steps, f"{bundle.name}/{name}"
            builders = [i for i, s in enumerate(steps) if "trainer.run()" in s or "run_stages(" in s]
            assert steps.index(check) < min(builders), f"{bundle.name}/{name}: {steps}"


def test_uamt_training_refuses_a_folder_with_damaged_files_before_training(tmp_path):
    use_bundle("uamt_skin")
    data = tmp_path / "ph2"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(6):
        _image(data / "images" / f"IMD00{i}.jpg")
        Image.fromarray(np.zeros((24, 32), np.uint8)).save(data / "masks" / f"IMD00{i}_lesion.png")
    (data / "images" / "IMD001.jpg").write_bytes(RNG.bytes(1000))
    (data / "masks" / "IMD003_lesion.png").write_bytes(b"")
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "uamt_skin" / "configs" / "train.json"))
    parser.update({"dataset_dir": str(data), "output_dir": str(tmp_path / "run"), "num_labelled": 6})
    step = parser["training"].index("$samssl.data.check_readable(@datalist, @val_datalist)")
    with pytest.raises(RuntimeError) as error:  # MONAI wraps what a config expression raises
        parser.get_parsed_content(f"training#{step}")
    message = str(find_input_error(error.value))
    assert "2 file(s)" in message and "IMD001.jpg" in message and "IMD003_lesion.png" in message


def test_tolerant_dataset_skips_what_it_cannot_load_and_keeps_the_list(tmp_path):
    files = [_image(tmp_path / "a.png"), tmp_path / "b.png", _image(tmp_path / "c.png")]
    files[1].write_bytes(RNG.bytes(300))
    dataset = TolerantDataset([{"image": str(f)} for f in files], LoadImaged("image", image_only=True))
    cases = SkipFailedCases(DataLoader(dataset, batch_size=1), what="input images")
    loaded = [batch["image"].meta["filename_or_obj"][0] for batch in cases]
    assert loaded == [str(files[0]), str(files[2])]
    assert len(cases.failures) == 1 and cases.failures[0].startswith(f"{files[1]} (")
    with pytest.raises(InvalidInputError, match=r"^1 of 3 input images could not be read and were skipped; "
                                                r"the other 2 were processed: .*b\.png"):
        cases.raise_failures()


def test_inference_processes_every_readable_image_then_fails_with_the_list(tmp_path):
    use_bundle("uamt_skin")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("img0.png", "img2.png"):
        _image(inputs / name, (32, 32))
    (inputs / "img1.jpg").write_bytes(RNG.bytes(500))  # comes between the two in the folder's order
    weights = untrained_weights("uamt_skin", tmp_path / "model.pt")
    parser = ConfigParser()
    parser.read_config([str(p) for p in config_with_base(BUNDLES / "uamt_skin" / "configs" / "inference.json")])
    parser.update({"input": str(inputs), "output_dir": str(tmp_path / "out"), "checkpoint": str(weights),
                   "image_size": 64, "output_stride": 32})
    with pytest.raises(RuntimeError) as error:
        parser.get_parsed_content("inferring")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0_seg.png", "img2_seg.png"]
    message = str(find_input_error(error.value))
    assert message.startswith("1 of 3 input images could not be read and were skipped; the other 2 were processed")
    assert str(inputs / "img1.jpg") in message


def test_both_inference_bases_skip_and_report_failed_cases():
    for family in ("2d", "3d"):
        config = json.loads((BUNDLES / "_base" / family / "inference.json").read_text())
        assert config["dataset"]["_target_"] == "samssl.data.TolerantDataset"
        assert config["evaluator"]["val_data_loader"] == "@cases" and config["cases"]["loader"] == "@dataloader"
        assert config["inferring"][-2:] == ["$@evaluator.run()", "$@cases.raise_failures()"]


def test_an_error_while_pool_threads_are_busy_exits_with_status_1_not_an_abort(tmp_path):
    """MONAI's CacheDataset fills its cache with a thread pool: when one case fails, the others are still
    in torch's C++ code as Python exits, which used to abort the process (exit 134) after the message."""
    script = tmp_path / "busy_pool.py"
    script.write_text(textwrap.dedent("""
        import time
        from multiprocessing.pool import ThreadPool
        import torch
        from samssl.utils.errors import InvalidInputError, install_concise_errors

        install_concise_errors()
        def work(i):
            if i == 0:
                time.sleep(0.3)
                raise InvalidInputError("case 0 is damaged")
            x = torch.rand(300, 300)
            for _ in range(300):
                x = torch.tanh(x @ x)
        with ThreadPool(2) as pool:
            list(pool.imap(work, [0, 1]))
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "error: case 0 is damaged"
