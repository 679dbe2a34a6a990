"""SFR's pseudo-label term (Li et al., eq. 6-7): ``lambda_p * L_pl(student(unlabelled), pseudo-label)``.

An :class:`~samssl.losses.auxiliary.AuxiliaryTerm`, so it plugs into the mean-teacher, UA-MT and
self-training trainers unchanged (MT+SFR, UA-MT+SFR, self-training+SFR). The pseudo-label travels
with the unlabelled patch under its own key, never ``label`` (dropped from unlabelled batches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.utils.enums import CommonKeys as Keys

from samssl.losses.auxiliary import Batch, LossTerms

__all__ = ["PSEUDO_LABEL_KEY", "PseudoLabelSupervision"]

PSEUDO_LABEL_KEY = "pseudo_label"


class PseudoLabelSupervision:
    """``weight(t) * loss(student logits, pseudo-label)`` on the unlabelled batch.

    Args:
        loss_function: ``loss(logits, target)`` with the target ``(B, 1, *spatial)`` class indices
            (e.g. :func:`samssl.losses.dice_ce_loss`).
        weight: a number or ``callable(iteration) -> float`` (a ramp from :mod:`samssl.losses.ramps`).
        key: batch key of the pseudo-label.
    """

    name = "pseudo_label"

    def __init__(self, loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 weight: float | Callable[[int], float] = 1.0, key: str = PSEUDO_LABEL_KEY) -> None:
        if key == Keys.LABEL:
            raise ValueError("pseudo-labels need their own key: 'label' is dropped from unlabelled batches")
        self.loss_function = loss_function
        self.weight = weight
        self.key = key

    def weight_at(self, iteration: int) -> float:
        return float(self.weight(iteration)) if callable(self.weight) else float(self.weight)

    def __call__(self, engine: Any, unlabelled: Batch, student_logits: torch.Tensor) -> LossTerms:
        if self.key not in unlabelled:
            raise KeyError(
                f"the unlabelled batch has no '{self.key}' entry: build the unlabelled dataset with the "
                f"pseudo-labelled transforms (volume_transforms('pseudo_labelled', ...)) over entries that "
                f"carry the pseudo-label files"
            )
        target = unlabelled[self.key].to(student_logits.device)
        return {
            self.name: self.loss_function(student_logits, target),
            f"{self.name}_weight": self.weight_at(engine.state.iteration),
        }
