"""Segmentation networks shared by several bundles."""

from .deploy import export_torchscript, fold_batch_norm
from .dual_head import DualTaskHead, DualTaskOutputs
from .mobilenet_unet import MobileNetDualTaskUNet
from .pretrained import load_backbone_state_dict
from .sam_encoder import SAMEncoderDecoder, SAMEncoderSegNet
from .stitched_sam import StitchedSAM, set_class_tokens
from .unet2d import UNet2D
from .vit_dual_task import ViTDualTaskNet
from .vnet import VNet

__all__ = [
    "DualTaskHead",
    "DualTaskOutputs",
    "MobileNetDualTaskUNet",
    "SAMEncoderDecoder",
    "SAMEncoderSegNet",
    "StitchedSAM",
    "UNet2D",
    "ViTDualTaskNet",
    "VNet",
    "export_torchscript",
    "fold_batch_norm",
    "load_backbone_state_dict",
    "set_class_tokens",
]
