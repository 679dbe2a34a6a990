"""A saved model carries the settings inference needs to reproduce its training.

A model trained with a preset (``demo.json`` at 128 px, ``cpu.json`` at 1.25 mm) and then evaluated,
served or packaged with the bundle's plain ``evaluate.json`` / ``inference.json`` would run at the
defaults (256 px, 0.625 mm) without a word and score far below what it learnt (Dice 28.5 instead of
49.9 on the same images). So training writes, next to the weights in ``model.pt``, the entry
``trained_settings``: the values of the config ids the bundle names in its ``trained_settings``
section (input size or spacing, window, network variant) and the config files of the command.

Evaluation, inference, MONAI Label and the zoo package read those ids through
:func:`trained_setting` (the model's value, else the config's default), and
:func:`samssl.handlers.load_network_weights` (``expected_settings=``) refuses a command that sets
one of them to another value, naming both, instead of scoring the model at the wrong size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from samssl.utils import config_checks
from samssl.utils.errors import InvalidInputError

__all__ = ["SETTINGS_ENTRY", "TrainedSettings", "check_trained_settings", "read_trained_settings", "trained_setting"]

#: The entry of ``model.pt`` that holds the record.
SETTINGS_ENTRY = "trained_settings"
_logger = logging.getLogger(__name__)
_cache: dict[tuple[str, int, int], dict[str, Any]] = {}


def _plain(value: Any) -> Any:
    """``value`` as JSON-like data (``weights_only`` loading accepts nothing else)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


class TrainedSettings:
    """The ``trained_settings`` entry of a saved model (an object with ``state_dict`` for MONAI's savers).

    Args:
        settings: config id -> value, the bundle's ``trained_settings`` section as training resolved it.
        configs: the config files of the training command (their names are stored); default: the
            files of the ``monai.bundle`` command that is running, when there is one.
    """

    def __init__(self, settings: Mapping[str, Any], configs: Sequence[str | Path] | None = None) -> None:
        self.settings = _plain(dict(settings))
        if configs is None:
            command = config_checks.current_command()
            configs = command[0] if command else ()
        self.configs = [Path(c).name for c in configs]

    def state_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "configs": self.configs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.settings = dict(state.get("settings", {}))
        self.configs = list(state.get("configs", []))


def read_trained_settings(checkpoint: str | Path) -> dict[str, Any]:
    """The ``trained_settings`` record of ``checkpoint`` (``{}`` when the file is absent or holds none).

    Read with ``mmap`` (the weights are not loaded) and cached by path, size and modification time,
    since a config asks for each setting separately.
    """
    path = Path(checkpoint)
    try:
        stat = path.stat()
    except OSError:
        return {}
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _cache:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - unreadable files are reported by the weights' loader, with the fix
            return {}
        record = stored.get(SETTINGS_ENTRY) if isinstance(stored, Mapping) else None
        _cache[key] = dict(record) if isinstance(record, Mapping) else {}
    return _cache[key]


def trained_setting(checkpoint: str | Path, config_id: str, default: Any) -> Any:
    """What ``checkpoint``'s training used for ``config_id``; ``default`` for a model without the record."""
    settings = read_trained_settings(checkpoint).get("settings", {})
    return settings.get(config_id, default)


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


def check_trained_settings(checkpoint: str | Path, expected: Mapping[str, Any] | None) -> None:
    """Refuse to use ``checkpoint`` with settings that contradict those it was trained with.

    Args:
        checkpoint: the model file.
        expected: config id -> the value this command uses (the bundle's ``trained_settings`` section).

    Raises:
        InvalidInputError: naming each id, the trained value and this command's value.
    """
    record = read_trained_settings(checkpoint)
    trained = record.get("settings", {})
    if not expected:
        return
    if not trained:
        if Path(checkpoint).is_file():
            _logger.warning("%s records no training settings (saved before they were recorded): using the config's "
                            "values %s; make sure they are the ones it was trained with", checkpoint, dict(expected))
        return
    differ = {k: (trained[k], v) for k, v in expected.items() if k in trained and not _same(trained[k], v)}
    if differ:
        presets = ", ".join(record.get("configs", [])) or "its training configs"
        listed = "; ".join(f"{k}: trained with {t!r}, this command sets {v!r}" for k, (t, v) in differ.items())
        raise InvalidInputError(
            f"{checkpoint} was trained with other settings ({presets}): {listed}. Leave these keys out (the "
            "model's own values are the default) or give the trained values."
        )
