"""Losses shared by the methods: supervised segmentation, consistency and distillation."""

from samssl.losses.consistency import MaskedConsistencyLoss, as_class_logits, masked_mean, softmax_kl_loss, softmax_mse_loss
from samssl.losses.distillation import KnowledgeDistillationLoss
from samssl.losses.dual_task import DualTaskLoss, dual_task_consistency_loss, sdf_regression_loss
from samssl.losses.segmentation import SoftDiceCELoss, dice_ce_loss

__all__ = [
    "as_class_logits",
    "dice_ce_loss",
    "dual_task_consistency_loss",
    "DualTaskLoss",
    "KnowledgeDistillationLoss",
    "MaskedConsistencyLoss",
    "sdf_regression_loss",
    "masked_mean",
    "SoftDiceCELoss",
    "softmax_kl_loss",
    "softmax_mse_loss",
]
