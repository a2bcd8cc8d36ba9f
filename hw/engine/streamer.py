"""The engine's output streamer: a two-bank output buffer and the output stream."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..memory import NO_RW_CHECK, unchecked_read_port

__all__ = ["OutputStreamer", "stream_layout"]


def stream_layout(n_out, out_bits, programs=1):
    """Payload of the output stream: ``data``, ``last``, ``argmax`` and, with more than one
    program, ``program`` (see :func:`pwlnet.hw.engine.output_layout`)."""
    fields = {
        "data": signed(out_bits),
        "last": 1,
        "argmax": unsigned(max(1, ceil_log2(n_out))),
    }
    if programs > 1:
        fields["program"] = range(programs)
    return data.StructLayout(fields)


class OutputStreamer(wiring.Component):
    """Streams each finished inference's ``n_out`` codes out of a two-bank output buffer.

    The sequencer *claims* a bank when an inference starts (``busy``); the argmax tracker
    reports it *done* when the last code has been written (``full``); the streamer sends
    the bank's codes in order, with ``last`` and the inference's argmax (and program) on
    every beat, and frees the bank when the last beat is taken.

    Parameters
    ----------
    n_out : int
        Codes per inference.
    out_bits : int
        Width of one code.
    programs : int
        Number of programs (``> 1`` adds ``program`` to the payload and ``claim_prog``).

    Attributes
    ----------
    o : Out(stream.Signature(stream_layout(n_out, out_bits, programs)))
        The codes; the payload is the read port's output register, advanced only when
        the current beat is taken (or there is none), so it is stable while valid.
    wr_addr, wr_data, wr_en : In
        Write port of the buffer (bank * n_out + index).
    claim, claim_bank, claim_prog : In
        An inference starts that will write ``claim_bank`` (with program ``claim_prog``).
    done, done_bank : In(1)
        Bank ``done_bank`` holds a complete result.
    argmax : In(ArrayLayout(argmax width, 2))
        Per bank, the index of the first largest code (stable from ``done`` on).
    busy, full : Out(2)
        Per bank: claimed and not yet sent; complete and not yet sent.
    """

    def __init__(self, n_out, out_bits, programs=1):
        self._n_out = n_out
        self._out_bits = out_bits
        self._programs = programs
        am_w = max(1, ceil_log2(n_out))
        members = {
            "o": Out(stream.Signature(stream_layout(n_out, out_bits, programs))),
            "wr_addr": In(range(2 * n_out)),
            "wr_data": In(signed(out_bits)),
            "wr_en": In(1),
            "claim": In(1),
            "claim_bank": In(1),
            "done": In(1),
            "done_bank": In(1),
            "argmax": In(data.ArrayLayout(unsigned(am_w), 2)),
            "busy": Out(2),
            "full": Out(2),
        }
        if programs > 1:
            members["claim_prog"] = In(range(programs))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n_out = self._n_out
        # Block RAM even when tiny: in flip-flops it costs a register per bit (and the read
        # mux), logic cells the cached build does not have to spare.  No collision logic:
        # the streamer reads a bank only once it is full.
        m.submodules.out_mem = out_mem = Memory(shape=signed(self._out_bits), depth=2 * n_out, init=[],
                                                attrs={**NO_RW_CHECK, "ram_style": "block"})
        out_wr = out_mem.write_port()
        out_rd = unchecked_read_port(m, out_mem, "out_rd")
        m.d.comb += [out_wr.addr.eq(self.wr_addr), out_wr.data.eq(self.wr_data), out_wr.en.eq(self.wr_en)]

        out_busy = Array([Signal(name=f"out_busy{b}") for b in range(2)])
        out_full = Array([Signal(name=f"out_full{b}") for b in range(2)])
        m.d.comb += [self.busy.eq(Cat(out_busy[0], out_busy[1])), self.full.eq(Cat(out_full[0], out_full[1]))]
        with m.If(self.claim):
            m.d.sync += out_busy[self.claim_bank].eq(1)
        if self._programs > 1:
            # Which program computed each output bank's inference (reported on `o`).
            prog_of = [Signal(range(self._programs), name=f"prog_of{b}") for b in range(2)]
            for b in range(2):
                with m.If(self.claim & (self.claim_bank == b)):
                    m.d.sync += prog_of[b].eq(self.claim_prog)
        with m.If(self.done):
            m.d.sync += out_full[self.done_bank].eq(1)

        st_bank = Signal()
        st_ptr = Signal(range(n_out))
        st_all = Signal()
        st_addr = Signal(range(2 * n_out))    # st_bank * n_out + st_ptr, as its own counter
        o_last = Signal()
        adv = ~self.o.valid | self.o.ready
        m.d.comb += [
            out_rd.en.eq(adv),
            out_rd.addr.eq(st_addr),
            self.o.payload.data.eq(out_rd.data),
            self.o.payload.last.eq(o_last),
            self.o.payload.argmax.eq(Mux(st_bank, self.argmax[1], self.argmax[0])),
        ]
        if self._programs > 1:
            m.d.comb += self.o.payload.program.eq(Mux(st_bank, prog_of[1], prog_of[0]))
        with m.If(adv):
            with m.If(Mux(st_bank, out_full[1], out_full[0]) & ~st_all):
                m.d.sync += [self.o.valid.eq(1), o_last.eq(st_ptr == n_out - 1),
                             st_addr.eq(Mux(st_addr == 2 * n_out - 1, 0, st_addr + 1))]
                with m.If(st_ptr == n_out - 1):
                    m.d.sync += [st_ptr.eq(0), st_all.eq(1)]
                with m.Else():
                    m.d.sync += st_ptr.eq(st_ptr + 1)
            with m.Else():
                m.d.sync += self.o.valid.eq(0)
        with m.If(self.o.valid & self.o.ready & o_last):
            m.d.sync += [out_full[st_bank].eq(0), out_busy[st_bank].eq(0),
                         st_bank.eq(~st_bank), st_all.eq(0)]
        return m
