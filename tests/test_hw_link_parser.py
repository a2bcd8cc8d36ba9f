# amaranth: UnusedElaboratable=no
"""The link's frame parser alone: frames from pwlnet.protocol in, checked requests out."""

import pytest
from amaranth.sim import Simulator

from pwlnet.hw.link import FrameParser, ReplyKind
from pwlnet.protocol import REQ_SYNC, Command, ErrorCode, encode_frame

from helpers import send

TIMEOUT = 60
D = 5            # input codes of an INFER request
IMAGE = 6        # bytes of a slot image in the cached configuration
ENTRIES = 3


def plain_parser(**kw):
    return FrameParser(input_dim=D, input_bits=8, max_payload=64, timeout=TIMEOUT, chunk_words=32, **kw)


def cached_parser():
    return plain_parser(cache_entries=ENTRIES, image_bytes=IMAGE)


def loading_parser(weight_words=0x1240):
    # Two-byte words, chunks of up to 4 words: max_payload is 2 + 4 * 2 as the link makes it.
    return FrameParser(input_dim=D, input_bits=8, max_payload=10, timeout=TIMEOUT, word_bytes=2, chunk_words=4,
                       weight_words=weight_words)


def run_parser(parser, actions, *, exec_cycles=5, reply_cycles=12, settle=200):
    """Feed ``actions`` (bytes, or an int = idle cycles) to the parser, answer its exec and reply
    requests after a few cycles, and return what it did, in order."""
    events = []

    async def producer(ctx):
        for act in actions:
            if isinstance(act, int):
                await ctx.tick().repeat(act)
                continue
            await send(ctx, parser.rx, act)
        quiet = 0
        while quiet < settle:
            await ctx.tick()
            quiet = 0 if ctx.get(parser.busy) else quiet + 1

    async def responder(ctx):
        ex, rp = parser.exec, parser.reply
        exec_due = reply_due = None
        cyc = 0
        while True:
            await ctx.tick()
            cyc += 1
            ctx.set(ex.done, exec_due == cyc)
            ctx.set(rp.done, reply_due == cyc)
            if ctx.get(parser.in_wr.en):
                events.append(("in", ctx.get(parser.in_wr.addr), ctx.get(parser.in_wr.data)))
            if "stage_wr" in parser.signature.members and ctx.get(parser.stage_wr.en):
                events.append(("stage", ctx.get(parser.stage_wr.addr), ctx.get(parser.stage_wr.data)))
            for bit in range(2):
                if ctx.get(ex.addr_we[bit]):
                    events.append(("addr", bit, ctx.get(ex.byte)))
            for name in ("count_frame", "count_error", "clear_counters", "cache_clear", "clear_stats"):
                if ctx.get(getattr(ex, name)):
                    events.append((name,))
            if ctx.get(ex.start):
                events.append(("exec", ctx.get(ex.infer), ctx.get(ex.load), ctx.get(ex.cwrite),
                               ctx.get(ex.arg0), ctx.get(ex.staged)))
                exec_due = cyc + exec_cycles
                if "batch" in ex.signature.members:
                    events.append(("batch", ctx.get(ex.batch), ctx.get(ex.count)))
            if ctx.get(rp.valid):
                events.append(("reply", ReplyKind(ctx.get(rp.kind)), ctx.get(rp.cmd), ctx.get(rp.err_code)))
                reply_due = cyc + reply_cycles
                if "batch" in rp.signature.members:
                    events.append(("reply_batch", ctx.get(rp.batch), ctx.get(rp.count)))

    sim = Simulator(parser)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(responder, background=True)
    sim.run()
    return events


def replies(events):
    """The reply requests: (kind, cmd), and the error code for an error reply (the code is
    not looked at otherwise)."""
    return [e[1:] if e[1] == ReplyKind.ERROR else e[1:3] for e in events if e[0] == "reply"]


def error(code, cmd):
    return (ReplyKind.ERROR, cmd, code)


def test_good_frames():
    codes = bytes([1, 0xFF, 7, 0x80, 42])
    ev = run_parser(plain_parser(), [encode_frame(Command.INFO), encode_frame(Command.INFER, codes),
                                     encode_frame(Command.COUNTERS), encode_frame(Command.CLEAR_COUNTERS)])
    assert [r[:2] for r in replies(ev)] == [(ReplyKind.INFO, Command.INFO), (ReplyKind.INFER, Command.INFER),
                                            (ReplyKind.COUNTERS, Command.COUNTERS),
                                            (ReplyKind.EMPTY, Command.CLEAR_COUNTERS)]
    # The INFER payload went into the input buffer, code by code, before the executor ran.
    assert [e[1:] for e in ev if e[0] == "in"] == [(i, c - 256 * (c > 127)) for i, c in enumerate(codes)]
    assert [e for e in ev if e[0] == "exec"] == [("exec", 1, 0, 0, 0, 0)]
    assert ev.index(("exec", 1, 0, 0, 0, 0)) > max(i for i, e in enumerate(ev) if e[0] == "in")
    assert ev.count(("count_frame",)) == 3 and ev.count(("clear_counters",)) == 1
    assert ("count_error",) not in ev


def test_bad_crc_length_and_command():
    codes = bytes(range(D))
    good = encode_frame(Command.INFER, codes)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x01
    ev = run_parser(plain_parser(), [
        bytes(bad_crc),
        encode_frame(Command.INFER, codes[:-1]),        # one code short
        encode_frame(Command.INFO, b"\0"),              # INFO takes no payload
        encode_frame(0x7E),                             # no such command
        encode_frame(Command.CACHE_INFO),               # reserved for the cache
        encode_frame(Command.LOAD_WEIGHTS, b"\0\0\1"),  # the weights are built in
        good,
    ])
    assert replies(ev) == [
        error(ErrorCode.BAD_CRC, Command.INFER),
        error(ErrorCode.BAD_LENGTH, Command.INFER),
        error(ErrorCode.BAD_LENGTH, Command.INFO),
        error(ErrorCode.UNKNOWN_COMMAND, 0x7E),
        error(ErrorCode.UNSUPPORTED, Command.CACHE_INFO),
        error(ErrorCode.UNSUPPORTED, Command.LOAD_WEIGHTS),
        (ReplyKind.INFER, Command.INFER)
    ]
    assert ev.count(("count_error",)) == 6
    assert len([e for e in ev if e[0] == "exec"]) == 1


def test_huge_length_refused_before_the_body():
    # The reply request comes right after the header: the parser does not wait for the body.
    ev = run_parser(plain_parser(), [bytes([REQ_SYNC, Command.INFER, 0x00, 0xF0]), 30,
                                     encode_frame(Command.INFO)])
    assert replies(ev) == [error(ErrorCode.BAD_LENGTH, Command.INFER),
                           (ReplyKind.INFO, Command.INFO)]


def test_timeout_and_garbage_between_frames():
    good = encode_frame(Command.INFER, bytes(D))
    ev = run_parser(plain_parser(), [
        b"\x00\xff\x13\x37garbage", good,     # bytes outside a frame are skipped
        good[:4], 3 * TIMEOUT,                # a frame that stops mid-way
        b"\x5a\x00", good,
    ])
    assert [r[:2] for r in replies(ev)] == [(ReplyKind.INFER, Command.INFER),
                                            (ReplyKind.ERROR, Command.INFER),
                                            (ReplyKind.INFER, Command.INFER)]
    assert replies(ev)[1] == error(ErrorCode.TIMEOUT, Command.INFER)


def test_timeout_before_the_command_names_command_0():
    ev = run_parser(plain_parser(), [bytes([REQ_SYNC]), 3 * TIMEOUT])
    assert replies(ev) == [error(ErrorCode.TIMEOUT, 0)]


def test_cache_commands():
    image = bytes(range(100, 100 + IMAGE))
    ev = run_parser(cached_parser(), [
        encode_frame(Command.CACHE_WRITE, bytes([2]) + image),
        encode_frame(Command.CACHE_WRITE, bytes([ENTRIES]) + image),     # no such slot
        encode_frame(Command.CACHE_WRITE, bytes([0]) + image[:-1]),      # image one byte short
        encode_frame(Command.CACHE_STATS, b"\x01"),
        encode_frame(Command.CACHE_STATS, b"\x02"),                      # unknown flag
        encode_frame(Command.CACHE_STATS),
        encode_frame(Command.CACHE_CLEAR),
        encode_frame(Command.CACHE_INFO),
        encode_frame(0x1F),                                             # the rest stays reserved
    ])
    assert replies(ev) == [
        (ReplyKind.LOADED, Command.CACHE_WRITE),
        error(ErrorCode.BAD_ARGUMENT, Command.CACHE_WRITE),
        error(ErrorCode.BAD_LENGTH, Command.CACHE_WRITE),
        (ReplyKind.CACHE_STATS, Command.CACHE_STATS),
        error(ErrorCode.BAD_ARGUMENT, Command.CACHE_STATS),
        (ReplyKind.CACHE_STATS, Command.CACHE_STATS),
        (ReplyKind.EMPTY, Command.CACHE_CLEAR),
        (ReplyKind.CACHE_INFO, Command.CACHE_INFO),
        error(ErrorCode.UNSUPPORTED, 0x1F),
    ]
    # The first write's image was staged, and the executor was asked for slot 2.
    assert [e[1:] for e in ev if e[0] == "stage"][:IMAGE] == list(enumerate(image))
    assert [e for e in ev if e[0] == "exec"] == [("exec", 0, 0, 1, 2, IMAGE)]
    # CACHE_STATS with flag 0 clears the engine's counters once, after its reply.
    assert ev.count(("clear_stats",)) == 1 and ev.count(("cache_clear",)) == 1
    first_stats = replies(ev).index((ReplyKind.CACHE_STATS, Command.CACHE_STATS))
    reply_events = [i for i, e in enumerate(ev) if e[0] == "reply"]
    assert reply_events[first_stats] < ev.index(("clear_stats",)) < reply_events[first_stats + 1]


def test_load_weights():
    words = bytes([0x11, 0x22, 0x33, 0x44, 0x55, 0x66])
    ev = run_parser(loading_parser(), [
        encode_frame(Command.LOAD_WEIGHTS, b"\x34\x12" + words),
        encode_frame(Command.LOAD_WEIGHTS, b"\0\0" + words[:-1]),      # half a word
        encode_frame(Command.LOAD_WEIGHTS, b"\0\0" + words + words),   # more than a chunk
    ])
    assert replies(ev) == [(ReplyKind.LOADED, Command.LOAD_WEIGHTS),
                           error(ErrorCode.BAD_LENGTH, Command.LOAD_WEIGHTS),
                           error(ErrorCode.BAD_LENGTH, Command.LOAD_WEIGHTS)]
    assert [e for e in ev if e[0] == "addr"][:2] == [("addr", 0, 0x34), ("addr", 1, 0x12)]
    assert [e[1:] for e in ev if e[0] == "stage"][:len(words)] == list(enumerate(words))
    assert [e for e in ev if e[0] == "exec"] == [("exec", 0, 1, 0, 0, len(words))]


def test_load_weights_past_the_end_of_the_memory():
    # Found by pwlnet.fuzz link: words running past the weight memory wrapped around onto
    # word 0.  Now BAD_ARGUMENT, after BAD_LENGTH, and nothing reaches the executor.
    w3 = bytes(6)
    ev = run_parser(loading_parser(weight_words=20), [
        encode_frame(Command.LOAD_WEIGHTS, b"\x11\x00" + w3),     # words 17..19: the last three
        encode_frame(Command.LOAD_WEIGHTS, b"\x12\x00" + w3),     # words 18..20: one past the end
        encode_frame(Command.LOAD_WEIGHTS, b"\x14\x00" + w3[:2]), # word 20
        encode_frame(Command.LOAD_WEIGHTS, b"\x00\x01" + w3),     # word 256
        encode_frame(Command.LOAD_WEIGHTS, b"\xff\xff" + w3[:2]), # word 65535
        encode_frame(Command.LOAD_WEIGHTS, b"\x13\x00" + w3[:3]), # half a word: BAD_LENGTH first
        encode_frame(Command.LOAD_WEIGHTS, b"\x13\x00" + w3[:2]), # word 19 alone
    ])
    bad = error(ErrorCode.BAD_ARGUMENT, Command.LOAD_WEIGHTS)
    assert replies(ev) == [(ReplyKind.LOADED, Command.LOAD_WEIGHTS), bad, bad, bad, bad,
                           error(ErrorCode.BAD_LENGTH, Command.LOAD_WEIGHTS), (ReplyKind.LOADED, Command.LOAD_WEIGHTS)]
    assert [e for e in ev if e[0] == "exec"] == [("exec", 0, 1, 0, 0, 6), ("exec", 0, 1, 0, 0, 2)]


def test_load_weights_needs_the_memory_size():
    with pytest.raises(ValueError, match="weight_words must be an integer in 1..65536 with LOAD_WEIGHTS, not 0"):
        FrameParser(input_dim=D, input_bits=8, max_payload=10, timeout=TIMEOUT, word_bytes=2, chunk_words=4)


def test_infer_batch_lengths():
    # A batch is 1 to max_batch whole inputs; here max_payload (64) would hold 12 of them,
    # so 4 inputs is refused by the batch limit after the frame, not by the header.
    rng = __import__("numpy").random.default_rng(3)
    two = bytes(rng.integers(0, 256, size=2 * D, dtype="uint8"))
    three = bytes(rng.integers(0, 256, size=3 * D, dtype="uint8"))
    ev = run_parser(plain_parser(max_batch=3), [
        encode_frame(Command.INFER_BATCH, two),
        encode_frame(Command.INFER_BATCH, three[:-1]),          # not a whole number of inputs
        encode_frame(Command.INFER_BATCH, three + bytes(D)),    # one input more than the limit
        encode_frame(Command.INFER_BATCH),                      # no input at all
        encode_frame(Command.INFER_BATCH, three),               # the limit
        encode_frame(Command.INFER, three[:D]),
    ])
    assert replies(ev) == [
        (ReplyKind.INFER, Command.INFER_BATCH),
        error(ErrorCode.BAD_LENGTH, Command.INFER_BATCH),
        error(ErrorCode.BAD_LENGTH, Command.INFER_BATCH),
        error(ErrorCode.BAD_LENGTH, Command.INFER_BATCH),
        (ReplyKind.INFER, Command.INFER_BATCH),
        (ReplyKind.INFER, Command.INFER),
    ]
    # The executor and the serializer learn that it is a batch and of how many inputs (the
    # serializer looks at them only for a successful INFER reply).
    assert [e for e in ev if e[0] == "batch"] == [("batch", 1, 2), ("batch", 1, 3), ("batch", 0, 0)]
    kinds = [e[1] for e in ev if e[0] == "reply"]
    sent = [e[1:] for e in ev if e[0] == "reply_batch"]
    assert [b for k, b in zip(kinds, sent) if k == ReplyKind.INFER] == [(1, 2), (1, 3), (0, 0)]
    # Each batch's codes went into the input buffer one input after the other from 0.
    writes = [e[1:] for e in ev if e[0] == "in"]
    signed = [c - 256 * (c > 127) for c in three[:D]]
    assert writes[:2 * D] == [(i, c - 256 * (c > 127)) for i, c in enumerate(two)]
    assert writes[-D:] == list(enumerate(signed))


def test_infer_batch_unsupported_without_a_limit():
    ev = run_parser(plain_parser(), [encode_frame(Command.INFER_BATCH, bytes(D))])
    assert replies(ev) == [error(ErrorCode.UNSUPPORTED, Command.INFER_BATCH)]
    assert not [e for e in ev if e[0] == "exec"]
