"""TFFS: training-free few-shot pseudo-labels (SSL-MedSAM2, Algorithm 2).

For an unlabelled volume ``x_u`` and each labelled volume ``(x_l, y_l)`` of the support set, the
slices of ``x_l`` are inserted between two slices of ``x_u`` at ``R`` random positions; each
combined stack is one "video" whose labelled frames carry their masks as prompts and whose
unlabelled frames carry none. A frozen propagator (MedSAM2's memory attention; for LiteMedSAM, which
has none, a training-free affinity memory over its frozen embeddings, or the older box chain)
predicts every frame; the unlabelled frames' probabilities
are taken back out, averaged over the ``R x M`` runs and thresholded at 0.5.

``support_frames`` says which labelled frames are inserted. ``"all"`` (the paper, for SAM2's
memory attention, and for the affinity memory): the whole labelled volume, every frame a
conditioning frame; each unlabelled frame attends to the labelled frames that look like it. ``"depth_matched"`` (for a propagator
without memory, the LiteMedSAM box chain): only the labelled frame at the insertion gap's relative
depth, so the chain starts from a neighbour at the same place in the organ; gaps are drawn where
that frame's mask is not empty. Inserting the whole block would seed the chain with the labelled
volume's edge slice wherever the gap falls: on real LA volumes that gave pseudo-label Dice of
0.01, against 0.80 for a chain seeded from a matching slice (``docs/README.md``).

Frames are resized to ``frame_size`` (512 for MedSAM2, as in the paper) before they are combined,
so volumes of different in-plane sizes can share a video, and the probabilities are resized back
to the unlabelled volume's own slices. Each volume's intensities are clipped to its 0.5-99.5
percentiles and scaled to [0, 1] first, so a labelled and an unlabelled scan look alike to the
model. The unlabelled volume's label is never read: its entry is loaded with the ``infer``
transforms (image only) and no prompt is ever placed on its frames.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from samssl.data import volume_transforms
from samssl.foundation.affinity_memory import AffinityMemoryPropagator
from samssl.foundation.base import PromptableSegmenter
from samssl.foundation.propagation import (
    BoxChainPropagator,
    VideoMemoryPropagator,
    VolumePropagator,
)
from samssl.foundation.slicewise import slices_to_volume, volume_to_slices
from samssl.stages.pseudo_labels import CasePredictor, write_predicted_labels

__all__ = ["PROPAGATORS", "TFFSNetwork", "TrainingFreeFewShot", "build_propagator", "insert_frames",
           "insertion_positions", "load_support", "remove_inserted", "support_frames_for", "tffs_fingerprint",
           "write_tffs_pseudo_labels"]


def insertion_positions(num_frames: int, repeats: int, generator: torch.Generator | None = None,
                        allowed: Sequence[int] | None = None) -> list[int]:
    """``repeats`` random insertion positions for a stack of ``num_frames`` unlabelled frames.

    A position ``p`` puts the labelled frames between unlabelled frames ``p - 1`` and ``p`` (the
    paper's "between F and F + 1" with ``F = p - 1``), so ``1 <= p <= num_frames - 1``; ``allowed``
    narrows the choice further. Positions are distinct while there are enough of them, then drawn
    with replacement.
    """
    if num_frames < 2:
        raise ValueError(f"an unlabelled volume needs at least 2 slices to insert between, got {num_frames}")
    if repeats < 1:
        raise ValueError(f"repeats (R) must be >= 1, got {repeats}")
    choices = torch.arange(1, num_frames)
    if allowed is not None:
        choices = torch.tensor(sorted({int(p) for p in allowed if 1 <= int(p) < num_frames}), dtype=torch.long)
        if choices.numel() == 0:
            raise ValueError(f"no allowed insertion position among 1..{num_frames - 1}")
    if repeats <= choices.numel():
        return choices[torch.randperm(choices.numel(), generator=generator)[:repeats]].tolist()
    return choices[torch.randint(choices.numel(), (repeats,), generator=generator)].tolist()


def depth_matched_frame(position: int, num_unlabelled: int, num_labelled: int) -> int:
    """The labelled frame at the same relative depth as the gap before unlabelled frame ``position``."""
    return min(num_labelled - 1, int(position / num_unlabelled * num_labelled))


def insert_frames(unlabelled: torch.Tensor, labelled: torch.Tensor, position: int) -> torch.Tensor:
    """Frames ``(Tu + Tl, ...)``: ``unlabelled[:position]``, all of ``labelled``, ``unlabelled[position:]``."""
    if unlabelled.shape[1:] != labelled.shape[1:]:
        raise ValueError(f"frames to combine must share (C, H, W): {tuple(unlabelled.shape[1:])} vs "
                         f"{tuple(labelled.shape[1:])}")
    if not 0 <= position <= unlabelled.shape[0]:
        raise ValueError(f"insertion position {position} outside 0..{unlabelled.shape[0]}")
    return torch.cat([unlabelled[:position], labelled, unlabelled[position:]])


def remove_inserted(combined: torch.Tensor, position: int, num_inserted: int) -> torch.Tensor:
    """Inverse of :func:`insert_frames` on any per-frame output: the unlabelled frames, in order."""
    return torch.cat([combined[:position], combined[position + num_inserted:]])


def _scale_to_unit(volume: torch.Tensor, percentiles: tuple[float, float]) -> torch.Tensor:
    values = volume.float().flatten()
    if values.numel() > 1 << 24:  # quantile's input limit; a strided sample estimates percentiles as well
        values = values[:: values.numel() // (1 << 24) + 1]
    low, high = torch.quantile(values, torch.tensor([percentiles[0] / 100, percentiles[1] / 100]))
    return ((volume.float() - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)


#: Per-volume intensity clip (percentiles) before scaling to [0, 1].
DEFAULT_PERCENTILES = (0.5, 99.5)


def volume_frames(volume: torch.Tensor, frame_size: int, percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
                  axis: int = -1) -> torch.Tensor:
    """``(C, X, Y, Z)`` -> ``(Z, C, frame_size, frame_size)``: the frames TFFS shows its propagator, in [0, 1]."""
    slices = volume_to_slices(_scale_to_unit(torch.as_tensor(volume), percentiles), axis)
    return F.interpolate(slices, size=(frame_size,) * 2, mode="bilinear", align_corners=False, antialias=True)


def label_frames(label: torch.Tensor, frame_size: int, axis: int = -1) -> torch.Tensor:
    """``(1, X, Y, Z)`` label -> ``(Z, frame_size, frame_size)`` binary frame masks (nearest)."""
    slices = volume_to_slices((torch.as_tensor(label) > 0.5).float(), axis)
    return F.interpolate(slices, size=(frame_size,) * 2, mode="nearest")[:, 0]


class TrainingFreeFewShot:
    """Algorithm 2 over a support set of labelled volumes.

    Args:
        propagator: a :class:`~samssl.foundation.propagation.VolumePropagator`.
        repeats: ``R``, random insertion positions per labelled volume (paper's R).
        frame_size: side of the square frames the propagator sees (MedSAM2: 512).
        axis: spatial axis of the slices (-1: axial for RAS volumes).
        percentiles: per-volume intensity clip before scaling to [0, 1].
        seed: base seed of the insertion positions (each case gets its own stream, so a case's
            pseudo-label does not depend on which other cases are labelled in the same run).
        support_frames: ``"all"`` labelled frames inserted (the paper, SAM2 memory) or the
            ``"depth_matched"`` one (propagators without memory); see the module docstring.
    """

    SUPPORT_FRAMES = ("all", "depth_matched")

    def __init__(self, propagator: VolumePropagator, repeats: int = 5, frame_size: int = 512, axis: int = -1,
                 percentiles: tuple[float, float] = DEFAULT_PERCENTILES, seed: int = 0,
                 support_frames: str = "all") -> None:
        if support_frames not in self.SUPPORT_FRAMES:
            raise ValueError(f"support_frames must be one of {self.SUPPORT_FRAMES}, got {support_frames!r}")
        self.support_frames = support_frames
        if repeats < 1:
            raise ValueError(f"repeats (R) must be >= 1, got {repeats}")
        if frame_size < 16:
            raise ValueError(f"frame_size must be >= 16 pixels, got {frame_size}")
        self.propagator = propagator
        self.repeats = int(repeats)
        self.frame_size = int(frame_size)
        self.axis = axis
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.seed = int(seed)

    def frames(self, volume: torch.Tensor) -> torch.Tensor:
        """``(C, X, Y, Z)`` -> ``(Z, C, frame_size, frame_size)`` frames in [0, 1] (:func:`volume_frames`)."""
        return volume_frames(volume, self.frame_size, self.percentiles, self.axis)

    def masks(self, label: torch.Tensor) -> torch.Tensor:
        """``(1, X, Y, Z)`` label -> ``(Z, frame_size, frame_size)`` binary frame masks (:func:`label_frames`)."""
        return label_frames(label, self.frame_size, self.axis)

    def generator_for(self, case_name: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(case_name.encode()))

    def probability(self, volume: torch.Tensor, support: Sequence[tuple[torch.Tensor, torch.Tensor]],
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Averaged foreground probability ``(X, Y, Z)`` of an unlabelled volume ``(C, X, Y, Z)``.

        ``support``: the labelled ``(image (C, X', Y', Z'), label (1, X', Y', Z'))`` pairs (``M``).
        """
        return self.probability_from(volume, self.prepare_support(support), generator)

    def prepare_support(self, support: Sequence[tuple[torch.Tensor, torch.Tensor]]
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The support volumes as ``(frames, masks)``: computed once, shared by every unlabelled case."""
        if not support:
            raise ValueError("TFFS needs at least one labelled volume in its support set")
        return [(self.frames(image), self.masks(label)) for image, label in support]

    def probability_from(self, volume: torch.Tensor, prepared: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         generator: torch.Generator | None) -> torch.Tensor:
        """:meth:`probability` with the support already prepared (:meth:`prepare_support`), for many volumes."""
        volume = torch.as_tensor(volume)
        unlabelled = self.frames(volume)
        total = torch.zeros(unlabelled.shape[0], self.frame_size, self.frame_size)
        runs = 0
        count = unlabelled.shape[0]
        for labelled, masks in prepared:
            allowed = None
            if self.support_frames == "depth_matched":
                allowed = [p for p in range(1, count)
                           if masks[depth_matched_frame(p, count, len(masks))].any()]
                if not allowed:
                    raise ValueError("a labelled volume of the support set has an empty mask: it cannot seed TFFS")
            for position in insertion_positions(count, self.repeats, generator, allowed):
                if self.support_frames == "depth_matched":
                    chosen = depth_matched_frame(position, count, len(masks))
                    block, block_masks = labelled[chosen:chosen + 1], masks[chosen:chosen + 1]
                else:
                    block, block_masks = labelled, masks
                combined = insert_frames(unlabelled, block, position)
                prompts = {position + i: block_masks[i] for i in range(block.shape[0])}
                total += remove_inserted(self.propagator.propagate(combined, prompts), position, block.shape[0])
                runs += 1
        mean = total / runs
        original = tuple(volume_to_slices(volume, self.axis).shape[-2:])
        back = F.interpolate(mean[:, None], size=original, mode="bilinear", align_corners=False)
        return slices_to_volume(back, self.axis)[0].clamp(0, 1)

    def predictor(self, support: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> CasePredictor:
        """A :data:`~samssl.stages.pseudo_labels.CasePredictor`: ``(1, C, X, Y, Z)`` -> ``(2, X, Y, Z)``."""

        prepared = self.prepare_support(support)

        def predict(image: torch.Tensor) -> torch.Tensor:
            name = Path(str(getattr(image, "meta", {}).get("filename_or_obj", ["case"])[0])).name
            foreground = self.probability_from(image[0].as_tensor() if hasattr(image, "as_tensor") else image[0],
                                               prepared, self.generator_for(name))
            return torch.stack([1 - foreground, foreground])

        return predict


def load_support(labelled: Sequence[Mapping[str, Any]], target_spacing: float | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The labelled ``(image, label)`` volumes, preprocessed as the unlabelled ones are."""
    if not labelled:
        raise ValueError("TFFS needs labelled volumes (num_labelled >= 1)")
    transform = volume_transforms("eval", target_spacing=target_spacing)
    support = []
    for entry in labelled:
        item = transform({"image": str(entry["image"]), "label": str(entry["label"])})
        support.append((item["image"].as_tensor(), item["label"].as_tensor()))
    return support


def tuning_transform(target_spacing: float | None, frame_size: int,
                     percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> Callable[[dict], dict[str, torch.Tensor]]:
    """Labelled volumes as TFFS's frames show them to the teacher, for the teacher fine-tuning stage.

    :func:`load_support`'s reading, then :func:`volume_frames` / :func:`label_frames` (what
    :meth:`TrainingFreeFewShot.frames` does), stacked back into volumes; so a teacher tuned on them
    (``tffs#tuned 'finetune'``) sees what it will be prompted on.
    Returns ``{"image": (1, S, S, Z), "label": (1, S, S, Z)}``.
    """
    base = volume_transforms("eval", target_spacing=target_spacing)

    def transform(entry: dict) -> dict[str, torch.Tensor]:
        item = base(entry)
        return {"image": slices_to_volume(volume_frames(item["image"].as_tensor(), frame_size, percentiles), -1),
                "label": slices_to_volume(label_frames(item["label"].as_tensor(), frame_size)[:, None], -1)}

    return transform


def write_tffs_pseudo_labels(tffs: TrainingFreeFewShot, labelled: Sequence[Mapping[str, Any]],
                             unlabelled: Sequence[Mapping[str, Any]], out_dir: str | Path, fingerprint: str,
                             target_spacing: float | None = None) -> list[dict[str, Any]]:
    """Pseudo-label every unlabelled volume with TFFS; NIfTI on each volume's grid + ``manifest.json``.

    Only the ``image`` of an unlabelled entry is read (``infer`` transforms). Resumes case by case
    under the same ``fingerprint``.
    """
    support = load_support(labelled, target_spacing)
    entries = [{"image": str(e["image"])} for e in unlabelled]
    return write_predicted_labels(tffs.predictor(support), entries,
                                  volume_transforms("infer", target_spacing=target_spacing), out_dir, fingerprint)


PROPAGATORS = ("auto", "affinity_memory", "box_chain", "video_memory")


def build_propagator(name: str, teacher: PromptableSegmenter) -> VolumePropagator:
    """The TFFS propagator called ``name`` around the frozen ``teacher``.

    ``"video_memory"``: SAM2-family memory attention (the paper's MedSAM2); ``"affinity_memory"``:
    training-free memory for a 2D model (top-k cosine affinity to the labelled frames' embeddings and a
    window of segmented frames, refined by box prompts; LiteMedSAM); ``"box_chain"``: the 2D model
    frame to frame, no memory; ``"auto"``: the teacher's own memory when it has one, else affinity memory.
    """
    if name == "auto":
        name = "video_memory" if hasattr(teacher, "propagate") else "affinity_memory"
    if name == "video_memory":
        return VideoMemoryPropagator(teacher)
    if name == "affinity_memory":
        return AffinityMemoryPropagator(teacher)
    if name == "box_chain":
        return BoxChainPropagator(teacher)
    raise ValueError(f"propagator must be one of {PROPAGATORS}, got {name!r}")


def support_frames_for(propagator: str) -> str:
    """Which labelled frames to insert: all of them for a memory (every one a conditioning frame, the
    paper's layout), the depth-matched one for the box chain (it can only start from one frame)."""
    return "depth_matched" if propagator == "box_chain" else "all"


def tffs_fingerprint(teacher: PromptableSegmenter, tffs: TrainingFreeFewShot, labelled: Sequence[Mapping[str, Any]],
                     target_spacing: float | None) -> str:
    """Cache key of a TFFS run: the model's weights and every setting that changes a pseudo-label.

    A propagator with a ``settings`` mapping (the affinity memory: top-k, temperature, ...) adds it;
    the others' keys are unchanged, so their finished runs still resume.
    """
    key = {"teacher": teacher.cache_namespace(), "propagator": type(tffs.propagator).__name__,
           "repeats": tffs.repeats, "frame_size": tffs.frame_size, "axis": tffs.axis,
           "support_frames": tffs.support_frames, "seed": tffs.seed, "spacing": target_spacing,
           "labelled": sorted(str(e["image"]) for e in labelled)}
    if getattr(tffs.propagator, "settings", None) is not None:
        key["propagator_settings"] = dict(tffs.propagator.settings)
    if teacher.weights_id != teacher.encoder_weights_id:  # a decoder tuned on the labels: the cache key misses it
        key["weights"] = teacher.weights_id
    return json.dumps(key, sort_keys=True)


class TFFSNetwork(nn.Module):
    """TFFS as the network of an evaluation engine (the "TFFS pseudo-labels alone" row).

    ``(1, C, X, Y, Z)`` whole volume (use a ``SimpleInferer``) -> ``(1, 2, X, Y, Z)`` log-probabilities.
    The labelled support volumes are read on the first call, so building the object is free.
    """

    def __init__(self, tffs: TrainingFreeFewShot | None, labelled: Sequence[Mapping[str, Any]],
                 target_spacing: float | None) -> None:
        super().__init__()
        self.tffs = tffs
        self.labelled = [dict(e) for e in labelled]
        self.target_spacing = target_spacing
        self._predict: CasePredictor | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.tffs is None:
            raise ValueError("no TFFS pseudo-labeller is configured (method 'suponly' has none)")
        if image.shape[0] != 1:
            raise ValueError(f"TFFS segments one volume at a time (batch size 1), got a batch of {image.shape[0]}")
        if self._predict is None:
            self._predict = self.tffs.predictor(load_support(self.labelled, self.target_spacing))
        return torch.log(self._predict(image).clamp_min(1e-8))[None]
