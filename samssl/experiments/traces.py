r"""What happened during training, side by side: runs' per-iteration traces, averaged over phases.

Each run folder a bundle writes holds ``training_trace.jsonl`` (:class:`samssl.handlers.TrainingTrace`):
every iteration's losses, ramp weights and, where the trainer reports them, the foreground share
of the labels, of the predictions and of the pseudo-labels. A final Dice says *that* a method
over- or under-segments; the traces say *when* it starts and *from which term*: for instance
whether a mean teacher's pseudo-labels hold more foreground than the labels long before the
student's predictions do. This module cuts each run into ``phases`` equal spans of iterations and
averages every term within each span, one Markdown row per run and term::

    python -m samssl.experiments traces suponly=runs/cmp/seed0/suponly uamt=runs/cmp/seed0/uamt \
        --keys label_foreground prediction_foreground pseudo_foreground --phases 5
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from samssl.handlers.training_trace import read_training_trace

__all__ = ["phase_means", "traces_main", "traces_table"]


def phase_means(records: Sequence[Mapping[str, float]], key: str, phases: int) -> list[float | None]:
    """Mean of ``key`` over each of ``phases`` equal spans of the records' iterations (``None``: absent there)."""
    if phases < 1:
        raise ValueError(f"phases must be >= 1, got {phases}")
    last = max((int(r["iteration"]) for r in records), default=0)
    sums, counts = [0.0] * phases, [0] * phases
    for record in records:
        if key not in record:
            continue
        phase = min(phases - 1, (int(record["iteration"]) - 1) * phases // max(last, 1))
        sums[phase] += float(record[key])
        counts[phase] += 1
    return [s / c if c else None for s, c in zip(sums, counts)]


def traces_table(runs: Mapping[str, str | Path], keys: Sequence[str], phases: int = 5) -> str:
    """Markdown: one row per run and term, one column per phase of training (iterations in each span)."""
    traces = {label: read_training_trace(path) for label, path in runs.items()}
    header = "| run | term | " + " | ".join(f"phase {k + 1}/{phases}" for k in range(phases)) + " |"
    lines = [header, "|---|---|" + "---:|" * phases]
    for label, records in traces.items():
        for key in keys:
            means = phase_means(records, key, phases)
            if all(m is None for m in means):
                continue
            cells = " | ".join("-" if m is None or math.isnan(m) else f"{m:.4g}" for m in means)
            lines.append(f"| {label} | {key} | {cells} |")
    last = {label: max((int(r["iteration"]) for r in records), default=0) for label, records in traces.items()}
    lines.append("")
    lines.append("iterations per run: " + ", ".join(f"{label} {n}" for label, n in last.items()))
    return "\n".join(lines)


def traces_main(argv: Sequence[str] | None = None) -> None:
    """``python -m samssl.experiments traces LABEL=RUN_DIR ... --keys ... --phases N``."""
    parser = argparse.ArgumentParser(prog="python -m samssl.experiments traces",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (a run folder with training_trace.jsonl), or RUN_DIR")
    parser.add_argument("--keys", nargs="+", required=True, help="terms of the trace to tabulate")
    parser.add_argument("--phases", type=int, default=5, help="equal spans of iterations (default 5)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runs = {}
    for item in args.runs:
        label, _, path = item.partition("=") if "=" in item else (item, "", item)
        runs[label] = Path(path)
    missing = [str(p) for p in runs.values() if not (p / "training_trace.jsonl").is_file() and not p.is_file()]
    if missing:
        raise SystemExit(f"no training_trace.jsonl in {', '.join(missing)} (runs trained before the trace existed "
                         "have none: train them again)")
    print(traces_table(runs, args.keys, args.phases))
