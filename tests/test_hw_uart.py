# amaranth: UnusedElaboratable=no
"""UART receiver and transmitter in Amaranth's simulator.

Testbenches use plain ``await ctx.tick()`` loops: a background testbench left suspended
inside ``until()``/``repeat()`` when the simulation ends raises on finalisation.
"""

import pytest
from amaranth import *
from amaranth.sim import Simulator

from pwlnet.hw.uart import MIN_DIVISOR, UARTRx, UARTTx, baud_divisor


def test_baud_divisor():
    assert baud_divisor(12e6, 115200) == 104
    assert baud_divisor(63.75e6, 115200) == 553
    with pytest.raises(ValueError, match="too fast"):
        baud_divisor(12e6, 4_000_000)
    with pytest.raises(ValueError, match=r"off, more than 2\.0%"):
        baud_divisor(12e6, 1_800_000)


@pytest.mark.parametrize("bad", [3, 0, 4.0, True])
def test_divisor_checked(bad):
    with pytest.raises((TypeError, ValueError), match="divisor"):
        UARTTx(bad)
    with pytest.raises((TypeError, ValueError), match="divisor"):
        UARTRx(bad)


def _line_bits(byte, stop=1):
    return [0, *((byte >> i) & 1 for i in range(8)), stop]


async def _ticks(ctx, n):
    for _ in range(n):
        await ctx.tick()


def _simulate(dut, main, *background):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(main)
    for tb in background:
        sim.add_testbench(tb, background=True)
    sim.run()


async def _send(ctx, stream, data):
    for b in data:
        ctx.set(stream.payload, b)
        ctx.set(stream.valid, 1)
        await ctx.tick()
        while not ctx.get(stream.ready):
            await ctx.tick()
    ctx.set(stream.valid, 0)


async def _read_line(ctx, pin, div, n):
    """Decode `n` frames from a serial line: the 10 bits of each, sampled mid-bit."""
    frames = []
    for _ in range(n):
        while ctx.get(pin):
            await ctx.tick()
        await _ticks(ctx, div // 2)
        bits = [ctx.get(pin)]
        for _ in range(9):
            # Stop at the stop bit's middle: the next start edge may follow at once.
            await _ticks(ctx, div)
            bits.append(ctx.get(pin))
        frames.append(bits)
    return frames


@pytest.mark.parametrize("div", [MIN_DIVISOR, 5, 8])
def test_tx(div):
    dut = UARTTx(div)
    data = [0x00, 0xFF, 0xA5, 0x3C]
    got = []

    async def line(ctx):
        got.extend(await _read_line(ctx, dut.tx, div, len(data)))

    async def producer(ctx):
        await _send(ctx, dut.i, data)

    _simulate(dut, line, producer)
    assert got == [_line_bits(b) for b in data]


def _drive_rx(div, frames, *, ready=True, idle=2):
    """Run a UARTRx on the given line bits; return (bytes, frame errors, overruns)."""
    dut = UARTRx(div)
    out, counts = [], {"fe": 0, "ov": 0}

    async def line(ctx):
        ctx.set(dut.o.ready, int(ready))
        await _ticks(ctx, 3)
        for bits in frames:
            for bit in bits:
                ctx.set(dut.rx, bit)
                await _ticks(ctx, div)
            await _ticks(ctx, idle)
        await _ticks(ctx, 4 * div)

    async def monitor(ctx):
        while True:
            await ctx.tick()
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                out.append(ctx.get(dut.o.payload))
            counts["fe"] += ctx.get(dut.frame_error)
            counts["ov"] += ctx.get(dut.overrun)

    _simulate(dut, line, monitor)
    return out, counts["fe"], counts["ov"]


@pytest.mark.parametrize("div", [MIN_DIVISOR, 5, 7])
def test_rx(div):
    data = [0x55, 0x00, 0xFF, 0x81]
    out, ferr, ovr = _drive_rx(div, [_line_bits(b) for b in data])
    assert (out, ferr, ovr) == (data, 0, 0)


def test_rx_frame_error_then_recovers():
    out, ferr, _ = _drive_rx(6, [_line_bits(0x12, stop=0), [1, 1], _line_bits(0x34)])
    assert out == [0x34] and ferr == 1


def test_rx_rejects_glitch():
    # A low pulse of 2 cycles ends before the start bit's mid-point check (4 cycles in).
    div = 8
    dut = UARTRx(div)
    out = []

    async def line(ctx):
        ctx.set(dut.o.ready, 1)
        await _ticks(ctx, 3)
        ctx.set(dut.rx, 0)
        await _ticks(ctx, 2)
        ctx.set(dut.rx, 1)
        await _ticks(ctx, 3 * div)
        for bit in _line_bits(0x5A):
            ctx.set(dut.rx, bit)
            await _ticks(ctx, div)
        await _ticks(ctx, 2 * div)

    async def monitor(ctx):
        while True:
            await ctx.tick()
            if ctx.get(dut.o.valid):
                out.append(ctx.get(dut.o.payload))

    _simulate(dut, line, monitor)
    assert out == [0x5A]


def test_rx_overrun():
    out, _, ovr = _drive_rx(4, [_line_bits(1), _line_bits(2)], ready=False)
    assert out == [] and ovr == 1


def test_loopback():
    div = 5

    class Loop(Elaboratable):
        def __init__(self):
            self.tx, self.rx = UARTTx(div), UARTRx(div)

        def elaborate(self, platform):
            m = Module()
            m.submodules.tx, m.submodules.rx = self.tx, self.rx
            m.d.comb += self.rx.rx.eq(self.tx.tx)
            return m

    dut = Loop()
    data = list(range(0, 256, 37))
    got = []

    async def producer(ctx):
        await _send(ctx, dut.tx.i, data)

    async def consumer(ctx):
        ctx.set(dut.rx.o.ready, 1)
        while len(got) < len(data):
            await ctx.tick()
            if ctx.get(dut.rx.o.valid):
                got.append(ctx.get(dut.rx.o.payload))

    _simulate(dut, consumer, producer)
    assert got == data
