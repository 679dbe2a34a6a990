"""Prompt generation from probability / uncertainty maps, and proof that labels cannot enter."""

from __future__ import annotations

import inspect

import pytest
import torch

from samssl.foundation import prompts as prompt_module
from samssl.foundation.prompts import (
    binary_entropy,
    box_prompts,
    point_prompts,
    prompts_from_probability,
    slice_prompts,
)

LABEL_LIKE = ("label", "gt", "truth", "target", "annotation", "seg", "mask", "y_true")


def _blobs() -> torch.Tensor:
    """A probability map with a large and a small confident blob (B=1, 2D)."""
    p = torch.full((1, 1, 40, 50), 0.05)
    p[0, 0, 10:30, 5:25] = 0.95  # large blob: rows 10-29, cols 5-24
    p[0, 0, 2:5, 40:44] = 0.9  # small blob
    return p


def test_public_prompt_functions_take_no_label_argument():
    functions = [f for name, f in inspect.getmembers(prompt_module, inspect.isfunction)
                 if f.__module__ == prompt_module.__name__ and not name.startswith("_")]
    assert {"box_prompts", "point_prompts", "prompts_from_probability", "slice_prompts"} <= {f.__name__ for f in functions}
    for function in functions:
        for parameter in inspect.signature(function).parameters:
            if parameter == "kwargs":  # slice_prompts forwards to prompts_from_probability
                continue
            assert not any(word in parameter.lower() for word in LABEL_LIKE), (function.__name__, parameter)
    with pytest.raises(TypeError):
        prompts_from_probability(_blobs(), label=_blobs() > 0.5)  # type: ignore[call-arg]


def test_box_covers_the_largest_confident_component_in_xy_order():
    boxes, valid = box_prompts(_blobs())
    assert valid.tolist() == [True]
    assert boxes.tolist() == [[5.0, 10.0, 24.0, 29.0]]
    both, _ = box_prompts(_blobs(), largest_component=False)
    assert both.tolist() == [[5.0, 2.0, 43.0, 29.0]]


def test_box_margin_jitter_and_empty_maps():
    boxes, _ = box_prompts(_blobs(), margin=3)
    assert boxes.tolist() == [[2.0, 7.0, 27.0, 32.0]]
    jitter_a, _ = box_prompts(_blobs(), jitter=0.1, generator=torch.Generator().manual_seed(0))
    jitter_b, _ = box_prompts(_blobs(), jitter=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(jitter_a, jitter_b) and not torch.equal(jitter_a, box_prompts(_blobs())[0])
    assert (jitter_a - torch.tensor([[5.0, 10.0, 24.0, 29.0]])).abs().max() <= 2.0 + 1e-6  # 10% of a 20-px side
    empty, valid = box_prompts(torch.zeros(1, 1, 8, 6))
    assert valid.tolist() == [False] and empty.tolist() == [[0.0, 0.0, 5.0, 7.0]]


def test_uncertainty_restricts_the_confident_region():
    probability = _blobs()
    uncertainty = torch.zeros_like(probability)
    uncertainty[0, 0, 10:30, 15:25] = 0.9  # right half of the large blob is uncertain
    boxes, _ = box_prompts(probability, uncertainty, max_uncertainty=0.5)
    assert boxes.tolist() == [[5.0, 10.0, 14.0, 29.0]]


def test_points_come_from_low_uncertainty_parts_of_each_region():
    probability = _blobs()
    uncertainty = binary_entropy(probability)
    uncertainty[0, 0, 10:30, 5:15] = 0.99  # left half of the blob is uncertain
    points, labels = point_prompts(probability, uncertainty, num_positive=5, num_negative=3,
                                   max_uncertainty=0.5, generator=torch.Generator().manual_seed(0))
    assert points.shape == (1, 8, 2) and labels.tolist() == [[1] * 5 + [0] * 3]
    for (x, y), label in zip(points[0].long().tolist(), labels[0].tolist()):
        assert (probability[0, 0, y, x] >= 0.5) == (label == 1)  # (x, y) order
        assert uncertainty[0, 0, y, x] <= 0.5


def test_points_are_padded_when_a_region_is_too_small():
    probability = torch.zeros(1, 1, 10, 10)
    probability[0, 0, 4, 4] = 1.0
    points, labels = point_prompts(probability, num_positive=3, num_negative=2, uncertainty_quantile=1.0)
    assert labels.tolist() == [[1, 0, 0, -1, -1]]
    assert points[0, 0].tolist() == [4.0, 4.0]


def test_three_dimensional_prompts_use_voxel_index_order():
    probability = torch.zeros(1, 1, 12, 10, 8)
    probability[0, 0, 2:6, 3:9, 1:4] = 0.9
    boxes, valid = box_prompts(probability)
    assert valid.all() and boxes.tolist() == [[2.0, 3.0, 1.0, 5.0, 8.0, 3.0]]
    points, labels = point_prompts(probability, num_positive=2, num_negative=0, uncertainty_quantile=1.0)
    d, h, w = points[0, 0].long().tolist()
    assert labels.tolist() == [[1, 1]] and probability[0, 0, d, h, w] > 0.5


def test_slice_prompts_give_one_row_per_slice_with_validity():
    volume = torch.zeros(1, 16, 12, 5)
    volume[0, 4:10, 2:8, 1:3] = 0.9
    prompts = slice_prompts(volume, axis=-1, kind="box+points", num_positive=1, num_negative=1)
    assert prompts.boxes.shape == (5, 1, 4) and prompts.points.shape == (5, 1, 2, 2)
    assert prompts.valid[:, 0].tolist() == [False, True, True, False, False]
    assert prompts.boxes[1, 0].tolist() == [2.0, 4.0, 7.0, 9.0]  # slice rows = axis 0, columns = axis 1
