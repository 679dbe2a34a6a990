"""The fused mask prompt: a dual-task network's mask and SDF combined into one SAM prompt.

Huynh et al. (section 2.1, "Fused Mask Prompt Generation") fuse the main network's mask, which
carries *region confidence*, with its signed distance map, which carries *boundary geometry*,
into a single mask prompt for SAM. The paper gives no formula; the fusion here adds the two
cues in log-odds space, where SAM's mask prompts live (SAM takes mask *logits*):

    region   = logit(p),            p = foreground probability of the mask head (clipped)
    geometry = -k * sdf             = logit(sigmoid(-k * sdf)), the SDF read as a soft mask
    fused    = alpha * region + (1 - alpha) * geometry

Where both heads agree the fused logit is strongly signed; where they disagree (typically along
an uncertain boundary) it is near 0, i.e. the prompt tells SAM "undecided" exactly there. The
SDF term also grades the prompt with the distance to the boundary, which a thresholded mask
cannot. ``k`` (default 20) sets how fast the geometry term saturates in normalised SDF units.

LiteMedSAM follows box prompts only zero-shot, so :func:`fused_prompts` also returns the box of
the main network's own mask (never of a label); ``use_box=False`` drops it for backends that
follow mask prompts alone.
"""

from __future__ import annotations

import torch

from samssl.foundation.base import Prompts
from samssl.foundation.prompts import box_prompts

__all__ = ["fused_mask_logits", "fused_prompts"]


def _foreground_probability(mask_logits: torch.Tensor) -> torch.Tensor:
    if mask_logits.ndim != 4:
        raise ValueError(f"mask logits must be (B, C, H, W), got {tuple(mask_logits.shape)}")
    if mask_logits.shape[1] == 1:
        return torch.sigmoid(mask_logits)
    if mask_logits.shape[1] == 2:
        return torch.softmax(mask_logits, dim=1)[:, 1:]
    raise ValueError(f"the fused prompt needs one foreground class (1 or 2 channels), got {mask_logits.shape[1]}")


def fused_mask_logits(mask_logits: torch.Tensor, sdf: torch.Tensor, alpha: float = 0.5, k: float = 20.0,
                      clip: float = 10.0) -> torch.Tensor:
    """Fuse mask logits ``(B, 1|2, H, W)`` and an SDF ``(B, 1, H, W)`` into prompt logits ``(B, 1, H, W)``.

    Args:
        alpha: weight of the region term (1 = mask only, 0 = SDF only).
        k: log-odds per unit of normalised signed distance in the geometry term.
        clip: both terms are clipped to ``[-clip, clip]`` log-odds so one overconfident head
            cannot silence the other.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if k <= 0 or clip <= 0:
        raise ValueError(f"k and clip must be > 0, got k={k}, clip={clip}")
    p = _foreground_probability(mask_logits.float())
    if sdf.shape != p.shape:
        raise ValueError(f"sdf {tuple(sdf.shape)} must be (B, 1, H, W) like the mask {tuple(p.shape)}")
    eps = torch.finfo(p.dtype).eps
    region = torch.logit(p.clamp(eps, 1 - eps)).clamp(-clip, clip)
    geometry = (-k * sdf.float()).clamp(-clip, clip)
    return alpha * region + (1.0 - alpha) * geometry


def fused_prompts(mask_logits: torch.Tensor, sdf: torch.Tensor, use_box: bool = True, alpha: float = 0.5,
                  k: float = 20.0, clip: float = 10.0, box_margin: float = 0.0) -> Prompts:
    """One prompt per image from a dual-task prediction: the fused mask prompt (+ the mask's box).

    Both inputs are detached: the prompt is a target-side input of SAM, and SAM's loss must not
    train the network that produced it. ``valid`` is False where the network predicts no
    foreground (its box then spans the image); callers leave those images out of SAM's losses.

    Returns:
        :class:`Prompts` with ``mask_prompt`` ``(B, 1, H, W)`` logits, ``boxes`` ``(B, 1, 4)``
        (when ``use_box``) and ``valid`` ``(B, 1)``.
    """
    mask_logits, sdf = mask_logits.detach(), sdf.detach()
    probability = _foreground_probability(mask_logits.float())
    prompts = Prompts(mask_prompt=fused_mask_logits(mask_logits, sdf, alpha, k, clip))
    boxes, valid = box_prompts(probability, threshold=0.5, largest_component=True, margin=box_margin)
    if use_box:
        prompts.boxes = boxes[:, None]
    prompts.valid = valid[:, None]
    return prompts
