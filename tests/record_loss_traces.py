"""Record the bundles' loss traces into ``tests/data/loss_traces.json`` (the behaviour baseline).

Run from the project root, one process, one thread::

    OMP_NUM_THREADS=1 python tests/record_loss_traces.py            # every trace
    OMP_NUM_THREADS=1 python tests/record_loss_traces.py sfr_la     # only these (others kept)

Each trace runs in a fresh temporary folder (data subset symlinks + every output), deleted after.
``tests/test_loss_traces.py`` re-runs the traces and compares them with this file; re-record only
when a change of the numbers is intended, and say why in the commit.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bundle_testing, loss_traces
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the project's library package

import loss_traces as lt  # noqa: E402
import torch  # noqa: E402


def settings(name: str, trace: lt.LossTrace, data_dir: Path, tmp: Path) -> dict:
    """What was run, in words and values (informational: the test compares only the iterations)."""
    import monai

    spec = lt.TRACES[name]
    kept = {k: v.replace(str(tmp), "<tmp>") if isinstance(v, str) else v for k, v in trace.overrides.items()}
    return {
        "bundle": spec.bundle,
        "configs": [f"configs/{c}" for c in spec.configs],
        "data": spec.data,
        "subset": json.loads((data_dir / "dataset.json").read_text())["training"] if spec.data == "la"
        else sorted(p.name for p in (data_dir / "images").iterdir()),
        "overrides": kept,
        "iterations_per_trainer": lt.ITERATIONS,
        "trainers": trace.trainers,
        "stop": "engine.terminate() after the traced iterations (num_iterations unchanged)",
        "note": spec.note,
        "threads": 1,
        "seconds": round(trace.seconds, 1),
        "versions": {"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version()},
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"traces to record (default: all of {', '.join(lt.TRACES)})")
    parser.add_argument("--output", type=Path, default=lt.RECORD_FILE)
    args = parser.parse_args(argv)
    names = args.names or list(lt.TRACES)
    unknown = sorted(set(names) - set(lt.TRACES))
    if unknown:
        parser.error(f"unknown trace(s) {unknown}; known: {list(lt.TRACES)}")
    torch.set_num_threads(1)
    record = json.loads(args.output.read_text()) if args.output.exists() else {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="loss_trace_") as tmp:
            data_dir = lt.real_data_subset(lt.TRACES[name].data, Path(tmp) / "data")
            trace = lt.run_trace(name, data_dir, Path(tmp) / "run")
            record[name] = {"settings": settings(name, trace, data_dir, Path(tmp)), "iterations": trace.iterations}
        print(f"{name}: {len(trace.iterations)} iterations of {trace.trainers} in {trace.seconds:.1f} s", flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        ordered = {k: record[k] for k in [*lt.TRACES, *sorted(set(record) - set(lt.TRACES))] if k in record}
        args.output.write_text(json.dumps(ordered, indent=1) + "\n")  # after each trace: a crash keeps the rest
    return 0


if __name__ == "__main__":
    sys.exit(main())
