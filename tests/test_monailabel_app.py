"""The MONAI Label app (``apps/monailabel``) on a real server, driven over HTTP as a viewer would.

One server is started with ``monailabel start_server`` on 127.0.0.1 over a temporary datastore of
real PH2 images and LA volumes (some labelled, some not) and copies of the bundles, each with an
untrained ``model.pt`` so that every bundle is served from the start. A short ``/train`` of a 2D
and a 3D bundle must write a new model, which ``/infer`` then uses on an unlabelled study: the
mask comes back lossless (PNG in 2D, equal to the bundle's own inference; NIfTI in 3D), has the
input's size (and affine) and overlaps the ground truth the training never saw.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bundle_testing import BUNDLES, ROOT, untrained_weights, use_bundle
from monai.bundle import ConfigParser
from PIL import Image

import samssl.data as data
from samssl.utils.bundles import config_with_base

pytest.importorskip("monailabel", reason="the MONAI Label extra is not installed (pip install -e '.[label]')")
requests = pytest.importorskip("requests")

pytestmark = pytest.mark.slow

APP = ROOT / "apps" / "monailabel"
SERVED = ("samkd_dualtask_skin", "semisam_la", "uamt_skin")
# Faster, still real: coarser grids for the short runs on 2 CPU cores (inference uses the same).
FAST_2D = {"image_size": 128, "output_stride": 32}
FAST_3D = {"target_spacing": 2.5, "patch_size": [32, 32, 32]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    prediction, truth = prediction > 0, truth > 0
    return 2.0 * float((prediction & truth).sum()) / max(1, int(prediction.sum() + truth.sum()))


def _bundle_copies(dest: Path) -> Path:
    for name in SERVED:
        copy = dest / name
        shutil.copytree(BUNDLES / name, copy, ignore=shutil.ignore_patterns("runs", "models", "predictions", "__pycache__"))
        (copy / "models").mkdir()
        inference = copy / "configs" / "inference.json"
        config = json.loads(inference.read_text())
        config.update({k: v for k, v in {**FAST_2D, **FAST_3D}.items() if k in config})
        inference.write_text(json.dumps(config, indent=1))
        untrained_weights(name, copy / "models" / "model.pt", inference_config=inference)
    return dest


def _datastore(data_root: Path, dest: Path) -> tuple[Path, dict[str, Path]]:
    """4 labelled + 2 unlabelled PH2 images, 3 labelled + 1 unlabelled LA volumes; ground truth of the unlabelled ones."""
    labels = dest / "labels" / "final"
    labels.mkdir(parents=True)
    truth: dict[str, Path] = {}
    for i, entry in enumerate(data.ph2_datalist(data_root / "dermoscopy" / "ph2")[:6]):
        shutil.copy(entry["image"], dest)
        if i < 4:
            shutil.copy(entry["label"], labels / f"{entry['id']}.png")
        else:
            truth[entry["id"]] = Path(entry["label"])
    for i, entry in enumerate(sorted(data.msd_datalist(data_root / "la"), key=lambda e: e["id"])[:4]):
        shutil.copy(entry["image"], dest / f"{entry['id']}.nii.gz")
        if i < 3:
            shutil.copy(entry["label"], labels / f"{entry['id']}.nii.gz")
        else:
            truth[entry["id"]] = Path(entry["label"])
    return dest, truth


@pytest.fixture(scope="module")
def server(data_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("monailabel")
    bundles = _bundle_copies(work / "bundles")
    studies, truth = _datastore(data_root, work / "studies")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT), MONAI_LABEL_SESSION_PATH=str(work / "sessions"))
    log = open(work / "server.log", "w")
    # The README's command (--host 127.0.0.1 included), plus the test's own bundles folder and port.
    process = subprocess.Popen(
        [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP), "--studies", str(studies),
         "--conf", "models", "all", "--conf", "bundles_dir", str(bundles), "--host", "127.0.0.1", "--port", str(port)],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if requests.get(f"{url}/info/", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MONAI Label server did not start:\n{(work / 'server.log').read_text()[-4000:]}")
            time.sleep(2)
        yield {"url": url, "bundles": bundles, "studies": studies, "truth": truth, "log": work / "server.log"}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_info_lists_every_bundle_for_inference_and_training(server):
    info = requests.get(f"{server['url']}/info/", timeout=30).json()
    assert set(SERVED) <= set(info["models"]) and set(SERVED) <= set(info["trainers"])
    assert info["models"]["uamt_skin"]["dimension"] == 2 and info["models"]["semisam_la"]["dimension"] == 3
    assert info["models"]["semisam_la"]["labels"] == {"left atrium": 1}


def _train(server: dict, name: str, overrides: dict) -> Path:
    model = server["bundles"] / name / "models" / "model.pt"
    before = model.stat().st_mtime_ns
    request = {"max_epochs": 2, "val_split": 0, "bundle_overrides": {"num_workers": 0, **overrides}}
    response = requests.post(f"{server['url']}/train/{name}?run_sync=true", json=request, timeout=1200)
    assert response.ok, f"{response.status_code}: {response.text[:500]}\n{server['log'].read_text()[-4000:]}"
    assert model.stat().st_mtime_ns > before, "training did not write a new model.pt"
    runs = sorted((server["bundles"] / name / "runs").glob("monailabel_*"))
    assert runs and list((runs[-1] / "checkpoints").glob("*.pt"))
    split = server["log"].read_text()
    assert f"{name}: " in split and " unlabelled" in split
    return model


def _infer_request(server: dict, name: str, study: str, params: dict) -> requests.Response:
    return requests.post(f"{server['url']}/infer/{name}", params={"image": study, "output": "image"},
                         files={"params": (None, json.dumps(params))}, timeout=600)


def _infer(server: dict, name: str, study: str, params: dict) -> tuple[bytes, str]:
    """The returned mask file's bytes and its name (its extension is the format the server wrote)."""
    response = _infer_request(server, name, study, params)
    assert response.ok, f"{response.status_code}: {response.text[:500]}\n{server['log'].read_text()[-4000:]}"
    filename = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    assert filename, f"no file name in {dict(response.headers)}"
    return response.content, filename.group(1)


def _direct_inference(bundle: Path, image: Path, out: Path) -> np.ndarray:
    """The bundle's own ``inferring`` (what ``monai.bundle run inferring`` does) on ``image`` with the
    served ``model.pt``, in this process (seconds, no server): the mask it writes, 0/255 PNG."""
    use_bundle(bundle.name)  # the copy's scripts are the same code; bundle_root points at the copy
    parser = ConfigParser()
    parser.read_config([str(p) for p in config_with_base(bundle / "configs" / "inference.json")])
    parser.update({"bundle_root": str(bundle), "input": str(image), "output_dir": str(out)})
    parser.get_parsed_content("inferring")
    return np.asarray(Image.open(out / f"{image.stem}_seg.png"))


def test_train_then_infer_a_dermoscopy_image(server, tmp_path):
    """The mask of a JPEG study comes back as a PNG (lossless; MONAI Label's default would be the
    input's JPEG, whose compression put 2s into a binary mask), 0/1, and is the very mask the bundle's
    own inference writes (0/255) with the same model on the same image."""
    _train(server, "uamt_skin", {"epoch_length": 6, "batch_size": 2, "unlabelled_batch_size": 2, "checkpoint_interval": 4,
                                 **FAST_2D})
    study = sorted(k for k in server["truth"] if k.startswith("IMD"))[0]
    image = next(server["studies"].glob(f"{study}.*"))
    assert image.suffix.lower() == ".jpg"  # the case the default format used to lose
    content, filename = _infer(server, "uamt_skin", study, {})
    assert filename.endswith(".png") and content.startswith(b"\x89PNG\r\n\x1a\n"), filename
    (tmp_path / "mask.png").write_bytes(content)
    served = Image.open(tmp_path / "mask.png")
    assert served.format == "PNG" and served.mode == "L"
    mask = np.asarray(served)
    truth = np.asarray(Image.open(server["truth"][study]))
    assert mask.shape == truth.shape[:2]
    assert set(np.unique(mask)) <= {0, 1} and 0 < (mask > 0).mean() < 0.9
    direct = _direct_inference(server["bundles"] / "uamt_skin", image, tmp_path / "direct")
    assert set(np.unique(direct)) <= {0, 255}
    np.testing.assert_array_equal(mask, direct // 255)
    dice = _dice(mask, truth)
    print(f"uamt_skin via MONAI Label on unlabelled {study}: Dice {dice:.3f}")
    assert dice > 0.1


def test_a_lossy_mask_format_is_refused_with_the_reason(server):
    study = sorted(k for k in server["truth"] if k.startswith("IMD"))[0]
    response = _infer_request(server, "uamt_skin", study, {"result_extension": ".jpg"})
    assert response.status_code == 400 and "lossy" in response.json()["detail"], response.text[:500]


def test_train_then_infer_an_la_volume(server, tmp_path):
    _train(server, "semisam_la", {"num_iterations": 4, "epoch_length": 2, "checkpoint_interval": 2, **FAST_3D})
    study = next(k for k in server["truth"] if not k.startswith("IMD"))
    content, filename = _infer(server, "semisam_la", study, {})
    assert filename.endswith(".nii.gz") and content.startswith(b"\x1f\x8b"), filename  # NIfTI, gzipped
    (tmp_path / "mask.nii.gz").write_bytes(content)
    mask, source = nib.load(tmp_path / "mask.nii.gz"), nib.load(server["studies"] / f"{study}.nii.gz")
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    values = np.asarray(mask.dataobj)
    assert set(np.unique(values)) <= {0, 1} and 0 < (values > 0).mean() < 0.9
    dice = _dice(values, np.asarray(nib.load(server["truth"][study]).dataobj))
    print(f"semisam_la via MONAI Label on unlabelled {study}: Dice {dice:.3f}")
    assert dice > 0.0
