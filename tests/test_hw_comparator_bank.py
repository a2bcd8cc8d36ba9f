# amaranth: UnusedElaboratable=no
"""The comparator bank against :class:`pwlnet.code_cache.HwCache`, bit for bit.

A scenario is a list of operations -- entry writes (as the bank's ``w`` beats), clears and
queries -- applied in order to the bank and to the golden cache; every query's
``(hit, slot)`` must equal :meth:`HwCache.match`.  Scenarios cover queries exactly at an
entry's bound and one past it, far misses, several entries hitting (priority), writes
between queries, invalidation, clear and a full cache, for every metric and for ``dim``
not a multiple of ``lanes_per_cycle``, with random input gaps and output back-pressure
(Amaranth simulator), and once as generated Verilog on Icarus Verilog and Verilator.
"""

import shutil

import numpy as np
import pytest

from amaranth.back import verilog

from pwlnet import fixedpoint as fx
from pwlnet import code_cache, synth
from pwlnet.hw.comparator_bank import LOOKUP_LATENCY, ComparatorBank
from pwlnet.sim.verilog_check import run_selfcheck, selfcheck_result

from helpers import receive, run_streams, send

# ---- golden model and scenarios ---------------------------------------------------------


class Golden:
    """An :class:`HwCache` over a one-layer model (only its code widths and shape matter)."""

    def __init__(self, entries, dim, bits, metric):
        self.model = synth.random_model(0, [dim, 2], act_bits=bits)
        self.cache = code_cache.HwCache(self.model, entries, metric)
        self.metric, self.dim, self.bits = metric, dim, bits

    def write(self, slot, center, bound, valid):
        if valid:
            self.cache.write_entry(slot, code_cache.HwEntry(center=center, bound=bound, metric=self.metric,
                                                         layer=self.model.layers[0]))
        else:
            self.cache.invalidate(slot)

    def apply(self, ops):
        """Expected ``(hit, slot)`` of every query in ``ops`` (slot 0 on a miss, as on ``o``)."""
        out = []
        for op in ops:
            if op[0] == "write":
                self.write(*op[1:])
            elif op[0] == "clear":
                self.cache.clear()
            else:
                s = int(self.cache.match(np.asarray(op[1])[None])[0])
                out.append((int(s >= 0), max(s, 0)))
        return out


class Scenario:
    """Random operations with targeted cases; ``stats`` counts which cases occurred."""

    def __init__(self, entries, dim, bits, metric, seed):
        self.n, self.d, self.bits, self.metric = entries, dim, bits, metric
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = fx.signed_range(bits)
        self.cap = code_cache.max_distance(metric, dim, bits)
        self.centers = {}
        self.ops = []
        self.stats = dict(at_bound=0, one_past=0, multi_hit=0, far=0)

    def dist(self, q, c):
        return int(code_cache.distance(q, c, self.metric))

    def codes(self):
        return self.rng.integers(self.lo, self.hi + 1, self.d)

    def near(self, c, spread):
        return np.clip(c + self.rng.integers(-spread, spread + 1, self.d), self.lo, self.hi)

    def write(self, slot, center, bound, valid=True):
        center = np.asarray(center, dtype=np.int64)
        self.ops.append(("write", slot, center, int(min(max(bound, 0), self.cap)), bool(valid)))
        if valid:
            self.centers[slot] = (center, int(min(max(bound, 0), self.cap)))
        else:
            self.centers.pop(slot, None)

    def query(self, q):
        q = np.asarray(q, dtype=np.int64)
        self.ops.append(("query", q))
        hits = [s for s, (c, r) in self.centers.items() if self.dist(q, c) <= r]
        self.stats["multi_hit"] += len(hits) > 1

    def clear(self):
        self.ops.append(("clear",))
        self.centers = {}

    def fill(self, cluster=None):
        """Write every slot (a full cache), centers around ``cluster`` if given."""
        spread = max(1, (1 << self.bits) // 32)
        for s in range(self.n):
            if cluster is None:
                self.write(s, self.codes(), int(self.rng.integers(0, max(1, self.cap // 8))))
            else:   # balls around the cluster point, most of them containing it
                c = self.near(cluster, spread)
                self.write(s, c, self.dist(cluster, c) + int(self.rng.integers(-1, 3)))

    def build(self, rounds=3):
        spread = max(1, (1 << self.bits) // 16)
        for _ in range(rounds):
            cluster = self.codes()
            self.fill(cluster=cluster)
            for t in range(6):   # several entries hit: the lowest wins
                c, _ = self.centers[int(self.rng.integers(0, self.n))]
                self.query(cluster if t == 0 else self.near(cluster if t % 2 else c, spread))
            # exactly at the bound, then one past it, on a rewritten slot
            s = int(self.rng.integers(0, self.n))
            c = self.codes()
            q = self.near(c, spread)
            dq = self.dist(q, c)
            for k in range(self.n):          # keep the other slots from answering first
                if k != s:
                    self.write(k, self.codes(), 0, valid=bool(self.rng.random() < 0.5))
            self.write(s, c, dq)
            self.query(q)
            self.stats["at_bound"] += 1
            if dq > 0:
                self.write(s, c, dq - 1)
                self.query(q)
                self.stats["one_past"] += 1
            # the extremes of the code range: the largest distance, and a far miss
            far = np.where(c > 0, self.lo, self.hi)
            self.write(s, c, self.dist(far, c))
            self.query(far)
            self.write(s, c, self.dist(far, c) - 1)
            self.query(far)
            self.stats["far"] += 1
            self.write(int(self.rng.integers(0, self.n)), c, 0, valid=False)   # invalidate
            for _ in range(4):
                self.query(self.near(c, spread))
            self.query(c)
            self.clear()
            self.query(c)                    # nothing is valid after a clear
            self.write(0, c, 0)
            self.query(c)                    # distance 0 hits a zero bound
        return self.ops


# ---- driving the bank --------------------------------------------------------------------


def beats_of(dut, op):
    """The ``w`` or ``q`` beats of one operation."""
    lanes, d = dut.lanes_per_cycle, dut.dim
    if op[0] == "write":
        _, slot, center, bound, valid = op
        padded = np.concatenate([center, np.zeros(dut.beats * lanes - d, dtype=np.int64)])
        return [{"slot": slot, "index": b, "codes": [int(x) for x in padded[b * lanes:(b + 1) * lanes]],
                 "bound": bound, "valid": int(valid), "commit": int(b == dut.beats - 1)}
                for b in range(dut.beats)]
    if op[0] == "query":
        # lanes past d on the last beat carry junk: the bank must ignore them
        padded = np.concatenate([op[1], np.full(dut.beats * lanes - d, -1, dtype=np.int64)])
        return [[int(x) for x in padded[b * lanes:(b + 1) * lanes]] for b in range(dut.beats)]
    return []


def run_bank(dut, ops, *, gap=0.3, stall=0.3, seed=0):
    """Apply ``ops`` to ``dut`` in the Amaranth simulator; return the ``(hit, slot)`` results."""
    rng = np.random.default_rng(seed)
    n_queries = sum(op[0] == "query" for op in ops)
    got = []

    async def producer(ctx):
        for op in ops:
            if op[0] == "clear":
                # the host clears between queries: wait until the bank is idle
                while not ctx.get(dut.w.ready):
                    await ctx.tick()
                ctx.set(dut.clear, 1)
                await ctx.tick()
                ctx.set(dut.clear, 0)
                continue
            port = dut.w if op[0] == "write" else dut.q
            await send(ctx, port, beats_of(dut, op), rng=rng, gap=gap)

    run_streams(dut, producer,
                lambda ctx: receive(ctx, dut.o, lambda: len(got) >= n_queries,
                                    lambda p: got.append((p.hit, p.slot)), rng=rng, stall=stall))
    return got


CASES = [
    # entries, dim, bits, metric, lanes, squarer
    (4, 5, 8, "linf", 1),
    (4, 5, 8, "l2", 2),
    (4, 5, 8, "l2-ebr", 2),
    (3, 4, 5, "l2-ebr", 1),
    (4, 5, 8, "l1", 3),
    (8, 12, 8, "linf", 5),
    (8, 12, 8, "l2", 1),
    (3, 7, 6, "l2", 7),
    (5, 3, 4, "linf", 2),
    (1, 4, 8, "l2", 1),
    (2, 1, 8, "l1", 1),
]


@pytest.mark.parametrize("entries,dim,bits,metric,lanes", CASES,
                         ids=[f"N{c[0]}-d{c[1]}-b{c[2]}-{c[3]}-L{c[4]}" for c in CASES])
def test_scenarios_vs_golden(entries, dim, bits, metric, lanes):
    metric, _, squarer = metric.partition("-")
    sc = Scenario(entries, dim, bits, metric, seed=entries * 100 + dim)
    ops = sc.build()
    assert sc.stats["at_bound"] and sc.stats["one_past"] and sc.stats["far"]
    if entries > 1:
        assert sc.stats["multi_hit"]
    want = Golden(entries, dim, bits, metric).apply(ops)
    assert any(h for h, _ in want) and not all(h for h, _ in want)
    dut = ComparatorBank(entries, dim, bits, metric, lanes_per_cycle=lanes, squarer=squarer or "logic")
    assert run_bank(dut, ops, seed=dim) == want


def test_random_queries_full_cache():
    """A full 16-entry bank, many random near and far queries, writes in between."""
    sc = Scenario(16, 6, 8, "linf", seed=7)
    for s in range(16):
        sc.write(s, sc.codes(), int(sc.rng.integers(20, 60)))
    for t in range(60):
        if t % 20 == 19:
            sc.write(int(sc.rng.integers(0, 16)), sc.codes(), int(sc.rng.integers(0, 120)))
        c, _ = sc.centers[int(sc.rng.integers(0, 16))]
        sc.query(sc.near(c, 40) if t % 3 else sc.codes())
    want = Golden(16, 6, 8, "linf").apply(sc.ops)
    assert 5 < sum(h for h, _ in want) < len(want)
    dut = ComparatorBank(16, 6, 8, "linf", lanes_per_cycle=4)
    assert run_bank(dut, sc.ops, gap=0.2, stall=0.5, seed=3) == want


@pytest.mark.parametrize("dim,lanes", [(12, 1), (5, 1), (7, 3), (2, 2)])
def test_latency_and_streaming(dim, lanes):
    """Queries back to back with an always-ready consumer: a result exactly
    ``lookup_latency`` cycles after each last beat, and ``q`` stalls only for queries
    of at most ``lookup_latency`` beats (and in the cycle an entry write lands)."""
    dut = ComparatorBank(4, dim, 8, "l2", lanes_per_cycle=lanes)
    assert dut.lookup_latency == LOOKUP_LATENCY == 4
    rng = np.random.default_rng(dim)
    c = rng.integers(-128, 128, dim)
    # The first query, right after the write, is the written center: it must see the new row.
    queries = [c if n % 2 == 0 else rng.integers(-128, 128, dim) for n in range(8)]
    log = {"last": [], "out": []}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for op in [("write", 2, c, 0, True)]:
            for beat in beats_of(dut, op):
                ctx.set(dut.w.payload, beat)
                ctx.set(dut.w.valid, 1)
                await ctx.tick().until(dut.w.ready)
        ctx.set(dut.w.valid, 0)
        beats = [(b, i == dut.beats - 1) for q in queries for i, b in enumerate(beats_of(dut, ("query", q)))]
        cyc, pos = 0, 0
        while len(log["out"]) < len(queries):
            if pos < len(beats):
                ctx.set(dut.q.payload, beats[pos][0])
                ctx.set(dut.q.valid, 1)
            else:
                ctx.set(dut.q.valid, 0)
            if ctx.get(dut.o.valid):
                log["out"].append((cyc, ctx.get(dut.o.payload.hit), ctx.get(dut.o.payload.slot)))
            if pos < len(beats) and ctx.get(dut.q.ready):
                if beats[pos][1]:
                    log["last"].append(cyc)
                pos += 1
            elif pos < len(beats):
                # cycle 0 is the one the entry write lands in the center memory: no query starts
                assert cyc == 0 or dut.beats <= dut.lookup_latency, "a query stalled"
            await ctx.tick()
            cyc += 1

    run_streams(dut, tb)
    assert [t for t, _, _ in log["out"]] == [t + dut.lookup_latency for t in log["last"]]
    assert [(h, s) for _, h, s in log["out"]] == [(1 - n % 2, 2 * (1 - n % 2)) for n in range(8)]
    # one query per max(beats, lookup_latency + 1) cycles: the last beat waits for the
    # previous result only when a query is shorter than the pipeline
    step = max(dut.beats, dut.lookup_latency + 1)
    assert log["last"] == [log["last"][0] + n * step for n in range(8)]


def test_backpressure_holds_result_and_blocks_writes():
    """An untaken result stays on ``o``; writes wait for it; the next query's beats but
    its last are taken meanwhile."""
    dut = ComparatorBank(2, 3, 8, "linf")

    async def tb(ctx):
        ctx.set(dut.o.ready, 0)
        for beat in beats_of(dut, ("write", 1, np.array([1, 2, 3]), 0, True)):
            ctx.set(dut.w.payload, beat)
            ctx.set(dut.w.valid, 1)
            await ctx.tick().until(dut.w.ready)
        ctx.set(dut.w.valid, 0)
        for beat in beats_of(dut, ("query", np.array([1, 2, 3]))):
            ctx.set(dut.q.payload, beat)
            ctx.set(dut.q.valid, 1)
            await ctx.tick().until(dut.q.ready)
        for _ in range(2):                       # two beats of the next query go in
            ctx.set(dut.q.payload, [9])
            await ctx.tick().until(dut.q.ready)
        ctx.set(dut.w.valid, 1)                  # offered write and last beat both wait
        for _ in range(10):
            await ctx.tick()
            assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload.hit) and ctx.get(dut.o.payload.slot) == 1
            assert not ctx.get(dut.q.ready) and not ctx.get(dut.w.ready)
        ctx.set(dut.w.valid, 0)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.q.ready)
        await ctx.tick()
        ctx.set(dut.q.valid, 0)
        assert not ctx.get(dut.o.valid)
        hit, = await ctx.tick().sample(dut.o.payload.hit).until(dut.o.valid)
        assert hit == 0                          # (9, 9, 9) is 6 away from (1, 2, 3)

    run_streams(dut, tb)


def test_write_to_a_slot_past_the_last_is_ignored():
    """With 3 entries the 2-bit slot field can say 3: such a write changes nothing."""
    dut = ComparatorBank(3, 2, 8, "l1")
    c = np.array([5, -5])
    ops = [("write", 1, c, 3, True), ("write", 3, c, 100, True), ("query", c + 4), ("query", c + 1),
           ("write", 3, c, 0, False), ("query", c)]
    assert run_bank(dut, ops) == [(0, 0), (1, 1), (1, 1)]


def test_signature_and_widths():
    dut = ComparatorBank(32, 24, 8, "l2", lanes_per_cycle=5)
    assert (dut.entries, dut.dim, dut.code_bits, dut.metric, dut.lanes_per_cycle, dut.squarer) == \
        (32, 24, 8, "l2", 5, "logic")
    assert dut.beats == 5
    assert dut.distance_bits == code_cache.distance_bits("l2", 24, 8) == 21
    assert len(dut.o.payload.slot) == 5 and len(dut.w.payload.index) == 3
    assert len(dut.w.payload.bound) == 21 and len(dut.q.payload.as_value()) == 40
    one = ComparatorBank(1, 1, 8, "linf")
    assert len(one.o.payload.slot) == 0 and len(one.w.payload.index) == 0 and one.distance_bits == 8


def test_arguments_checked():
    with pytest.raises(TypeError, match=r"^entries must be an integer, not 4\.0$"):
        ComparatorBank(4.0, 3, 8, "l2")
    with pytest.raises(ValueError, match=r"^entries must be at least 1, not 0$"):
        ComparatorBank(0, 3, 8, "l2")
    with pytest.raises(ValueError, match=r"^dim must be at least 1, not -2$"):
        ComparatorBank(4, -2, 8, "l2")
    with pytest.raises(TypeError, match=r"^dim must be an integer, not True$"):
        ComparatorBank(4, True, 8, "l2")
    with pytest.raises(TypeError, match=r"^code_bits must be an integer, not '8'$"):
        ComparatorBank(4, 3, "8", "l2")
    with pytest.raises(ValueError, match=r"^code_bits must be between 2 and 16 bits, not 17$"):
        ComparatorBank(4, 3, 17, "l2")
    with pytest.raises(ValueError, match=r"^metric must be one of l2, linf, l1, not 'cos'$"):
        ComparatorBank(4, 3, 8, "cos")
    with pytest.raises(ValueError, match=r"^lanes_per_cycle must be in 1\.\.3, not 4$"):
        ComparatorBank(4, 3, 8, "l2", lanes_per_cycle=4)
    with pytest.raises(TypeError, match=r"^lanes_per_cycle must be an integer, not None$"):
        ComparatorBank(4, 3, 8, "l2", lanes_per_cycle=None)
    with pytest.raises(ValueError, match=r"^squarer must be one of \('logic', 'ebr'\), not 'dsp'$"):
        ComparatorBank(4, 3, 8, "l2", squarer="dsp")
    with pytest.raises(ValueError, match=r"^squarer 'ebr' needs metric 'l2', not 'linf'$"):
        ComparatorBank(4, 3, 8, "linf", squarer="ebr")


# ---- generated Verilog on Icarus and Verilator ------------------------------------------

_TB = """
`timescale 1ns/1ps
module tb;
  reg clk = 0;
  always #5 clk = ~clk;
  reg rst = 1;
  reg [{ww}-1:0] w_payload = 0;
  reg w_valid = 0;
  wire w_ready;
  reg [{qw}-1:0] q_payload = 0;
  reg q_valid = 0;
  wire q_ready;
  reg clear = 0;
  wire [{ow}-1:0] o_payload;
  wire o_valid;
  reg o_ready = 0;
  bank dut(.clk(clk), .rst(rst), .w__payload(w_payload), .w__valid(w_valid), .w__ready(w_ready),
           .q__payload(q_payload), .q__valid(q_valid), .q__ready(q_ready), .clear(clear),
           .o__payload(o_payload), .o__valid(o_valid), .o__ready(o_ready));
  // op word: bits 0..1 kind (0 write beat, 1 query beat, 2 clear), payload above
  reg [{opw}-1:0] ops [0:{nops}-1];
  reg [{ow}-1:0] want [0:{nres}-1];
  reg [{opw}-1:0] op;
  integer k = 0, nout = 0, bad = 0, cyc = 0;
  reg [31:0] r1 = 32'd{seed1}, r2 = 32'd{seed2};   // xorshift32: same draws on every simulator
  initial begin
    $readmemh("ops.hex", ops);
    $readmemh("want.hex", want);
    repeat (3) @(posedge clk);
    rst <= 0;
  end
  always @(posedge clk) if (!rst) begin
    cyc = cyc + 1;
    if (cyc > {timeout}) begin $display("TIMEOUT after %0d results", nout); $finish; end
    r1 = r1 ^ (r1 << 13); r1 = r1 ^ (r1 >> 17); r1 = r1 ^ (r1 << 5);
    r2 = r2 ^ (r2 << 13); r2 = r2 ^ (r2 >> 17); r2 = r2 ^ (r2 << 5);
    if (o_valid && o_ready) begin
      if (o_payload !== want[nout]) begin
        bad = bad + 1;
        if (bad <= 5) $display("MISMATCH result %0d: got %h, expected %h", nout, o_payload, want[nout]);
      end
      nout = nout + 1;
      if (nout == {nres}) begin $display("RESULT %0d %0d", nout, bad); $finish; end
    end
    if ((w_valid && w_ready) || (q_valid && q_ready) || clear) k = k + 1;
    clear <= 0;
    if (!(w_valid && !w_ready) && !(q_valid && !q_ready)) begin
      w_valid <= 0; q_valid <= 0;
      op = ops[k];
      // a clear waits until the bank is idle (w_ready), as the host's does
      if (k < {nops} && !clear && r1[7:0] >= {gap} && !(op[1:0] == 2 && !w_ready)) begin
        if (op[1:0] == 0) begin w_valid <= 1; w_payload <= op[{opw}-1:2]; end
        else if (op[1:0] == 1) begin q_valid <= 1; q_payload <= op[{qw}+1:2]; end
        else clear <= 1;
      end
    end
    o_ready <= r2[7:0] >= {stall};
  end
endmodule
"""


def _pack_fields(layout, values):
    """Bits of a StructLayout value given as a dict (array members as lists of codes)."""
    word = 0
    for name, field in layout:
        v = values[name]
        if isinstance(v, list):
            el = field.shape.elem_shape
            w = el.width
            v = sum((int(x) & ((1 << w) - 1)) << (j * w) for j, x in enumerate(v))
        word |= (int(v) & ((1 << field.width) - 1)) << field.offset
    return word


def _verilog_bench(tmp_path, squarer="logic"):
    entries, dim, bits, metric, lanes = 6, 7, 8, "l2", 2
    sc = Scenario(entries, dim, bits, metric, seed=99)
    ops = sc.build(rounds=4)
    want = Golden(entries, dim, bits, metric).apply(ops)
    dut = ComparatorBank(entries, dim, bits, metric, lanes_per_cycle=lanes, squarer=squarer)
    wl = dut.w.payload.shape()
    ww, qw = wl.size, lanes * bits
    slot_bits = len(dut.o.payload.slot)
    words = []
    for op in ops:
        if op[0] == "clear":
            words.append(2)
        for beat in beats_of(dut, op):
            if op[0] == "write":
                words.append(_pack_fields(wl, beat) << 2)
            else:
                words.append((sum((x & ((1 << bits) - 1)) << (j * bits) for j, x in enumerate(beat)) << 2) | 1)
    ol = dut.o.payload.shape()
    res = [_pack_fields(ol, {"hit": h, "slot": s}) for h, s in want]
    from pwlnet.sim.runner import _icarus_fix   # the project's fix for yosys' comb "kick" register
    (tmp_path / "bank.v").write_text(_icarus_fix(verilog.convert(dut, name="bank")))
    (tmp_path / "ops.hex").write_text("".join(f"{v:x}\n" for v in words))
    (tmp_path / "want.hex").write_text("".join(f"{v:x}\n" for v in res))
    (tmp_path / "tb.v").write_text(_TB.format(ww=ww, qw=qw, ow=1 + slot_bits, opw=2 + max(ww, qw),
                                              nops=len(words), nres=len(res), seed1=2463534242,
                                              seed2=88675123, gap=64, stall=64,
                                              timeout=20 * len(words) + 100))
    return len(res)


def _check_result(stdout, n):
    assert selfcheck_result(stdout) == (n, 0), stdout[-2000:]


@pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                    reason="Icarus Verilog (iverilog, vvp) not installed")
@pytest.mark.parametrize("squarer", ["logic", "ebr"])
def test_verilog_icarus(tmp_path, squarer):
    n = _verilog_bench(tmp_path, squarer)
    _check_result(run_selfcheck(tmp_path, ["tb.v", "bank.v"], "icarus"), n)


def test_verilog_verilator(tmp_path):
    n = _verilog_bench(tmp_path)
    _check_result(run_selfcheck(tmp_path, ["tb.v", "bank.v"], "verilator"), n)


def test_ice40_synthesis_uses_no_dsp(tmp_path):
    """N = 8, d = 12, L-infinity on the UP5K: windows (two codes per dimension) in 8 EBR,
    no SB_MAC16, ~300 LUT4 (two compares per entry, no subtractor or bound register)."""
    from pwlnet.hw.synth_report import synth_ice40
    r = synth_ice40(ComparatorBank(8, 12, 8, "linf"), workdir=tmp_path, dsp_inference=False)
    assert r["dsp"] == 0 and r["ebr"] == 8, r
    assert r["lut"] < 400 and r["ff"] < 100, r


def test_ice40_synthesis_l2_square_table(tmp_path):
    """``squarer="ebr"``: one 256 x 16 table of squares per entry, beside the centers' 2 EBR."""
    from pwlnet.hw.synth_report import synth_ice40
    r = synth_ice40(ComparatorBank(4, 6, 8, "l2", squarer="ebr"), workdir=tmp_path, dsp_inference=False)
    assert r["dsp"] == 0 and r["ebr"] == 2 + 4, r


@pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                    reason="Icarus Verilog (iverilog, vvp) not installed")
def test_verilog_bench_reports_a_corrupted_expectation(tmp_path):
    """The self-checking bench must count a wrong expected result, not pass regardless."""
    n = _verilog_bench(tmp_path)
    want = (tmp_path / "want.hex").read_text().split()
    want[0] = f"{int(want[0], 16) ^ 1:x}"
    (tmp_path / "want.hex").write_text("".join(f"{w}\n" for w in want))
    assert selfcheck_result(run_selfcheck(tmp_path, ["tb.v", "bank.v"], "icarus")) == (n, 1)
