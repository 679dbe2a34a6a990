"""Stages: the steps of a multi-stage method, each an output folder with a manifest.

SFR fine-tunes SAM, pseudo-labels, routes and re-trains; SSL-MedSAM2 pseudo-labels with a frozen
propagator, re-trains K folds for several rounds and deploys their ensemble. Each step takes an
hour on a CPU, feeds the next, and must survive a kill, so each is a :class:`Stage`:

* **fingerprinted inputs**: :meth:`Stage.inputs` describes everything the result depends on
  (settings, the fingerprints of input files, earlier stages' fingerprints); its SHA-256 is the
  stage's fingerprint.
* **an output folder with a manifest** (``stage.json``): written ``"running"`` when the stage
  starts and ``"done"``, with the stage's JSON-able outputs, when it ends (atomically).
* **done when its manifest says so**: a stage whose manifest is ``done`` with the same fingerprint
  returns the recorded outputs without computing anything. A stage killed while running resumes:
  :meth:`Stage.compute` is called again on the same folder and reuses what it finds there
  (checkpoints, cached cases). A folder holding the work of *other* inputs (another fingerprint)
  is never resumed: it is moved aside to ``<folder>.replaced-<n>`` (nothing is deleted) and the
  stage restarts cleanly.
* **rank 0 computes, other ranks wait**: in a multi-process run (``torchrun``) only process 0 (the
  stage's ``owner``) computes a stage; the others wait for its manifest (no collective, so no
  deadlock while one process trains for an hour) and read the same outputs.

:func:`run_stages` runs a list in order, the way a bundle's ``stages`` lists them, and
:class:`FunctionStage` turns a function into a stage for the simple cases.
"""

from __future__ import annotations

import abc
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from samssl.utils.files import atomic_write_json, fingerprint

__all__ = ["MANIFEST", "FunctionStage", "Stage", "Step", "process_rank", "run_stages"]

MANIFEST = "stage.json"


def process_rank() -> int:
    """This process's rank in a ``torchrun`` launch (0 for a single process), read before any process group."""
    return int(os.environ.get("RANK", "0"))


class Stage(abc.ABC):
    """One step of a multi-stage method: fingerprinted inputs -> an output folder with a manifest.

    Subclasses implement :meth:`inputs` (JSON-able) and :meth:`compute` (writes into
    :attr:`output_dir`, returns JSON-able outputs); callers use :meth:`run` (compute once) and
    :meth:`outputs` (the recorded outputs of a finished stage).

    Args:
        name: the stage's name in logs and manifests (``"fine-tune"``, ``"pseudo-label"``, ...).
        output_dir: the stage's folder.
        rank: this process's rank (default: from the ``RANK`` variable of a ``torchrun`` launch).
        owner: the rank that computes the stage (0; a method that shares work out, such as K folds
            over K processes, gives each stage its own); every other rank waits for its manifest.
        poll_seconds: how often a waiting rank looks at the manifest.
    """

    def __init__(self, name: str, output_dir: str | Path, rank: int | None = None, owner: int = 0,
                 poll_seconds: float = 10.0) -> None:
        self.name = str(name)
        self.output_dir = Path(output_dir)
        self.rank = process_rank() if rank is None else int(rank)
        self.owner = int(owner)
        self.poll_seconds = float(poll_seconds)
        self._outputs: dict[str, Any] | None = None

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def inputs(self) -> Mapping[str, Any]:
        """Everything the result depends on, JSON-able (settings, input fingerprints)."""

    @abc.abstractmethod
    def compute(self) -> Mapping[str, Any]:
        """Do the work into :attr:`output_dir` (reusing what a killed run left there); the outputs."""

    # ------------------------------------------------------------------ provided
    @property
    def manifest_path(self) -> Path:
        return self.output_dir / MANIFEST

    def fingerprint(self) -> str:
        return fingerprint({"stage": self.name, "inputs": self.inputs()})

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_done(self) -> bool:
        manifest = self.read_manifest()
        return bool(manifest and manifest.get("status") == "done" and manifest.get("fingerprint") == self.fingerprint())

    def outputs(self) -> dict[str, Any]:
        """The outputs of the finished stage (runs it first if it has not run)."""
        return dict(self.run())

    def run(self) -> dict[str, Any]:
        """Compute the stage unless its manifest says it is done with these inputs; its outputs."""
        if self._outputs is not None:
            return dict(self._outputs)
        expected = self.fingerprint()
        manifest = self.read_manifest()
        if manifest and manifest.get("status") == "done" and manifest.get("fingerprint") == expected:
            print(f"stage {self.name}: done ({self.output_dir})", flush=True)
        elif self.rank != self.owner:
            manifest = self._wait_for(expected)
        else:
            manifest = self._compute(expected, manifest)
        self._outputs = dict(manifest["outputs"])
        return dict(self._outputs)

    def _compute(self, expected: str, manifest: Mapping[str, Any] | None) -> dict[str, Any]:
        if manifest is not None and manifest.get("fingerprint") != expected:
            aside = self._move_aside()
            print(f"stage {self.name}: {self.output_dir} held the work of other inputs; moved to {aside}, "
                  "starting afresh", flush=True)
        elif manifest is not None:
            print(f"stage {self.name}: resuming in {self.output_dir}", flush=True)
        elif self.output_dir.exists() and any(self.output_dir.iterdir()):
            print(f"stage {self.name}: resuming in {self.output_dir} (files of an earlier run are reused where "
                  "their own fingerprints match)", flush=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        running = {"stage": self.name, "status": "running", "fingerprint": expected, "inputs": self.inputs(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(self.manifest_path, running)
        started = time.monotonic()
        outputs = dict(self.compute())
        done = {**running, "status": "done", "outputs": outputs, "seconds": round(time.monotonic() - started, 1)}
        atomic_write_json(self.manifest_path, done)
        print(f"stage {self.name}: done in {done['seconds']:.0f} s ({self.output_dir})", flush=True)
        return done

    def _move_aside(self) -> Path:
        n = 1
        while (aside := self.output_dir.with_name(f"{self.output_dir.name}.replaced-{n}")).exists():
            n += 1
        self.output_dir.rename(aside)
        return aside

    def _wait_for(self, expected: str) -> dict[str, Any]:
        print(f"stage {self.name}: waiting for process {self.owner} to finish {self.output_dir}", flush=True)
        while True:
            manifest = self.read_manifest()
            if manifest and manifest.get("status") == "done" and manifest.get("fingerprint") == expected:
                return manifest
            time.sleep(self.poll_seconds)


class FunctionStage(Stage):
    """A stage from two functions: ``inputs() -> dict`` and ``compute(output_dir) -> dict``."""

    def __init__(self, name: str, output_dir: str | Path, inputs: Callable[[], Mapping[str, Any]],
                 compute: Callable[[Path], Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(name, output_dir, **kwargs)
        self._inputs_fn = inputs
        self._compute_fn = compute

    def inputs(self) -> Mapping[str, Any]:
        return self._inputs_fn()

    def compute(self) -> Mapping[str, Any]:
        return self._compute_fn(self.output_dir)


class Step:
    """A named step of a method that is not one stage folder: a group of stages, or an in-memory step.

    What a bundle's ``"stages"`` list holds besides :class:`Stage` objects and engines, e.g. FSL's
    rounds of fold stages or the assembly of a fold ensemble.
    """

    def __init__(self, name: str, run: Callable[[], Any]) -> None:
        self.name = str(name)
        self._run = run

    def run(self) -> Any:
        return self._run()

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def run_stages(stages: Sequence[Any]) -> list[Any]:
    """Run ``stages`` in order; their results. ``None`` entries (a step a setting turns off) are skipped.

    Anything with a ``run()`` method is a step: a :class:`Stage`, a group of stages (SFR's rounds),
    or the engine that ends the list (the re-training). The random state flows from one step to the
    next as it did when the steps were called one after the other: a bundle seeds it once, before
    the list (``monai.utils.set_determinism``), and resuming is exact because every engine's
    checkpoint carries its own random state.
    """
    results = []
    for stage in stages:
        if stage is None:
            continue
        if not callable(getattr(stage, "run", None)):
            raise TypeError(f"a stage needs a run() method, got {type(stage).__name__}: {stage!r}")
        results.append(stage.run())
    return results
