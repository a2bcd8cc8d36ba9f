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
    banks : int
        Output banks, claimed and sent in round-robin order (2; 4 in an engine with a
        pair program, which claims two at once).

    Attributes
    ----------
    o : Out(stream.Signature(stream_layout(n_out, out_bits, programs)))
        The codes; the payload is the read port's output register, advanced only when
        the current beat is taken (or there is none), so it is stable while valid.
    wr_addr, wr_data, wr_en : In
        Write port of the buffer (bank * n_out + index).
    claim, claim_bank, claim_prog : In
        An inference starts that will write ``claim_bank`` (with program ``claim_prog``).
    claim_pair : In(1)
        Only with 4 banks: with ``claim``, a second inference starts that will write the
        bank after ``claim_bank``.
    done, done_bank : In
        Bank ``done_bank`` holds a complete result.
    argmax : In(ArrayLayout(argmax width, banks))
        Per bank, the index of the first largest code (stable from ``done`` on).
    busy, full : Out(banks)
        Per bank: claimed and not yet sent; complete and not yet sent.
    """

    def __init__(self, n_out, out_bits, programs=1, *, banks=2):
        if banks not in (2, 4):
            raise ValueError(f"banks must be 2 or 4, not {banks!r}")
        self._n_out = n_out
        self._out_bits = out_bits
        self._programs = programs
        self._banks = banks
        am_w = max(1, ceil_log2(n_out))
        members = {
            "o": Out(stream.Signature(stream_layout(n_out, out_bits, programs))),
            "wr_addr": In(range(banks * n_out)),
            "wr_data": In(signed(out_bits)),
            "wr_en": In(1),
            "claim": In(1),
            "claim_bank": In(range(banks)),
            "done": In(1),
            "done_bank": In(range(banks)),
            "argmax": In(data.ArrayLayout(unsigned(am_w), banks)),
            "busy": Out(banks),
            "full": Out(banks),
        }
        if programs > 1:
            members["claim_prog"] = In(range(programs))
        if banks > 2:
            members["claim_pair"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n_out = self._n_out
        # Block RAM even when tiny: in flip-flops it costs a register per bit (and the read
        # mux), logic cells the cached build does not have to spare.  No collision logic:
        # the streamer reads a bank only once it is full.
        banks = self._banks
        m.submodules.out_mem = out_mem = Memory(shape=signed(self._out_bits), depth=banks * n_out, init=[],
                                                attrs={**NO_RW_CHECK, "ram_style": "block"})
        out_wr = out_mem.write_port()
        out_rd = unchecked_read_port(m, out_mem, "out_rd")
        m.d.comb += [out_wr.addr.eq(self.wr_addr), out_wr.data.eq(self.wr_data), out_wr.en.eq(self.wr_en)]

        out_busy = Array([Signal(name=f"out_busy{b}") for b in range(banks)])
        out_full = Array([Signal(name=f"out_full{b}") for b in range(banks)])
        m.d.comb += [self.busy.eq(Cat(*out_busy)), self.full.eq(Cat(*out_full))]
        with m.If(self.claim):
            m.d.sync += out_busy[self.claim_bank].eq(1)
        if banks > 2:
            with m.If(self.claim & self.claim_pair):
                m.d.sync += out_busy[(self.claim_bank + 1)[:2]].eq(1)
        if self._programs > 1:
            # Which program computed each output bank's inference (reported on `o`).
            prog_of = [Signal(range(self._programs), name=f"prog_of{b}") for b in range(banks)]
            for b in range(banks):
                with m.If(self.claim & (self.claim_bank == b)):
                    m.d.sync += prog_of[b].eq(self.claim_prog)
        with m.If(self.done):
            m.d.sync += out_full[self.done_bank].eq(1)

        st_bank = Signal(range(banks))
        st_ptr = Signal(range(n_out))
        st_all = Signal()
        st_addr = Signal(range(banks * n_out))    # st_bank * n_out + st_ptr, as its own counter
        o_last = Signal()
        adv = ~self.o.valid | self.o.ready

        def at_bank(values):
            # the value of the bank being sent, as a mux chain (no Array read with a
            # signal index in combinational logic; see InputLoader)
            v = values[0]
            for b in range(1, banks):
                v = Mux(st_bank == b, values[b], v)
            return v

        m.d.comb += [
            out_rd.en.eq(adv),
            out_rd.addr.eq(st_addr),
            self.o.payload.data.eq(out_rd.data),
            self.o.payload.last.eq(o_last),
            self.o.payload.argmax.eq(at_bank([self.argmax[b] for b in range(banks)])),
        ]
        if self._programs > 1:
            m.d.comb += self.o.payload.program.eq(at_bank(prog_of))
        with m.If(adv):
            with m.If(at_bank(list(out_full)) & ~st_all):
                m.d.sync += [self.o.valid.eq(1), o_last.eq(st_ptr == n_out - 1),
                             st_addr.eq(Mux(st_addr == banks * n_out - 1, 0, st_addr + 1))]
                with m.If(st_ptr == n_out - 1):
                    m.d.sync += [st_ptr.eq(0), st_all.eq(1)]
                with m.Else():
                    m.d.sync += st_ptr.eq(st_ptr + 1)
            with m.Else():
                m.d.sync += self.o.valid.eq(0)
        with m.If(self.o.valid & self.o.ready & o_last):
            m.d.sync += [out_full[st_bank].eq(0), out_busy[st_bank].eq(0),
                         st_bank.eq(st_bank + 1), st_all.eq(0)]
        return m
