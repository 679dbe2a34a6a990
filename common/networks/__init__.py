"""Segmentation networks shared by several bundles."""

from .unet2d import UNet2D
from .vnet import VNet

__all__ = ["UNet2D", "VNet"]
