"""Build a teacher by name, so configs say ``teacher: {name: litemedsam}`` and nothing more.

Names:

=====================================  ===============================================
``litemedsam``                         LiteMedSAM, packaged weights (the default)
``sam_vit_b`` / ``sam_vit_l`` /        SAM ViT from a local checkpoint
``sam_vit_h``
``medsam``                             MedSAM (SAM ViT-B, MedSAM preprocessing)
``sam2_hiera_{t,s,b+,l}``              SAM2 from a local checkpoint
``sam2.1_hiera_{t,s,b+,l}``            SAM2.1 from a local checkpoint
``medsam2``                            MedSAM2 (SAM2.1 Hiera-T at 512) from a local checkpoint
``sam_med3d``                          SAM-Med3D (3D) from a local checkpoint
=====================================  ===============================================

Every model except LiteMedSAM needs ``checkpoint``: a teacher with random weights is
useless for training and easy to build by accident, so it takes an explicit
``random_init=True`` (meant for tests and wiring checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from samssl.foundation.base import PromptableSegmenter
from samssl.foundation.cache import EmbeddingCache

SAM_VIT_NAMES = ("sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam")
SAM2_NAMES = (
    "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
    "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
    "medsam2",
)
TEACHER_NAMES = ("litemedsam", *SAM_VIT_NAMES, *SAM2_NAMES, "sam_med3d")


def _builder(name: str) -> Callable[..., PromptableSegmenter]:
    # imports are local so that building one backend never imports the others' packages
    if name == "litemedsam":
        from samssl.foundation.litemedsam import build_litemedsam

        return build_litemedsam
    if name in SAM_VIT_NAMES:
        from samssl.foundation.sam import build_sam_vit

        return lambda **kw: build_sam_vit(name, **kw)
    if name in SAM2_NAMES:
        from samssl.foundation.sam2 import build_sam2_segmenter

        return lambda **kw: build_sam2_segmenter(name, **kw)
    if name == "sam_med3d":
        from samssl.foundation.sam_med3d import build_sam_med3d

        return build_sam_med3d
    raise ValueError(f"unknown teacher {name!r}; available: {', '.join(TEACHER_NAMES)}")


def build_teacher(
    name: str = "litemedsam",
    checkpoint: str | Path | None = None,
    *,
    cache: EmbeddingCache | Mapping[str, Any] | None = None,
    device: str | None = None,
    random_init: bool = False,
    allow_pickle: bool = False,
    **kwargs: Any,
) -> PromptableSegmenter:
    """Build a frozen teacher.

    Args:
        name: one of :data:`TEACHER_NAMES`.
        checkpoint: local weights file (required except for ``litemedsam``, whose packaged
            weights are used when it is ``None``).
        cache: an :class:`EmbeddingCache`, or its keyword arguments as a mapping (handy in
            bundle configs), attached to the teacher's ``encode``.
        device: where to put the model (default: stay on CPU).
        random_init: build without weights (tests only).
        allow_pickle: let ``torch.load`` unpickle non-tensor objects (trusted files only).
        kwargs: backend-specific options (e.g. ``image_size`` for SAM2).
    """
    build = _builder(name)
    if random_init:
        if checkpoint is not None:
            raise ValueError("give either checkpoint or random_init=True, not both")
        teacher = build(pretrained=False, **kwargs) if name == "litemedsam" else build(**kwargs)
    else:
        if checkpoint is None and name != "litemedsam":
            raise ValueError(
                f"teacher {name!r} needs a local checkpoint file (see samssl/foundation/README.md); "
                "pass random_init=True only for tests"
            )
        teacher = build(checkpoint=checkpoint, allow_pickle=allow_pickle, **kwargs)
    if cache is not None:
        teacher.embedding_cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(**cache)
    if device is not None:
        teacher.to(device)
    return teacher
