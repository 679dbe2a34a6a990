"""SavePredictiond: predictions written on the input file's own grid and naming, items unchanged."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from samssl.data import SavePredictiond, dermoscopy_transforms, isic_datalist, msd_datalist, volume_transforms


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _predict_the_label(item: dict) -> dict:
    """A perfect 'prediction' on the working grid: the preprocessed label as a class map."""
    return {**item, "pred": item["label"].clone().round()}


def test_isic_prediction_comes_back_at_full_size_with_the_challenge_naming(isic_root, tmp_path):
    entry = isic_datalist(isic_root)[0]
    preprocessing = dermoscopy_transforms("eval", image_size=64)
    item = _predict_the_label(preprocessing(entry))
    assert item["pred"].shape[-2:] == (64, 64)

    saver = SavePredictiond(preprocessing, str(tmp_path), "png", output_postfix="segmentation")
    out = saver(item)
    assert out is item and out["pred"].shape[-2:] == (64, 64)  # scored on the working grid, untouched

    name = Path(entry["image"]).name.rsplit(".", 1)[0]
    written = tmp_path / f"{name}_segmentation.png"
    assert [p.name for p in tmp_path.iterdir()] == [written.name]
    assert saver.output_path(entry["image"]) == written  # the path callers record (e.g. pseudo-label lists)
    mask = np.asarray(Image.open(written))
    truth = np.asarray(Image.open(entry["label"]))
    assert mask.shape == truth.shape[:2] and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert _dice(mask, truth) > 0.9  # nearest-neighbour back from 64 px: the outline moves a little


def test_la_prediction_is_a_nifti_with_the_input_affine_and_grid(la_root, tmp_path):
    entry = sorted(msd_datalist(la_root), key=lambda e: e["id"])[0]
    preprocessing = volume_transforms("eval", target_spacing=1.25)
    item = _predict_the_label(preprocessing(entry))
    SavePredictiond(preprocessing, str(tmp_path), "nifti", output_postfix="seg")(item)

    written = list(tmp_path.glob("*_seg.nii.gz"))
    assert len(written) == 1 and written[0].name.startswith(Path(entry["image"]).name.split(".")[0])
    saved, source = nib.load(written[0]), nib.load(entry["label"])
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-4)
    assert _dice(np.asarray(saved.dataobj), np.asarray(source.dataobj)) > 0.9


def test_without_an_output_dir_nothing_is_written_and_nothing_is_needed(tmp_path):
    item = {"pred": torch.zeros(1, 4, 4)}
    assert SavePredictiond(None, None)(item) is item
    with pytest.raises(ValueError, match="file_format"):
        SavePredictiond(None, str(tmp_path), "jpeg")
    with pytest.raises(ValueError, match="preprocessing"):
        SavePredictiond(None, str(tmp_path), "png")
