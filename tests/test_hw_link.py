# amaranth: UnusedElaboratable=no
"""The framed link at the byte-stream level (no UART), with the real engine behind it."""

import struct

import numpy as np
import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.sim import Simulator

from pwlnet import code_cache, golden
from pwlnet.hw.cached_engine import CachedEngine, CachedEngineSignature
from pwlnet.hw.engine import MLPEngine, ideal_cycles
from pwlnet.hw.link import Link
from pwlnet.hw.slot_format import SlotFormat
from pwlnet.protocol import (COUNTER_NAMES, ERROR_REPLY, REP_SYNC, REQ_SYNC, CacheInfo, Command, ErrorCode,
                             LinkInfo, batch_limit, batch_reply_len, crc16, encode_frame, model_fingerprint)
from pwlnet.synth import random_model

TIMEOUT = 300


def test_timeout_checked():
    with pytest.raises(ValueError, match="timeout must be a positive number of cycles, not 0"):
        Link(random_model(0, [2, 2]), lanes=8, clk_freq=1e6, baud=1, timeout=0)


class _Bench(Elaboratable):
    def __init__(self, model, lanes=8, engine=MLPEngine):
        self.engine = engine(model, lanes, target="generic")
        self.link = Link(model, lanes=lanes, clk_freq=1e6, baud=100_000,
                         cycles_per_inference=self.engine.cycles_per_inference, timeout=TIMEOUT)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine, m.submodules.link = self.engine, self.link
        wiring.connect(m, self.link.eng_i, self.engine.i)
        wiring.connect(m, self.engine.o, self.link.eng_o)
        return m


def run_link(model, actions, *, settle=600, engine=MLPEngine):
    """Feed `actions` (bytes, or an int = idle cycles) to the link; return its reply frames."""
    return drive_link(_Bench(model, engine=engine), actions, settle=settle)[0]


def drive_link(dut, actions, *, settle=600):
    """Feed `actions` (bytes, or an int = idle cycles) to ``dut.link`` until it has been quiet
    for ``settle`` cycles; return its reply frames and the (slot, byte) beats it wrote to the
    engine's ``cw`` port (a cached bench only)."""
    link = dut.link
    out = bytearray()
    cw = []

    async def producer(ctx):
        for act in actions:
            if isinstance(act, int):
                for _ in range(act):
                    await ctx.tick()
                continue
            for b in act:
                ctx.set(link.rx.payload, b)
                ctx.set(link.rx.valid, 1)
                await ctx.tick()
                while not ctx.get(link.rx.ready):
                    await ctx.tick()
            ctx.set(link.rx.valid, 0)
        quiet = 0
        while quiet < settle:
            await ctx.tick()
            quiet = 0 if ctx.get(link.tx.valid) or ctx.get(link.busy) else quiet + 1

    async def monitor(ctx):
        ctx.set(link.tx.ready, 1)
        while True:
            await ctx.tick()
            if ctx.get(link.tx.valid):
                out.append(ctx.get(link.tx.payload))
            if hasattr(link, "cw") and ctx.get(link.cw.valid) and ctx.get(link.cw.ready):
                cw.append((ctx.get(link.cw.payload.slot), ctx.get(link.cw.payload.data)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return parse(bytes(out)), cw


def parse(buf):
    frames = []
    i = 0
    while i < len(buf):
        assert buf[i] == REP_SYNC, f"byte {i} of the reply stream is 0x{buf[i]:02x}, not SYNC"
        cmd, length = buf[i + 1], struct.unpack("<H", buf[i + 2:i + 4])[0]
        payload = buf[i + 4:i + 4 + length]
        crc = struct.unpack("<H", buf[i + 4 + length:i + 6 + length])[0]
        assert crc == crc16(buf[i + 1:i + 4 + length]), "reply CRC"
        frames.append((cmd, bytes(payload)))
        i += 6 + length
    return frames


def error(code, cmd):
    return (ERROR_REPLY, bytes([code, cmd]))


@pytest.fixture(scope="module")
def model():
    return random_model(7, [5, 9, 4])


def infer_frame(codes, nbytes=1):
    return encode_frame(Command.INFER, b"".join(int(c).to_bytes(nbytes, "little", signed=True) for c in codes))


def check_infer(model, frame, codes):
    cmd, payload = frame
    assert cmd == Command.INFER | 0x80
    n = model.output_dim
    out = np.frombuffer(payload[:n], dtype=np.int8).astype(np.int64)
    argmax, cycles = struct.unpack("<HI", payload[n:])
    expect = golden.forward(model, np.array([codes]))[0]
    np.testing.assert_array_equal(out, expect)
    assert argmax == golden.argmax(expect)
    assert cycles > 0
    return cycles


def test_info_and_infer(model):
    rng = np.random.default_rng(1)
    xs = rng.integers(-128, 128, size=(3, model.input_dim))
    frames = run_link(model, [encode_frame(Command.INFO)] + [infer_frame(x) for x in xs])
    assert len(frames) == 4
    info = LinkInfo.unpack(frames[0][1])
    assert frames[0][0] == Command.INFO | 0x80
    assert (info.input_dim, info.output_dim, info.lanes) == (model.input_dim, model.output_dim, 8)
    assert info.model_crc == model_fingerprint(model)
    cycles = {check_infer(model, f, x) for f, x in zip(frames[1:], xs)}
    assert len(cycles) == 1, "latency is static"


def test_errors_then_good_frame(model):
    x = np.arange(model.input_dim) * 7 - 10
    good = infer_frame(x)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x01
    corrupt_payload = bytearray(good)
    corrupt_payload[5] ^= 0x40
    frames = run_link(model, [
        bytes(bad_crc), good,                                   # CRC byte flipped
        bytes(corrupt_payload),                                 # payload bit flipped
        infer_frame(x[:-1]),                                    # one code short
        encode_frame(Command.INFO, b"\x00"),                    # INFO takes no payload
        encode_frame(0x7E),                                     # no such command
        encode_frame(Command.CACHE_WRITE, b"\x01\x02"),         # reserved for the cache
        good,
    ])
    assert frames[0] == error(ErrorCode.BAD_CRC, Command.INFER)
    check_infer(model, frames[1], x)
    assert frames[2] == error(ErrorCode.BAD_CRC, Command.INFER)
    assert frames[3] == error(ErrorCode.BAD_LENGTH, Command.INFER)
    assert frames[4] == error(ErrorCode.BAD_LENGTH, Command.INFO)
    assert frames[5] == error(ErrorCode.UNKNOWN_COMMAND, 0x7E)
    assert frames[6] == error(ErrorCode.UNSUPPORTED, Command.CACHE_WRITE)
    check_infer(model, frames[7], x)
    assert len(frames) == 8


def test_huge_length_answered_at_once(model):
    # A corrupt length must not make the link wait for 60 KB: it answers after the header.
    x = np.zeros(model.input_dim, dtype=int)
    frames = run_link(model, [bytes([REQ_SYNC, Command.INFER, 0x00, 0xF0]), infer_frame(x)])
    assert frames[0] == error(ErrorCode.BAD_LENGTH, Command.INFER)
    check_infer(model, frames[1], x)


def test_garbage_resync_and_timeout(model):
    x = np.full(model.input_dim, 3)
    good = infer_frame(x)
    frames = run_link(model, [
        b"\x00\xff\x13\x37garbage", good,           # garbage without SYNC is skipped
        # A frame that stops mid-way (the wait counts from when the link has answered
        # the previous frame and started on this one).
        good[:4], 2 * TIMEOUT,
        good,
    ])
    check_infer(model, frames[0], x)
    assert frames[1] == error(ErrorCode.TIMEOUT, Command.INFER)
    check_infer(model, frames[2], x)
    assert len(frames) == 3


def test_counters(model):
    x = np.zeros(model.input_dim, dtype=int)
    bad = bytearray(infer_frame(x))
    bad[-2] ^= 0xFF
    frames = run_link(model, [infer_frame(x), infer_frame(x), bytes(bad), encode_frame(Command.COUNTERS),
                              encode_frame(Command.CLEAR_COUNTERS), encode_frame(Command.COUNTERS)])
    assert frames[3][0] == Command.COUNTERS | 0x80
    c = dict(zip(COUNTER_NAMES, struct.unpack("<5I", frames[3][1])))
    # `frames` counts good requests, the COUNTERS request itself included.
    assert c["frames"] == 3 and c["inferences"] == 2 and c["errors"] == 1 and c["uart_errors"] == 0
    ideal = ideal_cycles(model.layers, 8)
    assert c["busy_cycles"] >= 2 * ideal
    assert frames[4] == (Command.CLEAR_COUNTERS | 0x80, b"")
    assert struct.unpack("<5I", frames[5][1]) == (1, 0, 0, 0, 0)


def test_wide_codes():
    # 12-bit codes travel as two bytes each, sign-extended.
    m = random_model(5, [3, 4, 2], act_bits=12, weight_bits=8)
    rng = np.random.default_rng(2)
    x = rng.integers(-2048, 2048, size=m.input_dim)
    frames = run_link(m, [infer_frame(x, 2)])
    cmd, payload = frames[0]
    n = 2 * m.output_dim
    out = np.frombuffer(payload[:n], dtype="<i2").astype(np.int64)
    expect = golden.forward(m, x[None])[0]
    np.testing.assert_array_equal(out, expect)
    assert struct.unpack("<HI", payload[n:])[0] == golden.argmax(expect)


def test_narrow_codes_are_sign_extended():
    # 4-bit codes travel as one byte each, sign-extended like the wide ones (a negative
    # output code was sent zero-extended: -3 arrived as 13).
    m = random_model(3, [3, 5, 4], act_bits=4, weight_bits=4)
    rng = np.random.default_rng(5)
    xs = rng.integers(-8, 8, size=(12, m.input_dim))
    expect = golden.forward(m, xs)
    assert m.layers[-1].out_bits < 8 and (expect < 0).any()
    frames = run_link(m, [infer_frame(x, 1) for x in xs])
    for (cmd, payload), want in zip(frames, expect):
        assert cmd == Command.INFER | 0x80
        out = np.frombuffer(payload[:m.output_dim], dtype=np.int8).astype(np.int64)
        np.testing.assert_array_equal(out, want)


def test_link_over_the_stand_in_engine(model):
    # The link needs only the engine's contract: over the stand-in engine it answers the
    # stand-in's own function, with the stand-in's arg-max and cycle count.
    from pwlnet.sim.toy import ToyEngine, toy_forward
    rng = np.random.default_rng(4)
    xs = rng.integers(-128, 128, size=(2, model.input_dim))
    frames = run_link(model, [infer_frame(x) for x in xs], engine=ToyEngine)
    for (cmd, payload), x in zip(frames, xs):
        assert cmd == Command.INFER | 0x80
        n = model.output_dim
        out = np.frombuffer(payload[:n], dtype=np.int8).astype(np.int64)
        argmax, cycles = struct.unpack("<HI", payload[n:])
        expect = toy_forward(model, x[None, :])[0]
        np.testing.assert_array_equal(out, expect)
        assert argmax == golden.argmax(expect) and cycles > 0


# --- the hypersphere cache ---------------------------------------------------------------

CACHE_ENTRIES = 3


class _CachedBench(Elaboratable):
    def __init__(self, model, lanes, entries, metric):
        self.engine = CachedEngine(model, lanes, entries, metric, target="generic")
        self.link = Link(model, lanes=lanes, clk_freq=1e6, baud=100_000,
                         cycles_per_inference=self.engine.cycles_per_inference, timeout=TIMEOUT,
                         cache_entries=entries, cache_image_bytes=self.engine.fmt.image_bytes,
                         cache_metric=metric, cache_hit_cycles=self.engine.hit_cycles)

    def elaborate(self, platform):
        m = Module()
        eng, link = self.engine, self.link
        m.submodules.engine, m.submodules.link = eng, link
        wiring.connect(m, link.eng_i, eng.i)
        wiring.connect(m, eng.o, link.eng_o)
        wiring.connect(m, link.cw, eng.cw)
        m.d.comb += [eng.clear.eq(link.cache_clear), eng.clear_stats.eq(link.clear_stats),
                     link.hits.eq(eng.hits), link.misses.eq(eng.misses)]
        return m


def run_cached_link(dut, actions, *, settle=600):
    """As :func:`run_link` on a cached bench; also returns the (slot, byte) beats the link
    wrote to the engine's ``cw`` port."""
    return drive_link(dut, actions, settle=settle)


@pytest.fixture(scope="module")
def cache_case(cache_net):
    """A compiled model with its float blocks, and two inputs whose entries fit the slots."""
    net, model, blocks = cache_net
    fmt = SlotFormat(model, 4, "linf")
    rng = np.random.default_rng(5)
    points, entries = [], []
    while len(points) < 2:
        q = rng.integers(-100, 100, size=model.input_dim)
        e = code_cache.make_entry(model, blocks, q, "linf")
        # Two entries that each miss the other's center, so each write is seen on its own.
        if fmt.fits(e) and not any(p.hits(q) or e.hits(p.center) for p in entries):
            points.append(q)
            entries.append(e)
    return model, fmt, points, entries


def check_cached_infer(model, frame, codes, cache):
    """An INFER reply of a cached build against the golden cache (which counts the lookup)."""
    cmd, payload = frame
    assert cmd == Command.INFER | 0x80
    n = model.output_dim
    assert len(payload) == n + 8
    look = cache.lookup(np.asarray(codes)[None])
    out = np.frombuffer(payload[:n], dtype=np.int8).astype(np.int64)
    argmax, cycles, hit, slot = struct.unpack("<HIBB", payload[n:])
    np.testing.assert_array_equal(out, look.outputs[0])
    assert argmax == golden.argmax(look.outputs[0])
    assert (bool(hit), slot) == (bool(look.hit[0]), max(0, int(look.slot[0])))
    return bool(hit), cycles


def test_cache_commands(cache_case):
    model, fmt, (x, y), (ex, ey) = cache_case
    dut = _CachedBench(model, 4, CACHE_ENTRIES, "linf")
    gold = code_cache.HwCache(model, CACHE_ENTRIES, "linf")
    write_x = encode_frame(Command.CACHE_WRITE, bytes([1]) + fmt.image(ex))
    bad_y = bytearray(encode_frame(Command.CACHE_WRITE, bytes([2]) + fmt.image(ey)))
    bad_y[-1] ^= 0x10                                        # CRC byte flipped
    bad_y_payload = bytearray(encode_frame(Command.CACHE_WRITE, bytes([2]) + fmt.image(ey)))
    bad_y_payload[20] ^= 0x01                                # image bit flipped
    frames, cw = run_cached_link(dut, [
        encode_frame(Command.CACHE_INFO),
        infer_frame(x),                                                       # 1: miss
        write_x,                                                              # 2
        infer_frame(x), infer_frame(y),                                       # 3: hit slot 1, 4: miss
        bytes(bad_y), bytes(bad_y_payload),                                   # 5, 6: BAD_CRC
        infer_frame(y),                                                       # 7: still a miss
        encode_frame(Command.CACHE_WRITE, bytes([2]) + fmt.image(ey)[:-1]),   # 8: one byte short
        encode_frame(Command.CACHE_WRITE, bytes([CACHE_ENTRIES]) + fmt.image(ey)),  # 9: no such slot
        encode_frame(Command.CACHE_STATS, b"\x01"),                           # 10: read and zero
        encode_frame(Command.CACHE_STATS),                                    # 11: zeroed
        encode_frame(Command.CACHE_STATS, b"\x02"),                           # 12: unknown flag
        encode_frame(Command.CACHE_STATS, b"\x00\x00"),                       # 13: too long
        encode_frame(Command.CACHE_CLEAR, b"\x00"),                           # 14: takes no payload
        infer_frame(x),                                                       # 15: hit slot 1
        encode_frame(Command.CACHE_CLEAR),                                    # 16
        infer_frame(x),                                                       # 17: miss
        encode_frame(Command.CACHE_STATS),                                    # 18
        encode_frame(0x14),                                                   # 19: rest of the range
        encode_frame(Command.INFO),                                           # 20
    ])
    assert len(frames) == 21
    assert frames[0] == (Command.CACHE_INFO | 0x80,
                         CacheInfo(CACHE_ENTRIES, "linf", fmt.image_bytes, dut.engine.hit_cycles).pack())
    assert CacheInfo.unpack(frames[0][1]).image_bytes == fmt.image_bytes
    hit, miss_cycles = check_cached_infer(model, frames[1], x, gold)
    assert not hit
    assert frames[2] == (Command.CACHE_WRITE | 0x80, b"")
    gold.write_entry(1, ex)
    hit, hit_cycles = check_cached_infer(model, frames[3], x, gold)
    assert hit and hit_cycles < miss_cycles
    assert not check_cached_infer(model, frames[4], y, gold)[0]
    assert frames[5] == error(ErrorCode.BAD_CRC, Command.CACHE_WRITE)
    assert frames[6] == error(ErrorCode.BAD_CRC, Command.CACHE_WRITE)
    # Neither corrupted write reached the engine: y still misses, and only x's image went out.
    assert not check_cached_infer(model, frames[7], y, gold)[0]
    assert cw == [(1, b) for b in fmt.image(ex)]
    assert frames[8] == error(ErrorCode.BAD_LENGTH, Command.CACHE_WRITE)
    assert frames[9] == error(ErrorCode.BAD_ARGUMENT, Command.CACHE_WRITE)
    assert frames[10] == (Command.CACHE_STATS | 0x80, struct.pack("<II", gold.hits, gold.misses))
    assert (gold.hits, gold.misses) == (1, 3)
    gold.reset_counters()
    assert frames[11] == (Command.CACHE_STATS | 0x80, struct.pack("<II", 0, 0))
    assert frames[12] == error(ErrorCode.BAD_ARGUMENT, Command.CACHE_STATS)
    assert frames[13] == error(ErrorCode.BAD_LENGTH, Command.CACHE_STATS)
    assert frames[14] == error(ErrorCode.BAD_LENGTH, Command.CACHE_CLEAR)
    assert check_cached_infer(model, frames[15], x, gold)[0]
    assert frames[16] == (Command.CACHE_CLEAR | 0x80, b"")
    gold.clear()
    assert not check_cached_infer(model, frames[17], x, gold)[0]
    assert frames[18] == (Command.CACHE_STATS | 0x80, struct.pack("<II", gold.hits, gold.misses))
    assert frames[19] == error(ErrorCode.UNSUPPORTED, 0x14)
    assert LinkInfo.unpack(frames[20][1]).max_payload == max(64, 1 + fmt.image_bytes)


def test_uncached_link_refuses_every_cache_command(model):
    frames = run_link(model, [encode_frame(c) for c in (Command.CACHE_CLEAR, Command.CACHE_STATS,
                                                        Command.CACHE_INFO, 0x1F)])
    assert frames == [error(ErrorCode.UNSUPPORTED, c) for c in (0x11, 0x12, 0x13, 0x1F)]


def test_cache_parameters_checked(model):
    kw = dict(lanes=8, clk_freq=1e6, baud=1, timeout=10)
    with pytest.raises(ValueError, match="cache_entries must be an integer in 0..256"):
        Link(model, cache_entries=300, **kw)
    with pytest.raises(ValueError, match="cache_metric must be one of l2, linf, l1, not 'cos'"):
        Link(model, cache_entries=2, cache_metric="cos", cache_image_bytes=10, **kw)
    with pytest.raises(ValueError, match="cache_image_bytes must be in 1..65534"):
        Link(model, cache_entries=2, cache_image_bytes=0, **kw)


def test_ports_match_the_engines(model, cache_case):
    # One definition of each payload: the link's ports carry the engines' own layouts.
    def payload(component, name):
        return component.signature.members[name].signature.members["payload"].shape

    kw = dict(lanes=8, clk_freq=1e6, baud=1, timeout=TIMEOUT)
    plain = MLPEngine(model, 8, target="generic")
    assert payload(Link(model, **kw), "eng_o") == payload(plain, "o")
    ram = MLPEngine(model, 8, target="generic", weight_memory="ram")
    loading = Link(model, weight_words=len(ram.weight_words), weight_word_bits=ram.weight_word_bits, **kw)
    assert payload(loading, "w_wr") == payload(ram, "w_wr")
    cmodel = cache_case[0]
    # (a CachedEngine built here and never elaborated would leave its engine and bank unused)
    csig = CachedEngineSignature(cmodel, CACHE_ENTRIES)
    link = Link(cmodel, cache_entries=CACHE_ENTRIES, cache_image_bytes=SlotFormat(cmodel, 4, "linf").image_bytes,
                **kw)
    assert payload(link, "eng_o") == csig.members["o"].signature.members["payload"].shape
    assert payload(link, "cw") == csig.members["cw"].signature.members["payload"].shape


def batch_frame(codes):
    return encode_frame(Command.INFER_BATCH, np.asarray(codes, dtype=np.int8).tobytes())


def check_batch(model, frame, codes):
    """The reply to an INFER_BATCH of ``codes`` (k, input_dim): per input the golden output
    codes and argmax, then the batch's cycles, which are returned."""
    cmd, payload = frame
    assert cmd == Command.INFER_BATCH | 0x80
    n, k = model.output_dim, len(codes)
    assert len(payload) == k * (n + 2) + 4
    expect = golden.forward(model, np.asarray(codes))
    for j in range(k):
        rec = payload[j * (n + 2):(j + 1) * (n + 2)]
        np.testing.assert_array_equal(np.frombuffer(rec[:n], dtype=np.int8), expect[j])
        assert struct.unpack("<H", rec[n:])[0] == golden.argmax(expect[j])
    (cycles,) = struct.unpack("<I", payload[-4:])
    assert cycles > 0
    return cycles


def test_infer_batch(model):
    # Batches of several sizes up to the link's limit, between single INFERs and errors.
    link = _Bench(model).link
    limit = link.batch
    assert limit == batch_limit(link.info) == 16
    rng = np.random.default_rng(11)
    sizes = [1, 3, limit, 2]
    batches = [rng.integers(-128, 128, size=(k, model.input_dim)) for k in sizes]
    x = rng.integers(-128, 128, size=model.input_dim)
    frames = run_link(model, [
        batch_frame(batches[0]), infer_frame(x), batch_frame(batches[1]),
        encode_frame(Command.INFER_BATCH, bytes(2 * model.input_dim + 1)),    # not whole inputs
        encode_frame(Command.INFER_BATCH),                                      # no input
        batch_frame(batches[2]), infer_frame(x),
        bytes([REQ_SYNC, Command.INFER_BATCH]) + struct.pack("<H", (limit + 1) * model.input_dim),  # too long
        batch_frame(batches[3]), encode_frame(Command.COUNTERS),
    ])
    assert len(frames) == 10
    one = check_batch(model, frames[0], batches[0])
    single = check_infer(model, frames[1], x)
    assert one == single, "a batch of one takes an INFER's cycles"
    check_batch(model, frames[2], batches[1])
    assert frames[3] == error(ErrorCode.BAD_LENGTH, Command.INFER_BATCH)
    assert frames[4] == error(ErrorCode.BAD_LENGTH, Command.INFER_BATCH)
    full = check_batch(model, frames[5], batches[2])
    # Back to back: the engine takes the next input while it computes the last one.
    assert full < limit * single
    assert check_infer(model, frames[6], x) == single
    assert frames[7] == error(ErrorCode.BAD_LENGTH, Command.INFER_BATCH)
    check_batch(model, frames[8], batches[3])
    counters = dict(zip(COUNTER_NAMES, struct.unpack("<5I", frames[9][1])))
    assert counters["inferences"] == sum(sizes) + 2
    assert counters["errors"] == 3


def test_cached_link_has_no_batch(cache_case):
    cmodel = cache_case[0]
    link = Link(cmodel, lanes=4, clk_freq=1e6, baud=1, timeout=TIMEOUT, cache_entries=CACHE_ENTRIES,
                cache_image_bytes=SlotFormat(cmodel, 4, "linf").image_bytes)
    assert link.batch == 0


def test_infer_batch_wide_codes():
    # Codes of more than 8 bits travel as two bytes, in a batch too (input and output).
    wide = random_model(9, [3, 5, 2], act_bits=12)
    assert wide.input_bits > 8 and wide.layers[-1].out_bits > 8
    link = _Bench(wide).link
    lo, hi = -(1 << (wide.input_bits - 1)), (1 << (wide.input_bits - 1)) - 1
    codes = np.random.default_rng(4).integers(lo, hi + 1, size=(link.batch, wide.input_dim))
    frames = run_link(wide, [encode_frame(Command.INFER_BATCH, codes.astype("<i2").tobytes()),
                             encode_frame(Command.INFER_BATCH, codes[:1].astype("<i2").tobytes()[:-1])])
    cmd, payload = frames[0]
    assert cmd == Command.INFER_BATCH | 0x80 and len(payload) == batch_reply_len(link.info, link.batch)
    expect = golden.forward(wide, codes)
    n = wide.output_dim
    for j in range(link.batch):
        rec = payload[j * (2 * n + 2):(j + 1) * (2 * n + 2)]
        np.testing.assert_array_equal(np.frombuffer(rec[:2 * n], dtype="<i2"), expect[j])
        assert struct.unpack("<H", rec[2 * n:])[0] == golden.argmax(expect[j])
    assert frames[1] == error(ErrorCode.BAD_LENGTH, Command.INFER_BATCH)
