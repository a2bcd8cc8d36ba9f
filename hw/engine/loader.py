"""The engine's input loader: input codes into a two-bank buffer, one inference per bank."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..memory import NO_RW_CHECK, unchecked_read_port

__all__ = ["InputLoader"]


class InputLoader(wiring.Component):
    """Fills one bank of the input buffer while the engine reads the other.

    Bank ``b`` holds codes ``b*d .. b*d + d - 1``.  The loader writes the next ``d`` beats
    of ``i`` into the bank after the one it filled last, then marks it full; a bank is
    emptied by ``clear`` (the sequencer has issued every read of it).  ``i.ready`` is a
    register holding exactly "the bank being loaded is not full", computed from the
    next-state values, so the handshake drives no logic chain.

    Parameters
    ----------
    dim : int
        Codes per inference ``d``.
    bits : int
        Width of one input code.

    Attributes
    ----------
    i : In(stream.Signature(signed(bits)))
        Input codes, ``dim`` beats per inference.
    rd_addr : In(range(2 * dim))
        Read address (bank * dim + index).
    rd_data : Out(signed(bits))
        The code at ``rd_addr`` one cycle earlier (a registered read).
    clear : In(1)
        Mark bank ``clear_bank`` empty (every read of it has been issued).
    clear_bank : In(1)
        The bank ``clear`` refers to.
    full : Out(2)
        Per bank: holds a complete input not yet cleared.
    idle : Out(1)
        No beat of an incomplete input received and none taken this cycle.
    """

    def __init__(self, dim, bits):
        self._dim = dim
        self._bits = bits
        super().__init__({
            "i": In(stream.Signature(signed(bits))),
            "rd_addr": In(range(2 * dim)),
            "rd_data": Out(signed(bits)),
            "clear": In(1),
            "clear_bank": In(1),
            "full": Out(2),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self._dim
        # Read port without collision logic (unchecked_read_port): the loader writes the
        # bank the sequencer is not reading.
        m.submodules.in_mem = in_mem = Memory(shape=signed(self._bits), depth=2 * d, init=[], attrs=NO_RW_CHECK)
        in_wr = in_mem.write_port()
        in_rd = unchecked_read_port(m, in_mem, "in_rd")
        m.d.comb += [in_rd.addr.eq(self.rd_addr), self.rd_data.eq(in_rd.data)]

        # Verilog-simulation robustness rule used throughout the engine: no combinational
        # signal is assigned inside `m.If` and no Array is *read* with a signal index.
        # yosys writes both as `always @*` blocks, which Icarus in -g2012 mode (cocotb's
        # default) does not run at time 0, so they would stay x until an input changes.
        in_full = Array([Signal(name=f"in_full{b}") for b in range(2)])
        ld_bank = Signal()
        ld_cnt = Signal(range(d))
        ld_last = Signal(init=int(d == 1))   # ld_cnt == d - 1, registered
        ld_addr = Signal(range(2 * d))       # ld_bank * d + ld_cnt, as its own counter
        rdy = Signal(init=1)
        take = Signal()
        ld_done = Signal()
        m.d.comb += [
            self.i.ready.eq(rdy),
            take.eq(self.i.valid & rdy),
            ld_done.eq(take & ld_last),
            in_wr.addr.eq(ld_addr),
            in_wr.data.eq(self.i.payload),
            in_wr.en.eq(take),
            self.full.eq(Cat(in_full[0], in_full[1])),
            self.idle.eq((ld_cnt == 0) & ~take),
        ]
        with m.If(take):
            m.d.sync += ld_addr.eq(Mux(ld_addr == 2 * d - 1, 0, ld_addr + 1))
            with m.If(ld_last):
                m.d.sync += [ld_cnt.eq(0), ld_last.eq(d == 1)]
            with m.Else():
                m.d.sync += [ld_cnt.eq(ld_cnt + 1), ld_last.eq(ld_cnt == d - 2)]
        full_next = []
        for b in range(2):
            fn = Signal(name=f"in_full_next{b}")
            m.d.comb += fn.eq((in_full[b] & ~(self.clear & (self.clear_bank == b))) | (ld_done & (ld_bank == b)))
            m.d.sync += in_full[b].eq(fn)
            full_next.append(fn)
        bank_next = ld_bank ^ ld_done
        m.d.sync += [ld_bank.eq(bank_next), rdy.eq(~Mux(bank_next, full_next[1], full_next[0]))]
        return m
