"""A run folder belongs to one run: the data list and the settings that define its training.

A bundle trains into ``runs/<run_name>/`` (its split ``datalist.json``, checkpoints, metrics, logs)
and resumes from the checkpoints it finds there. Without a record of what the folder holds, a
command with other data under the same run name overwrote the split and continued the other run's
model on the new data (the README's "Your own data" command, run after the quickstart, resumed the
synthetic-data model at iteration 60).

So a run folder records what defines its run, in ``run.json``: the SHA-256 of the data list and the
bundle's ``run_settings`` (each ``train.json`` lists its own: seed and split sizes, the method's
switches, input geometry, batch sizes and learning rate, network choices). :func:`claim_run_folder`
is called where the split is written (:func:`samssl.data.write_datalist` with ``run_settings``, from
the bundles' ``datalist`` expression), the first step of a training command that touches the folder:

* a fresh folder is claimed (split and record written);
* the same data list and settings pass: a killed run, restarted with the same command, resumes;
* anything else raises :class:`~samssl.utils.errors.InvalidInputError` before anything in the folder
  is written, naming what differs (recorded -> this command) and the two ways out: another
  ``--run_name``, or deleting the folder.

Left out of the record on purpose:

* the length of training (``max_epochs``, ``num_iterations``, ``epoch_length``): a finished run
  given more epochs continues, as the bundles document;
* where and how fast a run works: inside a recorded section, keys named in :data:`INCIDENTAL_KEYS`
  (caches, shared work folders, checkpoint interval, inference batch size, loader workers), and keys
  that start with ``_`` (comments).

A settings key that only one side knows (a bundle that records one more setting after an update)
is not compared. A folder written before records existed has a ``datalist.json`` and no
``run.json``: its data list is compared and, when equal, the folder is adopted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from samssl.utils.errors import InvalidInputError
from samssl.utils.files import atomic_write_json, fingerprint

__all__ = ["INCIDENTAL_KEYS", "RECORD_FILE", "claim_run_folder", "recorded_settings", "run_folder_differences"]

#: The record of a run folder.
RECORD_FILE = "run.json"

#: Keys of a recorded section that say where or how fast a run works, not what it trains.
INCIDENTAL_KEYS = frozenset({"cache_dir", "cache_bytes", "work_dir", "checkpoint_interval", "sw_batch_size",
                             "num_workers"})

_NOTE = ("What defines the run in this folder (samssl.utils.run_folder): a training command with another "
         "data list or other settings is refused here instead of resuming this run's checkpoints.")


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, paths and other objects strings)."""
    return json.loads(json.dumps(value, default=str))


def recorded_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as recorded: JSON values, nested sections flattened to config ids (``method#aux_head``,
    the spelling of a command-line override), comments and :data:`INCIDENTAL_KEYS` dropped."""
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                key = str(key)
                if key.startswith("_") or (prefix and key in INCIDENTAL_KEYS):
                    continue
                visit(f"{prefix}#{key}" if prefix else key, item)
        else:
            flat[prefix] = _as_json(value)

    if not isinstance(settings, Mapping):
        raise TypeError(f"run settings should be a mapping of config ids to values, got {type(settings).__name__}")
    visit("", settings)
    return flat


def _read_json(path: Path) -> Any:
    """The JSON content of ``path``; None when there is no such file or it cannot be read as JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _case_ids(entries: Any) -> list[str]:
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        return []
    return [str(e.get("id", e.get("image"))) if isinstance(e, Mapping) else str(e) for e in entries]


def _image_folder(datalist: Mapping[str, Any]) -> str | None:
    """The folder the data list's images share (its dataset folder, as the user gave it), if any."""
    images = [e["image"] for entries in datalist.values() if isinstance(entries, list)
              for e in entries if isinstance(e, Mapping) and isinstance(e.get("image"), str)]
    try:
        return os.path.commonpath([os.path.dirname(i) for i in images]) if images else None
    except ValueError:  # absolute and relative paths mixed
        return None


def _datalist_difference(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """What changed between two data lists, in a few words (case counts per list, the image folder)."""
    if not isinstance(old, Mapping):
        return "the data list (the folder's datalist.json no longer matches its record)"
    parts = []
    for key in [*old, *(k for k in new if k not in old)]:
        before, after = _case_ids(old.get(key)), _case_ids(new.get(key))
        if len(before) != len(after):
            parts.append(f"{key} {len(before)} -> {len(after)} cases")
        elif set(before) != set(after):
            parts.append(f"{key}: {len(set(before) - set(after))} of {len(before)} cases differ")
    folders = _image_folder(old), _image_folder(new)
    if folders[0] != folders[1]:
        parts.append(f"images in {folders[0]} -> {folders[1]}")
    return "the data list (" + ("; ".join(parts) or "the same cases, other entries") + ")"


def run_folder_differences(run_dir: str | Path, datalist: Mapping[str, Any], settings: Mapping[str, Any],
                           datalist_file: str = "datalist.json") -> list[str]:
    """What differs between the run recorded in ``run_dir`` and this one (empty: none, or a fresh folder).

    Each item names one difference, ``recorded -> this command``: the data list (case counts, the
    image folder) or one setting (``method#aux_head: True -> False``).
    """
    run_dir = Path(run_dir)
    new_list = _as_json(datalist)
    new_settings = recorded_settings(settings)
    old_list = _read_json(run_dir / datalist_file)
    record_path = run_dir / RECORD_FILE
    if not record_path.exists():  # a fresh folder, or one written before records existed
        if old_list is not None and fingerprint(old_list) != fingerprint(new_list):
            return [_datalist_difference(old_list, new_list)]
        return []
    record = _read_json(record_path)
    if not isinstance(record, Mapping):
        return [f"its record {record_path} cannot be read"]
    differences = []
    if record.get("datalist_sha256") != fingerprint(new_list):
        matches = old_list is not None and fingerprint(old_list) == record.get("datalist_sha256")
        differences.append(_datalist_difference(old_list if matches else None, new_list))
    old_settings = record.get("settings") or {}
    for key in sorted(set(old_settings) & set(new_settings)):
        if old_settings[key] != new_settings[key]:
            differences.append(f"{key} {old_settings[key]!r} -> {new_settings[key]!r}")
    return differences


def claim_run_folder(run_dir: str | Path, datalist: Mapping[str, Any], settings: Mapping[str, Any],
                     datalist_file: str = "datalist.json") -> Path:
    """Write ``datalist`` and the run's record into ``run_dir``, unless the folder holds another run.

    Args:
        run_dir: the run folder (``runs/<run_name>``), created if needed.
        datalist: the split (``{"labelled": [...], "unlabelled": [...], "validation": [...]}``).
        settings: the bundle's ``run_settings``: config ids to values (sections allowed).
        datalist_file: the split's file name in ``run_dir``.

    Returns:
        The path of the split file.

    Raises:
        InvalidInputError: ``run_dir`` holds a run with another data list or other settings; nothing
            in it was written. The message names what differs and the ways out.
    """
    run_dir = Path(run_dir).expanduser()
    differences = run_folder_differences(run_dir, datalist, settings, datalist_file)
    if differences:
        raise InvalidInputError(
            f"the run folder {run_dir} holds another run (recorded -> this command: {'; '.join(differences)}). "
            "Resuming there would continue that run's checkpoints with other data or settings, so nothing in it "
            f"was changed. Give this run its own folder with --run_name NEW (or another --output_dir), or delete "
            f"{run_dir} to train this run there from scratch."
        )
    # Files already holding the same content are left untouched (a resumed run rewrites nothing).
    split_path, record_path = run_dir / datalist_file, run_dir / RECORD_FILE
    new_list = _as_json(datalist)
    if _read_json(split_path) != new_list:
        atomic_write_json(split_path, datalist, indent=2)
    record = {"_comment": _NOTE, "datalist_sha256": fingerprint(new_list), "settings": recorded_settings(settings)}
    if _read_json(record_path) != record:
        atomic_write_json(record_path, record, indent=2)
    return split_path
