"""The contracts between the link's blocks: what the frame parser hands on.

The parser (:class:`~pwlnet.hw.link.parser.FrameParser`) checks a whole frame and then
either asks the executor (:class:`~pwlnet.hw.link.executor.CommandExecutor`) to run it
(:class:`ExecSignature`) or asks the reply serializer
(:class:`~pwlnet.hw.link.serializer.ReplySerializer`) for a reply of some
:class:`ReplyKind` (:class:`ReplySignature`); it waits for each to answer ``done``.
"""

import enum

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ReplyKind", "REPLY_KIND_BITS", "ReplySignature", "ExecSignature"]


class ReplyKind(enum.IntEnum):
    """What a reply carries; the serializer picks the body's bytes and length by it."""

    INFO = 0         #: :class:`pwlnet.protocol.LinkInfo`
    INFER = 1        #: output codes, argmax, cycles (and hit, slot with a cache); with
                     #: ``batch`` high, INFER_BATCH's records and cycles
    COUNTERS = 2     #: :data:`pwlnet.protocol.COUNTER_NAMES`, u32 each
    EMPTY = 3        #: no payload
    ERROR = 4        #: error code and the offending command
    LOADED = 5       #: no payload, after the executor has run (LOAD_WEIGHTS, CACHE_WRITE)
    CACHE_INFO = 6   #: :class:`pwlnet.protocol.CacheInfo`
    CACHE_STATS = 7  #: the engine's hits and misses, u32 each


#: Width of a :class:`ReplyKind` on a port.
REPLY_KIND_BITS = 3


class ReplySignature(wiring.Signature):
    """A reply request, parser to serializer (members as seen by the parser).

    Parameters
    ----------
    max_batch : int
        Most inputs of an ``INFER_BATCH`` (0: no batches, and no ``batch``, ``count``).

    Members
    -------
    valid : Out(1)
        One-cycle pulse: send a reply of ``kind`` now.
    kind : Out(3)
        A :class:`ReplyKind`.
    cmd : Out(8)
        The request's command byte (answered as ``cmd | REPLY_FLAG``, or named in an error
        reply); stable until ``done``.
    err_code : Out(8)
        The :class:`pwlnet.protocol.ErrorCode` of an ``ERROR`` reply.
    batch : Out(1)
        An ``INFER`` reply is ``INFER_BATCH``'s (only with ``max_batch``).
    count : Out(range(max_batch + 1))
        Its number of inputs, stable until ``done`` (only with ``max_batch``).
    done : In(1)
        One-cycle pulse: the reply's last byte has been taken.
    """

    def __init__(self, max_batch=0):
        self._max_batch = max_batch
        members = {
            "valid":    Out(1),
            "kind":     Out(REPLY_KIND_BITS),
            "cmd":      Out(8),
            "err_code": Out(8),
            "done":     In(1),
        }
        if max_batch:
            members.update({"batch": Out(1), "count": Out(range(max_batch + 1))})
        super().__init__(members)

    @property
    def max_batch(self):
        return self._max_batch

    def __eq__(self, other):
        return type(other) is type(self) and other.max_batch == self.max_batch

    def __repr__(self):
        return f"ReplySignature({self._max_batch})" if self._max_batch else "ReplySignature()"


class ExecSignature(wiring.Signature):
    """The parser's requests and strobes to the executor (members as seen by the parser).

    Parameters
    ----------
    staged_bytes : int
        Most payload bytes a frame stages for the executor (LOAD_WEIGHTS words, a
        CACHE_WRITE image); the width of ``staged``.
    max_batch : int
        Most inputs of an ``INFER_BATCH`` (0: no batches, and no ``batch``, ``count``).

    Members
    -------
    start : Out(1)
        One-cycle pulse: run the checked request (``infer``, ``load`` or ``cwrite``).
    infer, load, cwrite : Out(1)
        The request's command, decoded (stable from before ``start`` until ``done``).
    arg0 : Out(8)
        The payload's first byte (CACHE_WRITE's slot).
    staged : Out(range(staged_bytes + 1))
        Payload bytes the frame left in the staging buffer.
    byte : Out(8)
        The payload byte being received.
    addr_we : Out(2)
        LOAD_WEIGHTS' first word address arrives: ``byte`` is its low (bit 0) or high
        (bit 1) byte.
    count_frame, count_error : Out(1)
        Count a frame handled, an error reply.
    clear_counters : Out(1)
        CLEAR_COUNTERS: zero every counter.
    cache_clear, clear_stats : Out(1)
        CACHE_CLEAR, and CACHE_STATS with flag 0 once its reply is out.
    batch : Out(1)
        The request is an ``INFER_BATCH`` (stable from before ``start`` until ``done``;
        only with ``max_batch``).
    count : Out(range(max_batch + 1))
        Its number of inputs, whole inputs in the input buffer from address 0 (only with
        ``max_batch``).
    done : In(1)
        One-cycle pulse: the request has run.
    """

    def __init__(self, staged_bytes, max_batch=0):
        self._staged_bytes = staged_bytes
        self._max_batch = max_batch
        members = {
            "start":          Out(1),
            "infer":          Out(1),
            "load":           Out(1),
            "cwrite":         Out(1),
            "arg0":           Out(8),
            "staged":         Out(range(staged_bytes + 1)),
            "byte":           Out(8),
            "addr_we":        Out(2),
            "count_frame":    Out(1),
            "count_error":    Out(1),
            "clear_counters": Out(1),
            "cache_clear":    Out(1),
            "clear_stats":    Out(1),
            "done":           In(1),
        }
        if max_batch:
            members.update({"batch": Out(1), "count": Out(range(max_batch + 1))})
        super().__init__(members)

    @property
    def staged_bytes(self):
        return self._staged_bytes

    @property
    def max_batch(self):
        return self._max_batch

    def __eq__(self, other):
        return (type(other) is type(self) and other.staged_bytes == self.staged_bytes
                and other.max_batch == self.max_batch)

    def __repr__(self):
        if self._max_batch:
            return f"ExecSignature({self._staged_bytes}, max_batch={self._max_batch})"
        return f"ExecSignature({self._staged_bytes})"
