"""The framed host protocol: a byte-stream link between the UART and the MLP engine.

Frame format (both directions; multi-byte fields little-endian)::

    SYNC  CMD  LEN_LO LEN_HI  PAYLOAD[LEN]  CRC_LO CRC_HI

``SYNC`` is :data:`REQ_SYNC` (``0xA5``) host to device and :data:`REP_SYNC` (``0x5A``)
device to host, so a looped-back cable or an echoing adapter is recognised at once.
The CRC is CRC-16/CCITT-FALSE (polynomial ``0x1021``, initial value ``0xFFFF``, no
reflection, no final XOR) over ``CMD``, ``LEN`` and ``PAYLOAD``.  A successful reply
carries ``CMD | 0x80``; an error reply carries :data:`ERROR_REPLY` with the two-byte
payload ``(error code, offending command)``.

The device handles one request at a time: it receives a whole frame, checks it,
executes it and sends the reply before it looks at the next byte.  Bytes that arrive
meanwhile wait in a receive FIFO.  Outside a frame every byte other than ``REQ_SYNC`` is
discarded, which is how the link resynchronises after garbage.  A length above the
largest payload the device accepts is answered at once with ``BAD_LENGTH`` (so a
corrupted length cannot stall the link); a frame that stops arriving mid-way is
answered with ``TIMEOUT``.

Commands (:class:`Command`): ``INFO``, ``INFER``, ``COUNTERS``, ``CLEAR_COUNTERS``,
``LOAD_WEIGHTS`` (only when the engine's weights live in SPRAM: the words are staged
and written to the engine after the CRC has checked out); ``0x10``-``0x1F`` belong to
the hypersphere cache: ``CACHE_WRITE``, ``CACHE_CLEAR``, ``CACHE_STATS`` and
``CACHE_INFO`` when the link is built for a cached engine
(:class:`pwlnet.hw.cached_engine.CachedEngine`, ``cache_entries > 0``), otherwise
``UNSUPPORTED`` like the rest of the range.  Error codes: :class:`ErrorCode`.

The wire format itself (commands, error codes, CRC, the INFO and CACHE_INFO replies) is
defined once in :mod:`pwlnet.protocol`, which the host driver imports too.
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..protocol import (CACHE_COMMANDS, CACHE_METRIC_CODES, COUNTER_NAMES, CRC_POLY, ERROR_REPLY,
                        GATEWARE_VERSION, PROTOCOL_VERSION, REP_SYNC, REPLY_FLAG, REQ_SYNC,
                        RESERVED_COMMANDS, CacheInfo, Command, ErrorCode, LinkInfo, check_cache_entries,
                        code_bytes, model_fingerprint)
from .memory import NO_RW_CHECK, unchecked_read_port

__all__ = ["engine_output_layout", "cached_output_layout", "cache_write_layout", "Link"]

def engine_output_layout(model):
    """The engine's output payload layout (see the engine contract)."""
    n_out = model.output_dim
    return data.StructLayout({
        "data":   signed(model.layers[-1].out_bits),
        "last":   1,
        "argmax": unsigned(max(1, ceil_log2(n_out))),
    })


def _slot_shape(entries):
    return unsigned(max(1, ceil_log2(entries)))


def cached_output_layout(model, entries):
    """The cached engine's output payload layout: the engine's, plus ``cached`` and ``slot``."""
    n_out = model.output_dim
    return data.StructLayout({
        "data":   signed(model.layers[-1].out_bits),
        "last":   1,
        "argmax": unsigned(max(1, ceil_log2(n_out))),
        "cached": 1,
        "slot":   _slot_shape(entries),
    })


def cache_write_layout(entries):
    """The cached engine's slot write payload: one image byte and the slot it goes to."""
    return data.StructLayout({"slot": _slot_shape(entries), "data": 8})


def _crc16_step(crc, byte):
    # The bit-serial definition unrolled over one byte; yosys flattens it to XOR trees.
    for i in reversed(range(8)):
        fb = crc[15] ^ byte[i]
        crc = Cat(C(0, 1), crc[:15]) ^ Mux(fb, C(CRC_POLY, 16), C(0, 16))
    return crc


class Link(wiring.Component):
    """Frame parser, command executor and reply generator between a UART and the engine.

    Parameters
    ----------
    model : CompiledModel
        The model the engine computes (widths and dimensions of the payloads).
    lanes : int
        Engine lanes, reported by INFO.
    clk_freq : float
        Clock in Hz, reported by INFO.
    baud : int
        Bit rate, reported by INFO.
    cycles_per_inference : int
        The engine's analytic figure, reported by INFO.
    timeout : int
        Clock cycles without a byte after which a partial frame is dropped with
        ``TIMEOUT``.
    fifo_depth : int
        Receive FIFO bytes; requests the host sends while a reply is going out wait here.
    counter_bits : int
        Width of each counter (the reply always carries u32).
    weight_words : int
        Words of run-time loaded weight memory (0: the weights are in the bitstream and
        ``LOAD_WEIGHTS`` is answered ``UNSUPPORTED``).
    weight_word_bits : int
        Width of one weight word.
    chunk_words : int
        Most words one ``LOAD_WEIGHTS`` frame may carry (they are staged and written to the
        engine only after the frame's CRC has checked out).  It is raised until a
        ``LOAD_WEIGHTS`` payload is the longest payload (INFER's, or CACHE_WRITE's, which
        is staged in the same buffer), so that ``max_payload`` is always
        ``2 + chunk_words * weight word bytes`` when weights are loaded.
    cache_entries : int
        Slots of the cached engine behind the link (0: no cache; the cache commands are
        answered ``UNSUPPORTED`` and the engine ports are those of the plain engine).
    cache_image_bytes : int
        Bytes of one slot image (:attr:`pwlnet.code_cache.SlotFormat.image_bytes`).
    cache_metric : {"l2", "linf", "l1"}
        The comparator bank's metric, reported by ``CACHE_INFO``.
    cache_hit_cycles : int
        Cycles of an inference answered by an entry, reported by ``CACHE_INFO``.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    eng_i : Out(stream.Signature(signed(input_bits)))
        Input codes to the engine.
    eng_o : In(stream.Signature(engine_output_layout(model)))
        Output codes from the engine (:func:`cached_output_layout` with a cache).
    uart_error : In(1)
        Pulse per receiver framing error or overrun (counted).
    busy : Out(1)
        High while a frame is being handled.
    error : Out(1)
        Pulse per error reply.
    w_wr : Out(stream.Signature(StructLayout({"addr", "data"})))
        Weight word writes to the engine (only when ``weight_words`` > 0).
    cw : Out(stream.Signature(cache_write_layout(cache_entries)))
        Slot image bytes to the cached engine, a whole image per ``CACHE_WRITE`` (only
        with a cache).
    cache_clear : Out(1)
        Strobe: invalidate every slot (only with a cache).
    clear_stats : Out(1)
        Strobe: zero the engine's hit and miss counters (only with a cache).
    hits, misses : In(32)
        The engine's counters (only with a cache).
    """

    def __init__(self, model, *, lanes, clk_freq, baud, cycles_per_inference=0, timeout,
                 fifo_depth=256, counter_bits=32, weight_words=0, weight_word_bits=0, chunk_words=32,
                 cache_entries=0, cache_image_bytes=0, cache_metric="linf", cache_hit_cycles=0):
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            self._MustUse__silence = True   # a rejected object is not an unused design
            raise ValueError(f"timeout must be a positive number of cycles, not {timeout!r}")
        if not 1 <= counter_bits <= 32:
            self._MustUse__silence = True
            raise ValueError(f"counter_bits must be in 1..32, not {counter_bits!r}")
        try:
            check_cache_entries(cache_entries)
        except ValueError:
            self._MustUse__silence = True
            raise
        if cache_entries:
            if cache_metric not in CACHE_METRIC_CODES:
                self._MustUse__silence = True
                raise ValueError(f"cache_metric must be one of {', '.join(CACHE_METRIC_CODES)}, "
                                 f"not {cache_metric!r}")
            if (isinstance(cache_image_bytes, bool) or not isinstance(cache_image_bytes, int)
                    or not 1 <= cache_image_bytes <= 0xFFFE):
                self._MustUse__silence = True
                raise ValueError(f"cache_image_bytes must be in 1..65534 with a cache, not {cache_image_bytes!r}")
        self._cache_entries = int(cache_entries)
        self._image_bytes = int(cache_image_bytes) if cache_entries else 0
        self._model = model
        self._timeout = timeout
        self._fifo_depth = fifo_depth
        self._counter_bits = counter_bits
        self._in_bytes = code_bytes(model.input_bits)
        self._out_bytes = code_bytes(model.layers[-1].out_bits)
        self._weight_words = int(weight_words)
        self._word_bits = int(weight_word_bits)
        self._word_bytes = -(-self._word_bits // 8) if self._weight_words else 0
        self._chunk_words = int(chunk_words)
        max_payload = max(model.input_dim * self._in_bytes, 64)
        if self._cache_entries:
            max_payload = max(max_payload, 1 + self._image_bytes)
        if self._weight_words:
            # The longest LOAD_WEIGHTS payload is the longest payload, so the host can size
            # its chunks from max_payload; a slot image shares the staging buffer.
            self._chunk_words = max(self._chunk_words, -(-(max_payload - 2) // self._word_bytes))
            max_payload = 2 + self._chunk_words * self._word_bytes
        if self._cache_entries:
            self.cache_info = CacheInfo(entries=self._cache_entries, metric=cache_metric,
                                        image_bytes=self._image_bytes, hit_cycles=int(cache_hit_cycles))
        else:
            self.cache_info = None
        self.info = LinkInfo(
            protocol=PROTOCOL_VERSION, version=GATEWARE_VERSION,
            input_dim=model.input_dim, input_bits=model.input_bits,
            output_dim=model.output_dim, output_bits=model.layers[-1].out_bits,
            n_layers=len(model.layers), lanes=lanes, clk_hz=int(round(clk_freq)), baud=int(baud),
            cycles_per_inference=int(cycles_per_inference), model_crc=model_fingerprint(model),
            max_payload=max_payload, weight_words=self._weight_words,
            weight_word_bytes=self._word_bytes)
        members = {
            "rx":         In(stream.Signature(8)),
            "tx":         Out(stream.Signature(8)),
            "eng_i":      Out(stream.Signature(signed(model.input_bits))),
            "eng_o":      In(stream.Signature(cached_output_layout(model, self._cache_entries)
                                              if self._cache_entries else engine_output_layout(model))),
            "uart_error": In(1),
            "busy":       Out(1),
            "error":      Out(1),
        }
        if self._weight_words:
            # Same layout as the engine's w_wr port.
            members["w_wr"] = Out(stream.Signature(data.StructLayout({
                "addr": range(max(2, self._weight_words)),
                "data": unsigned(self._word_bits)})))
        if self._cache_entries:
            members.update({
                "cw":          Out(stream.Signature(cache_write_layout(self._cache_entries))),
                "cache_clear": Out(1),
                "clear_stats": Out(1),
                "hits":        In(32),
                "misses":      In(32),
            })
        super().__init__(members)

    @property
    def infer_len(self):
        """Payload bytes of an INFER request."""
        return self._model.input_dim * self._in_bytes

    @property
    def infer_reply_len(self):
        """Payload bytes of an INFER reply: output codes, u16 argmax, u32 cycles (and u8
        cached, u8 slot with a cache)."""
        return self._model.output_dim * self._out_bytes + (8 if self._cache_entries else 6)

    def elaborate(self, platform):
        m = Module()
        model = self._model
        d, n_out = model.input_dim, model.output_dim
        bi, bo = self._in_bytes, self._out_bytes
        max_payload = self.info.max_payload

        # --- receive FIFO -------------------------------------------------------------
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self._fifo_depth)
        m.d.comb += [
            rx_fifo.w_data.eq(self.rx.payload),
            rx_fifo.w_en.eq(self.rx.valid),
            self.rx.ready.eq(rx_fifo.w_rdy),
        ]
        # One more register after the FIFO: the parser's byte and its valid flag come
        # straight from flip-flops, and the FIFO's read enable is a flip-flop too, so the
        # parser's state logic never reaches into the FIFO.  It refills only when empty:
        # one byte per two cycles, against a UART byte every 40 or more.
        byte = Signal(8)
        byte_valid = Signal()
        take = Signal()
        m.d.comb += rx_fifo.r_en.eq(~byte_valid)
        byte_is_sync = Signal()   # precomputed so IDLE's test is one flip-flop
        with m.If(~byte_valid):
            m.d.sync += [byte_valid.eq(rx_fifo.r_rdy), byte.eq(rx_fifo.r_data),
                         byte_is_sync.eq(rx_fifo.r_data == REQ_SYNC)]
        with m.Elif(take):
            m.d.sync += byte_valid.eq(0)

        # --- buffers: input codes of the request, output codes of the reply -----------
        # Read ports without collision logic (unchecked_read_port): each buffer is written
        # in one phase (payload, engine run) and read in another, so a same-cycle read of
        # the address being written is never used.  Block RAM even for the small ones.
        no_rw = {**NO_RW_CHECK, "ram_style": "block"}
        m.submodules.in_mem = in_mem = Memory(shape=signed(model.input_bits), depth=d, init=[], attrs=no_rw)
        in_wr = in_mem.write_port()
        in_rd = unchecked_read_port(m, in_mem, "in_rd")
        m.submodules.out_mem = out_mem = Memory(shape=signed(model.layers[-1].out_bits),
                                                depth=n_out, init=[], attrs=no_rw)
        out_wr = out_mem.write_port()
        out_rd = unchecked_read_port(m, out_mem, "out_rd")
        loadable = bool(self._weight_words)
        cached = bool(self._cache_entries)
        if loadable or cached:
            # LOAD_WEIGHTS and CACHE_WRITE payloads wait here until their CRC is known.
            m.submodules.stage_mem = stage_mem = Memory(
                shape=8, depth=max(self._chunk_words * self._word_bytes, self._image_bytes), init=[],
                attrs=no_rw)
            stage_wr = stage_mem.write_port()
            stage_rd = unchecked_read_port(m, stage_mem, "stage_rd")
            commit_idx = Signal(range(stage_mem.depth + 1))
            m.d.comb += stage_rd.addr.eq(commit_idx)
        if loadable:
            waddr = Signal(16)
            word = Signal(8 * self._word_bytes)

        # --- counters -----------------------------------------------------------------
        cb = self._counter_bits
        cnt = {name: Signal(cb, name=f"cnt_{name}") for name in COUNTER_NAMES}
        clear = Signal()
        inc = {name: Signal(name=f"inc_{name}") for name in COUNTER_NAMES}
        clear_q = Signal()
        m.d.sync += clear_q.eq(clear)
        for name in COUNTER_NAMES:
            # Registered enables keep the counters' adders off the parser's paths.
            inc_q = Signal(name=f"inc_{name}_q")
            m.d.sync += inc_q.eq(inc[name])
            with m.If(clear_q):
                m.d.sync += cnt[name].eq(0)
            with m.Elif(inc_q):
                m.d.sync += cnt[name].eq(cnt[name] + 1)
        m.d.comb += inc["uart_errors"].eq(self.uart_error)

        # --- request state ------------------------------------------------------------
        cmd = Signal(8)
        length = Signal(16)
        # Payload position: a frame longer than max_payload is refused before its body.
        idx = Signal(range(max_payload + 1))
        crc = Signal(16)
        crc_lo = Signal(8)
        code_lo = Signal(8)
        idle_time = Signal(range(self._timeout + 1))
        err_code = Signal(8)

        # --- engine run state ---------------------------------------------------------
        feed_addr = Signal(range(d + 1))
        feed_valid = Signal()
        started = Signal()
        # Cycles from the first code taken to the last output beat; it stops there and
        # is the INFER reply's `cycles` until the next INFER starts.
        cyc = Signal(32)
        argmax = Signal(16)
        out_idx = Signal(range(n_out + 1))

        # --- reply state --------------------------------------------------------------
        r_kind = Signal(3)
        # R_EMPTY: an empty reply; R_LOADED: an empty reply after the executor has run
        # (LOAD_WEIGHTS, CACHE_WRITE); R_CINFO, R_STATS: the cache's replies.
        R_INFO, R_INFER, R_COUNTERS, R_EMPTY, R_ERROR, R_LOADED, R_CINFO, R_STATS = range(8)
        r_cmd = Signal(8)
        r_len = Signal(16)
        hpos = Signal(2)        # header byte: SYNC, CMD, LEN_LO, LEN_HI
        bidx = Signal(16)       # body byte index
        remaining = Signal(16)  # body bytes still to send
        body_last = Signal()
        is_code = Signal()
        tail_idx = Signal(3)
        tcrc = Signal(16)
        tbyte = Signal(8)
        crc_hi = Signal()

        r_empty = Signal()

        # Two state machines: the request side (parse, check, run the engine) hands a
        # reply kind to the reply side (serialise, CRC) and waits for it to finish.
        # Decisions come from registered flags, and each machine writes a register from
        # few states: with one 25-state machine the state decode into the reply
        # registers' enables alone held fmax under 40 MHz.
        req_kind = Signal(3)
        req_valid = Signal()
        tx_done = Signal()
        exec_start = Signal()
        exec_done = Signal()
        commit_byte = Signal(range(max(1, self._word_bytes)))
        m.d.sync += exec_done.eq(0)    # a one-cycle pulse unless set below

        # `req_valid` is a register, high in the cycle the request side is in REPLY, so the
        # reply side's state logic does not decode the request side's state.
        m.d.sync += req_valid.eq(0)

        def start_reply(kind):
            # `kind` is what `req_kind` already holds in this state (see below the FSM).
            m.d.sync += req_valid.eq(1)
            m.next = "REPLY"

        def fail(code):
            # `code` is what `err_code` already holds in this state (see below the FSM).
            m.d.comb += inc["errors"].eq(1)
            start_reply(R_ERROR)

        # Command decode and length checks, registered while the frame is still arriving.
        is_info, is_infer, is_counters, is_clear, is_reserved, is_load = (Signal(name=n) for n in (
            "is_info", "is_infer", "is_counters", "is_clear", "is_reserved", "is_load"))
        # The cache's commands (constant 0 without a cache).
        is_cwrite, is_cclear, is_cstats, is_cinfo = (Signal(name=n) for n in (
            "is_cwrite", "is_cclear", "is_cstats", "is_cinfo"))
        wb = max(1, self._word_bytes)
        max_chunk = self._chunk_words * wb
        word_byte = Signal(range(wb))       # byte position within the weight word being staged
        staged = Signal(range(max(max_chunk, self._image_bytes) + 1))   # bytes staged by this frame
        len_ok, len_big, len_zero, crc_ok = Signal(), Signal(), Signal(), Signal()
        left = Signal(range(max_payload + 1))    # body bytes still to come, minus one
        m.d.sync += [
            is_info.eq(cmd == Command.INFO),
            is_infer.eq(cmd == Command.INFER),
            is_counters.eq(cmd == Command.COUNTERS),
            is_clear.eq(cmd == Command.CLEAR_COUNTERS),
            is_reserved.eq(((cmd >= RESERVED_COMMANDS.start) & (cmd < RESERVED_COMMANDS.stop)
                            & (((cmd > max(CACHE_COMMANDS)) | (cmd < min(CACHE_COMMANDS))) if cached else C(1)))
                           | ((cmd == Command.LOAD_WEIGHTS) if not loadable else C(0))),
            is_load.eq((cmd == Command.LOAD_WEIGHTS) if loadable else C(0)),
            len_big.eq(length > max_payload),
            len_zero.eq(length == 0),
        ]
        len_rest = length == 0
        if cached:
            m.d.sync += [
                is_cwrite.eq(cmd == Command.CACHE_WRITE),
                is_cclear.eq(cmd == Command.CACHE_CLEAR),
                is_cstats.eq(cmd == Command.CACHE_STATS),
                is_cinfo.eq(cmd == Command.CACHE_INFO),
            ]
            len_rest = Mux(is_cwrite, length == 1 + self._image_bytes,
                           Mux(is_cstats, length <= 1, length == 0))
        m.d.sync += len_ok.eq(
            Mux(is_infer, length == d * bi,
                Mux(is_load, (length >= 2 + wb) & (length <= 2 + max_chunk) & (word_byte == 0),
                    len_rest)))
        # Where the next payload byte goes, registered ahead of it (bytes come at most
        # every other cycle, see the FIFO above).
        code_ok, stage_ok = Signal(), Signal()
        m.d.sync += [code_ok.eq(is_infer & (idx < d * bi)),
                     stage_ok.eq((is_load & (idx >= 2) & (staged < max_chunk))
                                 | (is_cwrite & (idx >= 1) & (staged < self._image_bytes)))]
        # The cache commands' one-byte argument: CACHE_WRITE's slot, CACHE_STATS' flags
        # (0 when the payload is empty), checked while the rest of the frame arrives.
        arg0 = Signal(8)
        arg_bad = Signal()
        if cached:
            m.d.sync += arg_bad.eq(Mux(is_cwrite, arg0 >= self._cache_entries,
                                       is_cstats & (arg0[1:] != 0)))
        # The dispatch decision, registered (a priority chain of seven tests took six
        # LUT levels when evaluated in the DISPATCH state itself).
        d_err, d_code, d_kind = Signal(), Signal(8), Signal(3)
        known = is_info | is_infer | is_counters | is_clear | is_load
        if cached:
            known = known | is_cwrite | is_cclear | is_cstats | is_cinfo
            m.d.sync += [
                d_err.eq(~crc_ok | is_reserved | ~known | ~len_ok | arg_bad),
                d_code.eq(Mux(~crc_ok, ErrorCode.BAD_CRC,
                              Mux(is_reserved, ErrorCode.UNSUPPORTED,
                                  Mux(~known, ErrorCode.UNKNOWN_COMMAND,
                                      Mux(~len_ok, ErrorCode.BAD_LENGTH, ErrorCode.BAD_ARGUMENT))))),
                d_kind.eq(Mux(is_info, R_INFO, Mux(is_counters, R_COUNTERS,
                                                   Mux(is_cinfo, R_CINFO, Mux(is_cstats, R_STATS, R_EMPTY))))),
            ]
        else:
            m.d.sync += [
                d_err.eq(~crc_ok | is_reserved | ~known | ~len_ok),
                d_code.eq(Mux(~crc_ok, ErrorCode.BAD_CRC,
                              Mux(is_reserved, ErrorCode.UNSUPPORTED,
                                  Mux(~known, ErrorCode.UNKNOWN_COMMAND, ErrorCode.BAD_LENGTH)))),
                d_kind.eq(Mux(is_info, R_INFO, Mux(is_counters, R_COUNTERS, R_EMPTY))),
            ]
        # Cache strobes, registered on their way to the engine.  CACHE_STATS' reply reads the
        # engine's counters as it goes out (nothing is in flight meanwhile); with flag 0 set
        # they are zeroed once the reply has been sent, so no count falls in between.
        cclear_go, stats_reset, stats_reset_go = Signal(), Signal(), Signal()
        if cached:
            m.d.sync += [self.cache_clear.eq(cclear_go), self.clear_stats.eq(stats_reset_go)]

        # Engine input: the read port's data register is the stream's payload register;
        # it loads the next code whenever it is empty or being taken.
        m.d.comb += [
            in_rd.addr.eq(feed_addr),
            in_rd.en.eq(~feed_valid | self.eng_i.ready),
            self.eng_i.payload.eq(in_rd.data),
            self.eng_i.valid.eq(feed_valid),
        ]

        # Body bytes of each reply kind.  Every selector below comes straight from a
        # register (bidx, r_kind, is_code, tail_idx): the reply path is pipelined over
        # several cycles per byte, which costs nothing next to a UART byte time.
        info_bytes = self.info.pack()
        info_const = C(int.from_bytes(info_bytes, "little"), 8 * len(info_bytes))
        counters_vec = Cat(*(cnt[name] if cb == 32 else Cat(cnt[name], C(0, 32 - cb))
                             for name in COUNTER_NAMES))
        # The cache's replies share the INFO and COUNTERS byte paths: CACHE_INFO's bytes
        # follow INFO's in one constant, the engine's hits and misses follow the counters,
        # and those replies start their byte index there.
        info_words = -(-len(info_bytes) // 4)
        cinfo_start, stats_start = 4 * info_words, 4 * len(COUNTER_NAMES)
        if cached:
            cinfo_bytes = self.cache_info.pack()
            info_const = Cat(info_const, C(0, 32 * info_words - len(info_const)),
                             C(int.from_bytes(cinfo_bytes, "little"), 8 * len(cinfo_bytes)))
            counters_vec = Cat(counters_vec, self.hits, self.misses)
        if cached:
            hit_flag, hit_slot = Signal(), Signal(self.eng_o.payload.slot.shape())
            tail = Cat(argmax, cyc, hit_flag, C(0, 7), hit_slot, C(0, 8 - len(hit_slot)))
        else:
            tail = Cat(argmax, cyc)
        codes_len = n_out * bo
        out_byte = Signal(8)
        if bo == 1:
            m.d.comb += [out_rd.addr.eq(bidx), out_byte.eq(out_rd.data.as_unsigned())]
        else:
            # The high byte of a code narrower than 16 bits is its sign extension.
            wide = Signal(signed(16))
            m.d.comb += [out_rd.addr.eq(bidx >> 1), wide.eq(out_rd.data),
                         out_byte.eq(Mux(bidx[0], wide[8:], wide[:8]))]
        # Two register stages narrow each source to one byte (word, then byte within the
        # word) before the kind is chosen; one big mux took six LUT levels.
        info_word, cnt_word = Signal(32), Signal(32)
        b_info, b_cnt, b_tail, b_err, b_out = (Signal(8, name=n) for n in (
            "b_info", "b_cnt", "b_tail", "b_err", "b_out"))
        word_sel_bits = ceil_log2(-(-max(len(info_const) // 8, len(counters_vec) // 8) // 4))
        info_padded = Cat(info_const, C(0, (32 << word_sel_bits) - len(info_const)))
        cnt_padded = Cat(counters_vec, C(0, (32 << word_sel_bits) - len(counters_vec)))
        body_byte = Signal(8)
        with m.Switch(r_kind):
            with m.Case(*((R_INFO, R_CINFO) if cached else (R_INFO,))):
                m.d.comb += body_byte.eq(b_info)
            with m.Case(*((R_COUNTERS, R_STATS) if cached else (R_COUNTERS,))):
                m.d.comb += body_byte.eq(b_cnt)
            with m.Case(R_ERROR):
                m.d.comb += body_byte.eq(b_err)
            with m.Case(R_INFER):
                m.d.comb += body_byte.eq(Mux(is_code, b_out, b_tail))
        hdr_byte = Array([C(REP_SYNC, 8), r_cmd, r_len[:8], r_len[8:]])[hpos]

        # Every receiving state takes the FIFO's byte when there is one, and drops the
        # frame with TIMEOUT when none has come for `timeout` cycles, so a lost byte
        # cannot wedge the link.
        in_frame = Signal()
        got = Signal()
        m.d.comb += got.eq(byte_valid)
        with m.If(in_frame & ~byte_valid):
            m.d.sync += idle_time.eq(idle_time + 1)
        with m.Else():
            m.d.sync += idle_time.eq(0)
        timed_out = Signal()
        m.d.sync += timed_out.eq(in_frame & ~byte_valid & (idle_time == self._timeout - 1))

        def receiving():
            m.d.comb += [in_frame.eq(1), take.eq(byte_valid)]
            with m.If(timed_out):
                fail(ErrorCode.TIMEOUT)

        with m.FSM(name="link") as fsm:
            with m.State("IDLE"):
                # Outside a frame anything but SYNC is garbage: skip it.
                m.d.comb += take.eq(byte_valid)
                with m.If(byte_valid & byte_is_sync):
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "CMD"
            with m.State("CMD"):
                receiving()
                with m.If(got):
                    m.d.sync += [cmd.eq(byte), crc.eq(_crc16_step(crc, byte))]
                    m.next = "LEN_LO"
            with m.State("LEN_LO"):
                receiving()
                with m.If(got):
                    m.d.sync += [length[:8].eq(byte), crc.eq(_crc16_step(crc, byte))]
                    m.next = "LEN_HI"
            with m.State("LEN_HI"):
                receiving()
                with m.If(got):
                    m.d.sync += [length[8:].eq(byte), crc.eq(_crc16_step(crc, byte)), idx.eq(0)]
                    m.next = "LEN_WAIT"
            with m.State("LEN_WAIT"):
                # One cycle for the length flags to be computed from the full length.
                m.d.sync += left.eq(length - 1)
                m.next = "LEN_CHECK"
            with m.State("LEN_CHECK"):
                m.d.sync += [staged.eq(0), word_byte.eq(0), arg0.eq(0)]
                with m.If(len_big):
                    # Don't wait for a body this long: the length itself is corrupt.
                    fail(ErrorCode.BAD_LENGTH)
                with m.Elif(len_zero):
                    m.next = "CRC_LO"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                receiving()
                with m.If(got):
                    m.d.sync += [crc.eq(_crc16_step(crc, byte)), idx.eq(idx + 1), left.eq(left - 1)]
                    with m.If(code_ok):
                        if bi == 1:
                            m.d.comb += [in_wr.addr.eq(idx), in_wr.data.eq(byte), in_wr.en.eq(1)]
                        else:
                            m.d.sync += code_lo.eq(byte)
                            m.d.comb += [in_wr.addr.eq(idx >> 1), in_wr.data.eq(Cat(code_lo, byte)),
                                         in_wr.en.eq(idx[0])]
                    if loadable:
                        with m.If(is_load & (idx == 0)):
                            m.d.sync += waddr[:8].eq(byte)
                        with m.If(is_load & (idx == 1)):
                            m.d.sync += waddr[8:].eq(byte)
                    if cached:
                        with m.If(idx == 0):
                            m.d.sync += arg0.eq(byte)
                    if loadable or cached:
                        with m.If(stage_ok):
                            m.d.comb += [stage_wr.addr.eq(staged), stage_wr.data.eq(byte),
                                         stage_wr.en.eq(1)]
                            m.d.sync += staged.eq(staged + 1)
                            if loadable:
                                m.d.sync += word_byte.eq(Mux(word_byte == wb - 1, 0, word_byte + 1))
                    with m.If(left == 0):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                receiving()
                with m.If(got):
                    m.d.sync += crc_lo.eq(byte)
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                receiving()
                with m.If(got):
                    m.d.sync += crc_ok.eq(Cat(crc_lo, byte) == crc)
                    m.next = "CHECK"
            with m.State("CHECK"):
                # One cycle for the decision registers below to see `crc_ok`.
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(d_err):
                    fail(d_code)
                with m.Elif(is_infer | is_load | is_cwrite):
                    m.d.comb += [inc["frames"].eq(1), exec_start.eq(1)]
                    m.next = "EXECUTE"
                with m.Else():
                    m.d.comb += [inc["frames"].eq(~is_clear), clear.eq(is_clear),
                                 cclear_go.eq(is_cclear)]
                    m.d.sync += stats_reset.eq(is_cstats & arg0[0])
                    start_reply(d_kind)
            with m.State("EXECUTE"):
                with m.If(exec_done):
                    start_reply(Mux(is_infer, R_INFER, R_LOADED))
            with m.State("REPLY"):
                m.next = "WAIT_TX"
            with m.State("WAIT_TX"):
                with m.If(tx_done):
                    # So a timeout before the next command byte reports command 0.
                    m.d.sync += [cmd.eq(0), stats_reset.eq(0)]
                    m.d.comb += stats_reset_go.eq(stats_reset)
                    m.next = "IDLE"

        # The reply kind a start_reply of the current state would give, registered every
        # cycle until the reply starts: in DISPATCH the dispatch decision, in EXECUTE the
        # command's reply, elsewhere only `fail` starts a reply.  Its enable is a state
        # decode, not the OR of every reply-starting condition (a critical path).
        # The same for the error code: only DISPATCH and LEN_CHECK fail with a code of
        # their own, the receiving states with TIMEOUT.
        with m.If(~fsm.ongoing("REPLY") & ~fsm.ongoing("WAIT_TX")):
            m.d.sync += err_code.eq(Mux(fsm.ongoing("DISPATCH"), d_code,
                                        Mux(fsm.ongoing("LEN_CHECK"), ErrorCode.BAD_LENGTH, ErrorCode.TIMEOUT)))
        with m.If(~fsm.ongoing("REPLY") & ~fsm.ongoing("WAIT_TX")):
            m.d.sync += req_kind.eq(Mux(fsm.ongoing("DISPATCH"), Mux(d_err, R_ERROR, d_kind),
                                        Mux(fsm.ongoing("EXECUTE"), Mux(is_infer, R_INFER, R_LOADED),
                                            R_ERROR)))

        # The executor: runs the engine for INFER and commits staged weights for
        # LOAD_WEIGHTS.  A separate machine so the parser's state logic stays small; it
        # starts on a pulse from DISPATCH and answers with a registered `exec_done`.
        with m.FSM(name="execute"):
            with m.State("IDLE"):
                # The run state is cleared on every idle cycle, not only on a start: no
                # register's enable then hangs off the request side's dispatch decision.
                m.d.sync += [feed_addr.eq(0), started.eq(0), out_idx.eq(0)]
                if loadable or cached:
                    m.d.sync += commit_idx.eq(0)
                if loadable:
                    m.d.sync += commit_byte.eq(0)
                with m.If(exec_start & is_infer):
                    m.next = "RUN"
                if loadable:
                    with m.Elif(exec_start & is_load):
                        m.next = "COMMIT_RD"
                if cached:
                    with m.Elif(exec_start & is_cwrite):
                        m.next = "CW_RD"
            with m.State("RUN"):
                m.d.comb += [self.eng_o.ready.eq(1), inc["busy_cycles"].eq(1)]
                with m.If(in_rd.en):
                    m.d.sync += feed_valid.eq(feed_addr < d)
                    with m.If(feed_addr < d):
                        m.d.sync += feed_addr.eq(feed_addr + 1)
                with m.If(self.eng_i.valid & self.eng_i.ready & ~started):
                    m.d.sync += [started.eq(1), cyc.eq(1)]
                with m.Elif(started & ~(self.eng_o.valid & self.eng_o.payload.last)):
                    m.d.sync += cyc.eq(cyc + 1)
                with m.If(self.eng_o.valid):
                    m.d.comb += [out_wr.addr.eq(out_idx), out_wr.data.eq(self.eng_o.payload.data),
                                 out_wr.en.eq(1)]
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(self.eng_o.payload.last):
                        m.d.comb += inc["inferences"].eq(1)
                        m.d.sync += [argmax.eq(self.eng_o.payload.argmax), exec_done.eq(1)]
                        if cached:
                            m.d.sync += [hit_flag.eq(self.eng_o.payload.cached),
                                         hit_slot.eq(self.eng_o.payload.slot)]
                        m.next = "IDLE"
            if loadable:
                # Staged words go to the engine only now that the CRC has checked out,
                # so a corrupted frame never reaches the weight memory.
                with m.State("COMMIT_RD"):
                    m.next = "COMMIT_SHIFT"
                with m.State("COMMIT_SHIFT"):
                    # Little-endian: the first byte ends up in the word's low bits.
                    m.d.sync += [word.eq(Cat(word[8:], stage_rd.data)), commit_idx.eq(commit_idx + 1)]
                    with m.If(commit_byte == wb - 1):
                        m.d.sync += commit_byte.eq(0)
                        m.next = "COMMIT_WRITE"
                    with m.Else():
                        m.d.sync += commit_byte.eq(commit_byte + 1)
                        m.next = "COMMIT_RD"
                with m.State("COMMIT_WRITE"):
                    m.d.comb += [self.w_wr.valid.eq(1), self.w_wr.payload.addr.eq(waddr),
                                 self.w_wr.payload.data.eq(word)]
                    with m.If(self.w_wr.ready):
                        m.d.sync += waddr.eq(waddr + 1)
                        with m.If(commit_idx == staged):
                            m.d.sync += exec_done.eq(1)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "COMMIT_RD"
            if cached:
                # A slot image goes to the engine byte by byte, only now that the CRC has
                # checked out, so a corrupted frame never changes an entry.  The engine
                # holds the first byte until no inference is in flight.
                cw_last = Signal()
                with m.State("CW_RD"):
                    # The staging buffer's read port answers for `commit_idx` next cycle.
                    m.d.sync += cw_last.eq(commit_idx == self._image_bytes - 1)
                    m.next = "CW_SEND"
                with m.State("CW_SEND"):
                    m.d.comb += [self.cw.valid.eq(1), self.cw.payload.data.eq(stage_rd.data),
                                 self.cw.payload.slot.eq(arg0)]
                    with m.If(self.cw.ready):
                        m.d.sync += commit_idx.eq(commit_idx + 1)
                        with m.If(cw_last):
                            m.d.sync += exec_done.eq(1)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "CW_RD"

        # Reply command byte and length per kind.  A successful reply answers the command
        # held in `cmd` (`cmd | REPLY_FLAG`); every kind but R_ERROR is one command's reply.
        kind_len = Array([C(len(info_bytes), 16), C(self.infer_reply_len, 16),
                          C(4 * len(COUNTER_NAMES), 16), C(0, 16), C(2, 16), C(0, 16),
                          C(len(self.cache_info.pack()) if cached else 0, 16), C(8, 16)])

        with m.FSM(name="reply"):
            with m.State("IDLE"):
                with m.If(req_valid):
                    m.d.sync += [r_kind.eq(req_kind),
                                 r_cmd.eq(Mux(req_kind == R_ERROR, ERROR_REPLY, cmd | REPLY_FLAG)),
                                 r_len.eq(kind_len[req_kind]), remaining.eq(kind_len[req_kind]),
                                 r_empty.eq((req_kind == R_EMPTY) | (req_kind == R_LOADED)),
                                 hpos.eq(0), tcrc.eq(0xFFFF)]
                    if cached:
                        m.d.sync += bidx.eq(Mux(req_kind == R_CINFO, cinfo_start,
                                                Mux(req_kind == R_STATS, stats_start, 0)))
                    else:
                        m.d.sync += bidx.eq(0)
                    m.next = "HDR_LOAD"
            # Reply.  Each byte is loaded into `tbyte`, folded into the CRC in the next
            # cycle, then offered to the transmitter (stable while valid).
            with m.State("HDR_LOAD"):
                m.d.sync += tbyte.eq(hdr_byte)
                m.next = "HDR_CRC"
            with m.State("HDR_CRC"):
                with m.If(hpos != 0):
                    m.d.sync += tcrc.eq(_crc16_step(tcrc, tbyte))
                m.next = "HDR_SEND"
            with m.State("HDR_SEND"):
                m.d.comb += [self.tx.payload.eq(tbyte), self.tx.valid.eq(1)]
                with m.If(self.tx.ready):
                    m.d.sync += hpos.eq(hpos + 1)
                    with m.If(hpos != 3):
                        m.next = "HDR_LOAD"
                    with m.Elif(r_empty):
                        m.d.sync += crc_hi.eq(0)
                        m.next = "CRC_LOAD"
                    with m.Else():
                        m.next = "BODY_PREP"
            with m.State("BODY_PREP"):
                # The output buffer's read port answers for `bidx` in the next cycle.
                m.d.sync += [is_code.eq(bidx < codes_len), tail_idx.eq(bidx - codes_len),
                             body_last.eq(remaining == 1),
                             info_word.eq(info_padded.word_select(bidx[2:2 + word_sel_bits], 32)),
                             cnt_word.eq(cnt_padded.word_select(bidx[2:2 + word_sel_bits], 32))]

                m.next = "BODY_SEL"
            with m.State("BODY_SEL"):
                m.d.sync += [b_info.eq(info_word.word_select(bidx[:2], 8)),
                             b_cnt.eq(cnt_word.word_select(bidx[:2], 8)),
                             b_tail.eq(tail.word_select(tail_idx, 8)),
                             b_err.eq(Mux(bidx[0], cmd, err_code)),
                             b_out.eq(out_byte)]

                m.next = "BODY_LOAD"
            with m.State("BODY_LOAD"):
                m.d.sync += tbyte.eq(body_byte)
                m.next = "BODY_CRC"
            with m.State("BODY_CRC"):
                m.d.sync += tcrc.eq(_crc16_step(tcrc, tbyte))
                m.next = "BODY_SEND"
            with m.State("BODY_SEND"):
                m.d.comb += [self.tx.payload.eq(tbyte), self.tx.valid.eq(1)]
                with m.If(self.tx.ready):
                    m.d.sync += [bidx.eq(bidx + 1), remaining.eq(remaining - 1)]
                    with m.If(body_last):
                        m.d.sync += crc_hi.eq(0)
                        m.next = "CRC_LOAD"
                    with m.Else():
                        m.next = "BODY_PREP"
            with m.State("CRC_LOAD"):
                m.d.sync += tbyte.eq(Mux(crc_hi, tcrc[8:], tcrc[:8]))
                m.next = "CRC_SEND"
            with m.State("CRC_SEND"):
                m.d.comb += [self.tx.payload.eq(tbyte), self.tx.valid.eq(1)]
                with m.If(self.tx.ready):
                    m.d.sync += crc_hi.eq(1)
                    with m.If(crc_hi):
                        m.d.comb += tx_done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "CRC_LOAD"

        m.d.sync += [self.busy.eq(~fsm.ongoing("IDLE")), self.error.eq(inc["errors"])]
        return m
