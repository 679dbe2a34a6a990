"""tools/ holds scripts only: none edits sys.path, and bundle-local code comes through one library helper."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tool_loading import TOOLS, load_tool  # same directory, on sys.path under pytest

from samssl.utils.bundles import config_with_base, import_bundle_scripts, merged_config

ROOT = Path(__file__).resolve().parents[1]


def test_no_tool_edits_sys_path():
    offenders = [p.name for p in sorted(TOOLS.glob("*.py")) if "sys.path" in p.read_text()]
    assert not offenders, f"tools that edit sys.path (use samssl.utils.bundles.import_bundle_scripts): {offenders}"


@pytest.fixture
def clean_scripts():
    """Restore sys.path and the loaded ``scripts`` modules after a test that swaps bundles."""
    path = list(sys.path)
    saved = {k: m for k, m in sys.modules.items() if k == "scripts" or k.startswith("scripts.")}
    yield
    sys.path[:] = path
    for key in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
        del sys.modules[key]
    sys.modules.update(saved)


def _bundle(root: Path, value: str) -> Path:
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "__init__.py").write_text(f"VALUE = {value!r}\n")
    (root / "scripts" / "part.py").write_text(f"PART = {value!r}\n")
    return root


def test_import_bundle_scripts_swaps_one_bundle_for_another(tmp_path, clean_scripts):
    a, b = _bundle(tmp_path / "a", "a"), _bundle(tmp_path / "b", "b")
    assert import_bundle_scripts(a, "scripts.part").PART == "a"
    assert import_bundle_scripts(b).VALUE == "b"
    # the other bundle's submodule is gone, not served from the cache, and only b's root is on the path
    assert import_bundle_scripts(b, "scripts.part").PART == "b"
    assert str(a) not in sys.path and sys.path.count(str(b)) == 1


def test_import_bundle_scripts_refuses_a_folder_without_scripts_or_another_package(tmp_path, clean_scripts):
    with pytest.raises(FileNotFoundError, match="no scripts/__init__.py"):
        import_bundle_scripts(tmp_path)
    with pytest.raises(ValueError, match="not 'scripts'"):
        import_bundle_scripts(_bundle(tmp_path / "a", "a"), "samssl")


def test_a_real_bundle_network_comes_through_the_helper(clean_scripts):
    network = import_bundle_scripts(ROOT / "bundles" / "uamt_skin", "scripts.network")
    assert Path(network.__file__).resolve() == ROOT / "bundles" / "uamt_skin" / "scripts" / "network.py"


@pytest.mark.parametrize("name", ["benchmark_updates", "benchmark_tffs", "profile_training", "pseudo_label_quality",
                                  "make_demo_data", "describe_volume_folder", "teacher_batch_norm_effect"])
def test_tools_import_without_path_edits(name, clean_scripts):
    """Each tool's imports resolve from the installed library (and the helper) alone."""
    assert callable(load_tool(name).main)


def test_a_config_with_a_base_is_merged_onto_it_as_monai_merges_a_config_list(tmp_path):
    import json

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "base_evaluate.json").write_text(json.dumps(
        {"imports": ["$import os"], "size": 1, "validate": {"inferer": "plain", "batch_size": 4}, "run": "$@validate"}))
    (configs / "evaluate.json").write_text(json.dumps(
        {"+imports": ["$import scripts"], "_comment_base": "how this file is merged", "size": 2, "validate#inferer": "window"}))
    (configs / "train.json").write_text("{}")
    assert config_with_base(configs / "evaluate.json") == [configs / "base_evaluate.json", configs / "evaluate.json"]
    assert config_with_base(configs / "train.json") == [configs / "train.json"]  # no base: the file alone
    assert config_with_base(configs / "base_evaluate.json") == [configs / "base_evaluate.json"]
    assert merged_config(configs / "evaluate.json") == {  # the note on merging is dropped from the whole
        "imports": ["$import os", "$import scripts"], "size": 2, "validate": {"inferer": "window", "batch_size": 4},
        "run": "$@validate"}
