"""Checkpoints that let a killed training run continue where it stopped.

MONAI's ``CheckpointSaver`` writes the files (``checkpoint_iteration=N.pt``, ``checkpoint_epoch=N.pt``,
``checkpoint_final_iteration=N.pt``); this module adds what a resumable bundle still needs:

* :func:`training_checkpoint_dict`: the ``save_dict`` that captures a run (engine state, network,
  optimiser, EMA teacher, LR scheduler), used both to save and to resume;
* :func:`latest_checkpoint` and :class:`ResumeFromLatest`: at ``Events.STARTED``, load the newest
  checkpoint of a folder if there is one, engine state included, so that the iteration and epoch
  counters, the ramps that depend on them, and the LR schedule carry on; so re-running the same
  command after a kill resumes, and a first run starts fresh;
* :class:`TrainingCheckpointer`: both in one handler for a bundle config, which cannot name the
  trainer inside the trainer's own handler list; it takes the engine when attached, and keeps the
  folder at the configured number of files across restarts;
* :func:`load_network_weights`: weights for evaluation or inference from any of these files;
* :class:`AtomicCheckpointSaver`: MONAI's ``CheckpointSaver`` whose files are written to a
  temporary name, flushed to disk and renamed into place, and whose older files are deleted only
  after the new one is complete: a kill or a full disk during a save leaves the previous
  checkpoint (and ``model.pt``) intact.

A checkpoint that does not fit the network (another architecture, another number of classes) is
reported with the file and the first mismatching keys, instead of torch's wall of key names.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from samssl.handlers.deployment import check_trained_settings
from samssl.handlers.engine_log import quiet_fresh_start_line
from samssl.networks.ema import EMATeacher, unwrap_model
from samssl.utils.errors import InvalidInputError, MissingInputError
from samssl.utils.files import fsync_folder

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
BaseSaveHandler, _ = optional_import(
    "ignite.handlers.checkpoint", IgniteInfo.OPT_IMPORT_VERSION, min_version, "BaseSaveHandler", as_type="base"
)
idist, _ = optional_import("ignite.distributed", IgniteInfo.OPT_IMPORT_VERSION, min_version)
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "read_checkpoint",
    "training_checkpoint_dict",
    "latest_checkpoint",
    "resumable_checkpoints",
    "ResumeFromLatest",
    "TrainingCheckpointer",
    "load_network_weights",
    "state_dict_mismatches",
]

# Interval and final files of monai.handlers.CheckpointSaver: "<prefix>_<name>_iteration=12.pt" etc.
# Key-metric files ("..._key_metric=0.91.pt", fixed names like "model.pt") are not resume points:
# they are often saved with the network only.
_RESUMABLE_NAME = re.compile(r"_(?P<kind>final_iteration|iteration|epoch)=(?P<number>\d+)\.pth?$")

_NETWORK_KEYS = ("network", "student", "model")

# The files TrainingCheckpointer's saver writes (no prefix): the ones it may prune.
_OWN_FILE = re.compile(r"^checkpoint_(?P<kind>final_iteration|iteration)=(?P<number>\d+)\.pt$")



class AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler that never leaves a half-written or missing checkpoint behind.

    A file is written as ``<name>.partial``, flushed and ``fsync``-ed, then renamed over ``<name>``
    (atomic on POSIX) and the folder entry synced. Ignite asks to remove the oldest file *before*
    writing a new one; here removals wait until the next file is safely in place, so a failed
    save (killed, out of disk) keeps every earlier file. Only rank 0 writes in a distributed run.

    Args:
        dirname: the folder (created if needed).
        filename: a fixed file name that replaces ignite's (e.g. ``model.pt``), or None.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename
        self._pending_removal: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != 0:
            return
        self.dirname.mkdir(parents=True, exist_ok=True)
        path = self.dirname / (self.filename or filename)
        partial = path.with_name(path.name + ".partial")
        try:
            with open(partial, "wb") as stream:
                torch.save(checkpoint, stream)
                stream.flush()
                os.fsync(stream.fileno())
        except BaseException as err:
            partial.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                message = f"no space left to write {path}; the previous checkpoints are intact."
                raise OSError(err.errno, message) from err
            raise
        os.replace(partial, path)
        fsync_folder(self.dirname)
        for old in self._pending_removal:
            if old != path.name:
                (self.dirname / old).unlink(missing_ok=True)
        self._pending_removal.clear()

    def remove(self, filename: str) -> None:
        if idist.get_rank() == 0:
            self._pending_removal.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` (same arguments, file names and behaviour) writing through
    :class:`AtomicDiskSaver`, so an interrupted save never destroys the previous file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed_name = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed_name)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the fix.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, truncated or not a PyTorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no checkpoint file at {path}.")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"{path} is empty (0 bytes): the save that wrote it was interrupted; use an older checkpoint.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise InvalidInputError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}): "
            "it is truncated or corrupt (a save interrupted by a kill or a full disk) or another kind of file; "
            "use an older checkpoint or train again."
        ) from err


def training_checkpoint_dict(
    trainer: Engine,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    teacher: EMATeacher | None = None,
    lr_scheduler: Any | None = None,
) -> dict[str, Any]:
    """The objects whose state makes a run resumable, for ``CheckpointSaver`` and ``ResumeFromLatest``.

    Keys: ``"trainer"`` (iteration, epoch, unlabelled-stream position), ``"model"`` (the network;
    the MONAI model-zoo key, so ``CheckpointLoader(load_dict={"model": net})`` and
    ``ckpt_export --key_in_ckpt model`` read these files too), ``"optimizer"``, and ``"teacher"`` /
    ``"lr_scheduler"`` when given.
    """
    save_dict: dict[str, Any] = {"trainer": trainer, "model": network, "optimizer": optimizer}
    if teacher is not None:
        save_dict["teacher"] = teacher
    if lr_scheduler is not None:
        save_dict["lr_scheduler"] = lr_scheduler
    return save_dict


def _progress(path: Path) -> tuple[str, int, bool] | None:
    """(kind, number, is_final) of a CheckpointSaver file name, or None for other files."""
    match = _RESUMABLE_NAME.search(path.name)
    if match is None:
        return None
    kind = "epoch" if match["kind"] == "epoch" else "iteration"
    return kind, int(match["number"]), match["kind"] == "final_iteration"


def resumable_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The resumable ``CheckpointSaver`` files of ``ckpt_dir``, newest first (empty if none).

    Among iteration-level files (``..._iteration=N.pt``, ``..._final_iteration=N.pt``) a larger ``N``
    is newer (the final file first where both hold the same iteration), and likewise among
    epoch-level files: the number, unlike the modification time, survives copying a run folder.
    The two kinds are interleaved by modification time.
    Key-metric and fixed-name files (``model.pt``) are not listed: they often hold the network only.
    """
    folder = Path(ckpt_dir)
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise InvalidInputError(f"checkpoint folder {folder} is a file, not a folder.")
    by_kind: dict[str, list[tuple[int, bool, float, Path]]] = {"iteration": [], "epoch": []}
    for path in folder.iterdir():
        progress = _progress(path)
        if progress is not None and path.is_file():
            kind, number, is_final = progress
            by_kind[kind].append((number, is_final, path.stat().st_mtime, path))
    iterations, epochs = (sorted(files, reverse=True) for files in by_kind.values())
    ordered: list[Path] = []
    while iterations or epochs:
        if not epochs or (iterations and iterations[0][2] >= epochs[0][2]):
            ordered.append(iterations.pop(0)[3])
        else:
            ordered.append(epochs.pop(0)[3])
    return ordered


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest resumable ``CheckpointSaver`` file in ``ckpt_dir`` (see :func:`resumable_checkpoints`)."""
    checkpoints = resumable_checkpoints(ckpt_dir)
    return checkpoints[0] if checkpoints else None


def state_dict_mismatches(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], strict: bool = True
) -> list[str]:
    """Human-readable differences between a module's state dict and a stored one (shapes always,
    missing/unexpected keys when ``strict``)."""
    problems = []
    if strict:
        problems += [f"missing {key!r}" for key in expected if key not in found]
        problems += [f"unexpected {key!r}" for key in found if key not in expected]
    for key, value in expected.items():
        stored = found.get(key)
        if isinstance(stored, torch.Tensor) and stored.shape != value.shape:
            problems.append(f"{key!r}: checkpoint {tuple(stored.shape)} vs network {tuple(value.shape)}")
    return problems


def _raise_if_unfit(path: Path, entry: str, module: nn.Module | EMATeacher, stored: Any, strict: bool) -> None:
    if not isinstance(stored, Mapping):
        raise InvalidInputError(f"{path}: entry {entry!r} is a {type(stored).__name__}, not a state dict.")
    target = module if isinstance(module, EMATeacher) else unwrap_model(module)
    problems = state_dict_mismatches(target.state_dict(), stored, strict=strict)
    if problems:
        raise InvalidInputError(
            f"{path}: the weights under {entry!r} do not fit {type(getattr(target, 'teacher', target)).__name__} "
            f"({len(problems)} mismatches, first: {'; '.join(problems[:5])}). "
            "Is this a checkpoint of a different model?"
        )


class ResumeFromLatest:
    """Handler: at ``Events.STARTED``, resume from the newest checkpoint in ``ckpt_dir``, if any.

    Args:
        ckpt_dir: the folder a ``CheckpointSaver`` of the same run writes to.
        load_dict: objects to restore, normally :func:`training_checkpoint_dict` (the one passed to
            the saver). If it does not contain the engine it is attached to, the engine's state is
            restored from the checkpoint's ``"trainer"`` entry anyway, so iterations continue.
        map_location: ``torch.load`` map location (CPU by default; parameters are then copied into
            the objects wherever they live).
        strict: require the stored and current state dicts to have the same keys.
        name: logger name; default the engine's logger.

    Semantics are those of ``monai.handlers.CheckpointLoader`` (the engine's ``max_epochs`` is kept, so
    a resumed run may be given more epochs); add it to ``train_handlers`` like any handler.
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        load_dict: Mapping[str, Any],
        map_location: Any = "cpu",
        strict: bool = True,
        name: str | None = None,
    ) -> None:
        if not load_dict:
            raise InvalidInputError("ResumeFromLatest needs the objects to restore (load_dict), got none.")
        self.ckpt_dir = Path(ckpt_dir)
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.strict = strict
        self._name = name
        self.logger = logging.getLogger(name)

    def attach(self, engine: Engine) -> None:
        if self._name is None:
            self.logger = engine.logger
        quiet_fresh_start_line(engine.logger)
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        path, checkpoint = self._newest_readable_checkpoint()
        if path is None:
            self.logger.info(f"no checkpoint in {self.ckpt_dir}, starting fresh")
            return
        to_load = dict(self.load_dict)
        if not any(obj is engine for obj in to_load.values()) and "trainer" in checkpoint:
            to_load["trainer"] = engine
        for entry, obj in to_load.items():
            if entry not in checkpoint:
                raise InvalidInputError(
                    f"{path} has no entry {entry!r} (it has {sorted(checkpoint)}): is this a checkpoint of a "
                    "different model or training setup?"
                )
            if isinstance(obj, (nn.Module, EMATeacher)):
                _raise_if_unfit(path, entry, obj, checkpoint[entry], self.strict)
        prior_max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load=to_load, checkpoint={k: checkpoint[k] for k in to_load}, strict=self.strict)
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise InvalidInputError(
                f"{path} was saved at epoch {engine.state.epoch}, beyond this run's max_epochs ({prior_max_epochs}); "
                "give the trainer more epochs to train further."
            )
        engine.state.max_epochs = prior_max_epochs
        self.logger.info(f"resumed from {path} at iteration {engine.state.iteration} (epoch {engine.state.epoch})")

    def _newest_readable_checkpoint(self) -> tuple[Path | None, Mapping[str, Any]]:
        """Newest checkpoint that loads; a file cut short by a kill while it was written is skipped."""
        for path in resumable_checkpoints(self.ckpt_dir):
            try:
                checkpoint = read_checkpoint(path, map_location=self.map_location)
            except ValueError as err:
                warnings.warn(f"skipping unreadable checkpoint {path} ({err}); trying an older one.", stacklevel=2)
                continue
            if not isinstance(checkpoint, Mapping):
                raise InvalidInputError(f"{path} does not hold a dict of states (got {type(checkpoint).__name__}).")
            return path, checkpoint
        return None, {}


class TrainingCheckpointer:
    """Save a resumable checkpoint every ``save_interval`` iterations and resume from the newest.

    One handler for a bundle's ``train_handlers``: when training starts it builds
    :func:`training_checkpoint_dict` with the engine itself, resumes like :class:`ResumeFromLatest`
    and saves through a MONAI ``CheckpointSaver`` (iteration level, plus
    ``checkpoint_final_iteration=N.pt`` when the run completes). Re-running the same command after a
    kill therefore continues the run; a completed run is not trained again.

    A checkpoint holds only what resuming needs: the teacher is left out when the trainer has none
    (``engine.teacher is None``: a SupOnly baseline, whose config still builds the EMA copy), since
    an unused copy of the initial weights would double the file for nothing.

    The folder keeps ``n_saved`` interval files and one final file, counted on disk after each save:
    ignite only knows the files its own process wrote, so without this a restarted run would keep
    every interval file of the earlier processes (786 MB each for UAMT). When the run completes, the
    interval file of its last iteration, a copy of the final file, is removed.

    No checkpoint is written when the run fails (``CheckpointSaver``'s ``save_final`` would): after a
    non-finite loss the BatchNorm statistics of that forward pass may already hold NaN, and such a
    file would become the newest resume point.

    Args:
        checkpoint_dir: folder of this run's checkpoints (created if needed).
        network, optimizer, teacher, lr_scheduler: the objects to save and restore.
        save_interval: iterations between checkpoints (> 0).
        n_saved: how many interval checkpoints to keep (``None``: all). Files are written atomically
            (:class:`AtomicCheckpointSaver`) and old ones deleted only after the new one is complete.
        resume: resume from the newest checkpoint in ``checkpoint_dir`` when training starts.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        teacher: EMATeacher | None = None,
        lr_scheduler: Any | None = None,
        save_interval: int = 100,
        n_saved: int | None = 2,
        resume: bool = True,
    ) -> None:
        if save_interval < 1:
            raise InvalidInputError(f"save_interval must be a positive number of iterations, got {save_interval}.")
        if n_saved is not None and n_saved < 1:
            raise InvalidInputError(f"n_saved must be a positive number of files or None (all), got {n_saved}.")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.network = network
        self.optimizer = optimizer
        self.teacher = teacher
        self.lr_scheduler = lr_scheduler
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.resume = resume
        self._saver: AtomicCheckpointSaver | None = None

    def attach(self, engine: Engine) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.checkpoint_dir.glob("*.partial"):  # a save that was killed half-way
            stale.unlink(missing_ok=True)
        quiet_fresh_start_line(engine.logger)
        # The save dict is built when training starts: a trainer sets its teacher after its handlers
        # are attached, and only then is it known whether the teacher is used.
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), self._save_interval)
        # CheckpointSaver.attach would also save on EXCEPTION_RAISED (see the class docstring).
        engine.add_event_handler(Events.COMPLETED, self._save_final)

    def save_dict(self, engine: Engine) -> dict[str, Any]:
        """What a checkpoint of ``engine`` holds (:func:`training_checkpoint_dict`, the unused teacher left out)."""
        teacher = self.teacher
        if teacher is not None and hasattr(engine, "teacher") and engine.teacher is None:
            teacher = None
        return training_checkpoint_dict(engine, self.network, self.optimizer, teacher, self.lr_scheduler)

    def _start(self, engine: Engine) -> None:
        save_dict = self.save_dict(engine)
        if self.resume:
            resume = ResumeFromLatest(self.checkpoint_dir, save_dict)
            resume.logger = engine.logger
            resume(engine)
        self._saver = AtomicCheckpointSaver(
            str(self.checkpoint_dir),
            save_dict,
            save_final=True,
            save_interval=self.save_interval,
            epoch_level=False,
            n_saved=self.n_saved,
        )
        self._saver.logger = engine.logger

    def _save_interval(self, engine: Engine) -> None:
        assert self._saver is not None, "TrainingCheckpointer saves after Events.STARTED"
        self._saver.interval_completed(engine)
        if self.n_saved is not None:
            self._prune(final=False, keep=self.n_saved)

    def _save_final(self, engine: Engine) -> None:
        assert self._saver is not None, "TrainingCheckpointer saves after Events.STARTED"
        self._saver.completed(engine)
        self._prune(final=True, keep=1)
        # the interval file of the last iteration holds what the final file holds: one copy is enough
        final = self.checkpoint_dir / f"checkpoint_final_iteration={engine.state.iteration}.pt"
        if idist.get_rank() == 0 and final.is_file():
            (self.checkpoint_dir / f"checkpoint_iteration={engine.state.iteration}.pt").unlink(missing_ok=True)

    def _prune(self, final: bool, keep: int) -> None:
        """Delete this checkpointer's interval (or final) files beyond the ``keep`` newest, by iteration.

        An older final file is the end of an earlier, shorter run of the same training, superseded
        once the run was given more iterations and completed again.
        """
        if idist.get_rank() != 0:
            return
        files = []
        for path in self.checkpoint_dir.iterdir():
            match = _OWN_FILE.match(path.name)
            if match is not None and (match["kind"] == "final_iteration") == final:
                files.append((int(match["number"]), path))
        for _, path in sorted(files, reverse=True)[keep:]:
            path.unlink(missing_ok=True)


def load_network_weights(
    network: nn.Module,
    path: str | Path,
    key: str | None = None,
    strict: bool = True,
    ignore_prefixes: tuple[str, ...] | list[str] = (),
    expected_settings: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Load weights into ``network`` from a plain state dict or a training checkpoint.

    Args:
        network: the module to fill (wrappers such as DDP are looked through).
        path: a ``.pt``/``.pth`` file holding a state dict, or a dict with the weights under ``key``.
        key: the entry to read; default: the first of "network", "student", "model" present
            (pass "teacher" for the EMA teacher of a mean-teacher run).
        strict: require the same keys (shapes must always match).
        ignore_prefixes: stored keys to drop before loading, e.g. ``("fcn_head.",)`` for a
            training-only head that the deployed network does not have; the rest stays strict.
        expected_settings: config id -> the value the caller uses (input size, spacing, ...):
            refused when the model records another value for it
            (:func:`samssl.handlers.deployment.check_trained_settings`).

    Returns:
        ``network``, with the weights loaded (``weights_only=True``: no code is run from the file).
    """
    path = Path(path)
    if not path.is_file() and path.name == "model.pt" and path.parent.name == "models":
        train = path.parent.parent / "configs" / "train.json"
        raise MissingInputError(
            f"no model at {path}: no weights ship with this bundle, train it first (python -m monai.bundle run "
            f"training --config_file {train}) or pass --checkpoint FILE"
        )
    check_trained_settings(path, expected_settings)
    stored = read_checkpoint(path)
    if not isinstance(stored, Mapping):
        raise InvalidInputError(f"{path} does not hold a state dict (got {type(stored).__name__}).")
    if key is not None:
        if key not in stored:
            raise InvalidInputError(f"{path} has no entry {key!r}; it has {sorted(stored)}.")
        state, entry = stored[key], key
    elif stored and all(isinstance(v, torch.Tensor) for v in stored.values()):
        state, entry = stored, "<state dict>"
    else:
        entry = next((k for k in _NETWORK_KEYS if k in stored), None)
        if entry is None:
            raise InvalidInputError(
                f"{path} is neither a state dict nor a checkpoint with one of {list(_NETWORK_KEYS)} "
                f"(it has {sorted(stored)}); pass key=... to choose an entry."
            )
        state = stored[entry]
    target = unwrap_model(network)
    if isinstance(state, Mapping) and state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from a DDP/DataParallel wrapper
    if ignore_prefixes and isinstance(state, Mapping):
        state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore_prefixes))}
    _raise_if_unfit(path, entry, target, state, strict)
    target.load_state_dict(state, strict=strict)
    return network
