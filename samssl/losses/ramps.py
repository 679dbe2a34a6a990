"""Loss-weight schedules driven by the training iteration.

Semi-supervised methods switch their unsupervised terms on gradually: early in training the
student and the teacher are both poor, so a full-strength consistency (or pseudo-label) term would
reinforce noise. Each schedule here is a small callable ``ramp(iteration) -> float`` so that an
engine can ask for the weight of the current iteration and a MONAI bundle config can build one
with ``{"_target_": "samssl.losses.GaussianRampUp", "max_value": 0.1, "length": 6000}``.

With ``t = clip((iteration - start) / length, 0, 1)``:

=========================  ===============================  =========================================
schedule                   weight                           used by
=========================  ===============================  =========================================
``GaussianRampUp``         ``max * exp(-5 (1 - t)^2)``      Laine & Aila 2017; UA-MT eq. 5 ("sigmoid
                                                            ramp-up" in their code)
``ExponentialRampUp``      ``max * exp(-5 (1 - t))``        SemiSAM eq. 3, the MT consistency weight
``ExponentialRampDown``    ``max * exp(-5 t)``              SemiSAM, the SAM-target weight
``LinearRamp``             ``max * t``
``Constant``               ``max``
=========================  ===============================  =========================================

The plain functions (``gaussian_rampup(current, length)`` ...) return the unit-height shape, as the
reference implementations do. A ramp of length 0 is already at its end (``t = 1``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

__all__ = [
    "ramp_progress",
    "gaussian_rampup",
    "exponential_rampup",
    "exponential_rampdown",
    "linear_rampup",
    "Ramp",
    "GaussianRampUp",
    "ExponentialRampUp",
    "ExponentialRampDown",
    "LinearRamp",
    "Constant",
]


def ramp_progress(current: float, length: float, start: float = 0.0) -> float:
    """Fraction ``t`` in [0, 1] of the ramp completed at ``current``; 1 for a zero-length ramp."""
    if length < 0:
        raise ValueError(f"a ramp length must be >= 0, got {length}.")
    if length == 0:
        return 1.0
    return min(max((current - start) / length, 0.0), 1.0)


def gaussian_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)``: the "sigmoid-shaped" ramp-up of Laine & Aila and UA-MT."""
    return math.exp(-5.0 * (1.0 - ramp_progress(current, length)) ** 2)


def exponential_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t))``: SemiSAM's ramp-up of the mean-teacher consistency weight."""
    return math.exp(-5.0 * (1.0 - ramp_progress(current, length)))


def exponential_rampdown(current: float, length: float) -> float:
    """``exp(-5 t)``: SemiSAM's ramp-down of the SAM-assisted consistency weight."""
    return math.exp(-5.0 * ramp_progress(current, length))


def linear_rampup(current: float, length: float) -> float:
    """``t``: a straight line from 0 to 1."""
    return ramp_progress(current, length)


class Ramp(ABC):
    """A weight schedule ``max_value * shape(t)`` over ``length`` iterations starting at ``start``.

    Args:
        max_value: the weight at the end of the ramp (``shape(1) = 1``).
        length: number of iterations the ramp lasts; past it the weight stays at its end value.
        start: the iteration at which the ramp begins; before it the weight stays at its start value.
    """

    def __init__(self, max_value: float, length: int, start: int = 0) -> None:
        if length < 0:
            raise ValueError(f"{type(self).__name__}: length must be >= 0 iterations, got {length}.")
        self.max_value = float(max_value)
        self.length = int(length)
        self.start = int(start)

    @staticmethod
    @abstractmethod
    def shape(t: float) -> float:
        """Unit-height weight at progress ``t`` in [0, 1]."""

    def __call__(self, iteration: int) -> float:
        return self.max_value * self.shape(ramp_progress(iteration, self.length, self.start))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_value={self.max_value}, length={self.length}, start={self.start})"


class GaussianRampUp(Ramp):
    """``max_value * exp(-5 (1 - t)^2)`` (UA-MT's consistency weight, eq. 5)."""

    @staticmethod
    def shape(t: float) -> float:
        return math.exp(-5.0 * (1.0 - t) ** 2)


class ExponentialRampUp(Ramp):
    """``max_value * exp(-5 (1 - t))`` (SemiSAM's lambda_c, eq. 3)."""

    @staticmethod
    def shape(t: float) -> float:
        return math.exp(-5.0 * (1.0 - t))


class ExponentialRampDown(Ramp):
    """``max_value * exp(-5 t)`` (SemiSAM's lambda_s: trust the SAM target early, less later)."""

    @staticmethod
    def shape(t: float) -> float:
        return math.exp(-5.0 * t)


class LinearRamp(Ramp):
    """``max_value * t``: from 0 to ``max_value`` in a straight line."""

    @staticmethod
    def shape(t: float) -> float:
        return t


class Constant(Ramp):
    """``max_value`` at every iteration (no ramp), for ablations and fixed-weight methods."""

    def __init__(self, max_value: float, length: int = 0, start: int = 0) -> None:
        super().__init__(max_value, length, start)

    @staticmethod
    def shape(t: float) -> float:
        return 1.0
