"""The stage abstraction: computed once, resumed after a kill, never resumed for other inputs, rank 0 computes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from samssl.stages import MANIFEST, DeferredDataset, DeferredModule, FunctionStage, run_stages


def _counting_stage(root: Path, inputs: dict, calls: list, **kwargs) -> FunctionStage:
    def compute(out: Path) -> dict:
        calls.append(out)
        (out / "result.txt").write_text(json.dumps(inputs))
        return {"result": str(out / "result.txt")}

    return FunctionStage("count", root, lambda: inputs, compute, **kwargs)


def test_a_done_stage_is_not_computed_again_and_other_inputs_restart_cleanly(tmp_path):
    calls: list = []
    first = _counting_stage(tmp_path / "s", {"a": 1}, calls, rank=0).run()
    again = _counting_stage(tmp_path / "s", {"a": 1}, calls, rank=0).run()
    assert first == again and len(calls) == 1
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["status"] == "done" and manifest["inputs"] == {"a": 1}

    other = _counting_stage(tmp_path / "s", {"a": 2}, calls, rank=0).run()
    assert len(calls) == 2 and json.loads(Path(other["result"]).read_text()) == {"a": 2}
    aside = tmp_path / "s.replaced-1"
    assert json.loads((aside / "result.txt").read_text()) == {"a": 1}, "the other inputs' work is kept, not deleted"


def test_a_killed_stage_resumes_in_its_folder(tmp_path):
    attempts: list[int] = []

    def compute(out: Path) -> dict:
        done = sorted(p.name for p in out.glob("part*"))
        attempts.append(len(done))
        for i in range(len(done), 3):
            if i == 1 and len(attempts) == 1:
                raise KeyboardInterrupt  # killed half-way
            (out / f"part{i}").write_text("x")
        return {"parts": 3}

    stage = FunctionStage("parts", tmp_path / "p", lambda: {"n": 3}, compute, rank=0)
    with pytest.raises(KeyboardInterrupt):
        stage.run()
    assert json.loads((tmp_path / "p" / MANIFEST).read_text())["status"] == "running"
    assert FunctionStage("parts", tmp_path / "p", lambda: {"n": 3}, compute, rank=0).run() == {"parts": 3}
    assert attempts == [0, 1], "the second run found the first part and went on from there"


def test_other_ranks_wait_for_rank_zero_and_read_its_outputs(tmp_path):
    calls: list = []
    waiting = _counting_stage(tmp_path / "w", {"a": 1}, calls, rank=1, poll_seconds=0.05)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(waiting.run()))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and not calls, "rank 1 never computes"
    _counting_stage(tmp_path / "w", {"a": 1}, calls, rank=0).run()
    thread.join(5)
    assert not thread.is_alive() and result == {"result": str(tmp_path / "w" / "result.txt")} and len(calls) == 1


def test_run_stages_runs_in_order_skips_none_and_refuses_non_stages(tmp_path):
    order: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self):
            order.append(self.name)
            return self.name

    assert run_stages([Named("fine-tune"), None, Named("re-train")]) == ["fine-tune", "re-train"]
    assert order == ["fine-tune", "re-train"]
    with pytest.raises(TypeError, match="run\\(\\) method"):
        run_stages([object()])


def test_deferred_dataset_reads_its_entries_on_first_use():
    read: list[int] = []

    def entries():
        read.append(1)
        return [{"x": 1}, {"x": 2}, {"x": 3}]

    dataset = DeferredDataset(entries, None, expected_length=5, cache=False)
    assert len(dataset) == 5 and not read, "a sampler built before the stage ran sees the expected length"
    assert dataset[4] == {"x": 2} and len(dataset) == 3 and read == [1], "indices wrap; read once"
    with pytest.raises(ValueError, match="returned no entries"):
        DeferredDataset(lambda: [], None, expected_length=1)[0]


def test_deferred_module_loads_on_first_forward():
    loads: list[int] = []

    def load():
        loads.append(1)
        return torch.nn.Identity()

    module = DeferredModule(load)
    assert not loads
    x = torch.ones(2)
    assert torch.equal(module(x), x) and torch.equal(module(x), x) and loads == [1]
