"""The golden model: integer-only evaluation of a compiled model.

This module is the specification of the hardware.  Every bit the RTL produces must
equal what :func:`forward` computes, using only the rules in :mod:`pwlnet.fixedpoint`.

Pipeline for one input vector ``x`` (float, the original model's input):

1. ``q = saturate(round_half_up(x / input_scale) + input_zero_point, input_bits)``
   per feature (done by the host: :func:`quantize_inputs`);
2. per layer: ``acc = W @ q + bias`` (exact, int64, fits ``acc_bits``);
   ``y = saturate(round_shift(acc * multiplier, shift), out_bits)``; ReLU layers then
   take ``max(y, 0)``, LERP layers look ``y`` up in their per-channel tables
   (:func:`pwlnet.fixedpoint.lerp`); the result feeds the next layer;
3. the last layer's codes are the output codes; ``argmax`` picks the first maximum;
   dequantized outputs are ``codes * output_scale``.
"""

from __future__ import annotations

import numpy as np

from . import fixedpoint as fx
from .artifact import CompiledModel

__all__ = ["quantize_inputs", "dequantize_inputs", "layer_forward", "forward", "trace",
           "dequantize_outputs", "argmax", "predict", "InputError"]


from .errors import InputError  # noqa: E402  (re-exported: pwlnet.golden.InputError)


def _as_batch(model: CompiledModel, x, what="inputs"):
    x = np.asarray(x)
    d = model.input_dim
    if x.ndim >= 1 and x.shape[1:] == tuple(model.input_shape) and x.ndim == 1 + len(model.input_shape):
        return x.reshape(len(x), d)
    if x.ndim == 2 and x.shape[1] == d:
        return x
    if x.ndim == 1 and x.shape[0] == d:
        return x.reshape(1, d)
    shapes = [f"(N, {d})"]
    if tuple(model.input_shape) != (d,):
        shapes.append(f"(N, {', '.join(map(str, model.input_shape))})")
    raise InputError(f"{what} have shape {x.shape}; expected {' or '.join(shapes)}")


def quantize_inputs(model: CompiledModel, x) -> np.ndarray:
    """Float inputs ``(N, *input_shape)`` or ``(N, d)`` to input codes ``(N, d)`` int64."""
    x = _as_batch(model, x).astype(np.float64)
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0].tolist()
        raise InputError(f"inputs hold a non-finite value {float(x[tuple(bad)])} at index {bad}")
    q = fx.round_half_up(x / model.input_scale) + model.input_zero_point
    return fx.saturate(q, model.input_bits)


def dequantize_inputs(model: CompiledModel, codes) -> np.ndarray:
    """Input codes back to the float inputs they stand for: ``(q - zero_point) * scale``."""
    codes = np.asarray(codes, dtype=np.int64)
    return (codes - model.input_zero_point) * model.input_scale


def _check_codes(codes, bits, what):
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"{what} must be integers, not {codes.dtype}")
    codes = codes.astype(np.int64)
    if np.any(fx.wraps(codes, bits)):
        lo, hi = fx.signed_range(bits)
        bad = codes[fx.wraps(codes, bits)][0]
        raise InputError(f"{what} hold {bad}, outside the {bits}-bit range [{lo}, {hi}]")
    return codes


def layer_forward(layer, codes):
    """One layer on int64 codes ``(N, n_in)``: returns ``(acc, out)``."""
    acc = codes @ layer.weight.T + layer.bias
    out = fx.requantize(acc, layer.multiplier, layer.shift, layer.out_bits)
    if layer.activation == "relu":
        out = np.maximum(out, 0)
    elif layer.activation == "lerp":
        out = fx.lerp(out, layer.table, layer.index_bits, layer.out_bits)
    return acc, out


def trace(model: CompiledModel, codes):
    """Run the layers and return ``[(acc, out), ...]`` for every layer (for debugging and RTL tests)."""
    x = _check_codes(_as_batch(model, codes, "input codes"), model.input_bits, "input codes")
    steps = []
    for layer in model.layers:
        acc, x = layer_forward(layer, x)
        steps.append((acc, x))
    return steps


def forward(model: CompiledModel, codes) -> np.ndarray:
    """Input codes ``(N, d)`` to output codes ``(N, n_out)`` (int64).  A binarized model
    (:class:`pwlnet.binary.BinaryModel`) runs its own rule (:func:`pwlnet.binary.forward`)."""
    if getattr(model, "kind", "mlp") == "binary":
        from . import binary
        return binary.forward(model, codes)
    return trace(model, codes)[-1][1]


def dequantize_outputs(model: CompiledModel, codes) -> np.ndarray:
    """Output codes to floats: ``codes * output_scale``."""
    return np.asarray(codes, dtype=np.int64) * model.output_scale


def argmax(codes) -> np.ndarray:
    """Index of the first largest output code per row (the hardware's tie rule)."""
    return np.argmax(np.asarray(codes), axis=-1)


def predict(model: CompiledModel, x):
    """Float inputs to ``(dequantized outputs, output codes)``."""
    codes = forward(model, quantize_inputs(model, x))
    return dequantize_outputs(model, codes), codes
