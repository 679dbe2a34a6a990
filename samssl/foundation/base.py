"""The promptable-segmenter interface every teacher backend implements.

Why an interface at all: the five methods of this project use a SAM-family model in the same
two steps, whatever the checkpoint. The image encoder is expensive and frozen, so it runs once
per image (:meth:`PromptableSegmenter.encode`, no grad, batched, cacheable); the prompt encoder
and mask decoder are cheap and are where training signal flows (prompt decoders, adapters,
LoRA), so :meth:`PromptableSegmenter.decode` is differentiable. Coordinates and masks are in
the caller's image space on both sides; resizing, padding and intensity conventions are the
backend's business (see :mod:`samssl.foundation.preprocessing`).

Shape conventions (B images, N prompts per image, P points per prompt, S spatial dims):

- ``images``: ``(B, C, *spatial)``, C = 1 or 3, any intensity range.
- ``boxes``: ``(B, N, 4)`` (or ``(B, 4)`` for N = 1), ``x0, y0, x1, y1`` in pixels for 2D;
  ``(B, N, 6)`` in voxel-index order ``d0, h0, w0, d1, h1, w1`` for 3D.
- ``points``: ``(B, N, P, 2)`` (or ``(B, P, 2)``), ``(x, y)`` in 2D, ``(d, h, w)`` in 3D;
  ``point_labels``: ``(B, N, P)`` with 1 = foreground, 0 = background, -1 = padding.
- ``mask_prompt``: ``(B, N, *spatial)`` logits in the caller's image space.
- ``dense_prompt``: ``(B, N, C_emb, *embedding spatial)`` or ``(B, C_emb, ...)``, added to
  the prompt encoder's dense embedding (learned dense prompts, e.g. from a small decoder).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from samssl.foundation import encoder_runtime as runtimes
from samssl.foundation.preprocessing import InputTransform
from samssl.foundation.prompt_batch import FlatPrompts, flatten_prompts

Size = tuple[int, ...]


@dataclass
class ImageEmbeddings:
    """Encoder output for a batch, plus the geometry needed to decode it.

    Attributes:
        features: ``(B, C, *grid)`` main image embedding fed to the mask decoder.
        high_res_features: extra feature maps some decoders use (SAM2's two high-resolution
            levels); empty for SAM / LiteMedSAM / SAM-Med3D.
        original_sizes: caller spatial size of each image.
        input_sizes: size of each image inside the padded model input.
    """

    features: torch.Tensor
    original_sizes: tuple[Size, ...]
    input_sizes: tuple[Size, ...]
    high_res_features: tuple[torch.Tensor, ...] = ()

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if len(self.original_sizes) != n or len(self.input_sizes) != n:
            raise ValueError(
                f"ImageEmbeddings: {n} feature maps but {len(self.original_sizes)} original sizes "
                f"and {len(self.input_sizes)} input sizes"
            )
        for level in self.high_res_features:
            if level.shape[0] != n:
                raise ValueError("ImageEmbeddings: high-resolution features have a different batch size")

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int | slice | Sequence[int]) -> "ImageEmbeddings":
        if isinstance(index, int):
            idx = [index]
        elif isinstance(index, slice):
            idx = list(range(len(self)))[index]
        else:
            idx = list(index)
        return ImageEmbeddings(
            features=self.features[idx],
            original_sizes=tuple(self.original_sizes[i] for i in idx),
            input_sizes=tuple(self.input_sizes[i] for i in idx),
            high_res_features=tuple(level[idx] for level in self.high_res_features),
        )

    def to(self, device: torch.device | str) -> "ImageEmbeddings":
        return replace(
            self,
            features=self.features.to(device),
            high_res_features=tuple(level.to(device) for level in self.high_res_features),
        )

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.features, *self.high_res_features)

    @classmethod
    def cat(cls, items: Iterable["ImageEmbeddings"]) -> "ImageEmbeddings":
        items = list(items)
        if not items:
            raise ValueError("cannot concatenate an empty list of embeddings")
        levels = len(items[0].high_res_features)
        if any(len(item.high_res_features) != levels for item in items):
            raise ValueError("cannot concatenate embeddings from different backends")
        return cls(
            features=torch.cat([item.features for item in items]),
            original_sizes=tuple(s for item in items for s in item.original_sizes),
            input_sizes=tuple(s for item in items for s in item.input_sizes),
            high_res_features=tuple(torch.cat([item.high_res_features[k] for item in items]) for k in range(levels)),
        )

    def common_geometry(self) -> tuple[Size, Size]:
        """The one (original, input) size pair of the batch; decoded logits need one frame."""
        if len(set(self.original_sizes)) != 1 or len(set(self.input_sizes)) != 1:
            raise ValueError(
                f"images of different sizes {sorted(set(self.original_sizes))} cannot be decoded into one "
                "tensor; decode them separately (embeddings[i:i + 1])"
            )
        return self.original_sizes[0], self.input_sizes[0]


@dataclass
class Prompts:
    """A batch of prompts in the caller's image space, ready for ``decode(emb, **p.as_kwargs())``.

    ``valid`` (``(B, N)`` bool) marks prompts that were actually found, e.g. False where a
    probability map had no confident foreground; decoding an invalid prompt is allowed but its
    output is meaningless, so callers mask it out.
    """

    boxes: torch.Tensor | None = None
    points: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    mask_prompt: torch.Tensor | None = None
    valid: torch.Tensor | None = None

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "valid" and getattr(self, f.name) is not None
        }

    def __getitem__(self, index: Any) -> "Prompts":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Prompts(**{name: None if value is None else value[index] for name, value in values.items()})


@dataclass
class SegmenterOutput:
    """Decoder output in the caller's image space.

    Attributes:
        mask_logits: ``(B, N, *spatial)``; with ``multimask_output`` the candidate with the
            highest predicted IoU (SAM's own advice for ambiguous single-click prompts).
        iou_scores: ``(B, N)`` predicted IoU of ``mask_logits``.
        low_res_logits: ``(B, N, *low-res grid)`` in the model's padded input frame, what SAM
            calls ``low_res_masks``.
        all_mask_logits, all_iou_scores: ``(B, N, M, ...)`` every candidate when
            ``multimask_output`` is set, else ``None``.
    """

    mask_logits: torch.Tensor
    iou_scores: torch.Tensor
    low_res_logits: torch.Tensor
    all_mask_logits: torch.Tensor | None = None
    all_iou_scores: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class PromptableSegmenter(nn.Module, abc.ABC):
    """A frozen SAM-family teacher: ``encode`` once per image, ``decode`` per prompt.

    Subclasses implement :meth:`_encode_input` (model input -> embeddings) and
    :meth:`decode`. The encoder's parameters are frozen at construction; decoder parameters
    are frozen too (a teacher), but gradients still flow through the decoder to its inputs
    (``dense_prompt``, ``mask_prompt``) and to any adapter/LoRA parameters added later.
    Unfreeze the decoder explicitly (``teacher.mask_decoder.requires_grad_(True)``) to tune it.

    Attributes:
        name: registry name of the backend.
        transform: preprocessing that maps caller images into the model input.
        default_prompt: the prompt kind the backend follows zero-shot (``"box"`` for
            LiteMedSAM, which ignores points on its own).
        weights_id: identifies the weights (checkpoint file hash, or a per-instance token for
            random init) so the embedding cache never mixes two models.
        embedding_cache: optional :class:`~samssl.foundation.cache.EmbeddingCache` used by
            :meth:`encode`.
    """

    name: str = "promptable-segmenter"
    default_prompt: str = "box"
    spatial_dims: int = 2
    #: whether the prompt encoder has a box embedding (SAM-Med3D's has none)
    accepts_boxes: bool = True
    #: the ``encoder_runtime`` values this backend accepts (:mod:`samssl.foundation.encoder_runtime`);
    #: a backend adopts the faster runtimes by listing them once its encoder is known to export
    encoder_runtimes: tuple[str, ...] = ("fp32",)

    def __init__(self, transform: InputTransform, weights_id: str | None = None) -> None:
        super().__init__()
        self.transform = transform
        self.weights_id = weights_id or f"random-init-{id(self):x}"
        self.embedding_cache = None  # set by the registry or the caller
        self.encoder_runtime = "fp32"
        self._auto_runtime: tuple[str, str] | None = None  # (weights_id, choice) once ``auto`` is resolved
        self._encoder_runners: dict[tuple, runtimes.EncoderRunner] = {}

    # ------------------------------------------------------------------ encoding
    @property
    def encoder_weights_id(self) -> str:
        """Identifies the image encoder's weights alone: the embedding cache's and the encoder runtimes' key.

        ``weights_id`` (the whole model) unless a tuning changed the decoder only
        (:func:`samssl.foundation.tuned.load_tuned_teacher` without LoRA): such a teacher computes
        the base model's embeddings, so it reuses their cache entries and compiled encoders.
        """
        return getattr(self, "_encoder_weights_id", None) or self.weights_id

    @property
    @abc.abstractmethod
    def image_encoder(self) -> nn.Module:
        """The (frozen) image encoder module; LoRA targets its attention layers."""

    @abc.abstractmethod
    def _encode_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Model input ``(B, C, *target)`` -> ``(features, high_res_features)``."""

    def cache_namespace(self) -> str:
        """Everything besides the pixels that determines an embedding (cache key prefix).

        A reduced-precision runtime (bf16, OpenVINO bf16) changes the embedding beyond its last
        bits, so it is part of the key; the float32 runtimes (eager, ONNX Runtime, OpenVINO f32)
        add nothing (:func:`~samssl.foundation.encoder_runtime.embedding_precision`), so caches
        written before runtimes existed stay valid and ``auto`` choosing another float32 engine on
        another thread count still reads them.
        """
        namespace = f"{self.name}|{self.encoder_weights_id}|{self.transform.signature()}"
        precision = runtimes.embedding_precision(self.effective_encoder_runtime())
        return namespace if precision == "fp32" else f"{namespace}|encoder={precision}"

    # ------------------------------------------------------------------ encoder runtime
    def set_encoder_runtime(self, name: str) -> "PromptableSegmenter":
        """Run the frozen encoder by ``name`` (``fp32``, ``bf16``, ``onnxruntime``, ``openvino``, ...).

        Raises:
            InvalidInputError: ``name`` is not a runtime this backend accepts (the message lists them).
        """
        runtimes.check_encoder_runtime(name, self.encoder_runtimes)
        self.encoder_runtime = name
        self._auto_runtime = None
        self._encoder_runners.clear()
        return self

    def effective_encoder_runtime(self, images: torch.Tensor | None = None) -> str:
        """The runtime the next no-grad encode uses (``auto`` resolved, calibrating on ``images`` once).

        fp32 whenever another runtime could be wrong or cannot run: a model off the CPU, or an
        encoder with trainable parameters (LoRA being tuned).
        """
        if self.encoder_runtime == "fp32" or self.device.type != "cpu":
            return "fp32"
        if any(p.requires_grad for p in self.image_encoder.parameters()):
            return "fp32"
        if self.encoder_runtime != "auto":
            return self.encoder_runtime
        if self._auto_runtime is None or self._auto_runtime[0] != self.encoder_weights_id:
            frames = self._calibration_frames(images)
            choice = runtimes.choose_auto(self.image_encoder, self._runtime_identity(), frames,
                                          lambda features: self._calibration_masks(features, frames))
            self._auto_runtime = (self.encoder_weights_id, choice)
        return self._auto_runtime[1]

    def _runtime_identity(self) -> str:
        return f"{self.name}|{self.encoder_weights_id}"

    def _calibration_frames(self, images: torch.Tensor | None) -> torch.Tensor:
        """Model-input frames for ``auto``: the first two images it is asked to encode, else a phantom."""
        if images is None or images.shape[0] == 0:
            grid = torch.linspace(-1, 1, 192)
            yy, xx = torch.meshgrid(grid, grid, indexing="ij")
            blob = ((xx / 0.6) ** 2 + (yy / 0.4) ** 2 < 1).float()
            texture = 0.1 * torch.sin(12 * xx) * torch.cos(9 * yy)
            images = (0.3 + 0.5 * blob + texture).expand(1, 3, -1, -1) * 255
        x, _, _ = self.transform.images_to_input(images[:2].to(self.device))
        return x

    def _calibration_masks(self, features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Masks of three centred boxes (40, 70, 90 % of the side) per frame, for ``auto``'s parity check."""
        size = tuple(frames.shape[2:])
        n = features.shape[0]
        embeddings = ImageEmbeddings(features=features, original_sizes=(size,) * n, input_sizes=(size,) * n)
        extent = torch.tensor([size[-1], size[-2], size[-1], size[-2]], dtype=torch.float32)
        boxes = torch.stack([torch.tensor([0.5 - f / 2, 0.5 - f / 2, 0.5 + f / 2, 0.5 + f / 2]) * extent
                             for f in (0.4, 0.7, 0.9)])
        with torch.inference_mode():
            return self.decode(embeddings, boxes=boxes.expand(n, -1, -1)).mask_logits > 0

    def _run_image_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """``image_encoder(x)``, by the configured runtime when no gradient is wanted (backends call this)."""
        if torch.is_grad_enabled():
            return self.image_encoder(x)
        runtime = self.effective_encoder_runtime()
        if runtime == "fp32":
            return self.image_encoder(x)
        key = (runtime, self.encoder_weights_id, tuple(x.shape[1:]))
        runner = self._encoder_runners.get(key)
        if runner is None:
            self._encoder_runners.clear()  # an older key means other weights: never reuse its engine
            runner = self._encoder_runners[key] = runtimes.build_runner(
                self.image_encoder, runtime, self._runtime_identity(), (1, *x.shape[1:]))
        return runner(x)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the compiled engines behind (they rebuild on first use)."""
        state = dict(super().__getstate__())
        state["_encoder_runners"] = {}
        return state

    # ------------------------------------------------------------------ encode
    def encode(self, images: torch.Tensor, *, requires_grad: bool = False) -> ImageEmbeddings:
        """Embed a batch of images ``(B, C, *spatial)`` given in the caller's space.

        Runs without autograd, so it can be called inside a training step at no memory cost
        and its result can be cached. ``requires_grad=True`` is for tuning the encoder itself
        (LoRA): it bypasses the cache and keeps the graph. The frozen path runs the encoder by
        :attr:`encoder_runtime` (``auto`` is resolved here, on the first images it sees).
        """
        if requires_grad:
            return self._encode_uncached(images, grad=True)
        # The frozen encoder's precision is its runtime's, never the caller's: inside a student's
        # bfloat16 autocast step, fp32 would silently run in bf16 (and be cached as fp32), ``auto``
        # would calibrate bf16 against bf16, and an exported engine would bake bf16 casts into its graph.
        with torch.autocast(torch.device(self.device).type, enabled=False):
            self.effective_encoder_runtime(images)
            if self.embedding_cache is not None:
                return self.embedding_cache.encode(self, images)
            return self._encode_uncached(images, grad=False)

    def _encode_uncached(self, images: torch.Tensor, grad: bool = False) -> ImageEmbeddings:
        device = self.device
        x, original_size, input_size = self.transform.images_to_input(images.to(device))
        with torch.set_grad_enabled(grad):
            features, high_res = self._encode_input(x)
        n = x.shape[0]
        return ImageEmbeddings(
            features=features,
            high_res_features=tuple(high_res),
            original_sizes=(original_size,) * n,
            input_sizes=(input_size,) * n,
        )

    # ------------------------------------------------------------------ decoding
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
        """Predict masks for prompts given in the caller's image space (differentiable).

        The prompts are validated and flattened to one row per (image, prompt) here, once for
        every backend; the backend maps the flat prompts to its model in :meth:`_decode_flat`.
        """
        if boxes is not None and not self.accepts_boxes:
            raise ValueError(f"{self.name} takes point prompts (and masks), not boxes: its prompt encoder has no box embedding")
        original_size, input_size = embeddings.common_geometry()
        flat = flatten_prompts(
            len(embeddings), self.spatial_dims, boxes, points, point_labels, mask_prompt, dense_prompt, self.device
        )
        return self._decode_flat(embeddings, flat, original_size, input_size, multimask_output)

    @abc.abstractmethod
    def _decode_flat(
        self,
        embeddings: ImageEmbeddings,
        flat: FlatPrompts,
        original_size: Size,
        input_size: Size,
        multimask_output: bool,
    ) -> SegmenterOutput:
        """Run the prompt encoder and mask decoder on validated, flattened prompts."""

    def forward(self, images: torch.Tensor, **prompts: Any) -> SegmenterOutput:
        """``decode(encode(images), **prompts)``: one-shot convenience for inference."""
        return self.decode(self.encode(images), **prompts)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def freeze(self) -> "PromptableSegmenter":
        """Freeze every parameter and switch to eval mode (the teacher default)."""
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "PromptableSegmenter":
        """Keep the encoder in eval mode whatever ``mode`` says.

        Frozen encoders are used as feature extractors; switching their dropout/norm layers to
        training behaviour would silently change the embeddings (and poison the cache).
        """
        super().train(mode)
        self.image_encoder.eval()
        return self
