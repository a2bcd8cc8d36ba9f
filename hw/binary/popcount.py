"""A pipelined popcount tree: ``width`` bits in, their count out ``latency`` cycles later."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["PopcountTree"]


class PopcountTree(wiring.Component):
    """Adds ``width`` bits pairwise, one registered adder level per cycle.

    Parameters
    ----------
    width : int
        Bits counted per cycle.

    Attributes
    ----------
    i : In(width)
        The bits (sampled every cycle).
    o : Out(range(width + 1))
        Their count, :attr:`latency` cycles after they were sampled.
    latency : int
        ``ceil(log2(width))`` register levels (0 for one bit, a wire).
    """

    def __init__(self, width):
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        self._width = width
        self.latency = ceil_log2(width)
        super().__init__({"i": In(width), "o": Out(range(width + 1))})

    def elaborate(self, platform):
        m = Module()
        level = [(self.i[j], 1) for j in range(self._width)]      # (value, largest value)
        depth = 0
        while len(level) > 1:
            nxt = []
            for k in range(0, len(level), 2):
                if k + 1 < len(level):
                    (a, ma), (b, mb) = level[k], level[k + 1]
                    s = Signal(range(ma + mb + 1), name=f"pc{depth}_{k // 2}")
                    m.d.sync += s.eq(a + b)
                    nxt.append((s, ma + mb))
                else:
                    a, ma = level[k]
                    s = Signal(range(ma + 1), name=f"pc{depth}_{k // 2}")
                    m.d.sync += s.eq(a)
                    nxt.append((s, ma))
            level = nxt
            depth += 1
        m.d.comb += self.o.eq(level[0][0])
        return m
