"""Piecewise-linear torch models.

:class:`ReluMLP` is the Linear/ReLU stack that :mod:`pwlnet.train` trains and exports;
:class:`LerpMLP` is the same with a learnable LERP activation (:class:`Lerp`, a
per-channel interpolated table, see :mod:`pwlnet.lerp`) after each hidden layer.
Its :meth:`~ReluMLP.linearize_at_point` gives the affine map ``W x + b`` the network
computes around a point and the safe radii of the balls (L2, L-infinity, L1) in which
that map is exact -- the numbers a hypersphere cache entry stores.  The radius rule
itself lives in :func:`pwlnet.regions.linearize`, which works on the IR without torch;
this module only hands it the model's weights in float64.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from . import ir, lerp as lerp_np, regions

__all__ = ["ReluMLP", "Lerp", "LerpMLP", "LERP_INITS"]

#: Shapes a :class:`Lerp` table can start from.
LERP_INITS = ("relu", "identity")


def _positive_int(value, what):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{what} must be a positive integer, not {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


def _check_hidden(hidden):
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
        raise TypeError(f"hidden must be a sequence of positive integers, not {hidden!r}")
    return tuple(_positive_int(h, f"hidden layer size {i}") for i, h in enumerate(hidden))


class _MLP(nn.Sequential):
    """What every pwlnet MLP shares: its Linear layers and the standardisation fold."""

    @property
    def linears(self) -> list:
        """The :class:`torch.nn.Linear` layers, input first."""
        return [m for m in self if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def fold_standardization(self, mean, std):
        """Make the model take raw inputs ``x`` where it took ``(x - mean) / std``.

        Rewrites the first layer in place to ``W' = W / std`` (column-wise) and
        ``b' = b - W' @ mean``, computed in float64 and rounded once to the weights'
        dtype.  Returns ``self``.
        """
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        for what, v in (("mean", mean), ("std", std)):
            if v.shape != (self.input_dim,):
                raise ValueError(f"{what} must have shape ({self.input_dim},), not {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{what} must be finite, not {v.tolist()}")
        if np.any(std <= 0):
            raise ValueError(f"std must be positive, not {std.tolist()}")
        first = self.linears[0]
        w = first.weight.double().cpu().numpy() / std
        b = first.bias.double().cpu().numpy() - w @ mean
        first.weight.copy_(torch.from_numpy(w))
        first.bias.copy_(torch.from_numpy(b))
        return self


class ReluMLP(_MLP):
    """A multilayer perceptron: ``Linear, ReLU, ..., Linear`` (logits, no softmax).

    Parameters
    ----------
    input_dim : int
    hidden : iterable of int
        Width of each hidden layer; empty for a single affine layer.
    output_dim : int

    Notes
    -----
    Being an :class:`torch.nn.Sequential`, its modules are indexed ``0, 1, 2, ...``
    (Linear at even, ReLU at odd positions), which is also how the ONNX exporter
    names the initializers (``0.weight``, ``0.bias``, ``2.weight``, ...).
    """

    def __init__(self, input_dim: int, hidden: Iterable[int], output_dim: int):
        input_dim = _positive_int(input_dim, "input_dim")
        output_dim = _positive_int(output_dim, "output_dim")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
            raise TypeError(f"hidden must be a sequence of positive integers, not {hidden!r}")
        hidden = tuple(_positive_int(h, f"hidden layer size {i}") for i, h in enumerate(hidden))
        dims = (input_dim, *hidden)
        layers = []
        for n_in, n_out in zip(dims, dims[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], output_dim))
        super().__init__(*layers)
        self.input_dim = input_dim
        self.hidden = hidden
        self.output_dim = output_dim

    def to_ir(self, metadata: dict | None = None) -> ir.Network:
        """The network as a :class:`pwlnet.ir.Network` (float64 copies of the weights)."""
        layers = []
        linears = self.linears
        for i, lin in enumerate(linears):
            layers.append(ir.Dense(lin.weight.detach().cpu().double().numpy(),
                                   lin.bias.detach().cpu().double().numpy(), name=f"dense{i}"))
            if i < len(linears) - 1:
                layers.append(ir.Activation("relu", name=f"relu{i}"))
        return ir.Network(layers, (self.input_dim,), metadata=dict(metadata or {}),
                          source="ReluMLP")

    def linearize_at_point(self, x) -> regions.Linearization:
        """The affine piece at ``x`` and its safe radii.

        Parameters
        ----------
        x : array_like, shape (input_dim,)

        Returns
        -------
        pwlnet.regions.Linearization
            ``W`` (``output_dim x input_dim``), ``b``, the ReLU ``pattern`` at ``x``,
            ``pre_activations``, ``gradients``, and ``radii[m]`` for ``m`` in
            ``("l2", "linf", "l1")``: the minimum over every hidden neuron of every
            layer of ``|z_j(x)| / ||g_j||`` with the 2-, 1- and infinity-norm of the
            gradient row respectively (``tight[m]`` names that neuron).  Computed in
            float64 from the float32 weights, so it describes the float64 evaluation
            of exactly these weights.
        """
        return regions.linearize(self.to_ir(), x)


def _lerp_forward(x, table, lo, hi):
    """Float LERP of ``x (N, C)`` in table ``(C, G+1)``; differentiable in ``x`` and ``table``."""
    g = table.shape[1] - 1
    t = (torch.clamp(x, lo, hi) - lo) / (hi - lo) * g
    # The segment index is piecewise constant: no gradient flows through it, all of the
    # input's gradient comes through the fraction (slope of the segment), and the table
    # receives it at the two entries that bound the segment.
    i = t.detach().floor().clamp(max=g - 1).long()
    f = t - i.to(t.dtype)
    tt = table.t()                      # (G+1, C): gather along the grid axis
    left = torch.gather(tt, 0, i)
    right = torch.gather(tt, 0, i + 1)
    return left + (right - left) * f


class _LerpOnnx(torch.autograd.Function):
    """Stand-in used only while exporting: one ``pwlnet.Lerp`` node with the table as an input."""

    @staticmethod
    def forward(ctx, x, table, bounds):
        # Tensor bounds (not Python floats), so that tracing records no constant.
        return _lerp_forward(x, table, bounds[0], bounds[1])

    @staticmethod
    def symbolic(g, x, table, bounds):
        return g.op(f"{lerp_np.ONNX_DOMAIN}::{lerp_np.ONNX_OP}", x, table, bounds).setType(x.type())


class Lerp(nn.Module):
    """A learnable per-channel piecewise-linear activation (LERP).

    Channel ``c`` interpolates linearly in its own table ``table[c]`` of ``grid + 1``
    values on the uniform grid of ``[lo, hi]`` and is constant outside the range.  The
    table is the parameter itself: backprop reaches the two entries around each input
    and the input (through the slope of its segment; zero outside ``[lo, hi]``).

    Parameters
    ----------
    channels : int
    grid : int
        Segments per table, a power of two (the hardware splits the input code into a
        ``log2(grid)``-bit index and a fraction).
    lo, hi : float
        The table's input range.
    init : {"relu", "identity"}
        Starting shape of every channel.

    Notes
    -----
    The table is trained directly, not through a smoother parameterisation that is
    baked in later: what is trained is then bit for bit what is exported and compiled.
    Each input only updates two entries, so a table learns nothing where no inputs fall
    and can turn jagged where few do; :meth:`roughness` (squared changes of slope)
    is the penalty :func:`pwlnet.train.train` adds to the loss (``smoothness``) against
    that.  It pulls every entry towards the line through its neighbours, which also
    spreads what the data teaches into the entries the data never reaches.

    ``torch.onnx.export(..., dynamo=False, custom_opsets={"pwlnet": 1})`` writes the
    module as one ``pwlnet.Lerp`` node with ``table`` and ``bounds`` as initializers;
    :func:`pwlnet.lerp.attach_onnx_function` then adds the definition that lets
    onnxruntime run it (:func:`pwlnet.train.export_onnx` does both).
    """

    def __init__(self, channels: int, grid: int = lerp_np.DEFAULT_GRID, lo: float = lerp_np.DEFAULT_RANGE[0],
                 hi: float = lerp_np.DEFAULT_RANGE[1], init: str = "relu"):
        super().__init__()
        channels = _positive_int(channels, "channels")
        grid = _positive_int(grid, "grid")
        if not lerp_np.is_power_of_two(grid) or grid < 2:
            raise ValueError(f"grid must be a power of two of at least 2, not {grid}")
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"the LERP range must be finite with lo < hi, not [{lo}, {hi}]")
        if init not in LERP_INITS:
            raise ValueError(f"init must be one of {LERP_INITS}, not {init!r}")
        z = lerp_np.grid_points(lo, hi, grid)
        shape = np.maximum(z, 0.0) if init == "relu" else z
        self.table = nn.Parameter(torch.tensor(np.tile(shape, (channels, 1)), dtype=torch.float32))
        # A buffer, so that it is exported as an initializer of the pwlnet.Lerp node.
        self.register_buffer("bounds", torch.tensor([lo, hi], dtype=torch.float32))
        self.channels, self.grid, self.lo, self.hi = channels, grid, lo, hi

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return _LerpOnnx.apply(x, self.table, self.bounds)
        if x.dim() != 2 or x.shape[1] != self.channels:
            raise ValueError(f"Lerp of {self.channels} channels takes (N, {self.channels}) inputs, "
                             f"not shape {tuple(x.shape)}")
        return _lerp_forward(x, self.table, self.lo, self.hi)

    def roughness(self):
        """Mean squared change of slope between neighbouring segments (0 for straight lines).

        ``((T[j+1] - 2 T[j] + T[j-1]) / h)**2`` with ``h = (hi - lo) / grid``, averaged over
        channels and inner grid points: dividing by ``h`` makes the penalty a property
        of the function's shape, so one weight suits every grid and range (a ReLU-shaped
        table scores ``1 / (grid - 1)``).
        """
        t = self.table
        h = (self.hi - self.lo) / self.grid
        return ((t[:, 2:] - 2 * t[:, 1:-1] + t[:, :-2]) / h).pow(2).mean()

    def to_ir(self, name="") -> ir.Activation:
        """The activation as a :class:`pwlnet.ir.Activation` of kind ``"lerp"`` (float64 table)."""
        return ir.Activation("lerp", name=name, table=self.table.detach().cpu().double().numpy(),
                             lo=self.lo, hi=self.hi)

    def extra_repr(self):
        return f"channels={self.channels}, grid={self.grid}, range=[{self.lo}, {self.hi}]"


class LerpMLP(_MLP):
    """A multilayer perceptron ``Linear, Lerp, ..., Linear`` (logits, no softmax).

    Parameters
    ----------
    input_dim : int
    hidden : iterable of int
    output_dim : int
    grid, lo, hi, init
        Of every :class:`Lerp` (see there).

    Notes
    -----
    Modules are indexed like :class:`ReluMLP`'s: Linear at even, Lerp at odd positions,
    so the tables export as ``1.table``, ``3.table``, ...
    """

    def __init__(self, input_dim: int, hidden: Iterable[int], output_dim: int, *,
                 grid: int = lerp_np.DEFAULT_GRID, lo: float = lerp_np.DEFAULT_RANGE[0],
                 hi: float = lerp_np.DEFAULT_RANGE[1], init: str = "relu"):
        input_dim = _positive_int(input_dim, "input_dim")
        output_dim = _positive_int(output_dim, "output_dim")
        hidden = _check_hidden(hidden)
        dims = (input_dim, *hidden)
        layers = []
        for n_in, n_out in zip(dims, dims[1:]):
            layers += [nn.Linear(n_in, n_out), Lerp(n_out, grid, lo, hi, init)]
        layers.append(nn.Linear(dims[-1], output_dim))
        super().__init__(*layers)
        self.input_dim = input_dim
        self.hidden = hidden
        self.output_dim = output_dim
        self.grid, self.lo, self.hi = grid, float(lo), float(hi)

    @property
    def lerps(self) -> list:
        """The :class:`Lerp` activations, input first."""
        return [m for m in self if isinstance(m, Lerp)]

    def roughness(self):
        """Sum of :meth:`Lerp.roughness` over the activations (a tensor)."""
        return sum((m.roughness() for m in self.lerps), torch.zeros(()))

    def to_ir(self, metadata: dict | None = None) -> ir.Network:
        """The network as a :class:`pwlnet.ir.Network` (float64 copies of weights and tables)."""
        layers = []
        for i, m in enumerate(self):
            if isinstance(m, nn.Linear):
                layers.append(ir.Dense(m.weight.detach().cpu().double().numpy(),
                                       m.bias.detach().cpu().double().numpy(), name=f"dense{i // 2}"))
            else:
                layers.append(m.to_ir(name=f"lerp{i // 2}"))
        return ir.Network(layers, (self.input_dim,), metadata=dict(metadata or {}), source="LerpMLP")
