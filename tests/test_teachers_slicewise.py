"""Slice-wise LiteMedSAM on a real LA MRI volume, prompted with per-slice boxes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from samssl.foundation import (
    InputTransform,
    PromptableSegmenter,
    SegmenterOutput,
    SliceWiseSegmenter,
    build_foundation_model,
    slice_prompts,
    slices_to_volume,
    volume_to_slices,
)

NUM_SLICES = 12


def test_volume_slicing_round_trips_for_every_axis():
    volume = torch.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    for axis, count in ((0, 3), (1, 4), (-1, 5)):
        slices = volume_to_slices(volume, axis)
        assert slices.shape[0] == count and slices.shape[1] == 2
        assert torch.equal(slices_to_volume(slices, axis), volume)


class BoxPainter(PromptableSegmenter):
    """A stand-in 2D teacher that answers each box prompt with that box, filled."""

    name = "box_painter"

    def __init__(self) -> None:
        super().__init__(InputTransform(target_size=16))
        self.stem = nn.Conv2d(3, 1, 1)
        self.freeze()

    @property
    def image_encoder(self) -> nn.Module:
        return self.stem

    def _encode_input(self, x):
        self.encoded = getattr(self, "encoded", 0) + x.shape[0]
        return self.stem(x), ()

    def _decode_flat(self, embeddings, flat, original_size, input_size, multimask_output):
        boxes = flat.boxes.view(flat.batch_size, flat.num_prompts, 4)
        height, width = embeddings.original_sizes[0]
        rows, cols = torch.arange(height)[:, None], torch.arange(width)[None]
        x0, y0, x1, y1 = boxes[:, 0].T[..., None, None]
        inside = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
        logits = torch.where(inside, 10.0, -10.0)[:, None]
        return SegmenterOutput(mask_logits=logits, iou_scores=torch.ones(len(boxes), 1), low_res_logits=logits)


def test_segment_from_probability_prompts_only_slices_with_foreground():
    probability = torch.zeros(1, 20, 16, 6)
    probability[0, 3:9, 4:12, 1:4] = 0.9
    segmenter = SliceWiseSegmenter(BoxPainter(), axis=-1, batch_size=2)
    logits, prompts = segmenter.segment_from_probability(torch.rand(1, 20, 16, 6), probability)
    assert prompts.valid[:, 0].tolist() == [False, True, True, True, False, False]
    assert segmenter.backend.encoded == 3  # empty slices are never encoded
    assert torch.equal(logits > 0, probability > 0.5)


@pytest.fixture(scope="module")
def la_case(la_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    entry = json.loads((la_root / "dataset.json").read_text())["training"][0]
    image = np.asarray(nib.load(la_root / entry["image"]).dataobj, dtype=np.float32)
    label = np.asarray(nib.load(la_root / entry["label"]).dataobj) > 0.5
    return torch.from_numpy(image)[None], torch.from_numpy(label)[None]


def test_slicewise_litemedsam_with_per_slice_boxes_on_la(la_case):
    image, label = la_case
    # Boxes from the label on purpose: the ceiling of any slice-wise box prompt (a method
    # prompts from its student's probabilities with the same function).
    prompts = slice_prompts(label.float(), axis=-1, kind="box", largest_component=False)
    with_object = torch.nonzero(prompts.valid[:, 0]).flatten()
    chosen = with_object[torch.linspace(0, len(with_object) - 1, NUM_SLICES).round().long()].tolist()

    segmenter = SliceWiseSegmenter(build_foundation_model("litemedsam"), axis=-1, batch_size=4)
    logits = segmenter.segment(image, prompts, slices=chosen)

    assert logits.shape == (1, *image.shape[1:])
    untouched = [z for z in range(image.shape[-1]) if z not in chosen]
    assert (logits[..., untouched] < 0).all()  # slices not asked for stay background
    pred, truth = logits[..., chosen] > 0, label[..., chosen]
    dice = float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    print(f"\nslice-wise LiteMedSAM, per-slice boxes, LA case 0, {NUM_SLICES} slices: Dice {dice:.3f}")
    assert dice > 0.7
