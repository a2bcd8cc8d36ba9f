"""Binarized networks: the integer rule of binary layers, their folding, and their artifact.

A binarized MLP has weights (and hidden activations) in {-1, +1}.  Its hidden layers
are XNOR and popcount, and the BatchNorm + step after each becomes one integer
threshold and a direction per neuron (docs/binary.md proves it).  The rules, written
once here:

* **bits**: bit 1 stands for +1, bit 0 for -1;
* **first layer** (on ``input_bits``-bit input codes ``q``): ``v = sum_i W[o, i] * q[i]``
  (weights +-1: a sum of codes with signs);
* **binary layer** (on +-1 activations ``a`` of width ``n``):
  ``v = popcount(XNOR(w_bits, a_bits))`` (``W . a = 2 v - n``);
* **step** (every layer but the last): ``bit = (v >= threshold) XOR (direction < 0)``;
* **scores** (the last layer): ``score[o] = table[o, v[o]]`` with ``v`` its popcount;
  the table holds the exact integer ``2 v - n + b`` when there is no last BatchNorm
  and the biases are integers, else the dense rank of each exact real score among all
  of the layer's (equal reals share a rank), so that ``argmax`` (first maximum) of the
  scores is ``argmax`` of the real model's scores.

:func:`fold_step` and :func:`score_table` turn float parameters (float32 in the ONNX
file, taken as exact rationals) into these integers by exact arithmetic: no rounding
decides a threshold.

The compiled binary model is saved as its own format (``model.json`` with format
:data:`FORMAT`, plus ``arrays.npz``); :func:`pwlnet.artifact.load` reads both formats.
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import fixedpoint as fx
from .modeldir import write_model_dir
from .errors import ArtifactError, InputError

__all__ = ["FORMAT", "VERSION", "KIND", "BinaryLayer", "BinaryModel", "first_sum", "xnor_popcount",
           "step", "layer_values", "trace", "forward",
           "fold_step", "score_table", "sign_sqrt", "BatchNorm", "save", "load_dir"]

FORMAT = "pwlnet-binary-model"
VERSION = 1
KIND = "binary"


# --------------------------------------------------------------------------------------
# The integer rule


def first_sum(weight, codes):
    """First layer: ``v[n, o] = sum_i weight[o, i] * codes[n, i]`` (int64; weights +-1)."""
    return np.asarray(codes, dtype=np.int64) @ np.asarray(weight, dtype=np.int64).T


def xnor_popcount(weight, acts):
    """Binary layer: ``v[n, o]`` = the number of positions where ``acts[n]`` and
    ``weight[o]`` (both +-1) agree, i.e. ``popcount(XNOR)`` of their bits.

    Computed as ``(acts @ weight.T + n_in) / 2``, which equals the popcount because each
    agreeing position adds +1 and each differing one -1 to the dot product."""
    acts = np.asarray(acts, dtype=np.int64)
    dot = acts @ np.asarray(weight, dtype=np.int64).T
    return (dot + acts.shape[-1]) // 2


def step(v, threshold, direction):
    """``+1`` where ``(v >= threshold) XOR (direction < 0)``, else ``-1`` (int64)."""
    on = (np.asarray(v) >= np.asarray(threshold)) != (np.asarray(direction) < 0)
    return np.where(on, 1, -1).astype(np.int64)


@dataclasses.dataclass
class BinaryLayer:
    """One layer of a binarized network.

    Attributes
    ----------
    weight : ndarray (n_out, n_in) of +-1
    threshold, direction : ndarray (n_out,) or None
        The step of a hidden layer (``direction`` +-1); None on the last layer.
    table : ndarray (n_out, n_in + 1) or None
        The last layer's scores by popcount; None on hidden layers.
    first : bool
        The layer takes the input codes (the sum rule) instead of +-1 activations.
    in_bits : int
        Width of the input codes (first layer) or 1.
    name : str
    """

    weight: np.ndarray
    threshold: np.ndarray | None
    direction: np.ndarray | None
    table: np.ndarray | None
    first: bool
    in_bits: int
    name: str = ""

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    @property
    def is_last(self) -> bool:
        return self.table is not None

    @property
    def activation(self) -> str:
        return "score" if self.is_last else "step"

    @property
    def weight_bits(self) -> int:
        return 1

    @property
    def v_range(self) -> tuple:
        """``(lo, hi)`` of ``v``: the signed sum of codes (first layer) or the popcount."""
        if not self.first:
            return 0, self.n_in
        lo, hi = fx.signed_range(self.in_bits)
        pos = (self.weight > 0).sum(axis=1)
        neg = self.n_in - pos
        return int((pos * lo - neg * hi).min()), int((pos * hi - neg * lo).max())

    @property
    def acc_bits(self) -> int:
        """Signed width of ``v``."""
        return fx.signed_width(*self.v_range)

    @property
    def out_bits(self) -> int:
        """1 for a step layer; for the last layer the signed width of its table, at least 8
        (whole bytes on the link, whose one-byte codes are sent as they are, not sign-extended)."""
        if self.table is None:
            return 1
        return max(8, fx.signed_width(int(self.table.min()), int(self.table.max())))

    # Views under the names pwlnet.protocol.model_fingerprint reads, so a board's INFO
    # reply identifies a binary model too (threshold, direction and table decide it).
    @property
    def bias(self):
        return np.zeros(self.n_out, np.int64) if self.threshold is None else self.threshold

    @property
    def multiplier(self):
        return np.ones(self.n_out, np.int64) if self.direction is None else self.direction

    @property
    def shift(self):
        return np.zeros(0, np.int64) if self.table is None else self.table.ravel()


@dataclasses.dataclass
class BinaryModel:
    """A compiled binarized network: the input quantizer and a list of :class:`BinaryLayer`.

    The input quantizer is the golden model's (``q = saturate(round_half_up(x / scale) +
    zero_point)`` per feature); ``input_scale[i] = code_scale / |a_i|`` where ``a_i`` is
    the gain of an input normalization in the graph (1 without one), so that every
    feature's code steps the first layer's input by the same ``code_scale``.
    """

    input_shape: tuple
    input_bits: int
    input_scale: np.ndarray
    input_zero_point: np.ndarray
    layers: list
    code_scale: float = 1.0
    class_names: list | None = None
    source: dict = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)

    kind = KIND

    @property
    def input_dim(self) -> int:
        return int(self.input_scale.shape[0])

    @property
    def output_dim(self) -> int:
        return self.layers[-1].n_out

    @property
    def output_scale(self) -> float:
        return 1.0

    @property
    def act_bits(self) -> int:
        return self.input_bits

    @property
    def weight_bits(self) -> int:
        return 1

    def validate(self, where="binary model"):
        """Check shapes, values and ranges; raise :class:`pwlnet.artifact.ArtifactError`."""

        def fail(msg):
            raise ArtifactError(f"{where}: {msg}")
        try:
            fx.check_bits(self.input_bits, "input_bits")
        except (TypeError, ValueError) as e:
            fail(str(e))
        if self.input_scale.shape != self.input_zero_point.shape or self.input_scale.ndim != 1:
            fail("input scale and zero point must be vectors of the same length")
        if not np.all(np.isfinite(self.input_scale)) or np.any(self.input_scale <= 0):
            fail("input scale must be finite and positive")
        if len(self.layers) < 2:
            fail(f"a binarized network needs at least two layers (the last one scores popcounts), "
                 f"not {len(self.layers)}")
        n = self.input_dim
        for i, l in enumerate(self.layers):
            name = f"layer {i}"
            if l.weight.ndim != 2 or l.n_in != n:
                fail(f"{name}: weight shape {l.weight.shape} does not take {n} inputs")
            if not np.all(np.abs(l.weight) == 1):
                fail(f"{name}: weights must all be -1 or +1")
            if l.first != (i == 0):
                fail(f"{name}: only layer 0 takes the input codes")
            if l.in_bits != (self.input_bits if i == 0 else 1):
                fail(f"{name}: in_bits {l.in_bits} is wrong")
            last = i == len(self.layers) - 1
            if last:
                if l.table is None or l.table.shape != (l.n_out, l.n_in + 1):
                    fail(f"{name}: the last layer needs a score table of shape ({l.n_out}, {l.n_in + 1})")
                if l.threshold is not None or l.direction is not None:
                    fail(f"{name}: the last layer has no step")
            else:
                if l.table is not None:
                    fail(f"{name}: only the last layer has a score table")
                for f in ("threshold", "direction"):
                    if getattr(l, f) is None or getattr(l, f).shape != (l.n_out,):
                        fail(f"{name}: {f} must have shape ({l.n_out},)")
                if not np.all(np.abs(l.direction) == 1):
                    fail(f"{name}: directions must be -1 or +1")
                lo, hi = l.v_range
                if np.any(l.threshold < lo) or np.any(l.threshold > hi + 1):
                    fail(f"{name}: thresholds must lie in [{lo}, {hi + 1}]")
            n = l.n_out
        return self


# --------------------------------------------------------------------------------------
# Golden model


# Float inputs become codes, and codes float inputs, by the MLPs' rule:
# :func:`pwlnet.golden.quantize_inputs` and :func:`pwlnet.golden.dequantize_inputs` take a
# binary model as well (and :func:`pwlnet.golden.forward` runs :func:`forward` for it).


def _check_codes(model, codes):
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes.reshape(1, -1)
    if codes.ndim != 2 or codes.shape[1] != model.input_dim:
        raise InputError(f"input codes have shape {codes.shape}; expected (N, {model.input_dim})")
    if not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"input codes must be integers, not {codes.dtype}")
    codes = codes.astype(np.int64)
    bad = fx.wraps(codes, model.input_bits)
    if np.any(bad):
        lo, hi = fx.signed_range(model.input_bits)
        raise InputError(f"input codes hold {codes[bad][0]}, outside the {model.input_bits}-bit "
                         f"range [{lo}, {hi}]")
    return codes


def layer_values(layer, x):
    """``v`` of one layer: :func:`first_sum` on codes or :func:`xnor_popcount` on +-1."""
    return first_sum(layer.weight, x) if layer.first else xnor_popcount(layer.weight, x)


def trace(model, codes):
    """``[(v, out), ...]`` per layer: ``out`` is +-1 for hidden layers, the scores last."""
    x = _check_codes(model, codes)
    steps = []
    for layer in model.layers:
        v = layer_values(layer, x)
        if layer.is_last:
            x = np.take_along_axis(layer.table[None, :, :], v[:, :, None], axis=2)[:, :, 0]
        else:
            x = step(v, layer.threshold, layer.direction)
        steps.append((v, x))
    return steps


def forward(model, codes):
    """Input codes ``(N, d)`` to integer scores ``(N, n_out)`` (int64)."""
    return trace(model, codes)[-1][1]


# --------------------------------------------------------------------------------------
# Folding float parameters into integers (exact)


def _sgn(x) -> int:
    return (x > 0) - (x < 0)


def sign_sqrt(a, b, r) -> int:
    """Sign of ``a + b * sqrt(r)`` for rationals ``a, b`` and ``r >= 0``, exactly."""
    sa, sb = _sgn(a), (_sgn(b) if r else 0)
    if sb == 0 or sa == sb:
        return sa if sa else sb
    if sa == 0:
        return sb
    # opposite signs: the term of larger magnitude wins
    return sa * _sgn(a * a - b * b * r)


def _sign3(a, b, p, c, q) -> int:
    """Sign of ``a + b sqrt(p) + c sqrt(q)`` exactly (rationals, ``p, q >= 0``)."""
    sl = sign_sqrt(a, b, p)                # left:  a + b sqrt(p)
    sr = -_sgn(c) if q else 0              # right: -c sqrt(q); the sign of left - right is asked
    if sl != sr:
        return 1 if sl > sr else -1
    if sl == 0:
        return 0
    # same sign: compare squares, (a + b sqrt p)^2 - c^2 q = (a^2 + b^2 p - c^2 q) + 2ab sqrt p
    t = sign_sqrt(a * a + b * b * p - c * c * q, 2 * a * b, p)
    return t if sl > 0 else -t


def _q(x) -> Fraction:
    """A float (float32 or float64) as the exact rational it is."""
    v = float(x)
    if not np.isfinite(v):
        raise ValueError(f"parameter {x!r} is not finite")
    return Fraction(v)


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    """One channel of ONNX BatchNormalization: ``gamma (z - mean) / sqrt(var + eps) + beta``.

    Every value is kept as the exact rational of its float; ``var + eps`` is summed exactly."""

    gamma: Fraction
    beta: Fraction
    mean: Fraction
    var_eps: Fraction

    @classmethod
    def of(cls, gamma, beta, mean, var, eps):
        ve = _q(var) + _q(eps)
        if ve <= 0:
            raise ValueError(f"BatchNorm variance + epsilon must be positive, not {float(ve)}")
        return cls(_q(gamma), _q(beta), _q(mean), ve)

    def sign(self, z: Fraction) -> int:
        """Sign of the BatchNorm's output at the exact real ``z``.

        ``gamma (z - mean) / sqrt(V) + beta`` has the sign of ``gamma (z - mean) + beta sqrt(V)``
        (multiplied by ``sqrt(V) > 0``)."""
        return sign_sqrt(self.gamma * (z - self.mean), self.beta, self.var_eps)


def fold_step(alpha, beta, bn, lo, hi):
    """Integer ``(threshold, direction)`` of ``step(BN(alpha * v + beta))`` over integers ``v``.

    The float model computes ``z = alpha * v + beta`` (``alpha, beta`` exact rationals), then
    the BatchNorm ``bn`` (or none) and outputs +1 where that is ``> 0``.  Returns ``(T, d)``
    such that for every integer ``v`` in ``[lo, hi]``: output is +1 iff
    ``(v >= T) XOR (d < 0)``, with ``T`` in ``[lo, hi + 1]``.  Exact: the condition is
    monotone in ``v`` and decided at each probed ``v`` with rationals and one square root
    compared by squaring (:func:`sign_sqrt`).
    """
    alpha, beta = Fraction(alpha), Fraction(beta)

    def on(v):
        z = alpha * v + beta
        return (bn.sign(z) if bn is not None else _sgn(z)) > 0

    slope = _sgn(alpha) * (_sgn(bn.gamma) if bn is not None else 1)
    if slope == 0:
        return (lo, 1) if on(lo) else (hi + 1, 1)
    want = slope > 0               # increasing: find the first v that is on; else the first that is off
    a, b = lo, hi + 1              # invariant: the first v with on(v) == want lies in [a, b]
    while a < b:
        mid = (a + b) // 2
        if on(mid) == want:
            b = mid
        else:
            a = mid + 1
    return (a, 1) if want else (a, -1)


def score_table(weight_row_count, n_in, bias, bn=None):
    """The last layer's score table ``(n_out, n_in + 1)`` from its biases and BatchNorm.

    Real score of output ``o`` at popcount ``p``: ``z = 2 p - n_in + bias[o]``, then
    ``bn[o]`` if given.  When there is no BatchNorm and every bias is an integer the table
    is ``z`` itself; otherwise it is the dense rank of each exact real score among all
    ``n_out * (n_in + 1)`` of them (equal reals, equal ranks).
    """
    n_out = weight_row_count
    bias = [_q(b) for b in bias]
    z = [[2 * p - n_in + bias[o] for p in range(n_in + 1)] for o in range(n_out)]
    if bn is None and all(b.denominator == 1 for b in bias):
        return np.array([[int(v) for v in row] for row in z], dtype=np.int64)
    if bn is None:
        items = [((v, 0, 0), (o, p)) for o, row in enumerate(z) for p, v in enumerate(row)]
    else:
        # beta + gamma (z - mean) / sqrt(V) = beta + (gamma (z - mean) / V) sqrt(V)
        items = [((bn[o].beta, bn[o].gamma * (v - bn[o].mean) / bn[o].var_eps, bn[o].var_eps), (o, p))
                 for o, row in enumerate(z) for p, v in enumerate(row)]

    def cmp(x, y):
        (a1, b1, r1), (a2, b2, r2) = x[0], y[0]
        return _sign3(a1 - a2, b1, r1, -b2, r2)

    items.sort(key=functools.cmp_to_key(cmp))
    table = np.zeros((n_out, n_in + 1), dtype=np.int64)
    rank = 0
    for k, it in enumerate(items):
        if k and cmp(items[k - 1], it) != 0:
            rank += 1
        table[it[1]] = rank
    # centre the ranks so the codes use the signed range evenly
    return table - (rank + 1) // 2


# --------------------------------------------------------------------------------------
# Artifact


def save(model: BinaryModel, out_dir) -> Path:
    """Write a compiled binary model directory (``model.json`` + ``arrays.npz``), atomically."""
    model.validate()
    out_dir = Path(out_dir)
    desc = {
        "format": FORMAT, "version": VERSION, "kind": KIND,
        "input": {"shape": list(model.input_shape), "dim": model.input_dim, "bits": model.input_bits,
                  "scale": "input.scale", "zero_point": "input.zero_point",
                  "code_scale": float(model.code_scale)},
        "layers": [],
        "output": {"dim": model.output_dim, "class_names": model.class_names},
        "source": model.source, "summary": model.summary,
    }
    arrays = {"input.scale": model.input_scale.astype(np.float64),
              "input.zero_point": model.input_zero_point.astype(np.int64)}
    for i, l in enumerate(model.layers):
        e = {"name": l.name, "n_in": l.n_in, "n_out": l.n_out, "first": bool(l.first), "in_bits": l.in_bits,
             "weight": f"l{i}.weight"}
        arrays[f"l{i}.weight"] = np.asarray(l.weight, np.int8)
        for f in ("threshold", "direction", "table"):
            if getattr(l, f) is not None:
                e[f] = f"l{i}.{f}"
                arrays[f"l{i}.{f}"] = np.asarray(getattr(l, f), np.int64)
        desc["layers"].append(e)
    return write_model_dir(out_dir, desc, arrays)


def load_dir(path, desc) -> BinaryModel:
    """Read a binary model directory whose ``model.json`` (already parsed) is ``desc``.

    Called by :func:`pwlnet.artifact.load`, which dispatches on the format name."""
    path = Path(path)
    jpath, npath = path / "model.json", path / "arrays.npz"
    if desc.get("version") != VERSION:
        raise ArtifactError(f"{jpath}: binary model version {desc.get('version')!r} is not supported "
                            f"(this pwlnet reads version {VERSION}); recompile the model")
    try:
        with np.load(npath) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{npath}: unreadable: {e}") from None

    def arr(name, where):
        if name not in arrays:
            raise ArtifactError(f"{npath}: array {name!r} named by {where} is missing")
        return arrays[name]

    try:
        inp = desc["input"]
        layers = []
        for i, e in enumerate(desc["layers"]):
            opt = {f: (arr(e[f], f"layers[{i}].{f}").astype(np.int64) if f in e else None)
                   for f in ("threshold", "direction", "table")}
            layers.append(BinaryLayer(weight=arr(e["weight"], f"layers[{i}].weight").astype(np.int64),
                                      first=bool(e["first"]), in_bits=int(e["in_bits"]),
                                      name=e.get("name", ""), **opt))
        model = BinaryModel(input_shape=tuple(inp["shape"]), input_bits=int(inp["bits"]),
                            input_scale=arr(inp["scale"], "input.scale").astype(np.float64),
                            input_zero_point=arr(inp["zero_point"], "input.zero_point").astype(np.int64),
                            layers=layers, code_scale=float(inp.get("code_scale", 1.0)),
                            class_names=desc["output"].get("class_names"),
                            source=desc.get("source", {}), summary=desc.get("summary", {}))
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"{jpath}: missing or malformed field {e}") from None
    return model.validate(where=str(path))
