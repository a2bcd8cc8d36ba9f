"""Region-aware training: a penalty that widens the linear regions around the data.

The hypersphere cache (:mod:`pwlnet.code_cache`) answers an input from a stored affine map
when it lies in a ball around a known point that no hidden neuron's hyperplane crosses.
For hidden neuron ``j`` with pre-activation ``z_j(x)`` and gradient row
``g_j(x) = d z_j / d x`` (constant inside ``x``'s linear region), the distance from
``x`` to that neuron's hyperplane, measured in the cache's metric, is

.. math::

    d_j(x) = \\frac{|z_j(x)|}{\\lVert g_j(x) \\odot s \\rVert_q}

with ``q = 1`` for L-infinity balls (the dual norm), ``q = 2`` for L2 balls, and ``s``
the width of one input code of each feature (so that ``d_j`` is counted in input
codes, the unit in which the comparator bank stores its radii).  A ball of radius ``r``
around ``x`` lies in ``x``'s region iff ``r <= min_j d_j(x)``; that minimum is the safe
radius the cache stores.

Plain training leaves some ``d_j`` tiny near every training point.  The penalty below
is the Maximum Margin Regularizer of Croce, Andriushchenko and Hein (AISTATS 2019),
with distances in code units:

.. math::

    R(x) = \\frac{1}{k} \\sum_{j \\in \\mathrm{smallest}_k(d(x))} \\max\\left(0, 1 - \\frac{d_j(x)}{\\gamma}\\right)

averaged over the batch, where ``gamma`` is the wanted radius in input codes and ``k``
a fraction of all hidden neurons of all layers.  Pushing the ``k`` nearest hyperplanes
beyond ``gamma`` (and no further: the hinge is flat beyond it) leaves the rest of the
network free to fit the data.  Both ``z_j`` and ``g_j`` are differentiable in the
weights; the gradient rows are the rows of the network collapsed with ``x``'s on/off
pattern, a batched product of small matrices for an MLP.

The hidden hyperplanes are not all: the cache's tie guard (:mod:`pwlnet.tie_guard`) also
shrinks every ball that a *decision boundary* crosses, since near one the cached answer
and the full network's may pick different classes.  :func:`boundary_margin` is the same
hinge on the distances from each training input to the boundaries between its class and
the others (the Maximum Margin Regularizer's second term); region-aware training adds
both by default.

Use :func:`region_margin` (and :func:`boundary_margin`) in any training loop (``loss = ce + lam * region_margin(...)``),
or :class:`RegionMargin`, which holds the settings; :func:`pwlnet.train.train` takes
``region_margin=`` and ``region_weight=``.  :func:`code_widths` computes ``s`` with the
compiler's own input quantizer, so the unit is exactly the one the compiled model uses.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

__all__ = ["METRICS", "DEFAULT_FRACTION", "DEFAULT_WEIGHT", "DEFAULT_RAMP", "code_widths",
           "hyperplane_distances", "boundary_distances", "region_margin", "boundary_margin", "RegionMargin"]

#: Ball metrics the penalty measures in (those of the comparator bank that training serves).
METRICS = ("linf", "l2")
#: Share of all hidden neurons whose distances are penalised at each input (the ``k``).
DEFAULT_FRACTION = 0.1
#: Weight of the penalty in the loss (``lambda``), reached after :data:`DEFAULT_RAMP`.
DEFAULT_WEIGHT = 1.0
#: Fraction of the epochs over which the weight ramps up linearly from 0: the network
#: first finds the classes, then makes room around its hyperplanes.
DEFAULT_RAMP = 0.2

# The dual norm of each ball metric: the ball of radius r fits iff |z| >= r * ||g||_dual.
_DUAL = {"linf": 1, "l2": 2}


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    return metric


def _check_positive(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number, not {value!r}")
    return float(value)


def code_widths(calib, mean=None, std=None, bits: int = 8) -> np.ndarray:
    """Width of one input code of each feature, in the units the network is trained on.

    Parameters
    ----------
    calib : array_like, shape (n, d)
        The raw inputs the compiler will calibrate on (``pwlnet compile`` uses the
        training split of the data set the model records).
    mean, std : array_like, shape (d,), optional
        The standardisation the network sees during training (``(x - mean) / std``);
        omit both for a network trained on raw inputs.
    bits : int
        Input code width of the compiled model.

    Returns
    -------
    numpy.ndarray, float64, shape (d,)
        ``scale / std``, with ``scale`` from :func:`pwlnet.quantize.input_quantizer`.
    """
    from .quantize import input_quantizer
    scale, _ = input_quantizer(calib, bits)
    if std is not None:
        scale = scale / np.asarray(std, dtype=np.float64)
    return np.asarray(scale, dtype=np.float64)


def _linears(model):
    lins = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(lins) < 2:
        raise ValueError("the region margin needs a network with at least one hidden layer")
    # Only a strict Linear, ReLU, Linear, ... stack has the regions this penalty widens.
    acts = [m for m in model.children() if not isinstance(m, nn.Linear)]
    if not all(isinstance(a, nn.ReLU) for a in acts) or len(acts) != len(lins) - 1:
        raise ValueError(f"the region margin applies to Linear/ReLU stacks (ReluMLP), not {type(model).__name__}")
    return lins


def hyperplane_distances(model, x, widths=None, metric: str = "linf"):
    """Distances ``d_j(x)`` of every hidden neuron's hyperplane, and the logits.

    Parameters
    ----------
    model : torch.nn.Sequential
        ``Linear, ReLU, ..., Linear`` (a :class:`pwlnet.models.ReluMLP`).
    x : torch.Tensor, shape (n, d)
        Inputs as the model takes them.
    widths : array_like or torch.Tensor, shape (d,), optional
        One input code per feature in ``x``'s units (:func:`code_widths`); distances are
        then in codes.  Omitted: in ``x``'s own units.
    metric : {"linf", "l2"}

    Returns
    -------
    distances : torch.Tensor, shape (n, n_hidden)
        All hidden layers, input side first.  A neuron whose gradient row is zero
        (its hyperplane does not exist near ``x``) gets ``inf``.
    logits : torch.Tensor, shape (n, n_out)
        The model's output at ``x``, from the same pass.
    """
    dists, logits, _ = _walk(model, x, widths, metric)
    return dists, logits


def _walk(model, x, widths, metric):
    """One pass: hidden distances, logits, and the logits' Jacobian (in code units)."""
    q = _DUAL[_check_metric(metric)]
    lins = _linears(model)
    n, d = x.shape
    w = None if widths is None else torch.as_tensor(widths, dtype=x.dtype, device=x.device)
    a = None                     # (n, h, d): d z / d x of the current layer
    h = x
    dists = []
    for lin in lins[:-1]:
        z = lin(h)
        a = lin.weight.expand(n, -1, -1) if a is None else torch.matmul(lin.weight, a)
        g = a if w is None else a * w
        gn = g.norm(p=q, dim=2)
        # Dead gradients: no hyperplane to keep away from (and no 0/0 in the backward pass).
        safe = gn > 0
        dists.append(torch.where(safe, z.abs() / torch.where(safe, gn, torch.ones_like(gn)),
                                 torch.full_like(gn, math.inf)))
        on = (z > 0).to(z.dtype)
        h = z * on
        a = a * on.unsqueeze(2)
    jac = torch.matmul(lins[-1].weight, a)
    return torch.cat(dists, dim=1), lins[-1](h), jac if w is None else jac * w


def boundary_distances(model, x, y, widths=None, metric: str = "linf"):
    """Distances from each input to the decision boundary between its class and every other.

    ``(z_y - z_j) / ||grad (z_y - z_j) * s||_q`` for ``j != y`` (negative when ``x`` is on
    the wrong side), in the units of ``widths`` like :func:`hyperplane_distances`.

    Returns
    -------
    torch.Tensor, shape (n, n_out - 1)
    """
    _, logits, jac = _walk(model, x, widths, metric)
    q = _DUAL[metric]
    y = torch.as_tensor(y, dtype=torch.long, device=x.device)
    n, c = logits.shape
    rows = torch.arange(n, device=x.device)
    others = torch.ones(n, c, dtype=torch.bool, device=x.device)
    others[rows, y] = False
    gap = (logits[rows, y].unsqueeze(1) - logits)[others].view(n, c - 1)
    grad = (jac[rows, y].unsqueeze(1) - jac)[others].view(n, c - 1, -1)
    gn = grad.norm(p=q, dim=2)
    return gap / torch.clamp(gn, min=1e-12)


def region_margin(model, x, gamma: float, widths=None, metric: str = "linf",
                  fraction: float = DEFAULT_FRACTION, distances=None):
    """The mean hinge ``max(0, 1 - d_j / gamma)`` over each input's ``k`` smallest ``d_j``.

    Parameters
    ----------
    model : torch.nn.Sequential
        ``Linear, ReLU, ..., Linear``.
    x : torch.Tensor, shape (n, d)
    gamma : float
        Wanted ball radius, in the units of ``widths`` (input codes with
        :func:`code_widths`).
    widths : array_like, optional
        See :func:`hyperplane_distances`.
    metric : {"linf", "l2"}
    fraction : float
        ``k`` as a share of all hidden neurons (at least one neuron).
    distances : torch.Tensor, optional
        Reuse the distances of a pass already made (:func:`hyperplane_distances`).

    Returns
    -------
    torch.Tensor
        A scalar in ``[0, 1]``: 0 when every input's ``k`` nearest hyperplanes lie at
        ``gamma`` or further.
    """
    gamma = _check_positive(gamma, "gamma (the region margin)")
    fraction = _check_positive(fraction, "fraction")
    if fraction > 1:
        raise ValueError(f"fraction must be at most 1, not {fraction!r}")
    d = hyperplane_distances(model, x, widths, metric)[0] if distances is None else distances
    k = max(1, int(round(fraction * d.shape[1])))
    smallest = torch.topk(d, k, dim=1, largest=False).values
    return torch.clamp(1 - smallest / gamma, min=0).mean()


def boundary_margin(model, x, y, gamma: float, widths=None, metric: str = "linf"):
    """The mean hinge ``max(0, 1 - d / gamma)`` over the decision-boundary distances.

    :func:`boundary_distances` of each input to the boundaries between its label ``y``
    and every other class.  The cache's tie guard (:mod:`pwlnet.tie_guard`) shrinks any
    ball that a decision boundary crosses; this term keeps the boundaries ``gamma`` codes
    away from the training inputs, like :func:`region_margin` does for the hidden
    neurons' hyperplanes (the second term of the Maximum Margin Regularizer).
    """
    gamma = _check_positive(gamma, "gamma (the region margin)")
    return torch.clamp(1 - boundary_distances(model, x, y, widths, metric) / gamma, min=0).mean()


class RegionMargin(nn.Module):
    """:func:`region_margin` with its settings held, for a training loop.

    Parameters
    ----------
    gamma : float
        Wanted ball radius in input codes (with ``widths``).
    widths : array_like, shape (d,), optional
        :func:`code_widths` of the training inputs.
    metric : {"linf", "l2"}
    fraction : float
        ``k`` as a share of the hidden neurons.

    Examples
    --------
    >>> margin = RegionMargin(4.0, code_widths(x_raw, mean, std))     # doctest: +SKIP
    >>> d, logits = margin.distances(model, xb)                        # doctest: +SKIP
    >>> loss = ce(logits, yb) + lam * margin(model, xb, distances=d)   # doctest: +SKIP
    """

    def __init__(self, gamma: float, widths=None, metric: str = "linf", fraction: float = DEFAULT_FRACTION):
        super().__init__()
        self.gamma = _check_positive(gamma, "gamma (the region margin)")
        self.metric = _check_metric(metric)
        self.fraction = _check_positive(fraction, "fraction")
        if self.fraction > 1:
            raise ValueError(f"fraction must be at most 1, not {fraction!r}")
        if widths is not None:
            widths = torch.as_tensor(np.asarray(widths, dtype=np.float64), dtype=torch.float32)
            if widths.dim() != 1 or not bool(torch.all(widths > 0)):
                raise ValueError("widths must be a 1-D array of positive code widths")
            self.register_buffer("widths", widths)
        else:
            self.widths = None

    def distances(self, model, x):
        """``(distances, logits)`` of :func:`hyperplane_distances` in this margin's units."""
        return hyperplane_distances(model, x, self.widths, self.metric)

    def forward(self, model, x, distances=None):
        return region_margin(model, x, self.gamma, self.widths, self.metric, self.fraction, distances)

    def boundary(self, model, x, y):
        """:func:`boundary_margin` with this margin's settings."""
        return boundary_margin(model, x, y, self.gamma, self.widths, self.metric)

    def extra_repr(self):
        return f"gamma={self.gamma}, metric={self.metric!r}, fraction={self.fraction}"
