"""What the CPU is, read from the kernel's ``cpuinfo`` (Linux): its feature flags and model name.

One home for two readers: the precision decision (does the CPU have native bfloat16?) and the
encoder runtime's cached ``auto`` choice (valid for one CPU model). Elsewhere the file is absent and
both answers are ``None``, which the callers treat as "cannot tell".
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CPUINFO", "cpu_flags", "cpu_model"]

#: Where Linux describes the CPU (built from parts: no machine path is written into the project).
CPUINFO = Path(os.sep, "proc", "cpuinfo")


def _field_values(name: str, path: Path) -> list[str] | None:
    """The values of every ``name : value`` line of ``path``; None when the file cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.split(":", 1)[0].strip() == name]


def cpu_flags(path: Path = CPUINFO) -> set[str] | None:
    """The CPU's feature flags (``avx512_bf16``, ``amx_bf16``, ...); None when ``path`` cannot be read."""
    values = _field_values("flags", path)
    return None if values is None else {flag for value in values for flag in value.split()}


def cpu_model(path: Path = CPUINFO) -> str | None:
    """The CPU's model name; None when ``path`` cannot be read or names none."""
    values = _field_values("model name", path)
    return values[0] if values else None
