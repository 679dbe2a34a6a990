"""Mean teacher (Tarvainen & Valpola, 2017) and uncertainty-aware mean teacher (Yu et al., 2019).

Mean teacher: the student is trained with the supervised loss on labelled images plus a
consistency loss that pulls its prediction on a noisy unlabelled image towards the prediction of
its EMA teacher on a differently-noised copy::

    loss = sup(student(x_l), y_l) + w(t) * || softmax(student(u + xi)) - softmax(teacher(u + xi')) ||^2

with ``xi = clamp(0.1 * N(0, 1), -0.2, 0.2)`` as in the UA-MT code. (That code perturbs only the
teacher's input; the papers perturb both, which is the default here: ``student_noise=False`` gives
the code's variant.)

UA-MT adds an uncertainty mask: the teacher predicts ``T`` times under input noise and dropout, the
predictive entropy ``U = -sum_c p_c log p_c`` of the mean probabilities measures its uncertainty,
and the consistency counts only voxels with ``U < H``, where the threshold rises over training
(``H = (0.75 + 0.25 * gaussian_rampup(t, t_max)) * ln C``, ``ln 2`` for two classes): the student
learns first from the voxels the teacher is sure about, then from more.

Input noise comes from a generator seeded with ``(noise_seed, iteration, rank)``, so an
iteration's noise is the same whether the run was interrupted and resumed or not. Dropout and
other randomness inside the networks use torch's global generator.

Plug-and-play extra targets: both trainers take ``auxiliary_terms``, objects that add another
weighted consistency term on the unlabelled batch (SemiSAM's SAM-assisted branch,
:class:`~samssl.losses.sam_assisted.SAMAssistedConsistency`, is one). Each is called with the
engine, the unlabelled batch and the student's logits; it returns its unweighted term under its
``name`` and its weight under ``name + "_weight"``, and the trainer adds ``weight * term`` to the
loss. The teacher's uncertainty map (:meth:`MeanTeacherTrainer.teacher_uncertainty`) is computed
at most once per iteration and shared between UA-MT's mask and any auxiliary term that asks for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data import DataLoader

from samssl.engines.semi_supervised import SemiSupervisedTrainer
from samssl.losses.auxiliary import AuxiliaryTerm, Batch, LossTerms, add_auxiliary_terms, checked_auxiliary_terms
from samssl.losses.consistency import as_class_logits, masked_mean, softmax_mse_loss
from samssl.losses.ramps import gaussian_rampup
from samssl.networks.ema import EMATeacher

__all__ = [
    "MeanTeacherTrainer",
    "UncertaintyAwareMeanTeacherTrainer",
    "predictive_entropy",
]


def predictive_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """``-sum_c p_c log p_c`` over the class dimension, ``(B, 1, *spatial)`` (UA-MT's uncertainty)."""
    return -(probabilities * torch.log(probabilities + 1e-6)).sum(dim=1, keepdim=True)


class MeanTeacherTrainer(SemiSupervisedTrainer):
    """Mean-teacher training, 2D or 3D.

    Positional arguments as :class:`SemiSupervisedTrainer` (device, max_epochs, train_data_loader,
    network, optimizer, loss_function); further arguments, keyword-only:

    Args:
        unlabeled_data_loader: the unlabelled stream (required: the consistency needs it).
        consistency_weight: the weight schedule ``w(iteration)`` (e.g. ``GaussianRampUp(0.1, 6000)``,
            UA-MT's setting with its 40 x 150 iterations) or a constant.
        teacher: the :class:`EMATeacher` of ``network``; default ``EMATeacher(network, decay=ema_decay)``.
        ema_decay: decay of the default teacher.
        consistency_loss: ``loss(student_logits, teacher_logits) -> scalar``; default softmax MSE.
        noise_std, noise_clip: input noise ``clamp(noise_std * N(0, 1), -noise_clip, noise_clip)``.
        student_noise: also perturb the student's input (papers: True; UA-MT code: False).
        noise_seed: seed of the per-iteration noise generator; ``None`` draws from torch's global RNG.
        auxiliary_terms: extra weighted consistency terms (:class:`AuxiliaryTerm`), e.g. SemiSAM's
            SAM-assisted branch; the method stays the same otherwise (plug-and-play).
        kwargs: the remaining :class:`SemiSupervisedTrainer` arguments.

    Hooks for subclasses: :meth:`student_unlabelled_forward`, :meth:`teacher_targets`,
    :meth:`consistency_terms` and :meth:`add_input_noise`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        *,
        unlabeled_data_loader: Iterable | DataLoader | None,
        consistency_weight: Callable[[int], float] | float,
        teacher: EMATeacher | None = None,
        ema_decay: float = 0.99,
        consistency_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = softmax_mse_loss,
        noise_std: float = 0.1,
        noise_clip: float = 0.2,
        student_noise: bool = True,
        noise_seed: int | None = 0,
        auxiliary_terms: Sequence[AuxiliaryTerm] | None = None,
        **kwargs: Any,
    ) -> None:
        if unlabeled_data_loader is None:
            raise ValueError(
                f"{type(self).__name__} needs an unlabeled_data_loader; for the supervised-only baseline use "
                "SemiSupervisedTrainer with unlabeled_data_loader=None."
            )
        if consistency_weight is None:
            raise ValueError(f"{type(self).__name__} needs a consistency_weight, e.g. GaussianRampUp(0.1, length).")
        if noise_std < 0 or noise_clip < 0:
            raise ValueError(f"noise_std and noise_clip must be >= 0, got {noise_std} and {noise_clip}.")
        super().__init__(
            device,
            max_epochs,
            train_data_loader,
            network,
            optimizer,
            loss_function,
            unlabeled_data_loader=unlabeled_data_loader,
            teacher=EMATeacher(network, decay=ema_decay) if teacher is None else teacher,
            consistency_weight=consistency_weight,
            **kwargs,
        )
        self.consistency_loss = consistency_loss
        self.noise_std = noise_std
        self.noise_clip = noise_clip
        self.student_noise = student_noise
        self.noise_seed = noise_seed
        self._noise_generator: torch.Generator | None = None
        self._noise_generator_iteration: int | None = None
        self.auxiliary_terms = checked_auxiliary_terms(auxiliary_terms)
        self._uncertainty_memo: tuple[tuple, torch.Tensor] | None = None

    @property
    def ema(self) -> EMATeacher:
        assert self.teacher is not None
        return self.teacher

    # ------------------------------------------------------------------ noise
    def noise_generator(self) -> torch.Generator | None:
        """This iteration's noise generator (one stream per iteration), or None for the global RNG."""
        if self.noise_seed is None:
            return None
        iteration = self.state.iteration
        if self._noise_generator_iteration != iteration:
            seed = np.random.SeedSequence([self.noise_seed, iteration, self.state.rank]).generate_state(1, np.uint64)
            generator = torch.Generator(device=self.state.device or "cpu")
            generator.manual_seed(int(seed[0]))
            self._noise_generator, self._noise_generator_iteration = generator, iteration
        return self._noise_generator

    def add_input_noise(self, images: torch.Tensor) -> torch.Tensor:
        """``images + clamp(noise_std * N(0, 1), -noise_clip, noise_clip)``."""
        noise = torch.randn(
            images.shape, generator=self.noise_generator(), device=images.device, dtype=images.dtype
        )
        return images + torch.clamp(noise * self.noise_std, -self.noise_clip, self.noise_clip)

    # ------------------------------------------------------------------ uncertainty
    def teacher_uncertainty(
        self, engine: MeanTeacherTrainer, unlabelled: Batch, passes: int = 8, stochastic: bool = True
    ) -> torch.Tensor:
        """UA-MT's uncertainty: entropy ``(B, 1, *spatial)`` of the teacher's mean softmax over
        ``passes`` noisy inputs (and dropout, with ``stochastic``), in nats.

        Computed once per iteration and argument set: UA-MT's mask and a SAM branch asking for
        the same map share one set of teacher passes.
        """
        if passes < 2:
            raise ValueError(f"uncertainty needs at least 2 teacher passes, got {passes}.")
        images = unlabelled[Keys.IMAGE]
        key = (engine.state.iteration, id(images), tuple(images.shape), passes, stochastic)
        if self._uncertainty_memo is not None and self._uncertainty_memo[0] == key:
            return self._uncertainty_memo[1]
        was_training = self.ema.teacher.training
        self.ema.train_mode(stochastic)
        try:
            mean_probability = sum(
                torch.softmax(as_class_logits(self.forward_float32(self.ema, self.add_input_noise(images))), dim=1)
                for _ in range(passes)
            ) / passes
        finally:
            self.ema.train_mode(was_training)
        uncertainty = predictive_entropy(mean_probability)
        self._uncertainty_memo = (key, uncertainty)
        return uncertainty

    # ------------------------------------------------------------------ hooks
    def student_unlabelled_forward(self, engine: MeanTeacherTrainer, unlabelled: Batch) -> torch.Tensor:
        """The student's logits on the (perturbed) unlabelled images."""
        images = unlabelled[Keys.IMAGE]
        return self.student_forward(self.add_input_noise(images) if self.student_noise else images)

    def teacher_targets(self, engine: MeanTeacherTrainer, unlabelled: Batch) -> torch.Tensor:
        """The teacher's logits on differently perturbed unlabelled images (no gradient), in float32."""
        return self.forward_float32(self.ema, self.add_input_noise(unlabelled[Keys.IMAGE]))

    def consistency_terms(
        self,
        engine: MeanTeacherTrainer,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        unlabelled: Batch,
    ) -> LossTerms:
        """The unweighted consistency under ``"consistency"``, plus any other terms worth logging."""
        return {"consistency": self.consistency_loss(student_logits, teacher_logits)}

    def compute_losses(self, engine: MeanTeacherTrainer, labelled: Batch, unlabelled: Batch | None) -> LossTerms:
        if unlabelled is None:
            return super().compute_losses(engine, labelled, unlabelled)
        supervised = self.supervised_loss(engine, labelled)
        student_logits = self.student_unlabelled_forward(engine, unlabelled)
        teacher_logits = self.teacher_targets(engine, unlabelled)
        terms = self.consistency_terms(engine, student_logits, teacher_logits, unlabelled)
        weight = self.consistency_weight_at(engine.state.iteration)
        loss, extra = add_auxiliary_terms(self.auxiliary_terms, engine, unlabelled, student_logits,
                                          supervised + weight * terms["consistency"])
        return {
            "loss": loss,
            "supervised": supervised,
            **terms,
            "consistency_weight": weight,
            **extra,
        }


class UncertaintyAwareMeanTeacherTrainer(MeanTeacherTrainer):
    """UA-MT (Yu et al., MICCAI 2019): mean teacher with an entropy-masked consistency, 2D or 3D.

    Args as :class:`MeanTeacherTrainer`, plus:

    Args:
        uncertainty_passes: number ``T`` of stochastic teacher predictions (8 in UA-MT).
        threshold_rampup_length: iterations over which the entropy threshold rises from 0.75 to 1.0
            of its maximum ``ln C``; default: the whole run (``max_epochs * epoch_length``), as UA-MT.
        stochastic_teacher: run the ``T`` passes with the teacher in train mode, so that dropout
            (and batch-statistics BatchNorm) add model noise to the input noise, as in UA-MT.
    """

    def __init__(
        self,
        *args: Any,
        uncertainty_passes: int = 8,
        threshold_rampup_length: int | None = None,
        stochastic_teacher: bool = True,
        **kwargs: Any,
    ) -> None:
        if uncertainty_passes < 2:
            raise ValueError(f"uncertainty_passes must be >= 2 to estimate an uncertainty, got {uncertainty_passes}.")
        super().__init__(*args, **kwargs)
        self.uncertainty_passes = uncertainty_passes
        self.threshold_rampup_length = threshold_rampup_length
        self.stochastic_teacher = stochastic_teacher

    def uncertainty(self, engine: UncertaintyAwareMeanTeacherTrainer, unlabelled: Batch) -> torch.Tensor:
        """Predictive entropy ``(B, 1, *spatial)`` of the teacher's mean softmax over ``T`` noisy passes."""
        return self.teacher_uncertainty(engine, unlabelled, self.uncertainty_passes, self.stochastic_teacher)

    def uncertainty_threshold(self, engine: UncertaintyAwareMeanTeacherTrainer, num_classes: int) -> float:
        """``(0.75 + 0.25 * gaussian_rampup(iteration, length)) * ln(num_classes)``."""
        length = self.threshold_rampup_length
        if length is None:
            length = engine.state.max_epochs * engine.state.epoch_length
        return (0.75 + 0.25 * gaussian_rampup(engine.state.iteration, length)) * math.log(num_classes)

    def consistency_terms(
        self,
        engine: UncertaintyAwareMeanTeacherTrainer,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        unlabelled: Batch,
    ) -> LossTerms:
        uncertainty = self.uncertainty(engine, unlabelled)
        threshold = self.uncertainty_threshold(engine, as_class_logits(teacher_logits).shape[1])
        certain = (uncertainty < threshold).to(student_logits.dtype)
        consistency_map = softmax_mse_loss(student_logits, teacher_logits, reduction="none")
        return {
            "consistency": masked_mean(consistency_map, certain),
            "uncertainty_threshold": threshold,
            "certain_fraction": float(certain.mean()),
        }
