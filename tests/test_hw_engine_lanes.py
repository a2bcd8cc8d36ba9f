"""The engine's MAC lanes alone: each lane's sum of products per pass, shifted out in lane order."""

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from pwlnet.hw.engine.lanes import LaneArray


def _passes(rng, lanes, wb, in_bits, act_bits, n):
    """Random passes: (source is input, nv, x codes, weights (n_in, lanes), tag)."""
    out = []
    for k in range(n):
        src_in = bool(rng.integers(2)) if act_bits else True
        xbits = in_bits if src_in else act_bits
        n_in = int(rng.integers(1, 10))
        x = rng.integers(-(1 << (xbits - 1)), 1 << (xbits - 1), size=n_in)
        w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(n_in, lanes))
        if k < 2:               # the extremes first
            x[:] = -(1 << (xbits - 1)) if k == 0 else (1 << (xbits - 1)) - 1
            w[:] = -(1 << (wb - 1))
        out.append((src_in, int(rng.integers(1, lanes + 1)), x, w, k))
    return out


def _schedule(rng, passes, lanes, bubble):
    """Per cycle: None (no read) or (pass index, read index).  Random bubbles inside a
    pass; the last reads of two passes at least max(lanes, 5) cycles apart, as the
    sequencer guarantees (the hold register drains one lane per cycle)."""
    sched = []
    for k, (_, _, x, _, _) in enumerate(passes):
        start = len(sched)
        for i in range(len(x)):
            while rng.random() < bubble:
                sched.append(None)
            sched.append((k, i))
        while len(sched) - start < max(lanes, 5):
            sched.insert(len(sched) - 1, None)
    return sched + [None] * (lanes + 12)


@pytest.mark.parametrize("lanes,act_bits,capture,bubble", [
    (3, 7, False, 0.0), (8, 7, True, 0.3), (1, 0, True, 0.2), (4, 0, False, 0.4)])
def test_lanes_sum_of_products(lanes, act_bits, capture, bubble):
    wb, in_bits, acc_bits = 6, 5, 17
    rng = np.random.default_rng(lanes * 31 + act_bits)
    info_layout = data.StructLayout({"nv_m1": range(lanes), "tag": 8})
    dut = LaneArray(lanes, wb, in_bits, act_bits, acc_bits, info_layout, capture=capture)
    passes = _passes(rng, lanes, wb, in_bits, act_bits, 12)
    sched = _schedule(rng, passes, lanes, bubble)
    got = []

    def word(w_row):
        return sum((int(v) & ((1 << wb) - 1)) << (p * wb) for p, v in enumerate(w_row))

    async def driver(ctx):
        facts = None
        for t in range(len(sched)):
            r = sched[t]
            ctx.set(dut.rd.valid, r is not None)
            if r is not None:
                src_in, nv, x, _, tag = passes[r[0]]
                last = r[1] == len(x) - 1
                ctx.set(dut.rd.payload.last, last)
                ctx.set(dut.rd.payload.src_in, src_in)
                if not capture:
                    ctx.set(dut.rd.payload.info, {"nv_m1": nv - 1, "tag": tag})
            # the activation of the read one cycle earlier (garbage on the other source)
            prev = sched[t - 1] if t >= 1 else None
            garbage = int(rng.integers(-16, 16))
            if prev is not None:
                src_in, _, x, _, _ = passes[prev[0]]
                ctx.set(dut.x_in, int(x[prev[1]]) if src_in else garbage)
                if act_bits:
                    ctx.set(dut.x_act, garbage if src_in else int(x[prev[1]]))
            # the weight word of the read two cycles earlier
            prev2 = sched[t - 2] if t >= 2 else None
            ctx.set(dut.w, word(passes[prev2[0]][3][prev2[1]]) if prev2 is not None
                    else int(rng.integers(0, 1 << (lanes * wb))))
            if capture and facts is not None:
                ctx.set(dut.info, facts)
            await ctx.tick()
            if r is not None and r[1] == len(passes[r[0]][2]) - 1:
                # like the sequencer's capture register: from the cycle after the last read
                facts = {"nv_m1": passes[r[0]][1] - 1, "tag": passes[r[0]][4]}

    async def monitor(ctx):
        for _ in range(len(sched)):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append((ctx.get(dut.o.payload.info.tag), ctx.get(dut.o.payload.j),
                            ctx.get(dut.o.payload.acc)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    want = [(tag, j, int(np.dot(w[:, j].astype(np.int64), x.astype(np.int64))))
            for _, nv, x, w, tag in passes for j in range(nv)]
    assert got == want
