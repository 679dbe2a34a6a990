"""Checkpoint files survive interrupted saves, and unreadable ones are refused with a clear error."""

from __future__ import annotations

import errno

import pytest
import torch
from torch import nn

from samssl.handlers import AtomicCheckpointSaver, AtomicDiskSaver, load_network_weights, read_checkpoint


def _state(value: float) -> dict:
    return {"model": {"weight": torch.full((3,), value)}}


def test_a_save_that_runs_out_of_disk_keeps_the_previous_file_and_leaves_no_partial(tmp_path, monkeypatch):
    saver = AtomicDiskSaver(tmp_path)
    saver(_state(1.0), "checkpoint_iteration=1.pt")
    saver.remove("checkpoint_iteration=1.pt")  # ignite asks before writing the next file

    def disk_full(obj, stream, *args, **kwargs):
        stream.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="no space left to write .*previous checkpoints are intact"):
        saver(_state(2.0), "checkpoint_iteration=2.pt")
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_iteration=1.pt"]
    assert torch.equal(read_checkpoint(tmp_path / "checkpoint_iteration=1.pt")["model"]["weight"], torch.ones(3))

    saver(_state(3.0), "checkpoint_iteration=3.pt")  # the deferred removal happens after a good save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_iteration=3.pt"]


def test_a_fixed_name_file_is_replaced_whole(tmp_path, monkeypatch):
    saver = AtomicDiskSaver(tmp_path, filename="model.pt")
    saver(_state(1.0), "ignored.pt")
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        saver(_state(2.0), "ignored.pt")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert torch.equal(read_checkpoint(tmp_path / "model.pt")["model"]["weight"], torch.ones(3))


def test_atomic_checkpoint_saver_keeps_monai_file_names(tmp_path):
    from ignite.engine import Engine

    network = nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": network}, save_final=True, final_filename="model.pt",
                                  save_interval=2, epoch_level=False, n_saved=1)
    saver.attach(engine)
    engine.run([0] * 5, max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model_iteration=4.pt"]
    assert all(isinstance(c.save_handler, AtomicDiskSaver)
               for c in (saver._final_checkpoint, saver._interval_checkpoint))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"<html>not a checkpoint</html>"])
def test_corrupt_truncated_or_foreign_files_are_refused_with_the_file_named(tmp_path, content):
    path = tmp_path / "model.pt"
    torch.save(_state(1.0), path)
    path.write_bytes(content if content else b"")
    with pytest.raises(ValueError, match=r"model\.pt .*(empty|truncated or corrupt)"):
        load_network_weights(nn.Linear(3, 1), path)


def test_a_truncated_real_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": nn.Linear(30, 30).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        read_checkpoint(tmp_path / "absent.pt")
