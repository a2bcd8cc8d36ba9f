# amaranth: UnusedElaboratable=no
"""The lanes (hw/mac.py): latency, extreme operands, the dual 8x8 lane pair on both
targets (the ``"ice40"`` one through yosys' SB_MAC16 model), argument checks."""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from pwlnet.hw.mac import MUL_LATENCY, PAIR_BITS, LaneMultiplier, LanePairMAC, lanes_per_dsp
from pwlnet.sim.runner import ice40_cells_sim
from pwlnet.sim.verilog_check import run_selfcheck

from helpers import simulator_param


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


# ---- the lane pair -------------------------------------------------------------------

def _pair_stimulus(a_bits, b_bits, n=300, seed=3):
    """Per cycle ``(a0, a1, b, en, clr)``: every signed corner pair (-128 x -128,
    -128 x 127, 127 x -128, ...) in both halves, then random operands, enables and clears."""
    lo_a, hi_a = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    lo_b, hi_b = -(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1
    corners_a, corners_b = [lo_a, -1, 0, 1, hi_a], [lo_b, -1, 0, 1, hi_b]
    out = [(0, 0, 0, 0, 0)] * MUL_LATENCY      # the DSP's registers hold x before their first load
    for a0 in corners_a:
        for a1 in corners_a:
            for b in corners_b:
                out.append((a0, a1, b, 1, 1))       # each product alone (clear on its add)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        out.append((int(rng.integers(lo_a, hi_a + 1)), int(rng.integers(lo_a, hi_a + 1)),
                    int(rng.integers(lo_b, hi_b + 1)), int(rng.random() < 0.8), int(rng.random() < 0.1)))
    return out + [(0, 0, 0, 1, 0)] * (MUL_LATENCY + 1)


def _pair_reference(stim, acc_bits):
    """``(acc0, acc1)`` after each edge: the products of the operands from MUL_LATENCY
    cycles earlier, added (cleared first with ``clr``) on cycles with ``en``."""
    accs, got = [0, 0], []
    wrap = lambda v: ((v + (1 << (acc_bits - 1))) % (1 << acc_bits)) - (1 << (acc_bits - 1))
    for t, (_, _, _, en, clr) in enumerate(stim):
        a0, a1, b = stim[t - MUL_LATENCY][:3] if t >= MUL_LATENCY else (0, 0, 0)
        if en:
            accs = [wrap((0 if clr else acc) + a * b) for acc, a in zip(accs, (a0, a1))]
        got.append(tuple(accs))
    return got


def test_pair_generic_matches_reference():
    stim = _pair_stimulus(8, 8)
    dut = LanePairMAC(8, 8, 20)
    got = []

    async def tb(ctx):
        for a0, a1, b, en, clr in stim:
            for sig, v in ((dut.a0, a0), (dut.a1, a1), (dut.b, b), (dut.en, en), (dut.clr, clr)):
                ctx.set(sig, v)
            await ctx.tick()
            got.append((ctx.get(dut.acc0), ctx.get(dut.acc1)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == _pair_reference(stim, 20)


_PAIR_TB = """
`define NO_ICE40_DEFAULT_ASSIGNMENTS
`timescale 1ns/1ps
module tb;
  reg clk = 0;
  always #5 clk = ~clk;
  reg [{sw}-1:0] stim [0:{n}-1];
  reg signed [{ab}-1:0] a0 = 0, a1 = 0;
  reg signed [{bb}-1:0] b = 0;
  reg en = 0, clr = 0;
  wire signed [{accb}-1:0] acc0, acc1;
  pair dut (.clk(clk), .rst(1'b0), .a0(a0), .a1(a1), .b(b), .en(en), .clr(clr), .acc0(acc0), .acc1(acc1));
  integer t;
  initial begin
    $readmemh("stim.hex", stim);
    for (t = 0; t < {n}; t = t + 1) begin
      {{clr, en, b, a1, a0}} = stim[t];
      @(posedge clk); #1;
      $display("ACC %0d %0d", acc0, acc1);
    end
    $display("RESULT {n} 0");
    $finish;
  end
endmodule
"""


@pytest.mark.parametrize("simulator", [simulator_param("icarus"), simulator_param("verilator")])
@pytest.mark.parametrize("a_bits,b_bits", [(8, 8), (4, 7)])
def test_pair_ice40_signed_corners(tmp_path, simulator, a_bits, b_bits):
    """The dual 8x8 SB_MAC16 through yosys' model: every signed corner product (incl.
    -128 x -128 and -128 x 127) in both halves, then random sums, exactly."""
    acc_bits = 22
    stim = _pair_stimulus(a_bits, b_bits, seed=a_bits * 10 + b_bits)
    dut = LanePairMAC(a_bits, b_bits, acc_bits, target="ice40")
    (tmp_path / "pair.v").write_text(verilog.convert(dut, name="pair"))
    masks = [(1 << a_bits) - 1, (1 << a_bits) - 1, (1 << b_bits) - 1, 1, 1]
    widths = [a_bits, a_bits, b_bits, 1, 1]
    words = []
    for row in stim:
        word, pos = 0, 0
        for v, mask, w in zip(row, masks, widths):
            word |= (v & mask) << pos
            pos += w
        words.append(word)
    (tmp_path / "stim.hex").write_text("".join(f"{w:x}\n" for w in words))
    (tmp_path / "tb.v").write_text(_PAIR_TB.format(sw=sum(widths), n=len(stim), ab=a_bits, bb=b_bits,
                                                   accb=acc_bits))
    out = run_selfcheck(tmp_path, ["tb.v", "pair.v", str(ice40_cells_sim())], simulator)
    got = [tuple(int(v) for v in l.split()[1:]) for l in out.splitlines() if l.startswith("ACC")]
    assert got == _pair_reference(stim, acc_bits)


def test_lanes_per_dsp_and_pair_checks():
    assert lanes_per_dsp(PAIR_BITS, PAIR_BITS) == 2
    assert lanes_per_dsp(PAIR_BITS + 1, 4) == 1
    assert lanes_per_dsp(4, PAIR_BITS + 1) == 1
    with pytest.raises(ValueError, match=r"^an SB_MAC16 in dual 8x8 mode takes operands of at most 8 bits, not 9$"):
        LanePairMAC(9, 8, 20, target="ice40")
    LanePairMAC(9, 8, 20)          # generic: any width
    with pytest.raises(ValueError, match=r"^acc_bits must be at least 1, not 0$"):
        LanePairMAC(8, 8, 0)
