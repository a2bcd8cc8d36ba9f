"""The wire protocol between the host and the board: frames, commands, error codes, CRC, replies.

Plain Python with no hardware in it, so that the gateware (:mod:`pwlnet.hw.link`) and the
host driver (:mod:`pwlnet.host`) import the same definitions and each rule is written once.

Frame format (both directions; multi-byte fields little-endian)::

    SYNC  CMD  LEN_LO LEN_HI  PAYLOAD[LEN]  CRC_LO CRC_HI

``SYNC`` is :data:`REQ_SYNC` (``0xA5``) host to device and :data:`REP_SYNC` (``0x5A``)
device to host, so a looped-back cable or an echoing adapter is recognised at once.
The CRC is CRC-16/CCITT-FALSE (polynomial ``0x1021``, initial value ``0xFFFF``, no
reflection, no final XOR) over ``CMD``, ``LEN`` and ``PAYLOAD``.  A successful reply
carries ``CMD | 0x80``; an error reply carries :data:`ERROR_REPLY` with the two-byte
payload ``(error code, offending command)``.  How the device handles frames (one at a
time, resynchronisation, timeouts) is described in :mod:`pwlnet.hw.link` and
docs/protocol.md.
"""

import dataclasses
import enum
import struct
import zlib

import numpy as np

__all__ = [
    "PROTOCOL_VERSION", "GATEWARE_VERSION", "REQ_SYNC", "REP_SYNC", "ERROR_REPLY", "REPLY_FLAG",
    "CRC_POLY", "Command", "ErrorCode", "RESERVED_COMMANDS", "CACHE_COMMANDS", "CACHE_METRIC_CODES",
    "COUNTER_NAMES", "MAX_CACHE_ENTRIES", "RX_FIFO_BYTES", "check_cache_entries", "batch_limit", "batch_reply_len",
    "crc16", "encode_frame", "code_bytes", "field_bytes", "model_fingerprint", "LinkInfo", "CacheInfo",
]

PROTOCOL_VERSION = 1
REQ_SYNC = 0xA5
REP_SYNC = 0x5A
REPLY_FLAG = 0x80
ERROR_REPLY = 0xFF
#: Gateware version reported by INFO (major, minor, patch); 0.2 added INFER_BATCH (the protocol,
#: version 1, only gained a command: an older device answers it UNKNOWN_COMMAND).
GATEWARE_VERSION = (0, 2, 0)


class Command(enum.IntEnum):
    """Request commands.  ``0x10``-``0x1F`` belong to the hypersphere cache; a bitstream
    without a cache answers all of them ``UNSUPPORTED``."""

    INFO = 0x01            #: no payload; reply: :class:`LinkInfo`
    INFER = 0x02           #: payload: input codes; reply: output codes, argmax (u16), cycles (u32)
    COUNTERS = 0x03        #: no payload; reply: :data:`COUNTER_NAMES` as u32 each
    CLEAR_COUNTERS = 0x04  #: no payload; reply: empty
    LOAD_WEIGHTS = 0x05    #: payload: u16 first word address, then whole weight words; reply: empty
    INFER_BATCH = 0x06     #: payload: k whole inputs' codes (1 <= k <= :func:`batch_limit`); reply: per
                           #: input its output codes and u16 argmax, then one u32 cycles (:func:`batch_reply_len`)
    CACHE_WRITE = 0x10     #: payload: u8 slot, then the slot image; reply: empty
    CACHE_CLEAR = 0x11     #: no payload; invalidate every slot; reply: empty
    CACHE_STATS = 0x12     #: payload: none or u8 flags (bit 0: zero the counters); reply: u32 hits, u32 misses
    CACHE_INFO = 0x13      #: no payload; reply: :class:`CacheInfo`


#: Command codes of the cache; a device without one answers ``UNSUPPORTED`` to all of them.
RESERVED_COMMANDS = range(0x10, 0x20)
#: The cache commands a cached build implements (the rest of :data:`RESERVED_COMMANDS`
#: stays ``UNSUPPORTED``).
CACHE_COMMANDS = (Command.CACHE_WRITE, Command.CACHE_CLEAR, Command.CACHE_STATS, Command.CACHE_INFO)
#: Metric codes of the CACHE_INFO reply (the same as :mod:`pwlnet.code_cache`'s entry words).
CACHE_METRIC_CODES = {"l2": 0, "linf": 1, "l1": 2}


class ErrorCode(enum.IntEnum):
    """First payload byte of an error reply."""

    BAD_CRC = 0x01          #: the frame's CRC does not match
    BAD_LENGTH = 0x02       #: LEN is wrong for the command, or above ``max_payload``
    UNKNOWN_COMMAND = 0x03  #: CMD is not a command at all
    TIMEOUT = 0x04          #: the frame stopped arriving mid-way
    UNSUPPORTED = 0x05      #: a command this bitstream does not implement (a cache command
                            #: without a cache, or LOAD_WEIGHTS when the weights are built in)
    BAD_ARGUMENT = 0x06     #: a field of the payload is out of range (CACHE_WRITE's slot,
                            #: CACHE_STATS' flags, LOAD_WEIGHTS' words past the weight memory)


#: Most cache slots a link addresses: the slot field of CACHE_WRITE is one byte.
MAX_CACHE_ENTRIES = 256


def check_cache_entries(entries, name="cache_entries"):
    """Return ``entries`` if it is an integer in ``0..MAX_CACHE_ENTRIES``, else raise.

    0 means no cache.  Raises :class:`ValueError` naming ``name`` and the value.
    """
    if isinstance(entries, bool) or not isinstance(entries, int) or not 0 <= entries <= MAX_CACHE_ENTRIES:
        raise ValueError(f"{name} must be an integer in 0..{MAX_CACHE_ENTRIES}, not {entries!r}")
    return entries


#: Bytes of the device's receive FIFO: what a host may send while the device is busy with
#: an earlier request (running it, sending its reply) without losing a byte.
RX_FIFO_BYTES = 256

#: Order of the u32 counters in a COUNTERS reply.
COUNTER_NAMES = ("frames", "inferences", "errors", "busy_cycles", "uart_errors")

CRC_POLY = 0x1021


def crc16(buf, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``buf`` (bytes), continuing from ``crc``."""
    for byte in bytes(buf):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode_frame(cmd, payload=b"", *, sync=REQ_SYNC):
    """A complete frame: sync, command, length, payload and CRC."""
    payload = bytes(payload)
    if not 0 <= cmd <= 0xFF:
        raise ValueError(f"command must be a byte, not {cmd!r}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit the 16-bit length")
    body = bytes([cmd]) + struct.pack("<H", len(payload)) + payload
    return bytes([sync]) + body + struct.pack("<H", crc16(body))


def code_bytes(bits):
    """Bytes per code on the wire: 1 up to 8 bits, else 2 (little-endian two's complement)."""
    return 1 if bits <= 8 else 2


def field_bytes(bits):
    """Bytes of a ``bits``-wide little-endian field on the wire: whole bytes, at least one."""
    return max(1, -(-int(bits) // 8))


def batch_limit(info):
    """Most inputs one ``INFER_BATCH`` frame may carry on a device of :class:`LinkInfo` ``info``:
    as many whole inputs as ``max_payload`` holds.

    A device that answers ``INFER_BATCH`` at all (a build without the cache) sizes its
    buffers for exactly this many; a payload that is not a whole number of inputs, or is
    empty, is ``BAD_LENGTH``, and a longer one is refused by ``max_payload``.
    """
    return info.max_payload // (info.input_dim * code_bytes(info.input_bits))


def batch_reply_len(info, k):
    """Payload bytes of the reply to an ``INFER_BATCH`` of ``k`` inputs: for each input its
    ``output_dim`` output codes and a u16 argmax, in order, then one u32: the cycles from the
    engine's first input beat of the batch to its last output beat."""
    return k * (info.output_dim * code_bytes(info.output_bits) + 2) + 4


def model_fingerprint(model):
    """CRC-32 of a compiled model's integer arrays, so the host can tell which model a board holds."""
    crc = zlib.crc32(struct.pack("<HB", model.input_dim, model.input_bits))
    for layer in model.layers:
        for arr in (layer.weight, layer.bias, layer.multiplier, layer.shift):
            crc = zlib.crc32(np.ascontiguousarray(arr, dtype="<i8").tobytes(), crc)
        crc = zlib.crc32(struct.pack("<BBB", layer.out_bits, layer.weight_bits,
                                     layer.activation == "relu"), crc)
    return crc


@dataclasses.dataclass(frozen=True)
class LinkInfo:
    """The INFO reply: what the bitstream holds and how fast it runs.

    Wire layout (35 bytes, little-endian): ``u8 protocol, u8 major, u8 minor, u8 patch,
    u16 input_dim, u8 input_bits, u16 output_dim, u8 output_bits, u8 n_layers, u8 lanes,
    u32 clk_hz, u32 baud, u32 cycles_per_inference, u32 model_crc, u16 max_payload,
    u32 weight_words, u8 weight_word_bytes``.  ``model_crc`` is :func:`model_fingerprint`
    of the model built in.  ``weight_words`` is 0 when the weights are part of the
    bitstream; otherwise that many words of ``weight_word_bytes`` bytes must be sent with
    ``LOAD_WEIGHTS`` after every configuration.
    """

    protocol: int
    version: tuple
    input_dim: int
    input_bits: int
    output_dim: int
    output_bits: int
    n_layers: int
    lanes: int
    clk_hz: int
    baud: int
    cycles_per_inference: int
    model_crc: int
    max_payload: int
    weight_words: int = 0
    weight_word_bytes: int = 0

    _FORMAT = "<BBBBHBHBBBIIIIHIB"

    def pack(self):
        return struct.pack(self._FORMAT, self.protocol, *self.version, self.input_dim,
                           self.input_bits, self.output_dim, self.output_bits, self.n_layers,
                           self.lanes, self.clk_hz, self.baud, self.cycles_per_inference,
                           self.model_crc, self.max_payload, self.weight_words, self.weight_word_bytes)

    @classmethod
    def unpack(cls, buf):
        if len(buf) != struct.calcsize(cls._FORMAT):
            raise ValueError(f"INFO payload has {len(buf)} bytes, expected {struct.calcsize(cls._FORMAT)}")
        f = struct.unpack(cls._FORMAT, bytes(buf))
        return cls(f[0], tuple(f[1:4]), *f[4:])


@dataclasses.dataclass(frozen=True)
class CacheInfo:
    """The CACHE_INFO reply: the cache geometry the host needs to fill the slots.

    Wire layout (9 bytes, little-endian): ``u16 entries, u8 metric, u16 image_bytes,
    u32 hit_cycles``.  ``metric`` is a :data:`CACHE_METRIC_CODES` code (0 ``l2``,
    1 ``linf``, 2 ``l1``); ``image_bytes`` is the length of one slot image
    (:meth:`pwlnet.hw.slot_format.SlotFormat.image`), so a CACHE_WRITE payload is
    ``1 + image_bytes`` bytes; ``hit_cycles`` is the cycles an inference answered by an
    entry occupies the engine (a miss takes INFO's ``cycles_per_inference``).
    """

    entries: int
    metric: str
    image_bytes: int
    hit_cycles: int

    _FORMAT = "<HBHI"

    def pack(self):
        return struct.pack(self._FORMAT, self.entries, CACHE_METRIC_CODES[self.metric],
                           self.image_bytes, self.hit_cycles)

    @classmethod
    def unpack(cls, buf):
        if len(buf) != struct.calcsize(cls._FORMAT):
            raise ValueError(f"CACHE_INFO payload has {len(buf)} bytes, expected {struct.calcsize(cls._FORMAT)}")
        entries, code, image_bytes, hit_cycles = struct.unpack(cls._FORMAT, bytes(buf))
        names = {v: k for k, v in CACHE_METRIC_CODES.items()}
        if code not in names:
            raise ValueError(f"CACHE_INFO names metric code {code}; known are {sorted(names)}")
        return cls(entries, names[code], image_bytes, hit_cycles)
