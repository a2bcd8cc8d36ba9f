"""The host's side of the cache (pwlnet.cache_host): slot policies, the streaming loop, preload."""

import dataclasses

import numpy as np
import pytest

from pwlnet import golden, regions
from pwlnet.cache_host import preload, run_stream
from pwlnet.code_cache import EntryError, HwCache, distance, make_entry

from helpers import compiled, far_apart


def test_steep_map_is_uncacheable():
    net, model, blocks = compiled(5, 2, [8])
    last = model.layers[-1]
    steep = dataclasses.replace(model, layers=[*model.layers[:-1], dataclasses.replace(last, out_scale=1e-9)])
    with pytest.raises(EntryError, match="cache entry at codes \\[0, 0\\]"):
        make_entry(steep, blocks, [0, 0], "linf")
    res = run_stream(steep, blocks, np.zeros((3, 2), dtype=np.int64), 4, "linf")
    assert res.uncacheable == 3 and not res.hit.any() and (res.written == -1).all()


@pytest.mark.parametrize("policy, slot_for_c", [("round_robin", 0), ("lru", 1)])
def test_full_cache_replacement(policy, slot_for_c):
    net, model, blocks = compiled(11, 3, [32, 32])
    a, b, c = far_apart(model, blocks, "linf", 3, np.random.default_rng(4))
    stream = np.stack([a.center, b.center, a.center, c.center, a.center])
    res = run_stream(model, net, stream, 2, "linf", policy)
    # a, b fill both slots; a hits; c must evict: FIFO takes slot 0 (a), LRU slot 1 (b)
    assert res.hit.tolist()[:4] == [False, False, True, False]
    assert res.written.tolist()[:4] == [0, 1, -1, slot_for_c]
    # LRU kept the recently used a; FIFO threw it out
    assert res.hit[4] == (policy == "lru")
    assert res.written[4] == (-1 if policy == "lru" else 1)
    assert res.hits == int(res.hit.sum()) and res.misses == len(stream) - res.hits


@pytest.mark.parametrize("metric", regions.METRICS)
def test_stream_against_the_full_network(metric):
    net, model, blocks = compiled(13, 3, [24, 16])
    t = np.linspace(0, 4, 400)[:, None]
    path = np.hstack([np.sin(t), np.cos(1.7 * t), np.sin(0.6 * t)]) * 1.5
    codes = golden.quantize_inputs(model, path)
    res = run_stream(model, net, codes, 8, metric, "lru")
    assert 0.2 < res.hit_rate < 1.0          # enough hits to compare
    assert res.n_false_hits == 0
    assert np.array_equal(res.full, golden.forward(model, codes))
    assert np.array_equal(res.outputs[~res.hit], res.full[~res.hit])
    assert np.array_equal(res.code_diff, np.abs(res.outputs - res.full).max(axis=1))
    assert res.max_code_diff <= 4            # one rounding versus one per layer
    for i in np.flatnonzero(res.hit)[:40]:
        assert distance(codes[i], res.center[i], metric) <= res.bounds[i]
    # the code-space blocks may be given instead of the float network
    again = run_stream(model, blocks, codes, 8, metric, "lru")
    assert np.array_equal(again.hit, res.hit) and np.array_equal(again.outputs, res.outputs)


def test_preload_covers_the_calibration_set_greedily():
    net, model, blocks = compiled(17, 2, [16])
    rng = np.random.default_rng(5)
    calib = golden.quantize_inputs(model, rng.normal(size=(300, 2)) * 0.5)
    entries = preload(model, net, calib, 6, "linf")
    assert 1 <= len(entries) <= 6
    cache = HwCache(model, 6, "linf")
    covered = np.zeros(len(calib), dtype=bool)
    gains = []
    for s, e in enumerate(entries):
        cache.write_entry(s, e)
        new = e.hits(calib) & ~covered
        gains.append(int(new.sum()))
        covered |= new
    assert gains == sorted(gains, reverse=True) and gains[-1] > 0
    assert np.array_equal(cache.lookup(calib).hit, covered)
    assert preload(model, net, calib, 6, "linf", max_candidates=20, seed=1)
