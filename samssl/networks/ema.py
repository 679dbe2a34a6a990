"""Exponential-moving-average (EMA) teacher of the mean-teacher family.

Tarvainen & Valpola (2017): the teacher's weights are an exponential moving average of the
student's, ``theta'_t = alpha theta'_{t-1} + (1 - alpha) theta_t``, with the warm-up
``alpha = min(1 - 1 / (step + 1), decay)`` so that the first steps, when the random initial teacher
is worthless, follow the student closely. This is the update of the UA-MT code
(``update_ema_variables``) that the SemiSAM and SFR methods build on.

Floating-point *buffers* (BatchNorm running mean/var) are averaged too and integer buffers
(``num_batches_tracked``) copied, so an eval-mode teacher normalises with running statistics that
follow its weights (``batch_norm="running"``, the default). Those averaged statistics are not the
statistics of the averaged weights, though: while the weights still move fast the mismatch biases
the teacher's outputs (UAMT's DeepLabv3 on PH2: its pseudo-labels held 42-44% foreground pixels over
the first two fifths of training against the labels' 27% and the student's 25-26%;
``bundles/uamt_skin/docs/README.md``, "Across test folders"). ``batch_norm="batch"`` is what the reference mean-teacher
codes do, whose teacher runs in train mode: BatchNorm normalises with the statistics of the batch
the teacher is given (dropout stays off and the teacher's running buffers are left as they are).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from samssl.utils.modules import batch_statistics

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["TEACHER_BATCH_NORMS", "EMATeacher", "unwrap_model"]

#: How the teacher's BatchNorm layers normalise: averaged running statistics, or the batch's own.
TEACHER_BATCH_NORMS = ("running", "batch")



def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile``.

    The EMA must read and write the parameters themselves; the wrappers hold the same tensors
    under prefixed names (``module.``, ``_orig_mod.``) that would not match the teacher's.
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class EMATeacher:
    """A frozen copy of the student whose weights follow the student's by EMA.

    Args:
        student: the network being trained (may be wrapped in DDP / DataParallel / torch.compile).
        teacher: the teacher network; default: a deep copy of the student, so both start equal as in
            the reference implementations. A given teacher must have the student's architecture.
        decay: EMA decay ``alpha`` once warmed up (0.99 in UA-MT, SemiSAM and SFR).
        use_warmup: use ``alpha = min(1 - 1 / (step + 1), decay)``; if False, ``alpha = decay`` at
            every step.
        batch_norm: ``"running"`` (eval-mode BatchNorm with the EMA-averaged running statistics) or
            ``"batch"`` (BatchNorm on the statistics of the batch the teacher is called with, as in
            the reference codes' train-mode teacher; needs batches of two or more images); see the
            module docstring for why.

    The teacher never receives gradients (``requires_grad=False``) and stays in eval mode unless
    a method asks otherwise with :meth:`train_mode` (e.g. UA-MT's Monte-Carlo dropout passes).
    Calling the object runs the teacher under ``torch.no_grad()``: its outputs are targets.

    In an ignite/MONAI engine either let the trainer update the teacher (the semi-supervised
    trainers do) or :meth:`attach` it to update after every iteration; both together do not update
    twice, because an update records its step and the handler skips a step already done.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        decay: float = 0.99,
        use_warmup: bool = True,
        batch_norm: str = "running",
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}.")
        if batch_norm not in TEACHER_BATCH_NORMS:
            raise ValueError(f"EMATeacher batch_norm must be one of {TEACHER_BATCH_NORMS}, got {batch_norm!r}.")
        self.batch_norm = batch_norm
        self.student = unwrap_model(student)
        self.teacher = copy.deepcopy(self.student) if teacher is None else unwrap_model(teacher)
        self._check_same_architecture()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher.eval()
        self.decay = float(decay)
        self.use_warmup = use_warmup
        self.last_update_step: int | None = None

    def _check_same_architecture(self) -> None:
        student_state, teacher_state = self.student.state_dict(), self.teacher.state_dict()
        problems = [f"{k}: missing in the teacher" for k in student_state if k not in teacher_state]
        problems += [f"{k}: not in the student" for k in teacher_state if k not in student_state]
        problems += [
            f"{k}: student {tuple(v.shape)} vs teacher {tuple(teacher_state[k].shape)}"
            for k, v in student_state.items()
            if k in teacher_state and v.shape != teacher_state[k].shape
        ]
        if problems:
            raise ValueError(
                "EMATeacher: the teacher must have the student's architecture; first differences: "
                + "; ".join(problems[:5])
            )

    def alpha(self, step: int) -> float:
        """The EMA coefficient of the teacher's old weights at ``step`` (1 for the first iteration)."""
        if not self.use_warmup:
            return self.decay
        return min(1.0 - 1.0 / (step + 1), self.decay)

    def _follow_student_device(self) -> None:
        student_param = next(self.student.parameters(), None)
        teacher_param = next(self.teacher.parameters(), None)
        if student_param is not None and teacher_param is not None and student_param.device != teacher_param.device:
            self.teacher.to(student_param.device)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """``teacher = alpha * teacher + (1 - alpha) * student`` for parameters and float buffers."""
        self._follow_student_device()
        alpha = self.alpha(step)
        student_params = dict(self.student.named_parameters())
        for name, teacher_param in self.teacher.named_parameters():
            teacher_param.mul_(alpha).add_(student_params[name].detach(), alpha=1.0 - alpha)
        student_buffers = dict(self.student.named_buffers())
        for name, teacher_buffer in self.teacher.named_buffers():
            student_buffer = student_buffers[name]
            if torch.is_floating_point(teacher_buffer):
                teacher_buffer.mul_(alpha).add_(student_buffer, alpha=1.0 - alpha)
            else:
                teacher_buffer.copy_(student_buffer)
        self.last_update_step = step

    def train_mode(self, mode: bool = True) -> EMATeacher:
        """Put the teacher in train (``True``: dropout active, BatchNorm on batch statistics) or eval mode."""
        self.teacher.train(mode)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._follow_student_device()
        with torch.no_grad(), self._normalisation():
            return self.teacher(*args, **kwargs)

    def _normalisation(self) -> contextlib.AbstractContextManager:
        """BatchNorm on the batch's statistics for one call with ``batch_norm="batch"``; else as it is."""
        if self.batch_norm != "batch":
            return contextlib.nullcontext()
        return batch_statistics(self.teacher)

    def attach(self, engine: Engine) -> None:
        """Update after every iteration with ``engine.state.iteration`` (unless already done for it)."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration_completed)

    def _on_iteration_completed(self, engine: Engine) -> None:
        if self.last_update_step != engine.state.iteration:
            self.update(engine.state.iteration)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher's weights, so that a checkpoint (``save_dict={"teacher": ema}``) keeps them."""
        return self.teacher.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        return self.teacher.load_state_dict(state_dict, strict=strict)

    def __repr__(self) -> str:
        return (f"EMATeacher(decay={self.decay}, use_warmup={self.use_warmup}, batch_norm={self.batch_norm!r}, "
                f"teacher={type(self.teacher).__name__})")
