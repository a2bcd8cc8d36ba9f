"""The link's command executor alone: requests in (as the parser gives them), engine traffic,
buffer contents, counters and results out."""

import numpy as np
from amaranth.hdl import Elaboratable, Module, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from pwlnet import golden
from pwlnet.hw.engine import MLPEngine
from pwlnet.hw.link import CommandExecutor
from pwlnet.protocol import COUNTER_NAMES
from pwlnet.synth import random_model

STAGE = 12     # bytes of the staging buffer in these benches


class _Bench(Elaboratable):
    """The executor with its three buffers and, for INFER, the real engine behind it."""

    def __init__(self, model, codes, stage=b"", engine=None, **kw):
        self.model = model
        self.codes = [int(c) for c in codes]
        self.stage = list(stage) + [0] * (STAGE - len(stage))
        self.engine = engine
        self.dut = CommandExecutor(model, staged_bytes=STAGE, stage_depth=STAGE, counter_bits=16, **kw)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        model = self.model
        m.submodules.in_mem = in_mem = Memory(shape=signed(model.input_bits), depth=model.input_dim,
                                              init=self.codes)
        m.submodules.out_mem = self.out_mem = Memory(shape=signed(model.layers[-1].out_bits),
                                                     depth=model.output_dim, init=[])
        m.submodules.stage_mem = stage_mem = Memory(shape=8, depth=STAGE, init=self.stage)
        wiring.connect(m, dut.in_rd, in_mem.read_port())
        wiring.connect(m, dut.out_wr, self.out_mem.write_port())
        wiring.connect(m, dut.stage_rd, stage_mem.read_port())
        if self.engine is not None:
            m.submodules.engine = self.engine
            wiring.connect(m, dut.eng_i, self.engine.i)
            wiring.connect(m, self.engine.o, dut.eng_o)
        return m


def run(bench, script):
    """Run ``script(ctx, dut, start)`` in the simulator; ``start(**flags)`` pulses a request
    and waits for ``done``, returning the cycles it took."""
    dut = bench.dut

    async def start(ctx, **flags):
        for name, value in flags.items():
            ctx.set(getattr(dut.req, name), value)
        ctx.set(dut.req.start, 1)
        await ctx.tick()
        ctx.set(dut.req.start, 0)
        for cycles in range(1, 5000):
            done = ctx.get(dut.req.done)
            await ctx.tick()
            if done:
                return cycles
        raise AssertionError("the executor never answered done")

    async def tb(ctx):
        await script(ctx, dut, lambda **f: start(ctx, **f))

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def counters(ctx, dut):
    vec = ctx.get(dut.counters)
    return {name: (vec >> (32 * i)) & 0xFFFFFFFF for i, name in enumerate(COUNTER_NAMES)}


def test_infer_runs_the_engine():
    model = random_model(7, [5, 9, 4])
    rng = np.random.default_rng(4)
    xs = rng.integers(-128, 128, size=(2, model.input_dim))
    results = []
    for x in xs:
        bench = _Bench(model, x, engine=MLPEngine(model, 8, target="generic"))

        async def script(ctx, dut, start):
            await start(infer=1)
            out = [ctx.get(bench.out_mem.data[i]) for i in range(model.output_dim)]
            results.append((out, ctx.get(dut.argmax), ctx.get(dut.cycles)))
            await ctx.tick().repeat(3)    # the counters' enables are registered
            c = counters(ctx, dut)
            assert c["inferences"] == 1 and c["busy_cycles"] >= ctx.get(dut.cycles)

        run(bench, script)
    for x, (out, argmax, cycles) in zip(xs, results):
        expect = golden.forward(model, x[None])[0]
        np.testing.assert_array_equal(out, expect)
        assert argmax == golden.argmax(expect)
    # The cycle count is the engine's, the same for every input.
    assert results[0][2] == results[1][2] > 0


def test_load_weights_commits_staged_words():
    model = random_model(1, [3, 2])
    staged = bytes([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99])
    bench = _Bench(model, [0] * 3, stage=staged, weight_words=40, weight_word_bits=24)
    writes = []

    async def script(ctx, dut, start):
        # The first word's address comes in the payload, low byte first.
        for bit, byte in enumerate((0x05, 0x00)):
            ctx.set(dut.req.byte, byte)
            ctx.set(dut.req.addr_we, 1 << bit)
            await ctx.tick()
        ctx.set(dut.req.addr_we, 0)
        ctx.set(dut.req.staged, len(staged))
        ctx.set(dut.w_wr.ready, 1)
        ctx.set(dut.req.load, 1)
        ctx.set(dut.req.start, 1)
        await ctx.tick()
        ctx.set(dut.req.start, 0)
        while not ctx.get(dut.req.done):
            if ctx.get(dut.w_wr.valid):
                writes.append((ctx.get(dut.w_wr.payload.addr), ctx.get(dut.w_wr.payload.data)))
            await ctx.tick()

    run(bench, script)
    # Little-endian three-byte words at consecutive addresses from 5.
    assert writes == [(5, 0x332211), (6, 0x665544), (7, 0x998877)]


def test_cache_write_sends_the_image():
    model = random_model(2, [3, 4, 2])
    image = bytes(range(200, 210))
    bench = _Bench(model, [0] * 3, stage=image, cache_entries=4, image_bytes=len(image))
    beats = []

    async def script(ctx, dut, start):
        ctx.set(dut.req.arg0, 3)
        ctx.set(dut.req.staged, len(image))
        ctx.set(dut.req.cwrite, 1)
        ctx.set(dut.req.start, 1)
        await ctx.tick()
        ctx.set(dut.req.start, 0)
        cycle = 0
        while not ctx.get(dut.req.done):
            ctx.set(dut.cw.ready, cycle % 3 == 0)     # the engine holds some bytes back
            if ctx.get(dut.cw.valid) and ctx.get(dut.cw.ready):
                beats.append((ctx.get(dut.cw.payload.slot), ctx.get(dut.cw.payload.data)))
            await ctx.tick()
            cycle += 1

    run(bench, script)
    assert beats == [(3, b) for b in image]


def test_counters_and_cache_strobes():
    model = random_model(2, [3, 4, 2])
    bench = _Bench(model, [0] * 3, cache_entries=4, image_bytes=10)

    async def script(ctx, dut, start):
        for name, times in (("count_frame", 3), ("count_error", 2)):
            for _ in range(times):
                ctx.set(getattr(dut.req, name), 1)
                await ctx.tick()
                ctx.set(getattr(dut.req, name), 0)
                await ctx.tick()
        ctx.set(dut.uart_error, 1)
        await ctx.tick()
        ctx.set(dut.uart_error, 0)
        await ctx.tick().repeat(3)
        assert counters(ctx, dut) == {"frames": 3, "inferences": 0, "errors": 2, "busy_cycles": 0,
                                      "uart_errors": 1}
        ctx.set(dut.req.clear_counters, 1)
        await ctx.tick()
        ctx.set(dut.req.clear_counters, 0)
        await ctx.tick().repeat(3)
        assert set(counters(ctx, dut).values()) == {0}
        # The cache strobes reach the engine one cycle later, for one cycle.
        for name in ("cache_clear", "clear_stats"):
            ctx.set(getattr(dut.req, name), 1)
            assert not ctx.get(getattr(dut, name))
            await ctx.tick()
            ctx.set(getattr(dut.req, name), 0)
            assert ctx.get(getattr(dut, name))
            await ctx.tick()
            assert not ctx.get(getattr(dut, name))

    run(bench, script)
