"""LiteMedSAM teacher on real dermoscopy images: GT-box Dice, cache exactness, batching.

Ground-truth boxes are used here on purpose: they give the ceiling of what any box prompt can
get from the teacher (the methods themselves prompt from student predictions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samssl.foundation import EmbeddingCache, build_foundation_model

NUM_PH2, NUM_ISIC = 8, 6


def _load_pair(image_path: Path, mask_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(np.array(Image.open(image_path).convert("RGB"))).permute(2, 0, 1)[None].float()
    mask = torch.from_numpy(np.asarray(Image.open(mask_path).convert("L")) > 127)
    return image, mask


def _gt_box(mask: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([[cols.min(), rows.min(), cols.max(), rows.max()]], dtype=torch.float32)


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()).clamp_min(1))


@pytest.fixture(scope="module")
def teacher():
    return build_foundation_model("litemedsam")


@pytest.fixture(scope="module")
def dermoscopy_pairs(ph2_root: Path, isic_root: Path) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    pairs = []
    for path in sorted((ph2_root / "images").glob("*.jpg"))[:NUM_PH2]:
        pairs.append(("ph2", *_load_pair(path, ph2_root / "masks" / f"{path.stem}_lesion.png")))
    isic = [p for p in sorted((isic_root / "ISIC2017_Task1_Input").glob("*.jpg")) if max(Image.open(p).size) <= 1024]
    for path in isic[:NUM_ISIC]:
        mask_path = isic_root / "ISIC2017_Task1_GroundTruth" / f"{path.stem}_segmentation.png"
        pairs.append(("isic", *_load_pair(path, mask_path)))
    return pairs


def test_ground_truth_box_dice_on_real_images(teacher, dermoscopy_pairs):
    scores: dict[str, list[float]] = {"ph2": [], "isic": []}
    for source, image, mask in dermoscopy_pairs:
        out = teacher.decode(teacher.encode(image), boxes=_gt_box(mask))
        assert out.mask_logits.shape == (1, 1, *mask.shape)  # back in the caller's image space
        scores[source].append(_dice(out.mask_logits[0, 0] > 0, mask))
    ph2, isic = float(np.mean(scores["ph2"])), float(np.mean(scores["isic"]))
    print(f"\nLiteMedSAM GT-box Dice: PH2 {ph2:.3f} (n={len(scores['ph2'])}), "
          f"ISIC 2017 {isic:.3f} (n={len(scores['isic'])})")
    assert ph2 > 0.85 and isic > 0.75


def test_cached_embeddings_give_identical_logits(teacher, dermoscopy_pairs, tmp_path):
    """The float16 folder serves one rounding of the embedding, every time, and it is close to the exact one."""
    _, image, mask = dermoscopy_pairs[0]
    box = _gt_box(mask)
    exact = teacher.encode(image)
    fresh = teacher.decode(exact, boxes=box).mask_logits
    try:  # (a memory-only cache is bit-exact: tests/test_teachers_cache.py)
        teacher.embedding_cache = EmbeddingCache(max_bytes=64 << 20, directory=tmp_path)
        first = teacher.encode(image)  # miss: encoded, stored in float16, served as its round trip
        second = teacher.encode(image)  # hit from memory
        teacher.embedding_cache.clear()
        third = teacher.encode(image)  # hit from disk
        assert teacher.embedding_cache.hits == 2 and teacher.embedding_cache.misses == 1
        assert third.features.dtype == exact.features.dtype
        cosine = torch.nn.functional.cosine_similarity(third.features.flatten(), exact.features.flatten(), dim=0)
        assert float(cosine) > 0.99999 and float((third.features - exact.features).abs().max()) < 5e-3
        logits = [teacher.decode(embeddings, boxes=box).mask_logits for embeddings in (first, second, third)]
        assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
        assert float(((logits[2] > 0) == (fresh > 0)).float().mean()) > 0.999
    finally:
        teacher.embedding_cache = None


def test_several_images_with_several_prompts_in_one_batch(teacher):
    """The stock SAM decoder fails for B > 1 images with N > 1 prompts each; ours must not."""
    images = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    boxes = torch.tensor([[[10, 10, 60, 60], [40, 20, 120, 90], [0, 0, 127, 95]],
                          [[5, 5, 30, 40], [50, 30, 100, 80], [20, 10, 90, 70]]], dtype=torch.float32)
    embeddings = teacher.encode(images)
    out = teacher.decode(embeddings, boxes=boxes, multimask_output=True)
    assert out.mask_logits.shape == (2, 3, 96, 128)
    assert out.iou_scores.shape == (2, 3)
    assert out.all_mask_logits.shape == (2, 3, 3, 96, 128)
    single = teacher.decode(embeddings[1:2], boxes=boxes[1:2, 2:3], multimask_output=True)
    torch.testing.assert_close(out.mask_logits[1, 2], single.mask_logits[0, 0], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def small_embeddings(teacher):
    return teacher.encode(torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1)))


def test_decode_is_differentiable_with_respect_to_dense_prompts(teacher, small_embeddings):
    embeddings = small_embeddings
    dense = torch.zeros(1, 256, 64, 64, requires_grad=True)
    out = teacher.decode(embeddings, boxes=torch.tensor([[8.0, 8.0, 50.0, 50.0]]), dense_prompt=dense)
    out.mask_logits.sum().backward()
    assert dense.grad is not None and dense.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher itself stays frozen


def test_decoding_without_a_box_warns(teacher, small_embeddings):
    embeddings = small_embeddings
    teacher._warned_no_box = False
    with pytest.warns(UserWarning, match="box prompts only"):
        teacher.decode(embeddings, points=torch.tensor([[[16.0, 16.0]]]), point_labels=torch.tensor([[1]]))
