"""Going on past a case that cannot be loaded: inference over a folder processes every readable image.

One damaged file in a folder of inputs used to stop inference at that file, leaving every image
after it unprocessed and the user guessing which ones were done. Here a run goes on:

* :class:`TolerantDataset` (a MONAI ``Dataset``) turns a case whose loading or preprocessing fails
  into a marker, ``{FAILED_CASE_KEY: "<file> (<why>)"}``, instead of raising; this happens where
  the case is prepared, in a data loader worker process as well as in the main process;
* :class:`SkipFailedCases` wraps the data loader handed to the evaluator: it passes the other
  batches on, keeps the markers' descriptions, and :meth:`SkipFailedCases.raise_failures` (the
  step after ``evaluator.run()`` in the inference configs) ends the command with one
  :class:`samssl.utils.errors.InvalidInputError` that lists them, so the exit status is not 0.

A marker holds only a string, so it collates like any case; loaders of these datasets use
``batch_size=1`` (inputs differ in size), which keeps a marker from being collated together with a
good case. With ``SAMSSL_DEBUG=1`` the first failure is raised as it is, with its traceback.
The evaluator learns how many batches there are by running out of them (the wrapper has no
length), which MONAI's workflows and ignite support for iterable data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any

import torch
from monai.data import Dataset

from samssl.data.readability import short_reason
from samssl.utils.errors import InvalidInputError, debug_requested

__all__ = ["FAILED_CASE_KEY", "SkipFailedCases", "TolerantDataset", "describe_case_failure"]

#: Key of the marker a :class:`TolerantDataset` returns for a case it could not prepare.
FAILED_CASE_KEY = "failed_case"


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception: MONAI wraps a reader's error in ``RuntimeError("applying transform ...")``."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error


def describe_case_failure(entry: Any, error: BaseException) -> str:
    """``"<image file> (<why>)"`` for a case (a datalist entry or a bare path) that failed to load."""
    source = entry.get("image", entry) if isinstance(entry, Mapping) else entry
    return f"{source} ({short_reason(_root_cause(error), source)})"


class TolerantDataset(Dataset):
    """A MONAI ``Dataset`` whose cases that fail to load or preprocess become failure markers.

    Same arguments as ``monai.data.Dataset``. Use it where going on past a bad input is what the
    user wants (inference over a folder); training refuses such data up front instead
    (:func:`samssl.data.check_readable`), since a model trained on fewer cases than asked for is
    not the model asked for.
    """

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as error:  # any case that cannot be prepared is skipped and listed
            if debug_requested():
                raise
            return {FAILED_CASE_KEY: describe_case_failure(self.data[index], error)}


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()), None)
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    return len(batch) if isinstance(batch, Sized) and not isinstance(batch, str) else 1


class SkipFailedCases:
    """The batches of ``loader`` without the failure markers of a :class:`TolerantDataset`.

    Hand it to the evaluator as its data loader; after the run, :attr:`failures` lists what was
    skipped and :meth:`raise_failures` reports it.

    Args:
        loader: the data loader (batch size 1) over a :class:`TolerantDataset`.
        what: what a case is, for the message (``"input images"``, ``"input volumes"``).
    """

    def __init__(self, loader: Iterable, what: str = "inputs") -> None:
        self.loader = loader
        self.what = what
        self.failures: list[str] = []
        self.processed = 0

    def __iter__(self) -> Iterator[Any]:
        self.failures, self.processed = [], 0
        for batch in self.loader:
            if isinstance(batch, Mapping) and FAILED_CASE_KEY in batch:
                described = batch[FAILED_CASE_KEY]
                self.failures.extend([described] if isinstance(described, str) else list(described))
                continue
            self.processed += _batch_size(batch)
            yield batch

    def raise_failures(self) -> None:
        """Raise :class:`InvalidInputError` listing the skipped cases, if there were any."""
        if not self.failures:
            return
        listed = "; ".join(self.failures)
        total = self.processed + len(self.failures)
        if not self.processed:
            raise InvalidInputError(f"none of the {total} {self.what} could be read: {listed}")
        raise InvalidInputError(
            f"{len(self.failures)} of {total} {self.what} could not be read and were skipped; "
            f"the other {self.processed} were processed: {listed}"
        )
