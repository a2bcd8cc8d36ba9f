"""The link's frame parser: bytes from the receive FIFO in, checked requests out.

It finds ``REQ_SYNC``, reads the header, checks the length against the command and
against the largest payload, writes the payload where it belongs (INFER's input codes
into the input buffer, INFER_BATCH's one input after the other from address 0, LOAD_WEIGHTS' and CACHE_WRITE's bytes into the staging buffer),
checks the CRC, and then dispatches the frame: a request the executor runs
(:class:`~pwlnet.hw.link.request.ExecSignature`), or a reply the serializer sends straight
away, an error reply included (:class:`~pwlnet.hw.link.request.ReplySignature`).  It
holds the frame until the reply has gone out, so the device handles one request at a
time.  Outside a frame every byte but ``REQ_SYNC`` is skipped (resynchronisation); a frame
that stops arriving mid-way is answered ``TIMEOUT``.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ...protocol import CACHE_COMMANDS, REQ_SYNC, RESERVED_COMMANDS, Command, ErrorCode, code_bytes
from .crc import CRC_INIT, crc16_step
from .request import ExecSignature, ReplyKind, ReplySignature

__all__ = ["FrameParser"]


class FrameParser(wiring.Component):
    """Frame parser and dispatcher of the host link.

    Parameters
    ----------
    input_dim : int
        Input codes of an INFER request.
    input_bits : int
        Width of one input code (``code_bytes(input_bits)`` bytes on the wire).
    max_payload : int
        Largest payload accepted; a longer length is answered ``BAD_LENGTH`` before its body.
    timeout : int
        Cycles without a byte after which a partial frame is answered ``TIMEOUT``.
    word_bytes : int
        Bytes of one weight word (0: no LOAD_WEIGHTS, which is then ``UNSUPPORTED``).
    chunk_words : int
        Most weight words one LOAD_WEIGHTS frame carries.
    weight_words : int
        Words of the weight memory (required with ``word_bytes``): a LOAD_WEIGHTS frame whose
        words would run past it is answered ``BAD_ARGUMENT`` (its address would wrap around
        onto the first words otherwise).
    cache_entries : int
        Slots of the cache (0: the cache commands are ``UNSUPPORTED``).
    image_bytes : int
        Bytes of one slot image (CACHE_WRITE's payload after the slot byte).
    max_batch : int
        Most inputs of an ``INFER_BATCH`` (the input buffer holds this many); its length
        must be 1 to ``max_batch`` whole inputs.  0: ``INFER_BATCH`` is ``UNSUPPORTED``.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the receive FIFO; taken one per two cycles at most.
    in_wr : In(WritePort.Signature(...))
        Write port of the input-code buffer (``input_dim * max(1, max_batch)`` codes).
    stage_wr : In(WritePort.Signature(...))
        Write port of the staging buffer (only with LOAD_WEIGHTS or a cache).
    exec : Out(ExecSignature(staged_bytes, max_batch))
        Requests and strobes to the executor.
    reply : Out(ReplySignature(max_batch))
        Reply requests to the serializer.
    busy : Out(1)
        High (registered) while a frame is being handled.
    error : Out(1)
        Pulse (registered) per error reply.
    """

    def __init__(self, *, input_dim, input_bits, max_payload, timeout, word_bytes=0, chunk_words=0,
                 weight_words=0, cache_entries=0, image_bytes=0, max_batch=0):
        if max_batch and cache_entries:
            raise ValueError("a cached link answers INFER_BATCH with UNSUPPORTED; max_batch must be 0")
        if word_bytes and not (isinstance(weight_words, int) and 1 <= weight_words <= 1 << 16):
            raise ValueError(f"weight_words must be an integer in 1..65536 with LOAD_WEIGHTS, not {weight_words!r}")
        self._weight_words = weight_words if word_bytes else 0
        self._d = input_dim
        self._max_batch = int(max_batch)
        self._bi = code_bytes(input_bits)
        self._max_payload = max_payload
        self._timeout = timeout
        self._loadable = bool(word_bytes)
        self._wb = max(1, word_bytes)
        self._max_chunk = chunk_words * self._wb
        self._entries = cache_entries
        self._image_bytes = image_bytes if cache_entries else 0
        # The staging buffer holds a chunk of whole words or one slot image.
        self._stage_depth = max(chunk_words * word_bytes, self._image_bytes)
        members = {
            "rx":     In(stream.Signature(8)),
            "in_wr":  In(WritePort.Signature(addr_width=ceil_log2(input_dim * max(1, self._max_batch)),
                                             shape=signed(input_bits))),
            "exec":   Out(ExecSignature(self.staged_bytes, self._max_batch)),
            "reply":  Out(ReplySignature(self._max_batch)),
            "busy":   Out(1),
            "error":  Out(1),
        }
        if self._loadable or self._entries:
            members["stage_wr"] = In(WritePort.Signature(addr_width=ceil_log2(self._stage_depth), shape=8))
        super().__init__(members)

    @property
    def stage_depth(self):
        """Bytes of the staging buffer: the longest LOAD_WEIGHTS chunk or slot image."""
        return self._stage_depth

    @property
    def staged_bytes(self):
        """Range of the count of staged bytes (``exec.staged``)."""
        return max(self._max_chunk, self._image_bytes)

    def elaborate(self, platform):
        m = Module()
        st = _ParserState(self)
        byte, byte_valid, byte_is_sync = self._input_register(m, st)
        self._decode(m, st)
        self._dispatch_decision(m, st)
        self._frame_fsm(m, st, byte, byte_valid, byte_is_sync)
        return m

    def _input_register(self, m, st):
        # One register after the FIFO: the byte and its valid flag come straight from
        # flip-flops, and the FIFO's read enable is a flip-flop too, so the state logic
        # never reaches into the FIFO.  It refills only when empty: one byte per two
        # cycles, against a UART byte every 40 or more.
        byte = Signal(8)
        byte_valid = Signal()
        byte_is_sync = Signal()   # precomputed so IDLE's test is one flip-flop
        m.d.comb += self.rx.ready.eq(~byte_valid)
        with m.If(~byte_valid):
            m.d.sync += [byte_valid.eq(self.rx.valid), byte.eq(self.rx.payload),
                         byte_is_sync.eq(self.rx.payload == REQ_SYNC)]
        with m.Elif(st.take):
            m.d.sync += byte_valid.eq(0)
        m.d.comb += self.exec.byte.eq(byte)
        return byte, byte_valid, byte_is_sync

    def _decode(self, m, st):
        # Command decode and length checks, registered while the frame is still arriving.
        d, bi, cached, loadable = self._d, self._bi, bool(self._entries), self._loadable
        mb = self._max_batch
        cmd, length, idx = st.cmd, st.length, st.idx
        m.d.sync += [
            st.is_info.eq(cmd == Command.INFO),
            st.is_infer.eq(cmd == Command.INFER),
            st.is_counters.eq(cmd == Command.COUNTERS),
            st.is_clear.eq(cmd == Command.CLEAR_COUNTERS),
            st.is_reserved.eq(((cmd >= RESERVED_COMMANDS.start) & (cmd < RESERVED_COMMANDS.stop)
                               & (((cmd > max(CACHE_COMMANDS)) | (cmd < min(CACHE_COMMANDS))) if cached else C(1)))
                              | ((cmd == Command.LOAD_WEIGHTS) if not loadable else C(0))
                              | ((cmd == Command.INFER_BATCH) if not mb else C(0))),
            st.is_batch.eq((cmd == Command.INFER_BATCH) if mb else C(0)),
            st.is_load.eq((cmd == Command.LOAD_WEIGHTS) if loadable else C(0)),
            st.len_big.eq(length > self._max_payload),
            st.len_zero.eq(length == 0),
        ]
        len_rest = length == 0
        if cached:
            m.d.sync += [
                st.is_cwrite.eq(cmd == Command.CACHE_WRITE),
                st.is_cclear.eq(cmd == Command.CACHE_CLEAR),
                st.is_cstats.eq(cmd == Command.CACHE_STATS),
                st.is_cinfo.eq(cmd == Command.CACHE_INFO),
            ]
            len_rest = Mux(st.is_cwrite, length == 1 + self._image_bytes,
                           Mux(st.is_cstats, length <= 1, length == 0))
        len_ok = Mux(st.is_infer, length == d * bi,
                     Mux(st.is_load, (length >= 2 + self._wb) & (length <= 2 + self._max_chunk)
                         & (st.word_byte == 0), len_rest))
        if mb:
            # INFER_BATCH: 1 to max_batch whole inputs (the position within an input is
            # back at 0 once the payload is in).
            len_ok = Mux(st.is_batch, ~st.len_zero & (length <= mb * d * bi) & (st.in_pos == 0), len_ok)
        m.d.sync += st.len_ok.eq(len_ok)
        # Where the next payload byte goes, registered ahead of it (bytes come at most
        # every other cycle, see the input register).
        m.d.sync += [st.code_ok.eq((st.is_infer & (idx < d * bi)) | (st.is_batch & (idx < mb * d * bi))),
                     st.stage_ok.eq((st.is_load & (idx >= 2) & (st.staged < self._max_chunk))
                                    | (st.is_cwrite & (idx >= 1) & (st.staged < self._image_bytes)))]
        # The cache commands' one-byte argument: CACHE_WRITE's slot, CACHE_STATS' flags
        # (0 when the payload is empty), and LOAD_WEIGHTS' words against the end of the
        # weight memory (first address * word bytes + the words' bytes, against the memory's
        # bytes, so no division), checked while the rest of the frame arrives.
        # A link with neither has no argument to check and no BAD_ARGUMENT logic.
        arg_bad = None
        if cached:
            arg_bad = Mux(st.is_cwrite, st.arg0 >= self._entries, st.is_cstats & (st.arg0[1:] != 0))
        if loadable:
            m.d.sync += st.load_end.eq(st.waddr * self._wb + length - 2)
            past_end = st.is_load & (st.load_end > self._weight_words * self._wb)
            arg_bad = past_end if arg_bad is None else arg_bad | past_end
        if arg_bad is not None:
            m.d.sync += st.arg_bad.eq(arg_bad)
        m.d.comb += [
            self.exec.infer.eq(st.is_infer), self.exec.load.eq(st.is_load),
            self.exec.cwrite.eq(st.is_cwrite), self.exec.arg0.eq(st.arg0),
            self.exec.staged.eq(st.staged), self.reply.cmd.eq(cmd),
        ]
        if mb:
            m.d.comb += [self.exec.batch.eq(st.is_batch), self.exec.count.eq(st.n_in),
                         self.reply.batch.eq(st.is_batch), self.reply.count.eq(st.n_in)]

    def _dispatch_decision(self, m, st):
        # The dispatch decision, registered (a priority chain of seven tests took six
        # LUT levels when evaluated in the DISPATCH state itself).
        known = st.is_info | st.is_infer | st.is_counters | st.is_clear | st.is_load | st.is_batch
        if self._entries:
            known = known | st.is_cwrite | st.is_cclear | st.is_cstats | st.is_cinfo
        if self._entries or self._loadable:
            # an argument is checked (CACHE_WRITE's slot, CACHE_STATS' flags, LOAD_WEIGHTS' range)
            bad = ~st.crc_ok | st.is_reserved | ~known | ~st.len_ok | st.arg_bad
            length_code = Mux(~st.len_ok, ErrorCode.BAD_LENGTH, ErrorCode.BAD_ARGUMENT)
        else:
            bad = ~st.crc_ok | st.is_reserved | ~known | ~st.len_ok
            length_code = ErrorCode.BAD_LENGTH
        if self._entries:
            m.d.sync += [
                st.d_err.eq(bad),
                st.d_code.eq(Mux(~st.crc_ok, ErrorCode.BAD_CRC,
                                 Mux(st.is_reserved, ErrorCode.UNSUPPORTED,
                                     Mux(~known, ErrorCode.UNKNOWN_COMMAND, length_code)))),
                st.d_kind.eq(Mux(st.is_info, ReplyKind.INFO,
                                 Mux(st.is_counters, ReplyKind.COUNTERS,
                                     Mux(st.is_cinfo, ReplyKind.CACHE_INFO,
                                         Mux(st.is_cstats, ReplyKind.CACHE_STATS, ReplyKind.EMPTY))))),
            ]
        else:
            m.d.sync += [
                st.d_err.eq(bad),
                st.d_code.eq(Mux(~st.crc_ok, ErrorCode.BAD_CRC,
                                 Mux(st.is_reserved, ErrorCode.UNSUPPORTED,
                                     Mux(~known, ErrorCode.UNKNOWN_COMMAND, length_code)))),
                st.d_kind.eq(Mux(st.is_info, ReplyKind.INFO, Mux(st.is_counters, ReplyKind.COUNTERS,
                                                                 ReplyKind.EMPTY))),
            ]

    def _frame_fsm(self, m, st, byte, byte_valid, byte_is_sync):
        ex, rp = self.exec, self.reply
        # `reply.valid` is a register, high in the cycle the machine is in REPLY, so the
        # serializer's state logic does not decode this machine's state.
        m.d.sync += rp.valid.eq(0)

        def start_reply():
            # The reply's kind is what `reply.kind` already holds in this state (see
            # below the FSM).
            m.d.sync += rp.valid.eq(1)
            m.next = "REPLY"

        def fail():
            # The code is what `reply.err_code` already holds in this state (see below).
            m.d.comb += ex.count_error.eq(1)
            start_reply()

        # Every receiving state takes the byte when there is one, and drops the frame
        # with TIMEOUT when none has come for `timeout` cycles, so a lost byte cannot
        # wedge the link.
        in_frame = Signal()
        idle_time = Signal(range(self._timeout + 1))
        with m.If(in_frame & ~byte_valid):
            m.d.sync += idle_time.eq(idle_time + 1)
        with m.Else():
            m.d.sync += idle_time.eq(0)
        timed_out = Signal()
        m.d.sync += timed_out.eq(in_frame & ~byte_valid & (idle_time == self._timeout - 1))

        def receiving():
            m.d.comb += [in_frame.eq(1), st.take.eq(byte_valid)]
            with m.If(timed_out):
                fail()

        # A byte taken into the CRC is folded in one cycle later, from a copy of it kept
        # beside the CRC register (the byte register fans out across the link).  Bytes
        # are taken at least two cycles apart (the input register refills only when
        # empty), so each fold is done before the next byte's.  IDLE's restart (below)
        # overrides it.
        m.d.sync += st.crc_upd.eq(0)
        with m.If(st.crc_upd):
            m.d.sync += st.crc.eq(crc16_step(st.crc, st.crc_in))
        with m.FSM(name="link") as fsm:
            self._header_states(m, st, byte, byte_valid, byte_is_sync, receiving)
            with m.State("LEN_CHECK"):
                m.d.sync += [st.staged.eq(0), st.word_byte.eq(0), st.arg0.eq(0), st.in_pos.eq(0), st.n_in.eq(0)]
                with m.If(st.len_big):
                    # Don't wait for a body this long: the length itself is corrupt.
                    fail()
                with m.Elif(st.len_zero):
                    m.next = "CRC_LO"
                with m.Else():
                    m.next = "PAYLOAD"
            self._payload_states(m, st, byte, byte_valid, receiving)
            with m.State("DISPATCH"):
                with m.If(st.d_err):
                    fail()
                with m.Elif(st.is_infer | st.is_load | st.is_cwrite | st.is_batch):
                    m.d.comb += [ex.count_frame.eq(1), ex.start.eq(1)]
                    m.next = "EXECUTE"
                with m.Else():
                    m.d.comb += [ex.count_frame.eq(~st.is_clear), ex.clear_counters.eq(st.is_clear),
                                 ex.cache_clear.eq(st.is_cclear)]
                    m.d.sync += st.stats_reset.eq(st.is_cstats & st.arg0[0])
                    start_reply()
            with m.State("EXECUTE"):
                with m.If(ex.done):
                    start_reply()
            with m.State("REPLY"):
                m.next = "WAIT_TX"
            with m.State("WAIT_TX"):
                with m.If(rp.done):
                    # So a timeout before the next command byte reports command 0.
                    m.d.sync += [st.cmd.eq(0), st.stats_reset.eq(0)]
                    # CACHE_STATS' reply reads the engine's counters as it goes out; they
                    # are zeroed only now, so no count falls in between.
                    m.d.comb += ex.clear_stats.eq(st.stats_reset)
                    m.next = "IDLE"

        # The reply kind a reply started in the current state would have, registered every
        # cycle until the reply starts: in DISPATCH the dispatch decision, in EXECUTE the
        # command's reply, elsewhere only `fail` starts a reply.  Its enable is a state
        # decode, not the OR of every reply-starting condition (a critical path).  The
        # same for the error code: only DISPATCH and LEN_CHECK fail with a code of their
        # own, the receiving states with TIMEOUT.
        with m.If(~fsm.ongoing("REPLY") & ~fsm.ongoing("WAIT_TX")):
            m.d.sync += rp.err_code.eq(Mux(fsm.ongoing("DISPATCH"), st.d_code,
                                           Mux(fsm.ongoing("LEN_CHECK"), ErrorCode.BAD_LENGTH,
                                               ErrorCode.TIMEOUT)))
        with m.If(~fsm.ongoing("REPLY") & ~fsm.ongoing("WAIT_TX")):
            m.d.sync += rp.kind.eq(Mux(fsm.ongoing("DISPATCH"), Mux(st.d_err, ReplyKind.ERROR, st.d_kind),
                                       Mux(fsm.ongoing("EXECUTE"),
                                           Mux(st.is_infer | st.is_batch, ReplyKind.INFER, ReplyKind.LOADED),
                                           ReplyKind.ERROR)))
        m.d.sync += [self.busy.eq(~fsm.ongoing("IDLE")), self.error.eq(ex.count_error)]

    def _header_states(self, m, st, byte, byte_valid, byte_is_sync, receiving):
        cmd, length, crc = st.cmd, st.length, st.crc
        with m.State("IDLE"):
            # Outside a frame anything but SYNC is garbage: skip it.
            m.d.comb += st.take.eq(byte_valid)
            with m.If(byte_valid & byte_is_sync):
                m.d.sync += crc.eq(CRC_INIT)
                m.next = "CMD"
        with m.State("CMD"):
            receiving()
            with m.If(byte_valid):
                m.d.sync += [cmd.eq(byte), *st.fold(byte)]
                m.next = "LEN_LO"
        with m.State("LEN_LO"):
            receiving()
            with m.If(byte_valid):
                m.d.sync += [length[:8].eq(byte), *st.fold(byte)]
                m.next = "LEN_HI"
        with m.State("LEN_HI"):
            receiving()
            with m.If(byte_valid):
                m.d.sync += [length[8:].eq(byte), *st.fold(byte), st.idx.eq(0)]
                m.next = "LEN_WAIT"
        with m.State("LEN_WAIT"):
            # One cycle for the length flags to be computed from the full length.
            m.d.sync += st.left.eq(length - 1)
            m.next = "LEN_CHECK"

    def _payload_states(self, m, st, byte, byte_valid, receiving):
        idx, crc, cached = st.idx, st.crc, bool(self._entries)
        with m.State("PAYLOAD"):
            receiving()
            with m.If(byte_valid):
                m.d.sync += [*st.fold(byte), idx.eq(idx + 1), st.left.eq(st.left - 1)]
                with m.If(st.code_ok):
                    in_wr = self.in_wr
                    if self._bi == 1:
                        m.d.comb += [in_wr.addr.eq(idx), in_wr.data.eq(byte), in_wr.en.eq(1)]
                    else:
                        m.d.sync += st.code_lo.eq(byte)
                        m.d.comb += [in_wr.addr.eq(idx >> 1), in_wr.data.eq(Cat(st.code_lo, byte)),
                                     in_wr.en.eq(idx[0])]
                if self._loadable:
                    # The executor holds the first word's address (it counts it up); the
                    # parser keeps a copy for the range check.
                    with m.If(st.is_load & (idx == 0)):
                        m.d.comb += self.exec.addr_we[0].eq(1)
                        m.d.sync += st.waddr[:8].eq(byte)
                    with m.If(st.is_load & (idx == 1)):
                        m.d.comb += self.exec.addr_we[1].eq(1)
                        m.d.sync += st.waddr[8:].eq(byte)
                if cached:
                    with m.If(idx == 0):
                        m.d.sync += st.arg0.eq(byte)
                if self._max_batch:
                    # INFER_BATCH: whole inputs received, and the position in the current one.
                    with m.If(st.is_batch):
                        with m.If(st.in_pos == self._d * self._bi - 1):
                            m.d.sync += [st.in_pos.eq(0), st.n_in.eq(st.n_in + 1)]
                        with m.Else():
                            m.d.sync += st.in_pos.eq(st.in_pos + 1)
                if self._loadable or cached:
                    with m.If(st.stage_ok):
                        m.d.comb += [self.stage_wr.addr.eq(st.staged), self.stage_wr.data.eq(byte),
                                     self.stage_wr.en.eq(1)]
                        m.d.sync += st.staged.eq(st.staged + 1)
                        if self._loadable:
                            m.d.sync += st.word_byte.eq(Mux(st.word_byte == self._wb - 1, 0,
                                                            st.word_byte + 1))
                with m.If(st.left == 0):
                    m.next = "CRC_LO"
        with m.State("CRC_LO"):
            receiving()
            with m.If(byte_valid):
                m.d.sync += st.crc_lo.eq(byte)
                m.next = "CRC_HI"
        with m.State("CRC_HI"):
            receiving()
            with m.If(byte_valid):
                m.d.sync += st.crc_hi.eq(byte)
                m.next = "CRC_CMP"
        with m.State("CRC_CMP"):
            # The compare from registers only (the received CRC and the computed one).
            m.d.sync += st.crc_ok.eq(Cat(st.crc_lo, st.crc_hi) == crc)
            m.next = "CHECK"
        with m.State("CHECK"):
            # One cycle for the decision registers to see `crc_ok`.
            m.next = "DISPATCH"


class _ParserState:
    """The parser's registers, shared by its elaboration steps."""

    def __init__(self, parser):
        self.cmd = Signal(8, name="cmd")
        self.length = Signal(16, name="length")
        # Payload position: a frame longer than max_payload is refused before its body.
        self.idx = Signal(range(parser._max_payload + 1), name="idx")
        self.left = Signal(range(parser._max_payload + 1), name="left")   # body bytes to come, minus one
        self.crc = Signal(16, name="crc")
        self.crc_lo = Signal(8, name="crc_lo")
        self.crc_hi = Signal(8, name="crc_hi")
        self.crc_in = Signal(8, name="crc_in")     # the byte being folded into `crc`
        self.crc_upd = Signal(name="crc_upd")
        self.code_lo = Signal(8, name="code_lo")
        self.take = Signal(name="take")
        for n in ("is_info", "is_infer", "is_counters", "is_clear", "is_reserved", "is_load", "is_batch",
                  # The cache's commands (constant 0 without a cache).
                  "is_cwrite", "is_cclear", "is_cstats", "is_cinfo",
                  "len_ok", "len_big", "len_zero", "crc_ok", "code_ok", "stage_ok", "arg_bad",
                  "d_err", "stats_reset"):
            setattr(self, n, Signal(name=n))
        self.d_code = Signal(8, name="d_code")
        self.d_kind = Signal(3, name="d_kind")
        self.arg0 = Signal(8, name="arg0")
        self.word_byte = Signal(range(parser._wb), name="word_byte")   # byte position in the word being staged
        self.staged = Signal(range(parser.staged_bytes + 1), name="staged")   # bytes staged by this frame
        # INFER_BATCH: position in the input being received, whole inputs received.
        self.in_pos = Signal(range(parser._d * parser._bi), name="in_pos")
        self.n_in = Signal(range(parser._max_payload // (parser._d * parser._bi) + 1), name="n_in")
        # LOAD_WEIGHTS: the first word's address, and the byte just past its last word
        # (address * word bytes + payload - 2).
        self.waddr = Signal(16, name="waddr")
        self.load_end = Signal(range((1 << 16) * parser._wb + parser._max_payload + 1), name="load_end")

    def fold(self, byte):
        """The statements that fold ``byte`` into the CRC (one cycle later)."""
        return [self.crc_in.eq(byte), self.crc_upd.eq(1)]
