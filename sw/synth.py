"""Random compiled models for testing the hardware against the golden model.

The quantizer makes models from trained networks; hardware tests also want models with
awkward widths, extreme weights and every requantization mode, which this module makes
directly.  Shifts are chosen from the accumulator's spread so that outputs use the whole
code range instead of saturating everywhere.

LERP models (``activation="lerp"``) get random per-channel tables from a random stream of
their own, so a LERP model has exactly the weights, biases and shifts of the ReLU model of
the same seed, and adding LERP support changed nothing that ReLU models draw.
"""

from __future__ import annotations

import numpy as np

from . import fixedpoint as fx
from .artifact import CompiledModel, Layer

__all__ = ["random_model", "random_tables", "LERP_TABLES"]

#: Kinds of random LERP table :func:`random_tables` draws.
LERP_TABLES = ("mixed", "monotone", "arbitrary")


def random_tables(rng, channels, index_bits, bits, kind="mixed"):
    """Random LERP tables ``(channels, 2**index_bits + 1)`` of signed ``bits``-wide codes.

    ``"monotone"``: a random walk of steps of one sign (rising or falling per channel)
    spread over most of the code range, with a few flat runs -- what a trained or
    imported activation looks like.  ``"arbitrary"``: every entry uniform over the whole
    code range, so neighbouring entries jump by up to the full range (the widest
    differences the hardware must interpolate).  ``"mixed"``: each channel one or the
    other.
    """
    if kind not in LERP_TABLES:
        raise ValueError(f"LERP table kind must be one of {LERP_TABLES}, not {kind!r}")
    lo, hi = fx.signed_range(bits)
    n = (1 << index_bits) + 1
    out = np.empty((channels, n), dtype=np.int64)
    for c in range(channels):
        pick = kind if kind != "mixed" else ("monotone", "arbitrary")[int(rng.integers(0, 2))]
        if pick == "arbitrary":
            out[c] = rng.integers(lo, hi + 1, size=n)
        else:
            steps = rng.exponential(1.0, size=n - 1) * (rng.random(n - 1) > 0.2)
            span = (hi - lo) * rng.uniform(0.3, 1.0)
            walk = np.concatenate([[0.0], np.cumsum(steps)])
            walk = walk / max(walk[-1], 1e-9) * span
            start = rng.uniform(lo, hi - span)
            t = np.rint(start + walk).astype(np.int64)
            out[c] = np.clip(t if rng.random() < 0.5 else t[::-1], lo, hi)
    return out



def random_model(seed, dims, *, weight_bits=8, act_bits=8, requant="shift", multiplier_bits=8,
                 activation="relu", extreme=False, index_bits=6, lerp_tables="mixed") -> CompiledModel:
    """A valid :class:`CompiledModel` with layer sizes ``dims = [d_in, h1, ..., n_out]``.

    ``extreme=True`` draws weights from the two ends of the range only, to exercise
    the widest accumulators.  The last layer has no activation.  ``activation`` is
    ``"relu"``, ``"none"`` or ``"lerp"``; LERP layers get tables of
    ``2**index_bits + 1`` entries (``0 <= index_bits <= act_bits``) of the kind
    ``lerp_tables`` (see :func:`random_tables`), drawn from a separate stream seeded by
    ``(seed, 1)`` so that the rest of the model equals the ReLU model of the same seed.
    """
    if activation not in ("relu", "none", "lerp"):
        raise ValueError(f"activation must be 'relu', 'none' or 'lerp', not {activation!r}")
    if activation == "lerp":
        if isinstance(index_bits, bool) or not isinstance(index_bits, (int, np.integer)) \
                or not 0 <= index_bits <= act_bits:
            raise ValueError(f"index_bits must be an integer in 0..{act_bits} (act_bits), not {index_bits!r}")
        if lerp_tables not in LERP_TABLES:
            raise ValueError(f"lerp_tables must be one of {LERP_TABLES}, not {lerp_tables!r}")
        table_rng = np.random.default_rng([seed, 1])
    rng = np.random.default_rng(seed)
    wlo, whi = fx.signed_range(weight_bits)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(dims, dims[1:])):
        if extreme:
            w = rng.choice([wlo, whi], size=(n_out, n_in))
        else:
            w = rng.integers(wlo, whi + 1, size=(n_out, n_in))
        spread = int(np.sqrt(n_in) * (1 << (weight_bits - 1)) * (1 << (act_bits - 1)) / 2)
        b = rng.integers(-spread, spread + 1, size=n_out)
        if requant == "multiply":
            m = rng.integers(1 << (multiplier_bits - 1), 1 << multiplier_bits, size=n_out)
            extra = multiplier_bits
        else:
            m = np.ones(n_out, dtype=np.int64)
            extra = 0
        base = max(0, int(np.log2(max(spread, 1))) - (act_bits - 1))
        s = base + extra + rng.integers(-1, 2, size=n_out)
        s = np.clip(s, 0, fx.GOLDEN_MAX_BITS)
        last = i == len(dims) - 2
        lerp = {}
        if activation == "lerp" and not last:
            lerp = dict(table=random_tables(table_rng, n_out, int(index_bits), act_bits, lerp_tables),
                        index_bits=int(index_bits))
        layers.append(Layer(weight=w.astype(np.int64), bias=b.astype(np.int64),
                            multiplier=m.astype(np.int64), shift=s.astype(np.int64),
                            weight_bits=weight_bits, in_bits=act_bits, out_bits=act_bits,
                            acc_bits=fx.accumulator_bits(w, b, act_bits),
                            activation="none" if last else activation, out_scale=1.0 / (1 << (act_bits - 1)),
                            requant=requant, name=f"dense{i}", **lerp))
    d = dims[0]
    return CompiledModel(input_shape=(d,), input_bits=act_bits, input_scale=np.full(d, 1.0 / (1 << (act_bits - 1))),
                         input_zero_point=np.zeros(d, dtype=np.int64), layers=layers,
                         source={"synthetic": {"seed": seed, "dims": list(dims)}}).validate()
