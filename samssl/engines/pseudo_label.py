"""Learning from a teacher's pseudo-labels on the unlabelled stream (SFR's re-training module).

SFR (Li et al., eq. 6-7) re-trains a 3D network on the labelled data plus the fine-tuned SAM's
pseudo-labels of the unlabelled cases, on top of any semi-supervised method:
``L = L_sup(labelled) + lambda * L_pl(student(unlabelled), pseudo-label) [+ the method's own term]``.

* :class:`PseudoLabelSupervision` is that ``L_pl`` as an auxiliary term
  (:class:`~samssl.engines.mean_teacher.AuxiliaryTerm`), so it plugs into the mean-teacher and
  UA-MT trainers unchanged (MT+SFR, UA-MT+SFR).
* :class:`SelfTrainingTrainer` is plain self-training (Bai et al.): labelled loss plus auxiliary
  terms on the unlabelled batch, no consistency and no EMA teacher (the ``self_training``
  framework of :func:`~samssl.engines.frameworks.build_consistency_trainer`).

The pseudo-label travels with the unlabelled patch under its own key (``pseudo_label``; see the
``pseudo_labelled`` mode of :func:`samssl.data.transforms_3d.volume_transforms`), cropped and
flipped with the image; the trainer drops any ``label`` key of unlabelled batches, so ground truth
of the unlabelled cases cannot leak in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.utils.enums import CommonKeys as Keys

from samssl.engines.mean_teacher import AuxiliaryTerm, add_auxiliary_terms, checked_auxiliary_terms
from samssl.engines.semi_supervised import Batch, LossTerms, SemiSupervisedTrainer

__all__ = ["PSEUDO_LABEL_KEY", "PseudoLabelSupervision", "SelfTrainingTrainer"]

PSEUDO_LABEL_KEY = "pseudo_label"


class PseudoLabelSupervision:
    """``weight(t) * loss(student logits, pseudo-label)`` on the unlabelled batch.

    Args:
        loss_function: ``loss(logits, target)`` with the target ``(B, 1, *spatial)`` class indices
            (e.g. :func:`samssl.losses.dice_ce_loss`).
        weight: a number or ``callable(iteration) -> float`` (a ramp from :mod:`.ramps`).
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


class SelfTrainingTrainer(SemiSupervisedTrainer):
    """Self-training: the supervised loss plus auxiliary terms (e.g. pseudo-labels) on unlabelled data.

    Takes the :class:`SemiSupervisedTrainer` arguments plus ``auxiliary_terms``; there is no teacher
    and no consistency term, so this is the re-training module of "SFR with self-training".
    """

    def __init__(self, *args: Any, auxiliary_terms: Sequence[AuxiliaryTerm] | None = None, **kwargs: Any) -> None:
        if kwargs.get("unlabeled_data_loader") is None:
            raise ValueError("self-training needs an unlabeled_data_loader (with pseudo-labels)")
        terms = checked_auxiliary_terms(auxiliary_terms)
        if not terms:
            raise ValueError("self-training needs at least one auxiliary term (e.g. PseudoLabelSupervision)")
        super().__init__(*args, **kwargs)
        self.auxiliary_terms = terms

    def compute_losses(self, engine: SelfTrainingTrainer, labelled: Batch, unlabelled: Batch | None) -> LossTerms:
        supervised = self.supervised_loss(engine, labelled)
        if unlabelled is None:
            return {"loss": supervised, "supervised": supervised}
        student_logits = self.student_forward(unlabelled[Keys.IMAGE])
        loss, extra = add_auxiliary_terms(self.auxiliary_terms, engine, unlabelled, student_logits, supervised)
        return {"loss": loss, "supervised": supervised, **extra}
