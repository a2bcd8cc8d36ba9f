"""The integer rules, checked against exact rational arithmetic."""

from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pwlnet import fixedpoint as fx


@given(st.integers(-2**40, 2**40), st.integers(0, 20))
def test_round_shift_is_round_half_up_of_the_exact_quotient(v, s):
    exact = Fraction(v, 2**s)
    assert int(fx.round_shift(v, s)) == math.floor(exact + Fraction(1, 2))


def test_round_shift_ties_go_up():
    assert fx.round_shift(np.array([5, -5, 7, -7, 6]), 1).tolist() == [3, -2, 4, -3, 3]


def test_round_shift_rejects_negative_shift():
    with pytest.raises(ValueError, match="shift must be in 0..62"):
        fx.round_shift(4, -1)


@given(st.floats(-1e9, 1e9, allow_nan=False))
def test_round_half_up_of_floats(x):
    r = int(fx.round_half_up(x))
    assert r - 0.5 <= x < r + 0.5


@given(st.integers(-2**20, 2**20), st.integers(2, 16))
def test_saturate_clamps_and_never_wraps(v, bits):
    lo, hi = fx.signed_range(bits)
    out = int(fx.saturate(v, bits))
    assert out == min(max(v, lo), hi)
    assert not fx.wraps(out, bits)


@given(st.integers(-2**30, 2**30), st.integers(-2**30, 2**30))
def test_signed_width_is_minimal(a, b):
    lo, hi = min(a, b), max(a, b)
    w = fx.signed_width(lo, hi)
    assert not fx.wraps(np.array([lo, hi]), w).any()
    if w > 1:
        assert fx.wraps(np.array([lo, hi]), w - 1).any()


@pytest.mark.parametrize("bits, message", [
    (1, "weight bits must be between 2 and 16 bits, not 1"),
    (17, "weight bits must be between 2 and 16 bits, not 17"),
])
def test_check_bits_names_the_range(bits, message):
    with pytest.raises(ValueError, match=message):
        fx.check_bits(bits, "weight bits")


def test_check_bits_type():
    with pytest.raises(TypeError, match="must be an integer, not 8.0"):
        fx.check_bits(8.0)


@given(st.integers(2, 12), st.integers(2, 12), st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_accumulator_bound_holds_for_worst_case_inputs(wb, ab, n_in, seed):
    rng = np.random.default_rng(seed)
    wlo, whi = fx.signed_range(wb)
    w = rng.integers(wlo, whi + 1, size=(3, n_in))
    b = rng.integers(-2**12, 2**12, size=3)
    bits = fx.accumulator_bits(w, b, ab)
    alo, ahi = fx.signed_range(ab)
    # the two extreme input vectors for every channel
    worst_hi = np.where(w > 0, ahi, alo)
    worst_lo = np.where(w > 0, alo, ahi)
    acc = np.concatenate([(w * worst_hi).sum(1) + b, (w * worst_lo).sum(1) + b])
    assert not fx.wraps(acc, bits).any()
    # and the fan-in bound is never exceeded by the derived width
    fan_in_bound = n_in * 2 ** (wb - 1) * 2 ** (ab - 1) + int(np.abs(b).max())
    assert bits <= fx.signed_width(-fan_in_bound, fan_in_bound)
