"""Everything attached to an engine: checkpoint save and resume, progress, embedding warm-up, reports,
and which of them each process of a multi-process run attaches."""


from samssl.handlers.checkpoints import (
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
from samssl.handlers.deployment import TrainedSettings, check_trained_settings, read_trained_settings, trained_setting
from samssl.handlers.distributed import RANK_ZERO_ONLY_HANDLERS, distributed_backend, handlers_for_rank, process_device
from samssl.handlers.embedding_warmup import PrecomputeEmbeddings, log_embedding_cache
from samssl.handlers.training_trace import TrainingTrace, read_training_trace

__all__ = [
    "RANK_ZERO_ONLY_HANDLERS",
    "distributed_backend",
    "handlers_for_rank",
    "process_device",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "PrecomputeEmbeddings",
    "log_embedding_cache",
    "TrainedSettings",
    "check_trained_settings",
    "read_trained_settings",
    "trained_setting",
    "ResumeFromLatest",
    "TrainingCheckpointer",
    "latest_checkpoint",
    "load_network_weights",
    "read_checkpoint",
    "resumable_checkpoints",
    "state_dict_mismatches",
    "training_checkpoint_dict",
    "TrainingTrace",
    "read_training_trace",
]
