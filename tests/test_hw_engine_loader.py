"""The engine's input loader alone: bank order, code order and the input handshake."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet.hw.engine.loader import InputLoader


@pytest.mark.parametrize("dim,gap,slow", [(5, 0.0, 0), (1, 0.3, 3), (7, 0.5, 0), (4, 0.0, 9)])
def test_loader_banks_in_order(dim, gap, slow):
    rng = np.random.default_rng(dim * 7 + slow)
    n = 10
    codes = rng.integers(-128, 128, size=(n, dim))
    dut = InputLoader(dim, 8)
    read = []
    taken = []

    async def producer(ctx):
        for k in range(n):
            for c in codes[k]:
                while rng.random() < gap:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, int(c))
                await ctx.tick().until(dut.i.ready)
                taken.append(int(c))
        ctx.set(dut.i.valid, 0)

    async def reader(ctx):
        # The sequencer's part: wait for the bank, read it in order (registered reads),
        # then clear it; `slow` extra cycles keep both banks full for a while.
        for k in range(n):
            b = k % 2
            while not ctx.get(dut.full) >> b & 1:
                await ctx.tick()
            for _ in range(slow):
                await ctx.tick()
                # both banks full: the loader must not take another beat
                if ctx.get(dut.full) == 0b11:
                    assert not ctx.get(dut.i.ready)
            got = []
            for i in range(dim):
                ctx.set(dut.rd_addr, b * dim + i)
                await ctx.tick()
                got.append(ctx.get(dut.rd_data))
            read.append(got)
            ctx.set(dut.clear, 1)
            ctx.set(dut.clear_bank, b)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            assert not ctx.get(dut.full) >> b & 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(reader)
    sim.run()
    assert taken == list(codes.reshape(-1))
    assert read == codes.tolist()


def test_loader_idle():
    dut = InputLoader(3, 8)

    async def tb(ctx):
        assert ctx.get(dut.idle) and ctx.get(dut.i.ready)
        ctx.set(dut.i.valid, 1)
        assert not ctx.get(dut.idle)          # a beat is being taken
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        assert not ctx.get(dut.idle)          # one of three codes received
        ctx.set(dut.i.valid, 1)
        await ctx.tick().repeat(2)
        ctx.set(dut.i.valid, 0)
        assert ctx.get(dut.idle) and ctx.get(dut.full) == 0b01

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
