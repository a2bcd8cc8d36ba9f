"""The link's reply serializer: a reply request in, the reply frame's bytes out.

A reply is ``REP_SYNC``, the command (``cmd | REPLY_FLAG``, or ``ERROR_REPLY``), the
length, the body and the CRC-16 over all but ``SYNC`` -- the bytes
:func:`pwlnet.protocol.encode_frame` builds with ``sync=REP_SYNC``.  Each byte is loaded
into a register, folded into the CRC in the next cycle, then offered to the transmitter
(stable while valid); every selector of the body comes straight from a register, which
costs nothing next to a UART byte time.

An ``INFER_BATCH`` reply (an ``INFER`` reply with ``batch`` high) is ``count`` records of
output codes and u16 argmax, read from the output and argmax buffers record by record,
then the batch's u32 cycles (:func:`pwlnet.protocol.batch_reply_len`).
"""

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ...protocol import COUNTER_NAMES, ERROR_REPLY, REP_SYNC, REPLY_FLAG, code_bytes
from .crc import CRC_INIT, crc16_step
from .request import ReplyKind, ReplySignature

__all__ = ["ReplySerializer", "infer_reply_len"]


def infer_reply_len(info, cached):
    """Payload bytes of an INFER reply for a link of :class:`~pwlnet.protocol.LinkInfo`
    ``info``: output codes, u16 argmax, u32 cycles (and u8 cached, u8 slot with a cache)."""
    return info.output_dim * code_bytes(info.output_bits) + (8 if cached else 6)


class ReplySerializer(wiring.Component):
    """Sends the link's replies.

    Parameters
    ----------
    info : LinkInfo
        The INFO reply (a constant of the bitstream).
    cache_info : CacheInfo or None
        The CACHE_INFO reply (None: no cache, and no ``hits``, ``misses``, ``hit``, ``slot``).
    slot_bits : int
        Width of ``slot`` (with a cache).
    max_batch : int
        Most inputs of an ``INFER_BATCH`` (0: no batches; no ``am_rd``).

    Attributes
    ----------
    req : In(ReplySignature())
        Reply requests from the parser.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    out_rd : In(ReadPort.Signature(...))
        Read port of the output-code buffer (registered data; ``max(1, max_batch)``
        inferences' codes).
    am_rd : In(ReadPort.Signature(...))
        Read port of the argmax buffer, u16 per inference of a batch (registered data; only
        with ``max_batch``).
    counters : In(32 * len(COUNTER_NAMES))
        The link's counters (COUNTERS' body).
    argmax : In(16), cycles : In(32)
        The tail of INFER's body (``cycles`` also ends INFER_BATCH's).
    hit : In(1), slot : In(slot_bits)
        The cached engine's tail of INFER's body (only with a cache).
    hits, misses : In(32)
        The cached engine's counters (CACHE_STATS' body; only with a cache).
    """

    def __init__(self, info, cache_info=None, *, slot_bits=1, max_batch=0):
        if max_batch and cache_info is not None:
            raise ValueError("a cached link answers INFER_BATCH with UNSUPPORTED; max_batch must be 0")
        self._info = info
        self._max_batch = int(max_batch)
        nb = max(1, self._max_batch)
        self._cache_info = cache_info
        out_bits = info.output_bits
        members = {
            "req":      In(ReplySignature(self._max_batch)),
            "tx":       Out(stream.Signature(8)),
            "out_rd":   In(ReadPort.Signature(addr_width=ceil_log2(info.output_dim * nb), shape=signed(out_bits))),
            "counters": In(32 * len(COUNTER_NAMES)),
            "argmax":   In(16),
            "cycles":   In(32),
        }
        if self._max_batch:
            members["am_rd"] = In(ReadPort.Signature(addr_width=ceil_log2(self._max_batch), shape=16))
        if cache_info is not None:
            members.update({"hit": In(1), "slot": In(slot_bits), "hits": In(32), "misses": In(32)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        st = _ReplyState(self._info, self._max_batch)
        body_byte, hdr_byte, bodies = self._bodies(m, st)
        cinfo_start, stats_start = bodies
        cached = self._cache_info is not None
        info_len = len(self._info.pack())
        R = ReplyKind
        # Reply length per kind.
        kind_len = Array([C(info_len, 16), C(infer_reply_len(self._info, cached), 16),
                          C(4 * len(COUNTER_NAMES), 16), C(0, 16), C(2, 16), C(0, 16),
                          C(len(self._cache_info.pack()) if cached else 0, 16), C(8, 16)])
        req, tx = self.req, self.tx
        with m.FSM(name="reply"):
            with m.State("IDLE"):
                with m.If(req.valid):
                    # A successful reply answers the command held in `cmd`.
                    m.d.sync += [st.r_kind.eq(req.kind),
                                 st.r_cmd.eq(Mux(req.kind == R.ERROR, ERROR_REPLY, req.cmd | REPLY_FLAG)),
                                 st.r_empty.eq((req.kind == R.EMPTY) | (req.kind == R.LOADED)),
                                 st.hpos.eq(0), st.tcrc.eq(CRC_INIT)]
                    if self._max_batch:
                        # INFER_BATCH: `count` records of codes and argmax, then the cycles.
                        batch = req.batch & (req.kind == R.INFER)
                        blen = Mux(batch, req.count * st.rec_len + 4, kind_len[req.kind])
                        m.d.sync += [st.r_batch.eq(batch), st.r_len.eq(blen), st.remaining.eq(blen),
                                     st.rec_pos.eq(0), st.rec.eq(0), st.code_base.eq(0)]
                    else:
                        m.d.sync += [st.r_len.eq(kind_len[req.kind]), st.remaining.eq(kind_len[req.kind])]
                    if cached:
                        # The cache's replies start their byte index after INFO's bytes
                        # and after the counters (see _bodies).
                        m.d.sync += st.bidx.eq(Mux(req.kind == R.CACHE_INFO, cinfo_start,
                                                   Mux(req.kind == R.CACHE_STATS, stats_start, 0)))
                    else:
                        m.d.sync += st.bidx.eq(0)
                    m.next = "HDR_LOAD"
            with m.State("HDR_LOAD"):
                m.d.sync += st.tbyte.eq(hdr_byte)
                m.next = "HDR_CRC"
            with m.State("HDR_CRC"):
                with m.If(st.hpos != 0):    # SYNC is not covered by the CRC
                    m.d.sync += st.tcrc.eq(crc16_step(st.tcrc, st.tbyte))
                m.next = "HDR_SEND"
            with m.State("HDR_SEND"):
                m.d.comb += [tx.payload.eq(st.tbyte), tx.valid.eq(1)]
                with m.If(tx.ready):
                    m.d.sync += st.hpos.eq(st.hpos + 1)
                    with m.If(st.hpos != 3):
                        m.next = "HDR_LOAD"
                    with m.Elif(st.r_empty):
                        m.d.sync += st.crc_hi.eq(0)
                        m.next = "CRC_LOAD"
                    with m.Else():
                        m.next = "BODY_PREP"
            self._body_states(m, st, body_byte)
            with m.State("CRC_LOAD"):
                m.d.sync += st.tbyte.eq(Mux(st.crc_hi, st.tcrc[8:], st.tcrc[:8]))
                m.next = "CRC_SEND"
            with m.State("CRC_SEND"):
                m.d.comb += [tx.payload.eq(st.tbyte), tx.valid.eq(1)]
                with m.If(tx.ready):
                    m.d.sync += st.crc_hi.eq(1)
                    with m.If(st.crc_hi):
                        m.d.comb += req.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "CRC_LOAD"
        return m

    def _bodies(self, m, st):
        """The body byte of every reply kind, from registers; returns the byte, the header
        byte and where the cache's replies start their byte index."""
        cached = self._cache_info is not None
        n_out, bo = self._info.output_dim, code_bytes(self._info.output_bits)
        bidx = st.bidx
        info_bytes = self._info.pack()
        info_const = C(int.from_bytes(info_bytes, "little"), 8 * len(info_bytes))
        counters_vec = self.counters
        # The cache's replies share the INFO and COUNTERS byte paths: CACHE_INFO's bytes
        # follow INFO's in one constant, the engine's hits and misses follow the counters,
        # and those replies start their byte index there.
        info_words = -(-len(info_bytes) // 4)
        cinfo_start, stats_start = 4 * info_words, 4 * len(COUNTER_NAMES)
        if cached:
            cinfo_bytes = self._cache_info.pack()
            info_const = Cat(info_const, C(0, 32 * info_words - len(info_const)),
                             C(int.from_bytes(cinfo_bytes, "little"), 8 * len(cinfo_bytes)))
            counters_vec = Cat(counters_vec, self.hits, self.misses)
            tail = Cat(self.argmax, self.cycles, self.hit, C(0, 7), self.slot, C(0, 8 - len(self.slot)))
        else:
            tail = Cat(self.argmax, self.cycles)
        st.codes_len = n_out * bo
        st.rec_len = st.codes_len + 2
        out_rd = self.out_rd
        # With batches the codes are addressed by the position in the record, from the
        # record's first code (a single INFER is one record at 0, so the same bytes).
        pos = st.rec_pos if self._max_batch else bidx
        base = st.code_base if self._max_batch else 0
        if bo == 1 and self._info.output_bits < 8:
            # A code narrower than 8 bits goes out sign-extended to its byte.
            narrow = Signal(signed(8))
            m.d.comb += [out_rd.addr.eq(base + pos), narrow.eq(out_rd.data), st.out_byte.eq(narrow.as_unsigned())]
        elif bo == 1:
            m.d.comb += [out_rd.addr.eq(base + pos), st.out_byte.eq(out_rd.data.as_unsigned())]
        else:
            # The high byte of a code narrower than 16 bits is its sign extension.
            wide = Signal(signed(16))
            m.d.comb += [out_rd.addr.eq(base + (pos >> 1)), wide.eq(out_rd.data),
                         st.out_byte.eq(Mux(pos[0], wide[8:], wide[:8]))]
        if self._max_batch:
            # A batch record's tail is its argmax; after the last record come the cycles.
            m.d.comb += [self.am_rd.addr.eq(st.rec), self.am_rd.en.eq(1)]
            tail = Mux(st.r_batch, Cat(self.am_rd.data, self.cycles), tail)
        # Two register stages narrow each source to one byte (word, then byte within the
        # word) before the kind is chosen; one big mux took six LUT levels.
        st.word_sel_bits = ceil_log2(-(-max(len(info_const) // 8, len(counters_vec) // 8) // 4))
        st.info_padded = Cat(info_const, C(0, (32 << st.word_sel_bits) - len(info_const)))
        st.cnt_padded = Cat(counters_vec, C(0, (32 << st.word_sel_bits) - len(counters_vec)))
        st.tail = tail
        body_byte = Signal(8)
        R = ReplyKind
        with m.Switch(st.r_kind):
            with m.Case(*((R.INFO, R.CACHE_INFO) if cached else (R.INFO,))):
                m.d.comb += body_byte.eq(st.b_info)
            with m.Case(*((R.COUNTERS, R.CACHE_STATS) if cached else (R.COUNTERS,))):
                m.d.comb += body_byte.eq(st.b_cnt)
            with m.Case(R.ERROR):
                m.d.comb += body_byte.eq(st.b_err)
            with m.Case(R.INFER):
                m.d.comb += body_byte.eq(Mux(st.is_code, st.b_out, st.b_tail))
        hdr_byte = Array([C(REP_SYNC, 8), st.r_cmd, st.r_len[:8], st.r_len[8:]])[st.hpos]
        return body_byte, hdr_byte, (cinfo_start, stats_start)

    def _body_states(self, m, st, body_byte):
        bidx, tx = st.bidx, self.tx
        pos = st.rec_pos if self._max_batch else bidx
        with m.State("BODY_PREP"):
            # The output buffer's read port answers for `bidx` in the next cycle.
            m.d.sync += [st.is_code.eq(pos < st.codes_len), st.tail_idx.eq(pos - st.codes_len),
                         st.body_last.eq(st.remaining == 1),
                         st.info_word.eq(st.info_padded.word_select(bidx[2:2 + st.word_sel_bits], 32)),
                         st.cnt_word.eq(st.cnt_padded.word_select(bidx[2:2 + st.word_sel_bits], 32))]
            m.next = "BODY_SEL"
        with m.State("BODY_SEL"):
            m.d.sync += [st.b_info.eq(st.info_word.word_select(bidx[:2], 8)),
                         st.b_cnt.eq(st.cnt_word.word_select(bidx[:2], 8)),
                         st.b_tail.eq(st.tail.word_select(st.tail_idx, 8)),
                         st.b_err.eq(Mux(bidx[0], self.req.cmd, self.req.err_code)),
                         st.b_out.eq(st.out_byte)]
            m.next = "BODY_LOAD"
        with m.State("BODY_LOAD"):
            m.d.sync += st.tbyte.eq(body_byte)
            m.next = "BODY_CRC"
        with m.State("BODY_CRC"):
            m.d.sync += st.tcrc.eq(crc16_step(st.tcrc, st.tbyte))
            m.next = "BODY_SEND"
        with m.State("BODY_SEND"):
            m.d.comb += [tx.payload.eq(st.tbyte), tx.valid.eq(1)]
            with m.If(tx.ready):
                m.d.sync += [bidx.eq(bidx + 1), st.remaining.eq(st.remaining - 1)]
                if self._max_batch:
                    # The next record of a batch starts at position 0 and the next codes;
                    # past the last record the position runs on into the cycles.
                    with m.If(st.r_batch & (st.rec_pos == st.rec_len - 1) & (st.rec != self.req.count - 1)):
                        m.d.sync += [st.rec_pos.eq(0), st.rec.eq(st.rec + 1),
                                     st.code_base.eq(st.code_base + self._info.output_dim)]
                    with m.Else():
                        m.d.sync += st.rec_pos.eq(st.rec_pos + 1)
                with m.If(st.body_last):
                    m.d.sync += st.crc_hi.eq(0)
                    m.next = "CRC_LOAD"
                with m.Else():
                    m.next = "BODY_PREP"


class _ReplyState:
    """The serializer's registers, shared by its elaboration steps."""

    def __init__(self, info, max_batch):
        nb, rec_len = max(1, max_batch), info.output_dim * code_bytes(info.output_bits) + 2
        self.r_kind = Signal(3, name="r_kind")
        self.r_cmd = Signal(8, name="r_cmd")
        self.r_len = Signal(16, name="r_len")
        self.r_empty = Signal(name="r_empty")       # EMPTY or LOADED: no body
        self.hpos = Signal(2, name="hpos")          # header byte: SYNC, CMD, LEN_LO, LEN_HI
        self.bidx = Signal(16, name="bidx")         # body byte index
        self.remaining = Signal(16, name="remaining")   # body bytes still to send
        self.body_last = Signal(name="body_last")
        self.is_code = Signal(name="is_code")
        self.tail_idx = Signal(3, name="tail_idx")
        # INFER_BATCH: a batch reply, the byte position in the record, the record, and
        # the output buffer address of the record's first code.
        self.r_batch = Signal(name="r_batch")
        self.rec_pos = Signal(range(rec_len + 8), name="rec_pos")
        self.rec = Signal(range(nb + 1), name="rec")
        self.code_base = Signal(range(info.output_dim * nb + 1), name="code_base")
        self.tcrc = Signal(16, name="tcrc")
        self.tbyte = Signal(8, name="tbyte")
        self.crc_hi = Signal(name="crc_hi")
        self.out_byte = Signal(8, name="out_byte")
        self.info_word = Signal(32, name="info_word")
        self.cnt_word = Signal(32, name="cnt_word")
        for n in ("b_info", "b_cnt", "b_tail", "b_err", "b_out"):
            setattr(self, n, Signal(8, name=n))
