"""The engine's output streamer alone: order, last, argmax, program and the stream handshake."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet.hw.engine.streamer import OutputStreamer


@pytest.mark.parametrize("n_out,programs,stall", [(5, 1, 0.0), (3, 3, 0.4), (1, 2, 0.3), (8, 1, 0.6)])
def test_streamer_order_and_handshake(n_out, programs, stall):
    rng = np.random.default_rng(n_out * 10 + programs)
    n = 12
    codes = rng.integers(-128, 128, size=(n, n_out))
    am = rng.integers(0, n_out, size=n)
    progs = rng.integers(0, programs, size=n)
    dut = OutputStreamer(n_out, 8, programs)
    beats = []

    async def producer(ctx):
        # The engine's order for inference k: claim bank k % 2 when it is free, write its
        # codes, then `done` with the argmax.
        for k in range(n):
            b = k % 2
            while ctx.get(dut.busy) >> b & 1:
                await ctx.tick()
            ctx.set(dut.claim, 1)
            ctx.set(dut.claim_bank, b)
            if programs > 1:
                ctx.set(dut.claim_prog, int(progs[k]))
            await ctx.tick()
            ctx.set(dut.claim, 0)
            assert ctx.get(dut.busy) >> b & 1 and not ctx.get(dut.full) >> b & 1
            for o in rng.permutation(n_out):
                ctx.set(dut.wr_en, 1)
                ctx.set(dut.wr_addr, b * n_out + int(o))
                ctx.set(dut.wr_data, int(codes[k, o]))
                await ctx.tick()
            ctx.set(dut.wr_en, 0)
            ctx.set(dut.argmax[b], int(am[k]))
            ctx.set(dut.done, 1)
            ctx.set(dut.done_bank, b)
            await ctx.tick()
            ctx.set(dut.done, 0)

    async def consumer(ctx):
        held = None             # a beat offered but not taken: it must stay the same
        while len(beats) < n * n_out:
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            valid = ctx.get(dut.o.valid)
            payload = ctx.get(dut.o.payload)
            beat = (payload.data, payload.last, payload.argmax,
                    payload.program if programs > 1 else 0) if valid else None
            if held is not None:
                assert beat == held
            held = None
            if valid and ready:
                beats.append(beat)
            elif valid:
                held = beat
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    want = [(int(codes[k, o]), int(o == n_out - 1), int(am[k]), int(progs[k]) if programs > 1 else 0)
            for k in range(n) for o in range(n_out)]
    assert beats == want
