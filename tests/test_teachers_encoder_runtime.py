"""Encoder runtimes of LiteMedSAM: each gives fp32's embedding on a real image, ``auto`` picks one, bad names refused.

The speed and mask-Dice figures behind the defaults are measured by ``tools/benchmark_encoder.py``;
these tests only guard what must never break: a runtime that is available returns the same
embedding as fp32 eager (within its precision), and a wrong setting is named with the choices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from samssl.foundation import build_foundation_model
from samssl.foundation import encoder_runtime as runtimes
from samssl.utils.errors import InvalidInputError

#: Worst embedding cosine to fp32 each runtime may give (bf16 measured 0.995-0.9996 on PH2/LA).
MIN_COSINE = {"onnxruntime": 0.99999, "openvino": 0.99999, "bf16": 0.99, "openvino_bf16": 0.99}


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Exports and ``auto`` choices go to a temporary folder, never the user's cache."""
    folder = tmp_path_factory.mktemp("encoder-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(runtimes.CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def teacher():
    return build_foundation_model("litemedsam")


@pytest.fixture(scope="module")
def ph2_image(ph2_root: Path) -> torch.Tensor:
    path = sorted((ph2_root / "images").glob("*.jpg"))[0]
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float()


@pytest.fixture(scope="module")
def fp32_features(teacher, ph2_image) -> torch.Tensor:
    return teacher.encode(ph2_image).features


@pytest.mark.parametrize("runtime", sorted(MIN_COSINE))
def test_each_available_runtime_matches_fp32_on_a_real_image(teacher, ph2_image, fp32_features, runtime):
    if runtime not in runtimes.available_runtimes():
        pytest.skip(f"{runtime} is not available here")
    teacher.set_encoder_runtime(runtime)
    try:
        features = teacher.encode(ph2_image).features
        shares_fp32_cache = runtime in runtimes.FLOAT32_RUNTIMES  # float32 engines: fp32's entries
        assert teacher.cache_namespace().endswith(f"|encoder={runtime}") != shares_fp32_cache
    finally:
        teacher.set_encoder_runtime("fp32")
    assert features.shape == fp32_features.shape and features.dtype == torch.float32
    assert F.cosine_similarity(features.flatten(1), fp32_features.flatten(1)).item() >= MIN_COSINE[runtime]


def test_auto_picks_the_fastest_runtime_within_half_a_dice_point_and_remembers_it(teacher, ph2_image, monkeypatch):
    """The choice rule on a fixed report (measuring is the benchmark's job): too lossy loses, fastest wins."""
    candidates = tuple(r for r in runtimes.available_runtimes() if r in ("fp32", "bf16"))
    monkeypatch.setattr(runtimes, "available_runtimes", lambda: candidates)
    monkeypatch.setattr(runtimes, "build_runner", lambda encoder, name, *a: name)  # no exports or compiles
    report = {"fp32": {"dice_to_fp32": 1.0, "seconds_per_frame": 5.0},
              "bf16": {"dice_to_fp32": 0.999, "seconds_per_frame": 2.0}}
    calls = []
    monkeypatch.setattr(runtimes, "calibrate", lambda runners, *a, **k: calls.append(set(runners))
                        or {name: report[name] for name in runners})
    teacher.set_encoder_runtime("auto")
    try:
        chosen = teacher.effective_encoder_runtime(ph2_image)
        assert chosen == candidates[-1] and chosen in runtimes.available_runtimes()
        assert calls == [set(candidates)]
        teacher.set_encoder_runtime("auto")  # forgets the in-memory choice; the stored one is reused
        assert teacher.effective_encoder_runtime(ph2_image) == chosen and len(calls) == 1
        assert chosen in runtimes.FLOAT32_RUNTIMES or teacher.cache_namespace().endswith(f"|encoder={chosen}")
    finally:
        teacher.set_encoder_runtime("fp32")
    report["bf16"]["dice_to_fp32"] = 1 - 2 * runtimes.AUTO_MAX_DICE_DROP  # now too lossy
    (runtimes.cache_dir() / "auto-choices.json").unlink()
    teacher.set_encoder_runtime("auto")
    try:
        assert teacher.effective_encoder_runtime(ph2_image) == "fp32"
    finally:
        teacher.set_encoder_runtime("fp32")


def test_the_frozen_encoder_keeps_its_own_precision_inside_a_students_bf16_step(teacher, ph2_image, monkeypatch,
                                                                                tmp_path):
    """A bf16-trained student calls its teacher inside its autocast region. fp32 must stay fp32 there
    (its embeddings are cached under fp32's key), and ``auto`` must calibrate, export and compare
    outside it: calibrated inside, "fp32" was bf16 too and an exported graph kept bf16 casts that
    OpenVINO then refused to compile, so ``auto`` silently lost its fastest engines."""
    image = ph2_image.flip(-1)  # not in the cache: encoded now
    with torch.autocast("cpu", enabled=False):
        reference = teacher._encode_uncached(image).features
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = teacher.encode(image).features
    assert inside.dtype == torch.float32
    assert F.cosine_similarity(inside.flatten(1), reference.flatten(1)).item() >= 0.99999  # bf16 gives ~0.9996

    monkeypatch.setenv(runtimes.CACHE_ENV, str(tmp_path))  # no stored choice: calibrate now
    monkeypatch.setattr(runtimes, "available_runtimes", lambda: ("fp32",))
    seen = []
    monkeypatch.setattr(runtimes, "calibrate", lambda runners, *a, **k: seen.append(torch.is_autocast_enabled("cpu"))
                        or {name: {"dice_to_fp32": 1.0, "seconds_per_frame": 1.0} for name in runners})
    teacher.set_encoder_runtime("auto")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            teacher.encode(image.flip(-2))
    finally:
        teacher.set_encoder_runtime("fp32")
    assert seen == [False]


def test_an_exported_encoder_has_no_bf16_even_when_exported_inside_autocast(monkeypatch, tmp_path):
    onnx = pytest.importorskip("onnx", reason="the ONNX export needs pip install '.[encoder]'")
    monkeypatch.setenv(runtimes.CACHE_ENV, str(tmp_path))
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LayerNorm(6)).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        path = runtimes.export_onnx(encoder, "toy-encoder", (1, 3, 8, 8))
    graph = onnx.load(str(path)).graph
    casts = [a.i for n in graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert onnx.TensorProto.BFLOAT16 not in casts


def test_openvino_f32_and_bf16_engines_run_side_by_side_in_one_process(teacher, monkeypatch, tmp_path):
    """``auto`` compiles every candidate in one process; with one compiled-model cache for both
    precisions OpenVINO crashed the process on the first bf16 inference (a whole training run lost)."""
    if "openvino_bf16" not in runtimes.available_runtimes():
        pytest.skip("openvino_bf16 is not available here (pip install '.[encoder]' on a CPU with native bf16)")
    monkeypatch.setenv(runtimes.CACHE_ENV, str(tmp_path))
    frames = torch.rand(1, 3, 256, 256)
    engines = [runtimes.build_runner(teacher.image_encoder, name, "side-by-side", (1, 3, 256, 256))
               for name in ("openvino", "openvino_bf16")]
    f32, bf16 = (engine(frames) for engine in engines)
    assert F.cosine_similarity(f32.flatten(1), bf16.flatten(1)).item() >= MIN_COSINE["openvino_bf16"]


def test_an_unknown_runtime_is_refused_with_the_choices():
    with pytest.raises(InvalidInputError, match="encoder_runtime 'fastest'.*fp32, bf16, onnxruntime, openvino"):
        build_foundation_model("litemedsam", encoder_runtime="fastest")


def test_a_backend_that_has_not_adopted_runtimes_accepts_fp32_only():
    with pytest.raises(InvalidInputError, match="choose one of: fp32$"):
        runtimes.check_encoder_runtime("bf16", ("fp32",))
