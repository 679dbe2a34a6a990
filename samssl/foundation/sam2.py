"""SAM2 / SAM2.1 / MedSAM2 backend: image prompting and volume-as-video propagation.

Images: the same ``encode``/``decode`` contract as every backend. SAM2's decoder also uses two
high-resolution feature maps, carried in ``ImageEmbeddings.high_res_features``; ``encode``
returns the raw backbone levels (after the decoder's ``conv_s0``/``conv_s1`` projections, as
sam2 does), and ``decode`` adds the ``no_mem_embed`` that SAM2 adds for single images. So one
cached embedding serves both image decoding and video propagation.

Volumes: SSL-MedSAM2 treats the slices of a volume as the frames of a video and propagates
mask prompts through it. sam2's video predictor normally reads a JPEG folder; here the
inference state is built from an in-memory array instead (no files written), with a frame
feature store that encodes each frame on demand through :meth:`Sam2Segmenter.encode` (so the
embedding cache applies to video frames too). The state layout mirrors
``SAM2VideoPredictor.init_state`` of sam2 1.1; the public predictor methods
(``add_new_mask``, ``add_new_points_or_box``, ``propagate_in_video``) do the tracking.

Each variant's packaged Hydra config, input size and checkpoint spec are its entry in
:data:`samssl.foundation.variants.VARIANTS`. MedSAM2 is SAM2.1 Hiera-T fine-tuned on medical
images at 512 x 512; its release config (``sam2.1_hiera_t512.yaml``) differs from the packaged
``sam2.1_hiera_t.yaml`` only in the image size and the memory-attention RoPE grid, which
:func:`build_sam2_segmenter` derives from the entry's input size as Hydra overrides.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Literal, Mapping

import torch
from torch import nn

from samssl.foundation.base import ImageEmbeddings, PromptableSegmenter, SegmenterOutput, Size
from samssl.foundation.checkpoints import load_checkpoint_into
from samssl.foundation.preprocessing import InputTransform
from samssl.foundation.prompt_batch import FlatPrompts, repeat_per_prompt
from samssl.foundation.sam import package_outputs
from samssl.foundation.variants import ModelVariant, backend_variant

#: sam2's logit for "object absent" (``NO_OBJ_SCORE``), also used for frames never reached.
NO_OBJECT_LOGIT = -1024.0


#: Input size of every Hydra config packaged with sam2; other sizes need overrides.
PACKAGED_CONFIG_IMAGE_SIZE = 1024


def _image_size_overrides(image_size: int) -> list[str]:
    """Hydra overrides for another input size: the image size and the memory-attention RoPE grid."""
    if image_size % 16:
        raise ValueError(f"SAM2 image_size must be a multiple of 16, got {image_size}")
    grid = image_size // 16
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
    ]


class _FrameFeatureStore(dict):
    """Stand-in for ``inference_state["cached_features"]`` that never misses.

    sam2 looks frame features up with ``.get(frame_idx)`` and only encodes (from its own
    preprocessed frame tensor) on a miss. Answering every lookup from
    :meth:`Sam2Segmenter.encode` keeps a single encoding path (and cache) for images and
    videos, and avoids holding all preprocessed frames in memory.
    """

    def __init__(self, segmenter: "Sam2Segmenter", frames: torch.Tensor, keep: int = 4) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.frames = frames
        self.keep = keep
        self._recent: OrderedDict[int, tuple[torch.Tensor, dict]] = OrderedDict()
        self._dummy_image = torch.zeros(1, 0, 0, 0)

    def get(self, frame_idx: int, default: object = None) -> tuple[torch.Tensor, dict]:
        if frame_idx not in self._recent:
            # sam2 asks from inside inference_mode; encode outside it so that cached embeddings
            # stay ordinary tensors that a later, differentiable decode can use
            with torch.inference_mode(False):
                embeddings = self.segmenter.encode(self.frames[frame_idx:frame_idx + 1])
            self._recent[frame_idx] = (self._dummy_image, self.segmenter.backbone_output(embeddings))
            while len(self._recent) > self.keep:
                self._recent.popitem(last=False)
        self._recent.move_to_end(frame_idx)
        return self._recent[frame_idx]


class Sam2Segmenter(PromptableSegmenter):
    """SAM2-family promptable segmenter with volume propagation.

    Args:
        model: a ``SAM2VideoPredictor`` (it is also a complete image model).
        transform: input preprocessing (the ``preprocessing`` of the variant's table entry).
    """

    name = "sam2"
    default_prompt = "box"

    def __init__(self, model: nn.Module, transform: InputTransform, name: str | None = None,
                 weights_id: str | None = None) -> None:
        super().__init__(transform, weights_id)
        if name is not None:
            self.name = name
        self.model = model
        self._pos_enc: dict[tuple[int, ...], torch.Tensor] = {}
        self.freeze()

    @property
    def image_encoder(self) -> nn.Module:
        return self.model.image_encoder

    @property
    def prompt_encoder(self) -> nn.Module:
        return self.model.sam_prompt_encoder

    @property
    def mask_decoder(self) -> nn.Module:
        return self.model.sam_mask_decoder

    # ------------------------------------------------------------------ images
    def _encode_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        levels = self.model.forward_image(x)["backbone_fpn"]
        return levels[-1], tuple(levels[:-1])

    def _image_embedding(self, features: torch.Tensor) -> torch.Tensor:
        if self.model.directly_add_no_mem_embed:
            features = features + self.model.no_mem_embed.view(1, -1, 1, 1)
        return features

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

        # SAM2 encodes a box as two corner points with labels 2 and 3, placed before any clicks
        coords, labels = [], []
        if flat.boxes is not None:
            coords.append(flat.boxes.reshape(-1, 2, 2))
            labels.append(torch.tensor([2, 3], device=device).expand(rows, 2))
        if flat.points is not None:
            coords.append(flat.points)
            labels.append(flat.point_labels)
        point_input = None
        if coords:
            scaled = self.transform.points_to_input(torch.cat(coords, 1), original_size, input_size, xy_order=True)
            point_input = (scaled, torch.cat(labels, 1).int())
        mask_input = None
        if flat.mask_prompt is not None:
            mask_input = self.transform.mask_logits_to_prompt(
                flat.mask_prompt, input_size, self.prompt_encoder.mask_input_size
            )
        sparse, dense = self.prompt_encoder(points=point_input, boxes=None, masks=mask_input)
        if dense.shape[0] != rows:
            dense = dense.expand(rows, *dense.shape[1:])
            sparse = sparse.expand(rows, *sparse.shape[1:])
        if flat.dense_prompt is not None:
            dense = dense + flat.dense_prompt.to(dense.dtype)
        features = repeat_per_prompt(self._image_embedding(embeddings.features.to(device)), n)
        high_res = [repeat_per_prompt(level.to(device), n) for level in embeddings.high_res_features]
        low_res, iou, _, object_scores = self.mask_decoder(
            image_embeddings=features,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res,
        )
        out = package_outputs(self.transform, low_res, iou, len(embeddings), n, original_size, input_size,
                              multimask_output)
        out.extras["object_score_logits"] = object_scores.view(len(embeddings), n, -1)
        return out

    # ------------------------------------------------------------------ video
    def backbone_output(self, embeddings: ImageEmbeddings) -> dict[str, list[torch.Tensor]]:
        """sam2's ``backbone_out`` dict for one frame, rebuilt from cached embeddings."""
        device = self.device
        levels = [level.to(device) for level in (*embeddings.high_res_features, embeddings.features)]
        position = self.model.image_encoder.neck.position_encoding
        pos = []
        for level in levels:
            key = tuple(level.shape)
            if key not in self._pos_enc:  # depends on the shape only: compute once
                self._pos_enc[key] = position(level).to(level.dtype)
            pos.append(self._pos_enc[key])
        return {"backbone_fpn": levels, "vision_pos_enc": pos}

    def init_video_state(self, frames: torch.Tensor) -> dict:
        """sam2 inference state for in-memory frames ``(T, C, H, W)`` (no JPEG folder)."""
        if frames.ndim != 4:
            raise ValueError(f"frames must have shape (T, C, H, W), got {tuple(frames.shape)}")
        device = self.device
        return {
            "images": frames,
            "num_frames": frames.shape[0],
            "offload_video_to_cpu": False,
            "offload_state_to_cpu": False,
            "video_height": int(frames.shape[-2]),
            "video_width": int(frames.shape[-1]),
            "device": device,
            "storage_device": device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": _FrameFeatureStore(self, frames),
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }

    def propagate(
        self,
        frames: torch.Tensor,
        mask_prompts: Mapping[int, torch.Tensor] | None = None,
        box_prompts: Mapping[int, torch.Tensor] | None = None,
        direction: Literal["both", "forward", "backward"] = "both",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate prompts through frames ``(T, C, H, W)`` given in the caller's space.

        Args:
            frames: the video, or the slices of a volume (:func:`~samssl.foundation.slicewise.volume_to_slices`).
            mask_prompts: ``{frame index: (H, W) mask}`` conditioning frames (binarised at 0.5).
            box_prompts: ``{frame index: (4,) x0, y0, x1, y1 box}`` conditioning frames.
            direction: ``"both"`` runs forward from the first prompted frame to the end, then
                backward from it to frame 0, so every frame gets a prediction.

        Returns:
            ``(logits, visited)``: ``(T, H, W)`` mask logits and a ``(T,)`` bool tensor of the
            frames a pass reached. Unreached frames, like frames where SAM2 predicts that the
            object is absent, hold sam2's "no object" logit (-1024).
        """
        mask_prompts = dict(mask_prompts or {})
        box_prompts = dict(box_prompts or {})
        if not mask_prompts and not box_prompts:
            raise ValueError("propagate needs at least one mask or box prompt")
        if frames.ndim != 4:
            raise ValueError(f"frames must have shape (T, C, H, W), got {tuple(frames.shape)}")
        count = frames.shape[0]
        for index in (*mask_prompts, *box_prompts):
            if not 0 <= index < count:
                raise ValueError(f"prompt frame {index} outside the {count} frames")
        if direction not in ("both", "forward", "backward"):
            raise ValueError(f"direction must be 'both', 'forward' or 'backward', got {direction!r}")

        state = self.init_video_state(frames)
        logits = torch.full((count, *frames.shape[-2:]), NO_OBJECT_LOGIT)
        visited = torch.zeros(count, dtype=torch.bool)
        with torch.inference_mode():
            for index, mask in mask_prompts.items():
                if tuple(mask.shape) != tuple(frames.shape[-2:]):
                    raise ValueError(
                        f"mask prompt for frame {index} has shape {tuple(mask.shape)}, "
                        f"frames are {tuple(frames.shape[-2:])}"
                    )
                self.model.add_new_mask(state, frame_idx=index, obj_id=1, mask=mask > 0.5)
            for index, box in box_prompts.items():
                self.model.add_new_points_or_box(state, frame_idx=index, obj_id=1, box=torch.as_tensor(box).float())
            passes = {"both": (False, True), "forward": (False,), "backward": (True,)}[direction]
            for reverse in passes:
                for frame_idx, _, video_logits in self.model.propagate_in_video(state, reverse=reverse):
                    logits[frame_idx] = video_logits[0, 0].float().cpu()
                    visited[frame_idx] = True
        return logits.clone(), visited.clone()


def build_sam2_segmenter(variant: str | ModelVariant = "sam2.1_hiera_t", checkpoint: str | Path | None = None,
                         allow_pickle: bool = False, apply_postprocessing: bool = True,
                         image_size: int | None = None) -> Sam2Segmenter:
    """A SAM2-family model from a local checkpoint (``None`` = random init).

    ``variant`` is a name of a ``sam2`` variant or its :class:`~samssl.foundation.variants.ModelVariant`
    entry (packaged Hydra config, input size, checkpoint spec). ``image_size`` overrides the
    variant's input size (MedSAM2 is SAM2.1 Hiera-T at 512); the weights do not depend on it,
    so smaller inputs trade accuracy for CPU time.

    ``apply_postprocessing`` enables the video predictor's defaults (dynamic multimask via
    stability, binarised click masks for memory); sam2's hole filling needs its CUDA extension
    and is switched off when that is missing instead of warning on every frame.
    """
    entry = backend_variant(variant, "sam2")
    from sam2.build_sam import build_sam2_video_predictor

    size = image_size or entry.input_size
    overrides = _image_size_overrides(size) if size != PACKAGED_CONFIG_IMAGE_SIZE else []
    model = build_sam2_video_predictor(entry.architecture, ckpt_path=None, device="cpu",
                                       hydra_overrides_extra=overrides,
                                       apply_postprocessing=apply_postprocessing)
    try:
        import sam2._C  # noqa: F401
    except ImportError:
        model.fill_hole_area = 0
    weights_id = None
    if checkpoint is not None:
        weights_id = load_checkpoint_into(model, checkpoint, entry.checkpoint, allow_pickle)
    transform = replace(entry.preprocessing, target_size=size)
    return Sam2Segmenter(model, transform, name=entry.name, weights_id=weights_id)
