"""The tie guard: a cache hit never changes the arg-max of the full quantized network.

Inside an entry's ball the float network is exactly ``G(x) = W x + b`` (here in output
codes).  The cache answers with ``y_c = sat(round(v_c))``, ``v_c = m_c (W_c x + b_c)``
(the entry's one quantized layer), while the full network answers ``y_f`` after rounding
in every layer.  Both approximate ``G``, but differently, so near a tie between two
classes they can pick different winners.  This module bounds both deviations over the
whole ball and shrinks the ball until no point in it can be such a near-tie.  Nothing
in the hardware changes: the guard lives in the entry's bound ``R``, so an input it turns
away is a miss (answered by the full network) and counted as one.

Notation: ``rho`` is the ball's radius in input codes; ``||.||_*`` the dual norm of the
cache's metric (L1 for L-infinity balls, L2 for L2 balls, max for L1 balls), so an
affine ``f(x) = f(c) + J (x - c)`` lies within ``f(c) +- rho ||J_row||_*`` on the ball.

*Errors as an affine part plus a box.*  Inside the ball the float network has ``c``'s
ReLU pattern, so every float pre-activation ``zeta_l`` and activation ``alpha_l`` (in the
codes of layer ``l``) is affine in ``x``.  The full network's error ``e_l = a_l - alpha_l``
is kept as ``L_l(x) + r``, an affine function ``L_l`` (value at ``c`` and Jacobian) plus
a box ``|r| <= r_l``.  The input codes are exact (``e = 0``).  Layer ``l`` computes
``v = m (W_q a + b_q)``, the float layer ``zeta = W~ alpha + b~`` (``W~ = W s_in / s_out``,
``b~ = b / s_out``), so

``v - zeta = [m W_q L(x) + (m W_q - W~) alpha(x) + (m b_q - b~)] + m W_q r``:

the bracket is affine (the weights' quantization error is carried exactly, with its
cancellations), and the box grows to ``|m W_q| r_l``.  Then the activation:
``a = clip(round(v), 0, hi)`` against ``alpha = relu(zeta)``:

* a neuron off in the float network whose ``v`` stays below 1/2 is 0 on both sides:
  no error; if ``v`` can reach 1/2, the error is within ``[0, min(hi, v_max + 1/2)]``;
* a neuron on whose ``v`` stays in ``[-1/2, hi + 1/2)`` is ``round(v)``: the affine part
  passes and the box grows by 1/2;
* otherwise (near 0 or saturating) ``|a - alpha| <= |v - zeta| + 1/2 + max(0, zeta - hi)``
  (``clip(., 0, hi)`` is 1-Lipschitz), all in the box.

*The guard.*  With ``k = argmax G(c)`` and the output layer's ``v`` (full network) or
``v_c`` (cache), both arg-maxes are ``k`` at every ``x`` of the ball, with no tie, when for
every ``j != k`` (with ``u = G + L`` the affine part of ``v``, ``r`` its box):

* ``min (u_k - u_j) - r_k - r_j > 1``, so ``round(v_k) > round(v_j)``;
* ``max u_j + r_j < hi - 1/2`` and ``min u_k - r_k > lo + 1/2``, so saturation cannot
  make them equal.

The conditions fail more easily as ``rho`` grows, so :func:`guarded_bound` bisects for
the largest integer bound that passes.  At bound 0 (the center alone) no bound is
needed: both answers are computed and compared; if their arg-maxes differ no entry is
made.
"""

from __future__ import annotations

import math

import numpy as np

from . import fixedpoint as fx
from . import golden

__all__ = ["FullNetworkBound", "ball_radius", "guarded_bound"]

# Added to every bound: covers the float64 rounding of the terms (a few ulps of values
# of order 1e3), so that a decision on the edge goes toward a miss.
_SLACK = 1e-6


def _dual(metric):
    return {"linf": 1, "l2": 2, "l1": np.inf}[metric]


def ball_radius(bound: int, metric: str) -> float:
    """The radius ``rho`` (in codes) of the closed ball of integer points a bound admits."""
    return math.sqrt(bound) if metric == "l2" else float(bound)


def _mult(layer):
    return layer.multiplier.astype(np.float64) / np.exp2(layer.shift.astype(np.float64))


class FullNetworkBound:
    """The full quantized network's deviation from the float one, over a ball.

    Parameters
    ----------
    model : pwlnet.artifact.CompiledModel
        ReLU hidden layers, no LERP.
    blocks : list
        The float network in code space (:func:`pwlnet.code_cache.code_blocks`), one
        block per layer of ``model``.
    """

    def __init__(self, model, blocks):
        if len(blocks) != len(model.layers):
            raise ValueError(f"the float network has {len(blocks)} blocks, the compiled model "
                             f"{len(model.layers)} layers")
        self.model = model
        self.layers = []
        s_in = 1.0
        for i, (layer, (w, b, act)) in enumerate(zip(model.layers, blocks)):
            if w.shape != layer.weight.shape:
                raise ValueError(f"layer {layer.name!r}: float weights {w.shape}, quantized {layer.weight.shape}")
            want = "none" if i == len(blocks) - 1 else "relu"
            if act != want or layer.activation != want:
                raise ValueError(f"the tie guard needs ReLU hidden layers and a plain output layer; layer "
                                 f"{layer.name!r} has {layer.activation!r}")
            m = _mult(layer)[:, None]
            s_out = float(layer.out_scale)
            mwq = m * layer.weight.astype(np.float64)
            self.layers.append({"mwq": mwq, "abs_mwq": np.abs(mwq), "dw": mwq - w * (s_in / s_out),
                                "db": m[:, 0] * layer.bias.astype(np.float64) - b / s_out, "s_out": s_out,
                                "hi": fx.signed_range(layer.out_bits)[1]})
            s_in = s_out

    @property
    def out_scale(self) -> float:
        return self.layers[-1]["s_out"]

    @property
    def out_range(self) -> tuple:
        return fx.signed_range(self.model.layers[-1].out_bits)

    def output_error(self, lin, rho: float, metric: str):
        """The output layer's ``v - G`` over the ball: ``(L0, JL, r)``.

        ``L0 + JL (x - c)`` is the affine part (value at the center ``lin.point``,
        Jacobian), ``r`` the box, all per output in output codes.  ``lin`` is the
        :class:`pwlnet.regions.Linearization` at the center, in code space.
        """
        q = _dual(metric)
        d = lin.point.size
        L0, JL, r = np.zeros(d), np.zeros((d, d)), np.zeros(d)           # the exact input codes
        alpha0, jalpha = lin.point, np.eye(d)
        hidden = len(self.layers) - 1
        for i, P in enumerate(self.layers):
            v0 = P["mwq"] @ L0 + P["dw"] @ alpha0 + P["db"]
            jv = P["mwq"] @ JL + P["dw"] @ jalpha
            rv = P["abs_mwq"] @ r
            if i == hidden:
                return v0, jv, rv
            z0 = lin.pre_activations[i] / P["s_out"]
            jz = lin.gradients[i] / P["s_out"]
            on = lin.pattern[i]
            # u = zeta + L: the affine part of v; v within u +- rv.
            u0, ju = z0 + v0, jz + jv
            spread = rho * np.linalg.norm(ju, ord=q, axis=1)
            v_lo, v_hi = u0 - spread - rv, u0 + spread + rv
            zeta_hi = z0 + rho * np.linalg.norm(jz, ord=q, axis=1)
            hi = P["hi"]
            exact_zero = ~on & (v_hi < 0.5)
            passes = on & (v_lo >= -0.5) & (v_hi < hi + 0.5)
            lv_max = np.abs(v0) + rho * np.linalg.norm(jv, ord=q, axis=1)
            r_new = np.where(exact_zero, 0.0,
                             np.where(passes, rv + 0.5,
                                      np.where(on, lv_max + rv + 0.5 + np.maximum(0.0, zeta_hi - hi),
                                               np.clip(v_hi + 0.5, 0.0, hi))))
            keep = passes[:, None]
            L0, JL, r = np.where(passes, v0, 0.0), np.where(keep, jv, 0.0), r_new
            alpha0, jalpha = np.where(on, z0, 0.0), np.where(on[:, None], jz, 0.0)
        raise AssertionError("unreachable")  # pragma: no cover


def _no_tie(u0, ju, r, k, rho, q, lo, hi):
    """The guard's conditions (module docs) for an output ``v`` within ``u0 + ju (x - c) +- r``."""
    others = np.arange(u0.size) != k
    if not others.any():
        return True
    gap = u0[k] - u0[others] - rho * np.linalg.norm(ju[k] - ju[others], ord=q, axis=1)
    if not np.all(gap - r[k] - r[others] > 1 + _SLACK):
        return False
    top_j = u0[others] + rho * np.linalg.norm(ju[others], ord=q, axis=1) + r[others]
    low_k = u0[k] - rho * np.linalg.norm(ju[k], ord=q) - r[k]
    return bool(np.all(top_j < hi - 0.5 - _SLACK) and low_k > lo + 0.5 + _SLACK)


def _passes(full: FullNetworkBound, lin, entry_layer, bound, metric):
    rho = ball_radius(bound, metric)
    q = _dual(metric)
    s_out = full.out_scale
    lo, hi = full.out_range
    g0, jg = lin(lin.point) / s_out, lin.W / s_out
    k = int(np.argmax(g0))
    L0, JL, r = full.output_error(lin, rho, metric)
    if not _no_tie(g0 + L0, jg + JL, r, k, rho, q, lo, hi):
        return False
    # The entry's layer is affine itself: v_c = m (W_c x + b_c), exactly (no box).
    m = _mult(entry_layer)
    w_c = m[:, None] * entry_layer.weight.astype(np.float64)
    u_c = w_c @ lin.point + m * entry_layer.bias.astype(np.float64)
    return _no_tie(u_c, w_c, np.zeros(g0.size), k, rho, q, *fx.signed_range(entry_layer.out_bits))


def guarded_bound(full: FullNetworkBound, lin, entry_layer, bound: int, metric: str):
    """The largest bound ``<= bound`` whose ball holds no near-tie (see module docs).

    Returns
    -------
    int or None
        ``None`` when even the center alone is answered with another arg-max by the
        entry than by the full network (no entry should be made there).
    """
    if _passes(full, lin, entry_layer, bound, metric):
        return bound
    if not _passes(full, lin, entry_layer, 0, metric):
        c = np.asarray(np.rint(lin.point), dtype=np.int64)[None, :]
        cached = golden.layer_forward(entry_layer, c)[1]
        return 0 if golden.argmax(cached)[0] == golden.argmax(golden.forward(full.model, c))[0] else None
    lo, hi = 0, bound          # lo passes, hi fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _passes(full, lin, entry_layer, mid, metric):
            lo = mid
        else:
            hi = mid
    return lo
