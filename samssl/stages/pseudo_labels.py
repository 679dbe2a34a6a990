"""Pseudo-labels of unlabelled volumes, written once to disk, with a per-case confidence.

A frozen (fine-tuned) teacher is too slow to run inside every training iteration, and its output
for a case does not change while the student trains, so :func:`write_pseudo_labels` predicts each
unlabelled volume once, writes the argmax as NIfTI **on the input's own grid and affine** (the
preprocessing is inverted), and records in ``manifest.json`` the case's voxel-average confidence
(SFR eq. 8, :func:`mean_max_probability`) and foreground fraction. Empty pseudo-labels get a
warning: a teacher that lost the structure teaches background, and a re-training on such cases
can collapse to empty predictions (SSL-MedSAM2's docs show it on LA). The manifest carries a
fingerprint of the teacher and settings: a second call with the same fingerprint reuses the files
(a killed run resumes case by case); a different fingerprint starts afresh.

The entries handed in are read with the ``infer`` transforms, which load the ``image`` key only:
a ``label`` an entry might carry is never opened (tests prove it with a poisoned label path).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose

from samssl.data.save_predictions import SavePredictiond
from samssl.losses.pseudo_label import PSEUDO_LABEL_KEY
from samssl.utils.files import atomic_write_json

__all__ = ["CasePredictor", "mean_max_probability", "network_predictor", "route_by_confidence",
           "warn_about_empty_pseudo_labels", "warn_if_confidence_tracks_background", "warn_if_empty_label_files",
           "write_predicted_labels", "write_pseudo_labels"]

MANIFEST = "manifest.json"


def mean_max_probability(probabilities: torch.Tensor) -> float:
    """SFR eq. 8: ``(1/N) sum_i max_c p_ic`` over the N voxels of one case ``(C, *spatial)``."""
    if probabilities.ndim < 2:
        raise ValueError(f"expected class probabilities (C, *spatial), got shape {tuple(probabilities.shape)}")
    return float(probabilities.max(dim=0).values.float().mean())


def route_by_confidence(records: Sequence[Mapping[str, Any]], threshold: float = 0.985
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """SFR+ routing: ``(confident, uncertain)`` records, ``confidence >= threshold`` being confident.

    Confident cases go back into fine-tuning with their pseudo-label as the label; uncertain ones
    stay with the re-training module.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"the confidence threshold is a probability in [0, 1], got {threshold}")
    confident = [dict(r) for r in records if float(r["confidence"]) >= threshold]
    uncertain = [dict(r) for r in records if float(r["confidence"]) < threshold]
    return confident, uncertain


def warn_if_confidence_tracks_background(confident: Sequence[Mapping[str, Any]], uncertain: Sequence[Mapping[str, Any]],
                                         ratio: float = 0.5) -> bool:
    """Warn when the confident cases hold far less foreground than the uncertain ones; True if so.

    Meant for SFR+ rounds whose routing is used (it picks the next fine-tuning set, or the
    re-training set). Eq. 8 averages the confidence over every voxel, and most voxels of a volume
    are easy background, so a nearly empty pseudo-label scores as the *most* confident one. When
    that happens the confident set's median foreground fraction falls well below the uncertain
    set's (below ``ratio`` of it), a sign visible without any ground truth. On LA with one labelled
    volume at the CPU preset the ratio was 0.12-0.25 in every round measured, the confident
    pseudo-labels were the worst of the pool, and fine-tuning on them made SAM's next pseudo-labels
    worse (``bundles/sfr_la/docs/README.md``). Records without ``foreground_fraction`` are skipped.
    """
    def median_foreground(cases: Sequence[Mapping[str, Any]]) -> float | None:
        fractions = [float(c["foreground_fraction"]) for c in cases if "foreground_fraction" in c]
        return float(np.median(fractions)) if fractions else None

    confident_fg, uncertain_fg = median_foreground(confident), median_foreground(uncertain)
    if confident_fg is None or uncertain_fg is None or uncertain_fg <= 0.0 or confident_fg >= ratio * uncertain_fg:
        return False
    warnings.warn(f"the {len(confident)} cases that reached the confidence threshold hold a median "
                  f"{100 * confident_fg:.2f}% foreground against {100 * uncertain_fg:.2f}% for the "
                  f"{len(uncertain)} others: their voxel-average confidence comes from background, so the "
                  "'confident' pseudo-labels may be the emptiest, not the best. Fine-tuning on them teaches "
                  "background; check them with tools/pseudo_label_quality.py on cases with labels kept aside, "
                  "or keep to one round (SFR).", stacklevel=2)
    return True


def _read_manifest(out_dir: Path, fingerprint: str) -> dict[str, dict[str, Any]]:
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    if manifest.get("fingerprint") != fingerprint:
        return {}
    return {r["image"]: r for r in manifest.get("cases", []) if Path(r[PSEUDO_LABEL_KEY]).exists()}


def _write_manifest(out_dir: Path, fingerprint: str, records: Sequence[Mapping[str, Any]]) -> None:
    atomic_write_json(out_dir / MANIFEST, {"fingerprint": fingerprint, "cases": list(records)})


#: ``(1, C, *spatial)`` preprocessed image -> ``(K, *spatial)`` class probabilities of one case.
CasePredictor = Callable[[torch.Tensor], torch.Tensor]


def network_predictor(network: torch.nn.Module, inferer: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor],
                      device: torch.device | str = "cpu") -> CasePredictor:
    """Softmax of ``inferer(image, network)``: the :data:`CasePredictor` of a segmentation network."""

    def predict(image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits = inferer(image.to(device), network)
        return torch.softmax(logits.float(), dim=1)[0].cpu()

    return predict


def write_pseudo_labels(
    network: torch.nn.Module,
    entries: Sequence[Mapping[str, Any]],
    transform: Compose,
    inferer: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor],
    out_dir: str | Path,
    fingerprint: str,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Predict with a network, write and describe the pseudo-label of every entry.

    Args:
        network: maps ``(1, 1, *spatial)`` to class logits (run through ``inferer``, in eval mode).
        entries: datalist entries with an ``image`` path.
        transform: the ``infer`` preprocessing (invertible: its inverse puts the mask on the input grid).
        inferer: e.g. ``SlidingWindowInferer(roi_size=patch)``.
        out_dir: folder of the NIfTI files and ``manifest.json``.
        fingerprint: identifies the teacher and the settings; cached files are reused only under it.

    Returns:
        ``{"image", "pseudo_label", "confidence", "foreground_fraction"}`` per entry, in the
        entries' order: the ``pseudo_labelled`` datalist of the re-training and SFR+'s routing input.
    """
    was_training = network.training
    network.eval()
    try:
        return write_predicted_labels(network_predictor(network, inferer, device), entries, transform, out_dir,
                                      fingerprint, progress)
    finally:
        network.train(was_training)


def write_predicted_labels(
    predict: CasePredictor,
    entries: Sequence[Mapping[str, Any]],
    transform: Compose,
    out_dir: str | Path,
    fingerprint: str,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """:func:`write_pseudo_labels` for any predictor of class probabilities (a network, a fold
    ensemble, a training-free few-shot teacher): argmax on each input's own grid, confidence,
    manifest, resume case by case."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = _read_manifest(out, fingerprint)
    saver = SavePredictiond(transform, str(out), "nifti", output_postfix="pseudo")  # on each input's own grid
    records: list[dict[str, Any]] = []
    todo = [e for e in entries if str(e["image"]) not in done]
    if progress and todo:
        print(f"pseudo-labelling {len(todo)} unlabelled volumes ({len(entries) - len(todo)} already in {out})", flush=True)
    for index, entry in enumerate(entries):
        image_path = str(entry["image"])
        if image_path in done:
            records.append(done[image_path])
            continue
        item = transform({"image": image_path})
        batch = list_data_collate([item])
        probabilities = predict(batch["image"])
        confidence = mean_max_probability(probabilities)
        classes = probabilities.argmax(dim=0, keepdim=True).to(torch.uint8)
        foreground = float((classes > 0).float().mean())
        pred = MetaTensor(classes, meta=item["image"].meta, applied_operations=item["image"].applied_operations)
        saver({"image": item["image"], "pred": pred})
        record = {"image": image_path, PSEUDO_LABEL_KEY: str(saver.output_path(item["image"].meta["filename_or_obj"])),
                  "confidence": round(confidence, 6), "foreground_fraction": round(foreground, 6)}
        records.append(record)
        done[image_path] = record
        _write_manifest(out, fingerprint, list(done.values()))
        if progress:
            print(f"  [{index + 1}/{len(entries)}] {Path(image_path).name}: confidence {confidence:.4f}, "
                  f"foreground {100 * foreground:.2f}% of voxels", flush=True)
    # named, not silent: empty pseudo-labels would only show later as a collapsed student
    empty = [str(r["image"]) for r in records if r.get("foreground_fraction") == 0.0]
    warn_about_empty_pseudo_labels(empty, len(records), out, stacklevel=3)
    return records


def warn_if_empty_label_files(labels: Mapping[str, str | Path], where: str | Path) -> list[str]:
    """Warn, naming them, about label files with no foreground voxel; returns their images.

    For pseudo-labels written by code other than :func:`write_predicted_labels` (nnU-Net's own
    predictor writes the SSL-MedSAM2 nnU-Net backend's held-out predictions), so every writer gets
    the same warning. ``labels`` maps each image to its written label file.
    """
    import nibabel as nib  # the files are NIfTI; loading lazily keeps this module light to import

    empty = []
    for image, label in labels.items():
        data = np.asanyarray(nib.load(str(label)).dataobj)
        if not np.any(data > 0):
            empty.append(str(image))
    warn_about_empty_pseudo_labels(empty, len(labels), where, stacklevel=3)
    return empty


def warn_about_empty_pseudo_labels(empty: Sequence[str], total: int, where: str | Path, stacklevel: int = 2) -> None:
    """The one wording of the empty-pseudo-label warning (``empty``: the images whose label is empty)."""
    if not empty:
        return
    names = [Path(image).name for image in empty]
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    warnings.warn(f"{len(names)} of {total} pseudo-labels in {where} are empty ({shown}): the teacher found "
                  "no foreground there, and training on them teaches background. If every volume contains the "
                  "structure, check the teacher and its prompts; tools/pseudo_label_quality.py scores the "
                  "pseudo-labels against labels kept aside.", stacklevel=stacklevel)
