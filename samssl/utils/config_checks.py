"""Checks of a bundle config's values and keys that MONAI's command line cannot make for us.

``python -m monai.bundle run ... --method#use_sam false`` hands the *string* ``"false"`` to the
config: the command line is parsed by Python Fire, which turns only ``True``/``False`` into
booleans. A non-empty string is truthy, so the switch would silently stay on and a baseline
would run the full method. The bundles call :func:`refuse_string_switches` on their switch
sections before training, so the mistake stops the run with the fix in the message.

MONAI also accepts any key: ``--num_labeled 8`` (one letter off) or a preset that sets a key the
bundle does not define are merged into the config as new, unused keys, and the run goes on with
the default. :func:`check_command_line`, the first step of each bundle command, refuses them
with the closest existing names, and makes the project's own input errors the last line of the
output (:mod:`samssl.utils.errors`).
"""

from __future__ import annotations

import difflib
import inspect
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from samssl.utils.errors import InvalidInputError, UnknownKeyError, install_concise_errors

__all__ = [
    "SettingsDict",
    "check_command_line",
    "current_command",
    "defined_ids",
    "refuse_string_switches",
    "refuse_unknown_keys",
]

#: File names of the configs that define a bundle's keys (MONAI's workflow configs and the shared
#: bases). Every other config file of a command is a preset: it may only set keys these define.
DEFINING_CONFIGS = ("train.json", "multi_gpu_train.json", "evaluate.json", "inference.json")
#: Arguments of ``monai.bundle run`` / ``ConfigWorkflow`` that are not config overrides.
_WORKFLOW_ARGUMENTS = frozenset(
    {"run_id", "init_id", "final_id", "meta_file", "logging_file", "tracking", "workflow_type", "properties_path"}
)
_ANNOTATION_PREFIXES = ("_comment", "_desc")
_command: tuple[list[str], dict[str, Any]] | None = None  # set by check_command_line

_BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off"}


def refuse_string_switches(section: Mapping[str, Any], name: str) -> None:
    """Raise ``ValueError`` if any value of config ``section`` (called ``name``) is a boolean spelled as a string."""
    if not isinstance(section, Mapping):
        raise TypeError(f"config section {name!r} should be a mapping, got {type(section).__name__}")
    wrong = {k: v for k, v in section.items() if isinstance(v, str) and v.strip().lower() in _BOOLEAN_WORDS}
    if wrong:
        key, value = next(iter(wrong.items()))
        raise InvalidInputError(
            f"{name}#{key} is the string {value!r}, not a boolean (also: {sorted(wrong)[1:] or 'none'}). "
            f"On the command line write --{name}#{key} {value.strip().lower() in {'true', 'yes', 'on'}} "
            "(capitalised: Python Fire parses only True/False as booleans)."
        )


class SettingsDict(dict):
    """A config section of named settings with defaults: unknown keys are refused by name.

    Subclasses set :attr:`DEFAULTS` and :attr:`WHAT` (the section's name in messages). A plain
    dict, so configs write the section as one JSON object; ``_comment`` keys are dropped.
    """

    DEFAULTS: Mapping[str, Any] = {}
    WHAT = "settings"

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        values = {k: v for k, v in dict(values or {}).items() if k != "_comment"}
        unknown = sorted(set(values) - set(self.DEFAULTS))
        if unknown:
            hints = "".join(
                f" ({key!r}: did you mean {close[0]!r}?)"
                for key in unknown
                if (close := difflib.get_close_matches(key, list(self.DEFAULTS), n=1, cutoff=0.6))
            )
            raise UnknownKeyError(f"unknown {self.WHAT} {unknown}{hints}; known: {sorted(self.DEFAULTS)}")
        super().__init__({**self.DEFAULTS, **values})


def _walk_ids(config: Any, prefix: str = "") -> Iterator[str]:
    """Every id of a config (``a``, ``a#b``, ``a#0``) in MONAI's ``#`` notation."""
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        name = str(key).lstrip("+")
        config_id = f"{prefix}#{name}" if prefix else name
        yield config_id
        yield from _walk_ids(value, config_id)


def _set_ids(config: Mapping[str, Any]) -> Iterator[str]:
    """The ids a preset sets: its keys, and the keys inside a section it sets, but not inside a component it
    replaces whole (a dict with ``_target_``, whose arguments belong to the new class)."""
    for key, value in config.items():
        name = str(key).lstrip("+")
        if name.split("#")[-1].startswith(_ANNOTATION_PREFIXES):
            continue
        yield name
        if isinstance(value, Mapping) and "_target_" not in value:
            yield from (f"{name}#{sub}" for sub in _set_ids(value))


def _is_defining(path: Path) -> bool:
    return path.name in DEFINING_CONFIGS or path.name.startswith(("base_", "evaluate"))


def _read(path: Path) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise InvalidInputError(f"cannot read config file {path}: {err}") from err
    if not isinstance(content, Mapping):
        raise InvalidInputError(f"config file {path} holds a {type(content).__name__}, not a JSON object")
    return content


def defined_ids(config_files: Sequence[str | Path]) -> set[str]:
    """The ids a command's configs define: those of its defining configs (:data:`DEFINING_CONFIGS`,
    ``base_*``, ``evaluate*``; the first file always counts) and of the bundle's ``train.json``
    beside the first file, so a training preset merged into an evaluation keeps its meaning."""
    paths = [Path(f) for f in config_files]
    defining = [p for i, p in enumerate(paths) if i == 0 or _is_defining(p)]
    train = paths[0].parent / "train.json"
    if train.is_file() and train not in defining:
        defining.append(train)
    ids: set[str] = set()
    for path in defining:
        ids.update(_walk_ids(_read(path)))
    return ids


def _unknown_message(config_id: str, source: str, known: set[str]) -> str:
    parent, _, leaf = config_id.rpartition("#")
    siblings = [k for k in known if k.rpartition("#")[0] == parent]
    close = difflib.get_close_matches(config_id, siblings or list(known), n=1, cutoff=0.6)
    if not close and parent in known:  # a misspelt leaf under a known section: compare leaf names
        close = [f"{parent}#{m}" for m in difflib.get_close_matches(leaf, [k.rpartition("#")[2] for k in siblings], n=1)]
    hint = f": did you mean {close[0]!r}?" if close else ""
    return f"{source} sets {config_id!r}, which the bundle's configs do not define{hint} (a misspelt key would be ignored)"


def refuse_unknown_keys(config_files: Sequence[str | Path], overrides: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`UnknownKeyError` for a preset key or a command-line override the bundle does not define.

    Args:
        config_files: the command's ``--config_file`` list, in MONAI's merge order.
        overrides: the ``--id value`` pairs of the command line (MONAI's ``override``).
    """
    paths = [Path(f) for f in config_files]
    known = defined_ids(paths)
    problems = []
    for path in paths:
        if not _is_defining(path) and path != paths[0]:
            problems += [_unknown_message(i, f"preset {path.name}", known) for i in _set_ids(_read(path)) if i not in known]
    for config_id in overrides or {}:
        name = str(config_id).lstrip("+")
        if name not in known and not name.split("#")[-1].startswith(_ANNOTATION_PREFIXES):
            problems.append(_unknown_message(name, f"--{name}", known))
    if problems:
        raise UnknownKeyError("; ".join(problems))


def _monai_command() -> tuple[list[str], dict[str, Any]] | None:
    """The config files and overrides of the ``monai.bundle run`` call that is running this config.

    ``python -m monai.bundle run`` and ``monai.bundle.run(...)`` both call ``monai.bundle.scripts.run``,
    whose frame holds ``config_file``, ``args_file`` and the ``--id value`` pairs (``override``): read
    them from it (merged with the args file as MONAI merges them). None when the config runs some other
    way (a ``ConfigWorkflow`` or ``ConfigParser`` built in code, MONAI Label).
    """
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "run" and frame.f_globals.get("__name__") == "monai.bundle.scripts":
            local = frame.f_locals
            args = dict(local.get("override") or {})
            if local.get("args_file"):
                from monai.bundle.scripts import update_kwargs

                args = update_kwargs(args=local["args_file"], config_file=local.get("config_file"), **args)
            else:
                args["config_file"] = local.get("config_file")
            config_file = args.pop("config_file", None)
            if config_file is None:
                return None
            files = [config_file] if isinstance(config_file, (str, Path)) else list(config_file)
            return [str(f) for f in files], {k: v for k, v in args.items() if k not in _WORKFLOW_ARGUMENTS}
        frame = frame.f_back
    return None


def check_command_line() -> None:
    """The first step of each bundle config's ``training`` / ``evaluating`` / ``inferring`` list.

    (Not MONAI's ``initialize`` step: that runs before ``monai.bundle run`` puts the bundle root on
    ``sys.path``, and the config's ``import scripts`` would fail.)

    Installs :func:`samssl.utils.errors.install_concise_errors` (a user's mistake ends the output as
    one line) and, when MONAI's command line or ``monai.bundle.run`` built this workflow, refuses
    presets and overrides that set keys the bundle does not define (:func:`refuse_unknown_keys`).
    """
    global _command
    install_concise_errors()
    _command = _monai_command()
    if _command is not None:
        refuse_unknown_keys(*_command)


def current_command() -> tuple[list[str], dict[str, Any]] | None:
    """The config files and overrides of the ``monai.bundle`` command being run (as :func:`check_command_line`
    found them), so a saved model can record which presets trained it; None outside such a command."""
    return _command
