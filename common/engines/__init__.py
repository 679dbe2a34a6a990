"""Semi-supervised training machinery: two-stream trainer, EMA teacher, ramps and checkpoints."""

from .checkpoints import (
    ResumeFromLatest,
    TrainingCheckpointer,
    latest_checkpoint,
    load_network_weights,
    resumable_checkpoints,
    state_dict_mismatches,
    training_checkpoint_dict,
)
from .ema import EMATeacher, unwrap_model
from .mean_teacher import MeanTeacherTrainer, UncertaintyAwareMeanTeacherTrainer
from .ramps import (
    Constant,
    ExponentialRampDown,
    ExponentialRampUp,
    GaussianRampUp,
    LinearRamp,
    Ramp,
    exponential_rampdown,
    exponential_rampup,
    gaussian_rampup,
    linear_rampup,
    ramp_progress,
)
from .semi_supervised import SemiSupervisedTrainer

__all__ = [
    "Constant",
    "EMATeacher",
    "ExponentialRampDown",
    "ExponentialRampUp",
    "GaussianRampUp",
    "LinearRamp",
    "MeanTeacherTrainer",
    "Ramp",
    "ResumeFromLatest",
    "SemiSupervisedTrainer",
    "TrainingCheckpointer",
    "UncertaintyAwareMeanTeacherTrainer",
    "exponential_rampdown",
    "exponential_rampup",
    "gaussian_rampup",
    "latest_checkpoint",
    "linear_rampup",
    "load_network_weights",
    "ramp_progress",
    "resumable_checkpoints",
    "state_dict_mismatches",
    "training_checkpoint_dict",
    "unwrap_model",
]
