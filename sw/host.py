# amaranth: UnusedElaboratable=no
"""Host driver: talk to a pwlnet board (or to the simulated board) over the framed UART link.

Layers, as in Glasgow's applets:

* :class:`Transport` moves bytes.  :class:`SerialTransport` uses a serial port;
  :class:`SimTransport` runs the board's own top level
  (:class:`pwlnet.boards.icebreaker.ICEBreakerTop`) in Amaranth's simulator and drives its
  UART pins bit by bit, so everything above it is tested against the real gateware.
* :class:`Device` speaks the protocol of :mod:`pwlnet.protocol` (frames, CRC, error
  replies) and offers :meth:`Device.info`, :meth:`Device.infer`, :meth:`Device.infer_batch`
  (many inputs, in ``INFER_BATCH`` frames when the bitstream has them), :meth:`Device.counters`
  and, on a build with the hypersphere cache, :meth:`Device.cache_info`,
  :meth:`Device.cache_write`, :meth:`Device.cache_clear`, :meth:`Device.cache_stats` and
  :meth:`Device.run_cached` (the host's side of the cache, :class:`pwlnet.cache_host.CacheHost`).
* :func:`cli_run` is ``pwlnet run``; with ``--cache`` the host fills the board's cache
  on misses and every answer is checked against the golden loop
  (:func:`pwlnet.cache_run.run_cache` with the board's run).
"""

from __future__ import annotations

import collections
import struct
import sys
import time

import numpy as np

from . import artifact, golden
from .protocol import (COUNTER_NAMES, ERROR_REPLY, REP_SYNC, REPLY_FLAG, CacheInfo, Command, ErrorCode,
                      LinkInfo, RX_FIFO_BYTES, batch_limit, batch_reply_len, code_bytes, crc16, encode_frame,
                      model_fingerprint)

__all__ = ["Transport", "SerialTransport", "SimTransport", "Device", "DeviceError", "LinkError",
           "Inference", "CacheStats", "CachedRun", "NO_CACHE", "weight_image", "link_baud_of", "add_run_arguments",
           "cli_run"]


class LinkError(IOError):
    """No reply, or a reply that is not a valid frame."""


class DeviceError(RuntimeError):
    """The device answered with an error frame.

    Attributes
    ----------
    code : ErrorCode or int
        What went wrong.
    command : int
        The command byte the device was handling (0 if it had not read one).
    """

    def __init__(self, code, command):
        try:
            code = ErrorCode(code)
            what = code.name
        except ValueError:
            what = f"error 0x{code:02x}"
        self.code = code
        self.command = command
        super().__init__(f"device replied {what} to command 0x{command:02x}")


class Inference(tuple):
    """What :meth:`Device.infer` returns: the tuple ``(outputs, argmax, cycles)``, so it
    unpacks as before, with the fields also as attributes, and on a build with the cache
    two more.

    Attributes
    ----------
    outputs : ndarray of int64, shape (output_dim,)
    argmax : int
    cycles : int
    cached : bool or None
        Whether a cache entry answered (``None`` on a build without a cache).
    slot : int or None
        The slot that answered (0 on a miss; ``None`` without a cache).
    """

    def __new__(cls, outputs, argmax, cycles, cached=None, slot=None):
        self = super().__new__(cls, (outputs, argmax, cycles))
        self.outputs, self.argmax, self.cycles = outputs, argmax, cycles
        self.cached, self.slot = cached, slot
        return self


class CacheStats(collections.namedtuple("CacheStats", ["hits", "misses"])):
    """The cache's counters (:meth:`Device.cache_stats`): inferences answered by an entry
    and by the full network."""


class CachedRun(collections.namedtuple("CachedRun", ["outputs", "argmax", "hit", "slot", "written", "cycles",
                                                     "uncacheable"])):
    """What :meth:`Device.run_cached` saw, per input (``N`` rows), laid out like
    :class:`pwlnet.cache_host.StreamResult`: ``outputs`` (N, n_out) output codes from the
    board, ``argmax`` (N,) the board's argmax, ``hit`` (N,) bool, ``slot`` (N,) the
    answering slot or -1, ``written`` (N,) the slot written after the miss or -1,
    ``cycles`` (N,) engine cycles, ``uncacheable`` the misses whose entry could not be
    made or did not fit a slot."""


class Transport:
    """A byte pipe to the device.  Subclasses implement :meth:`write` and :meth:`read`."""

    def write(self, data: bytes):
        """Send ``data``."""
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; fewer if ``timeout`` seconds pass first."""
        raise NotImplementedError

    def close(self):
        """Release the transport."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A serial port (the iCEBreaker's FTDI channel B is usually ``/dev/ttyUSB1``).

    Parameters
    ----------
    port : str
        Device name.
    baud : int
        Must equal the baud the bitstream was built for.
    """

    def __init__(self, port, baud=115200):
        import serial
        try:
            self._port = serial.Serial(port, baud, timeout=0.1)
        except serial.SerialException as e:
            raise LinkError(f"cannot open {port}: {e}") from None
        self._port.reset_input_buffer()

    def write(self, data):
        self._port.write(bytes(data))
        self._port.flush()

    def read(self, n, timeout):
        self._port.timeout = timeout
        return self._port.read(n)

    def close(self):
        self._port.close()


class SimTransport(Transport):
    """The board's top level in Amaranth's simulator, driven through its UART pins.

    The engine is built for target ``"generic"`` (the ``"ice40"`` target's SPRAM and DSP
    primitives do not run in Amaranth's simulator); everything else is the board's
    gateware.  Time is simulated: ``read``'s ``timeout`` is ignored in favour of
    ``idle_bytes``.

    Parameters
    ----------
    model : CompiledModel
        The network.
    lanes : int
        Engine lanes.
    divisor : int
        Clock cycles per UART bit; small values keep the simulation fast.
    clk_freq : float
        Nominal clock (only reported by INFO and used for the LED timers).
    frame_timeout : int
        The link's mid-frame timeout, in byte times.
    idle_bytes : int or None
        :meth:`read` gives up after this many byte times without a byte from the device
        (default: 48, plus the byte times a full ``INFER_BATCH``, or one INFER on a link
        without batches, keeps the engine busy, with a quarter's margin).
    engine : callable or None
        Engine factory, as for :class:`~pwlnet.boards.icebreaker.ICEBreakerTop`.
    cache_entries, cache_metric, cache_preload
        The hypersphere cache, as for :class:`~pwlnet.boards.icebreaker.ICEBreakerTop`
        (``cache_entries=0``: none).
    board : str
        The board whose top is simulated (its link gateware: the iCEstick's is the small
        link, :class:`pwlnet.hw.link.SmallLink`).
    vcd : str or None
        Write a waveform file (slow).
    """

    def __init__(self, model, *, lanes=8, divisor=8, clk_freq=1e6, frame_timeout=16, idle_bytes=None,
                 engine=None, cache_entries=0, cache_metric="linf", cache_preload=(), board="icebreaker",
                 vcd=None):
        from amaranth.sim import Simulator

        from .boards.icebreaker import ICEBreakerTop

        self.divisor = divisor
        self.byte_cycles = 10 * divisor
        self.idle_bytes = idle_bytes
        # A top that its own argument checks reject is never elaborated: the first line of
        # this file (Amaranth's linter option) keeps it from being reported as unused.
        self.top = ICEBreakerTop(model, lanes=lanes, clk_freq=clk_freq, divisor=divisor,
                                 target="generic", timeout=frame_timeout * self.byte_cycles,
                                 engine=engine, cache_entries=cache_entries, cache_metric=cache_metric,
                                 cache_preload=cache_preload, board=board)
        if idle_bytes is None:
            # one inference, or a full INFER_BATCH where the link takes them
            busy = max(1, self.top.link.batch) * getattr(self.top.engine, "cycles_per_inference", 0)
            self.idle_bytes = 48 + -(-5 * busy // (4 * self.byte_cycles))
        self._to_dev = collections.deque()
        self._from_dev = collections.deque()
        self.frame_errors = 0
        self._period = 1 / clk_freq
        self.cycles = 0
        self.sim = Simulator(self.top)
        self.sim.add_clock(self._period)
        self.sim.add_testbench(self._drive, background=True)
        self.sim.add_testbench(self._sample, background=True)
        self._vcd = None
        if vcd:
            self._vcd = self.sim.write_vcd(vcd)
            self._vcd.__enter__()

    # Both testbenches wait with `ctx.delay` / `ctx.negedge` rather than counting ticks:
    # far fewer Python wake-ups per bit, and nothing to finalise when the transport is
    # dropped in the middle of a byte.

    async def _drive(self, ctx):
        # Host -> device: 8N1, LSB first, one bit every `divisor` cycles.
        pin, bit_time = self.top.uart_rx, self.divisor * self._period
        while True:
            if not self._to_dev:
                await ctx.delay(bit_time)
                continue
            byte = self._to_dev.popleft()
            for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                ctx.set(pin, bit)
                await ctx.delay(bit_time)

    async def _sample(self, ctx):
        # Device -> host: find the start edge, then sample in the middle of each bit
        # (a quarter cycle off the middle, so never on a clock edge).
        pin, bit_time = self.top.uart_tx, self.divisor * self._period
        while True:
            await ctx.negedge(pin)
            await ctx.delay(bit_time / 2 + self._period / 4)
            if ctx.get(pin):
                continue
            byte = 0
            for i in range(8):
                await ctx.delay(bit_time)
                byte |= ctx.get(pin) << i
            await ctx.delay(bit_time)
            if ctx.get(pin):
                self._from_dev.append(byte)
            else:
                self.frame_errors += 1

    def run(self, cycles):
        """Advance the simulation by ``cycles`` clock cycles."""
        self.cycles += cycles
        self.sim.run_until(self.cycles * self._period)

    def write(self, data):
        self._to_dev.extend(bytes(data))

    def poll(self, byte_times=1):
        """Advance by ``byte_times`` UART byte times; return whatever the device sent meanwhile."""
        self.run(byte_times * self.byte_cycles)
        out = bytes(self._from_dev)
        self._from_dev.clear()
        return out

    def read(self, n, timeout=None):
        out = bytearray()
        idle = 0
        while len(out) < n:
            if self._from_dev:
                out.append(self._from_dev.popleft())
                idle = 0
                continue
            if idle >= self.idle_bytes:
                break
            self.run(self.byte_cycles)
            # Silence counts only once the request has left the host.
            idle = 0 if self._to_dev else idle + 1
        return bytes(out)

    def close(self):
        if self._vcd is not None:
            self._vcd.__exit__(None, None, None)
            self._vcd = None


class Device:
    """A pwlnet board behind a :class:`Transport`.

    Parameters
    ----------
    transport : Transport
        Byte pipe.
    model : CompiledModel or None
        If given, :meth:`info` is checked against it (dimensions, widths and the
        fingerprint of the weights), so a board holding another model is caught.
    timeout : float
        Seconds to wait for a reply.
    """

    _UNKNOWN = object()

    def __init__(self, transport, *, model=None, timeout=2.0):
        self.transport = transport
        self.timeout = timeout
        self._model = model
        self._info = None
        self._cache = self._UNKNOWN    # CacheInfo, or None for a build without the cache
        self._batch = self._UNKNOWN    # inputs per INFER_BATCH, or 0 for a build without it
        self._slot_format = None

    # --- frames -------------------------------------------------------------------------

    def send(self, cmd, payload=b""):
        """Send one request frame."""
        self.transport.write(encode_frame(cmd, payload))

    def _read_exact(self, n):
        buf = self.transport.read(n, self.timeout)
        if len(buf) < n:
            raise LinkError(f"timed out: {len(buf)} of {n} bytes after {self.timeout} s "
                            f"(is the bitstream loaded and the baud right?)")
        return buf

    def receive(self):
        """Read one reply frame; return ``(cmd, payload)``.  Bytes before its SYNC are skipped."""
        skipped = 0
        while True:
            b = self._read_exact(1)[0]
            if b == REP_SYNC:
                break
            skipped += 1
            if skipped > 4096:
                raise LinkError("no reply frame in 4096 bytes of line noise")
        header = self._read_exact(3)
        cmd, length = header[0], struct.unpack("<H", header[1:])[0]
        rest = self._read_exact(length + 2)
        payload, crc = rest[:length], struct.unpack("<H", rest[length:])[0]
        if crc16(header + payload) != crc:
            raise LinkError(f"reply to command 0x{cmd:02x} has a bad CRC")
        return cmd, payload

    def request(self, cmd, payload=b""):
        """Send a request and return the payload of its reply.

        Raises
        ------
        DeviceError
            If the device answers with an error frame.
        LinkError
            If there is no valid reply.
        """
        self.send(cmd, payload)
        return self._reply_to(cmd)

    def _reply_to(self, cmd):
        """Receive the reply to a request ``cmd`` already sent; its payload (see :meth:`request`)."""
        rcmd, rpayload = self.receive()
        if rcmd == ERROR_REPLY:
            if len(rpayload) != 2:
                raise LinkError(f"error reply with {len(rpayload)} payload bytes")
            raise DeviceError(rpayload[0], rpayload[1])
        if rcmd != (cmd | REPLY_FLAG):
            raise LinkError(f"reply 0x{rcmd:02x} does not answer command 0x{cmd:02x}")
        return rpayload

    def resync(self, quiet=0.2):
        """Drop whatever the device still sends, e.g. after an interrupted exchange."""
        while self.transport.read(4096, quiet):
            pass

    # --- commands -----------------------------------------------------------------------

    def info(self) -> LinkInfo:
        """What the bitstream holds: dimensions, widths, lanes, clock, baud, model fingerprint."""
        info = LinkInfo.unpack(self.request(Command.INFO))
        if self._model is not None:
            m = self._model
            want = (m.input_dim, m.input_bits, m.output_dim, m.layers[-1].out_bits, model_fingerprint(m))
            got = (info.input_dim, info.input_bits, info.output_dim, info.output_bits, info.model_crc)
            if want != got:
                raise LinkError(f"the board holds another model: (input_dim, input_bits, output_dim, "
                                f"output_bits, fingerprint) is {got}, this model has {want}")
        self._info = info
        return info

    def _layout(self):
        if self._info is None:
            self.info()
        return self._info

    def infer(self, codes):
        """One inference.

        Parameters
        ----------
        codes : array_like of int, shape (input_dim,)
            Input codes (see :func:`pwlnet.golden.quantize_inputs`).

        Returns
        -------
        Inference
            Unpacks as ``(outputs, argmax, cycles)``:

            outputs : ndarray of int64, shape (output_dim,)
                Output codes.
            argmax : int
                Index of the first largest output code.
            cycles : int
                Clock cycles from the engine's first input beat to its last output beat.

            On a build with the cache, its ``cached`` and ``slot`` say whether an entry
            answered and which (``None`` without a cache).  The reply's length tells the
            two kinds of build apart.
        """
        info = self._layout()
        codes = np.asarray(codes).reshape(-1)
        if codes.shape != (info.input_dim,):
            raise ValueError(f"expected {info.input_dim} input codes, not {codes.shape[0]}")
        bo = code_bytes(info.output_bits)
        reply = self.request(Command.INFER, self._code_payload(info, codes[None]))
        n = info.output_dim * bo
        if self._cache is self._UNKNOWN:
            allowed = (n + 6, n + 8)
        else:
            allowed = (n + 8,) if self._cache is not None else (n + 6,)
        if len(reply) not in allowed:
            raise LinkError(f"INFER reply has {len(reply)} bytes, expected "
                            f"{' or '.join(str(a) for a in allowed)}")
        outputs = np.array([int.from_bytes(reply[i:i + bo], "little", signed=True)
                            for i in range(0, n, bo)], dtype=np.int64)
        argmax, cycles = struct.unpack("<HI", reply[n:n + 6])
        if len(reply) == n + 8:
            return Inference(outputs, argmax, cycles, cached=bool(reply[n + 6]), slot=reply[n + 7])
        return Inference(outputs, argmax, cycles)

    @staticmethod
    def _code_payload(info, rows):
        """The wire bytes of input codes ``rows`` (k, input_dim), checked against the widths."""
        lo, hi = -(1 << (info.input_bits - 1)), (1 << (info.input_bits - 1)) - 1
        if rows.size and (rows.min() < lo or rows.max() > hi):
            raise ValueError(f"input codes must be in [{lo}, {hi}] ({info.input_bits} bits)")
        bi = code_bytes(info.input_bits)
        return b"".join(int(c).to_bytes(bi, "little", signed=True) for c in rows.reshape(-1))

    def batch_limit(self):
        """Most inputs one ``INFER_BATCH`` frame carries on this board
        (:func:`pwlnet.protocol.batch_limit` of its INFO), or 0 once the board has answered
        ``INFER_BATCH`` with ``UNSUPPORTED`` (a cached build) or ``UNKNOWN_COMMAND`` (a
        bitstream from before the command).  Until then it is what INFO promises."""
        if self._batch is self._UNKNOWN:
            return batch_limit(self._layout())
        return self._batch

    def infer_batch(self, codes, max_batch=None):
        """Run many inputs; returns ``(outputs, argmax, cycles)`` stacked over the rows.

        The rows go in ``INFER_BATCH`` frames of up to :meth:`batch_limit` inputs (one
        request and one reply per frame, so a USB round trip is paid per batch, not per
        input).  Where what may arrive while the board runs a batch and replies fits its
        receive FIFO (:data:`pwlnet.protocol.RX_FIFO_BYTES`; INFO's clock, baud and cycles
        tell), the next batch is sent before the previous reply is read, so the wire is not
        idle during the board's turnaround and the round trip.  On a board that answers ``INFER_BATCH`` with ``UNSUPPORTED`` or
        ``UNKNOWN_COMMAND`` (remembered), and with ``max_batch=1``, each row is one INFER.

        Parameters
        ----------
        codes : array_like of int, shape (N, input_dim)
        max_batch : int, optional
            At most this many inputs per frame (default: the board's limit; 1: single INFERs).

        Returns
        -------
        outputs : ndarray of int64, shape (N, output_dim)
        argmax : ndarray of int64, shape (N,)
        cycles : ndarray of float64, shape (N,)
            Engine cycles per inference: an INFER's own, or, for a row that went in a batch,
            the batch's cycles (first input beat to last output beat) divided by its inputs
            (the engine's time per inference with the inputs back to back).
        """
        info = self._layout()
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != info.input_dim:
            raise ValueError(f"expected input codes of shape (N, {info.input_dim}), not {codes.shape}")
        if max_batch is not None and (isinstance(max_batch, bool) or int(max_batch) != max_batch or max_batch < 1):
            raise ValueError(f"max_batch must be a positive integer, not {max_batch!r}")
        self._code_payload(info, codes)    # refuse out-of-range codes before anything is sent
        n = len(codes)
        outs = np.zeros((n, info.output_dim), dtype=np.int64)
        amax = np.zeros(n, dtype=np.int64)
        cycles = np.zeros(n, dtype=np.float64)
        pending = collections.deque()     # (first row, inputs) of batches sent, not yet answered

        def collect():
            j, k = pending.popleft()
            try:
                outs[j:j + k], amax[j:j + k], c = self._batch_reply(info, k)
            except (DeviceError, LinkError):
                self._drain(len(pending))
                raise
            cycles[j:j + k] = c / k

        i = 0
        while i < n:
            limit = self.batch_limit() if max_batch != 1 else 0
            if not limit:
                r = self.infer(codes[i])
                outs[i], amax[i], cycles[i] = r.outputs, r.argmax, r.cycles
                i += 1
                continue
            k = min(limit, max_batch or limit, n - i)
            if self._batch is self._UNKNOWN:
                # The first batch alone: the answer says whether the board has batches.
                try:
                    outs[i:i + k], amax[i:i + k], c = self._infer_frame(info, codes[i:i + k])
                except DeviceError as e:
                    if e.code not in (ErrorCode.UNSUPPORTED, ErrorCode.UNKNOWN_COMMAND):
                        raise
                    self._batch = 0     # an older or a cached bitstream: single INFERs from now on
                    continue
                self._batch = batch_limit(info)
                cycles[i:i + k] = c / k
                i += k
                continue
            # Two batches in flight when the board's FIFO holds what arrives meanwhile: the
            # next request crosses the wire while the board runs this one and replies.
            # (The batch the board may be busy with is at most `limit` inputs long.)
            if len(pending) >= (2 if self._can_pipeline(info, min(limit, max_batch or limit)) else 1):
                collect()
            self.send(Command.INFER_BATCH, self._code_payload(info, codes[i:i + k]))
            pending.append((i, k))
            i += k
        while pending:
            collect()
        return outs, amax, cycles

    @staticmethod
    def _can_pipeline(info, k):
        """Whether a batch of ``k`` may be sent before the reply to the previous one: the bytes
        that can arrive while the board runs a batch (with a quarter's margin on INFO's
        cycles per inference) and sends its reply fit :data:`RX_FIFO_BYTES`."""
        if not (info.clk_hz and info.baud and info.cycles_per_inference):
            return False
        byte_cycles = 10 * info.clk_hz / info.baud
        busy = 1.25 * k * info.cycles_per_inference / byte_cycles + 6 + batch_reply_len(info, k) + 8
        return busy <= RX_FIFO_BYTES

    def _drain(self, frames):
        """Read and drop the replies of ``frames`` requests still on their way (after an error)."""
        for _ in range(frames):
            try:
                self.receive()
            except LinkError:
                return

    def _infer_frame(self, info, rows):
        """One ``INFER_BATCH`` of ``rows`` (k, input_dim); returns outputs (k, output_dim),
        argmaxes (k,) and the batch's cycles."""
        self.send(Command.INFER_BATCH, self._code_payload(info, rows))
        return self._batch_reply(info, len(rows))

    def _batch_reply(self, info, k):
        """Receive and unpack the reply to an ``INFER_BATCH`` of ``k`` inputs already sent."""
        reply = self._reply_to(Command.INFER_BATCH)
        if len(reply) != batch_reply_len(info, k):
            raise LinkError(f"INFER_BATCH reply for {k} inputs has {len(reply)} bytes, expected "
                            f"{batch_reply_len(info, k)}")
        bo = code_bytes(info.output_bits)
        rec = info.output_dim * bo + 2
        outs = np.zeros((k, info.output_dim), dtype=np.int64)
        amax = np.zeros(k, dtype=np.int64)
        for j in range(k):
            r = reply[j * rec:(j + 1) * rec]
            outs[j] = [int.from_bytes(r[c:c + bo], "little", signed=True) for c in range(0, rec - 2, bo)]
            amax[j] = struct.unpack("<H", r[rec - 2:])[0]
        return outs, amax, struct.unpack("<I", reply[-4:])[0]

    def counters(self):
        """Counters since power-up or :meth:`clear_counters`: a dict keyed by :data:`COUNTER_NAMES`."""
        reply = self.request(Command.COUNTERS)
        values = struct.unpack(f"<{len(COUNTER_NAMES)}I", reply)
        return dict(zip(COUNTER_NAMES, values))

    def clear_counters(self):
        """Zero every counter."""
        self.request(Command.CLEAR_COUNTERS)

    def load_weights(self, words, *, start=0):
        """Write weight words into a board whose weights live in SPRAM (``info().weight_words > 0``).

        Parameters
        ----------
        words : sequence of int
            The engine's weight memory image (:func:`weight_image`), one int per word.
        start : int
            Address of the first word.

        Each frame carries as many words as ``max_payload`` allows; the board writes them
        only after the frame's CRC checks out, so a frame that fails is simply re-sent.
        """
        info = self._layout()
        if not info.weight_words:
            raise LinkError("this bitstream holds its weights; there is nothing to load")
        words = [int(w) for w in words]
        if start < 0 or start + len(words) > info.weight_words:
            raise ValueError(f"words {start}..{start + len(words) - 1} are outside the board's "
                             f"{info.weight_words}-word weight memory")
        nb = info.weight_word_bytes
        per_frame = (info.max_payload - 2) // nb
        for i in range(0, len(words), per_frame):
            chunk = words[i:i + per_frame]
            payload = struct.pack("<H", start + i) + b"".join(w.to_bytes(nb, "little") for w in chunk)
            for attempt in range(3):
                try:
                    self.request(Command.LOAD_WEIGHTS, payload)
                    break
                except DeviceError as e:
                    if e.code != ErrorCode.BAD_CRC or attempt == 2:
                        raise


    # --- the hypersphere cache -------------------------------------------------------------

    def cache_info(self):
        """The cache's geometry (:class:`~pwlnet.protocol.CacheInfo`: entries, metric, slot
        image bytes, cycles of a hit), or ``None`` if the bitstream has no cache (it answers
        ``CACHE_INFO`` with ``UNSUPPORTED``).  Asked once, then remembered."""
        if self._cache is self._UNKNOWN:
            try:
                reply = self.request(Command.CACHE_INFO)
            except DeviceError as e:
                if e.code != ErrorCode.UNSUPPORTED:
                    raise
                self._cache = None
            else:
                try:
                    self._cache = CacheInfo.unpack(reply)
                except ValueError as e:
                    raise LinkError(str(e)) from None
        return self._cache

    def _need_cache(self):
        cache = self.cache_info()
        if cache is None:
            raise LinkError("this bitstream has no hypersphere cache (CACHE_INFO is UNSUPPORTED); "
                            "build it with --cache-entries")
        return cache

    def slot_format(self):
        """The :class:`pwlnet.hw.slot_format.SlotFormat` of the board's slots, made from the model
        given to the constructor and the board's lanes and metric; its image length is
        checked against the board's."""
        if self._slot_format is None:
            from .hw.slot_format import SlotFormat
            cache = self._need_cache()
            if self._model is None:
                raise ValueError("cache entries need the model: make the Device with model=...")
            info = self._layout()
            fmt = SlotFormat(self._model, info.lanes, cache.metric)
            if fmt.image_bytes != cache.image_bytes:
                raise LinkError(f"the board's slots take {cache.image_bytes}-byte images, this model at "
                                f"{info.lanes} lanes makes {fmt.image_bytes}-byte ones (another build?)")
            self._slot_format = fmt
        return self._slot_format

    def cache_write(self, slot, entry):
        """Write ``entry`` (:class:`pwlnet.code_cache.HwEntry`) into ``slot``.

        The image is :meth:`pwlnet.hw.slot_format.SlotFormat.image`; the board writes it only
        after the frame's CRC checks out (a frame that fails is re-sent, at most twice).
        Inferences sent afterwards see the new entry.

        Raises
        ------
        ValueError
            ``slot`` is not in ``0..entries-1``, or the model was not given.
        pwlnet.code_cache.EntryError
            The entry does not fit the board's slots (the message names the field); nothing
            is sent.
        """
        from .code_cache import HwEntry
        cache = self._need_cache()
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < cache.entries:
            raise ValueError(f"slot must be an integer in 0..{cache.entries - 1}, not {slot!r}")
        if not isinstance(entry, HwEntry):
            raise TypeError(f"entry must be a pwlnet.code_cache.HwEntry, not {type(entry).__name__}")
        payload = bytes([int(slot)]) + self.slot_format().image(entry)
        for attempt in range(3):
            try:
                self.request(Command.CACHE_WRITE, payload)
                return
            except DeviceError as e:
                if e.code != ErrorCode.BAD_CRC or attempt == 2:
                    raise

    def cache_clear(self):
        """Invalidate every slot (the hit and miss counters are kept)."""
        self._need_cache()
        self.request(Command.CACHE_CLEAR)

    def cache_stats(self, reset=False):
        """The cache's :class:`CacheStats` (hits, misses) since power-up or the last reset;
        with ``reset`` they are zeroed right after being read, so no inference is lost
        between the two."""
        self._need_cache()
        reply = self.request(Command.CACHE_STATS, b"\x01" if reset else b"")
        if len(reply) != 8:
            raise LinkError(f"CACHE_STATS reply has {len(reply)} bytes, expected 8")
        return CacheStats(*struct.unpack("<II", reply))

    def run_cached(self, codes_stream, net, policy="round_robin", *, clear=True, margin=None):
        """Run input codes through the board's cache in order, filling a slot on every miss.

        The host's side is :class:`pwlnet.cache_host.CacheHost`, as in the golden loop
        :func:`pwlnet.cache_host.run_stream` (with ``slot_format``): after each inference it
        learns hit and slot from the reply, and on a miss makes the entry at the missed
        codes and writes it to the slot ``policy`` chooses (an entry that cannot be made or
        does not fit is not written).  So from an empty cache the board answers exactly as
        ``run_stream(model, net, codes_stream, entries, metric, policy, slot_format=...)``.

        Parameters
        ----------
        codes_stream : array_like of int, shape (N, input_dim)
        net : pwlnet.ir.Network or list
            The float network the model was compiled from, or its code-space blocks
            (:func:`pwlnet.code_cache.code_blocks`).
        policy : {"round_robin", "lru"}
        clear : bool
            Clear the board's cache first (default).  Without it the host knows nothing of
            the slots' contents and treats every slot as taken (a preloaded build).
        margin : float, optional
            See :func:`pwlnet.code_cache.radius_bound`.

        Returns
        -------
        CachedRun
        """
        from . import cache_host, code_cache
        cache = self._need_cache()
        fmt = self.slot_format()
        codes_stream = np.asarray(codes_stream)
        if not np.issubdtype(codes_stream.dtype, np.integer):
            raise ValueError(f"input codes must be integers, not {codes_stream.dtype}")
        codes_stream = codes_stream.astype(np.int64).reshape(len(codes_stream), -1)
        kw = {} if margin is None else {"margin": margin}
        host = cache_host.CacheHost(self._model, code_cache.code_blocks(self._model, net), cache.entries,
                                    cache.metric, policy, slot_format=fmt, **kw)
        if clear:
            self.cache_clear()
        else:
            host.valid[:] = True
        n = len(codes_stream)
        outputs = np.zeros((n, self._model.output_dim), dtype=np.int64)
        argmax = np.zeros(n, dtype=np.int64)
        hit = np.zeros(n, dtype=bool)
        slot = np.full(n, -1, dtype=np.int64)
        written = np.full(n, -1, dtype=np.int64)
        cycles = np.zeros(n, dtype=np.int64)
        for t, q in enumerate(codes_stream):
            r = self.infer(q)
            outputs[t], argmax[t], hit[t], cycles[t] = r.outputs, r.argmax, r.cached, r.cycles
            if r.cached:
                slot[t] = r.slot
            todo = host.seen(q, bool(r.cached), r.slot)
            if todo is not None:
                s, entry = todo
                self.cache_write(s, entry)
                written[t] = s
        return CachedRun(outputs, argmax, hit, slot, written, cycles, host.uncacheable)


def weight_image(model, lanes, cache=None):
    """The weight memory image the engine expects for ``model`` at ``lanes`` (for :meth:`Device.load_weights`).

    ``cache`` (:class:`~pwlnet.protocol.CacheInfo`, from :meth:`Device.cache_info`) is the
    board's cache, whose empty slots share the engine's weight memory.
    """
    if cache is not None:
        from .hw.cached_engine import cached_engine_plan
        plan = cached_engine_plan(model, lanes, cache.entries, cache.metric)
    else:
        from .hw.engine.plan import EnginePlan
        plan = EnginePlan(model, lanes)
    plan.weight_memory_for("ice40", "ram")      # refuses a model too large for SPRAM, as the engine does
    return plan.weight_words


# --- command line ---------------------------------------------------------------------------

#: The words ``pwlnet run --cache`` uses for a bitstream without a cache.
NO_CACHE = "the bitstream has no cache; build it with --cache-entries N"


def link_baud_of(model_dir):
    """The link rate of the bitstream built from ``model_dir``: ``baud_nominal`` of the build
    report beside it (``<build>/<board>/<model>/report.json`` holds ``model/``), else the
    board's default rate (:data:`pwlnet.boards.icebreaker.DEFAULT_BAUD`)."""
    import json
    from pathlib import Path

    from .boards.icebreaker import DEFAULT_BAUD
    report = Path(model_dir).parent / "report.json"
    try:
        r = json.loads(report.read_text())
        return int(r.get("baud_nominal") or r["baud"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_BAUD


def add_run_arguments(parser):
    """Add ``pwlnet run``'s arguments to an ``argparse`` parser."""
    from .cli_args import positive_int
    from .cache_host import POLICIES
    from .code_cache import METRICS
    parser.add_argument("model_dir", metavar="DIR", help="compiled model directory")
    parser.add_argument("--inputs", required=True, help=".npy of float inputs (N, ...) or, with --codes, input codes")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB1")
    where.add_argument("--sim", action="store_true", help="run the board's gateware in the simulator (slow)")
    parser.add_argument("--baud", type=int, default=None,
                        help="baud the bitstream was built for (default: the build report's, see link_baud_of)")
    parser.add_argument("--codes", action="store_true", help="--inputs already holds integer input codes")
    parser.add_argument("--outputs", help="write dequantized outputs (N, n_out) to this .npy")
    parser.add_argument("--lanes", type=int, default=8, help="engine lanes (--sim only)")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N inputs")
    c = parser.add_argument_group("hypersphere cache")
    c.add_argument("--cache", action="store_true",
                   help="fill the board's cache on misses, as the host does, and check every answer "
                        "(hit, slot, outputs) against the golden model in lockstep")
    c.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                   help="with --cache: the ONNX file DIR was compiled from (needed: the safe radii are the "
                        "float network's; checked against the SHA-256 recorded in DIR)")
    c.add_argument("--policy", choices=POLICIES, default=None,
                   help="with --cache: slot the host overwrites on a miss (default lru)")
    c.add_argument("--out", default=None, metavar="RESULT.npz",
                   help="with --cache: write hit, hit_center, inputs and outputs here, as pwlnet cache does")
    c.add_argument("--cache-entries", type=positive_int, default=None, metavar="N",
                   help="--sim: give the simulated board a cache of N slots (a board's cache is the one "
                        "its bitstream was built with)")
    c.add_argument("--cache-metric", choices=METRICS, default=None,
                   help="--sim: the simulated cache's metric (default linf)")
    return parser


def _usage_error(args):
    """What is wrong with a combination of ``pwlnet run`` options that argparse cannot
    check, or ``None``."""
    def g(name):     # options the `pwlnet run` parser of sw/cli.py may not define are unset
        return getattr(args, name, None)

    if not args.sim:
        for flag, name in (("--cache-entries", "cache_entries"), ("--cache-metric", "cache_metric")):
            if g(name) is not None:
                return (f"{flag} is for --sim; a board's cache is the one its bitstream was built with "
                        f"(pwlnet bitstream --cache-entries N)")
    elif g("cache_metric") is not None and g("cache_entries") is None:
        return "--cache-metric needs --cache-entries N"
    if not g("cache"):
        for flag, name in (("--onnx", "onnx"), ("--policy", "policy"), ("--out", "out")):
            if g(name) is not None:
                return f"{flag} is an option of --cache"
    elif g("codes"):
        return "--cache takes float inputs (its entries come from the float network), not --codes"
    return None


def cli_run(args):
    """``pwlnet run``: run inputs on the board (or the simulated board), compare with the golden model.

    With ``--cache`` the host fills the board's cache on every miss
    (:meth:`Device.run_cached`) and every answer -- hit or miss, slot, output codes,
    argmax -- and the board's hit and miss counters are compared with the golden loop
    (:func:`pwlnet.cache_run.run_cache`, :func:`pwlnet.cache_host.run_stream` with the
    engine's slot format) on the same stream.

    Returns the process exit status: 0 if every output matches the golden model bit for
    bit, 1 if any differs, 2 on a usage or link error.
    """
    from . import cache_run
    # Options the `pwlnet run` parser of sw/cli.py may not define take their defaults.
    as_codes = getattr(args, "codes", False)
    limit = getattr(args, "limit", None)
    lanes = getattr(args, "lanes", None)
    lanes = 8 if lanes is None else lanes
    baud = getattr(args, "baud", None) or link_baud_of(args.model_dir)
    cached = getattr(args, "cache", False)
    problem = _usage_error(args)
    if problem:
        print(f"pwlnet run: {problem}", file=sys.stderr)
        return 2
    net = None
    try:
        from .files import check_output_file, load_input_codes, load_inputs
        if lanes < 1:
            raise ValueError(f"--lanes must be a positive integer, not {lanes}")
        if limit is not None and limit < 0:
            raise ValueError(f"--limit must be a number of inputs, 0 or more, not {limit}")
        if getattr(args, "outputs", None):
            check_output_file(args.outputs, "--outputs")
        model = artifact.load(args.model_dir)
        if as_codes:
            x = load_inputs(args.inputs)
            if not np.issubdtype(x.dtype, np.integer):
                raise golden.InputError(f"{args.inputs}: --codes needs integers, not {x.dtype}")
            try:
                codes = golden._check_codes(golden._as_batch(model, x, "input codes"), model.input_bits,
                                            "input codes")
            except golden.InputError as e:
                raise golden.InputError(f"{args.inputs}: {e}") from None
        else:
            x, codes = load_input_codes(model, args.inputs)
        if limit is not None:
            x, codes = x[:limit], codes[:limit]
        if cached:
            # Everything that can be refused is refused before the (slow) board is opened.
            net = cache_run.load_float_network(model, getattr(args, "onnx", None))
            if getattr(args, "out", None) is not None:
                cache_run.check_result_path(args.out)
            if len(codes) == 0:
                raise cache_run.CacheRunError(f"{args.inputs}: the input stream holds no rows")
    except (artifact.ArtifactError, golden.InputError, OSError, ValueError) as e:
        print(f"pwlnet run: error: {e}", file=sys.stderr)
        return 2
    expect = golden.forward(model, codes)

    try:
        if args.sim:
            transport = SimTransport(model, lanes=lanes, cache_entries=getattr(args, "cache_entries", None) or 0,
                                     cache_metric=getattr(args, "cache_metric", None) or "linf")
        else:
            transport = SerialTransport(args.port, baud)
        with transport:
            dev = Device(transport, model=model)
            info = dev.info()
            print(f"board: {info.input_dim} -> {info.output_dim}, {info.lanes} lanes, "
                  f"{info.clk_hz / 1e6:.3f} MHz, {info.baud} baud, "
                  f"{info.cycles_per_inference} cycles/inference")
            if cached:
                cache = dev.cache_info()
                if cache is None or cache.entries == 0:
                    print(f"pwlnet run: {NO_CACHE}", file=sys.stderr)
                    return 2
            if info.weight_words:
                print(f"loading {info.weight_words} weight words ...")
                dev.load_weights(weight_image(model, info.lanes, dev.cache_info()))
            if cached:
                return _run_cached(args, dev, model, net, x, codes)
            t0 = time.monotonic()
            outs, amax, cycles = dev.infer_batch(codes)
            elapsed = time.monotonic() - t0
    except (LinkError, DeviceError, ValueError) as e:    # ValueError: a simulated board that cannot be built
        print(f"pwlnet run: {e}", file=sys.stderr)
        return 2

    bad = np.flatnonzero(np.any(outs != expect, axis=1) | (amax != golden.argmax(expect)))
    for i in bad[:20]:
        print(f"mismatch at input {i}: board {outs[i].tolist()} argmax {amax[i]}, "
              f"golden {expect[i].tolist()} argmax {golden.argmax(expect[i])}")
    if len(bad) > 20:
        print(f"... and {len(bad) - 20} more")
    n = len(codes)
    if n:
        batch = dev.batch_limit()
        how = f"INFER_BATCH frames of up to {batch}" if batch else "one INFER per input"
        print(f"{n} inferences, {n - len(bad)} match the golden model, {len(bad)} differ; "
              f"engine {cycles.mean():.0f} cycles each "
              f"({cycles.mean() / info.clk_hz * 1e6:.2f} us); link {n / elapsed:.1f} inferences/s ({how})")
    if args.outputs:
        from .files import save_npy
        save_npy(args.outputs, golden.dequantize_outputs(model, outs))
    return 1 if len(bad) else 0


def _run_cached(args, dev, model, net, x, codes):
    """``pwlnet run --cache`` on an open device with a cache; returns the exit status."""
    from . import cache_run
    info, cache = dev.info(), dev.cache_info()
    policy = getattr(args, "policy", None) or "lru"
    print(f"cache: {cache.entries} entries, {cache.metric}, {cache.image_bytes}-byte slot images, "
          f"a hit occupies the engine {cache.hit_cycles} cycles; host policy {policy}")
    dev.slot_format()     # the board's slot images must be this model's
    dev.clear_counters()
    dev.cache_stats(reset=True)
    t0 = time.monotonic()
    board = dev.run_cached(codes, net, policy)
    elapsed = time.monotonic() - t0
    stats = dev.cache_stats()
    counters = dev.counters()
    run = cache_run.run_cache(model, x, cache.entries, cache.metric, policy=policy, net=net, lanes=info.lanes,
                              board=board)

    gold = run.stream
    gold_argmax = golden.argmax(gold.outputs)
    bad = np.flatnonzero((board.hit != gold.hit) | (board.slot != gold.slot)
                         | np.any(board.outputs != gold.outputs, axis=1) | (board.argmax != gold_argmax))
    counters_agree = (stats.hits, stats.misses) == (gold.hits, gold.misses)

    n, hits = run.n, int(run.hit.sum())
    print(f"{n} inputs, {cache.entries} entries, {cache.metric}, {policy}: hit rate {100 * run.hit_rate:.2f} % "
          f"({hits} hits, {n - hits} misses); {int((board.written >= 0).sum())} entries written; argmax "
          f"differs from the full network on {run.n_argmax_disagree}")
    print(f"board counters: CACHE_STATS hits {stats.hits}, misses {stats.misses}; "
          + ", ".join(f"{k} {v}" for k, v in counters.items()))
    cyc = board.cycles

    def mean(sel):
        return f"{cyc[sel].mean():.1f}" if sel.any() else "n/a"

    print(f"cycles per inference as the board counts them (first input beat to last output beat): "
          f"hits {mean(board.hit)}, misses {mean(~board.hit)}, mean "
          f"{cyc.mean():.1f} ({cyc.mean() / info.clk_hz * 1e6:.2f} us at {info.clk_hz / 1e6:.3f} MHz)")
    print(f"link: {n} inferences in {elapsed:.2f} s, {n / elapsed:.1f} inferences/s "
          f"(with the host's cache writes)")
    if board.uncacheable:
        print(f"note: {board.uncacheable} misses left no entry (their entry does not fit the board's slots)")
    out = getattr(args, "out", None)
    if out is not None:
        cache_run.save_result(out, run)
    if getattr(args, "outputs", None):
        np.save(args.outputs, run.outputs)
    if len(bad) or not counters_agree:
        print(f"pwlnet run: error: the board disagrees with the golden model on {len(bad)} of {n} inferences; "
              f"counters {'agree' if counters_agree else 'differ'} (board hits {stats.hits}, misses "
              f"{stats.misses}; golden {gold.hits}, {gold.misses})"
              + (f"; {out} holds the board's answers" if out is not None else ""), file=sys.stderr)
        for t in bad[:20]:
            print(f"  input {t}: board {'hit' if board.hit[t] else 'miss'} slot {board.slot[t]} "
                  f"{board.outputs[t].tolist()} argmax {board.argmax[t]}; golden "
                  f"{'hit' if gold.hit[t] else 'miss'} slot {gold.slot[t]} {gold.outputs[t].tolist()} "
                  f"argmax {gold_argmax[t]}", file=sys.stderr)
        if len(bad) > 20:
            print(f"  ... and {len(bad) - 20} more", file=sys.stderr)
        return 1
    print(f"board and golden model agree on all {n} inferences (hit, slot, outputs, argmax) and the cache counters")
    return 0
