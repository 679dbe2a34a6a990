"""Which floating-point precision a run's forward passes use, decided once, from one ``amp`` switch.

MONAI's engines autocast only on CUDA (``torch.autocast("cuda")``), so ``amp: true`` did nothing on
a CPU, yet CPUs with native bfloat16 (AVX512-BF16, AMX) run a V-Net training step about twice as
fast under ``torch.autocast("cpu", dtype=torch.bfloat16)``. Every bundle's trainer and evaluator
takes the same ``amp`` value and asks :func:`resolve_precision` what it means on their device:

============  ======================================================================================
``"auto"``    CUDA: float16 autocast with a ``GradScaler``; CPU: bfloat16 autocast when the CPU has
              native bfloat16, else float32 (the log line says why); any other device: float32
``True``      as ``"auto"`` (mixed precision where the device does it natively; CUDA as before)
``"bf16"``    bfloat16 autocast on any device, no ``GradScaler`` (bfloat16 has float32's range);
              on a CPU without native bfloat16 it is emulated (slow), and the log line says so
``"fp16"``    float16 autocast with a ``GradScaler``: CUDA only
``False``     float32 everywhere (also ``"fp32"``): the setting the recorded loss traces use
============  ======================================================================================

Only forward passes run under autocast. Networks' outputs are cast back to float32
(:func:`to_float32`) before a loss, a metric or a post-processing transform reads them, while
parameters, gradients, optimiser state, the EMA teacher's weights and BatchNorm statistics stay
float32 (autocast never changes a parameter's dtype).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Union

import torch

from samssl.utils.cpu import cpu_flags as _cpuinfo_flags
from samssl.utils.errors import InvalidInputError

__all__ = [
    "AMP_SETTINGS",
    "AmpSetting",
    "Precision",
    "announce_precision",
    "cpu_bf16_support",
    "resolve_precision",
    "to_float32",
]

AmpSetting = Union[bool, str, None]
#: The values the ``amp`` switch takes (``None`` means ``False``).
AMP_SETTINGS = ("auto", True, False, "bf16", "fp16", "fp32")
_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_logger = logging.getLogger(__name__)
_announced: set[tuple[str, str]] = set()


@dataclasses.dataclass(frozen=True)
class Precision:
    """The precision of a run's forward passes on one device type.

    Attributes:
        name: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device_type: ``"cpu"``, ``"cuda"``, ... (what ``torch.autocast`` takes).
        reason: why this precision, in words (the log line's second half).
    """

    name: str
    device_type: str
    reason: str

    @property
    def enabled(self) -> bool:
        """Whether forward passes autocast (MONAI's boolean ``amp``)."""
        return self.name != "fp32"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, ``None`` for float32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def uses_grad_scaler(self) -> bool:
        """float16's narrow range needs loss scaling; bfloat16 has float32's exponent and does not."""
        return self.name == "fp16"

    def autocast(self, **amp_kwargs: Any) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for this precision (``amp_kwargs`` passed on), or a no-op for float32."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, **{"dtype": self.dtype, **amp_kwargs})

    def describe(self, what: str = "run") -> str:
        """The one log line: which precision and why."""
        names = {"fp32": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast + GradScaler"}
        return f"precision of this {what} on {self.device_type}: {names[self.name]} ({self.reason})"


@lru_cache(maxsize=1)
def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and how that was found out.

    torch's oneDNN check comes first (it tests the instruction sets torch itself would use); on a
    torch build without oneDNN, the kernel's cpuinfo flags (Linux, ``samssl.utils.cpu``) are read instead.
    """
    try:
        if torch.backends.mkldnn.is_available():
            supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            return supported, "oneDNN reports native bfloat16" if supported else "oneDNN reports no native bfloat16"
    except (AttributeError, RuntimeError):  # an older or a stripped-down torch build
        pass
    flags = _cpuinfo_flags()
    if flags is None:
        return False, "cannot tell: no oneDNN in this torch build and no CPU description (cpuinfo)"
    found = [flag for flag in _CPU_FLAGS if flag in flags]
    if found:
        return True, f"CPU flag {found[0]}"
    return False, f"the CPU has none of the flags {', '.join(_CPU_FLAGS)}"


def _device_type(device: str | torch.device | None) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


def resolve_precision(amp: AmpSetting, device: str | torch.device | None) -> Precision:
    """What the ``amp`` switch (see the module docstring) means on ``device``.

    Raises:
        InvalidInputError: for a value that is not one of :data:`AMP_SETTINGS`, or ``"fp16"`` off CUDA.
    """
    device_type = _device_type(device)
    setting = _normalised(amp)
    if setting == "fp32":
        return Precision("fp32", device_type, "amp is off")
    if setting == "fp16":
        if device_type != "cuda":
            raise InvalidInputError(
                f"amp 'fp16' needs a CUDA device, this run uses {device_type}: set amp to 'auto' (bfloat16 where the "
                "CPU supports it) or False."
            )
        return Precision("fp16", device_type, "amp 'fp16'")
    if setting == "bf16":
        if device_type == "cpu" and not cpu_bf16_support()[0]:
            return Precision("bf16", device_type, f"amp 'bf16'; emulated, likely slower than float32: "
                                                  f"{cpu_bf16_support()[1]}")
        return Precision("bf16", device_type, "amp 'bf16'")
    # "auto" (and True): mixed precision where the device does it natively
    if device_type == "cuda":
        return Precision("fp16", device_type, f"amp {amp!r} on CUDA")
    if device_type == "cpu":
        supported, how = cpu_bf16_support()
        if supported:
            return Precision("bf16", device_type, f"amp {amp!r}: {how}")
        return Precision("fp32", device_type, f"amp {amp!r} falls back to float32: {how}")
    return Precision("fp32", device_type, f"amp {amp!r} falls back to float32: no mixed precision on {device_type}")


def _normalised(amp: AmpSetting) -> str:
    if amp is None or amp is False:
        return "fp32"
    if amp is True:
        return "auto"
    if isinstance(amp, str) and amp.strip().lower() in ("auto", "bf16", "fp16", "fp32"):
        return amp.strip().lower()
    hint = ""
    if isinstance(amp, str) and amp.strip().lower() in ("true", "false"):
        hint = (f" On the command line write --amp {amp.strip().lower() == 'true'} "
                "(capitalised: Python Fire parses only True/False as booleans).")
    raise InvalidInputError(f"amp is {amp!r}; choose one of 'auto', True, False, 'bf16', 'fp16', 'fp32'.{hint}")


def announce_precision(precision: Precision, logger: logging.Logger | None = None) -> None:
    """Log :meth:`Precision.describe` once per process and decision, so a run that builds a trainer
    and its validator (or several stages) says it in one line, not one per engine. The line speaks
    of the run, not of the engine that happened to be built first (a training run's validator is)."""
    key = (precision.name, precision.device_type)
    if key in _announced:
        return
    _announced.add(key)
    (logger or _logger).info(precision.describe())


def to_float32(output: Any) -> Any:
    """``output`` with every floating-point tensor (in tuples, lists, dicts and dataclasses, e.g. a
    dual-task ``(logits, sdf)``) cast to float32: what leaves an autocast forward pass for a loss."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a namedtuple
        return type(output)(*(to_float32(item) for item in output))
    if isinstance(output, (list, tuple)):
        return type(output)(to_float32(item) for item in output)
    if isinstance(output, Mapping):
        return type(output)({key: to_float32(value) for key, value in output.items()})  # type: ignore[call-arg]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return dataclasses.replace(output, **{f.name: to_float32(getattr(output, f.name))
                                              for f in dataclasses.fields(output) if f.init})
    return output
