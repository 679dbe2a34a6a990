"""A progress bar for MONAI/ignite engines that shows the running losses.

ignite's ``ProgressBar`` must be attached with an ``output_transform`` to show anything but the
iteration count, and MONAI bundle configs can only call ``attach(engine)``; this handler closes
that gap so a config can list it among the ``train_handlers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.utils import optional_import

ProgressBar, _ = optional_import("ignite.handlers", name="ProgressBar")


class TrainingProgressBar:
    """tqdm bar per epoch with the named entries of ``engine.state.output`` (floats) as postfix."""

    def __init__(self, keys: Sequence[str] = ("loss",), persist: bool = True) -> None:
        self.keys = tuple(keys)
        self.persist = persist

    def _postfix(self, output: Any) -> dict[str, float]:
        if isinstance(output, dict):
            return {k: float(output[k]) for k in self.keys if k in output}
        if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
            return self._postfix(output[0])
        return {}

    def attach(self, engine: Any) -> None:
        ProgressBar(persist=self.persist).attach(engine, output_transform=self._postfix)
