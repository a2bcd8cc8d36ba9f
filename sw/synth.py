"""Random compiled models for testing the hardware against the golden model.

The quantizer makes models from trained networks; hardware tests also want models with
awkward widths, extreme weights and every requantization mode, which this module makes
directly.  Shifts are chosen from the accumulator's spread so that outputs use the whole
code range instead of saturating everywhere.
"""

from __future__ import annotations

import numpy as np

from . import fixedpoint as fx
from .artifact import CompiledModel, Layer

__all__ = ["random_model"]


def random_model(seed, dims, *, weight_bits=8, act_bits=8, requant="shift", multiplier_bits=8,
                 activation="relu", extreme=False) -> CompiledModel:
    """A valid :class:`CompiledModel` with layer sizes ``dims = [d_in, h1, ..., n_out]``.

    ``extreme=True`` draws weights from the two ends of the range only, to exercise
    the widest accumulators.  The last layer has no activation.
    """
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
        layers.append(Layer(weight=w.astype(np.int64), bias=b.astype(np.int64),
                            multiplier=m.astype(np.int64), shift=s.astype(np.int64),
                            weight_bits=weight_bits, in_bits=act_bits, out_bits=act_bits,
                            acc_bits=fx.accumulator_bits(w, b, act_bits),
                            activation="none" if last else activation, out_scale=1.0 / (1 << (act_bits - 1)),
                            requant=requant, name=f"dense{i}"))
    d = dims[0]
    return CompiledModel(input_shape=(d,), input_bits=act_bits, input_scale=np.full(d, 1.0 / (1 << (act_bits - 1))),
                         input_zero_point=np.zeros(d, dtype=np.int64), layers=layers,
                         source={"synthetic": {"seed": seed, "dims": list(dims)}}).validate()
