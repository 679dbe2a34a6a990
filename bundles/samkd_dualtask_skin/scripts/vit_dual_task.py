"""A ViT teacher with a dual (mask + signed distance) head on a SAM-family image encoder.

The dual-task SAM-distillation method pairs its small main network with a stronger ViT-based
teacher network that predicts the same two outputs. The one pretrained ViT available offline is
the image encoder of a SAM-family model (LiteMedSAM's TinyViT, trained on medical images), so
the teacher is that encoder followed by a small convolutional decoder and a
:class:`~samssl.networks.dual_head.DualTaskHead`.

Two regimes (``freeze_encoder``):

* ``True``: the encoder is the segmenter's own frozen encoder and its features come from
  ``segmenter.encode`` and so from the segmenter's embedding cache: the same embedding the SAM
  branch of the method uses, computed once per image for the whole run. Training the teacher
  then costs one small decoder pass. This is the CPU choice.
* ``False``: the teacher owns a trainable *copy* of the encoder (the segmenter's encoder stays
  frozen and cacheable) and fine-tunes it, as the paper does on a GPU.

Encoder, decoder and geometry are :class:`~samssl.networks.sam_encoder.SAMEncoderDecoder`'s.
"""

from __future__ import annotations

import torch
from torch import nn

from samssl.networks.dual_head import DualTaskHead
from samssl.networks.sam_encoder import SAMEncoderDecoder

__all__ = ["ViTDualTaskNet"]


class ViTDualTaskNet(SAMEncoderDecoder):
    """SAM-family image encoder + upsampling decoder + dual head.

    Args:
        segmenter: a :class:`~samssl.foundation.PromptableSegmenter` (2D) whose encoder is used.
        freeze_encoder: read features through ``segmenter.encode`` (frozen, cached) instead of
            fine-tuning a copy of the encoder.
        decoder_channels: channels after the 1x1 reduction and after each x2 upsampling stage.
        num_classes: classes, background included.
    """

    def __init__(self, segmenter: nn.Module, freeze_encoder: bool = True,
                 decoder_channels: tuple[int, ...] = (64, 32, 16), num_classes: int = 2) -> None:
        super().__init__(segmenter, freeze_encoder, decoder_channels)
        self.head = DualTaskHead(decoder_channels[-1], num_classes)

    def forward(self, images: torch.Tensor, embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask logits, tanh sdf)`` at the size of ``images``.

        ``embeddings``: the segmenter's features of ``images`` when the caller already has them
        (frozen encoder only); they are computed through the segmenter's cache otherwise.
        """
        decoded, original, input_size = self.decode(images, embeddings)
        logits, sdf = self.head(decoded)
        out = self.to_caller(torch.cat([logits, sdf], dim=1), original, input_size)
        return out[:, :-1], out[:, -1:]
