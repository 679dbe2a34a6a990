"""Load a maintenance script from ``tools/`` as a module, for tests of its functions.

``tools/`` is a folder of scripts, not a package, and nothing puts it on ``sys.path`` (a test that
did would leave it there for every later test in the process): the file is loaded by its path
under a private module name instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module (loaded once per process; its ``__main__`` block does not run)."""
    key = f"_samssl_tool_{name}"
    if key in sys.modules:
        return sys.modules[key]
    path = TOOLS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no tool {path}")
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses and pickling look their module up while it executes
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module
