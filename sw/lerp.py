"""LERP activations: per-channel tables, linearly interpolated (numpy side, no torch).

A LERP activation of ``C`` channels is a table ``T`` of shape ``(C, G + 1)`` on the
uniform grid ``z_j = lo + (hi - lo) * j / G`` of a fixed range ``[lo, hi]``; channel
``c`` computes ``T[c, j] + (T[c, j+1] - T[c, j]) * t`` where ``z = z_j + t (z_{j+1} - z_j)``,
and is constant outside the range (``z`` is clamped to ``[lo, hi]`` first).

This module holds what the importer, the quantizer and the exporter share:

* :func:`interpolate`, :func:`tabulate`, :func:`resample` -- the float function and its
  tables;
* :class:`FunctionActivation` -- a LERP activation that was *sampled* from a known 1-D
  function (a Tanh, a GELU, ... found in an imported model).  It keeps the function, so
  the compiler can tabulate it again on the pre-activation range it measures on
  calibration data;
* the ONNX form of a LERP activation: a node ``Lerp`` of domain ``"pwlnet"``
  (:data:`ONNX_DOMAIN`) with inputs ``X (N, C)``, ``T (C, G+1)`` and ``R = [lo, hi]``,
  defined for every ONNX runtime by a model-local function (:func:`onnx_function`)
  built from standard ops, so onnxruntime runs the exported model as it is and the
  pwlnet importer reads the tables back bit for bit from the node's initializers.

The torch module (:class:`pwlnet.models.Lerp`) and the MLP built from it
(:class:`pwlnet.models.LerpMLP`) live in :mod:`pwlnet.models`, which needs torch and
builds on this module; this module never imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from .ir import Activation, IRError

__all__ = [
    "ONNX_DOMAIN", "ONNX_OP", "ONNX_VERSION", "DEFAULT_GRID", "DEFAULT_RANGE",
    "is_power_of_two", "parse_range", "grid_points", "interpolate", "tabulate", "resample",
    "FunctionActivation", "onnx_function", "attach_onnx_function",
]

#: The ONNX operator of a LERP activation: domain, op type and the domain's version.
ONNX_DOMAIN, ONNX_OP, ONNX_VERSION = "pwlnet", "Lerp", 1
#: Grid (segments per table) of trained and imported LERP activations unless told otherwise.
DEFAULT_GRID = 64
#: Input range of a trained LERP activation unless told otherwise.  Pre-activations of a
#: network fed standardised inputs rarely leave it, and 8-bit codes over it step by 1/32.
DEFAULT_RANGE = (-4.0, 4.0)


def is_power_of_two(n) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return isinstance(n, (int, np.integer)) and n > 0 and (n & (n - 1)) == 0


def parse_range(spec) -> tuple:
    """Parse a LERP range such as ``"-4,4"`` into ``(-4.0, 4.0)`` (command-line options).

    Raises
    ------
    ValueError
        Naming the spec, unless it is two finite numbers ``lo < hi``.
    """
    try:
        lo, hi = (float(p) for p in str(spec).split(","))
    except ValueError:
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"a LERP range must be two numbers lo,hi with lo < hi, like '-4,4', not {spec!r}")
    return lo, hi


def grid_points(lo, hi, grid):
    """The ``grid + 1`` points ``lo + (hi - lo) * j / grid``, ``j = 0 .. grid`` (float64).

    With per-channel arrays ``lo`` and ``hi`` of shape ``(C,)`` the result is ``(grid + 1, C)``.
    """
    j = np.arange(grid + 1, dtype=np.float64) / grid
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if lo.ndim or hi.ndim:
        j = j[:, None]
    return lo + (hi - lo) * j


def interpolate(table, lo, hi, z):
    """Evaluate LERP tables at ``z`` (float64).

    Parameters
    ----------
    table : array_like, shape (C, G + 1)
    lo, hi : float or array_like of shape (C,)
        The grid's range (one for all channels or one per channel); ``z`` is clamped
        into it.
    z : array_like, shape (..., C)

    Returns
    -------
    numpy.ndarray, shape (..., C)
    """
    table = np.asarray(table, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    g = table.shape[1] - 1
    # The same operation order as the ONNX function and the torch module, so that all
    # three agree to float rounding.
    t = (np.clip(z, lo, hi) - lo) / (hi - lo) * g
    i = np.minimum(np.floor(t).astype(np.int64), g - 1)
    f = t - i
    ch = np.arange(table.shape[0])
    left, right = table[ch, i], table[ch, i + 1]
    return left + (right - left) * f


def tabulate(function, lo, hi, grid, channels):
    """Sample ``function`` on the grid: a ``(channels, grid + 1)`` table.

    ``lo`` and ``hi`` may be per-channel arrays (each channel then has its own grid).

    ``function`` maps a float64 array of shape ``(M, channels)`` element-wise (channel
    ``c`` may be a different function, for per-channel constants) to the same shape.
    """
    z = grid_points(lo, hi, grid)
    z = np.broadcast_to(z if z.ndim == 2 else z[:, None], (grid + 1, channels))
    return np.asarray(function(np.array(z)), dtype=np.float64).T.copy()


def resample(table, lo, hi, grid):
    """The LERP function of ``table`` sampled on a ``grid``-segment grid of the same range.

    Exact (the same function) when the new grid contains the old one, for example when
    ``grid`` is a multiple of the old grid; otherwise an approximation.  ``lo`` and
    ``hi`` may be per-channel arrays.
    """
    table = np.asarray(table, dtype=np.float64)
    return tabulate(lambda z: interpolate(table, lo, hi, z), lo, hi, grid, table.shape[0])


@dataclasses.dataclass
class FunctionActivation(Activation):
    """A LERP activation sampled from a known element-wise function.

    ``table``, ``lo`` and ``hi`` are a ready tabulation (so the network runs as any
    other); ``function`` maps float64 arrays ``(M, C)`` to ``(M, C)`` exactly, and
    ``description`` says what it is (``"Tanh"``, ``"Div, Erf, Add, Mul"``).  With
    ``calibrate`` the compiler may move the range to the pre-activations it measures
    (see :func:`pwlnet.quantize.quantize`); without, the range was fixed by the user.
    """

    function: Callable | None = None
    description: str = ""
    calibrate: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.kind != "lerp" or self.function is None:
            raise IRError(f"activation {self.name!r}: a FunctionActivation is a LERP activation "
                          f"with a function")


# --------------------------------------------------------------------------- ONNX


def onnx_function(opset=17):
    """The ``pwlnet.Lerp`` operator as an ONNX model-local function of standard ops.

    Inputs ``X`` (``(N, C)``, float32), ``T`` (``(C, G+1)``, float32) and ``R``
    (``[lo, hi]``, float32); output ``Y`` (``(N, C)``).  The body computes exactly
    :func:`interpolate`: ``u = (clip(X, lo, hi) - lo) / (hi - lo) * G``,
    ``i = min(floor(u), G - 1)``, ``Y = T[c, i] + (T[c, i+1] - T[c, i]) * (u - i)``, with
    the per-channel lookups as ``GatherElements`` on the transposed index matrix.
    ``opset`` is the default-domain opset the body is declared with; it must be the
    one the model imports (13 or newer).
    """
    from onnx import TensorProto
    from onnx import helper as oh

    def const(name, value):
        return oh.make_node("Constant", [], [name], value=oh.make_tensor(name, TensorProto.INT64, [], [value]))

    nodes = [
        const("zero", 0), const("one", 1),
        oh.make_node("Gather", ["R", "zero"], ["lo"]),
        oh.make_node("Gather", ["R", "one"], ["hi"]),
        oh.make_node("Shape", ["T"], ["t_shape"]),
        oh.make_node("Gather", ["t_shape", "one"], ["entries"]),
        oh.make_node("Sub", ["entries", "one"], ["segments"]),
        oh.make_node("Sub", ["segments", "one"], ["last"]),
        oh.make_node("Cast", ["segments"], ["segments_f"], to=TensorProto.FLOAT),
        oh.make_node("Cast", ["last"], ["last_f"], to=TensorProto.FLOAT),
        oh.make_node("Clip", ["X", "lo", "hi"], ["clamped"]),
        oh.make_node("Sub", ["clamped", "lo"], ["offset"]),
        oh.make_node("Sub", ["hi", "lo"], ["span"]),
        oh.make_node("Div", ["offset", "span"], ["unit"]),
        oh.make_node("Mul", ["unit", "segments_f"], ["u"]),
        oh.make_node("Floor", ["u"], ["floor"]),
        oh.make_node("Min", ["floor", "last_f"], ["index_f"]),
        oh.make_node("Sub", ["u", "index_f"], ["frac"]),
        oh.make_node("Cast", ["index_f"], ["index"], to=TensorProto.INT64),
        oh.make_node("Transpose", ["index"], ["index_t"], perm=[1, 0]),
        oh.make_node("Add", ["index_t", "one"], ["next_t"]),
        oh.make_node("GatherElements", ["T", "index_t"], ["left_t"], axis=1),
        oh.make_node("GatherElements", ["T", "next_t"], ["right_t"], axis=1),
        oh.make_node("Transpose", ["left_t"], ["left"], perm=[1, 0]),
        oh.make_node("Transpose", ["right_t"], ["right"], perm=[1, 0]),
        oh.make_node("Sub", ["right", "left"], ["rise"]),
        oh.make_node("Mul", ["rise", "frac"], ["step"]),
        oh.make_node("Add", ["left", "step"], ["Y"]),
    ]
    return oh.make_function(ONNX_DOMAIN, ONNX_OP, ["X", "T", "R"], ["Y"], nodes,
                            [oh.make_opsetid("", opset)], [],
                            doc_string="pwlnet LERP activation: per-channel table T (C, G+1) on "
                                       "the uniform grid of R = [lo, hi], linearly interpolated, "
                                       "constant outside [lo, hi]")


def attach_onnx_function(model):
    """Add the ``pwlnet.Lerp`` function and its opset import to ``model`` (in place).

    Does nothing when the model already defines it.  Returns ``model``.
    """
    from onnx import helper as oh

    if not any(f.domain == ONNX_DOMAIN and f.name == ONNX_OP for f in model.functions):
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        model.functions.append(onnx_function(opset))
    if not any(o.domain == ONNX_DOMAIN for o in model.opset_import):
        model.opset_import.append(oh.make_opsetid(ONNX_DOMAIN, ONNX_VERSION))
    return model
