"""The engine's requantizer alone: fixedpoint.requantize (and ReLU) on random and extreme sums."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet import fixedpoint as fx
from pwlnet.hw.engine.plan import EnginePlan
from pwlnet.hw.engine.requant import Requantizer
from pwlnet.synth import random_model


def _golden(layer, o, acc):
    y = int(fx.requantize(acc + int(layer.bias[o]), int(layer.multiplier[o]), int(layer.shift[o]), layer.out_bits))
    return max(y, 0) if layer.activation == "relu" else y


@pytest.mark.parametrize("seed,dims,lanes,requant,bits", [
    (1, [13, 20, 7], 3, "shift", 8),
    (2, [13, 20, 7], 8, "multiply", 8),
    (3, [9, 5, 2], 2, "multiply", 12),
    (4, [9, 6, 3], 4, "shift", 4),
])
def test_requantizer_matches_fixedpoint(seed, dims, lanes, requant, bits):
    model = random_model(seed, dims, requant=requant, weight_bits=bits, act_bits=bits)
    plan = EnginePlan(model, lanes)
    dut = Requantizer(plan)
    rng = np.random.default_rng(seed)
    lo, hi = fx.signed_range(plan.acc_bits)
    # (layer, pass, lane, acc): random sums and the accumulator's extremes, 0 and +-1
    items = []
    for t, (layer, x) in enumerate(zip(plan.table, plan.layers)):
        for o in range(layer.n_out):
            for acc in (lo, hi, 0, -1, 1, *rng.integers(lo, hi + 1, size=6)):
                items.append((t, o // lanes, o % lanes, int(acc)))
    order = rng.permutation(len(items))
    items = [items[k] for k in order]
    gaps = rng.random(len(items)) < 0.3
    got = []

    async def producer(ctx):
        for (t, g, j, acc), gap in zip(items, gaps):
            x = plan.layers[t]
            if gap:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"acc": acc, "j": j, "info": {
                "chan": x["chan_base"] + g * lanes, "wbase": 3 + g * lanes, "obase": g * lanes,
                "nv_m1": lanes - 1, "lidx": t, "to_out": x["dst_out"], "lastpass": 0, "obank": 1}})
            await ctx.tick()
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(got) < len(items):
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.o.valid):
                got.append((cycle, ctx.get(dut.o.payload.y), ctx.get(dut.o.payload.meta.waddr),
                            ctx.get(dut.o.payload.meta.o)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()

    start = 0
    for k, ((t, g, j, acc), (cycle, y, waddr, o)) in enumerate(zip(items, got)):
        layer = plan.table[t]
        assert y == _golden(layer, g * lanes + j, acc), (t, g, j, acc)
        assert (waddr, o) == (3 + g * lanes + j, g * lanes + j)
        start += 1 + int(gaps[k])
        # one result per input, req_stages cycles later (the input's tick is `start`)
        assert cycle == start - 1 + plan.req_stages
