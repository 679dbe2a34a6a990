"""MONAI's ``SupervisedEvaluator`` with the project's ``amp`` switch, so validation and inference
run their forward pass in the same precision as training, on a CPU too.

MONAI's evaluator autocasts only with ``torch.autocast("cuda")``; here the inferer is wrapped
(:class:`PrecisionInferer`) so the forward pass autocasts on the run's device in the precision
:func:`~samssl.engines.precision.resolve_precision` chose, and the prediction leaves it in float32:
post-processing, metrics and writers see what they saw before.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines import SupervisedEvaluator as MonaiSupervisedEvaluator
from monai.inferers import Inferer, SimpleInferer

from samssl.engines.precision import AmpSetting, Precision, announce_precision, resolve_precision, to_float32

__all__ = ["PrecisionInferer", "SupervisedEvaluator"]


class PrecisionInferer(Inferer):
    """``inferer`` run under autocast in ``precision``; its output is cast to float32."""

    def __init__(self, inferer: Inferer, precision: Precision, amp_kwargs: dict | None = None) -> None:
        super().__init__()
        self.inferer = inferer
        self.precision = precision
        self.amp_kwargs = dict(amp_kwargs or {})

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        with self.precision.autocast(**self.amp_kwargs):
            output = self.inferer(inputs, network, *args, **kwargs)
        return to_float32(output)

    def __getattr__(self, name: str) -> Any:
        """The wrapped inferer's settings (``roi_size``, ``overlap``, ...) read through the wrapper."""
        if name == "inferer":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inferer, name)


class SupervisedEvaluator(MonaiSupervisedEvaluator):
    """``monai.engines.SupervisedEvaluator`` whose ``amp`` is the project's switch
    (``"auto"``, ``True``, ``False``, ``"bf16"``, ``"fp16"``; :mod:`samssl.engines.precision`).

    Every other argument is MONAI's. ``self.precision`` says what was chosen; one log line says it.
    """

    def __init__(self, device: torch.device | str, *args: Any, amp: AmpSetting = False,
                 inferer: Inferer | None = None, amp_kwargs: dict | None = None, **kwargs: Any) -> None:
        self.precision = resolve_precision(amp, device)
        announce_precision(self.precision)
        wrapped = PrecisionInferer(SimpleInferer() if inferer is None else inferer, self.precision, amp_kwargs)
        # MONAI's own amp path autocasts on CUDA only; the wrapped inferer does it on every device
        super().__init__(device, *args, inferer=wrapped, amp=False, amp_kwargs=amp_kwargs, **kwargs)
