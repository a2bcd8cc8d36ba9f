# amaranth: UnusedElaboratable=no
"""The weight memory (hw/memory.py): read latency, writes, argument checks."""

import pytest
from amaranth.sim import Simulator

from pwlnet.hw.memory import WeightMemory


def test_weight_memory_read_latency_and_write():
    mem = WeightMemory(12, 5, kind="ram")
    seen = []

    async def tb(ctx):
        for a, v in enumerate([7, 4095, 0, 100, 1]):
            ctx.set(mem.wr_en, 1)
            ctx.set(mem.wr_addr, a)
            ctx.set(mem.wr_data, v)
            await ctx.tick()
        ctx.set(mem.wr_en, 0)
        for a in [3, 1, 4]:
            ctx.set(mem.rd_addr, a)
            await ctx.tick()
            seen.append(ctx.get(mem.rd_data))

    sim = Simulator(mem)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [100, 4095, 1]


def test_weight_memory_checked():
    with pytest.raises(ValueError, match=r"^kind must be one of \('rom', 'ram'\), not 'flash'$"):
        WeightMemory(8, 4, kind="flash")
    with pytest.raises(ValueError, match=r"^a 'ram' weight memory has no initial contents; load it through wr_\*$"):
        WeightMemory(8, 4, kind="ram", init=[1])
    with pytest.raises(ValueError, match=r"^SPRAM holds at most 16384 words, not 16385$"):
        WeightMemory(64, 16385, kind="ram", target="ice40")
    with pytest.raises(TypeError, match=r"^width must be an integer, not '8'$"):
        WeightMemory("8", 4)
    assert WeightMemory(64, 100, kind="ram", target="ice40").spram_count == 4
    assert WeightMemory(64, 100, kind="rom", target="ice40").spram_count == 0
