"""Shape checking and flattening of decode-time prompts.

SAM-style decoders take one prompt set per row, so B images with N prompts each become
B * N rows with the image embedding repeated N times. Doing that expansion here, before
calling the decoder, is what makes multi-image, multi-prompt batches work: the stock
``MaskDecoder.predict_masks`` repeats a single image embedding to the number of prompts and
fails when B > 1 and N > 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FlatPrompts:
    """Prompts of B images x N prompts flattened to B * N rows (caller coordinates)."""

    batch_size: int
    num_prompts: int
    boxes: torch.Tensor | None  # (B*N, 2*dims)
    points: torch.Tensor | None  # (B*N, P, dims)
    point_labels: torch.Tensor | None  # (B*N, P)
    mask_prompt: torch.Tensor | None  # (B*N, 1, *spatial)
    dense_prompt: torch.Tensor | None  # (B*N, C, *grid)


def _with_prompt_axis(t: torch.Tensor, base_ndim: int, name: str, batch_size: int) -> torch.Tensor:
    """Accept ``(B, *base)`` or ``(B, N, *base)``; return ``(B, N, *base)``."""
    if t.ndim == base_ndim + 1:
        t = t.unsqueeze(1)
    if t.ndim != base_ndim + 2:
        raise ValueError(f"{name} must have {base_ndim + 1} or {base_ndim + 2} dims, got shape {tuple(t.shape)}")
    if t.shape[0] != batch_size:
        raise ValueError(f"{name} has batch size {t.shape[0]} but the embeddings hold {batch_size} images")
    return t


def flatten_prompts(
    batch_size: int,
    spatial_dims: int,
    boxes: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
    point_labels: torch.Tensor | None = None,
    mask_prompt: torch.Tensor | None = None,
    dense_prompt: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> FlatPrompts:
    """Validate prompt shapes against the batch and flatten (B, N, ...) to (B*N, ...)."""
    if (points is None) != (point_labels is None):
        raise ValueError("points and point_labels must be given together")
    if all(p is None for p in (boxes, points, mask_prompt, dense_prompt)):
        raise ValueError("decode needs at least one prompt: boxes, points, mask_prompt or dense_prompt")

    def to(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else torch.as_tensor(t, device=device)

    boxes, points, point_labels = to(boxes), to(points), to(point_labels)
    mask_prompt, dense_prompt = to(mask_prompt), to(dense_prompt)
    counts: dict[str, int] = {}
    if boxes is not None:
        if boxes.shape[-1] != 2 * spatial_dims:
            raise ValueError(f"boxes must end in {2 * spatial_dims} coordinates, got shape {tuple(boxes.shape)}")
        boxes = _with_prompt_axis(boxes.float(), 1, "boxes", batch_size)
        counts["boxes"] = boxes.shape[1]
    if points is not None:
        if points.shape[-1] != spatial_dims:
            raise ValueError(f"points must end in {spatial_dims} coordinates, got shape {tuple(points.shape)}")
        points = _with_prompt_axis(points.float(), 2, "points", batch_size)
        point_labels = _with_prompt_axis(point_labels, 1, "point_labels", batch_size)
        if point_labels.shape != points.shape[:-1]:
            raise ValueError(
                f"point_labels shape {tuple(point_labels.shape)} does not match points {tuple(points.shape)}"
            )
        counts["points"] = points.shape[1]
    if mask_prompt is not None:
        if mask_prompt.ndim == spatial_dims + 1:
            mask_prompt = mask_prompt.unsqueeze(1)
        mask_prompt = _with_prompt_axis(mask_prompt.float(), spatial_dims, "mask_prompt", batch_size)
        counts["mask_prompt"] = mask_prompt.shape[1]
    if dense_prompt is not None:
        dense_prompt = _with_prompt_axis(dense_prompt, spatial_dims + 1, "dense_prompt", batch_size)
        counts["dense_prompt"] = dense_prompt.shape[1]

    sizes = set(counts.values())
    sizes.discard(1)  # a single prompt of one kind broadcasts against N of another
    if len(sizes) > 1:
        raise ValueError(f"prompt kinds disagree on the number of prompts per image: {counts}")
    n = sizes.pop() if sizes else 1

    def flat(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t.expand(t.shape[0], n, *t.shape[2:]) if t.shape[1] == 1 else t
        return t.reshape(batch_size * n, *t.shape[2:])

    mask_flat = flat(mask_prompt)
    return FlatPrompts(
        batch_size=batch_size,
        num_prompts=n,
        boxes=flat(boxes),
        points=flat(points),
        point_labels=None if point_labels is None else flat(point_labels).long(),
        mask_prompt=None if mask_flat is None else mask_flat.unsqueeze(1),
        dense_prompt=flat(dense_prompt),
    )


def repeat_per_prompt(t: torch.Tensor, num_prompts: int) -> torch.Tensor:
    """Repeat per-image rows so that each of the N prompts of an image gets its own copy."""
    return t if num_prompts == 1 else torch.repeat_interleave(t, num_prompts, dim=0)
