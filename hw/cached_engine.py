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

Entry writes (``cw``) carry the bytes of :meth:`pwlnet.hw.slot_format.SlotFormat.image`: weight
words, channel parameters, bound, center.  The writer (:class:`~pwlnet.hw.entry_writer.EntryWriter`)
takes the first byte only when no
inference is in flight (nothing loaded, running or being written back), and from the
cycle after a write is offered it holds off the *first* code of new inputs, so an
inference sees either all of an entry or none of it: those whose first code was taken
before the write's first byte see the old slot, later ones the new.  ``clear`` is ordered the same
way.  The bank marks the slot valid with its last center code, which comes last.

Bit-exact with :class:`pwlnet.code_cache.HwCache` (hit, slot, output codes) driven by
:class:`pwlnet.cache_host.CacheHost`; :func:`pwlnet.cache_host.run_stream` with
``slot_format`` is the whole host-and-device loop.

Layer: hardware generators.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from pwlnet import code_cache

from .comparator_bank import ComparatorBank
from .engine import MLPEngine, output_layout, weight_write_layout
from .engine.plan import EBR_WEIGHT_BUDGET, EnginePlan
from .entry_writer import EntryWriter
from .params import check_int
from .slot_format import SlotFormat

__all__ = ["CachedEngine", "CachedEngineSignature", "cached_output_layout", "cache_write_layout",
           "cached_engine_plan"]


def cached_engine_plan(model, lanes, entries, metric, *, slot_layers=None) -> EnginePlan:
    """The plan of the engine inside a :class:`CachedEngine` (no hardware built).

    The network is program 0 and the ``entries`` slots are one-layer programs after it,
    in the slot format of ``model`` at ``lanes`` lanes and ``metric``; ``slot_layers``
    gives their initial contents (``None``: empty slots).  Its weight words are the image
    the host loads into a cached build's weight memory, its cycle counts the engine's.
    """
    return EnginePlan(model, lanes, cache_slots=entries, slot_format=SlotFormat(model, lanes, metric),
                      slot_layers=slot_layers)


def _slot_shape(entries):
    return unsigned(max(1, ceil_log2(entries)))


def cached_output_layout(model, entries):
    """Payload of :attr:`CachedEngine.o`: the engine's fields plus ``cached`` and ``slot``."""
    fields = {name: field.shape for name, field in output_layout(model)}
    return data.StructLayout({**fields, "cached": 1, "slot": _slot_shape(entries)})


def cache_write_layout(entries):
    """Payload of :attr:`CachedEngine.cw` (and of the link's ``cw``, which drives it): one
    byte of a slot image and the slot it goes to."""
    return data.StructLayout({"slot": _slot_shape(entries), "data": 8})


class CachedEngineSignature(wiring.Signature):
    """The ports of :class:`CachedEngine`, which the link and the board top expect.

    Parameters
    ----------
    model : pwlnet.artifact.CompiledModel
    entries : int
        Cache slots.
    weight_words, weight_word_bits : int
        The engine's weight memory when it is loaded at run time through ``w_wr`` (0 words:
        built into the bitstream, no port).

    Members
    -------
    i : In(stream.Signature(signed(model.input_bits)))
    o : Out(stream.Signature(cached_output_layout(model, entries)))
    cw : In(stream.Signature(cache_write_layout(entries)))
    clear, clear_stats : In(1)
    hits, misses : Out(32)
    idle : Out(1)
    w_wr : In(stream.Signature(weight_write_layout(...))), only with ``weight_words``
    """

    def __init__(self, model, entries, *, weight_words=0, weight_word_bits=0):
        members = {
            "i": In(stream.Signature(signed(model.input_bits))),
            "o": Out(stream.Signature(cached_output_layout(model, entries))),
            "cw": In(stream.Signature(cache_write_layout(entries))),
            "clear": In(1),
            "clear_stats": In(1),
            "hits": Out(32),
            "misses": Out(32),
            "idle": Out(1),
        }
        if weight_words:
            members["w_wr"] = In(stream.Signature(weight_write_layout(weight_words, weight_word_bits)))
        super().__init__(members)


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
        :func:`pwlnet.cache_host.preload`; each must fit :attr:`fmt`.
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
    fmt : pwlnet.hw.slot_format.SlotFormat
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
        code_cache.check_metric(metric)
        self._model = model
        self._target = target
        self.fmt = fmt = SlotFormat(model, lanes, metric)
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
        ram = self.engine.weight_memory == "ram"
        super().__init__(CachedEngineSignature(model, self._entries,
                                               weight_words=len(self.engine.weight_words) if ram else 0,
                                               weight_word_bits=self.engine.weight_word_bits))

    def _weights_fit(self, model, lanes, metric):
        """``"rom"`` if the network's and the slots' weights fit the EBR beside the bank's
        centers, else ``"ram"`` (SPRAM, loaded at run time).

        The engine alone decides by its weight bits; here the bank's center memory takes
        EBR too (256 x 16 blocks: ``N`` codes of ``code_bits``, twice for ``linf``, per
        row), so the budget is shared.
        """
        plan = EnginePlan(model, lanes, cache_slots=self._entries, slot_format=self.fmt)
        words, width = len(plan.weight_words), plan.weight_word_bits
        weight_ebr = -(-words // 256) * -(-width // 16)
        per = 2 if metric == "linf" else 1
        bank_ebr = -(-self._entries * per * model.input_bits // 16) * -(-model.input_dim // 256)
        return "rom" if (weight_ebr + bank_ebr) * 4096 <= EBR_WEIGHT_BUDGET else "ram"

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
        if "w_wr" in eng.signature.members:
            wiring.connect(m, wiring.flipped(self.w_wr), eng.w_wr)
        m.submodules.writer = writer = self._writer()
        in_fifo, in_first = self._input(m, writer.hold)
        self._answer(m)
        self._outputs(m)

        wiring.connect(m, wiring.flipped(self.cw), writer.cw)
        wiring.connect(m, writer.engine, eng.cw)
        wiring.connect(m, writer.bank, bank.w)
        m.d.comb += [
            writer.clear.eq(self.clear),
            writer.quiet.eq(bank.idle & eng.quiet & ~in_fifo.r_rdy & in_first),
            bank.clear.eq(writer.bank_clear),
            self.idle.eq(writer.idle),
        ]
        if "w_wr" in eng.signature.members:
            m.d.comb += writer.weights_written.eq(self.w_wr.valid)
        return m

    def _writer(self):
        """The entry writer for this engine's slot programs and bank."""
        eng, n = self.engine, self._entries
        return EntryWriter(self.fmt, n, word_base=[eng.slot_word_base(s) for s in range(n)],
                           chan_base=[eng.slot_chan_base(s) for s in range(n)],
                           weight_words=len(eng.weight_words), engine_layout=eng.slot_write_layout,
                           bank_layout=self.bank.w.payload.shape(),
                           weight_port="w_wr" in eng.signature.members)

    def _input(self, m, hold):
        """A two-code FIFO, then a fork to the engine and the bank; returns the FIFO and
        the "next code is an input's first" register.

        The FIFO makes `i.ready` a function of registers only (the fork's handshake would
        otherwise reach the producer's logic combinationally).  A write or clear that is
        waiting or running (`hold`, a register of the writer) holds off the *first* code
        of new inputs at the port; the writer starts only once `hold` is set and the
        FIFO, the bank and the engine are empty, so no inference can straddle a write.
        """
        eng, bank = self.engine, self.bank
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
        return in_fifo, in_first

    def _answer(self, m):
        """The bank's answer chooses the engine's program; the hit and miss counters."""
        eng, bank = self.engine, self.bank
        ans = bank.o.payload
        m.d.comb += [
            eng.prog.valid.eq(bank.o.valid),
            eng.prog.payload.eq(Mux(ans.hit, ans.slot + eng.first_slot_program, 0)),
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

    def _outputs(self, m):
        """The engine's output stream with ``cached`` and ``slot`` read off its program number."""
        eng = self.engine
        first = eng.first_slot_program
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
