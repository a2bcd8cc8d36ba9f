"""The link fuzzer (:mod:`pwlnet.sim.link_fuzz`): a slice of the campaign on the simulated
board under Verilator, the reference's rules, and the harness catching what it must catch."""

import struct
import time

import numpy as np
import pytest

from pwlnet import golden
from pwlnet.protocol import ERROR_REPLY, REQ_SYNC, Command, ErrorCode, crc16, encode_frame
from pwlnet.sim import link_fuzz as lf

# One worker builds (or finds) both benches and runs every test that simulates.
pytestmark = pytest.mark.xdist_group("link_fuzz")

#: The make-test slice; `make fuzz` runs 10 000 frames, on the "wide" build (2-byte codes)
#: too, which the slice leaves out to keep its cold start (a Verilator build per build) short.
SLICE_FRAMES = 600
SLICE_BUILDS = ("plain", "cached")


@pytest.fixture(scope="module")
def boards():
    return {name: lf.compile_board(lf.make_board(name), log=lambda *a: None) for name in SLICE_BUILDS}


def test_campaign_slice(boards, tmp_path):
    t0 = time.monotonic()
    r = lf.campaign(SLICE_FRAMES, seed=0, builds=SLICE_BUILDS, workdir=tmp_path, log=lambda *a: None)
    report = lf.format_result(r, SLICE_FRAMES, 0)
    assert r.ok, report
    assert r.steps == SLICE_FRAMES and sum(r.frames.values()) == SLICE_FRAMES, report
    # Every kind of frame was sent, every error code and every command's reply came back.
    assert all(r.frames[k] > 0 for k in lf.KINDS), report
    assert all(r.answers[e.name] > 0 for e in ErrorCode), report
    assert all(r.answers[f"{c.name} reply"] > 0 for c in Command), report
    assert r.counter_checks >= 2 and r.cache_hits > 0 and r.cache_misses > 0 and r.unchecked == 0, report
    assert time.monotonic() - t0 < 120, report


@pytest.mark.parametrize("build", SLICE_BUILDS)
def test_every_command_is_sent_one_byte_short_and_long(boards, build):
    board = boards[build]
    model = lf.LinkModel(board)
    steps = lf.make_steps(board, 200, seed=0)
    for cmd in Command:
        lo, hi, step = model.length_rule(cmd)
        for kind in ("short", "long"):
            sent = {s.note.split(" (rule")[0] for s in steps if s.kind == kind and s.note.startswith(cmd.name)}
            # LEN just outside the rule, where the rule has such a length ...
            if kind == "short":
                want = {f"{cmd.name} with LEN {n}" for n in [lo - 1] * (lo > 0) + [hi - 1] * (step > 1 and hi - 1 > lo)}
            else:
                want = {f"{cmd.name} with LEN {n}" for n in [hi + 1] + [lo + 1] * (step > 1)}
            assert want <= sent, (cmd, kind, sent)
            # ... and the whole frame a byte short or long.
            tail = "without its last CRC byte" if kind == "short" else "after its CRC"
            assert any(n.endswith(tail) for n in sent), (cmd, kind, sent)


def _replies(board, *frames):
    model = lf.LinkModel(board)
    out = []
    for f in frames:
        out += [(e.cmd, e.payload) for e in model.feed(f) + model.pause()]
    return out


def _err(code, cmd):
    return (ERROR_REPLY, bytes([code, cmd]))


def test_reference_checks_in_the_documented_order(boards):
    plain, cached = boards["plain"], boards["cached"]
    infer = encode_frame(Command.INFER, bytes(4))
    bad_crc = infer[:-1] + bytes([infer[-1] ^ 1])
    assert _replies(plain, bad_crc) == [_err(ErrorCode.BAD_CRC, Command.INFER)]
    # UNSUPPORTED before UNKNOWN_COMMAND and BAD_LENGTH; BAD_LENGTH before BAD_ARGUMENT
    assert _replies(plain, encode_frame(Command.CACHE_WRITE, b"\x09")) == [_err(ErrorCode.UNSUPPORTED, 0x10)]
    assert _replies(cached, encode_frame(Command.INFER_BATCH, bytes(3))) == [_err(ErrorCode.UNSUPPORTED, 6)]
    assert _replies(plain, encode_frame(0x42, b"\1")) == [_err(ErrorCode.UNKNOWN_COMMAND, 0x42)]
    assert _replies(cached, encode_frame(Command.CACHE_STATS, b"\x02\x00")) == [_err(ErrorCode.BAD_LENGTH, 0x12)]
    assert _replies(cached, encode_frame(Command.CACHE_STATS, b"\x02")) == [_err(ErrorCode.BAD_ARGUMENT, 0x12)]
    # a LEN above max_payload at once; the rest of the frame is garbage, its 0xA5 a new frame
    big = bytes([REQ_SYNC, 2]) + struct.pack("<H", plain.info.max_payload + 1) + bytes([0x11, REQ_SYNC, 1])
    assert _replies(plain, big) == [_err(ErrorCode.BAD_LENGTH, 2), _err(ErrorCode.TIMEOUT, 1)]
    # a timeout before the command byte names command 0
    assert _replies(plain, bytes([7, REQ_SYNC])) == [_err(ErrorCode.TIMEOUT, 0)]


def test_reference_counters(boards):
    plain = boards["plain"]
    model = lf.LinkModel(plain)
    model.feed(encode_frame(Command.INFER, bytes(4)) + encode_frame(0x33) + encode_frame(Command.INFO))
    model.feed(encode_frame(Command.INFO), bad={0})        # the sync byte lost: garbage
    (e,) = model.feed(encode_frame(Command.COUNTERS))
    # frames (COUNTERS counts itself), inferences, errors, busy (not fixed), UART errors
    assert struct.unpack("<5I", e.payload) == (3, 1, 1, 0, 1) and e.loose == ((12, 4, "busy"),)


def _fake_run(board, frames, replies):
    model = lf.LinkModel(board)
    steps = [lf.Step("valid", f, "") for f in frames]
    expects = [model.feed(s.data) + model.pause() for s in steps]
    return steps, lf.Run(expects, replies, None, 0.0, model)


def _reply(cmd, payload):
    body = bytes([cmd]) + struct.pack("<H", len(payload)) + payload
    return bytes([0x5A]) + body + struct.pack("<H", crc16(body))


@pytest.mark.parametrize("busy, cycles, ok", [(52, 50, True), (49, 50, False), (50 + 9, 50, False), (52, 0, False)])
def test_checker_cycles_and_busy_cycles(boards, busy, cycles, ok):
    plain = boards["plain"]
    x = np.array([1, 2, 3, 4])
    out = golden.forward(plain.model, x[None])[0]
    infer = _reply(0x82, lf._codes_bytes(out, 8) + struct.pack("<HI", int(golden.argmax(out[None])[0]), cycles))
    counters = _reply(0x83, struct.pack("<5I", 2, 1, 0, busy, 0))
    steps, run = _fake_run(plain, [encode_frame(Command.INFER, x.astype(np.int8).tobytes()),
                                   encode_frame(Command.COUNTERS)], [infer, counters])
    result = lf.Result()
    lf.check_steps(plain, steps, run, result)
    assert result.ok == ok, result.mismatches
    assert result.counter_checks == 1


def test_checker_catches_wrong_counts_and_extra_bytes(boards):
    plain = boards["plain"]
    steps, run = _fake_run(plain, [encode_frame(Command.COUNTERS), encode_frame(Command.CLEAR_COUNTERS)],
                           [_reply(0x83, struct.pack("<5I", 2, 0, 0, 0, 0)), _reply(0x84, b"") + b"\x00"])
    result = lf.Result()
    lf.check_steps(plain, steps, run, result)
    assert [m[1] for m in result.mismatches] == [0, 1]
    assert "payload" in result.mismatches[0][3] and "1 bytes more" in result.mismatches[1][3]


def test_a_wrong_answer_is_a_mismatch(boards, tmp_path, monkeypatch):
    # A reference that disagrees with the RTL on INFER: every INFER reply is a mismatch.
    plain = boards["plain"]
    steps = lf.make_steps(plain, 80, seed=4)
    real = golden.forward
    monkeypatch.setattr(lf.golden, "forward", lambda m, c: np.minimum(real(m, c) + 1, 127))
    run = lf.run_steps(plain, steps, tmp_path)
    result = lf.Result()
    lf.check_steps(plain, steps, run, result)
    n_infer = sum(1 for ex in run.expects for e in ex if e.cmd in (0x82, 0x86))
    assert n_infer > 0 and run.hang is None
    assert len(result.mismatches) >= 1 and all("INFER" in m[3] for m in result.mismatches)


def test_a_missing_reply_is_a_hang(boards, tmp_path, monkeypatch):
    # A reference that wants one byte more for INFO than the RTL sends: the watchdog stops
    # the run at the first INFO and names it.
    plain = boards["plain"]
    real = lf.LinkModel._execute

    def longer_info(self, cmd, body):
        e = real(self, cmd, body)
        if cmd == Command.INFO:
            e.payload += b"\0"
        return e
    monkeypatch.setattr(lf.LinkModel, "_execute", longer_info)
    steps = [lf.Step("valid", encode_frame(Command.COUNTERS), "counters"),
             lf.Step("valid", encode_frame(Command.INFO), "info"),
             lf.Step("valid", encode_frame(Command.COUNTERS), "not reached")]
    t0 = time.monotonic()
    run = lf.run_steps(plain, steps, tmp_path)
    assert run.hang == 1 and time.monotonic() - t0 < 10
    result = lf.Result()
    lf.check_steps(plain, steps, run, result)
    assert result.steps == 2 and len(result.hangs) == 1 and not result.mismatches
    assert "INFO reply" in lf.format_result(result, 3, 0)


def test_load_weights_past_the_end_is_refused(boards, tmp_path):
    # Regression (found by this fuzzer): a LOAD_WEIGHTS whose words ran past the weight
    # memory wrapped around and overwrote word 0, and later INFERs differed from the golden
    # model.  Now it is BAD_ARGUMENT and changes nothing.
    plain = boards["plain"]
    loads = [s for s in lf.make_steps(plain, 50, seed=0) if s.note.endswith("(start-up)")]
    x = np.array([10, -20, 30, 40])
    infer = encode_frame(Command.INFER, x.astype(np.int8).tobytes())
    n = len(plain.weights)
    past = [encode_frame(Command.LOAD_WEIGHTS, struct.pack("<H", a) + b"\x7f" * plain.info.weight_word_bytes * k)
            for a, k in ((n, 1), (n - 1, 2), (0xFFFF, 1))]
    steps = loads + [lf.Step("bad_argument", f, "past the end") for f in past] + [lf.Step("valid", infer, "INFER")]
    run = lf.run_steps(plain, steps, tmp_path)
    bad = bytes([0x5A, ERROR_REPLY, 2, 0, ErrorCode.BAD_ARGUMENT, Command.LOAD_WEIGHTS])
    assert [r[:6] for r in run.replies[len(loads):-1]] == [bad] * 3
    out = golden.forward(plain.model, x[None])[0]
    assert run.replies[-1][4:4 + 3] == lf._codes_bytes(out, 8)
    result = lf.Result()
    lf.check_steps(plain, steps, run, result)
    assert result.ok, result.mismatches
