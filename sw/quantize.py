"""Post-training quantization: a float :class:`~pwlnet.ir.Network` to a :class:`~pwlnet.artifact.CompiledModel`.

The scheme (documented for users in docs/arithmetic.md):

* **Inputs**, per feature: the calibration range ``[lo_i, hi_i]`` maps onto the whole
  signed code range, ``x ≈ s_i * (q_i - z_i)``.  Per-feature scales restore the
  standardisation a trained model folded into its first layer, so no feature wastes
  code range.  The scale and the zero point are folded into the first dense layer
  (``W' = W diag(s)``, ``b' = b - W' z``), which therefore reads raw input codes.
* **Activations**, per tensor: the scale of each layer's output is the calibration
  maximum of ``|y|`` (of ``y`` for ReLU layers) over the largest code.
* **Weights**, per output channel, symmetric (``±(2**(wb-1) - 1)``); **biases** in the
  accumulator's scale (``s_x * s_w[o]``), exact integers; accumulator width from
  :func:`pwlnet.fixedpoint.accumulator_bits`.
* **Requantization** ``m[o] = s_x * s_w[o] / s_y``: in ``"shift"`` mode ``m[o]`` is made an
  exact power of two by choosing ``s_w[o] = 2**-S[o] * s_y / s_x`` with the largest
  ``S[o]`` whose weights still fit (no multiplier in hardware; costs at most one bit of
  weight precision); in ``"multiply"`` mode ``m[o] ≈ M[o] * 2**-S[o]`` with an unsigned
  ``multiplier_bits``-wide ``M[o]`` in ``[2**(mb-1), 2**mb)``.
* **LERP layers**: each channel's pre-activation is requantized so that its table's
  range ``[lo, hi]`` spans the whole code range (the midpoint is folded into the bias),
  the table is resampled to a power-of-two grid of at most ``2**act_bits`` segments and
  quantized at the layer's calibrated output scale; imported functions are tabulated
  again on each channel's calibrated pre-activation range.  See
  :func:`pwlnet.fixedpoint.lerp` for the integer rule and docs/arithmetic.md.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from . import fixedpoint as fx
from .artifact import CompiledModel, Layer
from . import lerp
from .ir import Activation, Dense, Network

__all__ = ["QuantizeError", "REQUANT_MODES", "MAX_SHIFT", "input_quantizer", "code_space_blocks",
           "quantize_dense", "keep_mass", "quantize"]

REQUANT_MODES = ("shift", "multiply")
#: Largest rounding shift the compiler emits; beyond it every output rounds to zero anyway.
MAX_SHIFT = 48
#: An imported function's table range drops the tails where the function stays within
#: this fraction of its largest magnitude of its end value (see :func:`quantize`).
CALIBRATION_FLAT_TOLERANCE = 1e-3


class QuantizeError(ValueError):
    """A network or calibration set that cannot be quantized as asked."""


def input_quantizer(calib, bits):
    """Per-feature ``(scale, zero_point)`` mapping the calibration range onto ``bits``-wide codes."""
    calib = np.asarray(calib, dtype=np.float64)
    lo_code, hi_code = fx.signed_range(bits)
    lo, hi = calib.min(axis=0), calib.max(axis=0)
    span = hi - lo
    flat = span <= 1e-12 * np.maximum(1.0, np.abs(lo))
    # A constant feature: one code step of |value| puts the value itself on code 0.
    scale = np.where(flat, np.where(np.abs(lo) > 0, np.abs(lo), 1.0), span / (hi_code - lo_code))
    zero = np.where(flat, -fx.round_half_up(lo / scale), lo_code - fx.round_half_up(lo / scale))
    return scale, zero.astype(np.int64)


def _blocks(net: Network):
    """Fold consecutive dense layers: ``[(W, b, activation_kind, activation_or_None, keep_mass), ...]``.

    A folded product keeps ``keep_mass`` only if both of its layers had it."""
    out = []
    for dense, act in net.blocks():
        w, b, mass = dense.weight, dense.bias, dense.keep_mass
        if out and out[-1][2] == "none":
            pw, pb, _, _, pmass = out.pop()
            w, b, mass = w @ pw, w @ pb + b, mass and pmass
        out.append((w, b, "none" if act is None else act.kind, act, mass))
    return out


def _code_space(net: Network, in_scale, in_zero):
    blocks = _blocks(net)
    w0, b0, k0, a0, m0 = blocks[0]
    w0 = w0 * np.asarray(in_scale, dtype=np.float64)
    blocks[0] = (w0, b0 - w0 @ np.asarray(in_zero, dtype=np.float64), k0, a0, m0)
    return blocks


def _pow2_shift(ratio):
    """Largest integer S with 2**S <= ratio (ratio > 0)."""
    s = math.floor(math.log2(ratio))
    while 2.0 ** (s + 1) <= ratio:
        s += 1
    while 2.0 ** s > ratio:
        s -= 1
    return s


def code_space_blocks(net: Network, in_scale, in_zero):
    """The float network as ``[(W, b, activation), ...]`` reading input *codes*.

    Consecutive dense layers are folded, and the input quantizer ``x = scale * (q - zero)``
    is folded into the first layer, so the first ``W`` multiplies raw codes.
    """
    return [(w, b, kind) for w, b, kind, _, _ in _code_space(net, in_scale, in_zero)]


def quantize_dense(w, b, s_x, s_y, *, weight_bits, act_bits, requant="shift", multiplier_bits=8,
                   activation="none", name="", where="layer", out_scale=None) -> Layer:
    """Quantize one float dense layer ``y = w @ x + b`` whose input codes stand for
    ``s_x`` each and whose output codes shall stand for ``s_y`` each (see module docs).

    ``s_y`` may also be one scale per output channel: LERP layers requantize each channel
    onto its own table's input range.  ``out_scale`` (default ``s_y``) is what the
    returned layer records as the value of one output code.
    """
    qmax_w = (1 << (weight_bits - 1)) - 1
    wmax = np.abs(w).max(axis=1)
    n_out = w.shape[0]
    if out_scale is None:
        out_scale = float(s_y)
    s_ys = np.broadcast_to(np.asarray(s_y, dtype=np.float64), (n_out,))
    shift = np.zeros(n_out, dtype=np.int64)
    mult = np.ones(n_out, dtype=np.int64)
    s_w = np.ones(n_out)
    # A channel whose weights can move its output by less than 2**-20 of an output code
    # (a dead neuron whose weights decayed towards 0) is quantized as weights of exactly 0:
    # scaling such weights up to the integer range would blow its bias out of any width.
    reach = wmax * s_x * w.shape[1] * float(1 << (act_bits - 1))
    negligible = reach < s_ys * 2.0 ** -20
    w = np.where(negligible[:, None], 0.0, w)
    for o in range(n_out):
        s_y = s_ys[o]
        if negligible[o]:
            s_w[o] = s_y / s_x
            continue
        if requant == "shift":
            s = _pow2_shift(qmax_w * s_y / (s_x * wmax[o]))
            if s < 0:
                raise QuantizeError(
                    f"{where}, output channel {o}: weights up to {wmax[o]:.4g} need a "
                    f"requantization gain of {s_x * wmax[o] / (qmax_w * s_y):.4g} > 1, which a "
                    f"rounding shift cannot give; compile with --requant multiply")
            s = min(s, MAX_SHIFT)
            shift[o] = s
            s_w[o] = 2.0 ** -s * s_y / s_x
        else:
            s_w[o] = wmax[o] / qmax_w
            m = s_x * s_w[o] / s_y
            s = _pow2_shift(((1 << multiplier_bits) - 1) / m)
            mm = int(fx.round_half_up(m * 2.0 ** s))
            if mm >= (1 << multiplier_bits):
                s -= 1
                mm = int(fx.round_half_up(m * 2.0 ** s))
            if s < 0:
                raise QuantizeError(f"{where}, output channel {o}: requantization gain "
                                    f"{m:.4g} needs a multiplier wider than {multiplier_bits} bits")
            if s > MAX_SHIFT:
                mm = max(1, int(fx.round_half_up(m * 2.0 ** MAX_SHIFT)))
                s = MAX_SHIFT
            shift[o], mult[o] = s, mm
    wq = np.clip(fx.round_half_up(w / s_w[:, None]), -qmax_w, qmax_w)
    bias_units = b / (s_x * s_w)
    too_big = ~(np.abs(bias_units) < 2.0 ** (fx.GOLDEN_MAX_BITS - 2))
    if np.any(too_big):
        o = int(np.argmax(too_big))
        raise QuantizeError(f"{where}, output channel {o}: bias {b[o]:.4g} is {bias_units[o]:.4g} in "
                            f"accumulator units (weight scale {s_w[o]:.4g}), beyond any accumulator width")
    bq = fx.round_half_up(bias_units)
    acc_bits = fx.accumulator_bits(wq, bq, act_bits)
    if acc_bits + int(mult.max()).bit_length() > fx.GOLDEN_MAX_BITS:
        big = int(np.argmax(np.abs(bq)))
        raise QuantizeError(f"{where}: the accumulator needs {acc_bits} bits (bias of "
                            f"channel {big} is {b[big]:.4g}, {bq[big]} in accumulator units); "
                            f"at most {fx.GOLDEN_MAX_BITS - int(mult.max()).bit_length()} are allowed")
    return Layer(weight=wq, bias=bq, multiplier=mult, shift=shift, weight_bits=weight_bits,
                 in_bits=act_bits, out_bits=act_bits, acc_bits=acc_bits, activation=activation,
                 out_scale=out_scale, requant=requant, name=name)


def keep_mass(layer: Layer, w, s_x, zero=None):
    """Make a quantized ``keep_mass`` layer conserve mass exactly; returns ``(weights lowered, biases changed)``.

    ``w`` is the float layer in the quantizer's units (``y = w @ x + b`` with ``x`` the
    input codes times ``s_x``; for the first layer ``s_x = 1`` and the input zero point
    ``zero`` is already folded into the bias), non-negative, with a float bias that is
    at most 0 before that fold.  Output code ``y_o`` stands for ``s_y * y_o``
    (``layer.out_scale``); input code ``q_i`` for ``s_x * (q_i - zero_i)``.  The float layer
    has ``sum_o relu(y_o) <= sum_i C_i x_i`` for ``x >= 0``, ``C_i = sum_o w[o, i]``.  The
    integer layer keeps it *exactly* (in rational arithmetic, no tolerance):

    * every column's integer split ``sum_o s_y * M_o * 2**-S_o * Wq[o, i] / s_x`` is at
      most ``C_i``: weights rounded up are lowered by one step at a time, the one rounded
      up the most first;
    * the bias keeps the threshold at or below zero: ``bq_o + sum_i Wq[o, i] * zero_i <= 0``;
    * the requantization rounds down: the bias is lowered by ``ceil(2**(S_o-1) / M_o)``,
      so that ``round_shift`` (ties up) of the lowered sum is at most ``floor`` of the
      original one.  Saturation only lowers a positive code, and a code clamped at the
      bottom is at most ``relu`` of the exact value.

    Hence for every input code vector with ``q >= zero`` (non-negative inputs):
    ``s_y * sum_o y_o <= sum_i C_i * s_x * (q_i - zero_i)``.  Changes ``layer`` in place.
    """
    w = np.asarray(w, dtype=np.float64)
    wq = np.array(layer.weight, dtype=np.int64)
    bq = np.array(layer.bias, dtype=np.int64)
    mult, shift = layer.multiplier, layer.shift
    s_y = Fraction(float(layer.out_scale))
    unit = [s_y * int(mult[o]) / (Fraction(float(s_x)) * (1 << int(shift[o]))) for o in range(len(wq))]
    lowered = 0
    for i in range(wq.shape[1]):
        bound = sum((Fraction(float(v)) for v in w[:, i]), Fraction(0))
        total = sum((unit[o] * int(wq[o, i]) for o in range(len(wq))), Fraction(0))
        while total > bound:
            o = max((o for o in range(len(wq)) if wq[o, i] > 0),
                    key=lambda o: unit[o] * int(wq[o, i]) - Fraction(float(w[o, i])))
            wq[o, i] -= 1
            total -= unit[o]
            lowered += 1
    folded = wq @ (np.zeros(wq.shape[1], dtype=np.int64) if zero is None else np.asarray(zero, dtype=np.int64))
    down = np.array([-(-(1 << (int(s) - 1)) // int(m)) if s > 0 else 0 for m, s in zip(mult, shift)],
                    dtype=np.int64)
    new_bias = np.minimum(bq, -folded) - down
    changed = int(np.sum(new_bias != bq))
    layer.weight, layer.bias = wq, new_bias
    layer.acc_bits = fx.accumulator_bits(wq, new_bias, layer.in_bits)
    return lowered, changed


def quantize(net: Network, calib, *, weight_bits=8, act_bits=8, requant="multiply", multiplier_bits=8,
             class_names=None, source=None, calib_name=None) -> CompiledModel:
    """Quantize ``net`` with calibration inputs ``calib`` (float, ``(N, *input_shape)`` or ``(N, d)``).

    ``calib_name`` (a file or data set name) starts the messages that refuse ``calib``.
    Raises :class:`QuantizeError` naming the layer, channel and value when a number does
    not fit, and ``ValueError`` for out-of-range widths.
    """
    weight_bits = fx.check_bits(weight_bits, "weight bits")
    act_bits = fx.check_bits(act_bits, "activation bits")
    if requant not in REQUANT_MODES:
        raise ValueError(f"requant must be one of {REQUANT_MODES}, not {requant!r}")
    if requant == "multiply" and not (2 <= multiplier_bits <= 24):
        raise ValueError(f"multiplier bits must be between 2 and 24, not {multiplier_bits}")
    where = net.source or "network"
    # the calibration data's own name (a file, a data set) starts the messages about it
    named = f"{calib_name}: " if calib_name else ""
    calib = np.asarray(calib, dtype=np.float64)
    if calib.ndim < 2 or math.prod(calib.shape[1:]) != net.input_dim:
        raise QuantizeError(f"{named}calibration inputs have shape {calib.shape}; the model {where} takes "
                            f"(N, {', '.join(map(str, net.input_shape))})")
    calib = calib.reshape(len(calib), net.input_dim)
    if len(calib) == 0:
        raise QuantizeError(f"{named}the calibration set is empty")
    if not np.all(np.isfinite(calib)):
        raise QuantizeError(f"{named}the calibration inputs hold NaN or Inf values")

    in_scale, in_zero = input_quantizer(calib, act_bits)
    blocks = _code_space(net, in_scale, in_zero)
    codes = fx.saturate(fx.round_half_up(calib / in_scale) + in_zero, act_bits).astype(np.float64)

    qmax_a = (1 << (act_bits - 1)) - 1
    s_x = 1.0          # the first layer's inputs are codes
    x = codes          # float activations of the calibration set, for output ranges
    layers, notices = [], []
    for li, (w, b, act, activation, mass) in enumerate(blocks):
        if act == "lerp":
            layer, y = _quantize_lerp(w, b, s_x, x, activation, weight_bits=weight_bits, act_bits=act_bits,
                                      requant=requant, multiplier_bits=multiplier_bits, name=f"dense{li}",
                                      where=f"{where}: layer {li}", notices=notices)
            layers.append(layer)
            x, s_x = y, layer.out_scale
            continue
        y = x @ w.T + b
        if act == "relu":
            y = np.maximum(y, 0.0)
        peak = float(np.max(np.abs(y)))
        s_y = (peak if peak > 0 else 1.0) / qmax_a
        layers.append(quantize_dense(w, b, s_x, s_y, weight_bits=weight_bits, act_bits=act_bits,
                                     requant=requant, multiplier_bits=multiplier_bits, activation=act,
                                     name=f"dense{li}", where=f"{where}: layer {li}"))
        if mass:
            lowered, biased = keep_mass(layers[-1], w, s_x, in_zero if li == 0 else None)
            notices.append(f"{where}: layer {li} keeps mass (PeLU): {lowered} weights lowered by one step "
                           f"so that no input's integer split exceeds its float column sum, and every bias "
                           f"lowered by half an output code or more so that requantization rounds down")
        x, s_x = y, s_y
    model = CompiledModel(input_shape=net.input_shape, input_bits=act_bits, input_scale=in_scale,
                          input_zero_point=in_zero, layers=layers, class_names=class_names,
                          source=dict(source or {}), summary={"notices": notices} if notices else {})
    return model.validate(where=where)


def _calibrated_range(function, z, rel_tol=CALIBRATION_FLAT_TOLERANCE):
    """Per-channel ``(lo, hi)`` for tabulating ``function`` on pre-activations ``z (N, C)``.

    The calibration minimum and maximum of each channel, with tails where the function
    is flat (within ``rel_tol`` of the layer's largest ``|f|``) cut off, since the table
    is constant beyond its range anyway: a saturating Tanh needs no codes spent on its
    plateaus.
    """
    lo, hi = z.min(axis=0), z.max(axis=0)
    # A channel of (nearly) constant pre-activations gets a range around its value, wide
    # enough to survive float64 rounding even for huge values (1e30 + 1.0 == 1e30).
    narrow = hi - lo <= 1e-9 * np.maximum(1.0, np.abs(lo))
    pad = np.maximum(1.0, 1e-6 * np.maximum(np.abs(lo), np.abs(hi)))
    lo, hi = np.where(narrow, lo - pad, lo), np.where(narrow, hi + pad, hi)
    pts = lerp.grid_points(lo, hi, 1024)
    v = function(pts)
    if not np.all(np.isfinite(v)):
        return lo, hi, v
    tol = rel_tol * max(float(np.abs(v).max()), 1e-300)
    moves_hi = np.abs(v - v[-1]) > tol          # (1025, C)
    moves_lo = np.abs(v - v[0]) > tol
    new_lo, new_hi = lo.copy(), hi.copy()
    for c in range(z.shape[1]):
        if not moves_hi[:, c].any():
            continue                             # constant over the whole range
        first = int(np.argmax(moves_lo[:, c]))
        last = len(pts) - 1 - int(np.argmax(moves_hi[::-1, c]))
        if first > last + 1:
            # The channel's whole change is under 2 * tol: every point is within tol of one
            # end or the other, and cutting both tails would leave lo > hi.  Keep its range.
            continue
        new_lo[c] = pts[max(first - 1, 0), c]
        new_hi[c] = pts[min(last + 1, len(pts) - 1), c]
    return new_lo, new_hi, v


def _quantize_lerp(w, b, s_x, x, act, *, weight_bits, act_bits, requant, multiplier_bits, name, where,
                   notices):
    """Quantize a dense layer followed by a LERP activation; return ``(layer, float outputs)``.

    The pre-activation of channel ``o`` is requantized so that its table's input range
    ``[lo_o, hi_o]`` spans the ``act_bits`` code range: one code is
    ``s_z = (hi_o - lo_o) / 2**act_bits`` and code ``y`` stands for
    ``(lo_o + hi_o) / 2 + y * s_z``.  That midpoint is subtracted from the bias before
    quantization, so an asymmetric range costs nothing in hardware.  The table is
    resampled to ``2**k`` segments (``k <= act_bits``) and quantized at the layer's
    output scale (calibrated like a ReLU layer's: the largest ``|LERP(z)|``).
    """
    z = x @ w.T + b
    channels = z.shape[1]
    table = np.asarray(act.table, dtype=np.float64)
    grid = table.shape[1] - 1
    if isinstance(act, lerp.FunctionActivation) and act.calibrate:
        lo, hi, v = _calibrated_range(act.function, z)
        if not np.all(np.isfinite(v)):
            raise QuantizeError(f"{where}: the imported function ({act.description}) of activation "
                                f"{act.name!r} is not finite on the calibration pre-activations "
                                f"[{z.min():.4g}, {z.max():.4g}]")
        table = lerp.tabulate(act.function, lo, hi, grid, channels)
        err = float(np.abs(act.function(z) - lerp.interpolate(table, lo, hi, z)).max())
        notices.append(f"{where}: {act.description} tabulated with {grid} segments on each channel's "
                       f"calibrated pre-activation range (within [{lo.min():.3g}, {hi.max():.3g}]): "
                       f"max abs error {err:.2g} on the calibration pre-activations")
    else:
        lo, hi = np.full(channels, float(act.lo)), np.full(channels, float(act.hi))
    # The hardware splits a code into a k-bit segment index and an f-bit fraction,
    # k + f = act_bits, so the grid must be a power of two of at most 2**act_bits.
    target = min(1 << max(grid - 1, 0).bit_length(), 1 << act_bits)
    if target != grid:
        old, table = table, lerp.resample(table, lo, hi, target)
        if target == 1 << act_bits:
            how = f"exact at every one of the {target} input codes"
        else:
            probe = lerp.grid_points(lo, hi, 8 * target * grid)
            err = float(np.abs(lerp.interpolate(old, lo, hi, probe) - lerp.interpolate(table, lo, hi, probe)).max())
            how = f"max abs change {err:.2g}"
        notices.append(f"{where}: LERP table of activation {act.name!r} resampled from {grid} to "
                       f"{target} segments ({how}): the hardware needs a power of two of at most "
                       f"2**{act_bits}")
        grid = target
    index_bits = grid.bit_length() - 1
    s_z = (hi - lo) / (1 << act_bits)
    y = lerp.interpolate(table, lo, hi, z)
    peak = float(np.max(np.abs(y)))
    s_y = (peak if peak > 0 else 1.0) / ((1 << (act_bits - 1)) - 1)
    layer = quantize_dense(w, b - (lo + hi) / 2, s_x, s_z, weight_bits=weight_bits, act_bits=act_bits,
                           requant=requant, multiplier_bits=multiplier_bits, activation="lerp", name=name,
                           where=where, out_scale=s_y)
    layer.table = fx.saturate(fx.round_half_up(table / s_y), act_bits)
    layer.index_bits = index_bits
    layer.lerp_range = np.stack([lo, hi], axis=1)
    return layer, y
