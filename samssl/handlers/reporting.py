"""End-of-run reports for segmentation evaluators: a metrics table, a JSON file and an overlay PNG.

A clinician or reviewer should be able to open one PNG and one table after a run and see what the
model does, so every bundle's evaluator (validation during training, ``evaluate.json``) attaches
:class:`SegmentationReport`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from samssl.handlers.engine_log import quiet_fresh_start_line
from samssl.metrics import case_metrics, results_table, summarise

logger = logging.getLogger(__name__)

GT_COLOUR = (0, 255, 0)
PRED_COLOUR = (255, 0, 0)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in any range -> (H, W, 3) uint8, min-max scaled per image."""
    image = image.astype(np.float32)
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return (image * 255).astype(np.uint8)


def overlay(image: np.ndarray, label: np.ndarray | None, pred: np.ndarray) -> np.ndarray:
    """Draw the label contour (green) and the prediction contour (red) on an RGB image."""
    rgb = _as_rgb(image).copy()
    for mask, colour in ((label, GT_COLOUR), (pred, PRED_COLOUR)):
        if mask is None:
            continue
        mask = np.squeeze(mask).astype(bool)
        edge = find_boundaries(mask, mode="thick")
        rgb[edge] = colour
    return rgb


def save_overlay_grid(tiles: list[np.ndarray], path: str | Path, columns: int = 4, caption: str = "") -> Path:
    """Tile equally sized RGB overlays into one PNG (smaller tiles are padded)."""
    if not tiles:
        raise ValueError("no overlays to save")
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    header = 18 if caption else 0
    canvas = np.full((rows * h + header, columns * w, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[header + r * h : header + r * h + tile.shape[0], c * w : c * w + tile.shape[1]] = tile
    picture = Image.fromarray(canvas)
    if caption:
        ImageDraw.Draw(picture).text((4, 3), caption, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


class SegmentationReport:
    """Per-case metrics over an evaluator run: a table, ``<name>_metrics.json`` / ``.csv`` and ``<name>_overlay.png``.

    Expects decollated evaluator outputs (MONAI's default): one dict per case with ``pred`` (class
    indices, (1, *spatial)), ``label`` and ``image``. Only 2D cases get overlays; 3D cases are
    summarised by their central axial slice.

    Args:
        output_dir: where the JSON and PNG go.
        name: prefix of the files and title of the table ("validation", "test", ...).
        num_overlays: how many cases to draw.
        metrics: metric names understood by :func:`samssl.metrics.case_metrics`.
        spacing: voxel spacing for distance metrics (None = voxel units).
    """

    def __init__(
        self,
        output_dir: str | Path,
        name: str = "validation",
        num_overlays: int = 8,
        metrics: tuple[str, ...] = ("dice", "iou", "sensitivity", "specificity"),
        spacing: Any = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.name = name
        self.num_overlays = num_overlays
        self.metrics = tuple(metrics)
        self.spacing = spacing
        self.records: list[dict[str, Any]] = []
        self.tiles: list[np.ndarray] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if isinstance(getattr(engine, "logger", None), logging.Logger):  # each pass would log "resuming from iteration 0"
            quiet_fresh_start_line(engine.logger)
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._report)

    def _reset(self, engine: Any) -> None:
        self.records, self.tiles = [], []

    def _collect(self, engine: Any) -> None:
        outputs = engine.state.output
        if isinstance(outputs, dict):
            outputs = [outputs]
        for case in outputs:
            pred = _to_numpy(case["pred"])
            label = _to_numpy(case["label"])
            record = {"id": _case_id(case, len(self.records))}
            record.update(case_metrics(pred, label, spacing=self.spacing, metrics=self.metrics))
            self.records.append(record)
            if len(self.tiles) < self.num_overlays:
                image = _to_numpy(case["image"])
                if pred.ndim == 4:  # (1, H, W, D): show the central slice
                    z = pred.shape[-1] // 2
                    image, label, pred = image[..., z], label[..., z], pred[..., z]
                self.tiles.append(overlay(image, label, pred))

    def _report(self, engine: Any) -> None:
        if not self.records:
            logger.warning("%s: no cases were evaluated", self.name)
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        summary = {k: {"mean": m, "std": s} for k, (m, s) in summarise(self.records).items()}
        payload = {"name": self.name, "num_cases": len(self.records), "summary": summary, "cases": self.records}
        json_path = self.output_dir / f"{self.name}_metrics.json"
        json_path.write_text(json.dumps(payload, indent=2))
        csv_path = self.output_dir / f"{self.name}_metrics.csv"
        with open(csv_path, "w", newline="") as stream:  # one row per case, for spreadsheets and other metric code
            writer = csv.DictWriter(stream, fieldnames=["id", *self.metrics], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.records)
        png_path = save_overlay_grid(
            self.tiles, self.output_dir / f"{self.name}_overlay.png", caption=f"{self.name}: green = label, red = prediction"
        )
        table = results_table({self.name: self.records}, metrics=self.metrics)
        message = (f"\n{self.name} on {len(self.records)} cases\n{table}\nmetrics: {json_path} (per case: {csv_path.name})"
                   f"\noverlay: {png_path}")
        logger.info(message)
        engine.state.metrics.update({f"{self.name}_{k}": v["mean"] for k, v in summary.items()})


def _case_id(case: dict[str, Any], index: int) -> str:
    for key in ("image", "label"):
        meta = getattr(case.get(key), "meta", None)
        if meta and "filename_or_obj" in meta:
            return Path(str(meta["filename_or_obj"])).name
    return f"case_{index:04d}"
