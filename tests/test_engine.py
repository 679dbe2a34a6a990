"""Semi-supervised trainers: two streams, SupOnly, NaN guard, mean teacher, UA-MT, checkpoints/resume."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver, StatsHandler
from PIL import Image
from torch import nn

from samssl.engines import MeanTeacherTrainer, SemiSupervisedTrainer, UncertaintyAwareMeanTeacherTrainer
from samssl.handlers import (
    ResumeFromLatest,
    TrainingCheckpointer,
    latest_checkpoint,
    load_network_weights,
    resumable_checkpoints,
    training_checkpoint_dict,
)
from samssl.losses import GaussianRampUp, dice_ce_loss, gaussian_rampup
from samssl.networks import EMATeacher


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The tensors here are tiny: extra threads only add synchronisation cost on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinySegNet(nn.Module):
    """Two convolutions with BatchNorm (so EMA buffers matter) and optional dropout, 2D or 3D."""

    def __init__(self, spatial_dims: int = 2, out_channels: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        self.layers = nn.Sequential(
            conv(1, 4, 3, padding=1), norm(4), nn.ReLU(), nn.Dropout(dropout), conv(4, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _batches(count: int, seed: int, spatial: tuple[int, ...] = (12, 12), labelled: bool = True) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for index in range(count):
        image = torch.randn((2, 1, *spatial), generator=generator)
        batch = {"image": image, "index": torch.tensor([index, index])}
        # unlabelled batches carry a label too: the trainer must never hand it to the method
        batch["label"] = (image > 0.3).float() if labelled else torch.full_like(image, 7.0)
        batches.append(batch)
    return batches


class CountingLoader:
    """A sized iterable that counts how often it is iterated and how many batches it yields."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches
        self.passes = 0
        self.draws = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        self.passes += 1
        for batch in self.batches:
            self.draws += 1
            yield batch


def _record_outputs(trainer) -> dict[int, dict]:
    outputs: dict[int, dict] = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: outputs.__setitem__(engine.state.iteration, dict(engine.state.output))
    )
    return outputs


# ---------------------------------------------------------------- streams
class RecordingTrainer(SemiSupervisedTrainer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, int | None, set[str] | None]] = []

    def compute_losses(self, engine, labelled, unlabelled):
        assert labelled["label"] is not None and labelled["image"].device.type == "cpu"
        self.seen.append(
            (
                int(labelled["index"][0]),
                None if unlabelled is None else int(unlabelled["index"][0]),
                None if unlabelled is None else set(unlabelled),
            )
        )
        return super().compute_losses(engine, labelled, unlabelled)


def test_every_iteration_draws_one_labelled_and_one_unlabelled_batch():
    labelled, unlabelled = CountingLoader(_batches(3, 0)), CountingLoader(_batches(2, 1, labelled=False))
    network = TinySegNet()
    trainer = RecordingTrainer(
        "cpu", 2, labelled, network, torch.optim.SGD(network.parameters(), lr=0.01), dice_ce_loss(),
        unlabeled_data_loader=unlabelled,
    )
    trainer.run()
    assert trainer.state.iteration == 6
    assert labelled.draws == 6 and unlabelled.draws == 6 and trainer.state.unlabelled_draws == 6
    # the shorter unlabelled stream is restarted (3 passes of 2) and never ends an epoch
    assert unlabelled.passes == 3
    assert [(lab, unl) for lab, unl, _ in trainer.seen] == [(0, 0), (1, 1), (2, 0), (0, 1), (1, 0), (2, 1)]
    # the unlabelled label never reaches the method; other tensor entries do
    assert all(keys == {"image", "index"} for _, _, keys in trainer.seen)


def test_epoch_length_longer_than_the_labelled_loader():
    labelled, unlabelled = CountingLoader(_batches(2, 0)), CountingLoader(_batches(5, 1, labelled=False))
    network = TinySegNet()
    trainer = RecordingTrainer(
        "cpu", 1, labelled, network, torch.optim.SGD(network.parameters(), lr=0.01), dice_ce_loss(),
        unlabeled_data_loader=unlabelled, epoch_length=7,
    )
    trainer.run()
    assert trainer.state.iteration == 7
    assert [lab for lab, _, _ in trainer.seen] == [0, 1, 0, 1, 0, 1, 0]
    assert [unl for _, unl, _ in trainer.seen] == [0, 1, 2, 3, 4, 0, 1]


def test_supervised_only_baseline_with_monai_stats_handler(capsys):
    batches = _batches(2, 2)
    network = TinySegNet()
    initial = {k: v.clone() for k, v in network.state_dict().items()}
    loss_function = dice_ce_loss()
    with torch.no_grad():
        network.train()
        expected_first_loss = float(loss_function(network(batches[0]["image"]), batches[0]["label"]))
    network.load_state_dict(initial)

    trainer = RecordingTrainer(
        "cpu", 1, batches, network, torch.optim.Adam(network.parameters(), lr=1e-2), loss_function,
        unlabeled_data_loader=None,
        # every float term is logged: StatsHandler takes a dict of scalars
        train_handlers=[StatsHandler(name="sup_only_stats", output_transform=lambda output: output)],
    )
    outputs = _record_outputs(trainer)
    trainer.run()
    assert [unl for _, unl, _ in trainer.seen] == [None, None]
    assert list(outputs[1]) == ["loss", "supervised"]
    assert all(isinstance(v, float) for v in outputs[1].values())
    assert outputs[1]["loss"] == pytest.approx(expected_first_loss, rel=1e-6)
    assert "Iter: 2/2 -- loss: " in capsys.readouterr().out
    assert not torch.equal(network.layers[0].weight, initial["layers.0.weight"])


def test_non_finite_loss_raises_before_the_step_and_keeps_weights():
    batches = _batches(2, 3)
    batches[1]["image"][0, 0, 0, 0] = float("nan")
    network = TinySegNet()
    trainer = MeanTeacherTrainer(
        "cpu", 1, batches, network, torch.optim.SGD(network.parameters(), lr=0.1), dice_ce_loss(),
        unlabeled_data_loader=_batches(2, 4, labelled=False), consistency_weight=0.1,
    )
    after_first: dict[str, torch.Tensor] = {}

    @trainer.on(Events.ITERATION_COMPLETED(once=1))
    def _snapshot(engine):
        after_first.update({n: p.detach().clone() for n, p in network.named_parameters()})
        after_first.update({"teacher." + n: p.detach().clone() for n, p in trainer.ema.teacher.named_parameters()})

    with pytest.raises(FloatingPointError, match=r"iteration 2 \(loss=nan, supervised=nan.*consistency_weight=0\.1"):
        trainer.run()
    for name, parameter in network.named_parameters():
        assert torch.equal(parameter, after_first[name]), name
    for name, parameter in trainer.ema.teacher.named_parameters():
        assert torch.equal(parameter, after_first["teacher." + name]), name


# ---------------------------------------------------------------- mean teacher
def _mean_teacher(seed: int, trainer_class=MeanTeacherTrainer, spatial=(12, 12), max_epochs=2, **kwargs):
    torch.manual_seed(seed)
    network = TinySegNet(spatial_dims=len(spatial), dropout=kwargs.pop("dropout", 0.0))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    trainer = trainer_class(
        "cpu", max_epochs, _batches(3, 10, spatial), network, optimizer, dice_ce_loss(),
        unlabeled_data_loader=_batches(4, 11, spatial, labelled=False),
        consistency_weight=GaussianRampUp(1.0, length=6),
        **kwargs,
    )
    return trainer, network, optimizer


def test_mean_teacher_trains_student_only_and_updates_teacher_by_ema():
    trainer, network, _ = _mean_teacher(0)
    outputs = _record_outputs(trainer)
    initial_teacher = {k: v.clone() for k, v in trainer.ema.teacher.state_dict().items()}
    trainer.run()

    assert list(outputs[1]) == ["loss", "supervised", "consistency", "consistency_weight"]
    for iteration, output in outputs.items():
        assert output["consistency_weight"] == pytest.approx(GaussianRampUp(1.0, 6)(iteration))
        expected_total = output["supervised"] + output["consistency_weight"] * output["consistency"]
        assert output["loss"] == pytest.approx(expected_total, rel=1e-5)
        assert output["consistency"] > 0
    assert all(p.grad is None and not p.requires_grad for p in trainer.ema.teacher.parameters())
    assert not trainer.ema.teacher.training
    assert trainer.ema.last_update_step == 6
    teacher_state = trainer.ema.teacher.state_dict()
    assert not torch.equal(teacher_state["layers.0.weight"], initial_teacher["layers.0.weight"])
    assert not torch.equal(teacher_state["layers.0.weight"], network.state_dict()["layers.0.weight"])
    # BN statistics of the eval-mode teacher follow the student's too
    assert not torch.equal(teacher_state["layers.1.running_mean"], initial_teacher["layers.1.running_mean"])


def test_mean_teacher_noise_is_seeded_by_iteration():
    trainer, _, _ = _mean_teacher(0)
    images = torch.zeros(2, 1, 12, 12)
    trainer.state.iteration = 5
    first, second = trainer.add_input_noise(images), trainer.add_input_noise(images)
    assert not torch.equal(first, second)  # student and teacher get different noise
    assert bool(first.abs().max() <= torch.tensor(0.2)) and float(first.std()) == pytest.approx(0.1, rel=0.3)
    other, _, _ = _mean_teacher(1)
    other.state.iteration = 5
    assert torch.equal(other.add_input_noise(images), first)  # same iteration, same noise
    other.state.iteration = 6
    assert not torch.equal(other.add_input_noise(images), first)


def test_mean_teacher_requires_unlabelled_data_and_a_weight():
    network = TinySegNet()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="unlabeled_data_loader"):
        MeanTeacherTrainer("cpu", 1, _batches(1, 0), network, optimizer, dice_ce_loss(),
                           unlabeled_data_loader=None, consistency_weight=0.1)
    with pytest.raises(ValueError, match="different network"):
        SemiSupervisedTrainer("cpu", 1, _batches(1, 0), network, optimizer, dice_ce_loss(),
                              teacher=EMATeacher(TinySegNet()))


@pytest.mark.parametrize("spatial", [(12, 12), (6, 8, 4)], ids=["2d", "3d"])
def test_uncertainty_aware_mean_teacher_runs_in_2d_and_3d(spatial):
    trainer, _, _ = _mean_teacher(
        0, UncertaintyAwareMeanTeacherTrainer, spatial=spatial, max_epochs=1, epoch_length=2,
        uncertainty_passes=4, dropout=0.3,
    )
    outputs = _record_outputs(trainer)
    calls: list[bool] = []
    trainer.ema.teacher.register_forward_pre_hook(lambda module, args: calls.append(module.training))
    trainer.run()
    assert sorted(outputs) == [1, 2]
    for iteration, output in outputs.items():
        assert math.isfinite(output["loss"]) and output["consistency"] >= 0
        assert 0.0 <= output["certain_fraction"] <= 1.0
        expected_threshold = (0.75 + 0.25 * gaussian_rampup(iteration, 2)) * math.log(2)
        assert output["uncertainty_threshold"] == pytest.approx(expected_threshold)
    # per iteration: one eval-mode target pass, then 4 stochastic train-mode passes
    assert calls == [False, True, True, True, True] * 2
    assert not trainer.ema.teacher.training


def test_uncertainty_mask_keeps_only_confident_voxels():
    trainer, _, _ = _mean_teacher(0, UncertaintyAwareMeanTeacherTrainer, max_epochs=1, uncertainty_passes=2)
    trainer.state.iteration, trainer.state.epoch_length = 1, 3
    student = torch.zeros(1, 2, 1, 2, requires_grad=True)
    teacher = torch.tensor([[[[4.0, 0.0]], [[-4.0, 0.0]]]])  # voxel 0 confident, voxel 1 undecided
    trainer.uncertainty = lambda engine, unlabelled: -(
        torch.softmax(teacher, 1) * torch.log_softmax(teacher, 1)
    ).sum(1, keepdim=True)
    terms = trainer.consistency_terms(trainer, student, teacher, {"image": torch.zeros(1, 1, 1, 2)})
    assert terms["certain_fraction"] == 0.5
    p = torch.softmax(teacher, 1)[:, :, 0, 0]
    torch.testing.assert_close(terms["consistency"], ((0.5 - p) ** 2).mean())


# ---------------------------------------------------------------- checkpoints and resume
class KilledAt(Exception):
    pass


def _kill_at(trainer, iteration: int) -> None:
    """Simulate a killed process: the run stops abruptly after ``iteration``."""

    def _kill(engine):
        raise KilledAt(engine.state.iteration)

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=iteration), _kill)


def _resumable_run(seed: int, ckpt_dir: Path, kill_at: int | None = None, resume: bool = False):
    trainer, network, optimizer = _mean_teacher(seed)
    save_dict = training_checkpoint_dict(trainer, network, optimizer, teacher=trainer.ema)
    if resume:
        ResumeFromLatest(ckpt_dir, save_dict).attach(trainer)
    CheckpointSaver(str(ckpt_dir), save_dict, save_interval=3, epoch_level=False).attach(trainer)
    outputs = _record_outputs(trainer)
    if kill_at is not None:
        _kill_at(trainer, kill_at)
    return trainer, network, outputs


def test_training_resumes_after_a_kill_with_identical_losses(tmp_path, caplog):
    reference, reference_network, reference_outputs = _resumable_run(0, tmp_path / "uninterrupted")
    reference.run()

    with caplog.at_level(logging.INFO), pytest.raises(KilledAt):
        _resumable_run(0, tmp_path / "run", kill_at=5, resume=True)[0].run()
    assert "starting fresh" in caplog.text
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint_iteration=3.pt"

    # a fresh process: other random initial weights, everything rebuilt, same command
    caplog.clear()
    resumed, resumed_network, resumed_outputs = _resumable_run(123, tmp_path / "run", resume=True)
    with caplog.at_level(logging.INFO):
        resumed.run()
    assert "resumed from" in caplog.text and "at iteration 3" in caplog.text
    assert sorted(resumed_outputs) == [4, 5, 6]
    assert resumed.state.iteration == 6 and resumed.state.epoch == 2
    for iteration in (4, 5, 6):
        for name, value in reference_outputs[iteration].items():
            assert resumed_outputs[iteration][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (iteration, name)
    for name, value in reference_network.state_dict().items():
        torch.testing.assert_close(resumed_network.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    for name, value in reference.ema.state_dict().items():
        torch.testing.assert_close(resumed.ema.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_training_checkpointer_resumes_skips_a_truncated_file_and_does_not_retrain(tmp_path):
    def build(seed: int, kill_at: int | None = None):
        trainer, network, optimizer = _mean_teacher(seed)
        TrainingCheckpointer(tmp_path / "ckpt", network, optimizer, teacher=trainer.ema, save_interval=2).attach(trainer)
        outputs = _record_outputs(trainer)
        if kill_at is not None:
            _kill_at(trainer, kill_at)
        return trainer, outputs

    with pytest.raises(KilledAt):
        build(0, kill_at=5)[0].run()
    # nothing is saved on the exception; two interval checkpoints are kept
    assert [p.name for p in resumable_checkpoints(tmp_path / "ckpt")] == [
        "checkpoint_iteration=4.pt", "checkpoint_iteration=2.pt"
    ]
    newest = tmp_path / "ckpt" / "checkpoint_iteration=4.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # killed while writing it

    trainer, outputs = build(1)
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*iteration=4"):
        trainer.run()
    assert sorted(outputs) == [3, 4, 5, 6]
    assert latest_checkpoint(tmp_path / "ckpt").name == "checkpoint_final_iteration=6.pt"

    again, outputs_again = build(2)
    again.run()
    assert outputs_again == {} and again.state.iteration == 6
    assert torch.equal(again.network.layers[0].weight, trainer.network.layers[0].weight)


def test_resuming_a_different_model_fails_clearly(tmp_path):
    trainer, network, optimizer = _mean_teacher(0, max_epochs=1)
    CheckpointSaver(str(tmp_path), training_checkpoint_dict(trainer, network, optimizer, trainer.ema),
                    save_interval=3, epoch_level=False).attach(trainer)
    trainer.run()
    path = latest_checkpoint(tmp_path)

    other_network = TinySegNet(out_channels=3)
    other_optimizer = torch.optim.Adam(other_network.parameters())
    other = SemiSupervisedTrainer("cpu", 2, _batches(3, 0), other_network, other_optimizer, dice_ce_loss())
    other.add_event_handler(Events.STARTED, ResumeFromLatest(tmp_path, {"model": other_network, "trainer": other}))
    with pytest.raises(ValueError, match=r"checkpoint_iteration=3\.pt.*'model'.*layers\.4\.weight.*different model"):
        other.run()

    with pytest.raises(ValueError, match="different model"):
        load_network_weights(TinySegNet(out_channels=3), path)
    with pytest.raises(ValueError, match=r"has no entry 'lr_scheduler'"):
        ResumeFromLatest(tmp_path, {"lr_scheduler": other_optimizer})(other)
    with pytest.raises(FileNotFoundError):
        load_network_weights(TinySegNet(), tmp_path / "missing.pt")


def test_load_network_weights_from_checkpoints_and_state_dicts(tmp_path):
    trainer, network, optimizer = _mean_teacher(0, max_epochs=1)
    CheckpointSaver(str(tmp_path), training_checkpoint_dict(trainer, network, optimizer, trainer.ema),
                    save_interval=3, epoch_level=False).attach(trainer)
    trainer.run()
    path = latest_checkpoint(tmp_path)

    student = load_network_weights(TinySegNet(), path)
    teacher = load_network_weights(TinySegNet(), path, key="teacher")
    for name, value in network.state_dict().items():
        assert torch.equal(student.state_dict()[name], value)
        assert torch.equal(teacher.state_dict()[name], trainer.ema.state_dict()[name])

    torch.save({"module." + k: v for k, v in network.state_dict().items()}, tmp_path / "ddp.pt")
    assert torch.equal(load_network_weights(TinySegNet(), tmp_path / "ddp.pt").layers[0].weight, network.layers[0].weight)


def test_latest_checkpoint_orders_by_number_and_ignores_other_files(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    for name in ["checkpoint_iteration=9.pt", "checkpoint_iteration=10.pt", "model.pt", "checkpoint_key_metric=0.9.pt"]:
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint_iteration=10.pt"
    for name in ["net_checkpoint_iteration=12.pt", "net_checkpoint_final_iteration=12.pt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in resumable_checkpoints(tmp_path)] == [
        "net_checkpoint_final_iteration=12.pt",
        "net_checkpoint_iteration=12.pt",
        "checkpoint_iteration=10.pt",
        "checkpoint_iteration=9.pt",
    ]
    # epoch-level and iteration-level files are compared by modification time
    (tmp_path / "checkpoint_epoch=2.pt").write_bytes(b"")
    os.utime(tmp_path / "checkpoint_epoch=2.pt", (1e9, 1e9))
    assert latest_checkpoint(tmp_path).name == "net_checkpoint_final_iteration=12.pt"
    os.utime(tmp_path / "checkpoint_epoch=2.pt", (4e9, 4e9))
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=2.pt"


# ---------------------------------------------------------------- real data
def _ph2_pairs(ph2_root: Path, count: int, size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    for image_path in sorted((ph2_root / "images").glob("*.jpg"))[:count]:
        mask_path = ph2_root / "masks" / f"{image_path.stem}_lesion.png"
        image = np.asarray(Image.open(image_path).convert("L").resize((size, size)), dtype=np.float32) / 255.0
        mask = np.asarray(Image.open(mask_path).convert("L").resize((size, size), Image.NEAREST)) > 127
        pairs.append((torch.from_numpy(image)[None, None], torch.from_numpy(mask.astype(np.float32))[None, None]))
    return pairs


def test_mean_teacher_learns_on_real_dermoscopy(ph2_root):
    pairs = _ph2_pairs(ph2_root, 3)
    labelled = [{"image": pairs[0][0], "label": pairs[0][1]}]
    unlabelled = [{"image": image} for image, _ in pairs[1:]]
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1),
    )
    trainer = MeanTeacherTrainer(
        "cpu", 1, labelled, network, torch.optim.Adam(network.parameters(), lr=3e-2), dice_ce_loss(),
        unlabeled_data_loader=unlabelled, consistency_weight=GaussianRampUp(0.1, 10), epoch_length=12,
    )
    outputs = _record_outputs(trainer)
    trainer.run()
    assert all(math.isfinite(o["loss"]) for o in outputs.values())
    assert outputs[12]["supervised"] < 0.8 * outputs[1]["supervised"]


def test_bf16_step_autocasts_the_forward_passes_and_keeps_losses_weights_ema_and_optimizer_in_float32():
    """amp 'bf16': every forward pass (student, EMA teacher) runs in bfloat16, what reaches the losses
    is float32, and weights, EMA teacher, BatchNorm statistics and Adam's moments stay float32."""
    forward_dtypes: list[torch.dtype] = []
    logit_dtypes: list[torch.dtype] = []

    class DtypeRecordingTrainer(MeanTeacherTrainer):
        def student_forward(self, images):
            logits = super().student_forward(images)
            logit_dtypes.append(logits.dtype)
            return logits

    trainer, network, optimizer = _mean_teacher(0, DtypeRecordingTrainer, max_epochs=1, epoch_length=2, amp="bf16")
    network.layers[-1].register_forward_hook(lambda m, i, o: forward_dtypes.append(o.dtype))
    trainer.ema.teacher.layers[-1].register_forward_hook(lambda m, i, o: forward_dtypes.append(o.dtype))
    losses: list[torch.dtype] = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED,
                              lambda e: losses.extend(v.dtype for v in e.state.output.values()
                                                      if isinstance(v, torch.Tensor)))
    outputs = _record_outputs(trainer)
    trainer.run()
    assert trainer.precision.name == "bf16" and trainer.scaler is None  # bfloat16 needs no loss scaling
    assert forward_dtypes and set(forward_dtypes) == {torch.bfloat16}
    assert logit_dtypes == [torch.float32] * 4
    assert losses and set(losses) == {torch.float32}
    assert all(math.isfinite(o["loss"]) for o in outputs.values())
    for module in (network, trainer.ema.teacher):
        assert all(t.dtype == torch.float32 for t in module.state_dict().values() if t.is_floating_point())
    moments = [t for state in optimizer.state.values() for t in state.values() if t.is_floating_point() and t.ndim]
    assert moments and all(t.dtype == torch.float32 for t in moments)


def test_an_empty_unlabelled_stream_is_refused_before_training():
    network = TinySegNet()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="unlabelled stream has no images.*num_labelled"):
        MeanTeacherTrainer("cpu", 1, _batches(2, 0), network, optimizer, dice_ce_loss(),
                           unlabeled_data_loader=[], consistency_weight=1.0)


def test_patch_training_refuses_an_empty_training_set_and_a_zero_schedule(tmp_path):
    from samssl.engines.patch_training import train_on_volume_patches

    net = torch.nn.Conv3d(1, 2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="training set is empty"):
        train_on_volume_patches(net, optimizer, torch.nn.CrossEntropyLoss(), [], (8, 8, 8), None, 2, 1,
                                tmp_path / "ckpt", 1)
    with pytest.raises(ValueError, match="num_iterations must be >= 1"):
        train_on_volume_patches(net, optimizer, torch.nn.CrossEntropyLoss(), [{"image": "a", "label": "b"}],
                                (8, 8, 8), None, 0, 1, tmp_path / "ckpt", 1)


def test_patch_training_batches_entries_from_different_sources_together(tmp_path):
    """A labelled case (with an ``id``) and a pseudo-labelled one (with a ``confidence``) share a batch (SFR+ round 2)."""
    import nibabel as nib
    import numpy as np

    from samssl.engines.patch_training import train_on_volume_patches
    from samssl.losses import dice_ce_loss

    entries = []
    for i, extra in enumerate(({"id": "case0"}, {"confidence": 0.99})):
        image, label = tmp_path / f"v{i}.nii.gz", tmp_path / f"v{i}_label.nii.gz"
        nib.save(nib.Nifti1Image(np.random.default_rng(i).normal(size=(12, 12, 8)).astype(np.float32), np.eye(4)),
                 str(image))
        mask = np.zeros((12, 12, 8), np.uint8)
        mask[3:9, 3:9, 2:6] = 1
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(label))
        entries.append({"image": str(image), "label": str(label), **extra})
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.weight.detach().clone()
    train_on_volume_patches(net, optimizer, dice_ce_loss(lambda_dice=1.0, lambda_ce=1.0), entries, (8, 8, 8), None,
                            2, 2, tmp_path / "ckpt", 2)
    assert not torch.equal(before, net.weight)


def test_training_trace_writes_each_iteration_once_across_a_kill_and_a_resume(tmp_path):
    """Lines written after the last checkpoint of a killed run are dropped when the run resumes there."""
    from ignite.engine import Engine

    from samssl.handlers import TrainingTrace, read_training_trace

    def step(engine, batch):
        return {"loss": torch.tensor(1.0 / engine.state.iteration), "share": 0.25, "vector": torch.ones(2),
                "nan": float("nan")}

    def run(start_iteration: int, iterations: int) -> None:
        engine = Engine(step)
        TrainingTrace(tmp_path).attach(engine)

        @engine.on(Events.STARTED)
        def resume(e):  # what ResumeFromLatest does: the state of the checkpoint
            e.state.iteration = start_iteration
            e.state.epoch = start_iteration // 10

        engine.run(range(10), max_epochs=(start_iteration + iterations) // 10)

    run(0, 30)                      # killed after iteration 30, last checkpoint at iteration 20
    assert [r["iteration"] for r in read_training_trace(tmp_path)] == list(range(1, 31))
    run(20, 20)                     # resumed from the checkpoint of iteration 20
    trace = read_training_trace(tmp_path / "training_trace.jsonl")
    assert [r["iteration"] for r in trace] == list(range(1, 41)), "iterations 21-30 of the killed run were dropped"
    assert trace[3] == {"iteration": 4, "loss": 0.25, "share": 0.25}, "non-scalar and non-finite terms are left out"
    run(0, 10)                      # a fresh run in the same folder starts a fresh trace
    assert [r["iteration"] for r in read_training_trace(tmp_path)] == list(range(1, 11))
