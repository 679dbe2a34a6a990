"""Small utilities: atomic file writes and fingerprints, RNG state, multi-process settings, config checks."""


from samssl.utils.distributed import RANK_ZERO_ONLY_HANDLERS, distributed_backend, handlers_for_rank, process_device

__all__ = [
    "RANK_ZERO_ONLY_HANDLERS",
    "distributed_backend",
    "handlers_for_rank",
    "process_device",
]
