"""The cached engine's entry writer: slot-image bytes in, the engine's and the bank's slot writes out.

Layer: hardware generators (imports the cache's slot format and nothing above it).

A slot image (:meth:`pwlnet.hw.slot_format.SlotFormat.image`) arrives one byte per beat on
``cw``: weight words, channel parameters, bound, center codes.  The writer gathers each
field's bytes in a shift register and stores the field where it belongs: weight words and
channel parameters through the engine's slot write port (``engine``), the center codes
with the bound through the comparator bank's write port (``bank``).  The bank marks the
slot valid with the last center code, which comes last, so a slot can hit only once all
of it is in place.

Ordering against inferences.  The writer starts a write (or a pending ``clear``) only
when the rest of the cached engine reports ``quiet`` -- nothing loaded, running or being
written back -- and only once its own ``hold`` register is set; ``hold`` tells the
cached engine's input port to keep the *first* code of new inputs out.  So an inference
sees either all of an entry or none of it.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .params import check_int

__all__ = ["EntryWriter"]

# Phases of a write, in image order.
_PH_W, _PH_P, _PH_B, _PH_C = range(4)


class EntryWriter(wiring.Component):
    """Writes whole slot images into the engine's slot programs and the comparator bank.

    Parameters
    ----------
    fmt : pwlnet.hw.slot_format.SlotFormat
        Field widths and counts of one slot image.
    entries : int
        Cache slots ``N``.
    word_base, chan_base : sequence of int
        Per slot: the engine's weight address of its first weight word and parameter index
        of its first channel (:meth:`pwlnet.hw.engine.MLPEngine.slot_word_base`,
        :meth:`~pwlnet.hw.engine.MLPEngine.slot_chan_base`).
    weight_words : int
        Words of the engine's weight memory (sizes the weight address).
    engine_layout : amaranth.lib.data.StructLayout
        Payload of the engine's slot write port
        (:attr:`pwlnet.hw.engine.MLPEngine.slot_write_layout`).
    bank_layout : amaranth.lib.data.StructLayout
        Payload of the comparator bank's write port (one code per beat).
    weight_port : bool
        The engine's weights can be rewritten at run time; then ``weights_written`` exists.

    Attributes
    ----------
    cw : In(stream.Signature(StructLayout({"slot", "data": 8})))
        Image bytes, exactly ``fmt.image_bytes`` per write, the slot taken from the first.
        A slot without a program (``slot >= entries``) is consumed and changes nothing.
    clear : In(1)
        Strobe: empty every slot before the next write (applied once ``quiet``).
    weights_written : In(1)
        Present with ``weight_port``: a weight write, which empties the slots too.
    quiet : In(1)
        Nothing in flight in the rest of the cached engine.
    engine : Out(stream.Signature(engine_layout))
        One weight word or one channel's parameters per beat.
    bank : Out(stream.Signature(bank_layout))
        One center code per beat, with the bound; ``commit`` on the last.
    bank_clear : Out(1)
        The bank's clear strobe.
    hold : Out(1)
        Registered: a write or clear is waiting or running; keep new inputs out.
    idle : Out(1)
        Registered: ``quiet`` and nothing to write or clear.
    """

    def __init__(self, fmt, entries, *, word_base, chan_base, weight_words, engine_layout, bank_layout,
                 weight_port=False):
        self._fmt = fmt
        self._entries = check_int(entries, "entries", 1)
        self._word_base = [int(w) for w in word_base]
        self._chan_base = [int(c) for c in chan_base]
        if len(self._word_base) != self._entries or len(self._chan_base) != self._entries:
            raise ValueError(f"word_base and chan_base must give {self._entries} slots, not "
                             f"{len(self._word_base)} and {len(self._chan_base)}")
        self._n_words = max(2, int(weight_words))
        self._n_chan = self._chan_base[-1] + fmt.n_out
        members = {
            "cw": In(stream.Signature(data.StructLayout({
                "slot": unsigned(max(1, ceil_log2(self._entries))), "data": 8}))),
            "clear": In(1),
            "quiet": In(1),
            "engine": Out(stream.Signature(engine_layout)),
            "bank": Out(stream.Signature(bank_layout)),
            "bank_clear": Out(1),
            "hold": Out(1),
            "idle": Out(1),
        }
        if weight_port:
            members["weights_written"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        fmt, n = self._fmt, self._entries

        # Slot -> (first weight word, first channel) of its program, and whether the slot
        # exists (a non-power-of-two N leaves slot numbers without a program).
        slot_w = len(self.cw.payload.slot)
        n_words, n_chan = self._n_words, self._n_chan
        base_layout = data.StructLayout({"w": range(n_words + 1), "c": range(n_chan + 1), "ok": 1})
        m.submodules.slot_rom = slot_rom = Memory(
            shape=base_layout, depth=1 << slot_w,
            init=[{"w": self._word_base[s], "c": self._chan_base[s], "ok": 1} if s < n else
                  {"w": 0, "c": 0, "ok": 0} for s in range(1 << slot_w)])
        base_rd = slot_rom.read_port(domain="comb")
        m.d.comb += base_rd.addr.eq(self.cw.payload.slot)

        nbytes = [fmt.word_bytes, fmt.param_bytes, fmt.bound_bytes, fmt.code_bytes]
        counts = [fmt.weight_words, fmt.n_out, 1, fmt.dim]
        sw = 8 * max(nbytes)
        sh = Signal(sw)                      # bytes arrive at the top and shift down
        phase = Signal(2)
        nb = Signal(range(max(nbytes)))      # bytes of the current field so far
        item = Signal(range(max(counts)))    # fields of the current phase so far
        nb_last = Signal()
        item_last = Signal()
        wa = Signal(range(n_words + 1))
        ca = Signal(range(n_chan + 1))
        ok = Signal()
        slot = Signal(slot_w)
        bound = Signal(fmt.distance_bits)
        clear_pend = Signal()

        def field(ph):
            return sh[sw - 8 * nbytes[ph]:]

        nb_last_of = Const(0, 1)
        for ph in range(4):
            nb_last_of = Mux(phase == ph, nb == nbytes[ph] - 1, nb_last_of)
        m.d.comb += nb_last.eq(nb_last_of)
        item_last_of = Const(0, 1)
        for ph in range(4):
            item_last_of = Mux(phase == ph, item == counts[ph] - 1, item_last_of)
        m.d.comb += item_last.eq(item_last_of)

        with m.If(self.clear):
            m.d.sync += clear_pend.eq(1)
        if "weights_written" in self.signature.members:
            # A weight load rewrites the slots' words too (with the host's image, in which
            # they are empty): it empties the cache.
            with m.If(self.weights_written):
                m.d.sync += clear_pend.eq(1)
        # Registered: with `hold` already set in the cycle it looks at, no input can start
        # in between, so one cycle of staleness never lets a write meet an inference.
        ready_for_host = Signal()
        m.d.sync += ready_for_host.eq(self.quiet & self.hold)

        pw = field(_PH_P)
        ob, mb = 8 * fmt.off_bytes, 8 * fmt.mult_bytes
        m.d.comb += [
            self.engine.payload.addr.eq(Mux(phase == _PH_W, wa, ca)),
            self.engine.payload.kind.eq(phase == _PH_P),
            self.engine.payload.word.eq(field(_PH_W)),
            self.engine.payload.off.eq(pw[:fmt.off_bits]),
            self.engine.payload.shift.eq(pw[ob + mb:ob + mb + 8]),
            self.bank.payload.slot.eq(slot),
            self.bank.payload.index.eq(item),
            self.bank.payload.codes[0].eq(field(_PH_C)),
            self.bank.payload.bound.eq(bound),
            self.bank.payload.valid.eq(1),
            self.bank.payload.commit.eq(item_last),
        ]
        if fmt.mult_bits:
            m.d.comb += self.engine.payload.mult.eq(pw[ob:ob + fmt.mult_bits])

        # The store strobes are registers, set as the field's last byte arrives, so the
        # memories' and the bank's write enables do not hang off the state decode.
        st_eng, st_bank = Signal(), Signal()
        m.d.comb += [self.engine.valid.eq(st_eng), self.bank.valid.eq(st_bank)]

        with m.FSM(name="writer") as fsm:
            with m.State("IDLE"):
                # The write's start state is loaded on every idle cycle (it matters only
                # once the write starts), so these registers' enables are a state decode.
                m.d.sync += [slot.eq(self.cw.payload.slot), wa.eq(base_rd.data.w), ca.eq(base_rd.data.c),
                             ok.eq(base_rd.data.ok), phase.eq(_PH_W), nb.eq(0), item.eq(0)]
                with m.If(ready_for_host & clear_pend):
                    # A clear pending before a write is applied first.
                    m.d.comb += self.bank_clear.eq(1)
                    m.d.sync += clear_pend.eq(self.clear)
                with m.Elif(ready_for_host & self.cw.valid):
                    m.next = "BYTE"
            with m.State("BYTE"):
                m.d.comb += self.cw.ready.eq(1)
                with m.If(self.cw.valid):
                    m.d.sync += sh.eq(Cat(sh[8:], self.cw.payload.data))
                    with m.If(nb_last):
                        m.d.sync += [nb.eq(0), st_eng.eq(ok & ((phase == _PH_W) | (phase == _PH_P))),
                                     st_bank.eq(ok & (phase == _PH_C))]
                        m.next = "STORE"
                    with m.Else():
                        m.d.sync += nb.eq(nb + 1)
            with m.State("STORE"):
                # The field is complete in `sh`: store it where its phase says.
                done = Signal()
                m.d.comb += done.eq(~(st_eng & ~self.engine.ready) & ~(st_bank & ~self.bank.ready))
                with m.If(phase == _PH_B):
                    m.d.sync += bound.eq(field(_PH_B)[:fmt.distance_bits])
                with m.If(done):
                    m.d.sync += [st_eng.eq(0), st_bank.eq(0)]
                    with m.If(phase == _PH_W):
                        m.d.sync += wa.eq(wa + 1)
                    with m.If(phase == _PH_P):
                        m.d.sync += ca.eq(ca + 1)
                    with m.If(item_last):
                        m.d.sync += [item.eq(0), phase.eq(phase + 1)]
                        with m.If(phase == _PH_C):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "BYTE"
                    with m.Else():
                        m.d.sync += item.eq(item + 1)
                        m.next = "BYTE"

        m.d.sync += self.hold.eq(self.cw.valid | clear_pend | self.clear | ~fsm.ongoing("IDLE"))
        m.d.sync += self.idle.eq(self.quiet & fsm.ongoing("IDLE") & ~clear_pend & ~self.clear & ~self.cw.valid)
        return m
