"""Piecewise-linear torch models.

:class:`ReluMLP` is the Linear/ReLU stack that :mod:`pwlnet.train` trains and exports.
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

from . import ir, regions

__all__ = ["ReluMLP"]


def _positive_int(value, what):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{what} must be a positive integer, not {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


class ReluMLP(nn.Sequential):
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

    @property
    def linears(self) -> list:
        """The :class:`torch.nn.Linear` layers, input first."""
        return [m for m in self if isinstance(m, nn.Linear)]

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

    @torch.no_grad()
    def fold_standardization(self, mean, std) -> "ReluMLP":
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
