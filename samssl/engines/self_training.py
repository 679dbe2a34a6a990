"""Self-training: learning from a teacher's pseudo-labels on the unlabelled stream (SFR's re-training module).

SFR (Li et al., eq. 6-7) re-trains a 3D network on the labelled data plus the fine-tuned SAM's
pseudo-labels of the unlabelled cases, on top of any semi-supervised method:
``L = L_sup(labelled) + lambda * L_pl(student(unlabelled), pseudo-label) [+ the method's own term]``.

* :class:`~samssl.losses.pseudo_label.PseudoLabelSupervision` is that ``L_pl`` as an auxiliary term
  (:class:`~samssl.losses.auxiliary.AuxiliaryTerm`), so it plugs into the mean-teacher and
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

from collections.abc import Sequence
from typing import Any

from monai.utils.enums import CommonKeys as Keys

from samssl.engines.semi_supervised import SemiSupervisedTrainer
from samssl.losses.auxiliary import AuxiliaryTerm, Batch, LossTerms, add_auxiliary_terms, checked_auxiliary_terms

__all__ = ["SelfTrainingTrainer"]

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
