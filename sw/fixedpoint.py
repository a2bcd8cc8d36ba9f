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
    "requantize", "GOLDEN_MAX_BITS", "lerp",
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


def lerp(codes, table, index_bits, bits):
    """The LERP activation: per-channel linear interpolation in an integer table.

    Parameters
    ----------
    codes : array_like of int, shape (..., C)
        Pre-activation codes, signed ``bits``-wide (the requantized accumulators).
    table : array_like of int, shape (C, 2**index_bits + 1)
        Per-channel table of output codes, each a signed ``bits``-wide value.
    index_bits : int
        ``k``, ``0 <= k <= bits``: the segment index width.  The fraction has
        ``f = bits - k`` bits.
    bits : int
        Width of the pre-activation codes and of the output codes.

    Returns
    -------
    numpy.ndarray of int64, shape (..., C)

    Notes
    -----
    With ``u = code + 2**(bits-1)`` (the code as an unsigned offset, ``0 .. 2**bits - 1``),
    ``i = u >> f`` (the top ``k`` bits) and ``r = u & (2**f - 1)`` (the low ``f`` bits)::

        out = saturate(T[i] + round_shift((T[i+1] - T[i]) * r, f), bits)

    i.e. ``T[i] + (T[i+1] - T[i]) * r / 2**f`` rounded to nearest, ties toward
    +infinity.  Because ``0 <= r < 2**f`` the result always lies between ``T[i]`` and
    ``T[i+1]``, so the saturation never acts (it is kept to state the width, and the
    hardware may leave it out); a monotone table gives a monotone function of the
    code.  The entry ``T[2**k]`` is reached only through interpolation: the largest
    code is one fraction step below it.  Widths in hardware: the difference has
    ``bits + 1`` bits, the product ``bits + 1 + f``.
    """
    bits = check_bits(bits, "LERP width")
    if isinstance(index_bits, bool) or not isinstance(index_bits, (int, np.integer)) \
            or not 0 <= index_bits <= bits:
        raise ValueError(f"LERP index bits must be an integer in 0..{bits}, not {index_bits!r}")
    index_bits = int(index_bits)
    frac_bits = bits - index_bits
    codes = np.asarray(codes, dtype=np.int64)
    table = np.asarray(table, dtype=np.int64)
    channels = codes.shape[-1] if codes.ndim else 0
    if table.shape != (channels, (1 << index_bits) + 1):
        raise ValueError(f"LERP table has shape {table.shape}; expected ({channels}, "
                         f"{(1 << index_bits) + 1}) for {channels} channels and {index_bits} index bits")
    if np.any(wraps(codes, bits)) or np.any(wraps(table, bits)):
        raise ValueError(f"LERP codes and table entries must fit {bits} bits")
    u = codes + (1 << (bits - 1))
    i = u >> frac_bits
    r = u & ((1 << frac_bits) - 1)
    ch = np.arange(channels)
    lo, hi = table[ch, i], table[ch, i + 1]
    return saturate(lo + round_shift((hi - lo) * r, frac_bits), bits)
