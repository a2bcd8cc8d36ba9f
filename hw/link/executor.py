"""The link's command executor: runs the checked requests the frame parser hands on.

INFER: the input codes go from the input buffer to the engine, the output codes from the
engine into the output buffer, and the cycles from the first code taken to the last
output beat are counted.  INFER_BATCH: the same for ``count`` inputs back to back (the
engine double-buffers its input, so the next input goes in while the previous one
computes); each inference's output codes follow the previous one's in the output buffer,
its argmax goes to the argmax buffer, and the cycles run from the batch's first input beat
to its last output beat.  LOAD_WEIGHTS: the staged bytes become weight words, written to
the engine's ``w_wr`` port.  CACHE_WRITE: the staged slot image goes to the cached
engine's ``cw`` port byte by byte.  Staged bytes reach the engine only after the frame's
CRC has checked out, so a corrupted frame never changes a weight or an entry.

The executor also keeps the link's counters (:data:`pwlnet.protocol.COUNTER_NAMES`) and
registers the cache's strobes on their way to the engine.
"""

from amaranth.hdl import C, Cat, Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ...protocol import COUNTER_NAMES, field_bytes
from ..cached_engine import cache_write_layout, cached_output_layout
from ..engine import output_layout, weight_write_layout
from .request import ExecSignature

__all__ = ["CommandExecutor"]


class CommandExecutor(wiring.Component):
    """Runs INFER, INFER_BATCH, LOAD_WEIGHTS and CACHE_WRITE for the link, and keeps its counters.

    Parameters
    ----------
    model : CompiledModel
        The model the engine computes (widths and dimensions of the buffers and ports).
    staged_bytes : int
        As for :class:`~pwlnet.hw.link.request.ExecSignature`.
    stage_depth : int
        Bytes of the staging buffer (0: none).
    counter_bits : int
        Width of each counter (1..32).
    weight_words, weight_word_bits : int
        Run-time loaded weight memory (0 words: no ``w_wr`` port).
    cache_entries, image_bytes : int
        Slots of the cached engine behind the link and bytes of a slot image (0 entries:
        the plain engine's ports).
    max_batch : int
        Most inputs of an ``INFER_BATCH`` (0: none; the buffers hold one inference).

    Attributes
    ----------
    req : In(ExecSignature(staged_bytes))
        Requests and strobes from the parser.
    eng_i : Out(stream.Signature(signed(input_bits)))
        Input codes to the engine.
    eng_o : In(stream.Signature(output_layout(model)))
        Output codes from the engine (:func:`~pwlnet.hw.cached_engine.cached_output_layout`
        with a cache).
    in_rd : In(ReadPort.Signature(...))
        Read port of the input-code buffer (registered data; ``max(1, max_batch)`` inputs).
    out_wr : In(WritePort.Signature(...))
        Write port of the output-code buffer (``max(1, max_batch)`` inferences' codes).
    am_wr : In(WritePort.Signature(...))
        Write port of the argmax buffer, u16 per inference of a batch (only with ``max_batch``).
    stage_rd : In(ReadPort.Signature(...))
        Read port of the staging buffer (only with ``stage_depth``).
    uart_error : In(1)
        Pulse per receiver error (counted).
    counters : Out(32 * len(COUNTER_NAMES))
        The counters, in :data:`~pwlnet.protocol.COUNTER_NAMES` order, u32 each.
    argmax : Out(16), cycles : Out(32)
        The last INFER's argmax, and its cycle count or the last INFER_BATCH's.
    hit : Out(1), slot : Out(...)
        Whether the last inference was answered by a slot, and which (only with a cache).
    w_wr : Out(stream.Signature(weight_write_layout(...)))
        Weight word writes (only with ``weight_words``).
    cw : Out(stream.Signature(cache_write_layout(cache_entries)))
        Slot image bytes (only with a cache).
    cache_clear, clear_stats : Out(1)
        Registered strobes to the cached engine (only with a cache).
    """

    def __init__(self, model, *, staged_bytes, stage_depth=0, counter_bits=32, weight_words=0,
                 weight_word_bits=0, cache_entries=0, image_bytes=0, max_batch=0):
        if max_batch and cache_entries:
            raise ValueError("a cached link answers INFER_BATCH with UNSUPPORTED; max_batch must be 0")
        self._model = model
        self._max_batch = int(max_batch)
        nb = max(1, self._max_batch)
        self._stage_depth = stage_depth
        self._counter_bits = counter_bits
        self._loadable = bool(weight_words)
        self._wb = field_bytes(weight_word_bits) if weight_words else 0
        self._entries = cache_entries
        self._image_bytes = image_bytes if cache_entries else 0
        d, n_out = model.input_dim, model.output_dim
        out_layout = (cached_output_layout(model, cache_entries) if cache_entries else output_layout(model))
        members = {
            "req":        In(ExecSignature(staged_bytes, self._max_batch)),
            "eng_i":      Out(stream.Signature(signed(model.input_bits))),
            "eng_o":      In(stream.Signature(out_layout)),
            "in_rd":      In(ReadPort.Signature(addr_width=ceil_log2(d * nb), shape=signed(model.input_bits))),
            "out_wr":     In(WritePort.Signature(addr_width=ceil_log2(n_out * nb),
                                                 shape=signed(model.layers[-1].out_bits))),
            "uart_error": In(1),
            "counters":   Out(32 * len(COUNTER_NAMES)),
            "argmax":     Out(16),
            "cycles":     Out(32),
        }
        if self._max_batch:
            members["am_wr"] = In(WritePort.Signature(addr_width=ceil_log2(self._max_batch), shape=16))
        if stage_depth:
            members["stage_rd"] = In(ReadPort.Signature(addr_width=ceil_log2(stage_depth), shape=8))
        if self._loadable:
            members["w_wr"] = Out(stream.Signature(weight_write_layout(weight_words, weight_word_bits)))
        if cache_entries:
            members.update({
                "hit":         Out(1),
                "slot":        Out(out_layout["slot"].shape),
                "cw":          Out(stream.Signature(cache_write_layout(cache_entries))),
                "cache_clear": Out(1),
                "clear_stats": Out(1),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        inc = self._counters(m)
        if self._entries:
            # Cache strobes, registered on their way to the engine.
            m.d.sync += [self.cache_clear.eq(self.req.cache_clear), self.clear_stats.eq(self.req.clear_stats)]
        st = _RunState(self, m)
        m.d.sync += self.req.done.eq(0)    # a one-cycle pulse unless set below
        if self._loadable:
            # The first word's address arrives in the payload; the commit counts it up.
            with m.If(self.req.addr_we[0]):
                m.d.sync += st.waddr[:8].eq(self.req.byte)
            with m.If(self.req.addr_we[1]):
                m.d.sync += st.waddr[8:].eq(self.req.byte)
        with m.FSM(name="execute"):
            with m.State("IDLE"):
                # The run state is cleared on every idle cycle, not only on a start: no
                # register's enable then hangs off the parser's dispatch decision.
                m.d.sync += [st.feed_addr.eq(0), st.started.eq(0), st.out_idx.eq(0)]
                if self._stage_depth:
                    m.d.sync += st.commit_idx.eq(0)
                if self._loadable:
                    m.d.sync += st.commit_byte.eq(0)
                if self._max_batch:
                    m.d.sync += [st.feed_end.eq(self.req.count * self._model.input_dim), st.rec.eq(0)]
                with m.If(self.req.start & self.req.infer):
                    m.next = "RUN"
                if self._max_batch:
                    with m.Elif(self.req.start & self.req.batch):
                        m.next = "BATCH"
                if self._loadable:
                    with m.Elif(self.req.start & self.req.load):
                        m.next = "COMMIT_RD"
                if self._entries:
                    with m.Elif(self.req.start & self.req.cwrite):
                        m.next = "CW_RD"
            self._run_state(m, st, inc)
            if self._max_batch:
                self._batch_state(m, st, inc)
            if self._loadable:
                self._commit_states(m, st)
            if self._entries:
                self._cache_write_states(m, st)
        return m

    def _counters(self, m):
        cb = self._counter_bits
        cnt = {name: Signal(cb, name=f"cnt_{name}") for name in COUNTER_NAMES}
        inc = {name: Signal(name=f"inc_{name}") for name in COUNTER_NAMES}
        clear_q = Signal()
        m.d.sync += clear_q.eq(self.req.clear_counters)
        for name in COUNTER_NAMES:
            # Registered enables keep the counters' adders off the parser's paths.
            inc_q = Signal(name=f"inc_{name}_q")
            m.d.sync += inc_q.eq(inc[name])
            with m.If(clear_q):
                m.d.sync += cnt[name].eq(0)
            with m.Elif(inc_q):
                m.d.sync += cnt[name].eq(cnt[name] + 1)
        m.d.comb += [
            inc["frames"].eq(self.req.count_frame),
            inc["errors"].eq(self.req.count_error),
            inc["uart_errors"].eq(self.uart_error),
            self.counters.eq(Cat(*(cnt[name] if cb == 32 else Cat(cnt[name], C(0, 32 - cb))
                                   for name in COUNTER_NAMES))),
        ]
        return inc

    def _run_state(self, m, st, inc):
        d = self._model.input_dim
        eng_i, eng_o, in_rd, out_wr = self.eng_i, self.eng_o, self.in_rd, self.out_wr
        # Engine input: the read port's data register is the stream's payload register;
        # it loads the next code whenever it is empty or being taken.
        m.d.comb += [
            in_rd.addr.eq(st.feed_addr),
            in_rd.en.eq(~st.feed_valid | eng_i.ready),
            eng_i.payload.eq(in_rd.data),
            eng_i.valid.eq(st.feed_valid),
            self.argmax.eq(st.argmax),
            self.cycles.eq(st.cyc),
        ]
        if self._entries:
            m.d.comb += [self.hit.eq(st.hit), self.slot.eq(st.slot)]
        with m.State("RUN"):
            m.d.comb += [eng_o.ready.eq(1), inc["busy_cycles"].eq(1)]
            with m.If(in_rd.en):
                m.d.sync += st.feed_valid.eq(st.feed_addr < d)
                with m.If(st.feed_addr < d):
                    m.d.sync += st.feed_addr.eq(st.feed_addr + 1)
            with m.If(eng_i.valid & eng_i.ready & ~st.started):
                m.d.sync += [st.started.eq(1), st.cyc.eq(1)]
            with m.Elif(st.started & ~(eng_o.valid & eng_o.payload.last)):
                m.d.sync += st.cyc.eq(st.cyc + 1)
            with m.If(eng_o.valid):
                m.d.comb += [out_wr.addr.eq(st.out_idx), out_wr.data.eq(eng_o.payload.data), out_wr.en.eq(1)]
                m.d.sync += st.out_idx.eq(st.out_idx + 1)
                with m.If(eng_o.payload.last):
                    m.d.comb += inc["inferences"].eq(1)
                    m.d.sync += [st.argmax.eq(eng_o.payload.argmax), self.req.done.eq(1)]
                    if self._entries:
                        m.d.sync += [st.hit.eq(eng_o.payload.cached), st.slot.eq(eng_o.payload.slot)]
                    m.next = "IDLE"

    def _batch_state(self, m, st, inc):
        # INFER_BATCH: the codes of `count` inputs in a row, fed as INFER feeds one (the
        # engine takes the next input while it computes the previous one); each output
        # beat goes to the next place of the output buffer, each inference's argmax to
        # the argmax buffer, and the cycles stop at the last inference's last beat.
        eng_i, eng_o, out_wr, am_wr = self.eng_i, self.eng_o, self.out_wr, self.am_wr
        last_beat = eng_o.valid & eng_o.payload.last
        final = st.rec == self.req.count - 1
        with m.State("BATCH"):
            m.d.comb += [eng_o.ready.eq(1), inc["busy_cycles"].eq(1)]
            with m.If(self.in_rd.en):
                m.d.sync += st.feed_valid.eq(st.feed_addr < st.feed_end)
                with m.If(st.feed_addr < st.feed_end):
                    m.d.sync += st.feed_addr.eq(st.feed_addr + 1)
            with m.If(eng_i.valid & eng_i.ready & ~st.started):
                m.d.sync += [st.started.eq(1), st.cyc.eq(1)]
            with m.Elif(st.started & ~(last_beat & final)):
                m.d.sync += st.cyc.eq(st.cyc + 1)
            with m.If(eng_o.valid):
                m.d.comb += [out_wr.addr.eq(st.out_idx), out_wr.data.eq(eng_o.payload.data), out_wr.en.eq(1)]
                m.d.sync += st.out_idx.eq(st.out_idx + 1)
                with m.If(eng_o.payload.last):
                    m.d.comb += [inc["inferences"].eq(1),
                                 am_wr.addr.eq(st.rec), am_wr.data.eq(eng_o.payload.argmax), am_wr.en.eq(1)]
                    m.d.sync += st.rec.eq(st.rec + 1)
                    with m.If(final):
                        m.d.sync += self.req.done.eq(1)
                        m.next = "IDLE"

    def _commit_states(self, m, st):
        # Staged words go to the engine only now that the CRC has checked out, so a
        # corrupted frame never reaches the weight memory.
        wb, word, waddr = self._wb, st.word, st.waddr
        with m.State("COMMIT_RD"):
            m.next = "COMMIT_SHIFT"
        with m.State("COMMIT_SHIFT"):
            # Little-endian: the first byte ends up in the word's low bits.
            m.d.sync += [word.eq(Cat(word[8:], self.stage_rd.data)), st.commit_idx.eq(st.commit_idx + 1)]
            with m.If(st.commit_byte == wb - 1):
                m.d.sync += st.commit_byte.eq(0)
                m.next = "COMMIT_WRITE"
            with m.Else():
                m.d.sync += st.commit_byte.eq(st.commit_byte + 1)
                m.next = "COMMIT_RD"
        with m.State("COMMIT_WRITE"):
            m.d.comb += [self.w_wr.valid.eq(1), self.w_wr.payload.addr.eq(waddr),
                         self.w_wr.payload.data.eq(word)]
            with m.If(self.w_wr.ready):
                m.d.sync += waddr.eq(waddr + 1)
                with m.If(st.commit_idx == self.req.staged):
                    m.d.sync += self.req.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "COMMIT_RD"

    def _cache_write_states(self, m, st):
        # A slot image goes to the engine byte by byte, only now that the CRC has checked
        # out, so a corrupted frame never changes an entry.  The engine holds the first
        # byte until no inference is in flight.
        cw_last = Signal()
        with m.State("CW_RD"):
            # The staging buffer's read port answers for `commit_idx` next cycle.
            m.d.sync += cw_last.eq(st.commit_idx == self._image_bytes - 1)
            m.next = "CW_SEND"
        with m.State("CW_SEND"):
            m.d.comb += [self.cw.valid.eq(1), self.cw.payload.data.eq(self.stage_rd.data),
                         self.cw.payload.slot.eq(self.req.arg0)]
            with m.If(self.cw.ready):
                m.d.sync += st.commit_idx.eq(st.commit_idx + 1)
                with m.If(cw_last):
                    m.d.sync += self.req.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "CW_RD"


class _RunState:
    """The executor's registers, shared by its elaboration steps."""

    def __init__(self, ex, m):
        d, n_out = ex._model.input_dim, ex._model.output_dim
        nb = max(1, ex._max_batch)
        self.feed_addr = Signal(range(d * nb + 1), name="feed_addr")
        if ex._max_batch:
            self.feed_end = Signal(range(d * nb + 1), name="feed_end")   # codes of the batch
            self.rec = Signal(range(nb + 1), name="rec")                 # inferences of the batch done
        self.feed_valid = Signal(name="feed_valid")
        self.started = Signal(name="started")
        # Cycles from the first code taken to the last output beat; it stops there and is
        # the INFER reply's `cycles` until the next INFER starts.
        self.cyc = Signal(32, name="cyc")
        self.argmax = Signal(16, name="argmax")
        self.out_idx = Signal(range(n_out * nb + 1), name="out_idx")
        if ex._entries:
            self.hit = Signal(name="hit_flag")
            self.slot = Signal(ex.slot.shape(), name="hit_slot")
        if ex._stage_depth:
            self.commit_idx = Signal(range(ex._stage_depth + 1), name="commit_idx")
            m.d.comb += ex.stage_rd.addr.eq(self.commit_idx)
        self.commit_byte = Signal(range(max(1, ex._wb)), name="commit_byte")
        if ex._loadable:
            self.waddr = Signal(16, name="waddr")
            self.word = Signal(8 * ex._wb, name="word")
