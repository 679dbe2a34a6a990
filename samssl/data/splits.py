"""Labelled / unlabelled / validation splits and K-fold splits, written to JSON.

Semi-supervised results depend on which few cases are labelled, so a split must be a pure
function of (datalist, seed) and must be kept on disk next to the run. Unlabelled entries lose
their ``"label"`` key here, once: no method downstream can read ground truth it is not allowed
to see, whatever its code does (prompts built from the masks of "unlabelled" cases are a known
leak in published semi-supervised code; this makes that impossible).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import partition_dataset

from samssl.data.datalists import (
    UnknownLayoutError,
    dermoscopy_datalist,
    isic_datalist,
    msd_datalist,
    ph2_datalist,
    uamt_h5_datalist,
    volume_datalist,
)
from samssl.utils.errors import InvalidInputError, MissingInputError
from samssl.utils.files import atomic_write_json
from samssl.utils.run_folder import claim_run_folder

__all__ = ["split_labelled", "kfold_splits", "write_datalist", "load_datalist", "prepare_split", "LAYOUTS"]

Entry = dict[str, str]
PathLike = str | Path

#: Datalist builders by the ``layout`` name :func:`prepare_split` accepts.
LAYOUTS: dict[str, Callable[[PathLike], list[Entry]]] = {
    "isic": isic_datalist,
    "ph2": ph2_datalist,
    "dermoscopy": dermoscopy_datalist,
    "msd": msd_datalist,
    "h5": uamt_h5_datalist,
    "volume": volume_datalist,
}


def _sorted_copy(datalist: Sequence[Entry]) -> list[Entry]:
    counts = Counter(entry["id"] for entry in datalist)
    duplicates = sorted(case_id for case_id, count in counts.items() if count > 1)
    if duplicates:
        raise InvalidInputError(f"case ids must be unique, found duplicates: {', '.join(duplicates[:5])}")
    return [dict(entry) for entry in sorted(datalist, key=lambda entry: entry["id"])]


def _without_label(entry: Entry) -> Entry:
    return {key: value for key, value in entry.items() if key != "label"}


def _by_id(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda entry: entry["id"])


def split_labelled(
    datalist: Sequence[Entry],
    num_labelled: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    num_val: int = 0,
) -> dict[str, list[Entry]]:
    """Split a datalist into ``"labelled"``, ``"unlabelled"`` and ``"validation"`` lists.

    The datalist is sorted by id, shuffled with ``random.Random(seed)``; the first ``num_val``
    labelled cases become the validation set, the next ``num_labelled`` the labelled set, the
    rest the unlabelled pool (their ``"label"`` key removed). Entries that never had a label
    always go to the unlabelled pool. Each output list is sorted by id.

    Args:
        datalist: entries with ``"image"``, ``"id"`` and (for candidates to be labelled) ``"label"``.
        num_labelled: number of labelled training cases.
        fraction: alternatively, the labelled fraction of the training pool (the labelled cases
            left after taking out validation), rounded, at least one case.
        seed: the split is a function of the datalist and this seed only.
        num_val: validation cases, drawn first, kept with their labels.
    """
    if (num_labelled is None) == (fraction is None):
        raise InvalidInputError("give exactly one of num_labelled or fraction")
    if not datalist:
        raise InvalidInputError("cannot split an empty datalist")
    if num_val < 0:
        raise InvalidInputError(f"num_val must be >= 0, got {num_val}")
    entries = _sorted_copy(datalist)
    candidates = [entry for entry in entries if "label" in entry]
    never_labelled = [entry for entry in entries if "label" not in entry]
    if num_val > len(candidates):
        raise InvalidInputError(f"num_val={num_val} exceeds the {len(candidates)} cases that have a label")
    pool_size = len(candidates) - num_val
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise InvalidInputError(f"fraction must be in (0, 1], got {fraction}")
        count = max(1, round(fraction * pool_size))
    else:
        count = int(num_labelled)  # type: ignore[arg-type]  # exactly one of the two is set
    if not 1 <= count <= pool_size:
        raise InvalidInputError(
            f"num_labelled must be between 1 and {pool_size} (cases with a label, less {num_val} for validation), "
            f"got {count}"
        )
    random.Random(seed).shuffle(candidates)
    validation = candidates[:num_val]
    labelled = candidates[num_val : num_val + count]
    unlabelled = [_without_label(entry) for entry in candidates[num_val + count :] + never_labelled]
    return {"labelled": _by_id(labelled), "unlabelled": _by_id(unlabelled), "validation": _by_id(validation)}


def kfold_splits(datalist: Sequence[Entry], num_folds: int = 5, seed: int = 0) -> list[dict[str, list[Entry]]]:
    """``num_folds`` folds of ``{"train": [...], "val": [...]}``; every case is in exactly one ``val``.

    Deterministic for a seed (the datalist is sorted by id before the seeded shuffle).
    """
    entries = _sorted_copy(datalist)
    if not 2 <= num_folds <= len(entries):
        raise InvalidInputError(f"num_folds must be between 2 and the number of cases ({len(entries)}), got {num_folds}")
    parts = partition_dataset(entries, num_partitions=num_folds, shuffle=True, seed=seed, even_divisible=False)
    return [
        {
            "train": _by_id([entry for j, part in enumerate(parts) if j != fold for entry in part]),
            "val": _by_id(list(parts[fold])),
        }
        for fold in range(num_folds)
    ]


def write_datalist(path: PathLike, datalist_dict: dict, run_settings: Mapping[str, Any] | None = None) -> Path:
    """Write a datalist dict as pretty JSON (key order kept), creating parent folders.

    The file is written next to its destination and renamed, so a killed run never leaves a
    half-written split behind.

    With ``run_settings`` (a bundle's settings that define its training), ``path``'s folder is a run
    folder: it is claimed for this split and these settings first
    (:func:`samssl.utils.run_folder.claim_run_folder`), and a folder that holds another run is
    refused before anything in it, this file included, is overwritten.
    """
    path = Path(path).expanduser()
    if run_settings is not None:
        return claim_run_folder(path.parent, datalist_dict, run_settings, datalist_file=path.name)
    atomic_write_json(path, datalist_dict, indent=2)
    return path


def load_datalist(path: PathLike) -> dict:
    """Read a datalist JSON written by :func:`write_datalist` (or by hand)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"datalist file not found: {path}")
    return json.loads(path.read_text())


def _build_datalist(dataset_dir: Path, layout: str) -> list[Entry]:
    if layout == "auto":
        try:
            return volume_datalist(dataset_dir)
        except UnknownLayoutError as volume_error:
            try:
                return dermoscopy_datalist(dataset_dir)
            except UnknownLayoutError as image_error:
                raise UnknownLayoutError(f"{volume_error}; and {image_error}") from None
    if layout not in LAYOUTS:
        raise InvalidInputError(f"unknown layout '{layout}': use 'auto' or one of {', '.join(LAYOUTS)}")
    return LAYOUTS[layout](dataset_dir)


def prepare_split(
    dataset_dir: PathLike,
    output_json: PathLike,
    num_labelled: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    num_val: int = 0,
    layout: str = "auto",
    run_settings: Mapping[str, Any] | None = None,
) -> dict[str, list[Entry]]:
    """Build the datalist of ``dataset_dir``, split it, write the split to ``output_json``, return it.

    Meant to be called from a bundle config
    (``"$samssl.data.prepare_split(@dataset_dir, @output_dir + '/datalist.json', num_labelled=8,
    run_settings=@run_settings)"``) so that every run leaves the exact cases it used on disk, and a
    run folder that holds another run is refused before its split is overwritten.

    Args:
        layout: ``"auto"`` (volume layouts first, then dermoscopy), or one of
            ``"isic"``, ``"ph2"``, ``"dermoscopy"``, ``"msd"``, ``"h5"``, ``"volume"``.
        run_settings: the settings that define the run training in ``output_json``'s folder (see
            :func:`write_datalist`); None writes the file without a run record.
        other args: see :func:`split_labelled`.
    """
    datalist = _build_datalist(Path(dataset_dir).expanduser(), layout)
    split = split_labelled(datalist, num_labelled=num_labelled, fraction=fraction, seed=seed, num_val=num_val)
    write_datalist(output_json, split, run_settings=run_settings)
    return split
