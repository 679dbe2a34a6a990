"""Semi-supervised training machinery: two-stream trainer, EMA teacher, ramps and checkpoints."""

from samssl.engines.checkpoints import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    ResumeFromLatest,
    TrainingCheckpointer,
    latest_checkpoint,
    load_network_weights,
    read_checkpoint,
    resumable_checkpoints,
    state_dict_mismatches,
    training_checkpoint_dict,
)
from samssl.engines.distributed import RANK_ZERO_ONLY_HANDLERS, distributed_backend, handlers_for_rank, process_device
from samssl.engines.ema import EMATeacher, unwrap_model
from samssl.engines.embedding_warmup import PrecomputeEmbeddings
from samssl.engines.frameworks import FRAMEWORKS, build_consistency_trainer
from samssl.engines.mean_teacher import AuxiliaryTerm, MeanTeacherTrainer, UncertaintyAwareMeanTeacherTrainer, predictive_entropy
from samssl.engines.ramps import (
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
from samssl.engines.pseudo_label import PSEUDO_LABEL_KEY, PseudoLabelSupervision, SelfTrainingTrainer
from samssl.engines.sam_assisted import SAM_WEIGHT_SCHEDULES, SAMAssistedConsistency, sam_weight_ramp
from samssl.engines.semi_supervised import SemiSupervisedTrainer

__all__ = [
    "RANK_ZERO_ONLY_HANDLERS",
    "distributed_backend",
    "handlers_for_rank",
    "process_device",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "AuxiliaryTerm",
    "FRAMEWORKS",
    "build_consistency_trainer",
    "predictive_entropy",
    "SAMAssistedConsistency",
    "SAM_WEIGHT_SCHEDULES",
    "sam_weight_ramp",
    "PSEUDO_LABEL_KEY",
    "PseudoLabelSupervision",
    "SelfTrainingTrainer",
    "Constant",
    "EMATeacher",
    "ExponentialRampDown",
    "ExponentialRampUp",
    "GaussianRampUp",
    "LinearRamp",
    "MeanTeacherTrainer",
    "PrecomputeEmbeddings",
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
    "read_checkpoint",
    "load_network_weights",
    "ramp_progress",
    "resumable_checkpoints",
    "state_dict_mismatches",
    "training_checkpoint_dict",
    "unwrap_model",
]
