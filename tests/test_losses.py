"""Segmentation, consistency and distillation losses against their formulas, 2D and 3D."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from samssl.losses import (
    KnowledgeDistillationLoss,
    MaskedConsistencyLoss,
    SoftDiceCELoss,
    dice_ce_loss,
    masked_mean,
    softmax_kl_loss,
    softmax_mse_loss,
)

SHAPES = {"2d": (2, 2, 6, 5), "3d": (2, 2, 4, 5, 3)}


@pytest.fixture(params=list(SHAPES))
def shape(request) -> tuple[int, ...]:
    return SHAPES[request.param]


def _logits(shape, seed, requires_grad=False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(shape, generator=generator, dtype=torch.double)).requires_grad_(requires_grad)


# ---------------------------------------------------------------- segmentation
def test_dice_ce_loss_defaults_and_overrides(shape):
    loss = dice_ce_loss()
    assert loss.dice.to_onehot_y and loss.dice.softmax
    logits = _logits(shape, 0)
    label = (torch.rand(shape[:1] + (1,) + shape[2:]) > 0.5).double()
    reference = DiceCELoss(to_onehot_y=True, softmax=True)(logits, label)
    torch.testing.assert_close(loss(logits, label), reference)
    assert dice_ce_loss(lambda_dice=0.0)(logits, label) < reference


def test_soft_dice_ce_with_one_hot_targets_equals_hard_label_dice_ce(shape):
    logits = _logits(shape, 1)
    label = (torch.rand(shape[:1] + (1,) + shape[2:], generator=torch.Generator().manual_seed(1)) > 0.5).double()
    one_hot = torch.cat([1 - label, label], dim=1)
    hard = dice_ce_loss()(logits, label)
    torch.testing.assert_close(SoftDiceCELoss()(logits, one_hot), hard)
    # a one-channel map is the foreground probability, not a class index
    torch.testing.assert_close(SoftDiceCELoss()(logits, label), hard)


def test_soft_dice_ce_cross_entropy_part_uses_the_probabilities(shape):
    logits = _logits(shape, 2)
    foreground = torch.rand(shape[:1] + (1,) + shape[2:], generator=torch.Generator().manual_seed(2)).double()
    target = torch.cat([1 - foreground, foreground], dim=1)
    expected_ce = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(SoftDiceCELoss(lambda_dice=0.0)(logits, foreground), expected_ce)
    probabilities = torch.softmax(logits, dim=1)
    reduce_dims = tuple(range(2, logits.ndim))
    dice = 1 - (2 * (probabilities * target).sum(reduce_dims) + 1e-5) / (
        probabilities.sum(reduce_dims) + target.sum(reduce_dims) + 1e-5
    )
    torch.testing.assert_close(SoftDiceCELoss(lambda_ce=0.0)(logits, target), dice.mean())


def test_soft_dice_ce_rejects_non_probabilities():
    logits = _logits(SHAPES["2d"], 3)
    with pytest.raises(ValueError, match="probabilities in"):
        SoftDiceCELoss()(logits, 5 * torch.ones(2, 1, 6, 5))
    with pytest.raises(ValueError, match="sum to 1"):
        SoftDiceCELoss()(logits, torch.full((2, 2, 6, 5), 0.8))
    with pytest.raises(ValueError, match="to_onehot_y"):
        SoftDiceCELoss(to_onehot_y=True)


# ---------------------------------------------------------------- consistency
def test_softmax_mse_matches_formula_and_detaches_the_teacher(shape):
    student, teacher = _logits(shape, 4, True), _logits(shape, 5, True)
    loss_map = softmax_mse_loss(student, teacher, reduction="none")
    expected = (torch.softmax(student, 1) - torch.softmax(teacher, 1)) ** 2
    torch.testing.assert_close(loss_map, expected)
    loss = softmax_mse_loss(student, teacher)
    torch.testing.assert_close(loss, expected.mean())
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    assert float(softmax_mse_loss(teacher.detach(), teacher)) == 0.0


def test_softmax_kl_matches_formula(shape):
    student, teacher = _logits(shape, 6), _logits(shape, 7)
    p_teacher = torch.softmax(teacher, 1)
    expected = (p_teacher * (torch.log(p_teacher) - torch.log_softmax(student, 1))).sum(1, keepdim=True)
    torch.testing.assert_close(softmax_kl_loss(student, teacher, reduction="none"), expected)
    torch.testing.assert_close(softmax_kl_loss(student, teacher), expected.mean())
    assert abs(float(softmax_kl_loss(student, student))) < 1e-12


def test_masked_mean_ignores_masked_out_values_and_is_zero_on_empty_mask(shape):
    loss_map = torch.rand(shape, dtype=torch.double, requires_grad=True)
    mask = (torch.rand(shape[:1] + (1,) + shape[2:], generator=torch.Generator().manual_seed(8)) > 0.5).double()
    expected = (loss_map * mask).sum() / (mask.sum() * shape[1])
    torch.testing.assert_close(masked_mean(loss_map, mask), expected)

    corrupted = loss_map.detach().clone()
    corrupted[mask.expand(shape) == 0] = float("nan")  # values outside the mask never count
    torch.testing.assert_close(masked_mean(corrupted, mask), expected.detach())

    empty = masked_mean(loss_map, torch.zeros_like(mask))
    assert float(empty.detach()) == 0.0
    empty.backward()
    assert torch.equal(loss_map.grad, torch.zeros_like(loss_map))


def test_masked_mean_soft_weights_and_shape_check():
    loss_map = torch.tensor([[[1.0, 3.0]]])
    torch.testing.assert_close(masked_mean(loss_map, torch.tensor([[[0.5, 0.25]]])), torch.tensor((1.0 * 0.5 + 3.0 * 0.25) / 0.75))
    with pytest.raises(ValueError, match="broadcast"):
        masked_mean(torch.zeros(2, 2, 4, 4), torch.ones(2, 1, 3, 4))


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_masked_consistency_loss_counts_only_kept_voxels(shape, kind):
    student, teacher = _logits(shape, 9, True), _logits(shape, 10)
    mask = torch.zeros(shape[:1] + (1,) + shape[2:])
    mask[0, 0, 1] = 1  # keep one slab of voxels
    loss = MaskedConsistencyLoss(kind)(student, teacher, mask)
    # voxels outside the mask may be anything: changing them changes nothing
    other_student = student.detach().clone()
    other_student[mask.expand(shape) == 0] = 100.0
    torch.testing.assert_close(MaskedConsistencyLoss(kind)(other_student, teacher, mask), loss.detach())
    loss.backward()
    assert torch.all(student.grad[mask.expand(shape) == 0] == 0)
    assert student.grad[mask.expand(shape) == 1].abs().sum() > 0
    assert float(MaskedConsistencyLoss(kind)(student, teacher, torch.zeros_like(mask)).detach()) == 0.0
    unmasked = MaskedConsistencyLoss(kind)(student, teacher)
    reference = (softmax_mse_loss if kind == "mse" else softmax_kl_loss)(student, teacher)
    torch.testing.assert_close(unmasked, reference)


# ---------------------------------------------------------------- distillation
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_hinton_formula_and_only_the_student_gets_gradients(shape, temperature):
    student, teacher = _logits(shape, 11, True), _logits(shape, 12, True)
    loss = KnowledgeDistillationLoss(temperature)(student, teacher)
    p_teacher = torch.softmax(teacher / temperature, 1)
    kl = (p_teacher * (torch.log(p_teacher) - torch.log_softmax(student / temperature, 1))).sum(1)
    torch.testing.assert_close(loss, kl.mean() * temperature**2)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    assert abs(float(KnowledgeDistillationLoss(temperature)(teacher.detach(), teacher))) < 1e-12


def test_kd_single_channel_logits_are_two_class_sigmoid(shape):
    student, teacher = _logits(shape[:1] + (1,) + shape[2:], 13), _logits(shape[:1] + (1,) + shape[2:], 14)
    temperature = 2.0
    p_t, p_s = torch.sigmoid(teacher / temperature), torch.sigmoid(student / temperature)
    binary_kl = p_t * torch.log(p_t / p_s) + (1 - p_t) * torch.log((1 - p_t) / (1 - p_s))
    kd = KnowledgeDistillationLoss(temperature)
    torch.testing.assert_close(kd(student, teacher), binary_kl.mean() * temperature**2)
    # a one-channel (sigmoid) teacher distils into a two-channel softmax student
    two_class_student = torch.cat([torch.zeros_like(student), student], dim=1)
    torch.testing.assert_close(kd(two_class_student, teacher), kd(student, teacher))


def test_kd_mask_and_shape_errors(shape):
    student, teacher = _logits(shape, 15), _logits(shape, 16)
    mask = torch.zeros(shape[:1] + (1,) + shape[2:])
    mask[1] = 1
    kd = KnowledgeDistillationLoss(3.0)
    torch.testing.assert_close(kd(student, teacher, mask), kd(student[1:], teacher[1:]))
    assert float(kd(student, teacher, torch.zeros_like(mask))) == 0.0
    with pytest.raises(ValueError, match="same batch"):
        kd(student, teacher[:1])
    with pytest.raises(ValueError, match="temperature"):
        KnowledgeDistillationLoss(0.0)
