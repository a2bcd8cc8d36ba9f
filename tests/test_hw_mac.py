# amaranth: UnusedElaboratable=no
"""The lane multiplier (hw/mac.py): latency, extreme operands, argument checks."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet.hw.mac import MUL_LATENCY, LaneMultiplier


@pytest.mark.parametrize("a_bits,b_bits", [(8, 8), (16, 16), (4, 12)])
def test_multiplier_latency_and_extremes(a_bits, b_bits):
    dut = LaneMultiplier(a_bits, b_bits)
    amin, amax = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    bmin, bmax = -(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1
    rng = np.random.default_rng(a_bits * 100 + b_bits)
    pairs = [(amin, bmin), (amin, bmax), (amax, bmin), (amax, bmax), (0, bmin)]
    pairs += [(int(rng.integers(amin, amax + 1)), int(rng.integers(bmin, bmax + 1))) for _ in range(20)]
    got = []

    async def tb(ctx):
        for a, b in pairs + [(0, 0)] * MUL_LATENCY:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()
            got.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    # The product of the operands presented at edge k appears after edge k + MUL_LATENCY - 1.
    assert got[MUL_LATENCY - 1:MUL_LATENCY - 1 + len(pairs)] == [a * b for a, b in pairs]


def test_multiplier_checked():
    with pytest.raises(TypeError, match=r"^a_bits must be an integer, not 8.0$"):
        LaneMultiplier(8.0, 8)
    with pytest.raises(ValueError, match=r"^b_bits must be at least 1, not 0$"):
        LaneMultiplier(8, 0)
    with pytest.raises(ValueError, match=r"^target must be one of \('generic', 'ice40'\), not 'ecp5'$"):
        LaneMultiplier(8, 8, target="ecp5")
    with pytest.raises(ValueError, match=r"^SB_MAC16 operands are at most 16 bits, not 17$"):
        LaneMultiplier(17, 8, target="ice40")
