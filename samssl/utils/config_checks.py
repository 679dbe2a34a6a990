"""Checks of a bundle config's values that MONAI's command line cannot make for us.

``python -m monai.bundle run ... --method#use_sam false`` hands the *string* ``"false"`` to the
config: the command line is parsed by Python Fire, which turns only ``True``/``False`` into
booleans. A non-empty string is truthy, so the switch would silently stay on and a baseline
would run the full method. The bundles call :func:`refuse_string_switches` on their switch
sections before training, so the mistake stops the run with the fix in the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SettingsDict", "refuse_string_switches"]

_BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off"}


def refuse_string_switches(section: Mapping[str, Any], name: str) -> None:
    """Raise ``ValueError`` if any value of config ``section`` (called ``name``) is a boolean spelled as a string."""
    if not isinstance(section, Mapping):
        raise TypeError(f"config section {name!r} should be a mapping, got {type(section).__name__}")
    wrong = {k: v for k, v in section.items() if isinstance(v, str) and v.strip().lower() in _BOOLEAN_WORDS}
    if wrong:
        key, value = next(iter(wrong.items()))
        raise ValueError(
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
            raise ValueError(f"unknown {self.WHAT} {unknown}; known: {sorted(self.DEFAULTS)}")
        super().__init__({**self.DEFAULTS, **values})
