"""A ViT teacher with a dual (mask + signed distance) head on a SAM-family image encoder.

The dual-task SAM-distillation method pairs its small main network with a stronger ViT-based
teacher network that predicts the same two outputs. The one pretrained ViT available offline is
the image encoder of a SAM-family model (LiteMedSAM's TinyViT, trained on medical images), so
the teacher is that encoder followed by a small convolutional decoder and a
:class:`~common.networks.dual_head.DualTaskHead`.

Two regimes (``freeze_encoder``):

* ``True``: the encoder is the segmenter's own frozen encoder and its features come from
  ``segmenter.encode`` and so from the segmenter's embedding cache: the same embedding the SAM
  branch of the method uses, computed once per image for the whole run. Training the teacher
  then costs one small decoder pass. This is the CPU choice.
* ``False``: the teacher owns a trainable *copy* of the encoder (the segmenter's encoder stays
  frozen and cacheable) and fine-tunes it, as the paper does on a GPU.

Geometry follows the segmenter's input transform (for LiteMedSAM: longest side resized to 256,
zero padding bottom/right): the decoder output covers the padded model input, so it is cropped
to the image's part and resized to the caller's size, exactly like SAM's own mask logits.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .dual_head import DualTaskHead

__all__ = ["ViTDualTaskNet"]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ViTDualTaskNet(nn.Module):
    """SAM-family image encoder + upsampling decoder + dual head.

    Args:
        segmenter: a :class:`~common.teachers.PromptableSegmenter` (2D) whose encoder is used.
        freeze_encoder: read features through ``segmenter.encode`` (frozen, cached) instead of
            fine-tuning a copy of the encoder.
        decoder_channels: channels after the 1x1 reduction and after each x2 upsampling stage.
        num_classes: classes, background included.
    """

    def __init__(self, segmenter: nn.Module, freeze_encoder: bool = True,
                 decoder_channels: tuple[int, ...] = (64, 32, 16), num_classes: int = 2) -> None:
        super().__init__()
        if getattr(segmenter, "spatial_dims", 2) != 2:
            raise ValueError("ViTDualTaskNet needs a 2D segmenter")
        # The segmenter is referenced, not registered: its weights are not the teacher's to train
        # or to save (with a frozen encoder they are SAM's; otherwise the copy below is).
        self._segmenter = [segmenter]
        self.freeze_encoder = freeze_encoder
        self.encoder = None if freeze_encoder else copy.deepcopy(segmenter.image_encoder).requires_grad_(True)
        embed_dim = self._embedding_channels(segmenter)
        layers: list[nn.Module] = [_conv_bn_relu(embed_dim, decoder_channels[0], kernel_size=1)]
        for c_in, c_out in zip(decoder_channels[:-1], decoder_channels[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _conv_bn_relu(c_in, c_out)]
        self.decoder = nn.Sequential(*layers)
        self.head = DualTaskHead(decoder_channels[-1], num_classes)

    @property
    def segmenter(self) -> nn.Module:
        return self._segmenter[0]

    @staticmethod
    def _embedding_channels(segmenter: nn.Module) -> int:
        neck = getattr(segmenter.image_encoder, "neck", None)
        if neck is not None:
            convs = [m for m in neck.modules() if isinstance(m, nn.Conv2d)]
            if convs:
                return convs[-1].out_channels
        return 256  # SAM's embedding width

    def train(self, mode: bool = True) -> "ViTDualTaskNet":
        super().train(mode)
        if self.encoder is not None:
            self.encoder.train(mode)
        return self

    def features(self, images: torch.Tensor, embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple, tuple]:
        """Encoder features and the (original, input) geometry of ``images``."""
        transform = self.segmenter.transform
        original = tuple(images.shape[2:])
        input_size = transform.resized_size(original)
        if self.encoder is None:
            if embeddings is None:
                embeddings = self.segmenter.encode(images).features
            return embeddings, original, input_size
        x, original, input_size = transform.images_to_input(images)
        return self.encoder(x), original, input_size

    def forward(self, images: torch.Tensor, embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask logits, tanh sdf)`` at the size of ``images``.

        ``embeddings``: the segmenter's features of ``images`` when the caller already has them
        (frozen encoder only); they are computed through the segmenter's cache otherwise.
        """
        if embeddings is not None and self.encoder is not None:
            raise ValueError("precomputed embeddings are only used with a frozen encoder")
        features, original, input_size = self.features(images, embeddings)
        logits, sdf = self.head(self.decoder(features.to(next(self.decoder.parameters()).dtype)))
        target = (self.segmenter.transform.target_size,) * 2
        out = torch.cat([logits, sdf], dim=1)
        out = F.interpolate(out, size=target, mode="bilinear", align_corners=False)
        out = out[..., : input_size[0], : input_size[1]]
        out = F.interpolate(out, size=original, mode="bilinear", align_corners=False)
        return out[:, :-1], out[:, -1:]
