"""Batch samplers that fix how a batch is mixed from two kinds of training volumes.

A re-training on a few labelled volumes and many pseudo-labelled ones (SSL-MedSAM2's FSL folds: 4
labelled against about 44 pseudo-labelled LA volumes) draws, when shuffled uniformly, about one
labelled patch in twelve. If the pseudo-labels are weak (mostly background), that ratio lets them
teach background and the few true labels are swamped; the next round re-trains on the result and
collapses. :class:`LabelledShareBatchSampler` keeps a floor under the labelled share of every
batch, whatever the sizes of the two sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["LabelledShareBatchSampler", "labelled_per_batch"]


def labelled_per_batch(batch_index: int, batch_size: int, share: float) -> int:
    """How many labelled items batch ``batch_index`` (0-based within a pass) must hold.

    The count keeps the labelled items of batches ``0..batch_index`` at ``ceil(share x items so
    far)``: every batch holds ``share x batch_size`` when that is a whole number (0.5 of 2: one), and
    otherwise the batches alternate so that every run of batches from the pass's start meets the
    share (0.5 of 1: 1, 0, 1, 0, ...), instead of rounding every batch up to all-labelled.
    """
    def floor_count(items: int) -> int:
        return math.ceil(round(share * items, 9))  # round: 0.1 x 30 must not become 3.0000000000000004

    return floor_count((batch_index + 1) * batch_size) - floor_count(batch_index * batch_size)


class LabelledShareBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices with at least ``share`` of each batch drawn from the labelled items.

    The dataset's first ``num_labelled`` items are the labelled ones, the rest pseudo-labelled.
    Each batch takes :func:`labelled_per_batch` items from a shuffled cycle of the labelled
    indices, and fills the rest from a shuffled cycle of **all** indices, so the labelled share is
    a floor (it never falls below ``share``, and a pool with many labelled items keeps its natural
    larger share). A labelled item can appear twice in one batch; its patches are drawn at random,
    so that costs nothing but a little variety.

    A pass has as many batches as a shuffled pass over the dataset would (``ceil(len / batch)``),
    and draws everything from ``generator`` when it starts, so a pass is reproducible from the
    generator's state (what a resumed trainer restores, :mod:`samssl.utils.reproducibility`: give
    the ``DataLoader`` the same generator).

    Args:
        num_labelled: labelled items, the dataset's first ones (>= 1).
        num_items: all items, labelled and pseudo-labelled.
        batch_size: items per batch.
        share: the labelled floor, in (0, 1].
        generator: the random source of the passes.
    """

    def __init__(self, num_labelled: int, num_items: int, batch_size: int, share: float,
                 generator: torch.Generator | None = None) -> None:
        if not 1 <= num_labelled <= num_items:
            raise ValueError(f"num_labelled must be between 1 and the number of items ({num_items}), got {num_labelled}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 < share <= 1.0:
            raise ValueError(f"the labelled share is a fraction in (0, 1], got {share}")
        self.num_labelled, self.num_items = int(num_labelled), int(num_items)
        self.batch_size, self.share = int(batch_size), float(share)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return math.ceil(self.num_items / self.batch_size)

    def _cycle(self, size: int, count: int) -> list[int]:
        """``count`` indices from back-to-back shuffles of ``range(size)``."""
        rounds = -(-count // size) if count else 0
        order = [int(i) for _ in range(rounds) for i in torch.randperm(size, generator=self.generator)]
        return order[:count]

    def __iter__(self) -> Iterator[list[int]]:
        counts = [labelled_per_batch(b, self.batch_size, self.share) for b in range(len(self))]
        labelled = iter(self._cycle(self.num_labelled, sum(counts)))
        rest = iter(self._cycle(self.num_items, sum(self.batch_size - c for c in counts)))
        for count in counts:
            yield [next(labelled) for _ in range(count)] + [next(rest) for _ in range(self.batch_size - count)]
