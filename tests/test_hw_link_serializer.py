"""The link's reply serializer alone: every reply is pwlnet.protocol's encode_frame(..., sync=REP_SYNC)."""

import struct

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from pwlnet.hw.link import ReplyKind, ReplySerializer
from pwlnet.hw.link.serializer import infer_reply_len
from pwlnet.protocol import (ERROR_REPLY, GATEWARE_VERSION, PROTOCOL_VERSION, REP_SYNC, REPLY_FLAG, CacheInfo,
                             Command, ErrorCode, LinkInfo, batch_reply_len, encode_frame)

from helpers import run_streams


def link_info(output_dim=4, output_bits=8):
    return LinkInfo(protocol=PROTOCOL_VERSION, version=GATEWARE_VERSION, input_dim=5, input_bits=8,
                    output_dim=output_dim, output_bits=output_bits, n_layers=2, lanes=8, clk_hz=48_000_000,
                    baud=115200, cycles_per_inference=123, model_crc=0xDEADBEEF, max_payload=64)


CACHE_INFO = CacheInfo(entries=3, metric="l1", image_bytes=42, hit_cycles=17)


class _Bench(Elaboratable):
    """The serializer with an output-code buffer holding ``codes``."""

    def __init__(self, info, codes, cache_info=None):
        self.dut = ReplySerializer(info, cache_info, slot_bits=2)
        self.codes = [int(c) for c in codes]
        self.bits = info.output_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.out_mem = mem = Memory(shape=signed(self.bits), depth=len(self.codes), init=self.codes)
        wiring.connect(m, self.dut.out_rd, mem.read_port())
        return m


def run_replies(bench, requests, inputs):
    """Send each (kind, cmd, err_code) of ``requests`` with the serializer's inputs set from
    ``inputs``; return the bytes of each reply, split at the serializer's ``done``."""
    dut = bench.dut
    frames = []

    async def tb(ctx):
        for name, value in inputs.items():
            ctx.set(getattr(dut, name), value)
        for kind, cmd, err in requests:
            ctx.set(dut.req.kind, kind)
            ctx.set(dut.req.cmd, cmd)
            ctx.set(dut.req.err_code, err)
            ctx.set(dut.req.valid, 1)
            await ctx.tick()
            ctx.set(dut.req.valid, 0)
            out = bytearray()
            for cycle in range(4000):
                # Every other reply meets a slow transmitter, which must not change the bytes.
                ctx.set(dut.tx.ready, 1 if len(frames) % 2 == 0 else cycle % 5 == 4)
                valid, ready = ctx.get(dut.tx.valid), ctx.get(dut.tx.ready)
                byte, done = ctx.get(dut.tx.payload), ctx.get(dut.req.done)
                await ctx.tick()
                if valid and ready:
                    out.append(byte)
                if done:
                    break
            else:
                raise AssertionError("the serializer never answered done")
            frames.append(bytes(out))

    run_streams(bench, tb)
    return frames


def test_plain_replies():
    info = link_info()
    codes = [5, -1, 127, -128]
    counters = [3, 2, 1, 0xABCDEF, 9]
    frames = run_replies(_Bench(info, codes), [
        (ReplyKind.INFO, Command.INFO, 0),
        (ReplyKind.INFER, Command.INFER, 0),
        (ReplyKind.COUNTERS, Command.COUNTERS, 0),
        (ReplyKind.EMPTY, Command.CLEAR_COUNTERS, 0),
        (ReplyKind.LOADED, Command.LOAD_WEIGHTS, 0),
        (ReplyKind.ERROR, Command.INFER, ErrorCode.BAD_CRC),
        (ReplyKind.INFO, Command.INFO, 0),
    ], {"argmax": 2, "cycles": 0x01020304,
        "counters": sum(c << (32 * i) for i, c in enumerate(counters))})
    infer = np.array(codes, dtype=np.int8).tobytes() + struct.pack("<HI", 2, 0x01020304)
    assert len(infer) == infer_reply_len(info, False)
    assert frames == [
        encode_frame(Command.INFO | REPLY_FLAG, info.pack(), sync=REP_SYNC),
        encode_frame(Command.INFER | REPLY_FLAG, infer, sync=REP_SYNC),
        encode_frame(Command.COUNTERS | REPLY_FLAG, struct.pack("<5I", *counters), sync=REP_SYNC),
        encode_frame(Command.CLEAR_COUNTERS | REPLY_FLAG, sync=REP_SYNC),
        encode_frame(Command.LOAD_WEIGHTS | REPLY_FLAG, sync=REP_SYNC),
        encode_frame(ERROR_REPLY, bytes([ErrorCode.BAD_CRC, Command.INFER]), sync=REP_SYNC),
        encode_frame(Command.INFO | REPLY_FLAG, info.pack(), sync=REP_SYNC),
    ]


def test_wide_codes_are_two_bytes():
    info = link_info(output_dim=3, output_bits=12)
    codes = [-2048, 2047, -5]
    frames = run_replies(_Bench(info, codes), [(ReplyKind.INFER, Command.INFER, 0)],
                         {"argmax": 1, "cycles": 77})
    assert frames == [encode_frame(Command.INFER | REPLY_FLAG,
                                   np.array(codes, dtype="<i2").tobytes() + struct.pack("<HI", 1, 77),
                                   sync=REP_SYNC)]


@pytest.mark.parametrize("hit, slot", [(0, 0), (1, 2)])
def test_cache_replies(hit, slot):
    info = link_info()
    codes = [1, 2, 3, 4]
    frames = run_replies(_Bench(info, codes, CACHE_INFO), [
        (ReplyKind.CACHE_INFO, Command.CACHE_INFO, 0),
        (ReplyKind.CACHE_STATS, Command.CACHE_STATS, 0),
        (ReplyKind.INFER, Command.INFER, 0),
        (ReplyKind.INFO, Command.INFO, 0),
        (ReplyKind.ERROR, Command.CACHE_WRITE, ErrorCode.BAD_ARGUMENT),
    ], {"argmax": 3, "cycles": 40, "hit": hit, "slot": slot, "hits": 0x12345678, "misses": 7})
    infer = bytes(codes) + struct.pack("<HIBB", 3, 40, hit, slot)
    assert len(infer) == infer_reply_len(info, True)
    assert frames == [
        encode_frame(Command.CACHE_INFO | REPLY_FLAG, CACHE_INFO.pack(), sync=REP_SYNC),
        encode_frame(Command.CACHE_STATS | REPLY_FLAG, struct.pack("<II", 0x12345678, 7), sync=REP_SYNC),
        encode_frame(Command.INFER | REPLY_FLAG, infer, sync=REP_SYNC),
        encode_frame(Command.INFO | REPLY_FLAG, info.pack(), sync=REP_SYNC),
        encode_frame(ERROR_REPLY, bytes([ErrorCode.BAD_ARGUMENT, Command.CACHE_WRITE]), sync=REP_SYNC),
    ]


class _BatchBench(_Bench):
    """The serializer with output and argmax buffers holding a batch."""

    def __init__(self, info, codes, argmaxes, max_batch):
        self.dut = ReplySerializer(info, slot_bits=2, max_batch=max_batch)
        self.codes = [int(c) for c in codes]
        self.argmaxes = [int(a) for a in argmaxes] + [0] * (max_batch - len(argmaxes))
        self.bits = info.output_bits

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.submodules.am_mem = mem = Memory(shape=16, depth=len(self.argmaxes), init=self.argmaxes)
        wiring.connect(m, self.dut.am_rd, mem.read_port())
        return m


def run_batch_replies(bench, counts, inputs):
    """As run_replies, for INFER replies with ``batch`` high and each of ``counts`` inputs
    (0: a single INFER's reply)."""
    dut = bench.dut
    frames = []
    for k in counts:
        async def tb(ctx, k=k):
            ctx.set(dut.req.batch, k > 0)
            ctx.set(dut.req.count, k)
            for name, value in inputs.items():
                ctx.set(getattr(dut, name), value)
            ctx.set(dut.req.kind, ReplyKind.INFER)
            ctx.set(dut.req.cmd, Command.INFER_BATCH if k else Command.INFER)
            ctx.set(dut.req.valid, 1)
            await ctx.tick()
            ctx.set(dut.req.valid, 0)
            ctx.set(dut.tx.ready, 1)
            out = bytearray()
            for _ in range(4000):
                valid, byte, done = ctx.get(dut.tx.valid), ctx.get(dut.tx.payload), ctx.get(dut.req.done)
                await ctx.tick()
                if valid:
                    out.append(byte)
                if done:
                    break
            frames.append(bytes(out))

        run_streams(bench, tb)
    return frames


@pytest.mark.parametrize("bits", [8, 12])
def test_batch_reply(bits):
    # Records of output codes and argmax, one per input, then the batch's cycles; a single
    # INFER reply from the same serializer is unchanged (its first record and its tail).
    info = link_info(output_dim=3, output_bits=bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = np.random.default_rng(bits).integers(lo, hi + 1, size=(4, 3))
    argmaxes = [2, 0, 1, 0x1234]
    dtype = np.int8 if bits == 8 else "<i2"
    frames = run_batch_replies(_BatchBench(info, codes.reshape(-1), argmaxes, 4), [4, 1, 0, 2],
                               {"argmax": 1, "cycles": 0xA1B2C3D4})

    def batch(k):
        body = b"".join(np.array(codes[j], dtype=dtype).tobytes() + struct.pack("<H", argmaxes[j]) for j in range(k))
        body += struct.pack("<I", 0xA1B2C3D4)
        assert len(body) == batch_reply_len(info, k)
        return encode_frame(Command.INFER_BATCH | REPLY_FLAG, body, sync=REP_SYNC)

    single = np.array(codes[0], dtype=dtype).tobytes() + struct.pack("<HI", 1, 0xA1B2C3D4)
    assert frames == [batch(4), batch(1), encode_frame(Command.INFER | REPLY_FLAG, single, sync=REP_SYNC), batch(2)]
