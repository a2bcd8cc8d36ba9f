"""A small intermediate representation of piecewise-linear MLPs.

The importer (:mod:`pwlnet.onnx_import`) and the torch models produce this IR;
the quantizer (:mod:`pwlnet.quantize`) consumes it.  Everything is float64 and
uses the ``y = W @ x + b`` convention with ``W`` of shape ``(n_out, n_in)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["Dense", "Activation", "Network", "IRError", "ACTIVATION_KINDS"]

#: Activation kinds the IR can hold.  ``"lerp"`` carries a per-channel table.
ACTIVATION_KINDS = ("relu", "lerp")


class IRError(ValueError):
    """A network that cannot be represented (bad shapes, non-finite values)."""


@dataclasses.dataclass
class Dense:
    """``y = weight @ x + bias``; ``weight`` is ``(n_out, n_in)``.

    ``keep_mass`` marks a layer that conserves mass, as a PeLU layer's buckets and pipes do
    (:mod:`pwlnet.pelu`): non-negative weights and a non-positive bias, so that for
    non-negative inputs ``sum_o y_o <= sum_i x_i * sum_o weight[o, i]``.  The quantizer
    then rounds it so that the integer layer keeps that bound exactly
    (:func:`pwlnet.quantize.keep_mass`).
    """

    weight: np.ndarray
    bias: np.ndarray
    name: str = ""
    keep_mass: bool = False

    def __post_init__(self):
        self.weight = np.asarray(self.weight, dtype=np.float64)
        self.bias = np.asarray(self.bias, dtype=np.float64)
        if self.weight.ndim != 2:
            raise IRError(f"dense layer {self.name!r}: weight must be 2-D, not shape {self.weight.shape}")
        if self.bias.shape != (self.weight.shape[0],):
            raise IRError(f"dense layer {self.name!r}: bias shape {self.bias.shape} does not match "
                          f"{self.weight.shape[0]} outputs")
        for what, arr in (("weight", self.weight), ("bias", self.bias)):
            if not np.all(np.isfinite(arr)):
                bad = np.argwhere(~np.isfinite(arr))[0].tolist()
                raise IRError(f"dense layer {self.name!r}: {what} holds a non-finite value "
                              f"{float(arr[tuple(bad)])} at index {bad}")
        if self.keep_mass and (np.any(self.weight < 0) or np.any(self.bias > 0)):
            raise IRError(f"dense layer {self.name!r}: keep_mass needs non-negative weights and a "
                          f"non-positive bias (smallest weight {self.weight.min():.4g}, largest bias "
                          f"{self.bias.max():.4g})")

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x):
        return np.asarray(x, dtype=np.float64) @ self.weight.T + self.bias


@dataclasses.dataclass
class Activation:
    """An element-wise activation.

    ``kind == "relu"``: ``max(x, 0)``.
    ``kind == "lerp"``: per-channel table ``table`` of shape ``(channels, G + 1)`` on the
    uniform grid ``lo + (hi - lo) * k / G``, linearly interpolated, constant outside
    ``[lo, hi]``.
    """

    kind: str
    name: str = ""
    table: np.ndarray | None = None
    lo: float | None = None
    hi: float | None = None

    def __post_init__(self):
        if self.kind not in ACTIVATION_KINDS:
            raise IRError(f"activation {self.name!r}: kind must be one of {ACTIVATION_KINDS}, not {self.kind!r}")
        if self.kind == "lerp":
            self.table = np.asarray(self.table, dtype=np.float64)
            if self.table.ndim != 2 or self.table.shape[1] < 2:
                raise IRError(f"activation {self.name!r}: LERP table must be (channels, G+1), "
                              f"not shape {self.table.shape}")
            if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.hi > self.lo):
                raise IRError(f"activation {self.name!r}: LERP range must be finite with hi > lo, "
                              f"not [{self.lo}, {self.hi}]")

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "relu":
            return np.maximum(x, 0.0)
        g = self.table.shape[1] - 1
        t = (np.clip(x, self.lo, self.hi) - self.lo) / (self.hi - self.lo) * g
        i = np.minimum(np.floor(t).astype(np.int64), g - 1)
        f = t - i
        ch = np.arange(x.shape[-1])
        return self.table[ch, i] * (1 - f) + self.table[ch, i + 1] * f


@dataclasses.dataclass
class Network:
    """A sequence of :class:`Dense` and :class:`Activation` layers.

    ``input_shape`` is the per-sample shape of the original model's input (before any
    flattening); ``metadata`` carries what the exporter recorded beside the weights
    (for example the training data set and input standardisation, see
    :mod:`pwlnet.train`).  ``notices`` collects human-readable notes made during import
    (for example a dropped trailing Softmax).  ``reference_output`` names the graph
    output of the original model that an ONNX runtime computes this network's argmax
    from (the output itself, or probabilities of it), or is ``None`` when none does (a
    graph whose only other outputs are a label and a ZipMap); comparisons with the
    float model use it.
    """

    layers: list
    input_shape: tuple
    metadata: dict = dataclasses.field(default_factory=dict)
    notices: list = dataclasses.field(default_factory=list)
    source: str = ""
    reference_output: str | None = None

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        dims = [l for l in self.layers if isinstance(l, Dense)]
        if not dims:
            raise IRError(f"{self.source or 'network'}: holds no dense layer")
        if not isinstance(self.layers[0], Dense):
            raise IRError(f"{self.source or 'network'}: must start with a dense layer, "
                          f"not {type(self.layers[0]).__name__}")
        n = math.prod(self.input_shape)
        for l in self.layers:
            if isinstance(l, Dense):
                if l.n_in != n:
                    raise IRError(f"{self.source or 'network'}: layer {l.name!r} expects {l.n_in} inputs "
                                  f"but receives {n}")
                n = l.n_out
            elif l.kind == "lerp" and l.table.shape[0] != n:
                raise IRError(f"{self.source or 'network'}: LERP activation {l.name!r} has "
                              f"{l.table.shape[0]} channels but receives {n}")
        for a, b in zip(self.layers, self.layers[1:]):
            if isinstance(a, Activation) and isinstance(b, Activation):
                raise IRError(f"{self.source or 'network'}: two activations in a row "
                              f"({a.name!r}, {b.name!r}) are not supported")

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_dim(self) -> int:
        return [l for l in self.layers if isinstance(l, Dense)][-1].n_out

    def blocks(self):
        """Yield ``(dense, activation_or_None)`` pairs in order."""
        i = 0
        while i < len(self.layers):
            d = self.layers[i]
            a = self.layers[i + 1] if i + 1 < len(self.layers) and isinstance(self.layers[i + 1], Activation) else None
            yield d, a
            i += 2 if a is not None else 1

    def __call__(self, x):
        """Float64 forward pass; ``x`` is ``(N, *input_shape)`` or ``(N, input_dim)``."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        for l in self.layers:
            x = l(x)
        return x
