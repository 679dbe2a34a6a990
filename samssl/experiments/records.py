"""The harness's ``results.json``: per-case records of a comparison, and what makes two comparisons one.

A ``results.json`` holds ``{"bundle", "method", "baseline", "seeds", "settings", "variants", "cases"}``
with ``cases[variant][seed] = [{"id": ..., "dice": ..., ...}, ...]``, every test case of every run. It
is the unit the docs commit, the next piece of a long comparison joins (``--earlier_results``) and
the leaderboard reads. ``settings`` (data, split sizes, the preset's name and the values it set,
overrides) is what makes two runs of a variant and seed the same experiment: records with other
settings must never enter one table, and a preset edited since must not pass under its old name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PATH_SETTINGS",
    "Records",
    "Results",
    "differing_settings",
    "is_comparison_record",
    "load_earlier_results",
    "load_results",
    "project_relative",
    "results_document",
]

# results[variant][seed] = [{"id": ..., "dice": ...}, ...]
Results = Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]]
Records = dict[str, dict[int, list[dict[str, Any]]]]

# settings that name folders: compared resolved, so a comparison is the same however its paths were written
PATH_SETTINGS = ("train_dir", "test_dir", "data", "models_from")


def project_relative(path: str | Path, root: Path) -> str:
    """``path`` relative to the project root, so a recorded comparison (and a results file copied into
    the docs) names no machine's folders."""
    return os.path.relpath(Path(path).resolve(), root)


def differing_settings(recorded: Mapping[str, Any], settings: Mapping[str, Any], root: Path) -> str:
    """The settings in which a recorded comparison differs from ``settings``, as text ('' when the same).

    Data folders are relative to ``root`` and compare resolved.
    """
    def same(key: str, old: Any, new: Any) -> bool:
        if key in PATH_SETTINGS and old is not None and new is not None:
            return (root / old).resolve() == (root / new).resolve()
        return old == new

    def describe(key: str, old: Any, new: Any) -> str:
        if key == "preset_values" and old is None:
            return "preset values: not recorded there (a comparison made before presets' values were recorded)"
        if key == "preset_values" and isinstance(old, Mapping) and isinstance(new, Mapping):
            keys = sorted(set(old) | set(new), key=str)
            return "; ".join(f"preset {k}: {old.get(k)!r} there, {new.get(k)!r} now"
                             for k in keys if old.get(k) != new.get(k))
        return f"{key}: {old!r} there, {new!r} now"

    differing = {k: (recorded.get(k), v) for k, v in settings.items() if not same(k, recorded.get(k), v)}
    return "; ".join(describe(k, old, new) for k, (old, new) in differing.items())


def is_comparison_record(document: Any) -> bool:
    """Whether a parsed JSON file is a harness ``results.json`` (other result files sit beside them)."""
    return (isinstance(document, Mapping) and isinstance(document.get("cases"), Mapping)
            and isinstance(document.get("method"), str))


def load_results(path: str | Path) -> Records:
    """The per-case records of a ``results.json``: ``{variant: {seed: records}}``."""
    cases = json.loads(Path(path).read_text())["cases"]
    return {name: {int(seed): records for seed, records in by_seed.items()} for name, by_seed in cases.items()}


def load_earlier_results(paths: Sequence[str | Path], settings: Mapping[str, Any], root: Path) -> Records:
    """Merge the records of earlier ``results.json`` files, each checked to be this comparison's.

    A comparison too long for one sitting is finished piecewise (a seed or a variant at a time) and
    its pieces joined here, so each file must have been made with the same data, split, preset and
    overrides (``settings``): records of another comparison would otherwise enter the tables as this
    one's. Two files holding the same variant and seed must agree case for case.
    """
    merged: Records = {}
    origin: dict[tuple[str, int], Path] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise SystemExit(f"--earlier_results: {path} does not exist.")
        recorded = json.loads(path.read_text()).get("settings")
        details = differing_settings(recorded, settings, root) if recorded is not None else ""
        if details:
            raise SystemExit(f"--earlier_results: {path} is a comparison with other settings ({details}); "
                             "its records are not this comparison's.")
        for name, by_seed in load_results(path).items():
            for seed, records in by_seed.items():
                if (name, seed) in origin and merged[name][seed] != records:
                    raise SystemExit(f"--earlier_results: {name} seed {seed} differs between {origin[name, seed]} "
                                     f"and {path}; keep one of them.")
                merged.setdefault(name, {})[seed] = records
                origin.setdefault((name, seed), path)
    return merged


def results_document(bundle: str, method: str, baseline: str, seeds: Sequence[int], settings: Mapping[str, Any],
                     labels: Mapping[str, str], known: Records) -> dict[str, Any]:
    """The ``results.json`` content of a comparison: every record it knows, with the labels of its variants."""
    return {"bundle": bundle, "method": method, "baseline": baseline, "seeds": list(seeds), "settings": dict(settings),
            "variants": {n: labels.get(n, n) for n in known},
            "cases": {n: {str(s): known[n][s] for s in sorted(known[n])} for n in known}}
