"""Losses of dual-task (mask + signed distance map) networks.

A dual-task network predicts class logits and the normalised signed distance map (SDF) of the
foreground (:class:`~samssl.networks.DualTaskHead`; sign convention of
:func:`samssl.data.signed_distance_map`: negative inside, 0 on the boundary, positive
outside). Three terms, as in DTC (Luo et al., AAAI 2021) and the methods built on it:

* **segmentation**: Dice + cross-entropy of the logits against a hard mask;
* **SDF regression**: mean squared error of the SDF output against the target SDF;
* **dual-task consistency**: the two outputs must describe the same object, so the foreground
  probability of the logits is pulled towards the SDF turned into a mask,
  ``sigmoid(-k * sdf)`` (:func:`samssl.data.sdf_to_mask_probability`), by mean squared
  error. It needs no label, so it also applies to unlabelled images.

:class:`DualTaskLoss` returns the three terms and their weighted sum, for labelled images
(targets = label and its SDF) and for pseudo-labels alike (targets = a teacher's arg-max mask
and SDF output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samssl.data.sdf import sdf_to_mask_probability
from samssl.losses.segmentation import dice_ce_loss

__all__ = ["DualTaskLoss", "dual_task_consistency_loss", "sdf_regression_loss"]


def _check_sdf(sdf: torch.Tensor, name: str) -> None:
    if sdf.ndim < 3 or sdf.shape[1] != 1:
        raise ValueError(f"{name} must be a one-channel SDF (B, 1, *spatial), got {tuple(sdf.shape)}")


def sdf_regression_loss(sdf: torch.Tensor, target_sdf: torch.Tensor) -> torch.Tensor:
    """Mean squared error between a predicted and a target SDF, both ``(B, 1, *spatial)``."""
    _check_sdf(sdf, "sdf")
    if target_sdf.shape != sdf.shape:
        raise ValueError(f"target SDF {tuple(target_sdf.shape)} does not match the prediction {tuple(sdf.shape)}")
    return F.mse_loss(sdf, target_sdf.to(sdf.dtype))


def dual_task_consistency_loss(logits: torch.Tensor, sdf: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """DTC's consistency: MSE between the foreground probability of ``logits`` and ``sigmoid(-k sdf)``.

    ``logits``: ``(B, 2, *spatial)`` softmax logits or ``(B, 1, *spatial)`` sigmoid logits.
    """
    _check_sdf(sdf, "sdf")
    if logits.shape[0] != sdf.shape[0] or logits.shape[2:] != sdf.shape[2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and sdf {tuple(sdf.shape)} differ in batch or spatial size")
    if logits.shape[1] == 1:
        foreground = torch.sigmoid(logits)
    elif logits.shape[1] == 2:
        foreground = torch.softmax(logits, dim=1)[:, 1:]
    else:
        raise ValueError(f"dual-task consistency is defined for one foreground class, got {logits.shape[1]} channels")
    return F.mse_loss(foreground, sdf_to_mask_probability(sdf, k))


class DualTaskLoss(nn.Module):
    """``w_seg * DiceCE(logits, mask) + w_sdf * MSE(sdf, target_sdf) + w_cons * consistency``.

    Args:
        seg_weight, sdf_weight, consistency_weight: weights of the three terms (a zero weight
            skips the term's computation).
        k: sharpness of ``sigmoid(-k * sdf)`` in the consistency term (DTC: 1500).

    ``forward(logits, sdf, mask, target_sdf)`` -> dict with ``"loss"`` and the unweighted
    ``"seg"``, ``"sdf"`` and ``"consistency"`` terms. ``mask``: ``(B, 1, *spatial)`` in {0, 1};
    ``target_sdf``: ``(B, 1, *spatial)`` in [-1, 1].
    """

    def __init__(self, seg_weight: float = 1.0, sdf_weight: float = 1.0, consistency_weight: float = 1.0,
                 k: float = 1500.0) -> None:
        super().__init__()
        for name, value in (("seg_weight", seg_weight), ("sdf_weight", sdf_weight),
                            ("consistency_weight", consistency_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.seg_weight, self.sdf_weight, self.consistency_weight = seg_weight, sdf_weight, consistency_weight
        self.k = k
        self.dice_ce = dice_ce_loss()

    def forward(self, logits: torch.Tensor, sdf: torch.Tensor, mask: torch.Tensor,
                target_sdf: torch.Tensor) -> dict[str, torch.Tensor]:
        zero = logits.new_zeros(())
        seg = self.dice_ce(logits, mask) if self.seg_weight else zero
        regression = sdf_regression_loss(sdf, target_sdf) if self.sdf_weight else zero
        consistency = dual_task_consistency_loss(logits, sdf, self.k) if self.consistency_weight else zero
        total = self.seg_weight * seg + self.sdf_weight * regression + self.consistency_weight * consistency
        return {"loss": total, "seg": seg, "sdf": regression, "consistency": consistency}
