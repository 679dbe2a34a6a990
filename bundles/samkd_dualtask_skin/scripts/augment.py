"""Exact, invertible geometric augmentation on batches: the eight symmetries of the square.

Why not the usual random rotations? SAM's image encoder is frozen and runs once per training
image for the whole run (its embedding is cached by pixel content), so SAM must always see the
same, un-augmented image. The main network, however, should see augmented images. The two
frames are reconciled exactly: the main network sees ``g(x)`` for a random dihedral transform
``g`` (flips and 90-degree rotations: pixel permutations, no interpolation) and its outputs are
mapped back with ``g^-1`` before they meet SAM, the teacher or the labels. Every loss is then
computed in the image's own frame, and since ``g`` only permutes pixels, a per-pixel loss has the
same value in either frame. Colour jitter needs no inverse (it does not move pixels) and is
applied to the main network's copy of the image by the data pipeline.
"""

from __future__ import annotations

import torch

__all__ = ["apply_dihedral", "invert_dihedral", "random_dihedral_codes"]

NUM_DIHEDRAL = 8  # 4 rotations x (flipped or not)


def random_dihedral_codes(batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One code in ``0..7`` per image: ``code % 4`` quarter turns, then a horizontal flip when ``code >= 4``."""
    return torch.randint(NUM_DIHEDRAL, (batch_size,), generator=generator)


def _check(x: torch.Tensor, codes: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral augmentation needs square (B, C, H, H) batches, got {tuple(x.shape)}")
    if codes.shape != (x.shape[0],):
        raise ValueError(f"need one code per image: codes {tuple(codes.shape)} for a batch of {x.shape[0]}")


def apply_dihedral(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``g_code(x)`` for each image of ``x`` (B, C, H, H)."""
    _check(x, codes)
    out = []
    for image, code in zip(x, codes.tolist()):
        image = torch.rot90(image, code % 4, dims=(-2, -1))
        out.append(torch.flip(image, dims=(-1,)) if code >= 4 else image)
    return torch.stack(out)


def invert_dihedral(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``g_code^-1(x)``: undoes :func:`apply_dihedral` exactly."""
    _check(x, codes)
    out = []
    for image, code in zip(x, codes.tolist()):
        if code >= 4:
            image = torch.flip(image, dims=(-1,))
        out.append(torch.rot90(image, -(code % 4), dims=(-2, -1)))
    return torch.stack(out)
