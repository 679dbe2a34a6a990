"""Model-zoo readiness of every bundle: metadata against the zoo schema (offline), network in/out
shapes against the metadata, and a packaged zip that ``monai.bundle download`` unpacks into a fresh
folder where ``inference.json`` runs on a real image with no reference to this repository.

Every folder under ``bundles/`` with a ``configs/metadata.json`` is tested: a new bundle joins by existing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_testing import BUNDLES, untrained_weights
from monai.apps.utils import HashCheckError
from monai.bundle import ConfigParser, download, download_large_files
from PIL import Image
from tool_loading import load_tool  # same directory, on sys.path under pytest

import samssl.data as data
from samssl.utils.bundles import merged_config

zoo = load_tool("package_bundle")

BUNDLE_NAMES = zoo.bundle_names()


def test_every_bundle_folder_is_found():
    assert {"uamt_skin", "samkd_dualtask_skin", "semisam_la"} <= set(BUNDLE_NAMES)


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_metadata_passes_the_shipped_zoo_schema(name):
    zoo.verify_metadata(BUNDLES / name)


def test_schema_check_names_the_missing_or_wrong_field(tmp_path):
    meta = json.loads((BUNDLES / "uamt_skin" / "configs" / "metadata.json").read_text())
    (tmp_path / "configs").mkdir()
    broken = dict(meta)
    del broken["network_data_format"]
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        zoo.verify_metadata(tmp_path)
    broken = json.loads(json.dumps(meta))
    broken["network_data_format"]["inputs"]["image"]["num_channels"] = "three"
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="num_channels|integer"):
        zoo.verify_metadata(tmp_path)
    broken = dict(meta, optional_packages_version={})  # MONAI would replace the pins with {}
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="'optional_packages_version'.*deprecated.*'required_packages_version'"):
        zoo.verify_metadata(tmp_path)
    broken = dict(meta, schema="https://example.org/meta_schema_21000101.json")
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="meta_schema_21000101.json"):
        zoo.verify_metadata(tmp_path)


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_network_input_and_output_shapes_match_the_metadata(name):
    zoo.verify_network_shapes(BUNDLES / name)


def test_a_metadata_shape_the_network_does_not_produce_is_reported(tmp_path):
    bundle = tmp_path / "samkd_dualtask_skin"
    shutil.copytree(BUNDLES / "samkd_dualtask_skin", bundle, ignore=shutil.ignore_patterns("runs", "models", "__pycache__"))
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] = [128, 128]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"declares output \[1, 2, 128, 128\].*gives \[1, 2, 256, 256\]"):
        zoo.verify_network_shapes(bundle)


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_flattened_configs_stand_alone(name, tmp_path):
    """What the zip holds: each config whole (its part merged onto the family base), the files instead of links."""
    bundle = tmp_path / "bundles" / name  # the links kept as links, resolving into a copy of the shared bases
    shutil.copytree(BUNDLES / name, bundle, ignore=shutil.ignore_patterns("runs", "models", "__pycache__"), symlinks=True)
    shutil.copytree(BUNDLES / "_base", tmp_path / "bundles" / "_base")
    assert (bundle / "configs" / "logging.conf").is_symlink()
    zoo.flatten_configs(bundle)
    configs = bundle / "configs"
    assert not [p for p in bundle.rglob("*") if p.is_symlink()] and not list(configs.glob("base_*"))
    assert (configs / "logging.conf").read_text() == (BUNDLES / name / "configs" / "logging.conf").read_text()
    for kind in ("evaluate", "inference"):
        whole = json.loads((configs / f"{kind}.json").read_text())
        assert whole == merged_config(BUNDLES / name / "configs" / f"{kind}.json") and "_comment_base" not in whole
        assert merged_config(configs / f"{kind}.json") == whole  # nothing left to merge it onto


def test_flattening_refuses_a_config_that_reads_another_file(tmp_path):
    bundle = tmp_path / "uamt_skin"
    shutil.copytree(BUNDLES / "uamt_skin", bundle, ignore=shutil.ignore_patterns("runs", "models", "__pycache__"))
    (bundle / "configs" / "cpu.json").write_text(json.dumps({"network_def": "%../other/configs/inference.json#network_def"}))
    with pytest.raises(ValueError, match=r"cpu\.json reads other config files"):
        zoo.flatten_configs(bundle)


def _fresh_env() -> dict[str, str]:
    """A user's shell: the project installed by pip, the repository itself not on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, OMP_NUM_THREADS="2")


def _real_input(meta: dict, data_root: Path) -> tuple[Path, tuple[int, ...]]:
    """A real image the bundle's data kind takes (2D dermoscopy jpg or 3D NIfTI), and its spatial size."""
    dims = len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"])
    if dims == 2:
        image = sorted((data_root / "dermoscopy" / "ph2" / "images").glob("*.jpg"))[0]
        with Image.open(image) as im:
            return image, (im.height, im.width)
    volume = sorted((data_root / "la" / "imagesTr").glob("*.nii*"))[0]
    return volume, nib.load(volume).shape[:3]


def _real_labelled(meta: dict, data_root: Path, dest: Path) -> tuple[Path, int]:
    """A labelled folder of real cases of the bundle's data kind (2 PH2 images or 1 LA volume), and its size."""
    if len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"]) == 2:
        return data.ph2_subset(data_root / "dermoscopy" / "ph2", dest, 2), 2
    return data.msd_subset(data_root / "la", dest, 1, name="LA subset"), 1


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_packaged_bundle_downloads_into_a_fresh_folder_and_infers_on_real_data(name, data_root, tmp_path):
    meta = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
    # the model records the (CPU-preset) settings it was trained with: the packaged bundle uses them
    # with no preset and no flag, in its inference.json and in the TorchScript file's embedded config
    volumes = len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"]) == 3
    settings = {"target_spacing": 1.25, "patch_size": [64, 64, 48]} if volumes else {"image_size": 128}
    checkpoint = untrained_weights(name, tmp_path / "model.pt")
    stored = torch.load(checkpoint, weights_only=True)
    torch.save({**stored, "trained_settings": {"settings": settings, "configs": ["train.json", "cpu.json"]}}, checkpoint)
    archive = zoo.package_bundle(name, checkpoint, tmp_path / "dist")
    assert archive.name == f"{name}_v{meta['version']}.zip"
    with zipfile.ZipFile(archive) as zf:
        members = zf.namelist()
    assert all(m.startswith(f"{name}/") for m in members)
    for required in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "docs/README.md", "LICENSE",
                     "models/model.pt", "models/model.ts", "large_files.yml", "scripts/__init__.py"):
        assert f"{name}/{required}" in members, required
    assert not any("/runs/" in m or m.startswith(f"{name}/samssl/") or m.endswith(".pyc") for m in members)
    # flattened: no shared base travels, each config is whole (checked below), logging.conf is the file itself
    configs = [Path(m) for m in members if Path(m).parent == Path(name, "configs")]
    assert Path(name, "configs", "logging.conf") in configs and not any(c.name.startswith("base_") for c in configs)

    # `monai.bundle download` from the zip's URL, then the weights' sha256 check of large_files.yml
    # (the functions behind `python -m monai.bundle download` / `download_large_files`, in-process)
    zoo_dir = tmp_path / "model_zoo"
    env = _fresh_env()
    download(name=name, url=archive.as_uri(), bundle_dir=str(zoo_dir))
    bundle = zoo_dir / name
    assert not [p for p in bundle.rglob("*") if p.is_symlink()]
    shared_logging = BUNDLES / name / "configs" / "logging.conf"
    assert (bundle / "configs" / "logging.conf").read_text() == shared_logging.read_text()
    for kind in ("evaluate", "inference"):  # the bundle's part merged onto its family base: the whole config
        zoo_config = json.loads((bundle / "configs" / f"{kind}.json").read_text())
        assert zoo_config == merged_config(BUNDLES / name / "configs" / f"{kind}.json") and "run" in zoo_config
    zoo.verify_metadata(bundle)  # the zoo schema shipped in tools/zoo, on the downloaded copy
    download_large_files(bundle_path=str(bundle))  # every weight file matches its sha256
    original = (bundle / "models" / "model.ts").read_bytes()
    (bundle / "models" / "model.ts").write_bytes(b"tampered")
    with pytest.raises(HashCheckError, match=r"hash check of existing file failed.*model\.ts"):  # ... and a changed one is caught
        download_large_files(bundle_path=str(bundle))
    (bundle / "models" / "model.ts").write_bytes(original)
    assert zoo.file_sha256(bundle / "models" / "model.pt") == zoo.file_sha256(checkpoint)

    # the TorchScript export is the deployed network with the bundle's metadata embedded
    extra = {"metadata.json": "", "inference.json": "", "trained_settings.json": ""}
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == meta["version"]
    exported = json.loads(extra["trained_settings.json"])
    assert {k: exported[k] for k in settings} == settings
    embedded = json.loads(extra["inference.json"])
    assert all(embedded[k] == v for k, v in settings.items())
    zoo_inference = ConfigParser()
    zoo_inference.read_config(str(bundle / "configs" / "inference.json"))
    zoo_inference["checkpoint"] = str(bundle / "models" / "model.pt")
    assert all(zoo_inference.get_parsed_content(k) == v for k, v in settings.items())

    image, size = _real_input(meta, data_root)
    run = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                          "--input", str(image)], cwd=bundle, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    written = [p for p in (bundle / "predictions").rglob("*") if p.is_file()]
    assert len(written) == 1 and written[0].name.startswith(image.name.split(".")[0])
    if written[0].suffix == ".png":
        with Image.open(written[0]) as mask:
            assert (mask.height, mask.width) == size
            assert set(np.unique(np.asarray(mask))) <= {0, 255}
    else:
        assert nib.load(written[0]).shape[:3] == size
    assert scripted is not None

    # evaluate.json, flattened too, scores real labelled cases in the same folder
    labelled, count = _real_labelled(meta, data_root, tmp_path / "labelled")
    run = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", "configs/evaluate.json",
                          "--dataset_dir", str(labelled), "--num_workers", "0"],
                         cwd=bundle, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert json.loads((bundle / "eval" / "test_metrics.json").read_text())["num_cases"] == count


def test_packaging_refuses_a_checkpoint_of_another_bundle(tmp_path):
    checkpoint = untrained_weights("samkd_dualtask_skin", tmp_path / "samkd.pt", key=None)
    with pytest.raises(RuntimeError, match=r"samkd\.pt|model\.pt"):
        zoo.package_bundle("uamt_skin", checkpoint, tmp_path / "dist")
    assert not list((tmp_path / "dist").glob("*.zip"))


def test_packaging_a_missing_checkpoint_or_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        zoo.package_bundle("uamt_skin", tmp_path / "missing.pt", tmp_path / "dist")
    with pytest.raises(FileNotFoundError, match="bundles here: .*uamt_skin"):
        zoo.package_bundle("no_such_bundle", tmp_path / "missing.pt", tmp_path / "dist")
