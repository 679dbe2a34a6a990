"""Run a 2D teacher over the slices of a 3D volume.

Two of the 3D methods (SemiSAM with a 2D SAM, SFR's stitched slices) need a 2D promptable
model on volumes. This module cuts a channel-first volume ``(C, X, Y, Z)`` into slices along
one spatial axis, runs the backend on all of them or on a chosen subset in batches (each slice
is resized to the backend's input and its logits back by the backend itself), and stacks the
logits into a volume again. Each slice goes through the backend's ``encode``, so with an
:class:`~samssl.foundation.cache.EmbeddingCache` attached every slice is encoded once per run,
however many iterations ask for it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from samssl.foundation.base import PromptableSegmenter, Prompts
from samssl.foundation.preprocessing import PAD_LOGIT
from samssl.foundation.prompts import slice_prompts


def volume_to_slices(volume: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """``(C, X, Y, Z)`` -> ``(S, C, H, W)``: slice ``s`` is ``volume[:, ..., s, ...]`` along ``axis``."""
    if volume.ndim != 4:
        raise ValueError(f"volume must be channel-first (C, X, Y, Z), got shape {tuple(volume.shape)}")
    return torch.movedim(volume, 1 + axis % 3, 0)


def slices_to_volume(slices: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """Inverse of :func:`volume_to_slices`."""
    return torch.movedim(slices, 0, 1 + axis % 3)


class SliceWiseSegmenter:
    """A 2D :class:`PromptableSegmenter` applied slice by slice to volumes.

    Args:
        backend: the 2D teacher.
        axis: spatial axis to slice along (-1 = the last one, axial for RAS volumes).
        batch_size: slices encoded and decoded together (bounds memory).
        empty_logit: logit written into slices that are not segmented.
    """

    def __init__(self, backend: PromptableSegmenter, axis: int = -1, batch_size: int = 8,
                 empty_logit: float = PAD_LOGIT) -> None:
        if backend.spatial_dims != 2:
            raise ValueError(
                f"slice-wise segmentation needs a 2D backend, got {backend.name} ({backend.spatial_dims}D)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.axis = axis
        self.batch_size = batch_size
        self.empty_logit = empty_logit

    def segment(
        self,
        volume: torch.Tensor,
        prompts: Prompts,
        slices: Sequence[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask logits ``(N, X, Y, Z)`` for a volume ``(C, X, Y, Z)``.

        Args:
            volume: channel-first volume; each slice is normalised by the backend.
            prompts: 2D prompts for *every* slice along the axis (row s = slice s), e.g. from
                :func:`~samssl.foundation.prompts.slice_prompts`.
            slices: indices (or a boolean mask) of the slices to segment; by default the slices
                whose prompt is valid (all, when ``prompts.valid`` is unset).
        """
        images = volume_to_slices(volume, self.axis)
        count = images.shape[0]
        if slices is None and prompts.valid is None:
            chosen = list(range(count))
        elif slices is None:
            chosen = torch.nonzero(prompts.valid.reshape(count, -1).any(1)).flatten().tolist()
        elif isinstance(slices, torch.Tensor) and slices.dtype == torch.bool:
            chosen = torch.nonzero(slices).flatten().tolist()
        else:
            chosen = [int(s) for s in slices]
        if any(not 0 <= s < count for s in chosen):
            raise ValueError(f"slice indices must lie in [0, {count}), got {chosen}")

        out: torch.Tensor | None = None
        for start in range(0, len(chosen), self.batch_size):
            index = chosen[start:start + self.batch_size]
            embeddings = self.backend.encode(images[index])
            result = self.backend.decode(embeddings, **prompts[index].as_kwargs())
            logits = result.mask_logits  # (b, N, H, W)
            if out is None:
                out = logits.new_full((count, *logits.shape[1:]), self.empty_logit)
            out[index] = logits
        if out is None:  # nothing to segment: an all-background volume
            out = images.new_full((count, 1, *images.shape[2:]), self.empty_logit, dtype=torch.float32)
        return slices_to_volume(out, self.axis)

    def segment_from_probability(
        self,
        volume: torch.Tensor,
        probability: torch.Tensor,
        uncertainty: torch.Tensor | None = None,
        kind: str | None = None,
        **prompt_kwargs: object,
    ) -> tuple[torch.Tensor, Prompts]:
        """Prompt every slice from a student's probability map and segment the valid ones.

        Returns the logits volume ``(1, X, Y, Z)`` and the per-slice prompts used.
        """
        prompts = slice_prompts(probability, uncertainty, axis=self.axis,
                                kind=kind or self.backend.default_prompt, **prompt_kwargs)
        return self.segment(volume, prompts), prompts


# ---------------------------------------------------------------------------------------------
# Patches of a volume: where a (cropped, flipped, rotated) training patch lies in its volume.
#
# A 2D teacher run on the slices of random patches sees different pixels at every crop, so its
# embeddings can never be cached. Run on whole slices of the volume instead, the encoder sees
# each slice once per run; the maps below carry a patch slice's prompts into the whole slice and
# the teacher's output back into the patch.


def patch_to_volume_map(patch_affine: torch.Tensor, volume_affine: torch.Tensor) -> torch.Tensor:
    """Integer 4x4 map from patch voxel indices to volume voxel indices.

    ``inv(volume_affine) @ patch_affine`` for a patch cut from the volume by crops, padding, flips
    and 90-degree rotations: a signed permutation plus a translation. Anything else (a patch that
    was resampled or rotated by other angles) is refused.
    """
    mapping = torch.linalg.inv(volume_affine.double().cpu()) @ patch_affine.double().cpu()
    rounded = mapping.round()
    linear = rounded[:3, :3]
    is_permutation = bool(((linear.abs() == 1).sum(0) == 1).all() and ((linear.abs() == 1).sum(1) == 1).all()
                          and (linear.abs().sum() == 3))
    if not is_permutation or not torch.allclose(mapping, rounded, atol=1e-3):
        raise ValueError(
            "the patch is not an axis-aligned crop of the volume (voxel map "
            f"{mapping[:3].tolist()}): it must come from the same resampled grid by crops, flips and "
            "90-degree rotations only"
        )
    return rounded.long()


class PatchSliceMap:
    """Pixel correspondence between one slice of a patch and the whole slice of its volume.

    Args:
        mapping: patch-to-volume voxel map from :func:`patch_to_volume_map`.
        patch_shape: spatial shape of the patch ``(X, Y, Z)``.
        volume_shape: spatial shape of the volume.
        axis: the slicing axis (of the patch; the map must send it to a volume axis, which becomes
            the volume's slicing axis ``volume_axis``).
        index: slice index in the patch.

    Attributes:
        volume_axis, volume_index: which slice of the volume the patch slice lies in.
        rows, cols: ``(h, w)`` coordinates of every patch-slice pixel in the whole volume slice
            (its two remaining axes in array order); ``inside`` marks pixels inside the volume
            (patch padding maps outside).
    """

    def __init__(self, mapping: torch.Tensor, patch_shape: Sequence[int], volume_shape: Sequence[int],
                 axis: int, index: int) -> None:
        axis = axis % 3
        if not 0 <= index < patch_shape[axis]:
            raise ValueError(f"slice index {index} outside the patch's {patch_shape[axis]} slices along axis {axis}")
        linear = mapping[:3, :3]
        self.volume_axis = int(torch.nonzero(linear[:, axis]).flatten()[0])
        grids = torch.meshgrid(*[torch.arange(s) if d != axis else torch.tensor([index])
                                 for d, s in enumerate(patch_shape)], indexing="ij")
        patch_index = torch.stack([g.reshape(-1) for g in grids], dim=1)  # (h*w, 3)
        volume_index = patch_index @ linear.T + mapping[:3, 3]
        self.volume_index = int(volume_index[0, self.volume_axis])
        plane_shape = [s for d, s in enumerate(patch_shape) if d != axis]
        in_plane = [d for d in range(3) if d != self.volume_axis]
        self.slice_shape = tuple(int(volume_shape[d]) for d in in_plane)
        self.rows = volume_index[:, in_plane[0]].reshape(plane_shape)
        self.cols = volume_index[:, in_plane[1]].reshape(plane_shape)
        self.inside = ((self.rows >= 0) & (self.rows < self.slice_shape[0]) & (self.cols >= 0)
                       & (self.cols < self.slice_shape[1]))
        self.slice_inside = 0 <= self.volume_index < int(volume_shape[self.volume_axis])

    def to_slice(self, values: torch.Tensor, fill: float) -> torch.Tensor:
        """Scatter patch-slice values ``(h, w)`` into a whole-slice canvas filled with ``fill``."""
        canvas = values.new_full(self.slice_shape, fill)
        inside = self.inside.to(values.device)
        canvas[self.rows.to(values.device)[inside], self.cols.to(values.device)[inside]] = values[inside]
        return canvas

    def from_slice(self, values: torch.Tensor, fill: float) -> torch.Tensor:
        """Gather whole-slice values ``(..., H, W)`` back onto the patch slice ``(..., h, w)``."""
        inside = self.inside.to(values.device)
        rows = self.rows.to(values.device).clamp(0, self.slice_shape[0] - 1)
        cols = self.cols.to(values.device).clamp(0, self.slice_shape[1] - 1)
        gathered = values[..., rows, cols]
        return torch.where(inside, gathered, gathered.new_full((), fill))
