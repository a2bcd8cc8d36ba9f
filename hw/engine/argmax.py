"""The engine's running argmax over each inference's output codes (first maximum wins)."""

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["ArgmaxTracker"]


class ArgmaxTracker(wiring.Component):
    """Index of the first largest output code of each inference, per output bank.

    The running maximum is a recurrence (compare, then update), which would put a carry
    chain and the update logic in one cycle.  Instead a code is compared, in stage X,
    both with the running maximum B and with the code one stage ahead (in Y, whose update
    of B lands at the end of this cycle); in stage Y the registered "did Y's predecessor
    update B" flag picks the right comparison.  Codes are compared in offset binary (sign
    flipped: an unsigned compare is a bare carry chain).  The final index is copied to the
    bank's ``index`` one cycle later, with a ``done`` pulse.

    Parameters
    ----------
    n_out : int
        Codes per inference.
    bits : int
        Width of one code.
    banks : int
        Output banks (2, or 4 in an engine with a pair program).

    Attributes
    ----------
    i : In(stream.Signature(StructLayout({"code", "o", "first", "last", "obank"}), always_ready=True))
        One output code per valid cycle, in channel order: ``o`` its index, ``first`` and
        ``last`` mark the inference's first and last code, ``obank`` its output bank.
    index : Out(ArrayLayout(unsigned(ceil_log2(n_out)), banks))
        Per bank, the argmax of the last inference completed there.
    done : Out(1)
        An inference's argmax is final: ``index[done_bank]`` holds it from the next cycle on.
    done_bank : Out(range(banks))
        The bank ``done`` refers to.
    """

    def __init__(self, n_out, bits, banks=2):
        self._n_out = n_out
        self._bits = bits
        self._banks = banks
        am_w = max(1, ceil_log2(n_out))
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "code": signed(bits), "o": unsigned(am_w), "first": 1, "last": 1, "obank": range(banks)}),
                always_ready=True)),
            "index": Out(data.ArrayLayout(unsigned(am_w), banks)),
            "done": Out(1),
            "done_bank": Out(range(banks)),
        })

    def elaborate(self, platform):
        m = Module()
        am_w = max(1, ceil_log2(self._n_out))
        ob = self._bits
        sign_flip = 1 << (ob - 1)
        best_b = Signal(ob, reset_less=True)      # offset-binary running maximum
        best_idx = Signal(am_w, reset_less=True)
        banks = self._banks
        argmax = Array([Signal(am_w, name=f"argmax{b}", reset_less=True) for b in range(banks)])
        m.d.comb += [self.index[b].eq(argmax[b]) for b in range(banks)]
        x_layout = data.StructLayout({"code": ob, "en": 1, "first": 1, "last": 1,
                                      "o": am_w, "obank": range(banks)})
        i = self.i
        ax = Signal(x_layout)                     # stage X
        m.d.sync += [ax.code.eq(i.payload.code.as_unsigned() ^ sign_flip), ax.en.eq(i.valid),
                     ax.first.eq(i.valid & i.payload.first), ax.last.eq(i.valid & i.payload.last),
                     ax.o.eq(i.payload.o), ax.obank.eq(i.payload.obank)]
        ay = Signal(x_layout)                     # stage Y
        gt_best, gt_prev, upd = Signal(), Signal(), Signal()
        m.d.sync += [ay.eq(ax), gt_best.eq(ax.code > best_b), gt_prev.eq(ax.code > ay.code)]
        better = Signal()
        m.d.comb += better.eq(ay.first | (ay.en & Mux(upd, gt_prev, gt_best)))
        m.d.sync += upd.eq(better)
        with m.If(better):
            m.d.sync += [best_b.eq(ay.code), best_idx.eq(ay.o)]
        fin, fin_bank = Signal(), Signal(range(banks))
        m.d.sync += [fin.eq(ay.last), fin_bank.eq(ay.obank)]
        m.d.comb += [self.done.eq(fin), self.done_bank.eq(fin_bank)]
        with m.If(fin):
            m.d.sync += argmax[fin_bank].eq(best_idx)
        return m
