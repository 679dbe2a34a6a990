"""The ``amp`` switch (samssl.engines.precision): what it means on each device, the one log line,
and the evaluator that runs its forward pass in that precision with a float32 prediction."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from samssl.engines import SupervisedEvaluator
from samssl.engines import precision as precision_module
from samssl.engines.precision import announce_precision, cpu_bf16_support, resolve_precision, to_float32
from samssl.utils.errors import InvalidInputError


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bfloat16."""

    def pretend(supported: bool) -> None:
        how = "oneDNN reports native bfloat16" if supported else "oneDNN reports no native bfloat16"
        monkeypatch.setattr(precision_module, "cpu_bf16_support", lambda: (supported, how))

    monkeypatch.setattr(precision_module, "_announced", set())
    return pretend


@pytest.mark.parametrize("amp", ["auto", True])
def test_auto_on_a_cpu_with_bf16_autocasts_to_bf16_and_logs_one_line(cpu_bf16, caplog, amp):
    cpu_bf16(True)
    chosen = resolve_precision(amp, "cpu")
    assert (chosen.name, chosen.dtype, chosen.uses_grad_scaler) == ("bf16", torch.bfloat16, False)
    with caplog.at_level(logging.INFO, logger=precision_module.__name__):
        announce_precision(chosen)  # the trainer
        announce_precision(resolve_precision(amp, torch.device("cpu")))  # its validator, same decision: no 2nd line
    assert len(caplog.records) == 1 and "bfloat16 autocast" in caplog.text
    with chosen.autocast():
        assert nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.bfloat16


def test_auto_on_a_cpu_without_bf16_falls_back_to_fp32_and_says_why(cpu_bf16, caplog):
    cpu_bf16(False)
    chosen = resolve_precision("auto", "cpu")
    assert chosen.name == "fp32" and not chosen.enabled and chosen.dtype is None
    with caplog.at_level(logging.INFO, logger=precision_module.__name__):
        announce_precision(chosen)
    assert "float32" in caplog.text and "falls back" in caplog.text and "no native bfloat16" in caplog.text
    with chosen.autocast():
        assert nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32


def test_auto_on_cuda_is_fp16_with_a_grad_scaler(cpu_bf16):
    cpu_bf16(True)
    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        chosen = resolve_precision("auto", device)
        assert (chosen.name, chosen.device_type, chosen.uses_grad_scaler) == ("fp16", "cuda", True)
    assert resolve_precision("bf16", "cuda").uses_grad_scaler is False


def test_false_is_fp32_everywhere_and_bad_values_are_refused(cpu_bf16):
    cpu_bf16(True)
    for amp in (False, None, "fp32"):
        assert resolve_precision(amp, "cpu").name == resolve_precision(amp, "cuda").name == "fp32"
    with pytest.raises(InvalidInputError, match="needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(InvalidInputError, match="--amp False"):
        resolve_precision("false", "cpu")
    with pytest.raises(InvalidInputError, match="choose one of"):
        resolve_precision("half", "cpu")


def test_bf16_support_falls_back_to_cpuinfo_flags_without_onednn(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    monkeypatch.setattr(precision_module, "_cpuinfo_flags", lambda: {"fpu", "avx512f", "amx_bf16"})
    cpu_bf16_support.cache_clear()
    try:
        assert cpu_bf16_support() == (True, "CPU flag amx_bf16")
        monkeypatch.setattr(precision_module, "_cpuinfo_flags", lambda: {"fpu", "avx512f"})
        cpu_bf16_support.cache_clear()
        supported, why = cpu_bf16_support()
        assert not supported and "avx512_bf16" in why
    finally:
        cpu_bf16_support.cache_clear()


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16\nbugs\t\t: spectre\n")
    assert precision_module._cpuinfo_flags(cpuinfo) == {"fpu", "avx512_bf16"}
    assert precision_module._cpuinfo_flags(tmp_path / "missing") is None


def test_to_float32_casts_nested_outputs_and_leaves_the_rest():
    out = to_float32({"a": (torch.ones(1, dtype=torch.bfloat16), torch.ones(1, dtype=torch.long)), "b": 3})
    assert out["a"][0].dtype == torch.float32 and out["a"][1].dtype == torch.long and out["b"] == 3


def test_evaluator_runs_the_forward_pass_in_bf16_and_hands_on_a_float32_prediction():
    seen: list[torch.dtype] = []
    network = nn.Conv2d(1, 2, 3, padding=1)
    network.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    data = [{"image": torch.rand(1, 1, 8, 8), "label": torch.zeros(1, 1, 8, 8)}]
    preds: list[torch.dtype] = []
    evaluator = SupervisedEvaluator("cpu", data, network, amp="bf16", decollate=False)
    from monai.engines.utils import IterationEvents

    evaluator.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: preds.append(e.state.output["pred"].dtype))
    evaluator.run()
    assert evaluator.precision.name == "bf16" and evaluator.amp is False  # MONAI's CUDA-only path stays off
    assert seen == [torch.bfloat16] and preds == [torch.float32]
    assert all(p.dtype == torch.float32 for p in network.parameters())
