"""Foundation models: one promptable-segmenter API over LiteMedSAM, SAM, SAM2/MedSAM2 and
SAM-Med3D.

Typical use::

    from samssl.foundation import build_foundation_model, prompts_from_probability

    model = build_foundation_model("litemedsam", cache={"max_bytes": 2**30})
    embeddings = model.encode(images)                    # frozen, cached, no grad
    prompts = prompts_from_probability(student_probs)    # never from labels
    out = model.decode(embeddings, **prompts.as_kwargs())
    out.mask_logits                                      # (B, 1, H, W), caller's space

Modules: ``base`` (interface and data classes), ``preprocessing`` (input transform and its
inverse), ``variants`` (the one table: an entry per model variant with its backend, builder,
checkpoint spec and input convention), ``registry`` (build by name from that table),
``checkpoints`` (local files, wrong-file errors), ``cache`` (embedding cache), ``prompts``
(prompts from probability/uncertainty), ``slicewise`` (2D model over 3D volumes),
``peft_tuning`` (LoRA and decoder adapters), ``propagation`` (mask propagation through a stack
of frames: SAM2's memory, the box chain) and ``affinity_memory`` (a training-free memory for a 2D
model: top-k affinity of frozen embeddings), and one module per backend: ``litemedsam``,
``sam``, ``sam2``, ``sam_med3d``. Backend modules are imported lazily by the registry, so
using LiteMedSAM never imports sam2 or medim.
``build_teacher`` is the deprecated former name of ``build_foundation_model``.
"""


from samssl.foundation.base import ImageEmbeddings, PromptableSegmenter, Prompts, SegmenterOutput
from samssl.foundation.cache import EmbeddingCache
from samssl.foundation.preprocessing import InputTransform
from samssl.foundation.prompt_decoder import DensePromptDecoder
from samssl.foundation.prompts import box_prompts, point_prompts, prompts_from_probability, slice_prompts
from samssl.foundation.registry import TEACHER_NAMES, build_foundation_model, build_teacher, get_variant
from samssl.foundation.slicewise import SliceWiseSegmenter, slices_to_volume, volume_to_slices
from samssl.foundation.variants import VARIANT_NAMES, VARIANTS, CheckpointSpec, ModelVariant

__all__ = [
    "CheckpointSpec",
    "DensePromptDecoder",
    "EmbeddingCache",
    "ImageEmbeddings",
    "InputTransform",
    "ModelVariant",
    "PromptableSegmenter",
    "Prompts",
    "SegmenterOutput",
    "SliceWiseSegmenter",
    "TEACHER_NAMES",
    "VARIANTS",
    "VARIANT_NAMES",
    "box_prompts",
    "build_foundation_model",
    "build_teacher",
    "get_variant",
    "point_prompts",
    "prompts_from_probability",
    "slice_prompts",
    "slices_to_volume",
    "volume_to_slices",
]
