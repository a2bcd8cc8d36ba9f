"""CRC-16 of the host protocol as gateware: one byte folded into the CRC per call.

The polynomial and the initial value are :mod:`pwlnet.protocol`'s
(:data:`~pwlnet.protocol.CRC_POLY`, ``0xFFFF``); :func:`pwlnet.protocol.crc16` is the same
rule in software, and the tests check one against the other.
"""

from amaranth.hdl import C, Cat, Mux

from ...protocol import CRC_POLY

__all__ = ["CRC_INIT", "crc16_step"]

#: The CRC register's value before the first byte of a frame (CRC-16/CCITT-FALSE).
CRC_INIT = 0xFFFF


def crc16_step(crc, byte):
    """The 16-bit value ``crc`` with the 8-bit value ``byte`` folded in (most significant
    bit first, no reflection): a purely combinational expression."""
    # The bit-serial definition unrolled over one byte; yosys flattens it to XOR trees.
    for i in reversed(range(8)):
        fb = crc[15] ^ byte[i]
        crc = Cat(C(0, 1), crc[:15]) ^ Mux(fb, C(CRC_POLY, 16), C(0, 16))
    return crc
