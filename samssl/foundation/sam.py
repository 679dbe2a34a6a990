"""SAM-style 2D backend: SAM ViT-B/L/H and anything built from SAM's three modules.

The class works for every model made of ``image_encoder`` + ``prompt_encoder`` +
``mask_decoder`` in the segment-anything layout, which is why LiteMedSAM (TinyViT encoder,
SAM decoder) is a thin subclass (:mod:`samssl.foundation.litemedsam`). The model differences
that matter to callers (input size, intensity convention, what the default prompt is) live in
the :class:`~samssl.foundation.preprocessing.InputTransform` and a couple of class attributes.
Each variant's facts (segment-anything architecture, checkpoint, input convention: SAM's for
``sam_vit_*``, MedSAM's own for ``medsam``) are its entry in
:data:`samssl.foundation.variants.VARIANTS`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from samssl.foundation.base import ImageEmbeddings, PromptableSegmenter, SegmenterOutput, Size
from samssl.foundation.checkpoints import load_checkpoint_into
from samssl.foundation.preprocessing import InputTransform
from samssl.foundation.prompt_batch import FlatPrompts, repeat_per_prompt
from samssl.foundation.variants import ModelVariant, backend_variant


def select_best(masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, per row, the candidate mask with the highest predicted IoU (keeps the graph)."""
    best = iou.argmax(dim=1)
    rows = torch.arange(masks.shape[0], device=masks.device)
    return masks[rows, best], iou[rows, best]


def package_outputs(transform: InputTransform, low_res: torch.Tensor, iou: torch.Tensor, b: int, n: int,
                    original_size: tuple[int, ...], input_size: tuple[int, ...],
                    multimask_output: bool) -> SegmenterOutput:
    """Map ``(B*N, M, *low-res)`` decoder logits back to the caller's frame and ``(B, N, ...)``."""
    masks = transform.logits_to_original(low_res, original_size, input_size)
    all_masks = all_iou = None
    if multimask_output:
        all_masks = masks.view(b, n, *masks.shape[1:])
        all_iou = iou.view(b, n, -1)
        masks, best_iou = select_best(masks, iou)
        low_res, _ = select_best(low_res, iou)
    else:
        masks, best_iou, low_res = masks[:, 0], iou[:, 0], low_res[:, 0]
    return SegmenterOutput(
        mask_logits=masks.view(b, n, *masks.shape[1:]),
        iou_scores=best_iou.view(b, n),
        low_res_logits=low_res.view(b, n, *low_res.shape[1:]),
        all_mask_logits=all_masks,
        all_iou_scores=all_iou,
    )


class SamSegmenter(PromptableSegmenter):
    """Promptable segmenter over a segment-anything style model.

    Args:
        model: module with ``image_encoder``, ``prompt_encoder`` and ``mask_decoder``.
        transform: input preprocessing of this model.
        name: registry name (part of the cache key).
        weights_id: identity of the loaded weights (part of the cache key).
    """

    name = "sam"
    default_prompt = "box"
    #: segment-anything's ``MaskDecoder`` repeats its image embedding over *all* prompt rows,
    #: so several images with several prompts each must be decoded one image at a time;
    #: decoders that accept one embedding row per prompt row set this to True.
    decoder_batches_images = False

    def __init__(self, model: nn.Module, transform: InputTransform, name: str | None = None,
                 weights_id: str | None = None) -> None:
        super().__init__(transform, weights_id)
        if name is not None:
            self.name = name
        # Keep the three parts as direct children: adapters, LoRA and optimisers address them
        # by these names, whatever container the upstream package uses.
        self.encoder = model.image_encoder
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.freeze()

    @property
    def image_encoder(self) -> nn.Module:
        return self.encoder

    def _encode_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self._run_image_encoder(x), ()

    def _run_decoder(self, features: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                     multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mask_decoder(
            image_embeddings=features,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def _decode_flat(
        self,
        embeddings: ImageEmbeddings,
        flat: FlatPrompts,
        original_size: Size,
        input_size: Size,
        multimask_output: bool,
    ) -> SegmenterOutput:
        device = self.device
        n = flat.num_prompts

        point_input = None
        if flat.points is not None:
            coords = self.transform.points_to_input(flat.points, original_size, input_size, xy_order=True)
            point_input = (coords, flat.point_labels)
        box_input = None
        if flat.boxes is not None:
            corners = flat.boxes.reshape(-1, 2, 2)
            box_input = self.transform.points_to_input(corners, original_size, input_size, xy_order=True).reshape(-1, 4)
        mask_input = None
        if flat.mask_prompt is not None:
            mask_input = self.transform.mask_logits_to_prompt(
                flat.mask_prompt, input_size, self.prompt_encoder.mask_input_size
            )

        sparse, dense = self.prompt_encoder(points=point_input, boxes=box_input, masks=mask_input)
        rows = len(embeddings) * n
        if dense.shape[0] != rows:  # dense-only prompts: the prompt encoder made one row
            dense = dense.expand(rows, *dense.shape[1:])
            sparse = sparse.expand(rows, *sparse.shape[1:])
        if flat.dense_prompt is not None:
            dense = dense + flat.dense_prompt.to(dense.dtype)
        features = embeddings.features.to(device)
        if len(embeddings) == 1:  # every decoder repeats one image over its prompts
            low_res, iou = self._run_decoder(features, sparse, dense, multimask_output)
        elif self.decoder_batches_images:
            low_res, iou = self._run_decoder(repeat_per_prompt(features, n), sparse, dense, multimask_output)
        else:  # stock SAM decoder: one image per call
            parts = [self._run_decoder(features[i:i + 1], sparse[i * n:(i + 1) * n], dense[i * n:(i + 1) * n],
                                       multimask_output) for i in range(len(embeddings))]
            low_res, iou = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return package_outputs(self.transform, low_res, iou, len(embeddings), n, original_size, input_size,
                               multimask_output)


def build_sam_vit(variant: str | ModelVariant = "sam_vit_b", checkpoint: str | Path | None = None,
                  allow_pickle: bool = False, transform: InputTransform | None = None) -> SamSegmenter:
    """SAM ViT-B/L/H or MedSAM from a local checkpoint (``None`` = random init, for tests and wiring).

    ``variant`` is a name of a ``sam`` variant or its :class:`~samssl.foundation.variants.ModelVariant`
    entry, which gives the segment-anything architecture, the checkpoint spec and the input
    convention. ``medsam`` is the SAM ViT-B architecture with MedSAM's own preprocessing
    (MedSAM feeds [0, 1] images stretched to 1024 x 1024, without SAM's mean/std), so a MedSAM
    checkpoint must be built under that name, not ``sam_vit_b``. ``transform`` overrides the
    variant's preprocessing.
    """
    entry = backend_variant(variant, "sam")
    from segment_anything import sam_model_registry

    model = sam_model_registry[entry.architecture](checkpoint=None)  # architecture only; we load the file ourselves
    weights_id = None
    if checkpoint is not None:
        weights_id = load_checkpoint_into(model, checkpoint, entry.checkpoint, allow_pickle)
    if transform is None:
        transform = entry.preprocessing
    return SamSegmenter(model, transform, name=entry.name, weights_id=weights_id)
