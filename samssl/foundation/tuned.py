"""A foundation model fine-tuned on a user's few labels, as one file any bundle can load.

A SAM-family teacher tuned on the labelled cases (LoRA on the image encoder's q/v and the mask
decoder, as SAMed and SFR tune it) is only worth sharing if it cannot be put on the wrong base
model and if it says what it saw. The **tuned-teacher file** (format :data:`TUNED_FORMAT`) holds:

* ``kind``: ``"promptable"`` (the decoder keeps SAM's prompt interface: boxes, points, masks; a
  drop-in teacher for SemiSAM's branch, SSL-MedSAM2's TFFS and samkd's SAM) or
  ``"class_tokens"`` (SFR's stitched SAM: one output token per class, no prompt; only SFR reads it);
* the base model: ``teacher`` (variant name) and ``base_weights`` (its ``weights_id``: the SHA-256
  of the checkpoint the base was built from), checked on load so a file tuned from one model
  is never put on another;
* what was tuned: the LoRA configuration and tensors (or none: decoder-only tuning) and the whole
  mask decoder's state;
* provenance: ``labelled_cases`` (the image and label files it was tuned on, with their content
  fingerprints) and the tuning ``settings``.

Only what tuning changed is stored (a few MB for LiteMedSAM; SAM ViT-B's 375 MB base is never
copied). :func:`load_tuned_teacher` puts a promptable file on a freshly built base, folds LoRA into
the encoder (the model has its original structure, so the fast encoder runtimes still apply) and
gives it a ``weights_id`` of its own. With LoRA its encoder is new, so embeddings cached for the
zero-shot model are never served to it; a decoder-only tuned teacher keeps the base's
``encoder_weights_id`` and reuses the base's cached embeddings (they are the same numbers). ``build_foundation_model(name, tuned=path)`` does both steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from samssl.foundation.base import PromptableSegmenter
from samssl.foundation.peft_tuning import apply_lora, lora_state_dict, merge_lora
from samssl.utils.errors import InvalidInputError, MissingInputError
from samssl.utils.files import atomic_save, file_sha256

__all__ = ["KINDS", "TUNED_FORMAT", "apply_tuned_weights", "load_tuned_teacher", "read_tuned_teacher",
           "save_tuned_teacher", "tuned_teacher_state"]

TUNED_FORMAT = "samssl-tuned-teacher/1"
#: SFR's stitched-SAM files written before the shared format (read as ``kind="class_tokens"``).
LEGACY_FORMATS = {"sfr-stitched-sam/1": "class_tokens"}
KINDS = ("promptable", "class_tokens")


def tuned_teacher_state(teacher: PromptableSegmenter, kind: str, labelled_cases: Sequence[Mapping[str, Any]] = (),
                        settings: Mapping[str, Any] | None = None, num_classes: int | None = None) -> dict[str, Any]:
    """What tuning changed in ``teacher`` and where it came from (the tuned-teacher file's content).

    Args:
        teacher: the base model with its LoRA (if any) not yet merged and its tuned mask decoder.
        kind: ``"promptable"`` or ``"class_tokens"`` (see the module docstring).
        labelled_cases: the cases it was tuned on (their files and fingerprints), for provenance.
        settings: the tuning settings.
        num_classes: classes of a ``class_tokens`` decoder (background included).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    lora = dict(getattr(teacher, "_lora_config", {}) or {})
    return {
        "format": TUNED_FORMAT,
        "kind": kind,
        "teacher": teacher.name,
        "base_weights": getattr(teacher, "base_weights_id", teacher.weights_id),
        "num_classes": num_classes,
        "lora": lora or None,
        "lora_state": lora_state_dict(teacher) if lora else {},
        "mask_decoder": {k: v.detach().cpu() for k, v in teacher.mask_decoder.state_dict().items()},
        "labelled_cases": [dict(c) for c in labelled_cases],
        "settings": dict(settings or {}),
    }


def save_tuned_teacher(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write a :func:`tuned_teacher_state` to ``path`` atomically (a reader never sees half a file)."""
    return atomic_save(path, lambda partial: torch.save(dict(state), partial))


#: Why a file of one kind cannot serve where the other is needed (the refusal's message).
_WRONG_KIND = {
    "promptable": "is SFR's promptless stitched SAM (class tokens); this method prompts its teacher: fine-tune "
                  "a promptable teacher (kind 'promptable') for it",
    "class_tokens": "is a promptable fine-tuned teacher (for SemiSAM, SSL-MedSAM2, samkd), not SFR's stitched SAM "
                    "with class tokens: fine-tune with SFR's stages",
}


def read_tuned_teacher(path: str | Path, kind: str | None = None,
                       base: PromptableSegmenter | None = None) -> dict[str, Any]:
    """The content of a tuned-teacher file, validated; SFR's older stitched-SAM files are read too.

    ``kind`` (``"promptable"`` / ``"class_tokens"``) and ``base`` (the freshly built model it will
    go on, :func:`check_base`) refuse a file that cannot serve the caller.

    Raises:
        MissingInputError: no file at ``path``.
        InvalidInputError: the file is not a tuned-teacher file (or cannot be read), is of another
            kind, or was tuned from another base model.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no fine-tuned teacher at {path}: fine-tune one first (the teacher-tuning stage "
                                "writes it) or give the path of an existing file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt or not a torch file
        raise InvalidInputError(f"{path} cannot be read as a fine-tuned teacher (truncated, corrupt or not a torch "
                                f"file: {type(err).__name__}); fine-tune again or give the right file") from err
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt in LEGACY_FORMATS:
        payload = {**payload, "format": TUNED_FORMAT, "kind": LEGACY_FORMATS[fmt], "labelled_cases": [], "settings": {}}
    elif fmt != TUNED_FORMAT:
        raise InvalidInputError(f"{path} is not a fine-tuned teacher file (format {fmt!r}, expected {TUNED_FORMAT!r}); "
                                "it may be a network checkpoint or a base model's weights")
    if payload.get("kind") not in KINDS:
        raise InvalidInputError(f"{path}: unknown fine-tuned teacher kind {payload.get('kind')!r}")
    if kind is not None and payload["kind"] != kind:
        raise InvalidInputError(f"{path} {_WRONG_KIND[kind]}")
    if base is not None:
        check_base(payload, base, path)
    return payload


def check_base(payload: Mapping[str, Any], teacher: PromptableSegmenter, path: str | Path) -> None:
    """Refuse a tuned file whose base model is not ``teacher`` (another variant, or other weights)."""
    if payload["teacher"] != teacher.name:
        raise InvalidInputError(f"{path} was fine-tuned from {payload['teacher']!r}, not {teacher.name!r}: build the "
                                f"teacher {payload['teacher']!r} to use it")
    base = payload.get("base_weights")
    own = getattr(teacher, "base_weights_id", teacher.weights_id)
    if base and base != own:
        raise InvalidInputError(f"{path} was fine-tuned from other {teacher.name} weights ({str(base)[:24]}...) "
                                f"than this teacher's ({str(own)[:24]}...): build the teacher from the checkpoint "
                                "it was tuned from")


def apply_tuned_weights(teacher: PromptableSegmenter, payload: Mapping[str, Any]) -> PromptableSegmenter:
    """Put a tuned file's LoRA (unmerged) and mask decoder on ``teacher``, whose decoder already has its shape."""
    lora = payload.get("lora")
    if lora:
        from peft import set_peft_model_state_dict

        apply_lora(teacher, rank=int(lora["rank"]), alpha=lora["alpha"], dropout=float(lora["dropout"]),
                   targets=tuple(lora["targets"]))
        set_peft_model_state_dict(teacher.image_encoder, payload["lora_state"])
    teacher.mask_decoder.load_state_dict(payload["mask_decoder"])
    return teacher


def load_tuned_teacher(teacher: PromptableSegmenter, path: str | Path) -> PromptableSegmenter:
    """``teacher`` (a freshly built base model) turned into the promptable tuned teacher of ``path``.

    LoRA is merged into the encoder, every parameter is frozen, and ``weights_id`` becomes the base's
    plus the file's fingerprint (the embedding cache and the encoder runtimes key on it).

    Raises:
        InvalidInputError: not a tuned-teacher file, a ``class_tokens`` file (SFR's promptless
            model), or tuned from another base model.
    """
    payload = read_tuned_teacher(path, kind="promptable", base=teacher)
    base = teacher.weights_id
    apply_tuned_weights(teacher, payload)
    if payload.get("lora"):
        merge_lora(teacher)  # back to the original structure: fused qkv, no LoRA modules
    teacher.base_weights_id = base
    teacher.weights_id = f"{base}+tuned:{file_sha256(path)[:16]}"
    # decoder-only tuning leaves the encoder as it was: its embeddings (cached, compiled) are the base's
    teacher._encoder_weights_id = teacher.weights_id if payload.get("lora") else base
    teacher.tuned_from = str(path)
    teacher._encoder_runners.clear()
    return teacher.freeze()
