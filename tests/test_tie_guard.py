"""The tie guard: its error bound holds, and a guarded hit never changes the arg-max."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from pwlnet import fixedpoint as fx, golden, regions
from pwlnet.cache_host import run_stream
from pwlnet.code_cache import EntryError, make_entry
from pwlnet.quantize import QuantizeError
from pwlnet.tie_guard import FullNetworkBound, ball_radius, guarded_bound

from helpers import ball_points, compiled, models


def _in_range(model, pts):
    lo, hi = fx.signed_range(model.input_bits)
    return pts[np.all((pts >= lo) & (pts <= hi), axis=1)]


def _pre_round_outputs(model, codes):
    """The output layer's value before rounding, ``acc * M / 2**S`` (exact in float64 here)."""
    acc = golden.trace(model, codes)[-1][0]
    last = model.layers[-1]
    return acc * (last.multiplier / np.exp2(last.shift))


def _centers(spec, requant, seed):
    """A random compiled network, and three random centers in its code range."""
    try:
        net, model, blocks = compiled(*spec, requant=requant)
    except QuantizeError:
        assume(False)
    rng = np.random.default_rng(seed)
    lo, hi = fx.signed_range(model.input_bits)
    return model, blocks, rng, rng.integers(lo, hi + 1, size=(3, model.input_dim))


@settings(max_examples=40, deadline=None)
@given(models, st.integers(0, 2**31 - 1), st.sampled_from(regions.METRICS), st.sampled_from(["shift", "multiply"]))
def test_full_network_error_bound_holds(spec, seed, metric, requant):
    """Everywhere in a ball inside the region, v(x) lies in G(x) + L(x) +- r."""
    model, blocks, rng, centers = _centers(spec, requant, seed)
    full = FullNetworkBound(model, blocks)
    for c in centers:
        try:
            entry = make_entry(model, blocks, c, metric, tie_guard=False)
        except EntryError:
            continue
        lin = regions.linearize(blocks, c.astype(np.float64))
        R = entry.bound
        L0, JL, r = full.output_error(lin, ball_radius(R, metric), metric)
        pts = _in_range(model, ball_points(rng, c, R, metric))
        v = _pre_round_outputs(model, pts)
        s = model.output_scale
        g = regions.evaluate(blocks, pts.astype(np.float64)).outputs / s
        affine = L0 + (pts - c) @ JL.T
        tol = 1e-7 * (1 + np.abs(g))
        assert np.all(np.abs(v - g - affine) <= r + tol), (np.abs(v - g - affine) - r).max()


@settings(max_examples=60, deadline=None)
@given(models, st.integers(0, 2**31 - 1), st.sampled_from(regions.METRICS), st.sampled_from(["shift", "multiply"]))
def test_guarded_hits_keep_the_argmax(spec, seed, metric, requant):
    model, blocks, rng, centers = _centers(spec, requant, seed)
    for c in centers:
        try:
            entry = make_entry(model, blocks, c, metric)
        except EntryError:
            continue
        assert entry.bound <= entry.region_bound
        pts = _in_range(model, ball_points(rng, c, entry.bound, metric, n=40))
        assert np.array_equal(golden.argmax(entry.evaluate(pts)), golden.argmax(golden.forward(model, pts)))


def _near_tie_case(at_center=False):
    """A seeded search for an unguarded entry whose ball holds an arg-max flip (at its
    center too, or only elsewhere)."""
    rng = np.random.default_rng(7)
    for seed in range(200):
        try:
            net, model, blocks = compiled(seed, 2, [16], n_out=2)
        except QuantizeError:
            continue
        lo, hi = fx.signed_range(model.input_bits)
        for c in rng.integers(lo // 2, hi // 2, size=(20, 2)):
            try:
                e = make_entry(model, blocks, c, "linf", tie_guard=False)
            except EntryError:
                continue
            R = e.bound
            g = np.arange(-R, R + 1)
            pts = _in_range(model, c + np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
            flip = golden.argmax(e.evaluate(pts)) != golden.argmax(golden.forward(model, pts))
            center_flips = bool(flip[np.all(pts == c, axis=1)].any())
            if flip.any() and center_flips == at_center:
                return model, blocks, c, e, pts, flip
    pytest.fail("no near-tie found among the seeded networks")  # pragma: no cover


def test_guard_shrinks_a_ball_that_holds_a_flip():
    model, blocks, c, unguarded, pts, flip = _near_tie_case()
    guarded = make_entry(model, blocks, c, "linf")
    assert guarded.region_bound == unguarded.bound
    assert guarded.bound < unguarded.bound
    inside = guarded.hits(pts)
    assert not (inside & flip).any()
    # every point of the guarded ball (exhaustively: it is 2-D) keeps the arg-max
    assert np.array_equal(golden.argmax(guarded.evaluate(pts[inside])),
                          golden.argmax(golden.forward(model, pts[inside])))


def test_stream_through_a_near_tie():
    """The same stream: argmax changes without the guard, none with it; guarded hits are misses."""
    model, blocks, c, _, pts, flip = _near_tie_case()
    stream = np.concatenate([c[None], pts[flip], pts[::7]])
    plain = run_stream(model, blocks, stream, 4, "linf", "lru", tie_guard=False)
    guarded = run_stream(model, blocks, stream, 4, "linf", "lru")
    assert plain.n_argmax_disagree > 0
    assert guarded.n_argmax_disagree == 0 and guarded.n_false_hits == 0
    assert guarded.hits + guarded.misses == len(stream) and guarded.hits < plain.hits
    assert guarded.shrunk > 0 and plain.shrunk == 0


def test_center_tie_makes_no_entry():
    """At bound 0 the answers at the center are compared exactly: a flip there, no entry."""
    model, blocks, c, e, _, _ = _near_tie_case(at_center=True)
    lin = regions.linearize(blocks, c.astype(np.float64))
    assert guarded_bound(FullNetworkBound(model, blocks), lin, e.layer, e.bound, "linf") is None
    with pytest.raises(EntryError, match=r"another arg-max than the full network \(a near-tie\); left uncached"):
        make_entry(model, blocks, c, "linf")


def test_guard_needs_relu_layers():
    from pwlnet.synth import random_model
    with pytest.raises(ValueError, match="float network has 1 blocks, the compiled model 2 layers"):
        net, model, blocks = compiled(0, 2, [4])
        FullNetworkBound(random_model(0, [2, 4, 3]), blocks[:1])
