"""Linear regions of ReLU networks: the affine piece around a point and its safe radii.

A ReLU network is affine on each set of inputs that share one on/off pattern of its
ReLU neurons.  :func:`linearize` finds, at a point ``c``, that pattern, the affine map
``f(x) = W x + b`` the network computes with it, and the radius of a ball around ``c``
in which no neuron changes sign, so that ``f`` is exact throughout the ball: the
numbers an entry of the hypersphere cache stores (:mod:`pwlnet.float_cache` in float space,
:mod:`pwlnet.code_cache` in input-code space).

The radius rule (this module owns it; everything else calls :func:`linearize`).  With
``c``'s pattern frozen, hidden neuron ``j`` (of any ReLU layer) has the affine
pre-activation ``z_j(x) = g_j . x + e_j``.  It keeps its sign while
``|g_j . (x - c)| < |z_j(c)|``, and by Hoelder's inequality
``|g_j . v| <= ||g_j||_q ||v||_p`` with ``q`` the dual exponent of ``p``.  So no neuron of
the first ReLU layer flips in the open ball ``||x - c||_p < min_j |z_j(c)| / ||g_j||_q``;
hence the second layer's ``g_j`` stay valid there, and so on by induction: the pattern,
and therefore ``W`` and ``b``, are the same throughout the ball.  The minimum runs over
every ReLU neuron of every layer; a neuron whose ``g_j`` is zero is constant over the
input space, never flips, and is skipped.

========  ===========  ==================  =============================
metric    ball norm p  divide by ||g||_q   hardware cost of the distance
========  ===========  ==================  =============================
``l2``    2            2-norm              squares (multipliers)
``linf``  infinity     1-norm              subtract, abs, max
``l1``    1            infinity-norm       subtract, abs, add
========  ===========  ==================  =============================

Networks are given as a list of blocks ``[(W, b, activation), ...]`` with
``activation`` in ``("relu", "none")`` and ``W`` of shape ``(n_out, n_in)`` -- what
:func:`pwlnet.quantize.code_space_blocks` returns -- or as a :class:`pwlnet.ir.Network`
of dense and ReLU layers.  Everything is float64.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import ir

__all__ = ["METRICS", "BLOCK_ACTIVATIONS", "as_blocks", "norm", "Linearization", "RegionBatch",
           "linearize", "linearize_batch", "Evaluation", "evaluate", "same_pattern"]

#: Ball metrics, named after the norm that measures distance to the centre.
METRICS = ("l2", "linf", "l1")
#: Activations a block may carry.
BLOCK_ACTIVATIONS = ("relu", "none")

# Norm of the ball, and the dual norm that scales each neuron's gradient row.
_ORD = {"l2": 2, "linf": np.inf, "l1": 1}
_DUAL_ORD = {"l2": 2, "linf": 1, "l1": np.inf}


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    return metric


def as_blocks(net) -> list:
    """``net`` as a list of float64 blocks ``[(W, b, activation), ...]``.

    Parameters
    ----------
    net : pwlnet.ir.Network or sequence of (W, b, activation)
        A network of dense layers, each followed by a ReLU or by nothing.

    Raises
    ------
    ValueError
        On a non-ReLU activation, bad shapes or non-finite numbers.
    """
    if isinstance(net, ir.Network):
        out = []
        for dense, act in net.blocks():
            if act is not None and act.kind != "relu":
                raise ValueError(f"{net.source or 'network'}: activation {act.name!r} is {act.kind!r}; "
                                 f"only ReLU networks have linear regions with this radius rule")
            out.append((dense.weight, dense.bias, "none" if act is None else "relu"))
        return out
    if isinstance(net, (str, bytes)) or not hasattr(net, "__iter__"):
        raise TypeError(f"network must be a pwlnet.ir.Network or a list of (W, b, activation), not {net!r}")
    out = []
    n = None
    for i, blk in enumerate(net):
        try:
            w, b, act = blk
        except (TypeError, ValueError):
            raise TypeError(f"block {i} must be a (W, b, activation) triple, not {blk!r}") from None
        w = np.asarray(w, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"block {i}: W shape {w.shape} and b shape {b.shape} do not form a dense layer")
        if n is not None and w.shape[1] != n:
            raise ValueError(f"block {i}: W takes {w.shape[1]} inputs but the previous block gives {n}")
        if act not in BLOCK_ACTIVATIONS:
            raise ValueError(f"block {i}: activation must be one of {BLOCK_ACTIVATIONS}, not {act!r}")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise ValueError(f"block {i}: W and b must be finite")
        out.append((w, b, act))
        n = w.shape[0]
    if not out:
        raise ValueError("the network holds no block")
    return out


def norm(v, metric: str = "l2"):
    """Length of ``v`` along its last axis in one of :data:`METRICS`.

    ``l2``: Euclidean; ``linf``: largest absolute entry; ``l1``: sum of absolute entries.
    """
    _check_metric(metric)
    return np.linalg.norm(np.asarray(v, dtype=np.float64), ord=_ORD[metric], axis=-1)


def _points(blocks, x, what="points"):
    d = blocks[0][0].shape[1]
    x = np.asarray(x, dtype=np.float64)
    single = x.ndim == 1
    x = x.reshape(1, -1) if single else x
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{what} have shape {np.shape(x)}; the network takes {d} inputs")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} must be finite")
    return x, single


def _core(blocks, x, keep_gradients):
    """Linearize every row of ``x`` (``(N, d)``); the one implementation of the radius rule."""
    n_pts = x.shape[0]
    G = None        # (N, n, d) affine map input -> current values, None for the identity
    a = np.zeros((n_pts, x.shape[1]))
    h = x
    patterns, pres, grads = [], [], []
    radii = {m: np.full(n_pts, np.inf) for m in METRICS}
    tight = {m: np.full((n_pts, 2), -1, dtype=np.int64) for m in METRICS}
    rows = np.arange(n_pts)
    for w, b, act in blocks:
        G = np.broadcast_to(w, (n_pts, *w.shape)) if G is None else np.matmul(w, G)
        a = a @ w.T + b
        # Pre-activations from the forward pass rather than from G c + a: that is what
        # the network computes, and it rounds less.
        z = h @ w.T + b
        if act == "none":
            h = z
            continue
        layer = len(patterns)
        absG = np.abs(G)
        dual = {"l2": np.sqrt(np.einsum("nij,nij->ni", G, G)), "linf": absG.sum(axis=2),
                "l1": absG.max(axis=2, initial=0.0)}
        for m in METRICS:
            ratio = np.full(z.shape, np.inf)
            # g_j == 0: the neuron is constant over the input space and never flips.
            np.divide(np.abs(z), dual[m], out=ratio, where=dual[m] > 0)
            j = np.argmin(ratio, axis=1)
            best = ratio[rows, j]
            better = best < radii[m]
            radii[m] = np.where(better, best, radii[m])
            tight[m][better] = np.stack([np.full(n_pts, layer), j], axis=1)[better]
        on = z > 0
        patterns.append(on)
        pres.append(z)
        if keep_gradients:
            grads.append(np.array(G))
        G = G * on[:, :, None]
        a = np.where(on, a, 0.0)
        h = np.where(on, z, 0.0)
    if G is None:     # pragma: no cover - as_blocks refuses empty networks
        raise ValueError("the network holds no block")
    return np.array(G), a, tuple(patterns), tuple(pres), tuple(grads), radii, tight


@dataclasses.dataclass(frozen=True, eq=False)
class Linearization:
    """The affine piece of a ReLU network around a point, and where it is exact.

    Attributes
    ----------
    point : numpy.ndarray, shape (d,)
        The centre ``c``.
    W : numpy.ndarray, shape (n_out, d)
    b : numpy.ndarray, shape (n_out,)
        The network equals ``W @ x + b`` wherever it has ``c``'s pattern, in particular
        throughout each safe ball.
    pattern : tuple of numpy.ndarray of bool
        Per ReLU layer, which neurons are on (pre-activation ``> 0``) at ``c``.
    pre_activations : tuple of numpy.ndarray
        Per ReLU layer, ``z(c)``.
    gradients : tuple of numpy.ndarray
        Per ReLU layer, the rows ``g_j`` (shape ``(n_l, d)``) of the pre-activations as
        affine functions of the input, with ``c``'s pattern frozen.
    radii : dict
        ``{metric: r}``: in the open ball ``norm(x - c, metric) < r`` no ReLU neuron
        changes sign.  ``inf`` when no neuron depends on the input.
    tight : dict
        ``{metric: (layer, neuron)}``: the ReLU neuron (layer counted among ReLU layers)
        that sets each radius, or ``None`` where the radius is infinite.
    """

    point: np.ndarray
    W: np.ndarray
    b: np.ndarray
    pattern: tuple
    pre_activations: tuple
    gradients: tuple
    radii: dict
    tight: dict

    @property
    def l2(self) -> float:
        """Safe radius of the Euclidean ball."""
        return self.radii["l2"]

    @property
    def linf(self) -> float:
        """Safe radius of the L-infinity ball (a cube)."""
        return self.radii["linf"]

    @property
    def l1(self) -> float:
        """Safe radius of the L1 ball (a cross-polytope)."""
        return self.radii["l1"]

    def contains(self, x, metric: str = "l2"):
        """Whether ``x`` (one point or rows) lies strictly inside the ``metric`` ball."""
        return norm(np.asarray(x, dtype=np.float64) - self.point, metric) < self.radii[metric]

    def __call__(self, x):
        """``W @ x + b`` for ``x`` of shape ``(d,)`` or ``(N, d)``."""
        return np.asarray(x, dtype=np.float64) @ self.W.T + self.b


@dataclasses.dataclass(frozen=True, eq=False)
class RegionBatch:
    """:func:`linearize_batch` of ``N`` points: the fields of :class:`Linearization`
    stacked along a first axis of length ``N`` (without the gradients, to bound memory).

    ``radii[m]`` has shape ``(N,)``; ``tight[m]`` has shape ``(N, 2)`` of
    ``(layer, neuron)``, ``(-1, -1)`` where the radius is infinite.
    """

    points: np.ndarray
    W: np.ndarray
    b: np.ndarray
    patterns: tuple
    pre_activations: tuple
    radii: dict
    tight: dict

    def __len__(self):
        return len(self.points)

    def __getitem__(self, i) -> Linearization:
        """Point ``i`` as a :class:`Linearization` (gradients left empty)."""
        tight = {m: (None if t[i, 0] < 0 else (int(t[i, 0]), int(t[i, 1]))) for m, t in self.tight.items()}
        return Linearization(point=self.points[i], W=self.W[i], b=self.b[i],
                             pattern=tuple(p[i] for p in self.patterns),
                             pre_activations=tuple(z[i] for z in self.pre_activations), gradients=(),
                             radii={m: float(r[i]) for m, r in self.radii.items()}, tight=tight)


def linearize(net, x) -> Linearization:
    """The affine piece of a ReLU network at ``x`` and its safe radii.

    Parameters
    ----------
    net : pwlnet.ir.Network or sequence of (W, b, activation)
        See :func:`as_blocks`.
    x : array_like, shape (d,)

    Returns
    -------
    Linearization
        In float64.

    Raises
    ------
    ValueError
        If ``x`` has the wrong size or is not finite, or the network is not a ReLU MLP.
    """
    blocks = as_blocks(net)
    pts, _ = _points(blocks, np.asarray(x, dtype=np.float64).reshape(-1), "point")
    G, a, pats, pres, grads, radii, tight = _core(blocks, pts, keep_gradients=True)
    return Linearization(
        point=pts[0], W=G[0], b=a[0], pattern=tuple(p[0] for p in pats),
        pre_activations=tuple(z[0] for z in pres), gradients=tuple(g[0] for g in grads),
        radii={m: float(r[0]) for m, r in radii.items()},
        tight={m: (None if t[0, 0] < 0 else (int(t[0, 0]), int(t[0, 1]))) for m, t in tight.items()})


def linearize_batch(net, x, *, chunk: int = 512) -> RegionBatch:
    """:func:`linearize` at every row of ``x`` (``(N, d)``), vectorised.

    ``chunk`` points are processed at a time, so memory stays near
    ``chunk * width * d`` floats however long ``x`` is.
    """
    blocks = as_blocks(net)
    pts, _ = _points(blocks, x)
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, not {chunk!r}")
    parts = [_core(blocks, pts[i:i + chunk], keep_gradients=False) for i in range(0, len(pts), chunk)]
    if not parts:
        parts = [_core(blocks, pts, keep_gradients=False)]
    cat = np.concatenate
    return RegionBatch(
        points=pts, W=cat([p[0] for p in parts]), b=cat([p[1] for p in parts]),
        patterns=tuple(cat(col) for col in zip(*[p[2] for p in parts])),
        pre_activations=tuple(cat(col) for col in zip(*[p[3] for p in parts])),
        radii={m: cat([p[5][m] for p in parts]) for m in METRICS},
        tight={m: cat([p[6][m] for p in parts]) for m in METRICS})


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
    """The float64 forward pass of :func:`evaluate` over ``N`` points.

    Attributes
    ----------
    outputs : numpy.ndarray, shape (N, n_out)
    patterns : tuple of numpy.ndarray of bool, each (N, n_l)
    pre_activations : tuple of numpy.ndarray, each (N, n_l)
    magnitudes : tuple of numpy.ndarray, each (N, n_l)
        ``|W| |h| + |b|`` of each ReLU pre-activation: the scale of its float rounding
        error, so ``|z| <= tol * magnitude`` means "on the boundary, within rounding".
    """

    outputs: np.ndarray
    patterns: tuple
    pre_activations: tuple
    magnitudes: tuple


def evaluate(net, x) -> Evaluation:
    """Run the network in float64 on the rows of ``x`` and record every ReLU pattern."""
    blocks = as_blocks(net)
    h, _ = _points(blocks, x)
    pats, pres, mags = [], [], []
    for w, b, act in blocks:
        z = h @ w.T + b
        if act == "relu":
            pats.append(z > 0)
            pres.append(z)
            mags.append(np.abs(h) @ np.abs(w).T + np.abs(b))
            h = np.where(z > 0, z, 0.0)
        else:
            h = z
    return Evaluation(outputs=h, patterns=tuple(pats), pre_activations=tuple(pres), magnitudes=tuple(mags))


def same_pattern(net, x, pattern, *, rel_tol: float = 1e-9):
    """Whether each row of ``x`` has ``pattern`` (one pattern, as in :attr:`Linearization.pattern`).

    Neurons whose pre-activation at the row is within ``rel_tol`` times its magnitude
    of zero are not compared: they sit on a region boundary within float rounding, and
    there ``relu(z) == 0 == z`` up to that rounding, so either side gives the same map.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)
    """
    ev = evaluate(net, x)
    if len(pattern) != len(ev.patterns):
        raise ValueError(f"pattern has {len(pattern)} ReLU layers; the network has {len(ev.patterns)}")
    ok = np.ones(len(ev.outputs), dtype=bool)
    for p, got, z, mag in zip(pattern, ev.patterns, ev.pre_activations, ev.magnitudes):
        clear = np.abs(z) > rel_tol * mag
        ok &= ~np.any(clear & (got != np.asarray(p, dtype=bool)), axis=1)
    return ok
