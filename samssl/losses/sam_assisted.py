"""SemiSAM's SAM-assisted consistency (Zhang et al.), as a term that plugs into any mean teacher.

The student's prediction on an unlabelled patch localises the object; its *low-uncertainty*
part gives prompts to a frozen SAM; SAM's mask becomes a second consistency target for the
student, weighted by a ramp-down ``lambda_s = 0.1 exp(-5 t / t_max)`` (paper eq. 3) while the
mean-teacher consistency ramps up::

    loss = sup + lambda_c * L_con(f(x_u), f'(x_u)) + lambda_s * L_con(f(x_u), SAM(x_u | prompts(f(x_u), U)))

:class:`SAMAssistedConsistency` is an :class:`~samssl.losses.auxiliary.AuxiliaryTerm`: give
it to ``MeanTeacherTrainer`` or ``UncertaintyAwareMeanTeacherTrainer`` through
``auxiliary_terms`` (plug-and-play, as the paper claims), nothing else changes.

What it reads: the unlabelled batch's ``image`` (and, for a 2D teacher, the ``patch_affine`` /
``case_key`` entries that :class:`~samssl.data.transforms_3d.PatchLocationd` adds), the
student's logits, and the teacher's uncertainty. Never a label: prompts come from
:mod:`samssl.foundation.prompts`, whose functions have no label argument, and the trainer drops any
label an unlabelled batch carries before this term sees it. (The public SemiSAM code built its
clicks from the ground truth of the unlabelled cases; that is not reproduced.)

Uncertainty: by default UA-MT's (entropy of the EMA teacher's mean softmax over ``T`` noisy,
dropout passes; :meth:`MeanTeacherTrainer.teacher_uncertainty`), shared with UA-MT's own mask when
both ask for the same ``T``. Voxels whose entropy, divided by ``ln C`` to lie in [0, 1], exceeds
``max_uncertainty`` never produce a prompt. ``uncertainty="student"`` uses the entropy of the
student's own prediction instead (no extra passes; cheaper on CPU).

Two teacher geometries:

* **3D teacher** (SAM-Med3D, 128^3 input): run on the patch itself with 3D point prompts
  (``num_positive`` foreground and ``num_negative`` background points from the certain part of
  each region); the loss covers the whole patch. Patches are random crops, so its embeddings
  are not reusable across iterations.
* **2D teacher** (LiteMedSAM by default), slice by slice: for each chosen slice of a patch, the
  matching *whole* slice of the preprocessed volume (from a
  :class:`~samssl.data.transforms_3d.VolumeLookup`) is encoded, so with an
  :class:`~samssl.foundation.cache.EmbeddingCache` the encoder runs at most once per slice of each
  volume for the whole run (and across runs with a cache directory) and an iteration costs only
  decoder passes once the cache is warm. The student's patch-slice probability and uncertainty
  are scattered into the whole slice (outside the patch: no foreground, maximal uncertainty), a
  box (and optionally points) is drawn from the certain foreground, SAM's logits are gathered
  back onto the patch slice. ``slices_per_sample`` limits SAM to ``k`` slices per patch and
  iteration, chosen at random among the slices with at least ``min_prompt_pixels`` certain
  foreground pixels; the loss covers those slices.

Reliability floor (an option; the paper prompts whatever the student predicts):
``min_certain_fraction`` sends a slice (2D teacher) or patch (3D teacher) to SAM only when at least
that fraction of the student's predicted foreground there is certain. Early in training, or on a
hard case, the student's foreground is mostly uncertain and the box or points drawn from its
small certain part mislocate the object; SAM then answers a wrong question with a confident
mask, which the ramp-down weights most heavily at exactly that time.

``min_weight`` skips the whole branch (no teacher passes, no SAM) while the weight is below it:
where the term contributes nothing measurable it would still cost SAM passes.

Weight schedule (:func:`sam_weight_ramp`): ``"ramp_down"`` is eq. 3 as printed (SAM trusted most
at the start); ``"ramp_up"`` gives the SAM target the mean-teacher consistency's own ramp,
``lambda_s = 0.1 exp(-5 (1 - t / t_max))``, so it weighs most when the student whose prediction
prompts SAM has become reliable. With the reliability floor, SAM's influence then follows the
student's reliability both per slice (which slices are prompted) and over training (how much the
answer counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.utils.enums import CommonKeys as Keys

from samssl.foundation.base import PromptableSegmenter
from samssl.foundation.preprocessing import PAD_LOGIT
from samssl.foundation.prompts import binary_entropy, point_prompts, prompts_from_probability
from samssl.foundation.slicewise import PatchSliceMap, patch_to_volume_map, volume_to_slices
from samssl.losses.consistency import as_class_logits
from samssl.losses.ramps import Constant, ExponentialRampDown, ExponentialRampUp, Ramp

__all__ = ["SAM_WEIGHT_SCHEDULES", "SAMAssistedConsistency", "sam_weight_ramp"]

PROMPT_KINDS = ("box", "points", "box+points")

SAM_WEIGHT_SCHEDULES: dict[str, type[Ramp]] = {"ramp_down": ExponentialRampDown, "ramp_up": ExponentialRampUp}


def sam_weight_ramp(schedule: str, max_value: float, length: int) -> Ramp:
    """``lambda_s`` over ``length`` iterations: ``"ramp_down"`` (SemiSAM eq. 3 as printed) or ``"ramp_up"``
    (the mean-teacher ramp, so SAM's answer counts most once the student that prompts it is reliable)."""
    if schedule not in SAM_WEIGHT_SCHEDULES:
        raise ValueError(f"unknown SAM weight schedule {schedule!r}; choose one of {sorted(SAM_WEIGHT_SCHEDULES)} "
                         "('ramp_down' is the paper's eq. 3)")
    return SAM_WEIGHT_SCHEDULES[schedule](max_value, length)


class SAMAssistedConsistency:
    """SemiSAM's SAM branch: an extra consistency target from a SAM prompted by the student.

    Args:
        teacher: a frozen :class:`~samssl.foundation.base.PromptableSegmenter` (2D slice-wise, or 3D).
        weight: ``lambda_s`` schedule ``weight(iteration)`` (paper: ``ExponentialRampDown(0.1, t_max)``)
            or a constant.
        volumes: whole preprocessed unlabelled volumes (:class:`~samssl.data.transforms_3d.VolumeLookup`),
            needed by a 2D teacher; the batch must then carry ``patch_affine`` and ``case_key``.
        uncertainty: ``"teacher"`` (UA-MT's ``T``-pass entropy) or ``"student"`` (entropy of the
            student's prediction).
        uncertainty_passes: ``T`` for ``"teacher"``; ``None`` takes the trainer's own
            ``uncertainty_passes`` (UA-MT, shared computation) or 8.
        max_uncertainty: voxels with normalised entropy above this never give a prompt.
        threshold: foreground probability threshold of the student's prediction.
        prompt: ``"box"``, ``"points"`` or ``"box+points"`` for a 2D teacher (LiteMedSAM follows
            boxes; 3D teachers always get points).
        num_positive, num_negative: points per prompt.
        margin: pixels added around a 2D box.
        axis: slicing axis of the patch (-1: the last, axial for RAS volumes).
        slices_per_sample: 2D teacher: at most this many slices per patch and iteration
            (``None``: every slice with a prompt).
        min_prompt_pixels: 2D teacher: a slice needs this many certain foreground pixels.
        min_certain_fraction: reliability floor: a slice (2D) or patch (3D) is prompted only when
            this fraction of its predicted foreground is certain (``None``: no floor, the paper's
            behaviour).
        target: ``"mask"`` (SAM's binarised output, a pseudo-label, as in the paper) or
            ``"probability"`` (its sigmoid).
        min_weight: skip the branch while ``weight(iteration) < min_weight``.
        seed: seed of the slice choice (per iteration, so resumed runs choose the same slices).
        name: the term's name in the logged output.
    """

    def __init__(
        self,
        teacher: PromptableSegmenter,
        weight: Callable[[int], float] | float,
        volumes: Any | None = None,
        *,
        uncertainty: str = "teacher",
        uncertainty_passes: int | None = None,
        max_uncertainty: float = 0.75,
        threshold: float = 0.5,
        prompt: str | None = None,
        num_positive: int = 1,
        num_negative: int = 1,
        margin: float = 0.0,
        axis: int = -1,
        slices_per_sample: int | None = 2,
        min_prompt_pixels: int = 10,
        min_certain_fraction: float | None = None,
        target: str = "mask",
        min_weight: float = 0.0,
        seed: int = 0,
        name: str = "sam_consistency",
    ) -> None:
        if not isinstance(teacher, PromptableSegmenter):
            raise TypeError("teacher must be a PromptableSegmenter (see samssl.foundation.build_foundation_model), "
                            f"got {type(teacher).__name__}")
        if teacher.spatial_dims not in (2, 3):
            raise ValueError(f"teacher must be 2D or 3D, got {teacher.spatial_dims}D")
        if teacher.spatial_dims == 2 and volumes is None:
            raise ValueError(
                "a 2D teacher runs on whole volume slices: pass volumes=VolumeLookup(unlabelled datalist, "
                "volume_transforms('infer', ...)) and build the unlabelled patches with patch_location=True"
            )
        if uncertainty not in ("teacher", "student"):
            raise ValueError(f"uncertainty must be 'teacher' or 'student', got {uncertainty!r}")
        if uncertainty_passes is not None and uncertainty_passes < 2:
            raise ValueError(f"uncertainty_passes must be >= 2, got {uncertainty_passes}")
        prompt = prompt or (teacher.default_prompt if teacher.spatial_dims == 2 else "points")
        if prompt not in PROMPT_KINDS:
            raise ValueError(f"prompt must be one of {PROMPT_KINDS}, got {prompt!r}")
        if teacher.spatial_dims == 3 and prompt != "points":
            raise ValueError(f"{teacher.name} is prompted with 3D points; set prompt='points'")
        if target not in ("mask", "probability"):
            raise ValueError(f"target must be 'mask' or 'probability', got {target!r}")
        if slices_per_sample is not None and slices_per_sample < 1:
            raise ValueError(f"slices_per_sample must be >= 1 or None, got {slices_per_sample}")
        if min_certain_fraction is not None and not 0.0 < min_certain_fraction <= 1.0:
            raise ValueError(f"min_certain_fraction is a fraction in (0, 1] or None, got {min_certain_fraction}")
        if not 0.0 < max_uncertainty <= 1.0:
            raise ValueError(f"max_uncertainty is a normalised entropy in (0, 1], got {max_uncertainty}")
        self.teacher = teacher.freeze()
        self.weight = weight if callable(weight) else Constant(float(weight))
        self.volumes = volumes
        self.uncertainty = uncertainty
        self.uncertainty_passes = uncertainty_passes
        self.max_uncertainty = max_uncertainty
        self.threshold = threshold
        self.prompt = prompt
        self.num_positive = num_positive
        self.num_negative = num_negative
        self.margin = margin
        self.axis = axis
        self.slices_per_sample = slices_per_sample
        self.min_prompt_pixels = min_prompt_pixels
        self.min_certain_fraction = min_certain_fraction
        self.target = target
        self.min_weight = min_weight
        self.seed = seed
        self.name = name

    # ------------------------------------------------------------------ pieces
    def uncertainty_map(self, engine: Any, unlabelled: dict, probabilities: torch.Tensor) -> torch.Tensor:
        """Normalised entropy ``(B, 1, *spatial)`` in [0, 1] that decides which voxels may prompt."""
        if self.uncertainty == "student":
            return binary_entropy(probabilities[:, 1:2])
        if not hasattr(engine, "teacher_uncertainty"):
            raise TypeError(f"uncertainty='teacher' needs a mean-teacher trainer, got {type(engine).__name__}")
        passes = self.uncertainty_passes or getattr(engine, "uncertainty_passes", 8)
        stochastic = getattr(engine, "stochastic_teacher", True)
        entropy = engine.teacher_uncertainty(engine, unlabelled, passes, stochastic)
        return (entropy / math.log(probabilities.shape[1])).clamp(0.0, 1.0)

    def _generator(self, iteration: int) -> torch.Generator:
        generator = torch.Generator()
        # shift a Python int: numpy 1.x refuses uint64 >> int (the value is the same under numpy 2)
        generator.manual_seed(int(np.random.SeedSequence([self.seed, iteration]).generate_state(1, np.uint64)[0]) >> 1)
        return generator

    def _target_probability(self, logits: torch.Tensor) -> torch.Tensor:
        if self.target == "mask":
            return (logits > 0).float()
        return torch.sigmoid(logits.float())

    def _reliable(self, certain: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Whether the certain share of the predicted foreground reaches the floor (counts, any shape)."""
        if self.min_certain_fraction is None:
            return torch.ones_like(certain, dtype=torch.bool)
        return certain >= self.min_certain_fraction * predicted.clamp(min=1)

    def _choose_slices(
        self, certain_fg: torch.Tensor, generator: torch.Generator, predicted_fg: torch.Tensor | None = None
    ) -> list[int]:
        """Slices (along ``axis``) of one patch ``(X, Y, Z)`` to send to SAM.

        ``predicted_fg`` (the student's foreground, certain or not) is needed for the reliability floor.
        """
        axis = self.axis % 3
        others = [d for d in range(3) if d != axis]
        counts = certain_fg.sum(dim=others)
        eligible = counts >= self.min_prompt_pixels
        if self.min_certain_fraction is not None:
            if predicted_fg is None:
                raise ValueError("the reliability floor needs the predicted foreground")
            eligible &= self._reliable(counts, predicted_fg.sum(dim=others))
        candidates = torch.nonzero(eligible).flatten()
        if self.slices_per_sample is not None and len(candidates) > self.slices_per_sample:
            pick = torch.randperm(len(candidates), generator=generator)[: self.slices_per_sample]
            candidates = candidates[pick].sort().values
        return candidates.tolist()

    def _slicewise_targets(
        self, unlabelled: dict, probability: torch.Tensor, uncertainty: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """SAM targets on chosen patch slices: ``(target (B, *spatial), mask (B, *spatial), stats)``."""
        fg = probability[:, 0]
        unc = uncertainty[:, 0]
        certain_fg = (fg >= self.threshold) & (unc <= self.max_uncertainty)
        target = torch.zeros_like(fg)
        covered = torch.zeros_like(fg, dtype=torch.bool)
        patch_shape = tuple(fg.shape[1:])
        axis = self.axis % 3
        sent, valid = 0, 0
        for b in range(fg.shape[0]):
            volume = self.volumes.volume(int(unlabelled["case_key"][b]))
            mapping = patch_to_volume_map(unlabelled["patch_affine"][b], volume.affine)
            volume_shape = tuple(volume.shape[1:])
            voxels = volume.as_tensor() if hasattr(volume, "as_tensor") else volume
            for index in self._choose_slices(certain_fg[b], generator, predicted_fg=fg[b] >= self.threshold):
                where = PatchSliceMap(mapping, patch_shape, volume_shape, axis, index)
                if not where.slice_inside:
                    continue
                patch_fg = fg[b].select(axis, index)
                patch_unc = unc[b].select(axis, index)
                canvas_p = where.to_slice(patch_fg, 0.0)
                canvas_u = where.to_slice(patch_unc, 1.0)
                prompts = prompts_from_probability(
                    canvas_p[None, None], canvas_u[None, None], kind=self.prompt, threshold=self.threshold,
                    max_uncertainty=self.max_uncertainty, num_positive=self.num_positive,
                    num_negative=self.num_negative, margin=self.margin, generator=generator,
                )
                sent += 1
                if not bool(prompts.valid.all()):
                    continue
                image = volume_to_slices(voxels, axis=where.volume_axis)[where.volume_index][None]
                with torch.no_grad():
                    embeddings = self.teacher.encode(image.to(self.teacher.device))
                    out = self.teacher.decode(embeddings, **{k: v.to(self.teacher.device) for k, v in prompts.as_kwargs().items()})
                logits = out.mask_logits[0, 0].to(fg.device)
                patch_logits = where.from_slice(logits, PAD_LOGIT)
                target[b].select(axis, index).copy_(self._target_probability(patch_logits))
                covered[b].select(axis, index).fill_(True)
                valid += 1
        return target, covered, {"sam_slices": float(valid), "sam_prompted_slices": float(sent)}

    def _volumetric_targets(
        self, unlabelled: dict, probability: torch.Tensor, uncertainty: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """A 3D teacher on each whole patch with 3D points from its certain regions."""
        images = unlabelled[Keys.IMAGE]
        fg = probability[:, 0]
        target = torch.zeros_like(fg)
        covered = torch.zeros_like(fg, dtype=torch.bool)
        points, labels = point_prompts(
            probability[:, :1].float(), uncertainty, self.num_positive, self.num_negative, self.threshold,
            self.max_uncertainty, generator=generator,
        )
        certain = ((fg >= self.threshold) & (uncertainty[:, 0] <= self.max_uncertainty)).flatten(1).sum(1)
        reliable = self._reliable(certain, (fg >= self.threshold).flatten(1).sum(1))
        valid = 0
        for b in range(fg.shape[0]):
            if not bool((labels[b] == 1).any()) or not bool(reliable[b]):
                continue
            with torch.no_grad():
                embeddings = self.teacher.encode(images[b : b + 1].to(self.teacher.device))
                out = self.teacher.decode(
                    embeddings, points=points[b : b + 1, None].to(self.teacher.device),
                    point_labels=labels[b : b + 1, None].to(self.teacher.device),
                )
            target[b] = self._target_probability(out.mask_logits[0, 0].to(fg.device))
            covered[b] = True
            valid += 1
        return target, covered, {"sam_volumes": float(valid)}

    # ------------------------------------------------------------------ the term
    def targets(self, engine: Any, unlabelled: dict, student_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """SAM's foreground target ``(B, *spatial)`` in [0, 1], where it applies, and statistics."""
        if self.teacher.spatial_dims == 2:  # fail before any expensive pass
            for key in ("patch_affine", "case_key"):
                if key not in unlabelled:
                    raise KeyError(
                        f"the unlabelled batch has no {key!r}: build the unlabelled patches with "
                        "volume_transforms('unlabelled', ..., patch_location=True) for a slice-wise SAM teacher"
                    )
        logits = as_class_logits(student_logits.detach()).float()
        probabilities = torch.softmax(logits, dim=1)
        uncertainty = self.uncertainty_map(engine, unlabelled, probabilities)
        generator = self._generator(int(engine.state.iteration))
        foreground = probabilities[:, 1:2]
        if self.teacher.spatial_dims == 3:
            return self._volumetric_targets(unlabelled, foreground, uncertainty, generator)
        return self._slicewise_targets(unlabelled, foreground, uncertainty, generator)

    def __call__(self, engine: Any, unlabelled: dict, student_logits: torch.Tensor) -> dict[str, Any]:
        weight = float(self.weight(int(engine.state.iteration)))
        if weight < self.min_weight or weight == 0.0:
            zero = student_logits.new_zeros(())
            return {self.name: zero, f"{self.name}_weight": 0.0}
        target, covered, stats = self.targets(engine, unlabelled, student_logits)
        probabilities = torch.softmax(as_class_logits(student_logits).float(), dim=1)
        target_classes = torch.stack([1.0 - target, target], dim=1)
        squared = ((probabilities - target_classes) ** 2).mean(dim=1)  # softmax MSE, as the MT term
        mask = covered.to(squared.dtype)
        count = mask.sum()
        loss = (squared * mask).sum() / count if count > 0 else squared.sum() * 0.0
        agreement = float(((probabilities[:, 1] >= 0.5) == (target >= 0.5))[covered].float().mean()) if count > 0 else float("nan")
        return {self.name: loss, f"{self.name}_weight": weight, **stats, "sam_agreement": agreement}
