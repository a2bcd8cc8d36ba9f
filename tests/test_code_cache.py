"""The integer cache (pwlnet.code_cache): integer hits are never false, radii, entries, lookup."""

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from pwlnet import fixedpoint as fx, golden, regions
from pwlnet.code_cache import (MAGIC, EntryError, HwCache, HwEntry, distance, distance_bits, make_entry,
                               max_distance, radius_bound)
from pwlnet.quantize import QuantizeError

from helpers import ball_points, compiled, far_apart, models


def assert_float_exact(blocks, lin, q):
    q = np.asarray(q, dtype=np.float64)
    assert regions.same_pattern(blocks, q, lin.pattern).all()
    out = regions.evaluate(blocks, q).outputs
    scale = 1.0 + np.abs(q) @ np.abs(lin.W).T + np.abs(lin.b)
    np.testing.assert_array_less(np.abs(out - lin(q)), 1e-9 * scale)


@settings(max_examples=40, deadline=None)
@given(models, st.integers(0, 2**31 - 1), st.sampled_from(regions.METRICS))
def test_integer_hits_are_float_exact(spec, seed, metric):
    try:
        net, model, blocks = compiled(*spec)
    except QuantizeError:
        assume(False)
    rng = np.random.default_rng(seed)
    lo, hi = fx.signed_range(model.input_bits)
    for c in rng.integers(lo, hi + 1, size=(4, model.input_dim)):
        lin = regions.linearize(blocks, c.astype(np.float64))
        r = lin.radii[metric]
        bound = radius_bound(r, metric, dim=c.size, bits=model.input_bits)
        # the integer bound never reaches the float radius (0 = the center alone, always exact)
        t = r * r if metric == "l2" else r
        assert bound < t or bound == 0
        assert_float_exact(blocks, lin, ball_points(rng, c, bound, metric))
        try:
            entry = make_entry(model, blocks, c, metric)
        except EntryError:
            continue
        # the tie guard may only shrink the bound the radius gives
        assert entry.region_bound == bound and entry.bound <= bound and entry.hits(c)


def test_exhaustive_integer_balls_in_two_dimensions():
    net, model, blocks = compiled(7, 2, [16])
    rng = np.random.default_rng(0)
    bounds = {m: [] for m in regions.METRICS}
    for c in rng.integers(-128, 128, size=(40, 2)):
        lin = regions.linearize(blocks, c.astype(np.float64))
        for m in regions.METRICS:
            bound = radius_bound(lin.radii[m], m, dim=2, bits=8)
            reach = int(np.sqrt(bound)) if m == "l2" else bound
            reach = min(reach, 255)
            grid = np.array(list(itertools.product(range(-reach, reach + 1), repeat=2))) + c
            grid = grid[distance(grid, c, m) <= bound]
            assert_float_exact(blocks, lin, grid)
            bounds[m].append(bound)
    # the test means something only if balls hold many points
    assert np.median(bounds["linf"]) >= 3 and np.median(bounds["l2"]) >= 9


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e5), st.sampled_from(regions.METRICS), st.integers(1, 8), st.integers(2, 16),
       st.sampled_from([0.0, 1e-6, 1e-3]))
def test_radius_bound_rounds_toward_miss(r, metric, dim, bits, margin):
    bound = radius_bound(r, metric, dim=dim, bits=bits, margin=margin)
    t = r * r if metric == "l2" else r
    cap = max_distance(metric, dim, bits)
    assert 0 <= bound <= cap
    assert bound < t or bound == 0
    # and gives away at most one integer step beyond the margin
    safe = r * (1 - margin)
    assert bound == cap or bound + 1 >= (safe * safe if metric == "l2" else safe) * (1 - 1e-12)


def test_radius_bound_values():
    assert radius_bound(3.0, "linf", dim=2, bits=8, margin=0) == 2      # strictly below
    assert radius_bound(3.2, "linf", dim=2, bits=8) == 3
    assert radius_bound(3.0000001, "linf", dim=2, bits=8) == 2          # inside the margin
    assert radius_bound(2.0, "l2", dim=2, bits=8, margin=0) == 3        # sum of squares < 4
    assert radius_bound(0.0, "l1", dim=2, bits=8) == 0                  # the center alone
    assert radius_bound(np.inf, "l2", dim=3, bits=4) == 3 * 15 * 15
    with pytest.raises(ValueError, match="radius must be a non-negative number, not -1.0"):
        radius_bound(-1.0, "l2", dim=2, bits=8)
    with pytest.raises(ValueError, match="metric must be one of l2, linf, l1, not 'l0'"):
        distance([1], [2], "l0")
    assert distance([[3, -4], [0, 0]], [0, 0], "l2").tolist() == [25, 0]
    assert distance([3, -4], [1, 1], "linf") == 5 and distance([3, -4], [1, 1], "l1") == 7
    # register widths of the comparator: 8-bit codes, d = 16
    assert [distance_bits(m, 16, 8) for m in ("linf", "l1", "l2")] == [8, 12, 20]


@pytest.mark.parametrize("requant", ["shift", "multiply"])
@pytest.mark.parametrize("metric", regions.METRICS)
def test_entry_words_round_trip(requant, metric):
    net, model, blocks = compiled(3, 4, [24, 12], n_out=5, requant=requant)
    rng = np.random.default_rng(1)
    for c in rng.integers(-128, 128, size=(5, 4)):
        e = make_entry(model, blocks, c, metric)
        words = e.to_words()
        assert words.dtype == np.uint32 and words[0] == MAGIC
        assert len(words) == 6 + 4 + 5 * (4 + 4)
        back = HwEntry.from_words(words, out_scale=model.output_scale)
        assert np.array_equal(back.to_words(), words)
        assert (back.metric, back.bound) == (e.metric, e.bound)
        assert np.array_equal(back.center, e.center)
        for f in ("weight", "bias", "multiplier", "shift"):
            assert np.array_equal(getattr(back.layer, f), getattr(e.layer, f))
        for f in ("weight_bits", "in_bits", "out_bits", "acc_bits", "requant", "out_scale"):
            assert getattr(back.layer, f) == getattr(e.layer, f)
        q = rng.integers(-128, 128, size=(6, 4))
        assert np.array_equal(back.evaluate(q), e.evaluate(q))


def test_entry_words_are_checked():
    net, model, blocks = compiled(3, 3, [8])
    words = make_entry(model, blocks, [1, -2, 3], "linf").to_words()
    bad = words.copy()
    bad[0] ^= 1
    with pytest.raises(EntryError, match="not the entry magic 0x70774345"):
        HwEntry.from_words(bad)
    with pytest.raises(EntryError, match=r"has \d+ words, not \d+"):
        HwEntry.from_words(words[:-1])
    bad = words.copy()
    bad[1] = (bad[1] & ~np.uint32(0xFF)) | 7
    with pytest.raises(EntryError, match="entry layout version 7 is not supported"):
        HwEntry.from_words(bad)
    bad = words.copy()
    bad[6 + 3] = 0x7FFF        # first weight, far outside 8 bits
    with pytest.raises(EntryError, match="a weight does not fit 8 bits"):
        HwEntry.from_words(bad)


def test_lookup_priority_outputs_and_counters():
    net, model, blocks = compiled(11, 3, [16, 16])
    cache = HwCache(model, 4, "l2")
    rng = np.random.default_rng(2)
    a, b = far_apart(model, blocks, "l2", 2, rng)
    cache.write_entry(3, a)
    cache.write_entry(1, a)
    cache.write_entry(2, b)
    q = np.stack([a.center, b.center, fx.saturate(-a.center - 1, 8)])
    res = cache.lookup(q)
    assert res.slot.tolist()[:2] == [1, 2]          # the lowest hitting slot wins
    for i, s in enumerate(res.slot):
        want = cache.entries[s].evaluate(q[i:i + 1]) if s >= 0 else golden.forward(model, q[i:i + 1])
        assert np.array_equal(res.outputs[i], want[0])
    assert cache.hits + cache.misses == 3 and cache.hits == int(res.hit.sum())
    # against a plain loop over random codes
    q = rng.integers(-128, 128, size=(300, 3))
    q[:50] = a.center + rng.integers(-2, 3, size=(50, 3))
    q = fx.saturate(q, 8)
    res = cache.lookup(q)
    want = [next((s for s in range(4) if cache.entries[s] is not None and cache.entries[s].hits(x)), -1) for x in q]
    assert res.slot.tolist() == want
    cache.clear()
    assert not cache.valid.any() and not cache.lookup(a.center).hit[0]
    assert cache.misses > 0
    cache.reset_counters()
    assert (cache.hits, cache.misses) == (0, 0)


def test_write_entry_is_checked():
    net, model, blocks = compiled(11, 3, [16])
    cache = HwCache(model, 2, "linf")
    e = make_entry(model, blocks, [0, 0, 0], "l2")
    with pytest.raises(EntryError, match="entry metric 'l2' differs from the cache's 'linf'"):
        cache.write_entry(0, e)
    with pytest.raises(IndexError, match="slot must be an integer in 0..1, not 2"):
        cache.write_entry(2, make_entry(model, blocks, [0, 0, 0], "linf"))
    with pytest.raises(ValueError, match="n_entries must be a positive integer, not 0"):
        HwCache(model, 0, "linf")
    with pytest.raises(golden.InputError, match="outside the 8-bit range"):
        cache.lookup([0, 0, 300])
