"""Ramp schedules against their closed forms (UA-MT eq. 5, SemiSAM eq. 3)."""

from __future__ import annotations

import math

import pytest

from samssl.losses import (
    Constant,
    ExponentialRampDown,
    ExponentialRampUp,
    GaussianRampUp,
    LinearRamp,
    exponential_rampdown,
    exponential_rampup,
    gaussian_rampup,
    linear_rampup,
)

LENGTH = 200
# before the start, at t=0, inside, at t=1, past the end
ITERATIONS = [-5, 0, 1, 50, 100, 137, 199, 200, 201, 10_000]


def _t(iteration: int, length: int = LENGTH, start: int = 0) -> float:
    return min(max((iteration - start) / length, 0.0), 1.0)


CLOSED_FORMS = {
    GaussianRampUp: lambda t: math.exp(-5.0 * (1.0 - t) ** 2),
    ExponentialRampUp: lambda t: math.exp(-5.0 * (1.0 - t)),
    ExponentialRampDown: lambda t: math.exp(-5.0 * t),
    LinearRamp: lambda t: t,
}


@pytest.mark.parametrize("ramp_class", list(CLOSED_FORMS))
@pytest.mark.parametrize("iteration", ITERATIONS)
def test_ramp_matches_closed_form(ramp_class, iteration):
    ramp = ramp_class(max_value=0.1, length=LENGTH)
    assert ramp(iteration) == pytest.approx(0.1 * CLOSED_FORMS[ramp_class](_t(iteration)), rel=1e-12, abs=1e-15)


def test_ramp_end_points():
    assert GaussianRampUp(1.0, LENGTH)(0) == pytest.approx(math.exp(-5.0))
    assert GaussianRampUp(1.0, LENGTH)(LENGTH) == 1.0
    assert GaussianRampUp(1.0, LENGTH)(5 * LENGTH) == 1.0
    assert ExponentialRampUp(2.0, LENGTH)(0) == pytest.approx(2.0 * math.exp(-5.0))
    assert ExponentialRampDown(2.0, LENGTH)(0) == 2.0
    assert ExponentialRampDown(2.0, LENGTH)(LENGTH + 7) == pytest.approx(2.0 * math.exp(-5.0))
    assert LinearRamp(3.0, LENGTH)(LENGTH // 2) == pytest.approx(1.5)
    assert Constant(0.3)(0) == Constant(0.3)(10**6) == 0.3


def test_ramp_start_offsets_progress():
    ramp = GaussianRampUp(1.0, length=100, start=50)
    assert ramp(0) == ramp(50) == pytest.approx(math.exp(-5.0))
    assert ramp(100) == pytest.approx(math.exp(-5.0 * 0.25))
    assert ramp(150) == 1.0


@pytest.mark.parametrize(
    "function, shape",
    [
        (gaussian_rampup, CLOSED_FORMS[GaussianRampUp]),
        (exponential_rampup, CLOSED_FORMS[ExponentialRampUp]),
        (exponential_rampdown, CLOSED_FORMS[ExponentialRampDown]),
        (linear_rampup, CLOSED_FORMS[LinearRamp]),
    ],
)
def test_plain_functions_are_unit_height_shapes(function, shape):
    for current in ITERATIONS:
        assert function(current, LENGTH) == pytest.approx(shape(_t(current)), rel=1e-12, abs=1e-15)


def test_zero_length_ramp_is_at_its_end_and_negative_length_is_rejected():
    assert gaussian_rampup(0, 0) == 1.0
    assert GaussianRampUp(0.5, 0)(0) == 0.5
    assert ExponentialRampDown(0.5, 0)(3) == pytest.approx(0.5 * math.exp(-5.0))
    with pytest.raises(ValueError, match="length"):
        GaussianRampUp(1.0, -1)
