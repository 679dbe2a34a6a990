"""Every iteration's scalar terms, one JSON line each, in the run folder: a record to analyse later.

Why: a progress bar shows the last value and TensorBoard keeps what it was told to; questions such
as "where does this method's extra foreground come from, and from which iteration on" need every
term of every iteration in a file a script can read (``pandas.read_json(path, lines=True)``).
The trainer puts the terms in ``engine.state.output`` (losses, ramp weights, the foreground share
of its pseudo-labels and predictions, ...); this handler writes the named ones.

A resumed run continues the same file: at its first iteration, the lines from that iteration on
(written after the last checkpoint of a killed run, and about to be recomputed) are dropped, so the
file holds each iteration once; a fresh run in the same folder starts a fresh file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["TRACE_FILE", "TrainingTrace", "read_training_trace"]

TRACE_FILE = "training_trace.jsonl"


def _scalar(value: Any) -> float | None:
    try:
        number = float(value.detach().item() if hasattr(value, "detach") else value)
    except (TypeError, ValueError, RuntimeError):  # a tensor with several values, a string, None
        return None
    return number if math.isfinite(number) else None


def read_training_trace(path: str | Path) -> list[dict[str, float]]:
    """The records of a trace file (or of ``<run folder>/training_trace.jsonl``), in iteration order."""
    path = Path(path)
    if path.is_dir():
        path = path / TRACE_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class TrainingTrace:
    """Append ``{"iteration": i, key: value, ...}`` to ``<output_dir>/training_trace.jsonl`` every ``every`` iterations.

    Args:
        output_dir: the run folder.
        keys: the entries of ``engine.state.output`` to write (``None``: every scalar entry).
            A missing, non-scalar or non-finite entry is left out of that line.
        every: write one iteration in ``every``.
    """

    def __init__(self, output_dir: str | Path, keys: Sequence[str] | None = None, every: int = 1) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path = Path(output_dir) / TRACE_FILE
        self.keys = None if keys is None else tuple(keys)
        self.every = int(every)
        self._trimmed = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._write)

    def _start(self, engine: Engine) -> None:
        self._trimmed = False

    def _drop_lines_to_recompute(self, first_iteration: int) -> None:
        """Keep the lines before this run's first iteration (none for a fresh run). Done at the first
        write, not on start, so it does not depend on the resume handler having run before it."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) < first_iteration]
        self.path.write_text("".join(f"{line}\n" for line in kept))

    def _terms(self, output: Any) -> dict[str, float]:
        if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
            output = output[0]  # a decollated output: every sample's dict holds the same terms
        if not isinstance(output, dict):
            return {}
        names = self.keys if self.keys is not None else tuple(output)
        terms = {name: _scalar(output[name]) for name in names if name in output}
        return {name: value for name, value in terms.items() if value is not None}

    def _write(self, engine: Engine) -> None:
        if not self._trimmed:
            self._drop_lines_to_recompute(engine.state.iteration)
            self._trimmed = True
        record = {"iteration": engine.state.iteration, **self._terms(engine.state.output)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
