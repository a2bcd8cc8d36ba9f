"""The link's CRC-16 step in gateware against pwlnet.protocol.crc16."""

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from pwlnet.hw.link.crc import CRC_INIT, crc16_step
from pwlnet.protocol import crc16


def test_crc16_step_matches_protocol():
    m = Module()
    crc, byte, out = Signal(16), Signal(8), Signal(16)
    m.d.comb += out.eq(crc16_step(crc, byte))
    data = b"123456789" + bytes(np.random.default_rng(0).integers(0, 256, 200).astype(np.uint8))
    seen = []

    async def tb(ctx):
        value = CRC_INIT
        for b in data:
            ctx.set(crc, value)
            ctx.set(byte, b)
            value = ctx.get(out)
            seen.append(value)

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert seen[8] == crc16(b"123456789") == 0x29B1
    assert seen == [crc16(data[:i + 1]) for i in range(len(data))]
