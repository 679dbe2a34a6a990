"""Build the trainer of a consistency framework by name, so a bundle config switches methods
with one key (``"framework": "mean_teacher"``) and baselines share every other setting.

=================  ===========================================================================
``suponly``        :class:`SemiSupervisedTrainer` without an unlabelled stream (labelled only)
``mean_teacher``   :class:`MeanTeacherTrainer` (Tarvainen & Valpola)
``uamt``           :class:`UncertaintyAwareMeanTeacherTrainer` (Yu et al.)
``self_training``  :class:`SelfTrainingTrainer`: labelled loss + auxiliary terms (pseudo-labels)
=================  ===========================================================================

Arguments a framework does not use (the unlabelled loader, consistency weight and auxiliary
terms for ``suponly``; the UA-MT options for ``mean_teacher``) are dropped, so one config can
hold all of them.
"""

from __future__ import annotations

from typing import Any

from samssl.engines.mean_teacher import MeanTeacherTrainer, UncertaintyAwareMeanTeacherTrainer
from samssl.engines.self_training import SelfTrainingTrainer
from samssl.engines.semi_supervised import SemiSupervisedTrainer

__all__ = ["FRAMEWORKS", "build_consistency_trainer"]

FRAMEWORKS = {
    "suponly": SemiSupervisedTrainer,
    "mean_teacher": MeanTeacherTrainer,
    "uamt": UncertaintyAwareMeanTeacherTrainer,
    "self_training": SelfTrainingTrainer,
}
_MEAN_TEACHER_ONLY = (
    "unlabeled_data_loader", "consistency_weight", "teacher", "ema_decay", "consistency_loss", "noise_std",
    "noise_clip", "student_noise", "noise_seed", "auxiliary_terms",
)
_UAMT_ONLY = ("uncertainty_passes", "threshold_rampup_length", "stochastic_teacher")


def build_consistency_trainer(framework: str, *args: Any, **kwargs: Any) -> SemiSupervisedTrainer:
    """The trainer of ``framework`` (see the module docstring) built from the shared arguments."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {', '.join(FRAMEWORKS)}")
    dropped = list(_UAMT_ONLY) if framework != "uamt" else []
    if framework == "suponly":
        if kwargs.get("auxiliary_terms"):
            raise ValueError("auxiliary consistency terms (e.g. the SAM branch) need unlabelled data: "
                             "they cannot be attached to the supervised-only baseline")
        dropped += _MEAN_TEACHER_ONLY
        kwargs["unlabeled_data_loader"] = None
        kwargs["teacher"] = None
        dropped.remove("unlabeled_data_loader")
        dropped.remove("teacher")
    if framework == "self_training":
        dropped += [k for k in _MEAN_TEACHER_ONLY if k not in ("unlabeled_data_loader", "auxiliary_terms")]
    kwargs = {k: v for k, v in kwargs.items() if k not in dropped}
    return FRAMEWORKS[framework](*args, **kwargs)
