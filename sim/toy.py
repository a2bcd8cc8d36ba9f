"""A stand-in for :class:`pwlnet.hw.engine.MLPEngine` with the same ports and a trivial function.

The cocotb infrastructure (Verilog generation, builds, stream driver and monitor, the
in-order checker, cycle measurement) is proved on this component, so that a failure
seen later on the real engine is the engine's and not the bench's.

The toy takes the engine's constructor arguments and port contract, sums the ``d``
input codes of one inference into ``s``, stays busy for ``engine.ideal_cycles`` cycles
(so cycle counts look like the real thing) and then emits ``n_out`` output beats
``y[k] = wrap(s + 37 * k, out_bits)`` with ``last`` and ``argmax`` (first maximum) on
the final beat.  Wrapping, not saturating, makes the codes cover the whole range so that
the argmax varies from one inference to the next.
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.utils import ceil_log2

from pwlnet.hw.engine import EngineSignature
from pwlnet.hw.engine.plan import ideal_cycles

__all__ = ["ToyEngine", "toy_forward", "TOY_STEP"]

#: Increment between consecutive output codes of one inference.
TOY_STEP = 37


def _wrap(v, bits):
    """Reinterpret the low ``bits`` bits of ``v`` as a signed word."""
    v = np.asarray(v, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v)


def toy_forward(model, codes) -> np.ndarray:
    """The toy's reference function: input codes ``(N, d)`` to output codes ``(N, n_out)``."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1, model.input_dim)
    s = codes.sum(axis=1)
    k = np.arange(model.output_dim, dtype=np.int64)
    return _wrap(s[:, None] + TOY_STEP * k[None, :], model.layers[-1].out_bits)


class ToyEngine(wiring.Component):
    """Stand-in engine: "sum, wait, then output ``n_out`` codes".

    Parameters
    ----------
    model : pwlnet.artifact.CompiledModel
        Only the widths and dimensions are used.
    lanes : int
        Used only for :attr:`ideal_cycles`, as in the real engine.
    target : str
        Accepted for signature compatibility; the toy has no device-specific parts.
    """

    def __init__(self, model, lanes, *, target="generic"):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self._model = model
        self._lanes = lanes
        self._target = target
        n_out = model.output_dim
        self.ideal_cycles = ideal_cycles(model.layers, lanes)
        # strictly sequential: input beats, then the busy wait, then output beats
        self.cycles_per_inference = model.input_dim + self.ideal_cycles + n_out
        super().__init__(EngineSignature(model))

    def elaborate(self, platform):
        m = Module()
        model = self._model
        d, n_out = model.input_dim, model.output_dim
        out_bits = model.layers[-1].out_bits
        # wide enough for the sum of d codes plus TOY_STEP * n_out without overflow
        acc_bits = model.input_bits + ceil_log2(d + 1) + ceil_log2(TOY_STEP * n_out + 1) + 2
        acc = Signal(signed(acc_bits))
        beat = Signal(range(max(d, n_out) + 1))
        wait = Signal(range(self.ideal_cycles + 1))
        best = Signal(signed(out_bits))
        best_at = Signal.like(self.o.payload.argmax)
        y = Signal(signed(out_bits))
        m.d.comb += y.eq(acc[:out_bits].as_signed())

        with m.FSM():
            with m.State("IN"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [acc.eq(acc + self.i.payload), beat.eq(beat + 1)]
                    with m.If(beat == d - 1):
                        m.d.sync += [beat.eq(0), wait.eq(self.ideal_cycles)]
                        m.next = "BUSY"
            with m.State("BUSY"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait <= 1):
                    m.next = "OUT"
            with m.State("OUT"):
                # the running first-maximum includes the beat on the wire now
                new_max = (beat == 0) | (y > best)
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(y),
                    self.o.payload.last.eq(beat == n_out - 1),
                    self.o.payload.argmax.eq(best_at),
                ]
                with m.If(new_max):
                    m.d.comb += self.o.payload.argmax.eq(beat)
                with m.If(self.o.ready):
                    m.d.sync += [acc.eq(acc + TOY_STEP), beat.eq(beat + 1)]
                    with m.If(new_max):
                        m.d.sync += [best.eq(y), best_at.eq(beat)]
                    with m.If(beat == n_out - 1):
                        m.d.sync += [beat.eq(0), acc.eq(0)]
                        m.next = "IN"
        return m
