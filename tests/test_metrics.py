"""Segmentation metrics against hand-computed values, empty-mask conventions, tables and files."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from skimage.segmentation import find_boundaries

from samssl.metrics import EmptyMaskWarning, case_metrics, results_table, summarise, write_results


def _squares(shape, first, second):
    a, b = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    a[first], b[second] = 1, 1
    return a, b


def test_overlap_scores_exact():
    # Two 4x4 squares overlapping on 4x2 pixels in an 8x8 image: TP=8, FP=8, FN=8, TN=40.
    label, pred = _squares((8, 8), np.s_[0:4, 0:4], np.s_[0:4, 2:6])
    m = case_metrics(pred, label)
    assert m["dice"] == pytest.approx(2 * 8 / (16 + 16))
    assert m["iou"] == pytest.approx(8 / 24)
    assert m["sensitivity"] == pytest.approx(8 / 16)
    assert m["specificity"] == pytest.approx(40 / 48)


def test_surface_distances_of_separated_squares_in_voxels_and_mm():
    # 3x3 squares, columns 1-3 and 11-13: from each ring pixel the nearest pixel of the other ring
    # is straight across, at 10, 9, 8 for the far, middle and near columns (3, 2 and 3 pixels).
    label, pred = _squares((5, 15), np.s_[1:4, 1:4], np.s_[1:4, 11:14])
    m = case_metrics(pred, label)
    assert m["asd"] == pytest.approx((3 * 10 + 2 * 9 + 3 * 8) / 8)  # 9
    assert m["hd95"] == pytest.approx(10.0)  # 95th percentile of [8,8,8,9,9,10,10,10]
    assert m["dice"] == 0 and m["sensitivity"] == 0

    wide_columns = case_metrics(pred, label, spacing=(1.0, 2.0))
    assert wide_columns["asd"] == pytest.approx(18.0) and wide_columns["hd95"] == pytest.approx(20.0)
    tall_rows = case_metrics(pred, label, spacing=(2.0, 1.0))  # the offset is along columns only
    assert tall_rows["asd"] == pytest.approx(9.0) and tall_rows["hd95"] == pytest.approx(10.0)


def test_surface_distances_of_separated_cubes_3d():
    # 3x3x3 cubes 10 apart along the last axis: 9 face voxels at 10, 8 ring voxels at 9, 9 at 8.
    label, pred = _squares((5, 5, 16), np.s_[1:4, 1:4, 1:4], np.s_[1:4, 1:4, 11:14])
    m = case_metrics(pred[None], label[None], spacing=(1.0, 1.0, 2.5))
    assert m["asd"] == pytest.approx(2.5 * (9 * 10 + 8 * 9 + 9 * 8) / 26)
    assert m["hd95"] == pytest.approx(2.5 * 10)
    assert case_metrics(pred, label)["asd"] == pytest.approx(9.0)


def test_hd95_asd_of_overlapping_shapes_match_brute_force():
    label, pred = _squares((24, 24), np.s_[4:14, 4:16], np.s_[6:19, 3:12])
    edges_pred = np.argwhere(find_boundaries(pred, mode="inner"))
    edges_label = np.argwhere(find_boundaries(label, mode="inner"))
    for spacing in (None, (0.7, 1.9)):
        scale = 1.0 if spacing is None else np.asarray(spacing)
        d = cdist(edges_pred * scale, edges_label * scale)
        forward, backward = d.min(axis=1), d.min(axis=0)
        m = case_metrics(pred, label, spacing=spacing)
        assert m["hd95"] == pytest.approx(max(np.percentile(forward, 95), np.percentile(backward, 95)), rel=1e-5)
        assert m["asd"] == pytest.approx(np.concatenate([forward, backward]).mean(), rel=1e-5)


def test_empty_masks():
    empty = np.zeros((8, 8), np.uint8)
    square = empty.copy()
    square[2:5, 2:5] = 1

    with pytest.warns(EmptyMaskWarning, match="prediction and label"):
        both = case_metrics(empty, empty)
    assert both["dice"] == 1.0 and both["iou"] == 1.0 and both["specificity"] == 1.0
    assert math.isnan(both["sensitivity"]) and math.isnan(both["hd95"]) and math.isnan(both["asd"])

    with pytest.warns(EmptyMaskWarning, match="empty prediction"):
        missed = case_metrics(empty, square)
    assert missed["dice"] == 0.0 and missed["sensitivity"] == 0.0 and math.isnan(missed["hd95"])

    with pytest.warns(EmptyMaskWarning, match="empty label"):
        false_alarm = case_metrics(square, empty)
    assert false_alarm["dice"] == 0.0 and math.isnan(false_alarm["asd"])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overlap metrics alone need no warning
        assert case_metrics(empty, empty, metrics=("dice", "iou")) == {"dice": 1.0, "iou": 1.0}


def test_input_forms_agree_and_bad_inputs_fail():
    label, pred = _squares((12, 12), np.s_[2:8, 2:8], np.s_[3:9, 2:10])
    reference = case_metrics(pred, label)
    assert case_metrics(torch.from_numpy(pred)[None], torch.from_numpy(label)[None].bool()) == pytest.approx(reference)
    assert list(case_metrics(pred, label, metrics=("hd95", "dice"))) == ["hd95", "dice"]

    with pytest.raises(ValueError, match="binary"):
        case_metrics(pred * 255, label)
    with pytest.raises(ValueError, match="shapes differ"):
        case_metrics(pred[:10], label)
    with pytest.raises(ValueError, match="unknown metric"):
        case_metrics(pred, label, metrics=("dice", "hd100"))
    with pytest.raises(ValueError, match="one binary case"):
        case_metrics(np.zeros((2, 1, 12, 12)), label)  # a batch of two is not one case


def test_summarise_ignores_nan_and_non_numeric_fields():
    records = [
        {"case": "a", "dice": 0.8, "hd95": 2.0},
        {"case": "b", "dice": 0.6, "hd95": float("nan")},
        {"case": "c", "dice": 1.0, "hd95": 4.0},
    ]
    summary = summarise(records)
    assert set(summary) == {"dice", "hd95"}
    assert summary["dice"] == pytest.approx((0.8, np.std([0.8, 0.6, 1.0])))
    assert summary["hd95"] == pytest.approx((3.0, 1.0))
    nothing = summarise([{"asd": float("nan")}])["asd"]
    assert math.isnan(nothing[0]) and math.isnan(nothing[1])


def test_results_table_format():
    rows = {
        "UNet (sup.)": [{"dice": 0.8, "hd95": 2.0}, {"dice": 0.9, "hd95": 4.0}],
        "Ours": [{"dice": 0.9012, "hd95": float("nan")}],
    }
    table = results_table(rows, metrics=("dice", "hd95", "asd"), distance_unit="mm")
    assert table == (
        "| Method | Dice (%) | HD95 (mm) | ASD (mm) |\n"
        "|---|:---:|:---:|:---:|\n"
        "| UNet (sup.) | 85.00 ± 5.00 | 3.00 ± 1.00 | n/a |\n"
        "| Ours | 90.12 ± 0.00 | n/a | n/a |\n"
    )


def test_write_results_json_and_markdown(tmp_path):
    label, pred = _squares((8, 8), np.s_[0:4, 0:4], np.s_[0:4, 2:6])
    empty = np.zeros((8, 8), np.uint8)
    with pytest.warns(EmptyMaskWarning):
        rows = {"Method A": [{"case": "c1", **case_metrics(pred, label)}, {"case": "c2", **case_metrics(empty, empty)}]}
    json_path, md_path = write_results(tmp_path / "results" / "la_test", rows)
    assert json_path.name == "la_test.json" and md_path.name == "la_test.md"

    content = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    method = content["Method A"]
    assert [case["case"] for case in method["cases"]] == ["c1", "c2"]
    assert method["cases"][1]["hd95"] is None
    assert method["summary"]["dice"]["mean"] == pytest.approx(0.75)
    assert method["summary"]["hd95"]["mean"] == pytest.approx(rows["Method A"][0]["hd95"])
    assert md_path.read_text() == results_table(rows)


def test_binary_dice_of_masks_in_either_form():
    from samssl.metrics import binary_dice

    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), np.uint8)
    b[1:3] = 2  # any nonzero label is foreground
    assert binary_dice(a, b) == pytest.approx(0.5)
    assert binary_dice(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(0.5)
    assert binary_dice(np.zeros(3), np.zeros(3)) == 1.0 and binary_dice(a, np.zeros_like(a)) == 0.0
