"""Consistency losses between a student's and a teacher's segmentation logits.

Both inputs are logits ``(B, C, *spatial)`` (2D or 3D). The teacher side is always detached: it
is a target, and a gradient through it would let the student "agree" by moving the teacher.
A single-channel (sigmoid) output is read as the two-class logits ``[0, z]``, whose softmax is
``[1 - sigmoid(z), sigmoid(z)]``, so binary networks and SAM-style mask logits fit the same losses.

``masked_mean`` averages a per-voxel loss map over the voxels a mask keeps, the building block of
UA-MT's uncertainty-masked consistency: it returns 0 (not NaN) when the mask keeps nothing, which
happens early in UA-MT when every voxel is uncertain.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["as_class_logits", "softmax_mse_loss", "softmax_kl_loss", "masked_mean", "MaskedConsistencyLoss"]

Reduction = Literal["mean", "none"]


def as_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(B, C, ...)`` logits for a softmax over classes; one channel ``z`` becomes ``[0, z]``."""
    if logits.ndim < 3:
        raise ValueError(f"expected logits of shape (B, C, *spatial), got {tuple(logits.shape)}.")
    if logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    student, teacher = as_class_logits(student_logits), as_class_logits(teacher_logits.detach())
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}."
        )
    return student, teacher


def _reduce(loss_map: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return loss_map.mean()
    if reduction == "none":
        return loss_map
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")


def softmax_mse_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Squared difference of the class probabilities (the mean-teacher / UA-MT consistency).

    ``reduction="none"`` returns the per-class map ``(B, C, *spatial)``; "mean" averages it over
    classes and voxels, as ``F.mse_loss`` of the two softmaxes does in the reference code.
    """
    student, teacher = _check_pair(student_logits, teacher_logits)
    loss_map = (torch.softmax(student, dim=1) - torch.softmax(teacher, dim=1)) ** 2
    return _reduce(loss_map, reduction)


def softmax_kl_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """``KL(p_teacher || p_student)`` summed over classes, per voxel.

    ``reduction="none"`` returns the map ``(B, 1, *spatial)``; "mean" averages it over voxels.
    """
    student, teacher = _check_pair(student_logits, teacher_logits)
    log_p_teacher = F.log_softmax(teacher, dim=1)
    loss_map = (log_p_teacher.exp() * (log_p_teacher - F.log_softmax(student, dim=1))).sum(dim=1, keepdim=True)
    return _reduce(loss_map, reduction)


def masked_mean(loss_map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``loss_map`` over the elements where ``mask`` is non-zero, weighted by the mask.

    ``mask`` (binary or soft weights in [0, 1]) must broadcast to ``loss_map``; a ``(B, 1, ...)`` mask
    over a ``(B, C, ...)`` map keeps or drops all classes of a voxel together, as UA-MT does.
    Values outside the mask never enter the result, not even as NaN; an empty mask gives 0.
    """
    try:
        mask = torch.broadcast_to(mask.to(loss_map.dtype), loss_map.shape)
    except RuntimeError as err:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the loss map {tuple(loss_map.shape)}."
        ) from err
    kept = mask > 0
    total = torch.where(kept, loss_map * mask, torch.zeros_like(loss_map)).sum()
    weight = mask.sum()
    # Divide by 1 where the mask is empty: the total is 0 there, and so is its gradient (no 0/0).
    return total / torch.where(weight > 0, weight, torch.ones_like(weight))


class MaskedConsistencyLoss(nn.Module):
    """Softmax MSE or KL consistency averaged over the voxels a mask keeps.

    Args:
        kind: "mse" (UA-MT, mean teacher) or "kl".

    ``forward(student_logits, teacher_logits, mask=None)``: without a mask it is the plain mean.
    """

    def __init__(self, kind: Literal["mse", "kl"] = "mse") -> None:
        super().__init__()
        if kind not in ("mse", "kl"):
            raise ValueError(f"kind must be 'mse' or 'kl', got {kind!r}.")
        self.kind = kind

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss_fn = softmax_mse_loss if self.kind == "mse" else softmax_kl_loss
        loss_map = loss_fn(student_logits, teacher_logits, reduction="none")
        return loss_map.mean() if mask is None else masked_mean(loss_map, mask)
