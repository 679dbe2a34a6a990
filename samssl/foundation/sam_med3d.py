"""SAM-Med3D backend (architecture from ``medim``): 3D volumes with 3D point prompts.

SAM-Med3D is a volumetric SAM (ViT-B with 3D patches, 128^3 input, 8^3 x 384 embedding) trained
with click prompts. Volumes are z-score normalised, their longest side resized to 128 and the
rest zero-padded; point coordinates are voxel indices in the caller's array order
``(d, h, w)`` (SAM-Med3D's training code takes clicks straight from ``argwhere`` on the
volume, so there is no x/y swap as in 2D SAM). SAM-Med3D was trained on 128^3 crops at about
1.5 mm; for large volumes crop a region around the prompt first (a 3D box from
:func:`samssl.foundation.prompts.box_prompts` gives one) so the object is not shrunk too much.

Box prompts are rejected: SAM-Med3D's prompt encoder has no box embeddings.
The input convention, the medim model name and the checkpoint spec are the ``sam_med3d``
entry of :data:`samssl.foundation.variants.VARIANTS`.
Nothing is downloaded: ``medim`` builds the architecture, weights come from a local file read
with ``weights_only=True`` (medim's own loader would unpickle arbitrary objects and load
non-strictly).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn

from samssl.foundation.base import ImageEmbeddings, PromptableSegmenter, SegmenterOutput, Size
from samssl.foundation.checkpoints import load_checkpoint_into
from samssl.foundation.preprocessing import InputTransform
from samssl.foundation.prompt_batch import FlatPrompts, repeat_per_prompt
from samssl.foundation.sam import package_outputs
from samssl.foundation.variants import VARIANTS, ModelVariant, backend_variant


class SamMed3DSegmenter(PromptableSegmenter):
    """Promptable 3D segmenter over a ``medim`` SAM-Med3D model."""

    name = "sam_med3d"
    default_prompt = "points"
    spatial_dims = 3
    accepts_boxes = False

    def __init__(self, model: nn.Module, transform: InputTransform | None = None,
                 weights_id: str | None = None, *, name: str | None = None) -> None:
        if transform is None:  # the input convention of the variant's entry in the table
            transform = VARIANTS[name or self.name].preprocessing
        super().__init__(transform, weights_id)
        if name is not None:
            self.name = name
        self.encoder = model.image_encoder
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.freeze()

    @property
    def image_encoder(self) -> nn.Module:
        return self.encoder

    @property
    def mask_input_size(self) -> tuple[int, int, int]:
        # the mask downscaler divides by 4; medim's ``mask_input_size`` attribute omits that
        return tuple(4 * s for s in self.prompt_encoder.image_embedding_size)

    def _encode_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self.encoder(x), ()

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
        rows = len(embeddings) * n
        point_input = None
        if flat.points is not None:
            coords = self.transform.points_to_input(flat.points, original_size, input_size, xy_order=False)
            point_input = (coords, flat.point_labels)
        mask_input = None
        if flat.mask_prompt is not None:
            mask_input = self.transform.mask_logits_to_prompt(flat.mask_prompt, input_size, self.mask_input_size)
        sparse, dense = self.prompt_encoder(points=point_input, boxes=None, masks=mask_input)
        if dense.shape[0] != rows:
            dense = dense.expand(rows, *dense.shape[1:])
            sparse = sparse.expand(rows, *sparse.shape[1:])
        if flat.dense_prompt is not None:
            dense = dense + flat.dense_prompt.to(dense.dtype)
        features = repeat_per_prompt(embeddings.features.to(device), n)
        low_res, iou = self.mask_decoder(
            image_embeddings=features,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        return package_outputs(self.transform, low_res, iou, len(embeddings), n, original_size, input_size,
                               multimask_output)


def build_sam_med3d(checkpoint: str | Path | None = None, allow_pickle: bool = False, *,
                    variant: str | ModelVariant = "sam_med3d") -> SamMed3DSegmenter:
    """SAM-Med3D (ViT-B, 128^3) from a local checkpoint (``None`` = random init).

    Released files (``sam_med3d.pth``, ``sam_med3d_turbo.pth``) nest the weights under
    ``model_state_dict`` next to optimizer state; if ``weights_only`` loading refuses the
    file, re-save its ``model_state_dict`` alone or pass ``allow_pickle=True`` for a trusted file.
    ``variant`` is the ``sam_med3d`` entry of the variant table (or its name).
    """
    entry = backend_variant(variant, "sam_med3d")
    try:
        import medim
    except ImportError as err:  # pragma: no cover - declared dependency
        raise ImportError("SAM-Med3D needs the 'medim' package (and 'requests', which medim imports)") from err
    with contextlib.redirect_stdout(io.StringIO()):  # medim prints progress chatter
        model = medim.create_model(entry.architecture, pretrained=False)
    weights_id = None
    if checkpoint is not None:
        weights_id = load_checkpoint_into(model, checkpoint, entry.checkpoint, allow_pickle)
    return SamMed3DSegmenter(model, entry.preprocessing, weights_id=weights_id, name=entry.name)
