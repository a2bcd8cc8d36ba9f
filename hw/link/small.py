"""The small host link: the protocol of a build without batches, cache or run-time loaded
weights, in one byte-serial state machine, for devices the composed
:class:`~pwlnet.hw.link.Link` does not fit (the iCEstick's iCE40HX1K has 1280 logic cells,
and the composed link alone takes about 950 LUTs).

On the wire it is the :class:`~pwlnet.hw.link.Link` built with ``max_batch=0`` and no cache:
INFO, INFER, COUNTERS and CLEAR_COUNTERS work; LOAD_WEIGHTS, INFER_BATCH and 0x10-0x1F are
``UNSUPPORTED``; the same checks in the same order, the same resynchronisation, ``BAD_LENGTH``
at once for a ``LEN`` above ``max_payload``, ``TIMEOUT`` for a frame that stops arriving, and
the same 256-byte receive FIFO (``docs/protocol.md``).  The link fuzzer checks it against
the same reference (:mod:`pwlnet.sim.link_fuzz`, build ``small``).  What it saves:

* **the counters live in block RAM** (20 bytes beside the INFO reply's bytes in one EBR):
  each event is a read-modify-write of its counter, one byte per two cycles, made between
  frames; the COUNTERS and INFO bodies are read out of the same memory;
* **busy cycles** are the sum of the INFER replies' ``cycles`` (added once per inference),
  where the composed link counts its executor's cycles (a few more per inference);
* one CRC register serves the request and then the reply, since the device handles one
  request at a time;
* the reply's bytes come from a handful of sources (constants, the command byte, the two
  memories, argmax, the cycle count, the CRC) through one multiplexer.

UART errors (``uart_error`` pulses) wait in a counter of :data:`PENDING_BITS` bits while a
reply goes out and are added between frames; more than ``2**PENDING_BITS - 1`` of them
during one frame would be lost (one error per received byte at most, so it takes a flood
of about 255 bad bytes during one reply).
"""

import math

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...protocol import (GATEWARE_VERSION, PROTOCOL_VERSION, REP_SYNC, REPLY_FLAG, ERROR_REPLY, REQ_SYNC,
                         RX_FIFO_BYTES, COUNTER_NAMES, Command, ErrorCode, LinkInfo, code_bytes,
                         model_fingerprint)
from ..engine import output_layout
from ..memory import NO_RW_CHECK, unchecked_read_port
from .crc import CRC_INIT, crc16_step
from .serializer import infer_reply_len

__all__ = ["SmallLink", "PENDING_BITS"]

#: Width of the counter of UART errors waiting to be counted.
PENDING_BITS = 8

# Reply kinds (which body the sender reads).
_INFO, _COUNTERS, _INFER, _EMPTY, _ERROR = range(5)
# Where the INFO reply's bytes start in the counter memory (the counters are bytes 0-19).
_INFO_BASE = 32


class SmallLink(wiring.Component):
    """The host link in few logic cells (see the module docstring).

    Parameters
    ----------
    model : CompiledModel or BinaryModel
        The model the engine computes (widths and dimensions of the payloads).
    lanes, clk_freq, baud, cycles_per_inference :
        Reported by INFO, as :class:`~pwlnet.hw.link.Link`'s.
    timeout : int
        Clock cycles without a byte after which a partial frame is answered ``TIMEOUT``.
    fifo_depth : int
        Receive FIFO bytes.

    Attributes
    ----------
    rx, tx, eng_i, eng_o, uart_error, busy, error :
        As :class:`~pwlnet.hw.link.Link`'s (no cache, no weight port).
    info : LinkInfo
    cache_info : None
    """

    def __init__(self, model, *, lanes, clk_freq, baud, cycles_per_inference=0, timeout,
                 fifo_depth=RX_FIFO_BYTES):
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise ValueError(f"timeout must be a positive number of cycles, not {timeout!r}")
        self._model = model
        self._timeout = timeout
        self._fifo_depth = fifo_depth
        self._in_bytes = code_bytes(model.input_bits)
        self._out_bytes = code_bytes(model.layers[-1].out_bits)
        max_payload = max(model.input_dim * self._in_bytes, 64)
        self.info = LinkInfo(
            protocol=PROTOCOL_VERSION, version=GATEWARE_VERSION,
            input_dim=model.input_dim, input_bits=model.input_bits,
            output_dim=model.output_dim, output_bits=model.layers[-1].out_bits,
            n_layers=len(model.layers), lanes=lanes, clk_hz=int(round(clk_freq)), baud=int(baud),
            cycles_per_inference=math.ceil(cycles_per_inference), model_crc=model_fingerprint(model),
            max_payload=max_payload, weight_words=0, weight_word_bytes=0)
        self.cache_info = None
        super().__init__({
            "rx":         In(stream.Signature(8)),
            "tx":         Out(stream.Signature(8)),
            "eng_i":      Out(stream.Signature(signed(model.input_bits))),
            "eng_o":      In(stream.Signature(output_layout(model))),
            "uart_error": In(1),
            "busy":       Out(1),
            "error":      Out(1),
        })

    @property
    def batch(self):
        """Most inputs of an ``INFER_BATCH``: 0 (answered ``UNSUPPORTED``)."""
        return 0

    @property
    def infer_len(self):
        """Payload bytes of an INFER request."""
        return self._model.input_dim * self._in_bytes

    @property
    def infer_reply_len(self):
        """Payload bytes of an INFER reply: output codes, u16 argmax, u32 cycles."""
        return infer_reply_len(self.info, False)

    def elaborate(self, platform):
        m = Module()
        model = self._model
        d, bi, n_out, bo = model.input_dim, self._in_bytes, model.output_dim, self._out_bytes
        info_bytes = self.info.pack()
        max_payload = self.info.max_payload
        body_len = {_INFO: len(info_bytes), _COUNTERS: 4 * len(COUNTER_NAMES),
                    _INFER: self.infer_reply_len, _EMPTY: 0, _ERROR: 2}
        no_rw = {**NO_RW_CHECK, "ram_style": "block"}

        # ---- memories.  Each is written in one phase and read in another (input codes:
        # payload, then the run; outputs: the run, then the reply; counters: between frames,
        # then the reply), so no read of an address being written is ever used.
        m.submodules.in_mem = in_mem = Memory(shape=signed(model.input_bits), depth=d, init=[], attrs=no_rw)
        in_wr = in_mem.write_port()
        in_rd = unchecked_read_port(m, in_mem, "in_rd")
        m.submodules.out_mem = out_mem = Memory(shape=signed(model.layers[-1].out_bits), depth=n_out,
                                                init=[], attrs=no_rw)
        out_wr = out_mem.write_port()
        out_rd = unchecked_read_port(m, out_mem, "out_rd")
        # Counters (byte 4k + j is byte j of counter k, little-endian) and the INFO body.
        m.submodules.cnt_mem = cnt_mem = Memory(shape=8, depth=_INFO_BASE + len(info_bytes),
                                                init=[0] * _INFO_BASE + list(info_bytes), attrs=no_rw)
        cnt_wr = cnt_mem.write_port()
        cnt_rd = unchecked_read_port(m, cnt_mem, "cnt_rd")

        # ---- receive FIFO: block RAM and two pointers; its output is the read port's data
        # register (`byte`) and `have`.  It holds `fifo_depth - 1` bytes and the output one.
        # The port reads the head only when the FIFO is not empty, so never the address
        # being written.
        depth = self._fifo_depth
        m.submodules.rx_mem = rx_mem = Memory(shape=8, depth=depth, init=[], attrs=no_rw)
        rx_wr = rx_mem.write_port()
        rx_rd = unchecked_read_port(m, rx_mem, "rx_rd")
        wp, rp = Signal(range(depth)), Signal(range(depth))
        wp_next = Signal.like(wp)
        m.d.comb += wp_next.eq(wp + 1 if depth & (depth - 1) == 0 else Mux(wp == depth - 1, 0, wp + 1))
        full = wp_next == rp
        m.d.comb += [self.rx.ready.eq(~full), rx_wr.addr.eq(wp), rx_wr.data.eq(self.rx.payload),
                     rx_wr.en.eq(self.rx.valid & ~full)]
        with m.If(self.rx.valid & ~full):
            m.d.sync += wp.eq(wp_next)
        byte, have, take = rx_rd.data, Signal(), Signal()
        load = (~have | take) & (wp != rp)
        m.d.comb += [rx_rd.addr.eq(rp), rx_rd.en.eq(load)]
        with m.If(~have | take):
            m.d.sync += have.eq(load)
        with m.If(load):
            m.d.sync += rp.eq(rp + 1 if depth & (depth - 1) == 0 else Mux(rp == depth - 1, 0, rp + 1))

        # ---- registers of the frame
        cmd = Signal(8)
        # LEN: a length above max_payload is refused from the header alone, so below 256 the
        # high byte of any length that gets further is 0 and is not kept.
        wide_len = max_payload >= 256
        length = Signal(16 if wide_len else 8)
        idx = Signal(range(max_payload + 1))
        crc = Signal(16)
        crc_lo = Signal(8)
        crc_ok = Signal()
        len_big = Signal()
        code_lo = Signal(8)
        err_code = Signal(8)
        kind = Signal(range(5))
        # One CRC step for the request's bytes and then the reply's: `fold` folds `crc_in`.
        fold = Signal()
        crc_in = Signal(8)
        m.d.comb += crc_in.eq(byte)
        with m.If(fold):
            m.d.sync += crc.eq(crc16_step(crc, crc_in))

        is_infer = cmd == Command.INFER
        reserved = ((cmd[4:] == 1) | (cmd == Command.LOAD_WEIGHTS) | (cmd == Command.INFER_BATCH))
        known = (cmd == Command.INFO) | is_infer | (cmd == Command.COUNTERS) | (cmd == Command.CLEAR_COUNTERS)
        len_ok = Mux(is_infer, length == d * bi, length == 0)

        # ---- engine run: feed the codes, collect the outputs, count the cycles
        feed_addr = Signal(range(d + 1))
        feed_valid = Signal()
        out_idx = Signal(range(n_out + 1))
        started = Signal()
        # The cycle count: wide enough for eight times the engine's figure (the link feeds the
        # codes back to back and takes every output at once, so the engine never waits),
        # and it stops at its largest value rather than wrapping.
        cycles = Signal(min(32, max(16, (8 * max(1, self.info.cycles_per_inference)).bit_length())))
        argmax = Signal.like(self.eng_o.payload.argmax)
        m.d.comb += [self.eng_i.payload.eq(in_rd.data), self.eng_i.valid.eq(feed_valid),
                     in_rd.addr.eq(feed_addr)]

        # ---- counter requests (set by the frame machine, taken by the counter machine)
        req = {n: Signal(name=f"req_{n}") for n in ("frames", "inferences", "errors", "busy", "clear")}
        pending = Signal(PENDING_BITS)
        cnt_idle = Signal()
        sending = Signal()     # a reply is going out (it reads the counter memory)

        # ---- the reply's sender state
        txb = Signal(8)
        txv = Signal()
        tx_byte = Signal(8)
        m.d.comb += [self.tx.payload.eq(txb), self.tx.valid.eq(txv)]
        with m.If(self.tx.ready):
            m.d.sync += txv.eq(0)
        slot = ~txv | self.tx.ready          # txb may take the next byte this cycle
        bidx = Signal(range(max(body_len.values()) + 1))
        blen = Signal.like(bidx)
        m.d.comb += blen.eq(Mux(kind == _INFO, body_len[_INFO], Mux(kind == _COUNTERS, body_len[_COUNTERS],
                            Mux(kind == _INFER, body_len[_INFER], Mux(kind == _ERROR, 2, 0)))))
        blen16 = Cat(blen, C(0, 16 - len(blen)))

        def send(value, fold_it=True):
            """Put ``value`` on the wire (the caller checks ``slot``) and fold it into the
            reply's CRC."""
            m.d.comb += tx_byte.eq(value)
            m.d.sync += [txb.eq(tx_byte), txv.eq(1)]
            if fold_it:
                m.d.comb += [crc_in.eq(tx_byte), fold.eq(1)]

        # The body byte at `bidx`, from the memory read one cycle before (BODY_ADDR).
        n_codes = n_out * bo
        tail = Signal(range(7))
        m.d.comb += tail.eq(bidx - n_codes)
        wide = out_rd.data.as_signed()
        wide16 = Cat(wide, *[wide[-1]] * (16 - len(wide)))          # sign-extended to 16 bits
        if bo == 1:
            code_byte, code_at = wide16[:8], bidx
        else:
            code_byte, code_at = Mux(bidx[0], wide16[8:], wide16[:8]), bidx >> 1
        argmax16 = Cat(argmax, C(0, 16 - len(argmax)))
        cycles32 = Cat(cycles, C(0, 32 - len(cycles)))
        infer_byte = Mux(bidx < n_codes, code_byte, Cat(argmax16, cycles32).word_select(tail[:3], 8))
        body_byte = Mux(kind == _INFER, infer_byte,
                        Mux(kind == _ERROR, Mux(bidx[0], cmd, err_code), cnt_rd.data))

        # Frame timeout: cycles in a receiving state with no byte.
        in_frame = Signal()
        idle_time = Signal(range(self._timeout + 1))
        timed_out = Signal()
        with m.If(in_frame & ~have):
            m.d.sync += idle_time.eq(idle_time + 1)
        with m.Else():
            m.d.sync += idle_time.eq(0)
        m.d.sync += timed_out.eq(in_frame & ~have & (idle_time == self._timeout - 1))

        def fail(code):
            m.d.sync += [err_code.eq(code), kind.eq(_ERROR), req["errors"].eq(1)]
            m.d.comb += self.error.eq(1)
            m.next = "WAIT_COUNT"

        def receiving():
            m.d.comb += [in_frame.eq(1), take.eq(have)]
            with m.If(timed_out):
                fail(ErrorCode.TIMEOUT)

        with m.FSM(name="small_link") as fsm:
            with m.State("IDLE"):
                # Outside a frame anything but SYNC is garbage: skip it.
                m.d.comb += take.eq(have)
                with m.If(have & (byte == REQ_SYNC)):
                    m.d.sync += crc.eq(CRC_INIT)
                    m.next = "CMD"
            with m.State("CMD"):
                receiving()
                with m.If(have):
                    m.d.comb += fold.eq(1)
                    m.d.sync += cmd.eq(byte)
                    m.next = "LEN_LO"
            with m.State("LEN_LO"):
                receiving()
                with m.If(have):
                    m.d.comb += fold.eq(1)
                    m.d.sync += length[:8].eq(byte)
                    m.next = "LEN_HI"
            with m.State("LEN_HI"):
                receiving()
                with m.If(have):
                    m.d.comb += fold.eq(1)
                    m.d.sync += [len_big.eq(Cat(length[:8], byte) > max_payload), idx.eq(0)]
                    if wide_len:
                        m.d.sync += length[8:].eq(byte)
                    m.next = "LEN_CHECK"
            with m.State("LEN_CHECK"):
                with m.If(len_big):
                    # Don't wait for a body this long: the length itself is corrupt.
                    fail(ErrorCode.BAD_LENGTH)
                with m.Elif(length == 0):
                    m.next = "CRC_LO"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                receiving()
                with m.If(have):
                    m.d.comb += fold.eq(1)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(is_infer & (idx < d * bi)):
                        if bi == 1:
                            m.d.comb += [in_wr.addr.eq(idx), in_wr.data.eq(byte), in_wr.en.eq(1)]
                        else:
                            m.d.sync += code_lo.eq(byte)
                            m.d.comb += [in_wr.addr.eq(idx >> 1), in_wr.data.eq(Cat(code_lo, byte)),
                                         in_wr.en.eq(idx[0])]
                    with m.If(idx + 1 == length):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                receiving()
                with m.If(have):
                    m.d.sync += crc_lo.eq(byte)
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                receiving()
                with m.If(have):
                    m.d.sync += crc_ok.eq(Cat(crc_lo, byte) == crc)
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [feed_addr.eq(0), feed_valid.eq(0), out_idx.eq(0), started.eq(0)]
                with m.If(~crc_ok):
                    fail(ErrorCode.BAD_CRC)
                with m.Elif(reserved):
                    fail(ErrorCode.UNSUPPORTED)
                with m.Elif(~known):
                    fail(ErrorCode.UNKNOWN_COMMAND)
                with m.Elif(~len_ok):
                    fail(ErrorCode.BAD_LENGTH)
                with m.Elif(is_infer):
                    m.d.sync += [req["frames"].eq(1), kind.eq(_INFER)]
                    m.next = "RUN"
                with m.Elif(cmd == Command.CLEAR_COUNTERS):
                    m.d.sync += [req["clear"].eq(1), kind.eq(_EMPTY)]
                    m.next = "WAIT_COUNT"
                with m.Else():
                    m.d.sync += [req["frames"].eq(1), kind.eq(Mux(cmd == Command.INFO, _INFO, _COUNTERS))]
                    m.next = "WAIT_COUNT"
            with m.State("RUN"):
                eng_i, eng_o = self.eng_i, self.eng_o
                m.d.comb += [eng_o.ready.eq(1), in_rd.en.eq(~feed_valid | eng_i.ready)]
                with m.If(in_rd.en):
                    m.d.sync += feed_valid.eq(feed_addr < d)
                    with m.If(feed_addr < d):
                        m.d.sync += feed_addr.eq(feed_addr + 1)
                with m.If(eng_i.valid & eng_i.ready & ~started):
                    m.d.sync += [started.eq(1), cycles.eq(1)]
                with m.Elif(started & ~(eng_o.valid & eng_o.payload.last) & ~cycles.all()):
                    m.d.sync += cycles.eq(cycles + 1)
                with m.If(eng_o.valid):
                    m.d.comb += [out_wr.addr.eq(out_idx), out_wr.data.eq(eng_o.payload.data), out_wr.en.eq(1)]
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(eng_o.payload.last):
                        m.d.sync += [argmax.eq(eng_o.payload.argmax), req["inferences"].eq(1),
                                     req["busy"].eq(1)]
                        m.next = "WAIT_COUNT"
            with m.State("WAIT_COUNT"):
                # The counters are up to date before a reply reads them (COUNTERS counts
                # its own frame).
                with m.If(cnt_idle):
                    m.d.sync += crc.eq(CRC_INIT)
                    m.next = "TX_SYNC"
            with m.State("TX_SYNC"):
                with m.If(slot):
                    send(REP_SYNC, fold_it=False)
                    m.next = "TX_CMD"
            with m.State("TX_CMD"):
                with m.If(slot):
                    send(Mux(kind == _ERROR, ERROR_REPLY, cmd | REPLY_FLAG))
                    m.next = "TX_LEN_LO"
            with m.State("TX_LEN_LO"):
                with m.If(slot):
                    send(blen16[:8])
                    m.d.sync += bidx.eq(0)
                    m.next = "TX_LEN_HI"
            with m.State("TX_LEN_HI"):
                with m.If(slot):
                    send(blen16[8:])
                    with m.If(blen == 0):
                        m.next = "TX_CRC_LO"
                    with m.Else():
                        m.next = "BODY_ADDR"
            with m.State("BODY_ADDR"):
                # One cycle for the memory word of the next byte.
                m.next = "BODY"
            with m.State("BODY"):
                with m.If(slot):
                    send(body_byte)
                    m.d.sync += bidx.eq(bidx + 1)
                    with m.If(bidx == blen - 1):
                        m.next = "TX_CRC_LO"
                    with m.Else():
                        m.next = "BODY_ADDR"
            with m.State("TX_CRC_LO"):
                with m.If(slot):
                    send(crc[:8], fold_it=False)
                    m.next = "TX_CRC_HI"
            with m.State("TX_CRC_HI"):
                with m.If(slot):
                    send(crc[8:], fold_it=False)
                    m.next = "TX_END"
            with m.State("TX_END"):
                # The last byte is handed over before the next frame is looked at; a timeout
                # before the next command byte reports command 0.
                with m.If(~txv):
                    m.d.sync += cmd.eq(0)
                    m.next = "IDLE"
        m.d.comb += sending.eq(fsm.ongoing("TX_SYNC") | fsm.ongoing("TX_CMD")
                               | fsm.ongoing("TX_LEN_LO") | fsm.ongoing("TX_LEN_HI") | fsm.ongoing("BODY_ADDR")
                               | fsm.ongoing("BODY") | fsm.ongoing("TX_CRC_LO") | fsm.ongoing("TX_CRC_HI")
                               | fsm.ongoing("TX_END"))
        m.d.sync += self.busy.eq(~fsm.ongoing("IDLE"))
        m.d.comb += [out_rd.addr.eq(code_at), cnt_rd.addr.eq(Mux(kind == _INFO, _INFO_BASE, 0) + bidx)]

        self._counters(m, req, pending, cnt_idle, sending, cycles, cnt_wr, cnt_rd)
        return m

    def _counters(self, m, req, pending, cnt_idle, sending, cycles, cnt_wr, cnt_rd):
        # Read-modify-write of one counter in the memory, a byte per two cycles: the byte's
        # address in READ, its sum (old byte + addend byte + carry) written in WRITE.  The
        # addend is 1 (as the carry into byte 0) or, for busy cycles, the cycle count.
        addr = Signal(5)
        carry = Signal()
        add_cycles = Signal()
        clearing = Signal()
        count_uart = self.uart_error & (pending != (1 << PENDING_BITS) - 1)
        with m.If(count_uart):
            m.d.sync += pending.eq(pending + 1)
        addend = Mux(add_cycles, Cat(cycles, C(0, 32 - len(cycles))).word_select(addr[:2], 8), 0)
        total = cnt_rd.data + addend + carry
        m.d.comb += [cnt_wr.addr.eq(addr), cnt_wr.data.eq(Mux(clearing, 0, total[:8]))]
        with m.FSM(name="counters") as fsm:
            with m.State("IDLE"):
                any_req = req["frames"] | req["inferences"] | req["errors"] | req["busy"] | req["clear"]
                # The frame machine waits in WAIT_COUNT for this before a reply reads the
                # memory; UART errors are drained first, so the reply counts them too.
                m.d.comb += cnt_idle.eq(~any_req & (pending == 0))

                def start(name, k, cycles_too=False):
                    m.d.sync += [addr.eq(4 * k), carry.eq(not cycles_too), add_cycles.eq(cycles_too),
                                 clearing.eq(0)]
                    if name:
                        m.d.sync += req[name].eq(0)
                    m.next = "READ"

                with m.If((pending != 0) & ~sending):
                    m.d.sync += pending.eq(pending - 1 + count_uart)
                    start(None, COUNTER_NAMES.index("uart_errors"))
                with m.Elif(req["clear"]):
                    m.d.sync += [addr.eq(0), clearing.eq(1), req["clear"].eq(0)]
                    m.next = "CLEAR"
                for name, counter, cyc in (("frames", "frames", False), ("inferences", "inferences", False),
                                           ("errors", "errors", False), ("busy", "busy_cycles", True)):
                    with m.Elif(req[name]):
                        start(name, COUNTER_NAMES.index(counter), cyc)
            with m.State("READ"):
                m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += cnt_wr.en.eq(1)
                m.d.sync += [carry.eq(total[8]), addr.eq(addr + 1)]
                with m.If(addr[:2] == 3):
                    m.next = "IDLE"
                with m.Else():
                    m.next = "READ"
            with m.State("CLEAR"):
                m.d.comb += cnt_wr.en.eq(1)
                m.d.sync += addr.eq(addr + 1)
                with m.If(addr == 4 * len(COUNTER_NAMES) - 1):
                    m.next = "IDLE"
        # The counter machine reads the memory between replies; the sender reads it during them.
        with m.If(~fsm.ongoing("IDLE")):
            m.d.comb += cnt_rd.addr.eq(addr)
