"""A stand-in for :class:`pwlnet.hw.engine.MLPEngine` with the same ports and semantics.

It computes the network fully unrolled with constant weights (large, but fine for the
tiny models of link and host tests) and waits ``ideal_cycles`` before answering, so
cycle counts look like the real engine's.  It exists so the link, the board top and the
host driver can be tested without the engine; :func:`make_engine` prefers the real one.
"""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from pwlnet.hw.engine import output_layout as engine_output_layout

__all__ = ["StandInEngine"]


def _ideal_cycles(model, lanes):
    return sum(-(-l.n_out // lanes) * l.n_in for l in model.layers)


class StandInEngine(wiring.Component):
    """Same interface as the engine contract; bit-exact with :func:`pwlnet.golden.forward`.

    Parameters
    ----------
    model : CompiledModel
        The model to compute.
    lanes : int
        Only used for the reported cycle figures.
    """

    def __init__(self, model, lanes=8, *, target="generic"):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            self._MustUse__silence = True   # a rejected object is not an unused design
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self._model = model
        self.ideal_cycles = _ideal_cycles(model, lanes)
        self.cycles_per_inference = self.ideal_cycles + model.input_dim + model.output_dim
        super().__init__({
            "i": In(stream.Signature(signed(model.input_bits))),
            "o": Out(stream.Signature(engine_output_layout(model))),
        })

    def elaborate(self, platform):
        m = Module()
        model = self._model
        d, n_out = model.input_dim, model.output_dim
        xs = [Signal(signed(model.input_bits), name=f"x{i}") for i in range(d)]
        count = Signal(range(d + 1))
        wait = Signal(range(self.ideal_cycles + 2))
        oidx = Signal(range(n_out + 1))

        values = xs
        for li, layer in enumerate(model.layers):
            outs = []
            for o in range(layer.n_out):
                acc = int(layer.bias[o])
                for i in range(layer.n_in):
                    w = int(layer.weight[o, i])
                    if w:
                        acc = acc + values[i] * w
                s, mult = int(layer.shift[o]), int(layer.multiplier[o])
                v = Value.cast(acc) * mult if mult != 1 else Value.cast(acc)
                if s:
                    v = (v + (1 << (s - 1))) >> s
                lo, hi = -(1 << (layer.out_bits - 1)), (1 << (layer.out_bits - 1)) - 1
                if layer.activation == "relu":
                    lo = 0
                y = Signal(signed(layer.out_bits), name=f"l{li}_y{o}")
                m.d.comb += y.eq(Mux(v < lo, lo, Mux(v > hi, hi, v)))
                outs.append(y)
            values = outs

        best = Signal(range(max(2, n_out)))
        # First maximum: scan from the end so earlier indices win ties.
        sel, cur = C(n_out - 1, len(best)), values[-1]
        for j in reversed(range(n_out - 1)):
            take = values[j] >= cur
            sel, cur = Mux(take, j, sel), Mux(take, values[j], cur)
        m.d.comb += best.eq(sel)

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    for i in range(d):
                        with m.If(count == i):
                            m.d.sync += xs[i].eq(self.i.payload)
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == d - 1):
                        m.d.sync += [count.eq(0), wait.eq(0)]
                        m.next = "WAIT"
            with m.State("WAIT"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait >= self.ideal_cycles):
                    m.d.sync += oidx.eq(0)
                    m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(Array(values)[oidx]),
                    self.o.payload.last.eq(oidx == n_out - 1),
                    self.o.payload.argmax.eq(best),
                ]
                with m.If(self.o.ready):
                    m.d.sync += oidx.eq(oidx + 1)
                    with m.If(oidx == n_out - 1):
                        m.next = "LOAD"
        return m
