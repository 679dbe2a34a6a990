"""The placement rule of ARCHITECTURE.md, checked: package layers, no cycles, bundles import the library only."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "samssl"

#: Which library packages each package may import (ARCHITECTURE.md's import graph).
ALLOWED: dict[str, set[str]] = {
    "utils": set(),
    "metrics": set(),
    "data": {"utils"},
    "foundation": {"utils", "data"},
    "networks": {"foundation", "data", "utils"},
    "losses": {"foundation", "data", "utils"},
    "handlers": {"networks", "foundation", "metrics", "data", "utils"},
    "engines": {"handlers", "losses", "networks", "data", "utils"},
    "stages": {"engines", "handlers", "losses", "networks", "foundation", "data", "utils"},
    "experiments": {"metrics", "data", "handlers", "utils"},
    "demo": {"data", "utils"},
}
CONCRETE_BACKENDS = ("litemedsam", "sam", "sam2", "sam_med3d")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _package(path: Path) -> str:
    parts = path.relative_to(LIBRARY).parts
    return parts[0].removesuffix(".py")


def test_library_packages_import_only_the_layers_below_them():
    edges: dict[str, set[str]] = defaultdict(set)
    for path in LIBRARY.rglob("*.py"):
        source = _package(path)
        if source == "__init__":
            continue
        for name in _imports(path):
            if name.startswith("samssl."):
                target = name.split(".")[1]
                if target != source:
                    edges[source].add(target)
    unknown = set(edges) - set(ALLOWED)
    assert not unknown, f"packages missing from ARCHITECTURE.md's graph: {sorted(unknown)}"
    wrong = {src: sorted(dst - ALLOWED[src]) for src, dst in edges.items() if dst - ALLOWED[src]}
    assert not wrong, f"imports against the layering of ARCHITECTURE.md: {wrong}"


def test_bundles_import_the_library_and_their_own_scripts_only():
    offenders = []
    for path in (ROOT / "bundles").glob("*/scripts/*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ("common", "bundles", "tools", "tests"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_no_module_named_common_and_no_sys_path_edits_in_tools():
    assert not (ROOT / "common").exists()
    edits = [str(p.relative_to(ROOT)) for p in (ROOT / "tools").glob("*.py") if "sys.path" in p.read_text()]
    assert not edits, f"tools must import the installed library, not edit sys.path: {edits}"


def test_engines_load_no_concrete_foundation_model_backend():
    code = ("import sys, samssl.engines, samssl.handlers, samssl.losses; "
            "print(','.join(sorted(m for m in sys.modules if m.startswith('samssl.foundation.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    backends = [m for m in loaded.split(",") if m.rsplit(".", 1)[-1] in CONCRETE_BACKENDS]
    assert not backends, f"importing the engines loaded {backends}: backends are imported by the registry on use"
