"""Fine-tune a promptable SAM-family teacher on the labelled cases: a stage any bundle can run.

SemiSAM, SSL-MedSAM2 and samkd prompt a frozen SAM-family model; SFR shows that adapting it to the
few labels helps (LoRA-tuned LiteMedSAM alone beats SupOnly with one labelled LA volume). This stage
makes that teacher once per labelled set and writes a tuned-teacher file
(:mod:`samssl.foundation.tuned`) that any bundle loads by config
(``build_foundation_model(name, tuned=path)``).

**Recipe** (MedSAM's box-prompted fine-tuning, with SAMed's / SFR's LoRA on the encoder):

* frames: every labelled 2D image, or every slice of a labelled volume (along ``axis``) holding at
  least ``min_foreground_pixels`` of foreground, read through the consumer's own transform, so the
  teacher is tuned on exactly the intensities it is prompted on later;
* prompt: the box of the frame's ground truth, each side moved by up to ``box_jitter`` of the box's
  extent (MedSAM's box perturbation: the teacher learns to forgive the imprecise boxes that
  students and propagators give it);
* loss: Dice + binary cross-entropy of the single-mask output against the ground truth at the
  frame's size (MedSAM);
* trainable: the mask decoder always; LoRA (rank ``lora_rank``) on the image encoder's q and v
  projections when ``lora_rank > 0`` (SAMed, SFR). With ``lora_rank = 0`` the encoder is frozen,
  so each frame is embedded once (through the shared embedding cache) and a step costs only the
  decoder: the CPU presets use this; with LoRA every step runs the encoder forward and backward.

Only the ``image`` and ``label`` of the labelled entries are read: unlabelled data never enters the
stage (a test proves it). Training resumes from its last checkpoint after a kill
(``checkpoint_interval`` iterations), and the stage's fingerprint covers the base model, the labelled
files' contents, the transform's description and every setting, so a folder tuned on other data is
never reused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from samssl.foundation.base import ImageEmbeddings, PromptableSegmenter
from samssl.foundation.prompts import box_prompts
from samssl.foundation.tuned import save_tuned_teacher, tuned_teacher_state
from samssl.stages.stage import FunctionStage
from samssl.utils.config_checks import SettingsDict
from samssl.utils.errors import InvalidInputError, NonFiniteLossError
from samssl.utils.files import atomic_save, file_sha256

__all__ = ["TUNED_TEACHER_FILE", "TeacherTuningSettings", "case_frames", "labelled_frames", "labelled_provenance",
           "tune_promptable_teacher", "tuned_teacher_file"]

TUNED_TEACHER_FILE = "teacher_tuned.pt"
CHECKPOINT_FILE = "tuning_checkpoint.pt"


class TeacherTuningSettings(SettingsDict):
    """Settings of the teacher fine-tuning (a dict, so configs write them as one JSON object).

    Keys: ``num_iterations``, ``batch_size`` (frames per step), ``learning_rate``, ``weight_decay``,
    ``lora_rank`` (0 = decoder only, frozen encoder, embeddings cached), ``box_jitter`` (fraction
    of the box's extent each side may move), ``min_foreground_pixels`` (smaller slices are not
    frames), ``axis`` (slicing axis of volumes), ``checkpoint_interval``, ``log_interval``.
    """

    WHAT = "teacher fine-tuning settings"
    DEFAULTS: Mapping[str, Any] = {
        "num_iterations": 400, "batch_size": 8, "learning_rate": 1e-4, "weight_decay": 0.01, "lora_rank": 0,
        "box_jitter": 0.1, "min_foreground_pixels": 16, "axis": -1, "checkpoint_interval": 100, "log_interval": 50,
    }


# ---------------------------------------------------------------------------------- frames
def labelled_frames(labelled: Sequence[Mapping[str, Any]], transform: Callable[[dict], Mapping[str, Any]],
                    axis: int = -1, min_foreground_pixels: int = 16) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The 2D frames of the labelled cases: ``(images (C, H, W), masks (H, W) bool)``.

    ``transform`` maps ``{"image": path, "label": path}`` to tensors ``(C, *spatial)`` (the
    consumer's own evaluation transform). A 2D case gives one frame; a 3D case its slices along
    ``axis`` with at least ``min_foreground_pixels`` of foreground.

    Raises:
        InvalidInputError: no frame holds enough foreground (every label is empty or tiny).
    """
    images: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for entry in labelled:
        for frame, mask in zip(*case_frames(entry, transform, axis)):
            if int(mask.sum()) >= min_foreground_pixels:
                images.append(frame.contiguous())
                masks.append(mask.contiguous())
    if not images:
        raise InvalidInputError(f"no labelled frame holds {min_foreground_pixels} foreground pixels or more: the "
                                f"{len(labelled)} labelled masks are empty or tiny, so there is nothing to tune the "
                                "teacher on")
    return images, masks


def case_frames(entry: Mapping[str, Any], transform: Callable[[dict], Mapping[str, Any]],
                axis: int = -1) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every 2D frame of one labelled case through ``transform``: ``(images (C, H, W), masks (H, W) bool)``.

    A 2D image is one frame; a 3D volume ``(C, X, Y, Z)`` gives its slices along ``axis``, in order.
    """
    item = transform({"image": entry["image"], "label": entry["label"]})
    image, label = _as_tensor(item["image"]).float(), _as_tensor(item["label"]) > 0.5
    if image.ndim == 3:
        return [image], [label[0]]
    if image.ndim != 4:
        raise InvalidInputError(f"{entry['image']}: expected a channel-first 2D image or 3D volume, got shape "
                                f"{tuple(image.shape)}")
    dim = 1 + axis % 3
    return ([image.select(dim, s) for s in range(image.shape[dim])],
            [label[0].select(dim - 1, s) for s in range(image.shape[dim])])


def _as_tensor(x: Any) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


# ---------------------------------------------------------------------------------- training
def _dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice + binary cross-entropy per frame, averaged (MedSAM's loss)."""
    probability = torch.sigmoid(logits)
    dims = tuple(range(1, logits.ndim))
    dice = 1 - (2 * (probability * target).sum(dims) + 1e-5) / (probability.sum(dims) + target.sum(dims) + 1e-5)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def _trainable_state(teacher: PromptableSegmenter) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in teacher.named_parameters() if v.requires_grad}


def tune_promptable_teacher(teacher: PromptableSegmenter, images: Sequence[torch.Tensor],
                            masks: Sequence[torch.Tensor], settings: Mapping[str, Any], out_dir: str | Path,
                            seed: int = 0, labelled_cases: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Fine-tune ``teacher`` (in place) on the frames with jittered ground-truth boxes; the tuned-teacher file.

    Resumes from ``out_dir/tuning_checkpoint.pt`` when a killed run left one.
    """
    s = TeacherTuningSettings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if teacher.spatial_dims != 2:
        raise InvalidInputError(f"the teacher fine-tuning prompts 2D frames; {teacher.name} is "
                                f"{teacher.spatial_dims}D")
    lora_rank = int(s["lora_rank"])
    if lora_rank > 0:
        from samssl.foundation.peft_tuning import apply_lora

        apply_lora(teacher, rank=lora_rank)
    else:
        teacher.image_encoder.requires_grad_(False)
    teacher.mask_decoder.requires_grad_(True)
    teacher.prompt_encoder.requires_grad_(False)
    teacher.train()
    parameters = [p for p in teacher.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=float(s["learning_rate"]), weight_decay=float(s["weight_decay"]))
    generator = torch.Generator().manual_seed(int(seed))
    start = 0
    checkpoint = out_dir / CHECKPOINT_FILE
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        with torch.no_grad():
            named = dict(teacher.named_parameters())
            for key, value in state["trainable"].items():
                named[key].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start = int(state["iteration"])
        print(f"teacher fine-tuning: resuming at iteration {start} ({checkpoint})", flush=True)

    frozen_embeddings: list[ImageEmbeddings] | None = None
    if lora_rank == 0:  # the encoder is frozen: each frame is embedded once (and cached on disk)
        print(f"embedding {len(images)} labelled frames once with the frozen {teacher.name} encoder (a cached "
              "frame costs nothing)", flush=True)
        with torch.no_grad():
            frozen_embeddings = [teacher.encode(image[None].to(teacher.device)).to("cpu") for image in images]

    iterations = int(s["num_iterations"])
    batch = min(int(s["batch_size"]), len(images))
    print(f"fine-tuning {teacher.name} ({'LoRA rank ' + str(lora_rank) + ' + ' if lora_rank else ''}mask decoder) "
          f"with jittered ground-truth boxes on {len(images)} labelled frames, {iterations} iterations of {batch}",
          flush=True)
    started, running = time.monotonic(), 0.0
    for iteration in range(start, iterations):
        pick = torch.randperm(len(images), generator=generator)[:batch].tolist()
        losses = []
        optimizer.zero_grad(set_to_none=True)
        for i in pick:  # frames differ in size: one frame per decode, gradients summed
            target = masks[i][None, None].float().to(teacher.device)
            boxes, _ = box_prompts(target, largest_component=False, jitter=float(s["box_jitter"]),
                                   generator=generator)
            if frozen_embeddings is not None:
                embeddings = frozen_embeddings[i].to(teacher.device)
            else:
                embeddings = teacher.encode(images[i][None].to(teacher.device), requires_grad=True)
            logits = teacher.decode(embeddings, boxes=boxes[:, None]).mask_logits[:, :1]
            loss = _dice_bce(logits.float(), target) / len(pick)
            loss.backward()
            losses.append(float(loss.detach()) * len(pick))
        if not all(math.isfinite(v) for v in losses):
            raise NonFiniteLossError(f"teacher fine-tuning diverged: non-finite loss at iteration {iteration + 1} "
                                     f"(learning_rate {s['learning_rate']}); lower it and run again (the last "
                                     f"checkpoint, {checkpoint}, is kept)")
        optimizer.step()
        done = iteration + 1
        running = sum(losses) / len(losses) if done == start + 1 else 0.9 * running + 0.1 * sum(losses) / len(losses)
        if done % int(s["log_interval"]) == 0 or done == iterations:
            rate = (time.monotonic() - started) / (done - start)
            print(f"teacher fine-tuning [{done}/{iterations}] loss {running:.4f} ({rate:.2f} s/it, about "
                  f"{rate * (iterations - done) / 60:.1f} min left)", flush=True)
        if done % int(s["checkpoint_interval"]) == 0 and done < iterations:
            state = {"iteration": done, "trainable": _trainable_state(teacher), "optimizer": optimizer.state_dict(),
                     "generator": generator.get_state()}
            atomic_save(checkpoint, lambda partial, state=state: torch.save(state, partial))
    teacher.eval()
    tuned = save_tuned_teacher(tuned_teacher_state(teacher, "promptable", labelled_cases, dict(s)),
                               out_dir / TUNED_TEACHER_FILE)
    checkpoint.unlink(missing_ok=True)
    return tuned


# ---------------------------------------------------------------------------------- the stage
def labelled_provenance(labelled: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The cases a teacher is tuned on, as its file and its stage fingerprint record them: paths and contents.

    Content fingerprints (the first 16 hex digits of each file's SHA-256), so a folder or a file tuned on
    other data under the same names is told apart.
    """
    return [{"image": str(e["image"]), "label": str(e["label"]),
             "image_sha256": file_sha256(e["image"])[:16], "label_sha256": file_sha256(e["label"])[:16]}
            for e in labelled]


def tuned_teacher_file(build_base: Callable[[], PromptableSegmenter], labelled: Sequence[Mapping[str, Any]],
                       transform: Callable[[dict], Mapping[str, Any]], transform_description: Any,
                       work_dir: str | Path, settings: Mapping[str, Any] | None = None, seed: int = 0,
                       rank: int | None = None) -> str:
    """Fine-tune the teacher on ``labelled`` once (a stage in ``work_dir``); the tuned-teacher file's path.

    Args:
        build_base: ``() -> PromptableSegmenter``: the base model (built only when the stage computes).
        labelled: datalist entries with ``image`` and ``label``; nothing else is read.
        transform: the consumer's evaluation transform (``image`` + ``label`` -> tensors).
        transform_description: what identifies that transform (spacing, image size ...) in the fingerprint.
        work_dir: the stage's folder.
        settings: :class:`TeacherTuningSettings` values.
        seed: the frame sampling and box jitter seed.
        rank: this process's rank (default: ``RANK``); only rank 0 computes.

    Config use (a bundle's ``train.json``)::

        "tuned_teacher": "$samssl.stages.teacher_tuning.tuned_teacher_file(lambda: samssl.foundation.build_foundation_model('litemedsam'), @datalist['labelled'], ...)"
    """
    s = TeacherTuningSettings(settings)
    if not labelled:
        raise InvalidInputError("the teacher is fine-tuned on labelled cases: the labelled list is empty")
    cases = labelled_provenance(labelled)
    base: dict[str, Any] = {}

    def base_identity() -> dict[str, str]:
        if not base:
            model = build_base()
            base.update(model=model, identity={"teacher": model.name, "weights": model.weights_id,
                                               "encoder_runtime": model.encoder_runtime})
        return base["identity"]

    def inputs() -> dict[str, Any]:
        return {"base": base_identity(), "cases": cases, "transform": transform_description, "settings": dict(s),
                "seed": int(seed)}

    def compute(out_dir: Path) -> dict[str, Any]:
        base_identity()
        images, masks = labelled_frames(labelled, transform, int(s["axis"]), int(s["min_foreground_pixels"]))
        tuned = tune_promptable_teacher(base["model"], images, masks, s, out_dir, seed, cases)
        return {"tuned": str(tuned), "frames": len(images)}

    stage = FunctionStage("fine-tune teacher", work_dir, inputs, compute, rank=rank)
    return stage.run()["tuned"]
