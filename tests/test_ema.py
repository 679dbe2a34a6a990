"""EMA teacher: exact update arithmetic, buffers, no gradients, wrappers, engine hook."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from ignite.engine import Engine
from torch import nn

from samssl.networks import EMATeacher


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1)).double()


def _fill(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if torch.is_floating_point(tensor):
                tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype) + 0.5)
            else:
                tensor.fill_(int(torch.randint(0, 100, (1,), generator=generator)))


@pytest.mark.parametrize(
    "step, use_warmup, expected_alpha",
    [(1, True, 0.5), (3, True, 0.75), (49, True, 0.98), (99, True, 0.99), (10_000, True, 0.99), (1, False, 0.99)],
)
def test_update_is_alpha_teacher_plus_one_minus_alpha_student(step, use_warmup, expected_alpha):
    generator = torch.Generator().manual_seed(step)
    student = _tiny_net()
    ema = EMATeacher(student, decay=0.99, use_warmup=use_warmup)
    _fill(student, generator)
    _fill(ema.teacher, generator)
    teacher_before = copy.deepcopy(ema.teacher.state_dict())
    student_state = copy.deepcopy(student.state_dict())

    assert ema.alpha(step) == pytest.approx(expected_alpha, abs=1e-15)
    ema.update(step)

    for key, value in ema.teacher.state_dict().items():
        if torch.is_floating_point(value):  # weights, biases, BN running mean/var
            expected = expected_alpha * teacher_before[key] + (1 - expected_alpha) * student_state[key]
            torch.testing.assert_close(value, expected, rtol=1e-14, atol=1e-14)
        else:  # num_batches_tracked is copied
            assert torch.equal(value, student_state[key])
    assert ema.last_update_step == step
    # the student is only read
    for key, value in student.state_dict().items():
        assert torch.equal(value, student_state[key])


def test_teacher_is_a_frozen_eval_copy_that_gets_no_gradients():
    student = _tiny_net()
    ema = EMATeacher(student)
    assert ema.teacher is not student
    assert all(not p.requires_grad for p in ema.teacher.parameters())
    assert not ema.teacher.training
    for (name, s), (_, t) in zip(student.state_dict().items(), ema.teacher.state_dict().items()):
        assert torch.equal(s, t), name

    x = torch.randn(2, 1, 8, 8, dtype=torch.double)
    loss = (student(x) - ema(x)).pow(2).mean() + ema.teacher(x).mean()
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in ema.teacher.parameters())
    assert ema(x).grad_fn is None

    assert ema.train_mode(True).teacher.training
    assert not ema.train_mode(False).teacher.training


def test_given_teacher_must_match_architecture():
    with pytest.raises(ValueError, match="architecture"):
        EMATeacher(_tiny_net(), teacher=nn.Sequential(nn.Conv2d(1, 3, 5)).double())


def test_wrapped_students_are_unwrapped():
    student = _tiny_net()
    ema = EMATeacher(nn.DataParallel(student))
    assert ema.student is student
    assert set(ema.state_dict()) == set(student.state_dict())


def test_distributed_data_parallel_student(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        student = _tiny_net()
        wrapped = nn.parallel.DistributedDataParallel(student)
        ema = EMATeacher(wrapped, decay=0.9)
        with torch.no_grad():
            for p in student.parameters():
                p.add_(1.0)
        before = [p.clone() for p in ema.teacher.parameters()]
        ema.update(100)
        for b, t, s in zip(before, ema.teacher.parameters(), student.parameters()):
            torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
        assert not any(k.startswith("module.") for k in ema.state_dict())
    finally:
        dist.destroy_process_group()


def test_attached_handler_updates_every_iteration_but_not_twice():
    student = _tiny_net()
    ema = EMATeacher(student, decay=0.5, use_warmup=False)
    steps: list[int] = []
    original_update = ema.update

    def counting_update(step: int) -> None:
        steps.append(step)
        original_update(step)

    ema.update = counting_update  # type: ignore[method-assign]

    def process(engine, batch):
        if engine.state.iteration == 2:  # a trainer that already updated this iteration
            ema.update(engine.state.iteration)

    engine = Engine(process)
    ema.attach(engine)
    engine.run([0, 1, 2, 3], max_epochs=1)
    assert steps == [1, 2, 3, 4]


def test_state_dict_round_trip():
    ema = EMATeacher(_tiny_net())
    other = EMATeacher(_tiny_net())
    with torch.no_grad():
        for p in ema.teacher.parameters():
            p.fill_(0.25)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for p in other.teacher.parameters())


def test_a_batch_statistics_teacher_normalises_each_call_with_its_batch_and_leaves_its_buffers():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5),
                            nn.Conv2d(3, 2, 1)).double()
    with torch.no_grad():
        student[1].running_mean.fill_(5.0)  # running statistics far from any batch's
    ema = EMATeacher(student, batch_norm="batch")
    buffers = copy.deepcopy(dict(ema.teacher.named_buffers()))
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)

    out = ema(x)
    reference = copy.deepcopy(ema.teacher).train()
    reference[3].eval()  # dropout stays off: only BatchNorm uses the batch
    with torch.no_grad():
        torch.testing.assert_close(out, reference(x))
    torch.testing.assert_close(ema(x), out)  # deterministic: no dropout
    for name, value in ema.teacher.named_buffers():
        assert torch.equal(value, buffers[name]), f"{name} changed"
    assert not ema.teacher.training and not ema.teacher[1].training and ema.teacher[1].momentum == 0.1
    # the default keeps eval-mode running statistics
    running = EMATeacher(student)
    with torch.no_grad():
        torch.testing.assert_close(running(x), copy.deepcopy(running.teacher).eval()(x))
    assert not torch.allclose(running(x), out)


def test_a_batch_statistics_teacher_refuses_single_images_with_one_clear_error():
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="batches of two or more"):
        EMATeacher(pooled, batch_norm="batch")(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="batch_norm must be one of"):
        EMATeacher(pooled, batch_norm="train")
