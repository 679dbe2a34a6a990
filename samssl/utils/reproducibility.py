"""Random-number state that a checkpoint must carry for a resumed run to equal an uninterrupted one.

Weights, optimiser and iteration counters are not enough to continue a run *exactly* from the
middle of a pass over the data: the order of the pass (a ``RandomSampler`` draws its seed from the
global torch generator when the pass starts), the random augmentations already applied (each MONAI
random transform has its own ``numpy.random.RandomState``), and the global generators that the
training step itself uses (dropout, patch mixing, ...) all moved since the run started.

So the trainer records, when each data stream starts a pass, the state of everything that pass
will draw from (:func:`capture_pass_start`), and, when a checkpoint is written, the global
generators (:func:`capture_global_rng`). On resume it restores the pass-start state, re-draws the
batches the interrupted run had already consumed from that pass (same order, same augmentation
draws: they are loaded and discarded), then restores the global generators as they were at the
checkpoint. Everything is stored as tensors and plain numbers, so checkpoints still load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

__all__ = [
    "capture_global_rng",
    "capture_pass_start",
    "random_transforms",
    "restore_global_rng",
    "restore_pass_start",
    "skip_batches",
]


def _numpy_state(state: Any) -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _numpy_tuple(stored: dict[str, Any]) -> tuple:
    keys = stored["keys"].numpy().astype(np.uint32)
    return (stored["name"], keys, stored["pos"], stored["has_gauss"], stored["gauss"])


def capture_global_rng() -> dict[str, Any]:
    """The global torch (CPU and, if used, CUDA), numpy and Python generators' states."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.get_state()),
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_global_rng`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_tuple(state["numpy"]))
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["internal"].tolist()), python["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def random_transforms(loader: Any) -> list[Randomizable]:
    """Every MONAI random transform (``Randomizable`` with its own ``R``) a loader's dataset applies.

    Walks ``loader.dataset`` (through wrapping datasets' ``.dataset``) and its ``transform``
    (through ``Compose``/``OneOf``'s ``.transforms`` and the transforms a transform holds as
    attributes), in a fixed order.
    """
    found: list[Randomizable] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if obj is None or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable) and isinstance(getattr(obj, "R", None), np.random.RandomState):
            found.append(obj)
        # children: a Compose's list, and the inner transforms a dictionary transform wraps (e.g.
        # RandGaussianNoised keeps a RandGaussianNoise with a generator of its own)
        for _, value in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
            for child in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(child, (Randomizable, Transform)):
                    visit(child)

    dataset = getattr(loader, "dataset", None)
    while dataset is not None:
        visit(getattr(dataset, "transform", None))
        dataset = getattr(dataset, "dataset", None)
    return found


def _loader_generators(loader: Any) -> list[torch.Generator]:
    generators = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    return [g for g in generators if isinstance(g, torch.Generator)]


def capture_pass_start(loader: Any, draws: int) -> dict[str, Any]:
    """What a pass over ``loader`` that starts now (after ``draws`` batches of its stream) will draw from."""
    return {
        "draws": int(draws),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in _loader_generators(loader)],
        "transforms": [_numpy_state(t.R.get_state()) for t in random_transforms(loader)],
    }


def restore_pass_start(loader: Any, snapshot: dict[str, Any]) -> None:
    """Put ``loader``'s random sources back as they were when the recorded pass started.

    Raises:
        ValueError: when the loader's random transforms or generators differ in number from the
            recorded ones (the configuration changed between the run and its resume).
    """
    transforms = random_transforms(loader)
    generators = _loader_generators(loader)
    if len(transforms) != len(snapshot["transforms"]) or len(generators) != len(snapshot["generators"]):
        raise ValueError(
            f"the checkpoint recorded {len(snapshot['transforms'])} random transforms and "
            f"{len(snapshot['generators'])} data generators for this stream, the current configuration has "
            f"{len(transforms)} and {len(generators)}: "
            "resume with the configuration the run was started with."
        )
    torch.set_rng_state(snapshot["torch"])
    for generator, state in zip(generators, snapshot["generators"]):
        generator.set_state(state)
    for transform, state in zip(transforms, snapshot["transforms"]):
        transform.R.set_state(_numpy_tuple(state))


def skip_batches(iterator: Iterator, count: int) -> Iterator:
    """Draw and discard ``count`` batches (fewer if the pass ends first); returns the iterator."""
    for _ in range(count):
        try:
            next(iterator)
        except StopIteration:
            break
    return iterator
