"""The engine's sequencer alone: the read order of every program and the plan's cycle counts."""

import pytest
from amaranth.sim import Simulator

from pwlnet.hw.engine.layouts import capture_pass_facts
from pwlnet.hw.engine.plan import EnginePlan
from pwlnet.hw.engine.sequencer import Sequencer
from pwlnet.synth import random_model


def _expected_reads(plan, k, bank):
    """(x address, w address, last, pass facts at the last read) of program k on ``bank``."""
    f, n = plan.programs[k]
    reads = []
    for t in range(f, f + n):
        x = plan.layers[t]
        base = bank * plan.d if x["src_in"] else x["src_base"]
        for g in range(x["G"]):
            facts = {"chan": x["chan_base"] + g * plan.lanes, "lidx": t, "obank": bank,
                     "nv_m1": (x["nv_last"] if g == x["G"] - 1 else plan.lanes) - 1,
                     "wbase": (bank * plan.n_out if x["dst_out"] else x["dst_base"]) + g * plan.lanes}
            for i in range(x["n_in"]):
                last = i == x["n_in"] - 1
                reads.append((base + i, x["w_base"] + g * x["n_in"] + i, last, facts if last else None))
    return reads


@pytest.mark.parametrize("dims,lanes,extra", [
    ([13, 20, 7], 3, None),
    ([9, 5, 2], 8, [9, 2]),
    ([4, 6, 3], 1, None),
    ([13, 20, 7], 2, [13, 5, 7]),
])
def test_sequencer_reads_and_cycles(dims, lanes, extra):
    model = random_model(len(dims) + lanes, dims)
    programs = [] if extra is None else [random_model(9, extra).layers]
    # one inference at a time (the pair program is covered by the engine's tests)
    plan = EnginePlan(model, lanes, programs=programs, interleave=False)
    capture = capture_pass_facts(plan)
    dut = Sequencer(plan)
    n_prog = len(plan.programs)
    order = [k % n_prog for k in range(5)]
    log = {"claims": [], "reads": [], "clears": []}

    async def prog_producer(ctx):
        for k in order + [0]:            # one more: the end of the last inference is a claim
            ctx.set(dut.prog.valid, 1)
            ctx.set(dut.prog.payload, k)
            await ctx.tick().until(dut.prog.ready)
        ctx.set(dut.prog.valid, 0)

    async def monitor(ctx):
        ctx.set(dut.in_full, 0b11)          # inputs always there, outputs always free
        pending = None                      # a read whose weight address comes next cycle
        cycle = 0
        while len(log["claims"]) <= len(order) or pending is not None:
            if pending is not None:
                x_addr, last, facts = pending
                if capture and last:
                    facts = ctx.get(dut.info)   # captured at the last read
                log["reads"].append((x_addr, ctx.get(dut.w_addr), last, facts))
                pending = None
            if ctx.get(dut.claim):
                log["claims"].append((cycle, ctx.get(dut.claim_bank)))
            if ctx.get(dut.in_clear):
                log["clears"].append(ctx.get(dut.bank))
            if ctx.get(dut.rd.valid):
                last = bool(ctx.get(dut.rd.payload.last))
                facts = None if capture or not last else ctx.get(dut.rd.payload.info)
                pending = (ctx.get(dut.x_addr), last, facts)
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    if n_prog > 1:
        sim.add_testbench(prog_producer)
    sim.add_testbench(monitor)
    sim.run()

    claims = log["claims"][:len(order)]
    assert [b for _, b in claims] == [k % 2 for k in range(len(order))]
    assert log["clears"][:len(order)] == [k % 2 for k in range(len(order))]
    # back-to-back inferences: a program takes exactly its plan's cycle count
    for k, ((c0, _), (c1, _)) in enumerate(zip(log["claims"], log["claims"][1:])):
        assert c1 - c0 == plan.program_cycles(order[k])
    want = [r for k, p in enumerate(order) for r in _expected_reads(plan, p, k % 2)]
    got = [(x, w, last, None if f is None else {key: int(getattr(f, key)) for key in want_f})
           for (x, w, last, f), (_, _, _, want_f) in zip(log["reads"], want)]
    assert got == want


def test_sequencer_waits_for_input_and_output_bank():
    plan = EnginePlan(random_model(3, [9, 5, 2]), 4, interleave=False)
    dut = Sequencer(plan)

    async def tb(ctx):
        ctx.set(dut.out_busy, 0b01)
        ctx.set(dut.in_full, 0b10)           # bank 1 has an input, but bank 0 goes first
        for _ in range(20):
            assert not ctx.get(dut.claim) and ctx.get(dut.idle)
            await ctx.tick()
        ctx.set(dut.in_full, 0b11)           # bank 0's input, but its output bank is busy
        for _ in range(20):
            assert not ctx.get(dut.claim)
            await ctx.tick()
        ctx.set(dut.out_busy, 0b00)
        while not ctx.get(dut.claim):
            await ctx.tick()
        assert ctx.get(dut.claim_bank) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
