"""Random-init SAM ViT-B, SAM2.1 Hiera-T and SAM-Med3D: real architectures, right shapes.

No weights for these models exist on the test machines; the checks are about wiring: input
preprocessing, prompt mapping, decoder batching, output geometry. One encoder pass per model
keeps the file fast (SAM ViT-B at 1024 costs about 11 s on two CPU threads).
"""

from __future__ import annotations

import pytest
import torch

from samssl.foundation import VARIANT_NAMES, ImageEmbeddings, build_foundation_model


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_registry_knows_every_backend_and_demands_checkpoints():
    assert {"litemedsam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "sam2_hiera_t", "sam2.1_hiera_l", "medsam2",
            "sam_med3d"} <= set(VARIANT_NAMES)
    with pytest.raises(ValueError, match="unknown teacher"):
        build_foundation_model("sam3")
    with pytest.raises(ValueError, match="needs a local checkpoint"):
        build_foundation_model("sam_vit_b")


def test_sam_vit_b_random_init_shapes():
    teacher = build_foundation_model("sam_vit_b", random_init=True)
    images = _rand(1, 3, 120, 160) * 255
    embeddings = teacher.encode(images)
    assert embeddings.features.shape == (1, 256, 64, 64)
    assert embeddings.input_sizes == ((768, 1024),)  # longest side to 1024, aspect kept
    boxes = torch.tensor([[[10.0, 20.0, 80.0, 100.0], [0.0, 0.0, 159.0, 119.0]]])
    points = torch.tensor([[[[40.0, 50.0], [5.0, 5.0]], [[60.0, 60.0], [0.0, 0.0]]]])
    labels = torch.tensor([[[1, 0], [1, -1]]])
    out = teacher.decode(embeddings, boxes=boxes, points=points, point_labels=labels,
                         mask_prompt=torch.zeros(1, 2, 120, 160), multimask_output=True)
    assert out.mask_logits.shape == (1, 2, 120, 160)
    assert out.all_mask_logits.shape == (1, 2, 3, 120, 160)
    assert out.low_res_logits.shape == (1, 2, 256, 256)
    # two images with two prompts each: the stock SAM decoder cannot batch this, we must
    pair = ImageEmbeddings.cat([embeddings, embeddings])
    both = teacher.decode(pair, boxes=boxes.expand(2, 2, 4), multimask_output=False)
    alone = teacher.decode(embeddings, boxes=boxes, multimask_output=False)
    assert both.mask_logits.shape == (2, 2, 120, 160)
    torch.testing.assert_close(both.mask_logits[1], alone.mask_logits[0])


def test_sam2_1_image_prediction_matches_sam2_image_predictor():
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    teacher = build_foundation_model("sam2.1_hiera_t", random_init=True)
    image = (_rand(1, 3, 90, 70) * 255).round()
    image[0, :, 0, 0], image[0, :, -1, -1] = 0, 255  # full range: min-max scaling == sam2's /255
    embeddings = teacher.encode(image)
    assert embeddings.features.shape == (1, 256, 64, 64)
    assert [level.shape[1:] for level in embeddings.high_res_features] == [(32, 256, 256), (64, 128, 128)]
    box = torch.tensor([5.0, 5.0, 60.0, 80.0])
    out = teacher.decode(embeddings, boxes=box.expand(1, 3, 4), multimask_output=True)
    assert out.mask_logits.shape == (1, 3, 90, 70) and out.iou_scores.shape == (1, 3)
    assert out.all_mask_logits.shape == (1, 3, 3, 90, 70)
    assert out.extras["object_score_logits"].shape == (1, 3, 1)

    predictor = SAM2ImagePredictor(teacher.model)
    predictor.set_image(image[0].permute(1, 2, 0).numpy().astype("uint8"))
    masks, scores, _ = predictor.predict(box=box.numpy(), multimask_output=True, return_logits=True)
    torch.testing.assert_close(out.all_iou_scores[0, 0], torch.from_numpy(scores), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(out.all_mask_logits[0, 0], torch.from_numpy(masks), atol=2e-2, rtol=1e-2)


def test_sam2_1_propagates_mask_prompts_through_a_16_frame_volume():
    # 256 px input instead of 1024 keeps this CPU test to seconds; the wiring is the same
    teacher = build_foundation_model("sam2.1_hiera_t", random_init=True, image_size=256)
    frames = _rand(16, 1, 48, 40)
    mask = torch.zeros(48, 40)
    mask[10:30, 8:25] = 1
    logits, visited = teacher.propagate(frames, mask_prompts={5: mask, 11: mask})
    assert logits.shape == (16, 48, 40) and torch.isfinite(logits).all()
    assert visited.all()  # forward from frame 5 to the end, backward from 5 to 0
    _, visited_forward = teacher.propagate(frames[:5], mask_prompts={2: mask}, direction="forward")
    assert visited_forward.tolist() == [False, False, True, True, True]
    with pytest.raises(ValueError, match="outside"):
        teacher.propagate(frames, mask_prompts={16: mask})


def test_sam_med3d_random_init_one_forward():
    teacher = build_foundation_model("sam_med3d", random_init=True)
    volume = _rand(1, 1, 64, 80, 48)
    embeddings = teacher.encode(volume)
    assert embeddings.features.shape == (1, 384, 8, 8, 8)
    assert embeddings.input_sizes == ((102, 128, 77),)
    points = torch.tensor([[[[30.0, 40.0, 20.0], [5.0, 5.0, 5.0]]]])  # (d, h, w) voxel indices
    out = teacher.decode(embeddings, points=points, point_labels=torch.tensor([[[1, 0]]]),
                         mask_prompt=torch.zeros(1, 1, 64, 80, 48))
    assert out.mask_logits.shape == (1, 1, 64, 80, 48)
    assert out.low_res_logits.shape == (1, 1, 32, 32, 32)
    with pytest.raises(ValueError, match="not boxes"):
        teacher.decode(embeddings, boxes=torch.zeros(1, 6))
