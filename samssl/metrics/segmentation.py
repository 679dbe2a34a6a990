"""Per-case segmentation metrics and paper-style result tables.

The numbers come from MONAI's metric classes (``DiceMetric``, ``MeanIoU``,
``get_confusion_matrix``, ``HausdorffDistanceMetric(percentile=95)``,
``SurfaceDistanceMetric(symmetric=True)``) so that they agree with every other MONAI pipeline;
this module only fixes the conventions the papers report and MONAI leaves open:

* one binary case at a time (the SSL papers average per case, not per voxel over the test set);
* an empty prediction and an empty label agree perfectly (Dice = IoU = 1), while distances to
  or from an empty mask are undefined: they are NaN with an :class:`EmptyMaskWarning`, never inf,
  and summaries skip them (MONAI would return inf and warn for each call);
* HD95/ASD are in voxels when ``spacing`` is ``None`` and in physical units (mm) otherwise,
  ``spacing`` listing the voxel size per spatial axis in array order; ``hd95_voxel`` and
  ``asd_voxel`` are always in voxels, so one call can report both units (the 3D SSL papers print
  voxels, clinicians read mm).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDistanceMetric,
    compute_confusion_matrix_metric,
    get_confusion_matrix,
)
from monai.utils import convert_to_tensor

__all__ = [
    "ALL_METRICS",
    "PERCENT_METRICS",
    "VOLUME_METRICS",
    "EmptyMaskWarning",
    "case_metrics",
    "summarise",
    "results_table",
    "write_results",
]

ALL_METRICS: tuple[str, ...] = ("dice", "iou", "sensitivity", "specificity", "hd95", "asd")
#: every metric :func:`case_metrics` knows (the default computes ``ALL_METRICS``)
KNOWN_METRICS: tuple[str, ...] = ALL_METRICS + ("hd95_voxel", "asd_voxel")
PERCENT_METRICS: tuple[str, ...] = ("dice", "iou", "sensitivity", "specificity")
_DISTANCE_METRICS = ("hd95", "asd", "hd95_voxel", "asd_voxel")
#: the metrics of the 3D semi-supervised papers (Dice, Jaccard = IoU, 95HD, ASD), distances in both units
VOLUME_METRICS: tuple[str, ...] = ("dice", "iou", "hd95", "asd", "hd95_voxel", "asd_voxel")
DISPLAY_NAMES = {
    "dice": "Dice",
    "iou": "IoU",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "hd95": "HD95",
    "asd": "ASD",
    "hd95_voxel": "HD95 (voxel)",
    "asd_voxel": "ASD (voxel)",
}


class EmptyMaskWarning(UserWarning):
    """A surface distance was requested for an empty prediction or label; it is reported as NaN."""


def binary_dice(prediction: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Dice of two foreground masks (any nonzero value is foreground); 1.0 when both are empty (they agree).

    The quick overlap score of tools and pseudo-label checks; :func:`case_metrics` is the reporting one
    (MONAI's metrics, with surface distances).
    """
    a = np.asarray(prediction.detach().cpu() if isinstance(prediction, torch.Tensor) else prediction) != 0
    b = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target) != 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _as_binary_case(x: np.ndarray | torch.Tensor, name: str, spatial_ndim: int | None) -> torch.Tensor:
    """(H, W[, D]) or (1, H, W[, D]) {0, 1} -> float tensor (1, 1, H, W[, D]) for MONAI."""
    t = convert_to_tensor(x, track_meta=False).detach().cpu()
    if spatial_ndim is None:  # (1, H, W) is read as a channel-first 2D image, not a 1-slice volume
        spatial_ndim = t.ndim - 1 if t.ndim == 4 or (t.ndim == 3 and t.shape[0] == 1) else t.ndim
    if t.ndim == spatial_ndim + 1:
        if t.shape[0] != 1:
            raise ValueError(
                f"{name} must be one binary case, (H, W[, D]) or (1, H, W[, D]); got shape {tuple(t.shape)}."
            )
        t = t[0]
    if t.ndim != spatial_ndim or spatial_ndim not in (2, 3):
        raise ValueError(f"{name} must be 2D or 3D, (H, W[, D]) or (1, H, W[, D]); got shape {tuple(x.shape)}.")
    values = torch.unique(t)
    if not bool(((values == 0) | (values == 1)).all()):
        raise ValueError(
            f"{name} must be binary {{0, 1}}, found values {values[:10].tolist()}: threshold probabilities "
            "and map 0/255 masks to 0/1 first."
        )
    return t.float()[None, None]


def case_metrics(
    pred: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
    metrics: Sequence[str] = ALL_METRICS,
) -> dict[str, float]:
    """Metrics of one binary case.

    Args:
        pred: binary prediction, (H, W[, D]) or (1, H, W[, D]), values in {0, 1}; for one-hot
            or multi-class outputs pass one class's channel (a (2, H, W) array reads as a volume).
        label: binary ground truth, same shape as ``pred``.
        spacing: voxel size per spatial axis (e.g. mm) for HD95/ASD; ``None`` gives voxels.
            With a 3-axis spacing a (1, H, W) array is read as a volume, otherwise as a 2D image.
        metrics: any of ``KNOWN_METRICS``.

    Returns:
        ``{metric: value}`` as Python floats. Sensitivity is NaN when the label is empty and
        specificity when it fills the image (0/0); HD95/ASD are NaN when either mask is empty.
    """
    unknown = set(metrics) - set(KNOWN_METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {KNOWN_METRICS}.")
    spatial_ndim = len(spacing) if spacing is not None else None
    y_pred = _as_binary_case(pred, "pred", spatial_ndim)
    y = _as_binary_case(label, "label", spatial_ndim)
    if y_pred.shape != y.shape:
        raise ValueError(f"pred and label shapes differ: {tuple(pred.shape)} vs {tuple(label.shape)}.")

    results: dict[str, float] = {}
    if "dice" in metrics:
        results["dice"] = DiceMetric(include_background=True, ignore_empty=False)(y_pred, y).item()
    if "iou" in metrics:
        results["iou"] = MeanIoU(include_background=True, ignore_empty=False)(y_pred, y).item()
    rates = [m for m in ("sensitivity", "specificity") if m in metrics]
    if rates:
        # The functional form: ConfusionMatrixMetric.aggregate() would all-gather its buffer across
        # processes in a distributed run, and only process 0 scores cases there.
        confusion = get_confusion_matrix(y_pred, y, include_background=True)
        for name in rates:
            results[name] = compute_confusion_matrix_metric(name, confusion).mean().item()

    distances = [m for m in _DISTANCE_METRICS if m in metrics]
    if distances:
        empty = [name for name, t in (("prediction", y_pred), ("label", y)) if not bool(t.any())]
        if empty:
            warnings.warn(
                f"empty {' and '.join(empty)}: {', '.join(distances)} undefined, reported as NaN.",
                EmptyMaskWarning,
                stacklevel=2,
            )
            results.update({name: math.nan for name in distances})
        else:
            with warnings.catch_warnings():
                # MONAI 1.5-1.6 passes its own deprecated `always_return_as_numpy` internally and
                # warns on every call; nothing a caller can act on.
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
                for name, unit_spacing in (("hd95", spacing), ("hd95_voxel", None)):
                    if name in metrics:
                        hd95 = HausdorffDistanceMetric(include_background=True, percentile=95)
                        results[name] = hd95(y_pred, y, spacing=unit_spacing).item()
                for name, unit_spacing in (("asd", spacing), ("asd_voxel", None)):
                    if name in metrics:
                        asd = SurfaceDistanceMetric(include_background=True, symmetric=True)
                        results[name] = asd(y_pred, y, spacing=unit_spacing).item()
    return {name: results[name] for name in metrics}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def summarise(records: Sequence[Mapping[str, object]]) -> dict[str, tuple[float, float]]:
    """Mean and (population, ddof=0) standard deviation of each numeric metric over cases.

    NaN values (undefined metrics, e.g. HD95 of an empty prediction) are left out of that
    metric's statistics; non-numeric fields such as a case identifier are ignored. A metric
    with no defined value at all gives ``(nan, nan)``.
    """
    names: list[str] = []
    for record in records:
        names += [k for k, v in record.items() if _is_number(v) and k not in names]
    summary: dict[str, tuple[float, float]] = {}
    for name in names:
        values = np.array([float(r[name]) for r in records if _is_number(r.get(name))], dtype=np.float64)
        values = values[~np.isnan(values)]
        summary[name] = (float(values.mean()), float(values.std())) if values.size else (math.nan, math.nan)
    return summary


def _format_cell(mean: float, std: float, scale: float, decimals: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean * scale:.{decimals}f} ± {std * scale:.{decimals}f}"


def results_table(
    rows: Mapping[str, Sequence[Mapping[str, object]]],
    metrics: Sequence[str] = ALL_METRICS,
    percent: Sequence[str] = PERCENT_METRICS,
    distance_unit: str | None = None,
    decimals: int = 2,
) -> str:
    """Markdown table in the papers' style: one row per method, "mean ± std" per metric.

    Args:
        rows: ``{method name: per-case records}`` (records as returned by :func:`case_metrics`).
        metrics: columns, in order.
        percent: metrics shown x100 with a "(%)" header (overlap scores, as the papers print them).
        distance_unit: unit appended to the HD95/ASD headers, e.g. ``"mm"`` or ``"voxel"``.
        decimals: digits after the decimal point.
    """
    headers = ["Method"]
    for name in metrics:
        header = DISPLAY_NAMES.get(name, name)
        if name in percent:
            header += " (%)"
        elif name in ("hd95", "asd") and distance_unit:
            header += f" ({distance_unit})"
        headers.append(header)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + [":---:"] * len(metrics)) + "|"]
    for method, records in rows.items():
        summary = summarise(records)
        cells = [method]
        for name in metrics:
            mean, std = summary.get(name, (math.nan, math.nan))
            cells.append(_format_cell(mean, std, 100.0 if name in percent else 1.0, decimals))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(value: object) -> object:
    """NaN/inf are not JSON: write them as null so any JSON reader can load the file."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if _is_number(value):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_results(
    path: str | Path,
    rows: Mapping[str, Sequence[Mapping[str, object]]],
    metrics: Sequence[str] = ALL_METRICS,
    distance_unit: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<path>.json`` (per-case records and summary per method) and ``<path>.md`` (the table).

    ``path`` may be given with or without the ``.json`` suffix; parent folders are created.
    Undefined values are stored as JSON ``null``. Returns the two paths written.
    """
    path = Path(path)
    json_path = path if path.suffix == ".json" else path.with_name(path.name + ".json")
    markdown_path = json_path.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        method: {
            "summary": {k: {"mean": m, "std": s} for k, (m, s) in summarise(records).items()},
            "cases": list(records),
        }
        for method, records in rows.items()
    }
    json_path.write_text(json.dumps(_json_safe(content), indent=2) + "\n")
    markdown_path.write_text(results_table(rows, metrics=metrics, distance_unit=distance_unit))
    return json_path, markdown_path
