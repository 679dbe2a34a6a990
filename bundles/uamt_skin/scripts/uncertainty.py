"""UAMT's uncertainty map and the patch exchange that builds the second-stage input.

Paper, section III-C: the uncertainty of an unlabelled image is the entropy of the *mixture* of
the teacher's and the student's softmax (eq. 2-3),

    p = (softmax(f_teacher(x)) + softmax(f_student(x))) / 2,   U = -sum_c p_c log p_c.

(The extracted text prints eq. 2 without the minus sign; entropy is meant, and the "high
confidence" regions of Fig. 3 are those of low entropy.)

The image is divided into a grid of square patches; the K patches with the highest mean
uncertainty are "uncertain", the K with the lowest are "trusted", and a new image is made by
replacing the uncertain patches with trusted ones. The paper does not say where the trusted
patches come from; like the UMIX operation of UCMT (Shen et al. 2023, which UAMT cites and
follows) we take them from another image of the batch (the next one, cyclically), so the new
image mixes reliable content from two images. The teacher's pseudo-label is moved with the
pixels, so the second stage keeps a consistent target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mixture_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-pixel entropy of the averaged teacher/student softmax (UAMT eq. 2-3): (B, C, H, W) -> (B, H, W)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {student_logits.shape} vs {teacher_logits.shape}")
    p = 0.5 * (torch.softmax(student_logits, dim=1) + torch.softmax(teacher_logits, dim=1))
    return -(p * torch.log(p + eps)).sum(dim=1)


def patch_uncertainty(uncertainty: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Mean uncertainty of each cell of a ``grid_size`` x ``grid_size`` grid: (B, H, W) -> (B, grid*grid)."""
    b, h, w = uncertainty.shape
    if h % grid_size or w % grid_size:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch grid {grid_size}x{grid_size}")
    pooled = F.avg_pool2d(uncertainty[:, None], kernel_size=(h // grid_size, w // grid_size))
    return pooled.flatten(1)


def uncertainty_guided_mix(
    images: torch.Tensor,
    targets: torch.Tensor,
    uncertainty: torch.Tensor,
    grid_size: int = 4,
    num_patches: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each image's ``num_patches`` most uncertain patches by the most trusted ones.

    Args:
        images: (B, C, H, W) unlabelled images.
        targets: (B, ...spatial-first) tensors moved with the pixels, e.g. pseudo-labels (B, 1, H, W).
        uncertainty: (B, H, W) per-pixel uncertainty (higher = less reliable).
        grid_size: the image is cut into grid_size x grid_size patches.
        num_patches: K, how many patches are exchanged per image.

    Returns:
        The mixed images and the targets mixed the same way. The donor of image ``i`` is image
        ``(i + 1) % B`` (itself when B == 1: its own trusted patches then fill its uncertain ones).
    """
    b, _, h, w = images.shape
    if targets.shape[0] != b or targets.shape[-2:] != (h, w):
        raise ValueError(f"targets {tuple(targets.shape)} do not match images {tuple(images.shape)}")
    num_cells = grid_size * grid_size
    if not 0 < num_patches <= num_cells // 2:
        raise ValueError(f"num_patches must be in 1..{num_cells // 2} for a {grid_size}x{grid_size} grid, got {num_patches}")
    scores = patch_uncertainty(uncertainty, grid_size)
    uncertain = scores.topk(num_patches, dim=1, largest=True).indices  # (B, K)
    trusted = scores.topk(num_patches, dim=1, largest=False).indices  # (B, K)
    donor = torch.roll(torch.arange(b, device=images.device), shifts=-1)

    ph, pw = h // grid_size, w // grid_size
    mixed_images, mixed_targets = images.clone(), targets.clone()
    for i in range(b):
        d = int(donor[i])
        for dst, src in zip(uncertain[i].tolist(), trusted[d].tolist()):
            dy, dx = divmod(dst, grid_size)
            sy, sx = divmod(src, grid_size)
            dst_sl = (slice(dy * ph, (dy + 1) * ph), slice(dx * pw, (dx + 1) * pw))
            src_sl = (slice(sy * ph, (sy + 1) * ph), slice(sx * pw, (sx + 1) * pw))
            mixed_images[i, :, dst_sl[0], dst_sl[1]] = images[d, :, src_sl[0], src_sl[1]]
            mixed_targets[i, ..., dst_sl[0], dst_sl[1]] = targets[d, ..., src_sl[0], src_sl[1]]
    return mixed_images, mixed_targets
