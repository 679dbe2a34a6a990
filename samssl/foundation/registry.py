"""Build a foundation model by name, so configs say ``name: litemedsam`` and nothing more.

Names are the keys of :data:`VARIANTS`, the one table of variants
(:mod:`samssl.foundation.variants`, re-exported here); each entry names its backend module and
builder, the network, the checkpoint spec and the input convention:

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

Every model except LiteMedSAM (the only one whose entry has ``packaged_weights``) needs
``checkpoint``: a teacher with random weights is useless for training and easy to build by
accident, so it takes an explicit ``random_init=True`` (meant for tests and wiring checks).

The backend module is imported only when a variant is built (:meth:`ModelVariant.load_builder`),
so building LiteMedSAM never imports sam2 or medim.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

from samssl.foundation.base import PromptableSegmenter
from samssl.foundation.cache import EmbeddingCache
from samssl.foundation.encoder_runtime import check_encoder_runtime
from samssl.foundation.variants import VARIANT_NAMES, VARIANTS, ModelVariant

__all__ = ["TEACHER_NAMES", "VARIANTS", "VARIANT_NAMES", "ModelVariant", "build_foundation_model", "build_teacher",
           "get_variant"]

#: Former name of :data:`VARIANT_NAMES`, kept for code written against it.
TEACHER_NAMES = VARIANT_NAMES


def get_variant(name: str) -> ModelVariant:
    """The table entry of ``name``.

    Raises:
        ValueError: ``name`` is not a variant; the message lists the available ones.
    """
    variant = VARIANTS.get(name) if isinstance(name, str) else None
    if variant is None:
        raise ValueError(f"unknown teacher {name!r}; available: {', '.join(VARIANT_NAMES)}")
    return variant


def build_foundation_model(
    name: str = "litemedsam",
    checkpoint: str | Path | None = None,
    *,
    cache: EmbeddingCache | Mapping[str, Any] | None = None,
    device: str | None = None,
    random_init: bool = False,
    allow_pickle: bool = False,
    encoder_runtime: str = "fp32",
    tuned: str | Path | None = None,
    **kwargs: Any,
) -> PromptableSegmenter:
    """Build a frozen SAM-family foundation model from its entry in :data:`VARIANTS`.

    Args:
        name: one of :data:`VARIANT_NAMES`.
        checkpoint: local weights file (required except for variants with packaged weights,
            i.e. ``litemedsam``, whose packaged weights are used when it is ``None``).
        cache: an :class:`EmbeddingCache`, or the keyword arguments of
            :meth:`EmbeddingCache.from_settings` as a mapping (handy in bundle configs: its
            ``directory`` ``None`` or absent is the shared default folder, ``False`` or ``""``
            keeps the cache in memory), attached to the model's ``encode``.
        device: where to put the model (default: stay on CPU).
        random_init: build without weights (tests only).
        allow_pickle: let ``torch.load`` unpickle non-tensor objects (trusted files only).
        encoder_runtime: how the frozen encoder runs on the CPU: ``fp32`` (eager, the default),
            ``bf16``, ``onnxruntime``, ``openvino``, ``openvino_bf16`` or ``auto`` (the fastest one
            whose masks match fp32's); see :mod:`samssl.foundation.encoder_runtime`. Backends
            other than LiteMedSAM accept ``fp32`` only for now.
        tuned: a promptable tuned-teacher file (:mod:`samssl.foundation.tuned`, written by the
            teacher fine-tuning stage :mod:`samssl.stages.teacher_tuning`) to put on the base model;
            ``None`` (or ``""``) keeps the zero-shot model. A file tuned from another base is refused.
        kwargs: backend-specific options (e.g. ``image_size`` for SAM2).

    Raises:
        InvalidInputError: ``encoder_runtime`` is not a runtime (checked before anything is built), or
            ``tuned`` is not a promptable tuned-teacher file of this base model.
    """
    variant = get_variant(name)
    check_encoder_runtime(encoder_runtime)
    if random_init:
        if checkpoint is not None:
            raise ValueError("give either checkpoint or random_init=True, not both")
        options = {"pretrained": False} if variant.packaged_weights else {}
        model = variant.load_builder()(variant=variant, **options, **kwargs)
    else:
        if checkpoint is None and not variant.packaged_weights:
            raise ValueError(
                f"teacher {name!r} needs a local checkpoint file (see samssl/foundation/README.md); "
                "pass random_init=True only for tests"
            )
        model = variant.load_builder()(variant=variant, checkpoint=checkpoint, allow_pickle=allow_pickle, **kwargs)
    if tuned:
        from samssl.foundation.tuned import load_tuned_teacher

        model = load_tuned_teacher(model, tuned)
    if cache is not None:
        model.embedding_cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache.from_settings(**cache)
    if device is not None:
        model.to(device)
    if encoder_runtime != "fp32":  # every model starts in fp32
        model.set_encoder_runtime(encoder_runtime)
    return model


def build_teacher(*args: Any, **kwargs: Any) -> PromptableSegmenter:
    """Deprecated name of :func:`build_foundation_model` (same arguments, same model).

    Kept for one release so that bundles downloaded before the rename still build; it will
    be removed in the next release.
    """
    warnings.warn(
        "samssl.foundation.build_teacher is deprecated and will be removed in the next release; "
        "use samssl.foundation.build_foundation_model (same arguments)",
        FutureWarning,
        stacklevel=2,
    )
    return build_foundation_model(*args, **kwargs)
