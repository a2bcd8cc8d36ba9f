# amaranth: UnusedElaboratable=no
"""The cached engine (comparator bank + MLP engine) against the golden cache, bit for bit.

Two kinds of run on Amaranth's simulator:

* scripted: inputs, entry writes, clears and counter resets in program order, streamed
  with random input gaps and output back-pressure (inputs are not waited for, so writes
  and clears meet inferences in flight); the golden :class:`pwlnet.code_cache.HwCache`
  applies the same operations in the same order;
* host loop: one inference at a time, and on a miss the entry that
  :class:`pwlnet.cache_host.CacheHost` makes is written before the next input -- exactly
  :func:`pwlnet.cache_host.run_stream` with ``slot_format``, which gives the expected hits,
  slots and output codes.

Each checks hit, slot, every output code, ``last``, argmax, the hit and miss counters
and, on the host loop, the cycles the engine spends per hit and per miss.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet import cache_host, code_cache, golden
from pwlnet.hw.cached_engine import CachedEngine
from pwlnet.hw.slot_format import SlotFormat

from helpers import compiled, receive, send


class Rig:
    """A CachedEngine in Amaranth's simulator, driven by a list of operations."""

    def __init__(self, dut, *, in_gap=0.0, out_stall=0.0, seed=0):
        self.dut = dut
        self.rng = np.random.default_rng(seed)
        self.in_gap, self.out_stall = in_gap, out_stall

    def run(self, ops, *, max_cycles=400_000, host=None):
        """Apply ``ops``; return per-inference records and the final counters.

        ``ops`` items: ``("infer", codes)``, ``("write", slot, entry)``, ``("clear",)``,
        ``("clear_stats",)``.  With ``host`` (a :class:`CacheHost`) the producer waits for
        each inference's answer and writes the entry the host asks for, before the next
        input (the ``ops`` are then only inferences).
        """
        dut, rng = self.dut, self.rng
        n_out = dut.fmt.n_out
        n_inf = sum(op[0] == "infer" for op in ops)
        recs = []
        cycle = [0]
        got = []                       # completed inference count, for the host loop
        starts = []

        async def clock(ctx):
            async for _ in ctx.tick():
                cycle[0] += 1

        async def write(ctx, slot, entry):
            await send(ctx, dut.cw, [{"slot": slot, "data": b} for b in dut.fmt.image(entry)])

        async def producer(ctx):
            k = 0
            for op in ops:
                if op[0] == "infer":
                    await send(ctx, dut.i, [int(c) for c in op[1]], rng=rng, gap=self.in_gap,
                               on_taken=lambda j: starts.append(cycle[0]) if j == 0 else None)
                    k += 1
                    if host is not None:
                        while len(got) < k:
                            await ctx.tick()
                        r = recs[k - 1]
                        todo = host.seen(np.asarray(op[1]), r["cached"], r["slot"])
                        if todo is not None:
                            await write(ctx, *todo)
                            r["written"] = todo
                elif op[0] == "write":
                    await write(ctx, op[1], op[2])
                elif op[0] in ("clear", "clear_stats"):
                    ctx.set(getattr(dut, op[0]), 1)
                    await ctx.tick()
                    ctx.set(getattr(dut, op[0]), 0)
                else:  # pragma: no cover - a bug in the test
                    raise ValueError(op)

        out = np.zeros(n_out, dtype=np.int64)
        beat = {"k": 0, "j": 0, "cached": 0, "slot": 0}

        def done():
            if beat["k"] >= n_inf:
                return True
            assert cycle[0] < max_cycles, f"timeout after {beat['k']} inferences"
            return False

        def on_beat(p):
            k, j = beat["k"], beat["j"]
            out[j] = p.data
            if j == 0:
                beat["cached"], beat["slot"] = p.cached, p.slot
            assert (p.cached, p.slot) == (beat["cached"], beat["slot"]), f"cached/slot changed within inference {k}"
            assert p.last == (j == n_out - 1), f"last flag wrong at inference {k} beat {j}"
            if p.last:
                recs.append(dict(out=out.copy(), argmax=int(p.argmax), cached=bool(beat["cached"]),
                                 slot=int(beat["slot"]), end=cycle[0]))
                got.append(k)
                beat["k"], beat["j"] = k + 1, 0
            else:
                beat["j"] = j + 1

        async def consumer(ctx):
            await receive(ctx, dut.o, done, on_beat, rng=rng, stall=self.out_stall)

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_process(clock)
        sim.add_testbench(producer)
        sim.add_testbench(consumer)
        sim.run()
        for r, s in zip(recs, starts):
            r["start"] = s
        return recs


def golden_ops(model, entries, metric, ops):
    """Expected ``(hit, slot, outputs)`` per inference and final ``(hits, misses)``."""
    cache = code_cache.HwCache(model, entries, metric)
    exp = []
    hits = misses = 0
    for op in ops:
        if op[0] == "infer":
            r = cache.lookup(np.asarray(op[1])[None])
            exp.append((bool(r.hit[0]), max(int(r.slot[0]), 0), r.outputs[0]))
            hits += int(r.hit[0])
            misses += int(not r.hit[0])
        elif op[0] == "write":
            if op[1] < entries:
                cache.write_entry(op[1], op[2])
        elif op[0] == "clear":
            cache.clear()
        elif op[0] == "clear_stats":
            hits = misses = 0
    return exp, (hits, misses)


def check(recs, exp):
    assert len(recs) == len(exp)
    bad = []
    for k, (r, (hit, slot, out)) in enumerate(zip(recs, exp)):
        if (r["cached"], r["slot"]) != (hit, slot) or not np.array_equal(r["out"], out) \
                or r["argmax"] != int(golden.argmax(out)):
            bad.append(f"inference {k}: RTL cached={r['cached']} slot={r['slot']} out={r['out'].tolist()} "
                       f"argmax={r['argmax']}; golden hit={hit} slot={slot} out={out.tolist()}")
    assert not bad, "\n".join(bad[:5])


def _near(rng, model, e, n):
    """Codes within (or just around) an entry's ball: hits and near misses."""
    lo, hi = -(1 << (model.input_bits - 1)), (1 << (model.input_bits - 1)) - 1
    r = e.bound if e.metric == "linf" else int(np.sqrt(e.bound))
    pts = [e.center]
    for _ in range(n - 1):
        pts.append(np.clip(e.center + rng.integers(-r - 1, r + 2, e.dim), lo, hi))
    return pts


def scripted_ops(model, blocks, metric, entries, seed, n_ops=40):
    """Writes, clears, counter resets and inferences (near entries, exact centers, random)."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (model.input_bits - 1)), (1 << (model.input_bits - 1)) - 1
    fmt = SlotFormat(model, 1, metric)
    made = []
    while len(made) < 2 * entries:
        c = rng.integers(lo // 4, hi // 4 + 1, model.input_dim)
        try:
            e = code_cache.make_entry(model, blocks, c, metric)
        except code_cache.EntryError:
            continue                    # a near-tie at c: the host makes no entry there
        if fmt.fits(e):
            made.append(e)
    ops = []
    for k in range(n_ops):
        u = rng.random()
        if u < 0.25:
            ops.append(("write", int(rng.integers(0, 1 << max(1, int(np.ceil(np.log2(entries)))))),
                        made[rng.integers(len(made))]))
        elif u < 0.29:
            ops.append(("clear",))
        elif u < 0.31:
            ops.append(("clear_stats",))
        elif u < 0.75:
            for p in _near(rng, model, made[rng.integers(len(made))], 2):
                ops.append(("infer", p))
        else:
            ops.append(("infer", rng.integers(lo, hi + 1, model.input_dim)))
    # make sure every slot gets written and hit at least once
    for s in range(entries):
        ops.append(("write", s, made[s]))
    for s in range(entries):
        ops.append(("infer", made[s].center))
    return ops


@pytest.mark.parametrize("metric, entries, lanes, requant, seed", [
    ("linf", 4, 4, "shift", 1),
    ("l2", 3, 2, "multiply", 2),       # non-power-of-two N: slot 3 writes are ignored
    ("l1", 2, 8, "multiply", 3),       # P above every layer width
])
def test_scripted_operations_match_golden(metric, entries, lanes, requant, seed):
    net, model, blocks = compiled(seed, 3, [12, 8], n_out=3, requant=requant)
    dut = CachedEngine(model, lanes, entries, metric)
    ops = scripted_ops(model, blocks, metric, entries, seed)
    exp, (hits, misses) = golden_ops(model, entries, metric, ops)
    assert sum(h for h, _, _ in exp) >= entries         # the scenario exercises hits ...
    assert sum(not h for h, _, _ in exp) >= 3           # ... and misses
    recs = Rig(dut, in_gap=0.3, out_stall=0.3, seed=seed).run(ops)
    check(recs, exp)


def _counters(dut, ops):
    """Run ``ops`` and read the counters once everything has been computed."""
    out = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for op in ops:
            for c in op[1]:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, int(c))
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(2000)
        out["counts"] = (ctx.get(dut.hits), ctx.get(dut.misses), ctx.get(dut.idle))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out["counts"]


def test_preload_and_counters():
    net, model, blocks = compiled(5, 3, [12, 8], n_out=3)
    rng = np.random.default_rng(0)
    calib = golden.quantize_inputs(model, rng.normal(size=(200, 3)) * 0.3)
    pre = cache_host.preload(model, net, calib, 3, "linf")
    assert len(pre) == 3
    dut = CachedEngine(model, 4, 4, "linf", preload=pre)
    ops = [("infer", e.center) for e in pre] + [("infer", c) for c in calib[:12]]
    cache = code_cache.HwCache(model, 4, "linf")
    for s, e in enumerate(pre):
        cache.write_entry(s, e)
    r = cache.lookup(np.stack([op[1] for op in ops]))
    recs = Rig(dut, seed=1).run(ops)
    check(recs, [(bool(h), max(int(s), 0), o) for h, s, o in zip(r.hit, r.slot, r.outputs)])
    hits = int(r.hit.sum())
    assert _counters(CachedEngine(model, 4, 4, "linf", preload=pre), ops) == (hits, len(ops) - hits, 1)


@pytest.mark.parametrize("metric", ["linf", "l2"])
def test_host_loop_matches_run_stream(metric):
    # A smooth path: the host fills slots on misses (LRU over 4 slots, so the cache is
    # full and entries get replaced), later inputs hit them.
    net, model, blocks = compiled(13, 3, [24, 16], requant="multiply")
    t = np.linspace(0, 4, 120)[:, None]
    path = np.hstack([np.sin(t), np.cos(1.7 * t), np.sin(0.6 * t)]) * 1.5
    codes = golden.quantize_inputs(model, path)
    dut = CachedEngine(model, 4, 4, metric)
    want = cache_host.run_stream(model, blocks, codes, 4, metric, "lru", slot_format=dut.fmt)
    assert 0.1 < want.hit_rate < 0.9 and (want.written >= 0).sum() > 4      # replacements happen
    host = cache_host.CacheHost(model, blocks, 4, metric, "lru", slot_format=dut.fmt)
    recs = Rig(dut, seed=3, out_stall=0.2).run([("infer", c) for c in codes], host=host)
    check(recs, list(zip(want.hit, np.maximum(want.slot, 0), want.outputs)))
    assert [r.get("written", (-1,))[0] for r in recs] == want.written.tolist()
    # One inference at a time: from the first input code to the last output beat, a hit
    # costs the entry's program instead of the network's, everything else is the same.
    lat = np.array([r["end"] - r["start"] for r in recs])
    hit = np.array([r["cached"] for r in recs])
    saved = dut.cycles_per_inference - dut.hit_cycles
    assert saved > 0
    # (minima: output back-pressure adds a random delay on top)
    assert saved <= lat[~hit].min() - lat[hit].min() <= saved + 2, (set(lat[hit]), set(lat[~hit]), saved)


def test_rejects_entries_that_do_not_fit():
    net, model, blocks = compiled(5, 3, [12, 8], n_out=3)
    e = code_cache.make_entry(model, blocks, [0, 0, 0], "linf")
    with pytest.raises(ValueError, match=r"^preload\[0\]: entry metric 'linf' differs from the slots' 'l2'$"):
        CachedEngine(model, 4, 2, "l2", preload=[e])
    with pytest.raises(ValueError, match=r"^preload has 3 entries; the cache has 2 slots$"):
        CachedEngine(model, 4, 2, "linf", preload=[e, e, e])
    with pytest.raises(ValueError, match="metric must be one of"):
        CachedEngine(model, 4, 2, "cosine")
