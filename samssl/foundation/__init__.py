"""Foundation-model teachers: one promptable-segmenter API over LiteMedSAM, SAM, SAM2/MedSAM2
and SAM-Med3D.

Typical use::

    from samssl.foundation import build_teacher, prompts_from_probability

    teacher = build_teacher("litemedsam", cache={"max_bytes": 2**30})
    embeddings = teacher.encode(images)                  # frozen, cached, no grad
    prompts = prompts_from_probability(student_probs)    # never from labels
    out = teacher.decode(embeddings, **prompts.as_kwargs())
    out.mask_logits                                      # (B, 1, H, W), caller's space

Modules: ``base`` (interface and data classes), ``preprocessing`` (input transform and its
inverse), ``registry`` (build by name), ``checkpoints`` (local files, wrong-file errors),
``cache`` (embedding cache), ``prompts`` (prompts from probability/uncertainty),
``slicewise`` (2D teacher over 3D volumes), ``peft_tuning`` (LoRA and decoder adapters), and
one module per backend: ``litemedsam``, ``sam``, ``sam2``, ``sam_med3d``. Backend modules
are imported lazily by the registry, so using LiteMedSAM never imports sam2 or medim.


"""


from samssl.foundation.base import ImageEmbeddings, PromptableSegmenter, Prompts, SegmenterOutput
from samssl.foundation.cache import EmbeddingCache
from samssl.foundation.preprocessing import InputTransform
from samssl.foundation.prompt_decoder import DensePromptDecoder
from samssl.foundation.prompts import box_prompts, point_prompts, prompts_from_probability, slice_prompts
from samssl.foundation.registry import TEACHER_NAMES, build_teacher
from samssl.foundation.slicewise import SliceWiseSegmenter, slices_to_volume, volume_to_slices

__all__ = [
    "DensePromptDecoder",
    "EmbeddingCache",
    "ImageEmbeddings",
    "InputTransform",
    "PromptableSegmenter",
    "Prompts",
    "SegmenterOutput",
    "SliceWiseSegmenter",
    "TEACHER_NAMES",
    "box_prompts",
    "build_teacher",
    "point_prompts",
    "prompts_from_probability",
    "slice_prompts",
    "slices_to_volume",
    "volume_to_slices",
]
