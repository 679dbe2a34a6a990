"""Supervised segmentation losses for two-class softmax networks.

``dice_ce_loss`` is the hard-label loss of all methods here (labels ``(B, 1, *spatial)`` in {0, 1},
logits ``(B, 2, *spatial)``): MONAI's ``DiceCELoss`` with the one-hot and softmax settings these
networks need, so a config can write ``{"_target_": "samssl.losses.dice_ce_loss"}``.

``SoftDiceCELoss`` takes *probabilistic* targets, e.g. pseudo-labels averaged over SAM prompts or
folds (SSL-MedSAM2, SFR): cross-entropy against a distribution plus soft Dice. It is MONAI's
``DiceCELoss`` without one-hot encoding, which already computes both terms correctly for soft
targets, with a guard: a one-channel probability map would otherwise be read by MONAI as hard
class indices (and silently rounded), so it is expanded to ``[1 - p, p]`` here.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.losses import DiceCELoss

__all__ = ["dice_ce_loss", "SoftDiceCELoss"]


def dice_ce_loss(**kwargs: Any) -> DiceCELoss:
    """``DiceCELoss(to_onehot_y=True, softmax=True, **kwargs)``: hard labels against softmax logits."""
    settings: dict[str, Any] = {"to_onehot_y": True, "softmax": True}
    settings.update(kwargs)
    return DiceCELoss(**settings)


class SoftDiceCELoss(DiceCELoss):
    """Cross-entropy with soft targets plus soft Dice, for probabilistic pseudo-labels.

    ``forward(logits, target)``: ``logits`` ``(B, C, *spatial)``; ``target`` either class
    probabilities ``(B, C, *spatial)`` summing to 1 over classes, or, for ``C = 2``, the foreground
    probability ``(B, 1, *spatial)``. Other arguments are those of ``monai.losses.DiceCELoss``
    (``lambda_dice``, ``lambda_ce``, ``include_background`` ...); one-hot encoding and the softmax
    are fixed because soft targets need exactly these settings.

    Args:
        check_target: raise ``ValueError`` for targets outside [0, 1] or not summing to 1 (costs one
            device synchronisation per call; switch off once the pipeline is trusted).
    """

    def __init__(self, check_target: bool = True, **kwargs: Any) -> None:
        for fixed in ("to_onehot_y", "softmax", "sigmoid"):
            if fixed in kwargs:
                raise ValueError(f"SoftDiceCELoss fixes {fixed!r}; soft targets need to_onehot_y=False, softmax=True.")
        super().__init__(to_onehot_y=False, softmax=True, **kwargs)
        self.check_target = check_target

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape[1] < 2:
            raise ValueError(f"SoftDiceCELoss needs softmax logits with >= 2 channels, got {tuple(input.shape)}.")
        target = target.to(input.dtype)
        if target.shape[1] == 1 and input.shape[1] == 2:
            target = torch.cat([1.0 - target, target], dim=1)
        if target.shape != input.shape:
            raise ValueError(
                f"soft target {tuple(target.shape)} must match the logits {tuple(input.shape)} "
                "(class probabilities), or be (B, 1, ...) foreground probabilities for two classes."
            )
        if self.check_target:
            self._check_probabilities(target)
        return super().forward(input, target)

    @staticmethod
    def _check_probabilities(target: torch.Tensor) -> None:
        low, high = float(target.min()), float(target.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"soft targets must be probabilities in [0, 1], got values in [{low:.4g}, {high:.4g}] "
                "(logits instead of probabilities?)."
            )
        deviation = float((target.sum(dim=1) - 1.0).abs().max())
        if deviation > 1e-3:
            raise ValueError(f"soft targets must sum to 1 over the class channel (largest deviation {deviation:.3g}).")
