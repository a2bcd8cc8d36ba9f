"""Software region cache: hits are exact, every lookup stage works, replacement policies."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pwlnet import regions
from pwlnet.float_cache import CacheStats, RegionCache

from helpers import nets


def knots(*ks):
    """1-D network ``f(x) = sum_k relu(x - k)``: linear regions between consecutive knots."""
    k = np.asarray(ks, dtype=np.float64)
    return [(np.ones((len(k), 1)), -k, "relu"), (np.ones((1, len(k))), np.zeros(1), "none")]


@settings(max_examples=30, deadline=None)
@given(nets, st.integers(0, 2**31 - 1), st.sampled_from(regions.METRICS),
       st.sampled_from(["balltree", "kdtree"]), st.sampled_from(["lru", "smallest"]))
def test_every_hit_is_exact(blocks, seed, metric, index, policy):
    rng = np.random.default_rng(seed)
    d = blocks[0][0].shape[1]
    # a slow random walk (mostly hits) with jumps back to earlier places (index hits)
    walk = np.cumsum(rng.normal(scale=0.02, size=(100, d)), axis=0)
    x = np.concatenate([walk, walk[rng.integers(0, 100, size=40)] + rng.normal(scale=1e-3, size=(40, d))])
    cache = RegionCache(blocks, metric, capacity=30, policy=policy, recent=2, rebuild_every=4, index=index)
    for q in x:
        slot, _ = cache.find(q)
        center = cache.entry(slot)[0] if slot >= 0 else None
        y, hit = cache.query(q)
        assert hit == (slot >= 0)
        ref = regions.evaluate(blocks, q[None]).outputs[0]
        np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-9)
        if hit:
            pattern = regions.linearize(blocks, center).pattern
            assert regions.same_pattern(blocks, q[None], pattern)[0]
    s = cache.stats
    assert s.hits + s.misses == s.queries == len(x)
    assert s.hits == sum(s.hits_by_stage.values())
    assert cache.size <= 30


def test_all_lookup_stages_are_used():
    blocks = knots(*range(-20, 21))          # regions of width 1
    cache = RegionCache(blocks, "l2", recent=1, rebuild_every=4)
    centers = np.arange(-19.5, 20.0, 1.0)
    for c in centers:                       # 40 misses, index rebuilt every 4
        assert not cache.query([c])[1]
    assert cache.stats.rebuilds == 10
    cache.query([centers[0] + 0.1])          # index
    cache.query([centers[0] - 0.1])          # last hit
    cache.query([centers[-1] + 0.2])         # most recent
    assert cache.stats.hits_by_stage == {"last": 1, "recent": 1, "index": 1, "buffer": 0}
    cache.query([25.5])                      # miss: radius 5.5 up to the last knot, unindexed
    cache.query([-30.5])                     # miss: now the most recent entry
    cache.query([25.4])                      # found in the unindexed buffer
    assert cache.stats.hits_by_stage["buffer"] == 1
    assert cache.stats.hit_rate == pytest.approx(4 / 46)


def test_lru_replacement():
    cache = RegionCache(knots(0, 1, 2, 3, 4), "linf", capacity=2, policy="lru")
    assert [cache.query([x])[1] for x in (0.5, 1.5, 0.6, 2.5, 0.7, 1.6)] == [False, False, True, False, True, False]
    # 2.5 evicted 1.5 (older than the re-used 0.5); 1.6 then evicted 2.5
    assert sorted(cache.entry(s)[0][0] for s in cache.slots()) == [0.5, 1.6]
    assert cache.stats.evictions == 2 and cache.size == 2


def test_smallest_radius_replacement():
    cache = RegionCache(knots(0, 1, 3, 7), "l1", capacity=2, policy="smallest")
    cache.query([0.5])       # radius 0.5
    cache.query([2.0])       # radius 1
    cache.query([0.4])       # hit: recently used, still the smallest
    cache.query([5.0])       # radius 2: evicts 0.5 although LRU would evict 2.0
    assert sorted(cache.entry(s)[1] for s in cache.slots()) == pytest.approx([1.0, 2.0])
    assert cache.query([2.1])[1] and not cache.query([0.5])[1]


def test_unbounded_and_empty_balls():
    cache = RegionCache(knots(0.0), "l2")
    assert not cache.query([1.0])[1]          # radius 1 around 1
    assert not cache.query([0.0])[1]          # on the knot: radius 0, not stored
    assert cache.stats.uncached == 1 and cache.size == 1
    flat = [(np.zeros((2, 1)), np.ones(2), "relu"), (np.ones((1, 2)), np.zeros(1), "none")]
    cache = RegionCache(flat, "linf")
    cache.query([0.0])
    y, hit = cache.query([1e9])
    assert hit and y.tolist() == [2.0] and cache.stats.hits_by_stage["recent"] == 1


def test_clear_and_growth():
    cache = RegionCache(knots(*range(200)), "l2", rebuild_every=1000)
    for x in np.arange(0.5, 150):
        cache.query([x])
    assert cache.size == 150 and cache.stats.misses == 150
    assert cache.query([3.3])[1]
    cache.clear()
    assert cache.size == 0 and cache.stats == CacheStats()
    assert not cache.query([3.3])[1]


def test_arguments_are_checked():
    blocks = knots(0.0)
    with pytest.raises(ValueError, match="policy must be one of lru, smallest, not 'fifo'"):
        RegionCache(blocks, policy="fifo")
    with pytest.raises(ValueError, match="metric must be one of l2, linf, l1, not 'cos'"):
        RegionCache(blocks, "cos")
    with pytest.raises(ValueError, match="capacity must be a positive integer or None, not 0"):
        RegionCache(blocks, capacity=0)
    with pytest.raises(ValueError, match="index must be one of balltree, kdtree, not 'rtree'"):
        RegionCache(blocks, index="rtree")
    with pytest.raises(ValueError, match="query must be 1 finite values"):
        RegionCache(blocks).query([1.0, 2.0])
    with pytest.raises(KeyError, match="slot 3 holds no entry"):
        RegionCache(blocks).entry(3)
