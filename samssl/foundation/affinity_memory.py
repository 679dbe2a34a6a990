"""Training-free memory propagation for a 2D promptable model without a memory (LiteMedSAM).

SSL-MedSAM2's TFFS inserts a labelled volume among an unlabelled volume's slices and lets
MedSAM2's memory attention carry every labelled frame's mask to the unlabelled frames. A 2D
model such as LiteMedSAM has no memory; the box chain (:class:`~samssl.foundation.propagation.BoxChainPropagator`)
only sees its neighbour's box, so one lost frame loses the rest of the volume. This module gives
such a model a memory without training anything, with the label-propagation protocol used to
evaluate frozen features on DAVIS video object segmentation:

- DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
  ``eval_video_segmentation.py``): each target-frame token takes the top-k most similar tokens
  (cosine of frozen, L2-normalised features) of the first (annotated) frame and of a few previous
  frames, softmax-weights them and averages their labels; an optional spatial neighbourhood.
- The contrastive random walk (Jabri et al., "Space-Time Correspondence as a Contrastive Random
  Walk", NeurIPS 2020): the same read-out with a softmax temperature, top-k and a radius
  (their test defaults: top-k 10, temperature 0.05, radius 12; DINO's: top-k 5, 7 previous frames).

Here the features are the frozen encoder's image embedding (LiteMedSAM: 256 x 64 x 64 for a
256 px frame), the annotated frames are the conditioning frames (every prompted frame, i.e. the
inserted labelled volume, its masks area-pooled onto the embedding grid) and the previous frames
are a short window of frames this propagator has already segmented, with their predicted masks.
The label read-out is a coarse foreground map on the grid; the model is then prompted with the box
of that map's largest component (LiteMedSAM follows boxes only) and its full-resolution mask is
kept where it overlaps the coarse map. The memory grows in both directions from the conditioning
frames: forward from the first prompted frame to the end, backward from the last one to frame 0.

Unlike the box chain nothing stops: a frame whose coarse map is empty is left empty, and the next
frame still reads the conditioning frames, so an object that reappears (or a frame the chain would
have lost) is found again. Labels of unprompted frames are never read: the only masks in the memory
are the prompts and this propagator's own predictions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from samssl.foundation.base import ImageEmbeddings, PromptableSegmenter
from samssl.foundation.prompts import box_prompts
from samssl.foundation.propagation import check_propagation_input

__all__ = ["AffinityMemoryPropagator"]


class AffinityMemoryPropagator:
    """Top-k cosine-affinity label propagation over frozen embeddings, refined by box prompts.

    Args:
        segmenter: a 2D :class:`~samssl.foundation.base.PromptableSegmenter` (LiteMedSAM). Attach an
            embedding cache: TFFS propagates the same frames for every insertion.
        top_k: memory tokens each query token reads (CRW: 10, DINO: 5).
        temperature: softmax temperature on the cosine affinities of the top-k (CRW: 0.05).
        window: frames already segmented by this propagator kept in the memory, most recent first
            (DINO keeps 7). Short on purpose: tokens of the same volume are far more similar to each
            other than to the labelled volume's, so a long window of (possibly empty) predictions
            outvotes the labelled frames; every conditioning frame stays in the memory regardless.
        num_conditioning: if set, each query frame reads only this many conditioning frames, those
            whose mean-pooled embedding is most similar to its own (cheaper). None (default): all of
            them, as SAM2 attends to every conditioning frame. On LA the retrieval picked the wrong
            labelled slices for one support volume (coarse Dice 0.0 against 0.33 with all of them).
        radius: if set, a query token reads only memory tokens within this many grid cells
            (Chebyshev distance) of its own position (CRW / DINO's neighbourhood). Off by default:
            the labelled volume is another patient, its atrium is not at the same pixels.
        stride: the embedding grid is average-pooled by this factor before the affinities (4: a
            16 x 16 grid for LiteMedSAM at 256 px, 16 px cells; the whole labelled volume is then read
            at about 0.1 s a frame on one core). The coarse map only places the box; LiteMedSAM draws
            the boundary at full resolution.
        threshold: the coarse map's foreground threshold. Below 0.5 because the read-out under-covers
            the object (on LA its mean inside the atrium was 0.3-0.8, outside 0.01-0.1).
        min_cells: a coarse map with fewer foreground grid cells is empty (the object is absent).
        box_margin: pixels added around the coarse component's box before decoding.
        refine: prompt the model with the coarse box (True) or return the coarse mask itself.

    The defaults (temperature 0.1, threshold 0.3, all conditioning frames, stride 4) were chosen on
    two LA pool volumes (seed-0 split, 4 labelled, 1.25 mm, 256 px frames, one insertion of each of
    two labelled volumes; ``tools/tffs_steps.py`` measures the rest of the pool): refined Dice
    0.67-0.74 per run, against 0.00-0.81 with 5 retrieved conditioning frames, temperature 0.05,
    threshold 0.5 and stride 2.
        batch_size: frames encoded per call.
    """

    def __init__(self, segmenter: PromptableSegmenter, top_k: int = 10, temperature: float = 0.1, window: int = 3,
                 num_conditioning: int | None = None, radius: int | None = None, stride: int = 4,
                 threshold: float = 0.3, min_cells: int = 2, box_margin: float = 4.0, refine: bool = True,
                 batch_size: int = 8) -> None:
        if segmenter.spatial_dims != 2:
            raise ValueError(f"affinity memory propagation needs a 2D model, got {segmenter.name} "
                             f"({segmenter.spatial_dims}D)")
        if top_k < 1 or temperature <= 0 or window < 0 or stride < 1 or min_cells < 1:
            raise ValueError("top_k, stride and min_cells must be >= 1, window >= 0 and temperature > 0")
        if num_conditioning is not None and num_conditioning < 1:
            raise ValueError(f"num_conditioning must be >= 1 or None, got {num_conditioning}")
        self.segmenter = segmenter
        self.top_k = int(top_k)
        self.temperature = float(temperature)
        self.window = int(window)
        self.num_conditioning = num_conditioning
        self.radius = radius
        self.stride = int(stride)
        self.threshold = float(threshold)
        self.min_cells = int(min_cells)
        self.box_margin = float(box_margin)
        self.refine = refine
        self.batch_size = int(batch_size)

    @property
    def settings(self) -> dict[str, object]:
        """Every setting that changes a prediction (part of TFFS's cache key)."""
        return {"top_k": self.top_k, "temperature": self.temperature, "window": self.window,
                "num_conditioning": self.num_conditioning, "radius": self.radius, "stride": self.stride,
                "threshold": self.threshold, "min_cells": self.min_cells, "box_margin": self.box_margin,
                "refine": self.refine}

    # ------------------------------------------------------------------ features
    def _encode(self, frames: torch.Tensor) -> ImageEmbeddings:
        with torch.inference_mode():
            return ImageEmbeddings.cat(self.segmenter.encode(frames[i:i + self.batch_size])
                                       for i in range(0, frames.shape[0], self.batch_size))

    def _grid(self, embeddings: ImageEmbeddings) -> tuple[int, int]:
        """Embedding cells covering the image (the rest of the grid is the model's zero padding)."""
        _, input_size = embeddings.common_geometry()
        grid = embeddings.features.shape[-2:]
        side = getattr(getattr(self.segmenter, "transform", None), "target_size", None) or max(input_size)
        valid = [min(g, math.ceil(s * g / side)) for s, g in zip(input_size, grid)]
        return max(1, valid[0] // self.stride), max(1, valid[1] // self.stride)

    def _tokens(self, embeddings: ImageEmbeddings, grid: tuple[int, int]) -> torch.Tensor:
        """``(T, G, D)`` L2-normalised tokens of the image part of the embedding grid."""
        _, input_size = embeddings.common_geometry()
        full = embeddings.features.shape[-2:]
        side = getattr(getattr(self.segmenter, "transform", None), "target_size", None) or max(input_size)
        valid = [min(g, math.ceil(s * g / side)) for s, g in zip(input_size, full)]
        features = embeddings.features[..., :valid[0], :valid[1]].float()
        features = F.adaptive_avg_pool2d(features, grid)
        return F.normalize(features.flatten(2).transpose(1, 2), dim=-1)

    @staticmethod
    def _to_grid(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(N, H, W)`` masks -> ``(N, G)`` foreground fraction of each grid cell."""
        return F.adaptive_avg_pool2d(masks.float()[:, None], grid).flatten(1)

    def _neighbourhood(self, grid: tuple[int, int]) -> torch.Tensor | None:
        if self.radius is None:
            return None
        rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        return ((rows[:, None] - rows[None]).abs().maximum((cols[:, None] - cols[None]).abs())) <= self.radius

    # ------------------------------------------------------------------ one frame
    def _read(self, query: torch.Tensor, parts: Sequence[tuple[torch.Tensor, torch.Tensor]],
              near: torch.Tensor | None) -> torch.Tensor:
        """Coarse foreground ``(G,)``: softmax over the top-k cosine affinities of each query token.

        ``parts``: the memory as ``(tokens (N, D), labels (N,))`` pieces (the conditioning frames, then
        each recent frame). The top k of the whole memory are the top k of the pieces' own top k, so
        each piece is searched where it lies and the memory is never copied into one tensor.
        """
        values, labels = [], []
        for tokens, piece_labels in parts:
            affinity = query @ tokens.transpose(0, 1)  # (G, N)
            if near is not None:
                affinity = affinity.masked_fill(~near.repeat(1, tokens.shape[0] // near.shape[1]), float("-inf"))
            top, index = affinity.topk(min(self.top_k, affinity.shape[1]), dim=1)
            values.append(top)
            labels.append(piece_labels[index])
        top_values, top_labels = torch.cat(values, dim=1), torch.cat(labels, dim=1)
        if top_values.shape[1] > self.top_k:
            top_values, keep = top_values.topk(self.top_k, dim=1)
            top_labels = top_labels.gather(1, keep)
        weights = torch.softmax(top_values / self.temperature, dim=1)
        return (weights * top_labels).sum(1)

    def _refine(self, embedding: ImageEmbeddings, coarse: torch.Tensor) -> torch.Tensor:
        """Full-resolution probability ``(H, W)`` from the upsampled coarse map ``(H, W)``."""
        region = coarse >= self.threshold
        if not self.refine:
            return region.float()
        box, _ = box_prompts(coarse[None, None], threshold=self.threshold, margin=self.box_margin)
        with torch.inference_mode():
            out = self.segmenter.decode(embedding, boxes=box[:, None])
        probability = torch.sigmoid(out.mask_logits[0, 0].float().cpu())
        components, count = ndimage.label((probability > 0.5).numpy())
        if count == 0:
            return torch.zeros_like(probability)
        touching = np.unique(components[region.numpy() & (components > 0)])
        keep = torch.from_numpy(np.isin(components, touching[touching > 0]))
        return probability * keep

    # ------------------------------------------------------------------ passes
    def _pass(self, embeddings: ImageEmbeddings, tokens: torch.Tensor, prompted: Mapping[int, torch.Tensor],
              conditioning: tuple[torch.Tensor, torch.Tensor, torch.Tensor], order: range, grid: tuple[int, int],
              size: tuple[int, int], near: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Refined and coarse probabilities ``(T, H, W)`` of the frames ``order`` reaches, and which it reached."""
        count = tokens.shape[0]
        refined, coarse_maps = torch.zeros(count, *size), torch.zeros(count, *size)
        reached = torch.zeros(count, dtype=torch.bool)
        cond_tokens, cond_labels, cond_keys = conditioning
        every_frame = (cond_tokens.flatten(0, 1), cond_labels.flatten())
        recent: list[tuple[torch.Tensor, torch.Tensor]] = []
        for t in order:
            if t in prompted:
                continue
            conditioning_part = every_frame
            if self.num_conditioning is not None and self.num_conditioning < cond_tokens.shape[0]:
                key = F.normalize(tokens[t].mean(0), dim=0)
                chosen = (cond_keys @ key).topk(self.num_conditioning).indices
                conditioning_part = (cond_tokens[chosen].flatten(0, 1), cond_labels[chosen].flatten())
            grid_map = self._read(tokens[t], [conditioning_part, *recent], near)
            if int((grid_map >= self.threshold).sum()) < self.min_cells:
                grid_map = torch.zeros_like(grid_map)
            up = F.interpolate(grid_map.view(1, 1, *grid), size=size, mode="bilinear", align_corners=False)[0, 0]
            coarse_maps[t] = (up >= self.threshold).float()
            if coarse_maps[t].any():
                refined[t] = self._refine(embeddings[t], up)
            reached[t] = True
            if self.window:
                recent.insert(0, (tokens[t], self._to_grid((refined[t] > 0.5)[None], grid)[0]))
                del recent[self.window:]
        return refined, coarse_maps, reached

    def propagate_steps(self, frames: torch.Tensor, mask_prompts: Mapping[int, torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(refined, coarse)`` foreground probabilities ``(T, H, W)``; prompted frames carry their prompt.

        ``coarse`` is the label read-out's own mask (the upsampled grid map at ``threshold``), before the
        model refines it: what each step contributes can be measured apart.
        """
        prompted = check_propagation_input(frames, mask_prompts)
        size = tuple(frames.shape[-2:])
        embeddings = self._encode(frames)
        grid = self._grid(embeddings)
        tokens = self._tokens(embeddings, grid)
        masks = {i: (mask_prompts[i].float() > 0.5).float().cpu() for i in prompted}
        cond_tokens = tokens[prompted]
        cond_labels = self._to_grid(torch.stack([masks[i] for i in prompted]), grid)
        cond_keys = F.normalize(cond_tokens.mean(1), dim=-1)
        conditioning = (cond_tokens, cond_labels, cond_keys)
        near = self._neighbourhood(grid)
        count = frames.shape[0]
        forward = self._pass(embeddings, tokens, masks, conditioning, range(prompted[0], count), grid, size, near)
        backward = self._pass(embeddings, tokens, masks, conditioning, range(prompted[-1], -1, -1), grid, size, near)
        both = (forward[2] & backward[2]).float()[:, None, None]
        outputs = []
        for k in (0, 1):
            combined = (forward[k] + backward[k]) / (1 + both)
            for i in prompted:
                combined[i] = masks[i]
            outputs.append(combined)
        return outputs[0], outputs[1]

    def propagate(self, frames: torch.Tensor, mask_prompts: Mapping[int, torch.Tensor]) -> torch.Tensor:
        return self.propagate_steps(frames, mask_prompts)[0]
