"""The framed host protocol: a byte-stream link between the UART and the MLP engine.

The frames (sync byte, command, length, payload, CRC-16), the commands, the error codes
and the INFO and CACHE_INFO replies are defined once in :mod:`pwlnet.protocol`, which the
host driver imports too; this module is the device's side of them.

The device handles one request at a time: it receives a whole frame, checks it,
executes it and sends the reply before it looks at the next byte.  Bytes that arrive
meanwhile wait in a receive FIFO.  Outside a frame every byte other than ``REQ_SYNC`` is
discarded, which is how the link resynchronises after garbage.  A length above the
largest payload the device accepts is answered at once with ``BAD_LENGTH`` (so a
corrupted length cannot stall the link); a frame that stops arriving mid-way is
answered with ``TIMEOUT``.

Commands (:class:`~pwlnet.protocol.Command`): ``INFO``, ``INFER``, ``INFER_BATCH`` (without a
cache; a cached link answers it ``UNSUPPORTED``), ``COUNTERS``, ``CLEAR_COUNTERS``,
``LOAD_WEIGHTS`` (only when the engine's weights live in SPRAM: the words are staged
and written to the engine after the CRC has checked out); ``0x10``-``0x1F`` belong to
the hypersphere cache: ``CACHE_WRITE``, ``CACHE_CLEAR``, ``CACHE_STATS`` and
``CACHE_INFO`` when the link is built for a cached engine
(:class:`pwlnet.hw.cached_engine.CachedEngine`, ``cache_entries > 0``), otherwise
``UNSUPPORTED`` like the rest of the range.  Error codes: :class:`~pwlnet.protocol.ErrorCode`.

:class:`Link` is a composition: a receive FIFO feeds the frame parser
(:class:`~pwlnet.hw.link.parser.FrameParser`), which hands checked requests to the command
executor (:class:`~pwlnet.hw.link.executor.CommandExecutor`) and reply requests to the reply
serializer (:class:`~pwlnet.hw.link.serializer.ReplySerializer`); the input, output and
staging buffers between them live here.  The three run as separate state machines that
hand over through registered pulses, so each one's state decode stays small (with one
25-state machine the decode into the reply registers' enables alone held fmax under
40 MHz).
"""

import math

from amaranth.hdl import Module, signed
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...protocol import (CACHE_METRIC_CODES, GATEWARE_VERSION, PROTOCOL_VERSION, RX_FIFO_BYTES, CacheInfo, LinkInfo,
                         check_cache_entries, code_bytes, field_bytes, model_fingerprint)
from ..cached_engine import cache_write_layout, cached_output_layout
from ..engine import output_layout, weight_write_layout
from ..memory import NO_RW_CHECK, unchecked_read_port
from .executor import CommandExecutor
from .parser import FrameParser
from .serializer import ReplySerializer, infer_reply_len

__all__ = ["Link"]


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
    cycles_per_inference : int or float
        The engine's analytic figure, reported by INFO (rounded up).
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
        Bytes of one slot image (:attr:`pwlnet.hw.slot_format.SlotFormat.image_bytes`).
    cache_metric : {"l2", "linf", "l1"}
        The comparator bank's metric, reported by ``CACHE_INFO``.
    cache_hit_cycles : int
        Cycles of an inference answered by an entry, reported by ``CACHE_INFO``.
    max_batch : int
        Inputs of an ``INFER_BATCH`` the link is built for, at least (0: none).  The payload
        limit is raised to hold that many, and the link takes as many whole inputs as
        ``max_payload`` holds (:func:`pwlnet.protocol.batch_limit`, :attr:`batch`); its input,
        output and argmax buffers are sized for them.  A cached link has no batches (it
        answers ``INFER_BATCH`` with ``UNSUPPORTED``).

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    eng_i : Out(stream.Signature(signed(input_bits)))
        Input codes to the engine.
    eng_o : In(stream.Signature(pwlnet.hw.engine.output_layout(model)))
        Output codes from the engine (:func:`pwlnet.hw.cached_engine.cached_output_layout`
        with a cache).
    uart_error : In(1)
        Pulse per receiver framing error or overrun (counted).
    busy : Out(1)
        High while a frame is being handled.
    error : Out(1)
        Pulse per error reply.
    w_wr : Out(stream.Signature(weight_write_layout(weight_words, weight_word_bits)))
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
                 fifo_depth=RX_FIFO_BYTES, counter_bits=32, weight_words=0, weight_word_bits=0, chunk_words=32,
                 cache_entries=0, cache_image_bytes=0, cache_metric="linf", cache_hit_cycles=0,
                 max_batch=16):
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise ValueError(f"timeout must be a positive number of cycles, not {timeout!r}")
        if not 1 <= counter_bits <= 32:
            raise ValueError(f"counter_bits must be in 1..32, not {counter_bits!r}")
        check_cache_entries(cache_entries)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 0 <= max_batch <= 255:
            raise ValueError(f"max_batch must be an integer in 0..255, not {max_batch!r}")
        if cache_entries:
            if cache_metric not in CACHE_METRIC_CODES:
                raise ValueError(f"cache_metric must be one of {', '.join(CACHE_METRIC_CODES)}, "
                                 f"not {cache_metric!r}")
            if (isinstance(cache_image_bytes, bool) or not isinstance(cache_image_bytes, int)
                    or not 1 <= cache_image_bytes <= 0xFFFE):
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
        self._word_bytes = field_bytes(self._word_bits) if self._weight_words else 0
        self._chunk_words = int(chunk_words)
        batching = bool(max_batch) and not self._cache_entries
        max_payload = max(model.input_dim * self._in_bytes * (max_batch if batching else 1), 64)
        if self._cache_entries:
            max_payload = max(max_payload, 1 + self._image_bytes)
        if self._weight_words:
            # The longest LOAD_WEIGHTS payload is the longest payload, so the host can size
            # its chunks from max_payload; a slot image shares the staging buffer.
            self._chunk_words = max(self._chunk_words, -(-(max_payload - 2) // self._word_bytes))
            max_payload = 2 + self._chunk_words * self._word_bytes
        # INFER_BATCH takes as many whole inputs as the payload holds.
        self._batch = max_payload // (model.input_dim * self._in_bytes) if batching else 0
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
            cycles_per_inference=math.ceil(cycles_per_inference), model_crc=model_fingerprint(model),
            max_payload=max_payload, weight_words=self._weight_words,
            weight_word_bytes=self._word_bytes)
        members = {
            "rx":         In(stream.Signature(8)),
            "tx":         Out(stream.Signature(8)),
            "eng_i":      Out(stream.Signature(signed(model.input_bits))),
            "eng_o":      In(stream.Signature(cached_output_layout(model, self._cache_entries)
                                              if self._cache_entries else output_layout(model))),
            "uart_error": In(1),
            "busy":       Out(1),
            "error":      Out(1),
        }
        if self._weight_words:
            members["w_wr"] = Out(stream.Signature(weight_write_layout(self._weight_words, self._word_bits)))
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
    def batch(self):
        """Most inputs of an ``INFER_BATCH`` (0: the link answers it ``UNSUPPORTED``)."""
        return self._batch

    @property
    def infer_len(self):
        """Payload bytes of an INFER request."""
        return self._model.input_dim * self._in_bytes

    @property
    def infer_reply_len(self):
        """Payload bytes of an INFER reply: output codes, u16 argmax, u32 cycles (and u8
        cached, u8 slot with a cache)."""
        return infer_reply_len(self.info, bool(self._cache_entries))

    def elaborate(self, platform):
        m = Module()
        model = self._model
        cached, loadable = bool(self._cache_entries), bool(self._weight_words)

        m.submodules.parser = parser = FrameParser(
            input_dim=model.input_dim, input_bits=model.input_bits, max_payload=self.info.max_payload,
            timeout=self._timeout, word_bytes=self._word_bytes, chunk_words=self._chunk_words,
            weight_words=self._weight_words, cache_entries=self._cache_entries, image_bytes=self._image_bytes, max_batch=self._batch)
        m.submodules.executor = executor = CommandExecutor(
            model, staged_bytes=parser.staged_bytes, stage_depth=parser.stage_depth if (loadable or cached) else 0,
            counter_bits=self._counter_bits, weight_words=self._weight_words, weight_word_bits=self._word_bits,
            cache_entries=self._cache_entries, image_bytes=self._image_bytes, max_batch=self._batch)
        m.submodules.serializer = serializer = ReplySerializer(
            self.info, self.cache_info,
            slot_bits=len(executor.slot) if cached else 1, max_batch=self._batch)

        # Requests the host sends while a reply is going out wait in the receive FIFO.
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self._fifo_depth)
        wiring.connect(m, wiring.flipped(self.rx), rx_fifo.w_stream)
        wiring.connect(m, rx_fifo.r_stream, parser.rx)
        self._buffers(m, parser, executor, serializer)

        wiring.connect(m, parser.exec, executor.req)
        wiring.connect(m, parser.reply, serializer.req)
        wiring.connect(m, wiring.flipped(self.tx), serializer.tx)
        wiring.connect(m, wiring.flipped(self.eng_i), executor.eng_i)
        wiring.connect(m, wiring.flipped(self.eng_o), executor.eng_o)
        m.d.comb += [
            executor.uart_error.eq(self.uart_error),
            serializer.counters.eq(executor.counters),
            serializer.argmax.eq(executor.argmax),
            serializer.cycles.eq(executor.cycles),
            self.busy.eq(parser.busy),
            self.error.eq(parser.error),
        ]
        if loadable:
            wiring.connect(m, wiring.flipped(self.w_wr), executor.w_wr)
        if cached:
            wiring.connect(m, wiring.flipped(self.cw), executor.cw)
            m.d.comb += [
                self.cache_clear.eq(executor.cache_clear),
                self.clear_stats.eq(executor.clear_stats),
                serializer.hit.eq(executor.hit),
                serializer.slot.eq(executor.slot),
                serializer.hits.eq(self.hits),
                serializer.misses.eq(self.misses),
            ]
        return m

    def _buffers(self, m, parser, executor, serializer):
        # The input codes of the request, the output codes of the reply, and the staged
        # LOAD_WEIGHTS and CACHE_WRITE payloads that wait until their CRC is known.  Read
        # ports without collision logic (unchecked_read_port): each buffer is written in
        # one phase (payload, engine run) and read in another, so a same-cycle read of the
        # address being written is never used.  Block RAM even for the small ones.
        # With INFER_BATCH the input and output buffers hold a whole batch, and the argmax
        # of each of its inferences waits in a buffer of its own.
        model = self._model
        nb = max(1, self._batch)
        no_rw = {**NO_RW_CHECK, "ram_style": "block"}
        m.submodules.in_mem = in_mem = Memory(shape=signed(model.input_bits), depth=model.input_dim * nb,
                                              init=[], attrs=no_rw)
        wiring.connect(m, parser.in_wr, in_mem.write_port())
        _connect_read(m, unchecked_read_port(m, in_mem, "in_rd"), executor.in_rd)
        m.submodules.out_mem = out_mem = Memory(shape=signed(model.layers[-1].out_bits),
                                                depth=model.output_dim * nb, init=[], attrs=no_rw)
        wiring.connect(m, executor.out_wr, out_mem.write_port())
        _connect_read(m, unchecked_read_port(m, out_mem, "out_rd"), serializer.out_rd)
        if self._batch:
            m.submodules.am_mem = am_mem = Memory(shape=16, depth=self._batch, init=[], attrs=no_rw)
            wiring.connect(m, executor.am_wr, am_mem.write_port())
            _connect_read(m, unchecked_read_port(m, am_mem, "am_rd"), serializer.am_rd)
        if self._weight_words or self._cache_entries:
            m.submodules.stage_mem = stage_mem = Memory(shape=8, depth=parser.stage_depth, init=[], attrs=no_rw)
            wiring.connect(m, parser.stage_wr, stage_mem.write_port())
            _connect_read(m, unchecked_read_port(m, stage_mem, "stage_rd"), executor.stage_rd)


def _connect_read(m, port, user):
    """Wire an :func:`~pwlnet.hw.memory.unchecked_read_port` to a block's flipped
    ``ReadPort.Signature`` member."""
    m.d.comb += [port.addr.eq(user.addr), port.en.eq(user.en), user.data.eq(port.data)]
