"""The project's answer to a user's mistake: one exception family, and one clear last line.

A bundle is run through ``python -m monai.bundle run ...``. MONAI evaluates every config
expression and builds every component inside ``try``/``except`` blocks that re-raise as
``RuntimeError("Failed to evaluate ConfigExpression ...")``, so an error that names the user's
mistake ends up in the middle of a 60-100 line traceback whose last line is MONAI's wrapper.

Errors about what the user gave (a folder, a file, a value, a key, a checkpoint) are raised as
:class:`BundleInputError` subclasses. :func:`install_concise_errors` (called by the first step of
each bundle command, :func:`samssl.utils.config_checks.check_command_line`)
installs a ``sys.excepthook`` that, when such an error is anywhere in the chain of an uncaught
exception, prints its message as the last line of the output (exit status 1) instead of the
traceback; ``SAMSSL_DEBUG=1`` keeps the full traceback. Any other exception (a bug) is printed in
full as usual.

The subclasses also derive from the built-in type a caller would catch (``ValueError``,
``FileNotFoundError``), so code and tests that catch those keep working.

Before printing, the hook lets the worker threads of any ``multiprocessing`` thread pool finish
the item they are working on (:func:`finish_pool_workers`). MONAI's ``CacheDataset`` fills its cache
with such a pool; when one case fails, the pool is terminated but its other workers are still
inside a transform (in torch's C++ code). Python then finalises with those daemon threads running,
and a thread that wakes up in C++ during finalisation is unwound by ``pthread_exit`` through a
``noexcept`` frame: the process aborts ("terminate called without an active exception", exit
status 134) after the message instead of ending with it.
"""

from __future__ import annotations

import multiprocessing.pool
import os
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import TypeVar

E = TypeVar("E", bound=BaseException)

__all__ = [
    "DEBUG_ENV",
    "BundleInputError",
    "InvalidInputError",
    "MissingInputError",
    "NonFiniteLossError",
    "UnknownKeyError",
    "debug_requested",
    "find_in_chain",
    "find_input_error",
    "finish_pool_workers",
    "install_concise_errors",
]

#: Environment variable that keeps full tracebacks for the project's own input errors.
DEBUG_ENV = "SAMSSL_DEBUG"
#: Longest wait (seconds) for thread-pool workers to finish their item before the process exits.
POOL_WORKER_GRACE_S = 60.0


def debug_requested() -> bool:
    """Whether the user asked for full tracebacks (``SAMSSL_DEBUG`` set to anything but ``0``)."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


class BundleInputError(Exception):
    """A mistake in what the user gave a bundle: reported as one line, not as a traceback."""


class InvalidInputError(BundleInputError, ValueError):
    """A value, file content, shape or layout that cannot be used as given."""


class MissingInputError(BundleInputError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class NonFiniteLossError(BundleInputError, FloatingPointError):
    """Training diverged (a NaN or infinite loss): a setting to change (learning rate) or inputs to check."""


class UnknownKeyError(BundleInputError, ValueError):
    """A config key (command-line override or preset) or a settings name that the bundle does not define."""


def find_in_chain(error: BaseException | None, kind: type[E]) -> E | None:
    """``error`` or the first exception of type ``kind`` in its cause/context chain (MONAI wraps what a config
    expression raises in ``RuntimeError``), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def find_input_error(error: BaseException | None) -> BundleInputError | None:
    """The first :class:`BundleInputError` in the cause/context chain of ``error``, if any."""
    return find_in_chain(error, BundleInputError)


def _busy_pool_workers() -> list[threading.Thread]:
    """Threads of ``multiprocessing`` thread pools that are inside a task (not waiting for one)."""
    frames = sys._current_frames()
    return [
        thread
        for thread in threading.enumerate()
        if getattr(thread, "_target", None) is multiprocessing.pool.worker
        and (frame := frames.get(thread.ident)) is not None
        and frame.f_code is not multiprocessing.pool.worker.__code__  # deeper than the worker loop: busy
    ]


def finish_pool_workers(timeout: float = POOL_WORKER_GRACE_S) -> None:
    """Wait (at most ``timeout`` seconds) until no ``multiprocessing`` thread-pool worker is inside a task.

    A terminated pool's workers exit after their current item; waiting for that keeps a failed run
    from aborting at interpreter exit (see the module docstring). An idle worker of a pool still in
    use waits in C for its next task, harmless at exit, and is not waited for; nor is any other thread.
    """
    deadline = time.monotonic() + timeout
    while _busy_pool_workers() and time.monotonic() < deadline:
        time.sleep(0.02)


def _concise_hook(previous):
    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        finish_pool_workers()
        cause = find_input_error(error)
        if cause is None or debug_requested():
            previous(kind, error, tb)
            return
        where = traceback.extract_tb(cause.__traceback__)[-1:] if cause.__traceback__ else []
        origin = f" (raised in {os.path.basename(where[0].filename)}:{where[0].lineno})" if where else ""
        print(f"[{DEBUG_ENV}=1 shows the full traceback{origin}]", file=sys.stderr)
        print(f"error: {cause}", file=sys.stderr)

    hook.samssl_concise = True  # type: ignore[attr-defined]
    return hook


def install_concise_errors() -> None:
    """Make an uncaught :class:`BundleInputError` end the output as one line (idempotent)."""
    if not getattr(sys.excepthook, "samssl_concise", False):
        sys.excepthook = _concise_hook(sys.excepthook)
