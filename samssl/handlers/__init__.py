"""Everything attached to an engine: checkpoint save and resume, progress, embedding warm-up, reports."""


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
from samssl.handlers.embedding_warmup import PrecomputeEmbeddings

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "PrecomputeEmbeddings",
    "ResumeFromLatest",
    "TrainingCheckpointer",
    "latest_checkpoint",
    "load_network_weights",
    "read_checkpoint",
    "resumable_checkpoints",
    "state_dict_mismatches",
    "training_checkpoint_dict",
]
