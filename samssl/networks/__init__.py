"""Segmentation networks shared by several bundles, their shared parts and deployment forms, and the
EMA copy of a network (mean teacher). A network one method alone uses lives in its bundle's ``scripts/``
(ARCHITECTURE.md, "Where things live")."""


from samssl.networks.deploy import export_torchscript, fold_batch_norm
from samssl.networks.dual_head import DualTaskHead, DualTaskOutputs
from samssl.networks.ema import EMATeacher, unwrap_model
from samssl.networks.pretrained import load_backbone_state_dict
from samssl.networks.sam_encoder import SAMEncoderDecoder, SAMEncoderSegNet
from samssl.networks.unet2d import UNet2D
from samssl.networks.vnet import VNet

__all__ = [
    "DualTaskHead",
    "DualTaskOutputs",
    "EMATeacher",
    "SAMEncoderDecoder",
    "SAMEncoderSegNet",
    "UNet2D",
    "VNet",
    "export_torchscript",
    "fold_batch_norm",
    "load_backbone_state_dict",
    "unwrap_model",
]
