"""Losses, their weight schedules (ramps) and the auxiliary-loss terms that plug into a trainer."""


from samssl.losses.auxiliary import AuxiliaryTerm, add_auxiliary_terms, checked_auxiliary_terms
from samssl.losses.consistency import (
    MaskedConsistencyLoss,
    as_class_logits,
    masked_mean,
    softmax_kl_loss,
    softmax_mse_loss,
)
from samssl.losses.distillation import KnowledgeDistillationLoss
from samssl.losses.dual_task import DualTaskLoss, dual_task_consistency_loss, sdf_regression_loss
from samssl.losses.pseudo_label import PSEUDO_LABEL_KEY, PseudoLabelSupervision
from samssl.losses.ramps import (
    Constant,
    ExponentialRampDown,
    ExponentialRampUp,
    GaussianRampUp,
    LinearRamp,
    Ramp,
    exponential_rampdown,
    exponential_rampup,
    gaussian_rampup,
    linear_rampup,
    ramp_progress,
)
from samssl.losses.sam_assisted import SAM_WEIGHT_SCHEDULES, SAMAssistedConsistency, sam_weight_ramp
from samssl.losses.segmentation import SoftDiceCELoss, dice_ce_loss

__all__ = [
    "AuxiliaryTerm",
    "Constant",
    "DualTaskLoss",
    "ExponentialRampDown",
    "ExponentialRampUp",
    "GaussianRampUp",
    "KnowledgeDistillationLoss",
    "LinearRamp",
    "MaskedConsistencyLoss",
    "PSEUDO_LABEL_KEY",
    "PseudoLabelSupervision",
    "Ramp",
    "SAMAssistedConsistency",
    "SAM_WEIGHT_SCHEDULES",
    "SoftDiceCELoss",
    "add_auxiliary_terms",
    "as_class_logits",
    "checked_auxiliary_terms",
    "dice_ce_loss",
    "dual_task_consistency_loss",
    "exponential_rampdown",
    "exponential_rampup",
    "gaussian_rampup",
    "linear_rampup",
    "masked_mean",
    "ramp_progress",
    "sam_weight_ramp",
    "sdf_regression_loss",
    "softmax_kl_loss",
    "softmax_mse_loss",
]
