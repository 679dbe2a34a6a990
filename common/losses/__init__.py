"""Losses shared by the methods: supervised segmentation, consistency and distillation."""

from .consistency import MaskedConsistencyLoss, as_class_logits, masked_mean, softmax_kl_loss, softmax_mse_loss
from .distillation import KnowledgeDistillationLoss
from .segmentation import SoftDiceCELoss, dice_ce_loss

__all__ = [
    "as_class_logits",
    "dice_ce_loss",
    "KnowledgeDistillationLoss",
    "MaskedConsistencyLoss",
    "masked_mean",
    "SoftDiceCELoss",
    "softmax_kl_loss",
    "softmax_mse_loss",
]
