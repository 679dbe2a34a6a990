"""Prompts for a teacher from a network's probability map (and, optionally, its uncertainty).

In semi-supervised training the teacher is prompted on *unlabelled* images, so prompts must
come from a model's prediction, never from ground truth. The functions here therefore take a
probability map and an optional uncertainty map and nothing else: there is no argument through
which a label could enter (a test checks the signatures). The official SemiSAM code built its
clicks from the ground truth of the "unlabelled" cases; this module makes that impossible.

What is produced:

- a **box** around the confident foreground: pixels with ``probability >= threshold`` (and
  ``uncertainty <= max_uncertainty`` when given), largest connected component by default,
  optionally grown by ``margin`` pixels and randomly perturbed by ``jitter`` (a fraction of
  the box size per side, the augmentation MedSAM was trained with);
- **points**: ``num_positive`` foreground and ``num_negative`` background points drawn at
  random from the *low-uncertainty* part of each region, padded with label -1 when a region
  has too few pixels.

Dimensions follow the input: ``(B, 1, H, W)`` gives 2D prompts in SAM's ``(x, y)`` order,
``(B, 1, D, H, W)`` gives 3D prompts in voxel-index order ``(d, h, w)`` as SAM-Med3D expects.
:func:`slice_prompts` gives 2D prompts for every slice of a volume.
"""

from __future__ import annotations

import math

import torch
from monai.transforms.utils import get_largest_connected_component_mask

from samssl.foundation.base import Prompts


def binary_entropy(probability: torch.Tensor) -> torch.Tensor:
    """Entropy of a foreground probability, scaled to [0, 1] (1 = p of 0.5)."""
    p = probability.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log()) / math.log(2)


def _check_maps(probability: torch.Tensor, uncertainty: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(probability, torch.Tensor) or probability.ndim not in (4, 5) or probability.shape[1] != 1:
        shape = tuple(probability.shape) if isinstance(probability, torch.Tensor) else type(probability).__name__
        raise ValueError(f"probability must be a tensor of shape (B, 1, H, W) or (B, 1, D, H, W), got {shape}")
    probability = probability.detach().float()
    if uncertainty is None:
        uncertainty = binary_entropy(probability)
    elif uncertainty.shape != probability.shape:
        raise ValueError(
            f"uncertainty shape {tuple(uncertainty.shape)} differs from probability {tuple(probability.shape)}"
        )
    return probability[:, 0], uncertainty.detach().float()[:, 0]


def _confident(region: torch.Tensor, uncertainty: torch.Tensor, max_uncertainty: float | None) -> torch.Tensor:
    return region if max_uncertainty is None else region & (uncertainty <= max_uncertainty)


def box_prompts(
    probability: torch.Tensor,
    uncertainty: torch.Tensor | None = None,
    threshold: float = 0.5,
    max_uncertainty: float | None = None,
    largest_component: bool = True,
    margin: float = 0.0,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding box of the confident foreground of each image.

    Returns:
        ``(boxes, valid)``: boxes ``(B, 4)`` as ``x0, y0, x1, y1`` for 2D or ``(B, 6)`` as
        ``d0, h0, w0, d1, h1, w1`` for 3D, in pixel coordinates of the input; ``valid`` (B,)
        is False where no confident foreground exists (the box then covers the whole image).
    """
    prob, unc = _check_maps(probability, uncertainty)
    dims = prob.ndim - 1
    spatial = torch.tensor(prob.shape[1:], dtype=torch.float32)
    boxes, valid = [], []
    for p, u in zip(prob, unc):
        region = _confident(p >= threshold, u, max_uncertainty)
        if largest_component and region.any():
            region = get_largest_connected_component_mask(region).bool()
        idx = torch.nonzero(region)
        if idx.numel() == 0:
            low, high = torch.zeros(dims), spatial - 1
            valid.append(False)
        else:
            low, high = idx.amin(0).float(), idx.amax(0).float()
            valid.append(True)
            if jitter > 0:
                extent = (high - low + 1)
                shift = (torch.rand(2, dims, generator=generator) * 2 - 1) * jitter * extent
                low, high = low + shift[0], high + shift[1]
            low, high = low - margin, high + margin
            low = torch.maximum(low, torch.zeros(dims))
            high = torch.minimum(high, spatial - 1)
        if dims == 2:  # SAM's boxes are (x, y) = (column, row)
            low, high = low.flip(0), high.flip(0)
        boxes.append(torch.cat([low, high]))
    return torch.stack(boxes).to(probability.device), torch.tensor(valid, device=probability.device)


def _sample(region: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    idx = torch.nonzero(region)
    if idx.shape[0] > count:
        idx = idx[torch.randperm(idx.shape[0], generator=generator)[:count]]
    return idx.float()


def point_prompts(
    probability: torch.Tensor,
    uncertainty: torch.Tensor | None = None,
    num_positive: int = 1,
    num_negative: int = 1,
    threshold: float = 0.5,
    max_uncertainty: float | None = None,
    uncertainty_quantile: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background points from the low-uncertainty part of each region.

    A pixel is a foreground candidate when ``probability >= threshold`` and a background
    candidate when ``probability < threshold``; candidates are then restricted to
    ``uncertainty <= max_uncertainty`` or, when that is ``None``, to the most certain
    ``uncertainty_quantile`` of the region's pixels.

    Returns:
        ``(points, labels)``: ``(B, P, dims)`` with ``P = num_positive + num_negative``
        (``(x, y)`` in 2D, ``(d, h, w)`` in 3D) and ``(B, P)`` labels 1/0, -1 for padding
        where a region had too few pixels.
    """
    if num_positive < 0 or num_negative < 0 or num_positive + num_negative == 0:
        raise ValueError(f"need a positive number of points, got {num_positive} positive and {num_negative} negative")
    if not 0 < uncertainty_quantile <= 1:
        raise ValueError(f"uncertainty_quantile must be in (0, 1], got {uncertainty_quantile}")
    prob, unc = _check_maps(probability, uncertainty)
    dims = prob.ndim - 1
    total = num_positive + num_negative
    points = torch.zeros(prob.shape[0], total, dims)
    labels = torch.full((prob.shape[0], total), -1, dtype=torch.long)
    for b, (p, u) in enumerate(zip(prob, unc)):
        column = 0
        for region, count, label in ((p >= threshold, num_positive, 1), (p < threshold, num_negative, 0)):
            if count == 0 or not region.any():
                continue
            if max_uncertainty is not None:
                region = region & (u <= max_uncertainty)
            elif uncertainty_quantile < 1:
                values = u[region].double().cpu()
                values = values[:: max(1, values.numel() // 1_000_000)]  # torch.quantile's size limit
                cutoff = torch.quantile(values, uncertainty_quantile).item()
                region = region & (u <= cutoff)
            chosen = _sample(region, count, generator)
            points[b, column:column + len(chosen)] = chosen
            labels[b, column:column + len(chosen)] = label
            column += len(chosen)  # padding (label -1) collects at the end
    if dims == 2:
        points = points.flip(-1)
    return points.to(probability.device), labels.to(probability.device)


def prompts_from_probability(
    probability: torch.Tensor,
    uncertainty: torch.Tensor | None = None,
    kind: str = "box",
    threshold: float = 0.5,
    max_uncertainty: float | None = None,
    num_positive: int = 1,
    num_negative: int = 1,
    largest_component: bool = True,
    margin: float = 0.0,
    jitter: float = 0.0,
    uncertainty_quantile: float = 0.5,
    generator: torch.Generator | None = None,
) -> Prompts:
    """One prompt per image (``N = 1``) of the requested ``kind``: box, points or box+points.

    The result feeds ``teacher.decode(embeddings, **prompts.as_kwargs())``; ``prompts.valid``
    is False for images without confident foreground.
    """
    if kind not in ("box", "points", "box+points"):
        raise ValueError(f"kind must be 'box', 'points' or 'box+points', got {kind!r}")
    prompts = Prompts()
    valid = None
    if "box" in kind:
        boxes, valid = box_prompts(probability, uncertainty, threshold, max_uncertainty, largest_component,
                                   margin, jitter, generator)
        prompts.boxes = boxes[:, None]
    if "points" in kind:
        points, labels = point_prompts(probability, uncertainty, num_positive, num_negative, threshold,
                                       max_uncertainty, uncertainty_quantile, generator)
        prompts.points, prompts.point_labels = points[:, None], labels[:, None]
        has_fg = (labels == 1).any(dim=1)
        valid = has_fg if valid is None else valid & has_fg
    prompts.valid = valid[:, None]
    return prompts


def slice_prompts(
    probability: torch.Tensor,
    uncertainty: torch.Tensor | None = None,
    axis: int = -1,
    **kwargs: object,
) -> Prompts:
    """2D prompts for every slice of a volume ``(1, X, Y, Z)`` along a spatial ``axis``.

    Slice ``s`` is the image ``volume[0].select(axis, s)`` (rows = first remaining axis,
    columns = second), which is how :mod:`samssl.foundation.slicewise` cuts volumes too.
    The result has one row per slice (``B = number of slices``).
    """
    if probability.ndim != 4 or probability.shape[0] != 1:
        raise ValueError(f"probability must be a channel-first volume (1, X, Y, Z), got {tuple(probability.shape)}")
    dim = 1 + (axis % 3)
    slices = torch.movedim(probability, dim, 0)  # (S, 1, H, W)
    unc = None if uncertainty is None else torch.movedim(uncertainty, dim, 0)
    return prompts_from_probability(slices, unc, **kwargs)
