"""Stream driver and monitor for ``amaranth.lib.stream`` ports under cocotb 2.x.

Both follow one sampling rule: a beat moves on a rising clock edge where ``valid`` and
``ready`` were both high, and a coroutine woken by :class:`~cocotb.triggers.RisingEdge`
reads the values the flops saw at that edge (the pre-edge values) on Icarus and
Verilator alike.  So neither side needs ``ReadOnly``: wake on the edge, read the
handshake, then drive the values for the next edge.

To keep the Python side cheap while the engine computes for hundreds of cycles with its
ports idle, neither coroutine wakes on every clock: the driver sleeps on a rising edge
of ``ready`` and the monitor on a rising edge of ``valid`` whenever the other side is
idle, and only walks clock by clock while beats are actually moving.
"""

from __future__ import annotations

import random

import json
from pathlib import Path

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.simtime import get_sim_time

__all__ = ["StreamDriver", "StreamMonitor"]


def _now_cycles(period_ns):
    """The current simulation time in clock cycles."""
    return round(get_sim_time(unit="ns") / period_ns)


class _Gaps:
    """Random idle-cycle generator: with probability ``prob`` an idle run of 1..``longest``."""

    def __init__(self, prob, longest, rng):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"gap probability must be in [0, 1], not {prob!r}")
        self.prob, self.longest, self.rng = prob, max(1, int(longest)), rng

    def draw(self) -> int:
        if self.prob and self.rng.random() < self.prob:
            return self.rng.randint(1, self.longest)
        return 0


class StreamDriver:
    """Drive beats into a DUT's stream sink (the DUT's ``In(stream.Signature(...))``).

    Parameters
    ----------
    clk :
        Clock handle.
    port : pwlnet.sim.ports.StreamPorts
        The stream's handles and payload codec.
    gap_prob : float
        Probability that ``valid`` is dropped for a random idle run before a beat.
    max_gap : int
        Longest idle run in cycles.
    rng : random.Random, optional
        Source of the gaps (seed it for reproducible runs).
    period_ns : float
        Clock period, to report times in cycles.

    Attributes
    ----------
    accepted_at : list of int
        For every beat, the cycle of the rising edge at which the DUT accepted it.
    """

    def __init__(self, clk, port, *, gap_prob=0.0, max_gap=3, rng=None, period_ns=1.0):
        self.clk, self.port = clk, port
        self.gaps = _Gaps(gap_prob, max_gap, rng or random.Random())
        self.period_ns = period_ns
        self.accepted_at = []
        #: how often this coroutine resumed (evidence that it does not wake every clock)
        self.wakeups = 0
        port.valid.value = 0

    def _cycle(self):
        return _now_cycles(self.period_ns)

    def set_gaps(self, gap_prob, max_gap=3):
        """Change the idle-run statistics from the next beat on."""
        self.gaps = _Gaps(gap_prob, max_gap, self.gaps.rng)

    async def send(self, beats):
        """Send ``beats`` (plain integers) in order; return once the last one is accepted.

        Must be called just after a rising edge (or before the clock starts), which is
        where every await in this module leaves its caller.
        """
        p = self.port
        for value in beats:
            idle = self.gaps.draw()
            if idle:
                p.valid.value = 0
                await ClockCycles(self.clk, idle)
                self.wakeups += idle
            p.payload.value = p.encode(value)
            p.valid.value = 1
            while True:
                await RisingEdge(self.clk)
                self.wakeups += 1
                if p.ready.value:
                    break
                # The DUT is busy, perhaps for hundreds of cycles: sleep until ready
                # rises instead of waking on every clock, then retry at the next edge.
                await RisingEdge(p.ready)
                self.wakeups += 1
            self.accepted_at.append(self._cycle())
        p.valid.value = 0


class StreamMonitor:
    """Collect beats from a DUT's stream source, applying random back-pressure.

    Parameters
    ----------
    clk :
        Clock handle.
    port : pwlnet.sim.ports.StreamPorts
        The stream's handles and payload codec.
    callback : callable
        ``callback(fields: dict, cycle: int)`` for every beat, in order.
    stall_prob : float
        Probability that ``ready`` is dropped for a random run of cycles before a beat.
    max_stall : int
        Longest run of dropped ``ready`` in cycles.
    rng : random.Random, optional
        Source of the stalls.
    period_ns : float
        Clock period, to report times in cycles.
    """

    def __init__(self, clk, port, callback, *, stall_prob=0.0, max_stall=3, rng=None, period_ns=1.0):
        self.clk, self.port, self.callback = clk, port, callback
        self.stalls = _Gaps(stall_prob, max_stall, rng or random.Random())
        self.period_ns = period_ns
        #: how often this coroutine resumed (evidence that it does not wake every clock)
        self.wakeups = 0
        port.ready.value = 0

    def _cycle(self):
        return _now_cycles(self.period_ns)

    def set_stalls(self, stall_prob, max_stall=3):
        """Change the back-pressure statistics from the next beat on."""
        self.stalls = _Gaps(stall_prob, max_stall, self.stalls.rng)

    async def run(self):
        """Run forever (start it with :func:`cocotb.start_soon`)."""
        p = self.port
        while True:
            stall = self.stalls.draw()
            if stall:
                p.ready.value = 0
                await ClockCycles(self.clk, stall)
                self.wakeups += stall
            p.ready.value = 1
            while True:
                await RisingEdge(self.clk)
                self.wakeups += 1
                if p.valid.value:
                    break
                # Nothing offered: the engine is computing.  Sleep until valid rises;
                # the beat then moves at the next edge (ready is already high).
                await RisingEdge(p.valid)
                self.wakeups += 1
            raw = p.payload.value.to_unsigned()
            self.callback(p.decode(raw), self._cycle())


async def start_dut(ports, job, rng, *, period_ns, reset_cycles):
    """Start the clock, hold reset for ``reset_cycles``, and, when the job names a weight
    file (``"ram"`` weight memory), load every word through ``w_wr`` before any input."""
    Clock(ports.clk, period_ns, unit="ns", impl="gpi").start()
    ports.rst.value = 1
    await ClockCycles(ports.clk, reset_cycles)
    ports.rst.value = 0
    await RisingEdge(ports.clk)
    if job.get("weights"):
        words = [int(w, 16) for w in json.loads(Path(job["weights"]).read_text())]
        w_port = ports.stream("w_wr")
        await StreamDriver(ports.clk, w_port, rng=rng, period_ns=period_ns).send(
            [w_port.pack(addr=a, data=w) for a, w in enumerate(words)])
