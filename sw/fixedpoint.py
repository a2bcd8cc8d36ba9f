"""The integer rules of pwlnet: rounding, saturation and widths.

Every rule the hardware must match is written here once; the quantizer, the golden
model, the host driver and the hardware generators call these functions (or, for the
hardware, implement exactly what their docstrings say and are tested against them).

All values are numpy ``int64`` (or Python ``int``); widths are in bits of a signed
two's-complement word unless a name says ``unsigned``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MIN_BITS", "MAX_BITS", "check_bits", "signed_range", "saturate", "wraps",
    "round_shift", "round_half_up", "signed_width", "accumulator_bits",
    "requantize", "GOLDEN_MAX_BITS",
]

#: Allowed widths of weights and activations.
MIN_BITS, MAX_BITS = 2, 16
#: The golden model computes in int64; intermediate values must stay below this width.
GOLDEN_MAX_BITS = 62


def check_bits(bits, what="width"):
    """Return ``bits`` as an int, or raise ``ValueError`` naming the allowed range."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, not {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be between {MIN_BITS} and {MAX_BITS} bits, not {bits}")
    return int(bits)


def signed_range(bits):
    """``(lo, hi)`` of a signed ``bits``-wide word: ``(-2**(bits-1), 2**(bits-1) - 1)``."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def saturate(v, bits):
    """Clamp ``v`` into a signed ``bits``-wide word (never wrap)."""
    lo, hi = signed_range(bits)
    return np.clip(np.asarray(v, dtype=np.int64), lo, hi)


def wraps(v, bits):
    """True where ``v`` does not fit a signed ``bits``-wide word."""
    lo, hi = signed_range(bits)
    v = np.asarray(v, dtype=np.int64)
    return (v < lo) | (v > hi)


def round_shift(v, shift):
    """Divide by ``2**shift`` and round to nearest, ties toward +infinity.

    ``(v + 2**(shift-1)) >> shift`` with an arithmetic (flooring) shift; ``shift == 0``
    returns ``v`` unchanged.  ``shift`` may be an array (per output channel), each
    element ``0 <= shift <= 62``.  In hardware this is one adder and a wire selection.
    """
    v = np.asarray(v, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift < 0) or np.any(shift > GOLDEN_MAX_BITS):
        raise ValueError(f"shift must be in 0..{GOLDEN_MAX_BITS}, not {shift}")
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return np.right_shift(v + half, shift)


def round_half_up(x):
    """Round float(s) to the nearest integer, ties toward +infinity: ``floor(x + 0.5)``.

    The one float-to-integer rule of pwlnet (input quantization on the host, weight and
    bias quantization in the compiler).  Returns int64.
    """
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def signed_width(lo, hi):
    """Smallest signed width that holds every integer in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def accumulator_bits(weight, bias, act_bits):
    """Accumulator width of a dense layer such that overflow is impossible.

    The bound is taken over every possible input vector of ``act_bits``-wide codes:
    ``sum_i |W[o, i]| * 2**(act_bits-1) + |b[o]|``, maximised over output channels.  It is
    never larger than the fan-in bound ``n_in * 2**(wb-1) * 2**(ab-1) + |b|``.
    """
    weight = np.asarray(weight, dtype=np.int64)
    bias = np.asarray(bias, dtype=np.int64)
    if bias.size == 0:
        return 1
    # |x_i| <= 2**(act_bits-1) for every code, so |W x| <= 2**(act_bits-1) * sum|W|.
    reach = np.abs(weight).sum(axis=1) << (act_bits - 1)
    hi = int(np.max(reach + bias))
    lo = int(np.min(bias - reach))
    return signed_width(lo, hi)


def requantize(acc, multiplier, shift, out_bits):
    """Requantize accumulators to ``out_bits``-wide codes.

    ``saturate(round_shift(acc * multiplier, shift), out_bits)``, per output channel
    (``multiplier`` and ``shift`` broadcast over the last axis of ``acc``).  With
    ``multiplier == 1`` this is a pure rounding shift.
    """
    acc = np.asarray(acc, dtype=np.int64)
    return saturate(round_shift(acc * np.asarray(multiplier, dtype=np.int64), shift), out_bits)
