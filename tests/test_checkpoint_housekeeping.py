"""TrainingCheckpointer's housekeeping: a restarted run keeps only the configured number of files, the
log says either "resumed from" or "starting fresh", and a checkpoint holds only what resuming needs."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from samssl.engines import MeanTeacherTrainer, SemiSupervisedTrainer
from samssl.handlers import TrainingCheckpointer
from samssl.losses import Constant, dice_ce_loss
from samssl.networks import EMATeacher


def _batches(count: int, labelled: bool = True) -> list[dict]:
    generator = torch.Generator().manual_seed(count)
    batches = []
    for _ in range(count):
        image = torch.randn((2, 1, 8, 8), generator=generator)
        batches.append({"image": image, "label": (image > 0.3).float()} if labelled else {"image": image})
    return batches


def _run(folder: Path, max_epochs: int, mean_teacher: bool = True) -> None:
    """A tiny run of ``max_epochs`` x 2 iterations, a checkpoint every iteration, 2 interval files kept;
    the EMA teacher is always given to the checkpointer, as the bundle configs do."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    teacher = EMATeacher(network)
    checkpointer = TrainingCheckpointer(folder, network, optimizer, teacher=teacher, save_interval=1, n_saved=2)
    common = {"epoch_length": 2, "train_handlers": [checkpointer]}
    if mean_teacher:
        trainer = MeanTeacherTrainer("cpu", max_epochs, _batches(2), network, optimizer, dice_ce_loss(),
                                     unlabeled_data_loader=_batches(2, labelled=False), teacher=teacher,
                                     consistency_weight=Constant(0.1), **common)
    else:  # SupOnly: the trainer has no teacher
        trainer = SemiSupervisedTrainer("cpu", max_epochs, _batches(2), network, optimizer, dice_ce_loss(), **common)
    trainer.run()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_restarted_run_keeps_only_the_configured_number_of_checkpoints(tmp_path):
    _run(tmp_path, max_epochs=2)
    # 2 interval files kept; the one of the last iteration is the final file's copy, so it goes
    assert _files(tmp_path) == ["checkpoint_final_iteration=4.pt", "checkpoint_iteration=3.pt"]
    # the same command given more epochs: a new process, which did not write the earlier files
    _run(tmp_path, max_epochs=4)
    assert _files(tmp_path) == ["checkpoint_final_iteration=8.pt", "checkpoint_iteration=7.pt"]


def test_the_log_says_either_starting_fresh_or_resumed_never_both(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        _run(tmp_path, max_epochs=1)
    assert "no checkpoint in" in caplog.text and "starting fresh" in caplog.text
    assert "resum" not in caplog.text.lower(), caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run(tmp_path, max_epochs=2)
    assert f"resumed from {tmp_path / 'checkpoint_final_iteration=2.pt'} at iteration 2" in caplog.text
    assert "starting fresh" not in caplog.text and "resuming from iteration 0" not in caplog.text, caplog.text


def test_a_checkpoint_holds_the_teacher_only_when_the_trainer_uses_one(tmp_path):
    _run(tmp_path / "mean_teacher", max_epochs=1)
    _run(tmp_path / "suponly", max_epochs=1, mean_teacher=False)
    with_teacher = torch.load(tmp_path / "mean_teacher" / "checkpoint_final_iteration=2.pt", weights_only=True)
    without = torch.load(tmp_path / "suponly" / "checkpoint_final_iteration=2.pt", weights_only=True)
    assert set(with_teacher) == {"trainer", "model", "optimizer", "teacher"}
    assert set(without) == {"trainer", "model", "optimizer"}  # an untrained copy of the initial weights is not kept
    _run(tmp_path / "suponly", max_epochs=2, mean_teacher=False)  # ... and is not needed to resume
    assert (tmp_path / "suponly" / "checkpoint_final_iteration=4.pt").is_file()
