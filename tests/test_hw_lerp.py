# amaranth: UnusedElaboratable=no
"""The LERP activation unit against :func:`pwlnet.fixedpoint.lerp`, bit for bit.

Every table is checked exhaustively: all ``2**bits`` input codes on every channel, fed
with random input gaps and taken with random output back-pressure (Amaranth simulator),
and once more as generated Verilog on Icarus Verilog and on Verilator.
"""

import shutil

import numpy as np
import pytest

from amaranth.back import verilog
from amaranth.hdl import unsigned
from amaranth.lib import data

from pwlnet import fixedpoint as fx
from pwlnet import golden, synth
from pwlnet.hw.lerp import LUT_ROM_MAX_BITS, LerpUnit, bank_images, lerp_latency
from pwlnet.sim.verilog_check import run_selfcheck, selfcheck_result

from helpers import receive, run_streams, send


# ---- tables ----------------------------------------------------------------------------


def _grid(bits, k):
    """Float positions -1 .. 1 of the 2**k + 1 grid points (the table's input range)."""
    return np.linspace(-1.0, 1.0, (1 << k) + 1)


def identity_table(bits, k):
    lo, hi = fx.signed_range(bits)
    # grid point j is code u = j * 2**f, i.e. code j * 2**f - 2**(bits-1)
    t = np.arange((1 << k) + 1) * (1 << (bits - k)) + lo
    return np.clip(t, lo, hi)


def relu_table(bits, k):
    return np.maximum(identity_table(bits, k), 0)


def tanh_table(bits, k):
    lo, hi = fx.signed_range(bits)
    return fx.saturate(fx.round_half_up(np.tanh(3.0 * _grid(bits, k)) * hi), bits)


def jumps_table(bits, k):
    """Alternating extremes: every difference is -(2**bits - 1) or +(2**bits - 1)."""
    lo, hi = fx.signed_range(bits)
    return np.where(np.arange((1 << k) + 1) % 2 == 0, lo, hi)


def stack(*rows):
    return np.stack([np.asarray(r, dtype=np.int64) for r in rows])


def mixed_tables(bits, k, channels, seed):
    """Identity, ReLU, tanh, extreme jumps, then random arbitrary and monotone tables."""
    fixed = [identity_table(bits, k), relu_table(bits, k), tanh_table(bits, k), jumps_table(bits, k)]
    rng = np.random.default_rng(seed)
    extra = synth.random_tables(rng, max(0, channels - len(fixed)), k, bits, "mixed")
    return np.concatenate([stack(*fixed), extra])[:channels]


# ---- simulation ------------------------------------------------------------------------


def run_unit(dut, items, *, gap=0.3, stall=0.3, seed=0):
    """Feed ``items`` = [(code, channel, meta)] and return [(code, meta)] as taken on ``o``."""
    rng = np.random.default_rng(seed)
    got = []
    payloads = [{"code": code, "channel": ch, "meta": meta} for code, ch, meta in items]
    run_streams(dut,
                lambda ctx: send(ctx, dut.i, payloads, rng=rng, gap=gap),
                lambda ctx: receive(ctx, dut.o, lambda: len(got) >= len(items),
                                    lambda p: got.append((p.code, p.meta)), rng=rng, stall=stall))
    return got


def exhaustive_items(bits, channels, meta_bits, seed=0):
    """Every code on every channel, in a shuffled order (channels interleaved)."""
    lo, hi = fx.signed_range(bits)
    items = [(c, ch) for ch in range(channels) for c in range(lo, hi + 1)]
    order = np.random.default_rng(seed).permutation(len(items))
    return [(items[n][0], items[n][1], int(t) & ((1 << meta_bits) - 1)) for t, n in enumerate(order)]


def expected(items, tables, k, bits):
    """fixedpoint.lerp of every item, through the function's (N, C) interface."""
    codes = np.array([c for c, _, _ in items], dtype=np.int64)
    chans = np.array([ch for _, ch, _ in items])
    full = fx.lerp(np.repeat(codes[:, None], len(tables), axis=1), tables, k, bits)
    return [(int(full[n, ch]), meta) for n, (ch, (_, _, meta)) in enumerate(zip(chans, items))]


CASES = [
    # id, bits, index_bits, tables
    ("8b-6/2-mixed", 8, 6, lambda: mixed_tables(8, 6, 6, 1)),
    ("8b-4/4-mixed", 8, 4, lambda: mixed_tables(8, 4, 5, 2)),
    ("8b-3/5-mixed", 8, 3, lambda: mixed_tables(8, 3, 5, 3)),
    ("8b-6/2-arbitrary", 8, 6, lambda: synth.random_tables(np.random.default_rng(4), 3, 6, 8, "arbitrary")),
    ("8b-0/8-jumps", 8, 0, lambda: stack([-128, 127], [127, -128], [5, 5])),
    ("8b-1/7", 8, 1, lambda: stack([-128, 127, -128], [0, 100, -3])),
    ("8b-8/0", 8, 8, lambda: mixed_tables(8, 8, 2, 5)),
    ("4b-2/2", 4, 2, lambda: mixed_tables(4, 2, 7, 6)),
    ("4b-3/1", 4, 3, lambda: mixed_tables(4, 3, 3, 7)),
    ("10b-6/4", 10, 6, lambda: mixed_tables(10, 6, 4, 8)),
]


@pytest.mark.parametrize("target,storage", [("ice40", "auto"), ("generic", "ebr"), ("ice40", "lut")])
@pytest.mark.parametrize("name,bits,k,make", CASES, ids=[c[0] for c in CASES])
def test_exhaustive_vs_golden(name, bits, k, make, target, storage):
    tables = make()
    channels = len(tables)
    dut = LerpUnit(channels, bits, k, tables, meta=12, target=target, storage=storage)
    items = exhaustive_items(bits, channels, 12, seed=bits * 10 + k)
    got = run_unit(dut, items, seed=k)
    assert got == expected(items, tables, k, bits)


def test_exhaustive_64_channels_6_2():
    """The PSA-Compress geometry: 64 channels, 6/2 split, block-RAM banks (4 x 4096 beats)."""
    tables = mixed_tables(8, 6, 64, 11)
    dut = LerpUnit(64, 8, 6, tables, meta=16, target="ice40")
    assert dut.banks == {"even": "ebr", "odd": "ebr", "end": "lut"}
    items = exhaustive_items(8, 64, 16, seed=3)
    assert run_unit(dut, items, gap=0.1, stall=0.1, seed=5) == expected(items, tables, 6, 8)


@pytest.mark.parametrize("backpressure", [True, False])
@pytest.mark.parametrize("bits,k", [(8, 6), (8, 4), (8, 0), (8, 8), (10, 3)])
def test_latency_and_one_result_per_cycle(bits, k, backpressure):
    """Back-to-back beats, always ready: beat n is on ``o`` exactly ``latency`` cycles later."""
    tables = mixed_tables(bits, k, 3, 9)
    dut = LerpUnit(3, bits, k, tables, meta=unsigned(16), target="ice40", backpressure=backpressure)
    assert dut.latency == lerp_latency(bits, k)
    assert dut.latency == {(8, 6): 5, (8, 4): 6, (8, 0): 7, (8, 8): 2, (10, 3): 6}[(bits, k)]
    lo, _ = fx.signed_range(bits)
    rng = np.random.default_rng(0)
    items = [(int(rng.integers(lo, -lo)), int(rng.integers(0, 3)), n) for n in range(40)]
    want = expected(items, tables, k, bits)
    seen = {}

    async def tb(ctx):
        if backpressure:
            ctx.set(dut.o.ready, 1)
        for cyc in range(len(items) + dut.latency + 2):
            if cyc < len(items):
                c, ch, meta = items[cyc]
                ctx.set(dut.i.payload, {"code": c, "channel": ch, "meta": meta})
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            assert ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                seen[cyc] = (ctx.get(dut.o.payload.code), ctx.get(dut.o.payload.meta))
            await ctx.tick()

    run_streams(dut, tb)
    assert seen == {n + dut.latency: w for n, w in enumerate(want)}


def test_backpressure_holds_output_stable():
    """While ``o.ready`` is low, ``o.valid`` stays high and the payload does not change."""
    tables = mixed_tables(8, 6, 2, 10)
    dut = LerpUnit(2, 8, 6, tables, meta=8)
    log = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.payload, {"code": 77, "channel": 1, "meta": 9})
        ctx.set(dut.i.valid, 1)
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        for _ in range(dut.latency + 6):
            await ctx.tick()
            log.append((ctx.get(dut.o.valid), ctx.get(dut.o.payload.code), ctx.get(dut.o.payload.meta)))
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    run_streams(dut, tb)
    want = int(fx.lerp(np.array([[77, 77]]), tables, 6, 8)[0, 1])
    assert log[-6:] == [(1, want, 9)] * 6


def test_struct_meta_and_single_channel():
    meta = data.StructLayout({"addr": unsigned(6), "last": 1})
    tables = relu_table(8, 6)[None, :]
    dut = LerpUnit(1, 8, 6, tables, meta=meta, backpressure=False)
    assert len(dut.i.payload.channel) == 0
    assert dut.o.payload.meta.shape() == meta
    assert dut.i.signature.always_ready and dut.o.signature.always_ready


def test_no_backpressure_unit_converts_inside_a_parent():
    """The engine's use: an always-ready unit driven by plain signals of the parent."""
    from amaranth.hdl import Module, signed
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Parent(wiring.Component):
        x: In(signed(8))
        x_valid: In(1)
        y: Out(signed(8))
        y_valid: Out(1)

        def elaborate(self, platform):
            m = Module()
            m.submodules.lerp = u = LerpUnit(3, 8, 6, mixed_tables(8, 6, 3, 0), backpressure=False)
            m.d.comb += [u.i.payload.code.eq(self.x), u.i.payload.channel.eq(2), u.i.valid.eq(self.x_valid),
                         self.y.eq(u.o.payload.code), self.y_valid.eq(u.o.valid)]
            return m

    assert "module \\parent.lerp (" in verilog.convert(Parent(), name="parent")


def test_bank_images_and_storage_choice():
    t = np.arange(2 * 9).reshape(2, 9) - 9
    even, odd, end = bank_images(t, 3)
    assert even == [-9, -7, -5, -3, 0, 2, 4, 6]
    assert odd == [-8, -6, -4, -2, 1, 3, 5, 7]
    assert end == [-1, 8]
    assert bank_images(t[:, :2], 0) == ([-9, 0], [], [-8, 1])
    # 16 channels x 8 words x 8 bits = 1024 bits per bank: block RAM; the end ROM: LUTs
    small = LerpUnit(16, 8, 4, mixed_tables(8, 4, 16, 0))
    assert 16 * 8 * 8 > LUT_ROM_MAX_BITS >= 16 * 8
    assert small.banks == {"even": "ebr", "odd": "ebr", "end": "lut"}
    assert LerpUnit(2, 8, 0, stack([1, 2], [3, 4])).banks == {"even": "lut", "odd": None, "end": "lut"}
    assert LerpUnit(2, 8, 4, mixed_tables(8, 4, 2, 0), storage="ebr").banks["end"] == "ebr"


def test_arguments_checked():
    t = np.zeros((2, 65), dtype=np.int64)
    with pytest.raises(TypeError, match=r"^channels must be an integer, not 2\.0$"):
        LerpUnit(2.0, 8, 6, t)
    with pytest.raises(ValueError, match=r"^channels must be at least 1, not 0$"):
        LerpUnit(0, 8, 6, t)
    with pytest.raises(ValueError, match=r"^bits must be between 2 and 16 bits, not 17$"):
        LerpUnit(2, 17, 6, t)
    with pytest.raises(TypeError, match=r"^bits must be an integer, not True$"):
        LerpUnit(2, True, 6, t)
    with pytest.raises(ValueError, match=r"^index_bits must be in 0\.\.8, not 9$"):
        LerpUnit(2, 8, 9, t)
    with pytest.raises(TypeError, match=r"^index_bits must be an integer, not '6'$"):
        LerpUnit(2, 8, "6", t)
    with pytest.raises(ValueError, match=r"^tables has shape \(2, 65\); expected \(2, 17\) for 2 channels "
                                         r"and 4 index bits$"):
        LerpUnit(2, 8, 4, t)
    with pytest.raises(ValueError, match=r"^tables has shape \(2, 65\); expected \(3, 65\)"):
        LerpUnit(3, 8, 6, t)
    bad = t.copy()
    bad[1, 7] = 128
    with pytest.raises(ValueError, match=r"^tables\[1, 7\] = 128 is outside the 8-bit range \[-128, 127\]$"):
        LerpUnit(2, 8, 6, bad)
    with pytest.raises(TypeError, match=r"^tables must be an integer array, not an array of float64$"):
        LerpUnit(2, 8, 6, t.astype(float))
    with pytest.raises(ValueError, match=r"^meta width must be at least 0, not -1$"):
        LerpUnit(2, 8, 6, t, meta=-1)
    with pytest.raises(TypeError, match=r"^meta must be a width or a shape, not 'addr'$"):
        LerpUnit(2, 8, 6, t, meta="addr")
    with pytest.raises(ValueError, match=r"^target must be one of \('generic', 'ice40'\), not 'ecp5'$"):
        LerpUnit(2, 8, 6, t, target="ecp5")
    with pytest.raises(ValueError, match=r"^storage must be one of \('auto', 'ebr', 'lut'\), not 'spram'$"):
        LerpUnit(2, 8, 6, t, storage="spram")
    with pytest.raises(TypeError, match=r"^backpressure must be True or False, not 1$"):
        LerpUnit(2, 8, 6, t, backpressure=1)


# ---- random LERP models (sw/synth.py) ------------------------------------------------------


def test_random_lerp_model():
    relu = synth.random_model(4, [5, 16, 8, 3])
    lerp = synth.random_model(4, [5, 16, 8, 3], activation="lerp", index_bits=4)
    for a, b in zip(relu.layers, lerp.layers):
        for f in ("weight", "bias", "multiplier", "shift"):
            assert np.array_equal(getattr(a, f), getattr(b, f))
    assert [l.activation for l in lerp.layers] == ["lerp", "lerp", "none"]
    assert lerp.layers[0].table.shape == (16, 17) and lerp.layers[1].index_bits == 4
    assert lerp.layers[2].table is None
    codes = np.random.default_rng(0).integers(-128, 128, size=(20, 5))
    golden.forward(lerp, codes)
    for kind in ("monotone", "arbitrary"):
        t = synth.random_model(1, [3, 6, 2], activation="lerp", index_bits=2, act_bits=6,
                               lerp_tables=kind).layers[0].table
        assert t.shape == (6, 5) and t.min() >= -32 and t.max() <= 31
        if kind == "monotone":
            d = np.diff(t, axis=1)
            assert np.all((d >= 0).all(axis=1) | (d <= 0).all(axis=1))
    with pytest.raises(ValueError, match=r"^index_bits must be an integer in 0\.\.8 \(act_bits\), not 9$"):
        synth.random_model(0, [2, 2, 2], activation="lerp", index_bits=9)
    with pytest.raises(ValueError, match=r"^lerp_tables must be one of \('mixed', 'monotone', 'arbitrary'\), "
                                         r"not 'smooth'$"):
        synth.random_model(0, [2, 2, 2], activation="lerp", lerp_tables="smooth")


# ---- generated Verilog on Icarus and Verilator ------------------------------------------

_TB = """
`timescale 1ns/1ps
module tb;
  reg clk = 0;
  always #5 clk = ~clk;
  reg rst = 1;
  reg [{iw}-1:0] i_payload = 0;
  reg i_valid = 0;
  wire i_ready;
  wire [{ow}-1:0] o_payload;
  wire o_valid;
  reg o_ready = 0;
  lerp_dut dut(.clk(clk), .rst(rst), .i__payload(i_payload), .i__valid(i_valid), .i__ready(i_ready),
               .o__payload(o_payload), .o__valid(o_valid), .o__ready(o_ready));
  reg [{iw}-1:0] vin [0:{n}-1];
  reg [{ow}-1:0] vout [0:{n}-1];
  integer k = 0, nout = 0, bad = 0, cyc = 0;
  reg [31:0] r1 = 32'd{seed1}, r2 = 32'd{seed2};   // xorshift32: same draws on every simulator
  initial begin
    $readmemh("in.hex", vin);
    $readmemh("out.hex", vout);
    repeat (3) @(posedge clk);
    rst <= 0;
  end
  always @(posedge clk) if (!rst) begin
    cyc = cyc + 1;
    if (cyc > {timeout}) begin $display("TIMEOUT after %0d results", nout); $finish; end
    r1 = r1 ^ (r1 << 13); r1 = r1 ^ (r1 >> 17); r1 = r1 ^ (r1 << 5);
    r2 = r2 ^ (r2 << 13); r2 = r2 ^ (r2 >> 17); r2 = r2 ^ (r2 << 5);
    if (o_valid && o_ready) begin
      if (o_payload !== vout[nout]) begin
        bad = bad + 1;
        if (bad <= 5) $display("MISMATCH beat %0d: got %h, expected %h", nout, o_payload, vout[nout]);
      end
      nout = nout + 1;
      if (nout == {n}) begin $display("RESULT %0d %0d", nout, bad); $finish; end
    end
    if (i_valid && i_ready) k = k + 1;
    if (!i_valid || i_ready) begin
      if (k < {n} && r1[7:0] >= {gap}) begin i_valid <= 1; i_payload <= vin[k]; end
      else i_valid <= 0;
    end
    o_ready <= r2[7:0] >= {stall};
  end
endmodule
"""


def _verilog_bench(tmp_path, bits=8, k=6, channels=4, meta_bits=10, target="ice40"):
    """Write the unit's Verilog, the test bench and the vectors (every code, every channel)."""
    tables = mixed_tables(bits, k, channels, 12)
    tables[min(3, channels - 1)] = jumps_table(bits, k)
    dut = LerpUnit(channels, bits, k, tables, meta=meta_bits, target=target)
    items = exhaustive_items(bits, channels, meta_bits, seed=21)
    want = expected(items, tables, k, bits)
    ch_bits = len(dut.i.payload.channel)
    cmask, omask = (1 << bits) - 1, (1 << meta_bits) - 1
    vin = [(c & cmask) | (ch << bits) | (meta << (bits + ch_bits)) for c, ch, meta in items]
    vout = [(y & cmask) | ((meta & omask) << bits) for y, meta in want]
    text = verilog.convert(dut, name="lerp_dut")
    from pwlnet.sim.runner import _icarus_fix   # the project's one fix for yosys' comb "kick" register
    (tmp_path / "lerp_dut.v").write_text(_icarus_fix(text))
    (tmp_path / "in.hex").write_text("".join(f"{v:x}\n" for v in vin))
    (tmp_path / "out.hex").write_text("".join(f"{v:x}\n" for v in vout))
    (tmp_path / "tb.v").write_text(_TB.format(iw=bits + ch_bits + meta_bits, ow=bits + meta_bits, n=len(items),
                                              seed1=2463534242, seed2=88675123, gap=64, stall=64,
                                              timeout=20 * len(items) + 100))
    return len(items)


def _check_result(stdout, n):
    assert selfcheck_result(stdout) == (n, 0), stdout[-2000:]


@pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                    reason="Icarus Verilog (iverilog, vvp) not installed")
@pytest.mark.parametrize("target", ["ice40", "generic"])
def test_verilog_icarus_exhaustive(tmp_path, target):
    n = _verilog_bench(tmp_path, target=target)
    _check_result(run_selfcheck(tmp_path, ["tb.v", "lerp_dut.v"], "icarus"), n)


def test_verilog_verilator_exhaustive(tmp_path):
    n = _verilog_bench(tmp_path)
    _check_result(run_selfcheck(tmp_path, ["tb.v", "lerp_dut.v"], "verilator"), n)


def test_ice40_synthesis_keeps_the_multiply_out_of_the_dsps(tmp_path):
    """64-channel 6/2 unit on the UP5K: 8 EBR (two 2048 x 8 banks), no SB_MAC16, ~160 LUTs."""
    from pwlnet.hw.synth_report import synth_ice40
    dut = LerpUnit(64, 8, 6, mixed_tables(8, 6, 64, 1), target="ice40")
    r = synth_ice40(dut, workdir=tmp_path, dsp_inference=False)
    assert r["dsp"] == 0 and r["ebr"] == 8
    assert r["lut"] < 300, r
