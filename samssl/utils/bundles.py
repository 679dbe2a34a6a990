"""A bundle's own ``scripts`` package, made importable the way ``monai.bundle run`` does it, and a
bundle config read with the shared base it is merged onto.

Every bundle keeps its local code in a top-level package named ``scripts`` (the model-zoo
convention, which MONAI Label relies on). ``monai.bundle run`` puts the bundle's root folder on
``sys.path`` before it runs a config, so ``scripts.x`` in a config is that bundle's. A benchmark or a
profiler that builds a bundle's objects outside ``monai.bundle run`` needs the same, and this helper
is the one place that does it: no tool edits ``sys.path`` itself.

Two bundles' ``scripts`` cannot be loaded at once (same top-level name): asking for another
bundle's drops the previous one's modules from ``sys.modules`` and its root from ``sys.path``, so
``scripts.x`` never silently resolves to the wrong bundle.

A bundle's ``configs/evaluate.json`` and ``configs/inference.json`` hold only what is the bundle's
own (its network, input size, spacing); MONAI merges each onto ``configs/base_<name>.json``, the part
every bundle of its family (2D, 3D) shares, listed first in ``--config_file``.
:func:`config_with_base` gives that list and :func:`merged_config` the merged content, for code that
reads a bundle config without ``monai.bundle run`` (the zoo packager, MONAI Label, the TorchScript
export).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["BASE_PREFIX", "BASE_NOTE_KEY", "config_with_base", "import_bundle_scripts", "merged_config"]

#: ``configs/<BASE_PREFIX><name>.json`` is the shared base ``configs/<name>.json`` is merged onto.
BASE_PREFIX = "base_"
#: The key of a bundle's own part that says how it is merged: meaningless once merged, so dropped.
BASE_NOTE_KEY = "_comment_base"

# Bundle roots this helper put on ``sys.path`` (one at a time), so it can take them off again.
_added_roots: list[str] = []


def _loaded_from(module: ModuleType) -> Path | None:
    """The bundle root a loaded ``scripts`` package comes from (None if it has no file)."""
    file = getattr(module, "__file__", None)
    return Path(file).resolve().parent.parent if file else None


def import_bundle_scripts(bundle_dir: str | Path, module: str = "scripts") -> ModuleType:
    """Import ``module`` (``scripts`` or one of its submodules) from the bundle at ``bundle_dir``.

    The bundle root stays on ``sys.path`` afterwards, as after ``monai.bundle run``, because a
    config parsed later may import more of ``scripts`` lazily.

    Raises:
        FileNotFoundError: ``bundle_dir`` has no ``scripts/__init__.py``.
        ValueError: ``module`` is not ``scripts`` or ``scripts.<name>``.
    """
    root = Path(bundle_dir).resolve()
    if not (root / "scripts" / "__init__.py").is_file():
        raise FileNotFoundError(f"{root} has no scripts/__init__.py: not a bundle folder with local code.")
    if module != "scripts" and not module.startswith("scripts."):
        raise ValueError(f"import_bundle_scripts: {module!r} is not 'scripts' or 'scripts.<name>'.")
    loaded = sys.modules.get("scripts")
    if loaded is not None and _loaded_from(loaded) != root:
        for key in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
            del sys.modules[key]
    for path in _added_roots:
        while path in sys.path:
            sys.path.remove(path)
    _added_roots[:] = [str(root)]
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return importlib.import_module(module)


def config_with_base(config_file: str | Path) -> list[Path]:
    """The files ``monai.bundle`` merges for ``config_file``, in order: its base first when it has one.

    ``configs/<name>.json`` has a base when ``configs/base_<name>.json`` exists next to it (in this
    repository a link into ``bundles/_base/<family>/``; a packaged zoo bundle has none: its configs
    are flattened).
    """
    path = Path(config_file)
    base = path.with_name(BASE_PREFIX + path.name)
    if path.name.startswith(BASE_PREFIX) or not base.is_file():
        return [path]
    return [base, path]


def merged_config(config_file: str | Path) -> dict:
    """``config_file`` merged onto its base as ``monai.bundle``'s multi-file ``--config_file`` merges it.

    The result is the whole config, self-contained (the note :data:`BASE_NOTE_KEY` on how the file
    is merged is left out).
    """
    from monai.bundle import ConfigParser

    merged = ConfigParser.load_config_files([str(p) for p in config_with_base(config_file)])
    merged.pop(BASE_NOTE_KEY, None)
    return merged
