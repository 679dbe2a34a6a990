"""Knowledge distillation (Hinton et al., 2015) for dense predictions.

Per voxel, the student's class distribution at temperature ``T`` is pulled towards the teacher's::

    L = T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) )

summed over classes and averaged over voxels (optionally only over a mask). The ``T^2`` factor
keeps the gradient magnitude independent of ``T`` (the soft-target gradients scale as ``1/T^2``),
so the KD weight can be tuned once. The teacher's logits are detached: the teacher (e.g. a SAM
decoder) is a target here, trained, if at all, by its own loss.

Single-channel logits ``z`` (a sigmoid head, SAM's mask logits) are read as the two-class logits
``[0, z]``, which is exact: ``softmax([0, z] / T) = [1 - sigmoid(z / T), sigmoid(z / T)]``. A
single-channel teacher can therefore distil into a two-channel softmax student and vice versa.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from samssl.losses.consistency import as_class_logits, masked_mean

__all__ = ["KnowledgeDistillationLoss"]


class KnowledgeDistillationLoss(nn.Module):
    """Temperature-scaled KL distillation of segmentation logits (2D or 3D).

    Args:
        temperature: softmax temperature ``T`` (> 0); higher values transfer more of the teacher's
            uncertainty near boundaries.
        reduction: "mean" over voxels (default) or "none" for the ``(B, 1, *spatial)`` map.

    ``forward(student_logits, teacher_logits, mask=None)``; ``mask`` (broadcastable to
    ``(B, 1, *spatial)``) restricts the mean to the voxels it keeps, e.g. confident teacher voxels.
    """

    def __init__(self, temperature: float = 1.0, reduction: Literal["mean", "none"] = "mean") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
        self.temperature = float(temperature)
        self.reduction = reduction

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        student = as_class_logits(student_logits)
        teacher = as_class_logits(teacher_logits.detach())
        if student.shape != teacher.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
                "must have the same batch, class (1 counts as 2) and spatial sizes."
            )
        log_p_teacher = F.log_softmax(teacher / self.temperature, dim=1)
        log_p_student = F.log_softmax(student / self.temperature, dim=1)
        kl_map = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1, keepdim=True)
        kl_map = kl_map * self.temperature**2
        if self.reduction == "none":
            return kl_map if mask is None else kl_map * mask
        return kl_map.mean() if mask is None else masked_mean(kl_map, mask)
