"""Networks on a SAM-family image encoder: the one pretrained image encoder available offline.

LiteMedSAM's TinyViT was trained on medical images and ships with its weights, so it is the warm
start a 2D student or teacher can have here without downloads. :class:`SAMEncoderDecoder` is the
shared part: the encoder (frozen and read through the segmenter's embedding cache, or a trainable
copy), an upsampling decoder and the geometry of the segmenter's input transform (for LiteMedSAM:
longest side resized to 256, zero padding bottom/right), so outputs are cropped to the image's
part of the padded input and resized to the caller's size, exactly like SAM's own mask logits.
:class:`SAMEncoderSegNet` puts segmentation heads on it for the students of the 2D bundles;
the samkd bundle's ``ViTDualTaskNet`` (``bundles/samkd_dualtask_skin/scripts/vit_dual_task.py``)
puts a dual (mask + SDF) head on it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

__all__ = ["SAMEncoderDecoder", "SAMEncoderSegNet"]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SAMEncoderDecoder(nn.Module):
    """SAM-family image encoder + upsampling decoder (x2 per stage); heads are the subclasses'.

    Args:
        segmenter: a 2D :class:`~samssl.foundation.PromptableSegmenter` whose encoder is used.
        freeze_encoder: read features through ``segmenter.encode`` (frozen, cached) instead of
            fine-tuning a copy of the encoder.
        decoder_channels: channels after the 1x1 reduction and after each x2 upsampling stage.
    """

    def __init__(self, segmenter: nn.Module, freeze_encoder: bool = True,
                 decoder_channels: tuple[int, ...] = (64, 32, 16)) -> None:
        super().__init__()
        if getattr(segmenter, "spatial_dims", 2) != 2:
            raise ValueError(f"{type(self).__name__} needs a 2D segmenter")
        # The segmenter is referenced, not registered: its weights are not this network's to train
        # or to save (with a frozen encoder they are SAM's; otherwise the copy below is).
        self._segmenter = [segmenter]
        self.freeze_encoder = freeze_encoder
        self.encoder = None if freeze_encoder else copy.deepcopy(segmenter.image_encoder).requires_grad_(True)
        embed_dim = self._embedding_channels(segmenter)
        layers: list[nn.Module] = [_conv_bn_relu(embed_dim, decoder_channels[0], kernel_size=1)]
        for c_in, c_out in zip(decoder_channels[:-1], decoder_channels[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _conv_bn_relu(c_in, c_out)]
        self.decoder = nn.Sequential(*layers)
        self.decoder_channels = tuple(decoder_channels)

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

    def train(self, mode: bool = True) -> "SAMEncoderDecoder":
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
        if embeddings is not None:
            raise ValueError("precomputed embeddings are only used with a frozen encoder")
        x, original, input_size = transform.images_to_input(images)
        return self.encoder(x), original, input_size

    def decode(self, images: torch.Tensor, embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple, tuple]:
        """Decoder features of ``images`` in the padded input frame, and the geometry to leave it."""
        features, original, input_size = self.features(images, embeddings)
        return self.decoder(features.to(next(self.decoder.parameters()).dtype)), original, input_size

    def to_caller(self, out: torch.Tensor, original: tuple, input_size: tuple) -> torch.Tensor:
        """Maps from the padded model input frame to the caller's image size."""
        target = (self.segmenter.transform.target_size,) * 2
        out = F.interpolate(out, size=target, mode="bilinear", align_corners=False)
        out = out[..., : input_size[0], : input_size[1]]
        return F.interpolate(out, size=original, mode="bilinear", align_corners=False)


class SAMEncoderSegNet(SAMEncoderDecoder):
    """A segmentation student on a fine-tuned copy of a SAM-family encoder (LiteMedSAM's TinyViT).

    Drop-in for the 2D bundles' students: ``forward(x)`` gives class logits at the input size and
    ``forward(x, return_aux=True)`` ``(main, aux)``, the auxiliary head (``fcn_head``, an FCN head
    on the same decoder features; UAMT's auxiliary model) being ``None`` when not built. The
    encoder starts from the segmenter's pretrained weights and is trained with the rest.

    Args:
        segmenter: the 2D segmenter whose encoder is copied (``build_foundation_model("litemedsam")``).
        num_classes: output channels (2 = background + lesion, softmax).
        aux_head: build the auxiliary FCN head.
        decoder_channels: as :class:`SAMEncoderDecoder`.
    """

    def __init__(self, segmenter: nn.Module, num_classes: int = 2, aux_head: bool = True,
                 decoder_channels: tuple[int, ...] = (128, 64, 32)) -> None:
        super().__init__(segmenter, freeze_encoder=False, decoder_channels=decoder_channels)
        channels = self.decoder_channels[-1]
        self.main_head = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.fcn_head = FCNHead(channels, num_classes) if aux_head else None

    @property
    def has_aux_head(self) -> bool:
        return self.fcn_head is not None

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        decoded, original, input_size = self.decode(x)
        main = self.to_caller(self.main_head(decoded), original, input_size)
        if not return_aux:
            return main
        aux = None if self.fcn_head is None else self.to_caller(self.fcn_head(decoded), original, input_size)
        return main, aux
