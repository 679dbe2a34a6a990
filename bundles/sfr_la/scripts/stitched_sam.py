"""SFR's fine-tuning module: a 2D SAM that segments a 3D patch through stitching, tuned with LoRA.

:class:`StitchedSAM` is a 3D segmentation network on the outside, ``(B, 1, H, W, D)`` patches in,
``(B, C, H, W, D)`` class logits out, so MONAI's trainers, losses and sliding-window inferers use it
as they would a V-Net. Inside (Li et al., SFR, sec. III-B):

1. **Stitching** (:mod:`samssl.data.stitching`): the D slices are laid in order on a
   ``ceil(sqrt(D))``-square grid at their own resolution; empty tiles take the patch's minimum,
   which the SAM input normalisation maps to 0 (the paper's zero tiles). With
   ``simplified_tile=96`` the paper's "simplified" stitching is used instead (slices cropped or
   padded to 96 x 96, depth interpolated to a square number, and back).
2. **SAM without prompts**: the stitched image goes through the teacher's own preprocessing and
   image encoder (LoRA on the q and v projections of every attention block, rank 4 by default,
   via ``peft``: :func:`samssl.foundation.peft_tuning.apply_lora`), the prompt encoder's "no prompt"
   embeddings, and the mask decoder.
3. **Deterministic multi-class head** (SAMed, which SFR follows): the decoder's ambiguity outputs
   (1 + 3 mask tokens, best-IoU selection) are replaced by one mask token per class, background
   included; the class logits are ``(B, C, 256, 256)`` and are mapped back to the stitched size,
   then unstitched to the patch. The new tokens start from the pretrained ones.

Trainable: the LoRA matrices and the whole mask decoder (SAMed); the image encoder's own weights
and the prompt encoder stay frozen. :meth:`StitchedSAM.save_tuned` writes only what was tuned (a
few MB for LiteMedSAM's 9.8M-parameter model; SAM ViT-B's 375 MB base is never copied) as the
library's tuned-teacher file (:mod:`samssl.foundation.tuned`, kind ``class_tokens``: the base
model's identity, checked on load, and the labelled cases it saw), and
:meth:`StitchedSAM.load_tuned` puts it on a freshly built base model; :meth:`merge` folds LoRA into
the encoder for inference.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samssl.data.stitching import (
    SimplifiedStitch,
    grid_size,
    stitch_slices,
    unstitch_slices,
)
from samssl.foundation.base import PromptableSegmenter
from samssl.foundation.peft_tuning import apply_lora, merge_lora
from samssl.foundation.tuned import (
    apply_tuned_weights,
    read_tuned_teacher,
    save_tuned_teacher,
    tuned_teacher_state,
)

__all__ = ["StitchedSAM", "set_class_tokens"]


def set_class_tokens(mask_decoder: nn.Module, num_classes: int) -> None:
    """Give a SAM mask decoder one output token per class (SAMed's deterministic head), in place.

    Token ``c`` and its hypernetwork MLP start as copies of pretrained token ``c mod 4``.
    """
    if num_classes < 2:
        raise ValueError(f"a segmentation head needs at least 2 classes (background + one), got {num_classes}")
    old_tokens = mask_decoder.mask_tokens.weight.detach()
    old_mlps = mask_decoder.output_hypernetworks_mlps
    n_old = old_tokens.shape[0]
    tokens = nn.Embedding(num_classes, old_tokens.shape[1]).to(old_tokens.device, old_tokens.dtype)
    with torch.no_grad():
        tokens.weight.copy_(old_tokens[[c % n_old for c in range(num_classes)]])
    mask_decoder.mask_tokens = tokens
    mask_decoder.output_hypernetworks_mlps = nn.ModuleList(copy.deepcopy(old_mlps[c % n_old]) for c in range(num_classes))
    mask_decoder.num_mask_tokens = num_classes


class StitchedSAM(nn.Module):
    """A 2D SAM-family model segmenting 3D patches by stitching (see the module docstring).

    Args:
        teacher: a 2D SAM-style segmenter (``samssl.foundation.build_foundation_model('litemedsam')`` or a
            SAM ViT); it is modified in place (LoRA, class tokens, trainable decoder).
        num_classes: output classes, background included.
        lora_rank: LoRA rank (the paper: 4); ``0`` tunes the decoder only.
        lora_targets: attention projections that get LoRA (SAMed/SFR: q and v).
        grid: tiles per side of the stitched image; default ``ceil(sqrt(D))`` of each input.
        simplified_tile: use the "simplified" stitching with tiles of this size (the paper: 96).
    """

    def __init__(self, teacher: PromptableSegmenter, num_classes: int = 2, lora_rank: int = 4,
                 lora_targets: tuple[str, ...] = ("q", "v"), grid: int | None = None,
                 simplified_tile: int | None = None) -> None:
        super().__init__()
        if teacher.spatial_dims != 2:
            raise ValueError(f"stitching feeds a 2D SAM; {teacher.name} is {teacher.spatial_dims}D")
        self.teacher = teacher
        self.num_classes = int(num_classes)
        self.grid = grid
        self.simplified = SimplifiedStitch(simplified_tile) if simplified_tile else None
        self.lora_rank = int(lora_rank)
        set_class_tokens(teacher.mask_decoder, self.num_classes)
        if self.lora_rank > 0:
            apply_lora(teacher, rank=self.lora_rank, targets=tuple(lora_targets))
        teacher.mask_decoder.requires_grad_(True)
        teacher.prompt_encoder.requires_grad_(False)

    # ------------------------------------------------------------------ forward
    def stitch(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W, D)`` -> ``(B, 1, gH, gW)``, each patch shifted to minimum 0 and empty tiles 0.

        The shift changes nothing SAM sees (its input is min-max normalised per image) and makes
        the zero tiles the darkest value, as zeros are in the paper's raw intensities.
        """
        b = patches.shape[0]
        shifted = patches - patches.reshape(b, -1).amin(dim=1).view(b, 1, 1, 1, 1)
        if self.simplified is not None:
            return self.simplified(shifted)
        return stitch_slices(shifted, self.grid, 0.0)

    def unstitch(self, logits: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """Stitched ``(B, C, gH, gW)`` logits -> ``(B, C, H, W, D)`` of a patch of spatial ``shape``."""
        if self.simplified is not None:
            return self.simplified.inverse(logits, shape)
        return unstitch_slices(logits, shape[-1], self.grid or grid_size(shape[-1]))

    def _no_prompt(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.teacher.prompt_encoder
        sparse, dense = encoder(points=None, boxes=None, masks=None)
        return sparse.expand(batch, *sparse.shape[1:]), dense.expand(batch, *dense.shape[1:])

    def _decode(self, features: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(B, 256, h, w)`` -> class logits ``(B, C, 4h, 4w)`` (no prompts)."""
        decoder = self.teacher.mask_decoder
        image_pe = self.teacher.prompt_encoder.get_dense_pe()
        sparse, dense = self._no_prompt(features.shape[0])
        if getattr(self.teacher, "decoder_batches_images", False):
            logits, _ = decoder.predict_masks(features, image_pe, sparse, dense)
            return logits
        # segment-anything's decoder repeats each image over all prompt rows: one image per call
        return torch.cat([decoder.predict_masks(features[i:i + 1], image_pe, sparse[i:i + 1], dense[i:i + 1])[0]
                          for i in range(features.shape[0])])

    def forward_stitched(self, stitched: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C, gH, gW)`` of stitched images ``(B, 1, gH, gW)``."""
        tuning = torch.is_grad_enabled() and any(p.requires_grad for p in self.teacher.image_encoder.parameters())
        embeddings = self.teacher.encode(stitched, requires_grad=tuning)
        low_res = self._decode(embeddings.features)
        original_size, input_size = embeddings.common_geometry()
        return self.teacher.transform.logits_to_original(low_res, original_size, input_size)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.ndim != 5 or patches.shape[1] != 1:
            raise ValueError(f"StitchedSAM takes one-channel patches (B, 1, H, W, D), got {tuple(patches.shape)}")
        if hasattr(patches, "as_tensor"):
            patches = patches.as_tensor()
        return self.unstitch(self.forward_stitched(self.stitch(patches)), tuple(patches.shape[2:]))

    def train(self, mode: bool = True) -> StitchedSAM:
        super().train(mode)
        self.teacher.train(mode)  # keeps the encoder's own layers in eval mode
        return self

    # ------------------------------------------------------------------ tuned weights
    def tuned_state(self, labelled_cases: Sequence[Mapping[str, Any]] = (),
                    settings: Mapping[str, Any] | None = None) -> dict:
        """What fine-tuning changed (LoRA tensors, the mask decoder with its class tokens), as the
        library's tuned-teacher file of kind ``class_tokens`` (:mod:`samssl.foundation.tuned`)."""
        return tuned_teacher_state(self.teacher, "class_tokens", labelled_cases, settings, num_classes=self.num_classes)

    def save_tuned(self, path: str | Path, labelled_cases: Sequence[Mapping[str, Any]] = (),
                   settings: Mapping[str, Any] | None = None) -> Path:
        """Write the tuned weights (not the frozen base model) and their provenance to ``path``, atomically."""
        return save_tuned_teacher(self.tuned_state(labelled_cases, settings), path)

    @classmethod
    def load_tuned(cls, teacher: PromptableSegmenter, path: str | Path, grid: int | None = None,
                   simplified_tile: int | None = None) -> StitchedSAM:
        """A :class:`StitchedSAM` on a freshly built ``teacher`` with the tuned weights of ``path``.

        Reads the library's tuned-teacher files of kind ``class_tokens`` and the stitched-SAM files
        SFR wrote before them; refuses a promptable teacher file and a file tuned from another base.
        """
        payload = read_tuned_teacher(path, kind="class_tokens", base=teacher)
        model = cls(teacher, payload["num_classes"], lora_rank=0, grid=grid, simplified_tile=simplified_tile)
        apply_tuned_weights(teacher, payload)
        if payload.get("lora"):
            model.lora_rank = int(payload["lora"]["rank"])
        return model

    def merge(self) -> StitchedSAM:
        """Fold LoRA into the encoder weights (inference: same outputs, the original structure)."""
        if self.lora_rank > 0:
            merge_lora(self.teacher)
            self.lora_rank = 0
        return self

