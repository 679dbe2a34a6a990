"""A run killed with SIGKILL in the middle of a pass over its data, then resumed, ends with the same
weights as an uninterrupted run: shuffled loaders, random MONAI augmentations, dropout, EMA.

The training runs in a subprocess (this file is also the script), so the kill is a real one and the
resumed process starts with fresh random generators.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from samssl.engines import MeanTeacherTrainer
from samssl.handlers import TrainingCheckpointer
from samssl.losses import GaussianRampUp
from samssl.utils.reproducibility import (
    capture_global_rng,
    capture_pass_start,
    restore_global_rng,
    restore_pass_start,
)

ITERATIONS_PER_EPOCH = 4  # the labelled loader has 3 batches, the unlabelled one 3: passes and epochs do not align
EPOCHS = 3


def _loaders():
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised

    rng = np.random.default_rng(0)
    labelled = [{"image": rng.normal(size=(1, 12, 12)).astype(np.float32)} for _ in range(6)]
    for item in labelled:
        item["label"] = (item["image"] > 0.3).astype(np.float32)
    unlabelled = [{"image": rng.normal(size=(1, 12, 12)).astype(np.float32)} for _ in range(5)]
    augment = Compose([RandFlipd(["image", "label"], prob=0.5, spatial_axis=0, allow_missing_keys=True),
                       RandGaussianNoised("image", prob=0.5, std=0.3)])
    augment_u = Compose([RandFlipd("image", prob=0.5, spatial_axis=1), RandGaussianNoised("image", prob=0.5, std=0.3)])
    return (DataLoader(Dataset(labelled, augment), batch_size=2, shuffle=True),
            DataLoader(Dataset(unlabelled, augment_u), batch_size=2, shuffle=True))


def train(ckpt_dir: Path, kill_at: int | None = None, amp: bool | str = False) -> dict[str, torch.Tensor]:
    """A small mean-teacher run with a checkpoint every iteration; SIGKILL itself after ``kill_at``.
    ``amp`` is the precision switch ('bf16': forward passes autocast, the rest float32)."""
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    torch.set_num_threads(1)
    set_determinism(seed=0)
    labelled, unlabelled = _loaders()
    network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                            nn.Conv2d(4, 2, 1))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    trainer = MeanTeacherTrainer(
        "cpu", EPOCHS, labelled, network, optimizer, DiceCELoss(to_onehot_y=True, softmax=True),
        unlabeled_data_loader=unlabelled, consistency_weight=GaussianRampUp(1.0, length=8),
        epoch_length=ITERATIONS_PER_EPOCH, amp=amp,
    )
    TrainingCheckpointer(ckpt_dir, network, optimizer, teacher=trainer.ema, save_interval=1).attach(trainer)
    if kill_at is not None:
        from ignite.engine import Events

        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=kill_at),
                                  lambda _: os.kill(os.getpid(), signal.SIGKILL))
    trainer.run()
    return {k: v.clone() for k, v in network.state_dict().items()}


def _run_in_subprocess(ckpt_dir: Path, kill_at: int | None, amp: str = "false") -> subprocess.CompletedProcess:
    command = [sys.executable, __file__, str(ckpt_dir), str(kill_at or 0), amp]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


FINAL = f"checkpoint_final_iteration={EPOCHS * ITERATIONS_PER_EPOCH}.pt"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The final checkpoint of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("reference")
    run = _run_in_subprocess(folder, None)
    assert run.returncode == 0, run.stderr
    return torch.load(folder / FINAL, weights_only=True)


@pytest.mark.parametrize("kill_at", [7, 9])
def test_kill_9_mid_pass_then_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, reference, kill_at):
    killed = _run_in_subprocess(tmp_path / "run", kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _run_in_subprocess(tmp_path / "run", None)
    assert resumed.returncode == 0, resumed.stderr

    found = torch.load(tmp_path / "run" / FINAL, weights_only=True)
    for entry in ("model", "teacher"):
        for name, value in reference[entry].items():
            torch.testing.assert_close(found[entry][name], value, rtol=0, atol=0, msg=f"{entry}.{name}")


def test_kill_9_mid_pass_then_resume_is_exact_under_bf16_autocast(tmp_path_factory, tmp_path):
    """bfloat16 forward passes are deterministic on one thread, and what is checkpointed (weights,
    EMA teacher, Adam's moments) stays float32, so the resume is exact in bfloat16 too."""
    folder = tmp_path_factory.mktemp("reference_bf16")
    assert _run_in_subprocess(folder, None, "bf16").returncode == 0
    reference = torch.load(folder / FINAL, weights_only=True)
    killed = _run_in_subprocess(tmp_path / "run", 7, "bf16")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _run_in_subprocess(tmp_path / "run", None, "bf16")
    assert resumed.returncode == 0, resumed.stderr
    found = torch.load(tmp_path / "run" / FINAL, weights_only=True)
    for entry in ("model", "teacher"):
        for name, value in reference[entry].items():
            assert value.dtype == found[entry][name].dtype
            torch.testing.assert_close(found[entry][name], value, rtol=0, atol=0, msg=f"{entry}.{name}")


def test_without_the_saved_random_state_the_resumed_run_differs(tmp_path, reference):
    """The test above can fail: dropping the random state from the checkpoint changes the result."""
    assert _run_in_subprocess(tmp_path / "run", 7).returncode == -signal.SIGKILL
    newest = tmp_path / "run" / "checkpoint_iteration=7.pt"
    checkpoint = torch.load(newest, weights_only=True)
    for key in ("global_rng", "labelled_pass", "unlabelled_pass"):
        checkpoint["trainer"].pop(key)
    torch.save(checkpoint, newest)
    assert _run_in_subprocess(tmp_path / "run", None).returncode == 0

    found = torch.load(tmp_path / "run" / FINAL, weights_only=True)["model"]
    assert any(not torch.equal(found[k], v) for k, v in reference["model"].items())


def test_pass_start_state_round_trips_and_refuses_another_configuration():
    labelled, _ = _loaders()
    snapshot = capture_pass_start(labelled, draws=3)
    global_state = capture_global_rng()
    first = [batch["image"].clone() for batch in labelled]
    torch.manual_seed(99)
    restore_pass_start(labelled, snapshot)
    again = [batch["image"].clone() for batch in labelled]
    assert all(torch.equal(a, b) for a, b in zip(first, again))

    restore_global_rng(global_state)
    assert torch.equal(torch.get_rng_state(), global_state["torch"])

    labelled.dataset.transform.transforms = labelled.dataset.transform.transforms[:1]
    with pytest.raises(ValueError, match="random transforms"):
        restore_pass_start(labelled, snapshot)


if __name__ == "__main__":
    train(Path(sys.argv[1]), int(sys.argv[2]) or None, False if sys.argv[3] == "false" else sys.argv[3])
