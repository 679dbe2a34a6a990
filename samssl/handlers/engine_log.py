"""One line about how a run starts: drop ignite's "Engine run resuming from iteration 0" line.

MONAI's workflows create the engine state up front (and evaluators set it before every pass), so
ignite logs every start as a resume "from iteration 0", before ``Events.STARTED``, where
:class:`~samssl.handlers.checkpoints.ResumeFromLatest` loads a checkpoint or finds none. A user read
"resuming from iteration 0" and then "starting fresh". The line is never a real resume (a resume
from a file happens after it and is logged as "resumed from <file> at iteration N"), so the
handlers that own a start (the checkpointer on a trainer, the report on an evaluator) drop it from
their engine's logger.
"""

from __future__ import annotations

import logging

__all__ = ["quiet_fresh_start_line"]

_FRESH_START = "Engine run resuming from iteration 0, "


class _FreshStartLineFilter(logging.Filter):
    """Drops ignite's misleading "Engine run resuming from iteration 0, epoch E ..." record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_FRESH_START)


def quiet_fresh_start_line(logger: logging.Logger) -> None:
    """Drop ignite's "resuming from iteration 0" line from ``logger`` (an engine's logger; idempotent)."""
    if not any(isinstance(f, _FreshStartLineFilter) for f in logger.filters):
        logger.addFilter(_FreshStartLineFilter())
