"""The MLP engine with the hypersphere cache beside it: a hit runs one stored ``W x + b``.

::

    i (input codes) --+--> MLPEngine.i (input buffer) ----------.
                      |                                         |  program 0 (network) on a miss,
                      '--> ComparatorBank.q --> hit, slot --> prog  1 + slot (entry's W x + b) on a hit
                                                                |
    cw (entry image bytes) --> writer --+--> engine weights and channel parameters of the slot
                                        '--> bank: center codes, bound, valid
                                                                v
                                                  o: output codes, argmax, cached, slot

Every input code goes to the engine's input buffer and to the comparator bank in the
same cycle (one stream, forked).  The bank answers ``lookup_latency`` cycles after the
last code, while the engine still waits for it: the answer is the engine's program
choice for that inference -- the network (program 0) on a miss, or the hitting slot's
one-layer program on a hit.  The slot programs live in the engine's own descriptor
table, weight memory and parameter memory (:class:`~pwlnet.hw.engine.MLPEngine` with
``cache_slots``), so a hit uses the same lanes and requantizer as the network and costs
:attr:`CachedEngine.hit_cycles` cycles (``ceil(n_out / P)`` passes of ``d`` reads plus
one) instead of :attr:`CachedEngine.cycles_per_inference`.

Entry writes (``cw``) carry the bytes of :meth:`pwlnet.code_cache.SlotFormat.image`: weight
words, channel parameters, bound, center.  The writer takes the first byte only when no
inference is in flight (nothing loaded, running or being written back), and from the
cycle after a write is offered it holds off the *first* code of new inputs, so an
inference sees either all of an entry or none of it: those whose first code was taken
before the write's first byte see the old slot, later ones the new.  ``clear`` is ordered the same
way.  The bank marks the slot valid with its last center code, which comes last.

Bit-exact with :class:`pwlnet.code_cache.HwCache` (hit, slot, output codes) driven by
:class:`pwlnet.code_cache.CacheHost`; :func:`pwlnet.code_cache.run_stream` with
``slot_format`` is the whole host-and-device loop.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from pwlnet import code_cache

from .comparator_bank import ComparatorBank
from .engine import MLPEngine
from .params import check_int

__all__ = ["CachedEngine", "cached_output_layout"]


def cached_output_layout(model, entries):
    """Payload of :attr:`CachedEngine.o`: the engine's fields plus ``cached`` and ``slot``."""
    n_out = model.layers[-1].n_out
    return data.StructLayout({
        "data": signed(model.layers[-1].out_bits),
        "last": 1,
        "argmax": unsigned(max(1, ceil_log2(n_out))),
        "cached": 1,
        "slot": unsigned(max(1, ceil_log2(entries))),
    })


class CachedEngine(wiring.Component):
    """:class:`~pwlnet.hw.engine.MLPEngine` with a ``entries``-slot hypersphere cache.

    Parameters
    ----------
    model : pwlnet.artifact.CompiledModel
    lanes : int
        Engine lanes ``P``.
    entries : int
        Cache slots ``N``.
    metric : {"l2", "linf", "l1"}
        The comparator bank's distance.
    target, weight_memory : str
        As for :class:`~pwlnet.hw.engine.MLPEngine`; on ``"ice40"``, ``"auto"`` counts the
        bank's center memory against the EBR budget too, so a large cache can move the
        weights to SPRAM (then loaded over the host link after power-up).
    preload : sequence of pwlnet.code_cache.HwEntry
        Entries for slots ``0, 1, ...`` at configuration (and after reset), e.g. from
        :func:`pwlnet.code_cache.preload`; each must fit :attr:`fmt`.
    squarer : {"logic", "ebr"}
        ``l2`` only, see :class:`~pwlnet.hw.comparator_bank.ComparatorBank`.

    Attributes
    ----------
    i : In(stream.Signature(signed(model.input_bits)))
        Input codes, ``d`` beats per inference.
    o : Out(stream.Signature(cached_output_layout(model, entries)))
        ``n_out`` beats per inference, in order: ``data``, ``last``, ``argmax`` (valid on
        the last beat) as the engine's, ``cached`` (answered by an entry) and ``slot``
        (which; 0 when not cached) on every beat.
    cw : In(stream.Signature(StructLayout({"slot", "data": 8})))
        Entry writes: exactly :attr:`fmt` ``.image_bytes`` beats per entry, the bytes of
        ``fmt.image(entry)`` in order, with the same ``slot`` on each (taken from the
        first).  A ``slot >= entries`` write is consumed and changes nothing.
    clear : In(1)
        Strobe: invalidate every slot, once no inference is in flight (inputs whose first
        code comes after the strobe see the empty cache).
    clear_stats : In(1)
        Strobe: zero :attr:`hits` and :attr:`misses`.
    hits, misses : Out(32)
        Inferences answered by an entry and by the network since the last ``clear_stats``
        (counted when the engine takes the bank's answer).
    idle : Out(1)
        No inference loaded or running and no write or clear pending (outputs may still
        wait to be read).
    fmt : pwlnet.code_cache.SlotFormat
        Slot widths and the entry image layout.
    engine : MLPEngine
    bank : ComparatorBank
    hit_cycles : int
        Cycles a hit occupies the engine (its one-layer program).
    cycles_per_inference : int
        Cycles the network occupies the engine (program 0).
    lookup_latency : int
        The bank's cycles from the last input code to its answer.

    Notes
    -----
    With ``"ram"`` weights the ``w_wr`` port of the engine is passed through; any weight
    write also clears the cache (the host's weight image has empty slots).

    A write or clear waits for the inferences in flight to be computed, which needs room
    in the engine's output buffer: keep reading ``o``.
    """

    def __init__(self, model, lanes, entries, metric, *, target="generic", weight_memory="auto", preload=(),
                 squarer="logic"):
        self._entries = check_int(entries, "entries", 1)
        if metric not in code_cache.METRICS:
            raise ValueError(f"metric must be one of {', '.join(code_cache.METRICS)}, not {metric!r}")
        self._model = model
        self._target = target
        self.fmt = fmt = code_cache.SlotFormat(model, lanes, metric)
        preload = list(preload)
        if len(preload) > self._entries:
            raise ValueError(f"preload has {len(preload)} entries; the cache has {self._entries} slots")
        for k, e in enumerate(preload):
            if not isinstance(e, code_cache.HwEntry):
                raise TypeError(f"preload[{k}] must be a pwlnet.code_cache.HwEntry, not {e!r}")
            try:
                fmt.check(e)
            except code_cache.EntryError as err:
                raise ValueError(f"preload[{k}]: {err}") from None
        self._preload = preload
        layers = [e.layer for e in preload] + [None] * (self._entries - len(preload))
        if weight_memory == "auto" and target == "ice40":
            weight_memory = self._weights_fit(model, lanes, metric)
        if preload and weight_memory == "ram":
            # SPRAM has no initial contents and the host's weight image knows nothing of
            # build-time entries: their W x + b would be lost.
            raise ValueError("preloaded entries need the weights in block RAM, but this build keeps them in "
                             "SPRAM (loaded by the host at run time); write the entries over the host link "
                             "instead, or use fewer entries or a smaller model")
        self.engine = MLPEngine(model, lanes, target=target, weight_memory=weight_memory,
                                cache_slots=self._entries, slot_format=fmt, slot_layers=layers)
        self.bank = ComparatorBank(self._entries, model.input_dim, model.input_bits, metric, squarer=squarer,
                                   init=[(e.center, e.bound) for e in preload])
        slot_shape = unsigned(max(1, ceil_log2(self._entries)))
        members = {
            "i": In(stream.Signature(signed(model.input_bits))),
            "o": Out(stream.Signature(cached_output_layout(model, self._entries))),
            "cw": In(stream.Signature(data.StructLayout({"slot": slot_shape, "data": 8}))),
            "clear": In(1),
            "clear_stats": In(1),
            "hits": Out(32),
            "misses": Out(32),
            "idle": Out(1),
        }
        if "w_wr" in self.engine.signature.members:
            members["w_wr"] = self.engine.signature.members["w_wr"]
        super().__init__(members)

    def _weights_fit(self, model, lanes, metric):
        """``"rom"`` if the network's and the slots' weights fit the EBR beside the bank's
        centers, else ``"ram"`` (SPRAM, loaded at run time).

        The engine alone decides by its weight bits; here the bank's center memory takes
        EBR too (256 x 16 blocks: ``N`` codes of ``code_bits``, twice for ``linf``, per
        row), so the budget is shared.
        """
        from .engine import _EBR_WEIGHT_BUDGET
        probe = MLPEngine(model, lanes, weight_memory="rom", cache_slots=self._entries, slot_format=self.fmt)
        probe._MustUse__silence = True
        words, width = len(probe.weight_words), probe.weight_word_bits
        weight_ebr = -(-words // 256) * -(-width // 16)
        per = 2 if metric == "linf" else 1
        bank_ebr = -(-self._entries * per * model.input_bits // 16) * -(-model.input_dim // 256)
        return "rom" if (weight_ebr + bank_ebr) * 4096 <= _EBR_WEIGHT_BUDGET else "ram"

    @property
    def entries(self):
        return self._entries

    @property
    def metric(self):
        return self.fmt.metric

    @property
    def lanes(self):
        return self.engine.lanes

    @property
    def preload(self):
        """The preloaded entries (slots ``0 .. len - 1``)."""
        return list(self._preload)

    @property
    def hit_cycles(self):
        return self.engine.program_cycles(self.engine.first_slot_program)

    @property
    def cycles_per_inference(self):
        return self.engine.cycles_per_inference

    @property
    def ideal_cycles(self):
        return self.engine.ideal_cycles

    @property
    def lookup_latency(self):
        return self.bank.lookup_latency

    @property
    def weight_memory(self):
        return self.engine.weight_memory

    @property
    def weight_words(self):
        return self.engine.weight_words

    @property
    def weight_word_bits(self):
        return self.engine.weight_word_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        m.submodules.bank = bank = self.bank
        fmt, n = self.fmt, self._entries
        d = self._model.input_dim
        first = eng.first_slot_program
        if "w_wr" in eng.signature.members:
            wiring.connect(m, wiring.flipped(self.w_wr), eng.w_wr)

        # ---- input: a two-code FIFO, then a fork to the engine and the bank ----------
        # The FIFO makes `i.ready` a function of registers only (the fork's handshake
        # would otherwise reach the producer's logic combinationally).  A write or clear
        # that is waiting or running (`hold`, a register) holds off the *first* code of
        # new inputs at the port; the writer starts only once `hold` is set and the FIFO,
        # the bank and the engine are empty, so no inference can straddle a write.
        hold = Signal()
        d_in = self._model.input_dim
        m.submodules.in_fifo = in_fifo = fifo.SyncFIFO(width=self._model.input_bits, depth=2)
        in_k = Signal(range(d_in))          # codes of the current input taken at the port
        in_first = Signal(init=1)           # in_k == 0, as a register (i.ready is one LUT)
        m.d.comb += [
            self.i.ready.eq(in_fifo.w_rdy & ~(hold & in_first)),
            in_fifo.w_data.eq(self.i.payload),
            in_fifo.w_en.eq(self.i.valid & self.i.ready),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [in_k.eq(Mux(in_k == d_in - 1, 0, in_k + 1)), in_first.eq(in_k == d_in - 1)]
        m.d.comb += [
            eng.i.payload.eq(in_fifo.r_data),
            bank.q.payload[0].eq(in_fifo.r_data),
            eng.i.valid.eq(in_fifo.r_rdy & bank.q.ready),
            bank.q.valid.eq(in_fifo.r_rdy & eng.i.ready),
            in_fifo.r_en.eq(eng.i.ready & bank.q.ready),
        ]

        # ---- the bank's answer chooses the engine's program --------------------------
        ans = bank.o.payload
        m.d.comb += [
            eng.prog.valid.eq(bank.o.valid),
            eng.prog.payload.eq(Mux(ans.hit, ans.slot + first, 0)),
            bank.o.ready.eq(eng.prog.ready),
        ]
        inc_hit, inc_miss = Signal(), Signal()
        m.d.sync += [inc_hit.eq(bank.o.valid & eng.prog.ready & ans.hit),
                     inc_miss.eq(bank.o.valid & eng.prog.ready & ~ans.hit)]
        with m.If(self.clear_stats):
            m.d.sync += [self.hits.eq(0), self.misses.eq(0)]
        with m.Else():
            with m.If(inc_hit):
                m.d.sync += self.hits.eq(self.hits + 1)
            with m.If(inc_miss):
                m.d.sync += self.misses.eq(self.misses + 1)

        # ---- outputs -------------------------------------------------------------------
        prog = eng.o.payload.program
        m.d.comb += [
            self.o.valid.eq(eng.o.valid),
            eng.o.ready.eq(self.o.ready),
            self.o.payload.data.eq(eng.o.payload.data),
            self.o.payload.last.eq(eng.o.payload.last),
            self.o.payload.argmax.eq(eng.o.payload.argmax),
            self.o.payload.cached.eq(prog >= first),
            self.o.payload.slot.eq(Mux(prog >= first, prog - first, 0)),
        ]

        # ---- entry writer --------------------------------------------------------------
        # Slot -> (first weight word, first channel) of its program, and whether the slot
        # exists (a non-power-of-two N leaves slot numbers without a program).
        slot_w = len(self.cw.payload.slot)
        n_words = max(2, len(eng.weight_words))
        n_chan = eng.slot_chan_base(n - 1) + fmt.n_out
        base_layout = data.StructLayout({"w": range(n_words + 1), "c": range(n_chan + 1), "ok": 1})
        m.submodules.slot_rom = slot_rom = Memory(
            shape=base_layout, depth=1 << slot_w,
            init=[{"w": eng.slot_word_base(s), "c": eng.slot_chan_base(s), "ok": 1} if s < n else
                  {"w": 0, "c": 0, "ok": 0} for s in range(1 << slot_w)])
        base_rd = slot_rom.read_port(domain="comb")
        m.d.comb += base_rd.addr.eq(self.cw.payload.slot)

        # Fields in image order: weight words, channel parameters, bound, center codes.
        PH_W, PH_P, PH_B, PH_C = range(4)
        nbytes = [fmt.word_bytes, fmt.param_bytes, fmt.bound_bytes, fmt.code_bytes]
        counts = [fmt.weight_words, fmt.n_out, 1, d]
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
        if "w_wr" in eng.signature.members:
            # A weight load rewrites the slots' words too (with the host's image, in which
            # they are empty): it empties the cache.
            with m.If(self.w_wr.valid):
                m.d.sync += clear_pend.eq(1)
        # Registered: with `hold` already set in the cycle it looks at, no input can start
        # in between, so one cycle of staleness never lets a write meet an inference.
        ready_for_host = Signal()
        m.d.sync += ready_for_host.eq(bank.idle & eng.quiet & ~in_fifo.r_rdy & in_first & hold)

        pw = field(PH_P)
        ob, mb = 8 * fmt.off_bytes, 8 * fmt.mult_bytes
        m.d.comb += [
            eng.cw.payload.addr.eq(Mux(phase == PH_W, wa, ca)),
            eng.cw.payload.kind.eq(phase == PH_P),
            eng.cw.payload.word.eq(field(PH_W)),
            eng.cw.payload.off.eq(pw[:fmt.off_bits]),
            eng.cw.payload.shift.eq(pw[ob + mb:ob + mb + 8]),
            bank.w.payload.slot.eq(slot),
            bank.w.payload.index.eq(item),
            bank.w.payload.codes[0].eq(field(PH_C)),
            bank.w.payload.bound.eq(bound),
            bank.w.payload.valid.eq(1),
            bank.w.payload.commit.eq(item_last),
        ]
        if fmt.mult_bits:
            m.d.comb += eng.cw.payload.mult.eq(pw[ob:ob + fmt.mult_bits])

        # The store strobes are registers, set as the field's last byte arrives, so the
        # memories' and the bank's write enables do not hang off the state decode.
        st_eng, st_bank = Signal(), Signal()
        m.d.comb += [eng.cw.valid.eq(st_eng), bank.w.valid.eq(st_bank)]

        with m.FSM(name="writer") as fsm:
            with m.State("IDLE"):
                # The write's start state is loaded on every idle cycle (it matters only
                # once the write starts), so these registers' enables are a state decode.
                m.d.sync += [slot.eq(self.cw.payload.slot), wa.eq(base_rd.data.w), ca.eq(base_rd.data.c),
                             ok.eq(base_rd.data.ok), phase.eq(PH_W), nb.eq(0), item.eq(0)]
                with m.If(ready_for_host & clear_pend):
                    # A clear pending before a write is applied first.
                    m.d.comb += bank.clear.eq(1)
                    m.d.sync += clear_pend.eq(self.clear)
                with m.Elif(ready_for_host & self.cw.valid):
                    m.next = "BYTE"
            with m.State("BYTE"):
                m.d.comb += self.cw.ready.eq(1)
                with m.If(self.cw.valid):
                    m.d.sync += sh.eq(Cat(sh[8:], self.cw.payload.data))
                    with m.If(nb_last):
                        m.d.sync += [nb.eq(0), st_eng.eq(ok & ((phase == PH_W) | (phase == PH_P))),
                                     st_bank.eq(ok & (phase == PH_C))]
                        m.next = "STORE"
                    with m.Else():
                        m.d.sync += nb.eq(nb + 1)
            with m.State("STORE"):
                # The field is complete in `sh`: store it where its phase says.
                done = Signal()
                m.d.comb += done.eq(~(st_eng & ~eng.cw.ready) & ~(st_bank & ~bank.w.ready))
                with m.If(phase == PH_B):
                    m.d.sync += bound.eq(field(PH_B)[:fmt.distance_bits])
                with m.If(done):
                    m.d.sync += [st_eng.eq(0), st_bank.eq(0)]
                    with m.If(phase == PH_W):
                        m.d.sync += wa.eq(wa + 1)
                    with m.If(phase == PH_P):
                        m.d.sync += ca.eq(ca + 1)
                    with m.If(item_last):
                        m.d.sync += [item.eq(0), phase.eq(phase + 1)]
                        with m.If(phase == PH_C):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "BYTE"
                    with m.Else():
                        m.d.sync += item.eq(item + 1)
                        m.next = "BYTE"

        m.d.sync += hold.eq(self.cw.valid | clear_pend | self.clear | ~fsm.ongoing("IDLE"))
        m.d.sync += self.idle.eq(bank.idle & eng.quiet & ~in_fifo.r_rdy & in_first & fsm.ongoing("IDLE")
                                 & ~clear_pend & ~self.clear & ~self.cw.valid)
        return m
