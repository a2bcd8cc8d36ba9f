"""The engine's argmax tracker alone: the first maximum of each inference, per output bank."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet import fixedpoint as fx
from pwlnet import golden
from pwlnet.hw.engine.argmax import ArgmaxTracker


@pytest.mark.parametrize("n_out,bits,gap", [(7, 8, 0.0), (10, 4, 0.3), (1, 8, 0.2), (16, 3, 0.5)])
def test_argmax_first_maximum(n_out, bits, gap):
    rng = np.random.default_rng(n_out * 100 + bits)
    lo, hi = fx.signed_range(bits)
    n = 30
    # few distinct values, so ties (the first one wins) are common; then the extremes
    codes = rng.integers(lo, hi + 1, size=(n, n_out))
    codes[: n // 2] = rng.choice([lo, lo + 1, 0, hi - 1, hi], size=(n // 2, n_out))
    codes[0], codes[1] = hi, lo
    dut = ArgmaxTracker(n_out, bits)
    got = []

    async def producer(ctx):
        for k in range(n):
            for o in range(n_out):
                while rng.random() < gap:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"code": int(codes[k, o]), "o": o, "first": o == 0,
                                        "last": o == n_out - 1, "obank": k % 2})
                await ctx.tick()
        ctx.set(dut.i.valid, 0)

    async def monitor(ctx):
        pending = None          # the bank `done` named last cycle: its index is final now
        while len(got) < n:
            await ctx.tick()
            if pending is not None:
                got.append((pending, ctx.get(dut.index[pending])))
            pending = ctx.get(dut.done_bank) if ctx.get(dut.done) else None

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(monitor)
    sim.run()
    assert [b for b, _ in got] == [k % 2 for k in range(n)]
    assert [i for _, i in got] == list(golden.argmax(codes))
