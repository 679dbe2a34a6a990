"""A dataset and a network that an earlier stage produces, usable in a config before it has run.

MONAI builds every object a bundle's ``training`` refers to before it runs the first of them, so
the re-training engine of a multi-stage method is built while the pseudo-labels it will read do
not exist yet. Running the stages at that moment (inside config resolution) hides an hour of work
in a reference; these two objects let the config be resolved first and the stages run in the
order the config lists them:

* :class:`DeferredDataset` stands for a dataset whose entries come from a stage: it reads them on
  first use (the first batch), after the stages before it have run.
* :class:`DeferredModule` stands for a network whose weights come from a stage (SFR's tuned SAM,
  evaluated alone): it loads them on its first forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import CacheDataset, Dataset
from torch import nn

__all__ = ["DeferredDataset", "DeferredModule"]


class DeferredDataset(torch.utils.data.Dataset):
    """A MONAI (cache) dataset over entries that a stage returns at run time.

    Args:
        data: the entries, or ``() -> list of dicts`` called once on first use (a stage's result);
            named ``data`` as in MONAI's datasets, so a config overrides ``<dataset>#data`` alike.
        transform: the dataset's transform.
        expected_length: the length a sampler sees before the entries are read (a sampler is built
            with the data loader and needs a positive length then); afterwards the real length.
            Indices past the real length wrap around, so a sampler built with another length
            still draws only real entries.
        cache: a :class:`monai.data.CacheDataset` (deterministic transforms cached) or a plain one.
    """

    def __init__(self, data: Callable[[], Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
                 transform: Callable | None, expected_length: int, cache: bool = True) -> None:
        if expected_length < 1:
            raise ValueError(f"expected_length must be >= 1 (a sampler needs a positive length), got {expected_length}")
        self.data = data
        self.transform = transform
        self.expected_length = int(expected_length)
        self.cache = bool(cache)
        self._dataset: Dataset | None = None

    def materialize(self) -> Dataset:
        """Read the entries (running their stage if needed) and build the dataset, once."""
        if self._dataset is None:
            data = list(self.data() if callable(self.data) else self.data)
            if not data:
                raise ValueError("the stage before this dataset returned no entries: nothing to train on")
            self._dataset = (CacheDataset(data, self.transform, cache_rate=1.0, num_workers=0, progress=False)
                             if self.cache else Dataset(data, self.transform))
        return self._dataset

    def __len__(self) -> int:
        return len(self._dataset) if self._dataset is not None else self.expected_length

    def __getitem__(self, index: int) -> Any:
        dataset = self.materialize()
        return dataset[index % len(dataset)]


class DeferredModule(nn.Module):
    """A network built by ``load()`` on its first forward pass (after the stage that trains it).

    ``load`` returns the ready module (on its device, in eval mode where it is evaluated).
    """

    def __init__(self, load: Callable[[], nn.Module]) -> None:
        super().__init__()
        self._load = load
        self.module: nn.Module | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.module is None:
            self.module = self._load()
        return self.module(*args, **kwargs)
