"""Link fuzzing: random, truncated, corrupted and oversized frames on the simulated board.

The board top (:class:`pwlnet.boards.top.BoardTop`: UART, link, engine; target
``"generic"``) is converted to Verilog and built with Verilator together with a small
Verilog bench.  The bench bit-bangs *steps* into the UART rx pin -- each step is the bytes
of one fuzzed frame, sent back to back at the build's divisor -- and records every byte
the tx pin sends, tagged with the step it arrived in.  After its bytes a step waits for as
many reply bytes as :class:`LinkModel` says the device must send, at most a bounded
number of cycles (the watchdog: a step that does not get its reply in time is a *hang*,
and the run stops there, naming the step and its bytes), then leaves the line idle for
two byte times.

:class:`LinkModel` is the reference: the byte-level behaviour of the link as
docs/protocol.md specifies it (resynchronisation on ``REQ_SYNC``, the length, CRC,
command and argument checks in their documented order, ``BAD_LENGTH`` at once for a
``LEN`` above ``max_payload``, ``TIMEOUT`` for a frame that stops arriving, the counters),
with :func:`pwlnet.golden.forward` for the INFER and INFER_BATCH answers and
:class:`pwlnet.code_cache.HwCache` for the cached build's hits, misses and outputs.  Every
reply the device sends is compared with it byte for byte; the ``cycles`` fields, which the
protocol does not fix, are checked for range, and the COUNTERS reply's busy cycles against
the cycles the replies reported since the counters were last cleared.

Four builds are fuzzed, so that every command meets its own length rule somewhere:

``plain``
    weights in run-time loaded memory (LOAD_WEIGHTS works), INFER_BATCH, no cache (the
    cache commands are ``UNSUPPORTED``).
``cached``
    a four-slot linf cache (CACHE_WRITE/CLEAR/STATS/INFO work; INFER replies carry
    ``cached`` and ``slot``), weights built in (LOAD_WEIGHTS and INFER_BATCH are
    ``UNSUPPORTED``).
``wide``
    12-bit codes (two bytes each on the wire, so a length one off splits a code), weights
    built in, INFER_BATCH, no cache.
``small``
    the small link (:class:`pwlnet.hw.link.SmallLink`, the iCEstick's) with 12-bit codes:
    no INFER_BATCH, no cache, weights built in.

Entry point: :func:`campaign` (``python -m pwlnet.fuzz link --frames N --seed S``).
Layer: simulation.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import golden
from ..protocol import (CACHE_COMMANDS, ERROR_REPLY, REP_SYNC, REPLY_FLAG, REQ_SYNC, RESERVED_COMMANDS, Command,
                        ErrorCode, code_bytes, crc16, encode_frame)

__all__ = ["BUILDS", "KINDS", "Board", "Step", "Expect", "LinkModel", "Result", "make_board", "make_steps",
           "Run", "run_steps", "check_steps", "campaign", "format_result"]

#: The builds fuzzed (see the module docstring).
BUILDS = ("plain", "cached", "wide", "small")
#: Kinds of step the generator makes.
KINDS = ("valid", "short", "long", "bad_crc", "flipped", "truncated", "oversized", "garbage", "unknown",
         "unsupported", "bad_argument", "burst", "line_error")

#: Cycles per UART bit in the bench (the smallest the UART takes is 4).
DIVISOR = 4
#: The link's mid-frame timeout in the bench, in byte times.
TIMEOUT_BYTES = 8
#: Idle line between steps, in byte times.
GAP_BYTES = 2
#: Bench array sizes (steps, bytes); a run larger than this is split.
MAX_STEPS, MAX_BYTES = 1 << 16, 1 << 21

# params.hex: divisor, startup cycles, steps, gap cycles.  steps.hex: per step its byte
# count, the reply bytes to wait for and the watchdog bound in cycles.  req.hex: the bytes.
_TB = """
`timescale 1ns/1ps
module tb;
  reg [31:0] prm [0:3];
  reg clk = 0;
  always #5 clk = ~clk;
  reg rst = 1;
  reg rx = 1'b1;
  wire tx;
  wire [3:0] leds;
  board dut(.clk(clk), .rst(rst), .uart_rx(rx), .uart_tx(tx), .leds(leds));
  // bit 8 set: the byte goes out with a low stop bit (a framing error), then 2 idle bits
  reg [8:0] req [0:{max_bytes}-1];
  reg bad = 0;
  reg [31:0] stp [0:3*{max_steps}-1];
  integer DIV, NSTEPS, GAP, f;
  integer i = 0, p = 0, left = 0, got = 0, waited = 0, bitn = 0, divc = 0, state = 0;
  reg [9:0] sh;
  initial begin
    $readmemh("params.hex", prm);
    DIV = prm[0]; NSTEPS = prm[2]; GAP = prm[3];
    $readmemh("req.hex", req);
    $readmemh("steps.hex", stp);
    f = $fopen("tx.txt", "w");
  end
  // tx monitor: start bit, the middle of every bit, a byte with its stop bit or a framing error
  integer rstate = 0, rcnt = 0, rbit = 0;
  reg [7:0] rbyte = 0;
  always @(posedge clk) begin
    case (rstate)
      0: if (tx === 1'b0) begin rstate <= 1; rcnt <= DIV / 2 - 1; end
      1: if (rcnt != 0) rcnt <= rcnt - 1;
         else if (tx === 1'b0) begin rstate <= 2; rcnt <= DIV - 1; rbit <= 0; end
         else rstate <= 0;
      2: if (rcnt != 0) rcnt <= rcnt - 1;
         else begin
           rbyte <= {{tx === 1'b1, rbyte[7:1]}}; rcnt <= DIV - 1; rbit <= rbit + 1;
           if (rbit == 7) rstate <= 3;
         end
      3: if (rcnt != 0) rcnt <= rcnt - 1;
         else begin
           if (tx === 1'b1) $fwrite(f, "%0d %02x\\n", i, rbyte);
           else $fwrite(f, "%0d framing\\n", i);
           got = got + 1;
           rstate <= 0;
         end
    endcase
  end
  // driver: 0 reset and start-up, 1 next byte of the step, 2 shifting it out, 3 waiting
  // for the reply (the watchdog), 4 idle gap, 5 idle after a byte with a low stop bit
  always @(posedge clk) begin
    case (state)
      0: begin
           if (waited == 8) rst <= 0;
           waited = waited + 1;
           if (waited >= prm[1]) begin
             if (NSTEPS == 0) begin $display("RESULT 0"); $fclose(f); $finish; end
             state = 1; left = stp[0]; got = 0; waited = 0;
           end
         end
      1: if (left != 0) begin
           sh = {{~req[p][8], req[p][7:0], 1'b0}}; bad = req[p][8];
           p = p + 1; left = left - 1; bitn = 0; divc = 0;
           rx <= 1'b0; state = 2;
         end else begin waited = 0; state = 3; end
      2: begin
           divc = divc + 1;
           if (divc == DIV) begin
             divc = 0; bitn = bitn + 1;
             if (bitn == 10) begin
               if (bad) begin rx <= 1'b1; state = 5; end
               else state = 1;
             end else rx <= sh[bitn];
           end
         end
      3: begin
           waited = waited + 1;
           if (got >= stp[3 * i + 1]) begin waited = 0; state = 4; end
           else if (waited > stp[3 * i + 2]) begin
             $display("HANG %0d %0d", i, got); $fclose(f); $finish;
           end
         end
      5: begin
           divc = divc + 1;
           if (divc == 2 * DIV) state = 1;
         end
      4: begin
           waited = waited + 1;
           if (waited >= GAP) begin
             i = i + 1;
             if (i == NSTEPS) begin $display("RESULT %0d", i); $fclose(f); $finish; end
             left = stp[3 * i]; got = 0; waited = 0; state = 1;
           end
         end
    endcase
  end
endmodule
"""


# ---- the builds --------------------------------------------------------------------------

@dataclasses.dataclass
class Board:
    """One fuzzed build: the board top, what the reference needs, and the bench binary."""

    name: str
    model: object            # CompiledModel
    top: object              # BoardTop
    info: object             # LinkInfo
    cache_info: object       # CacheInfo or None
    weights: list            # the true weight image (plain build), else []
    entries: list            # (codes, HwEntry, image) the generator writes (cached build)
    binary: Path | None = None
    build_seconds: float = 0.0

    @property
    def loadable(self):
        return bool(self.info.weight_words)

    @property
    def batch(self):
        return self.top.link.batch


def _cache_model():
    """A small compiled ReLU MLP with its code-space blocks (for cache entries)."""
    from .. import ir
    from ..code_cache import code_blocks
    from ..quantize import quantize

    rng = np.random.default_rng(21)
    d, hidden, n_out = 4, 8, 3
    net = ir.Network([ir.Dense(rng.normal(size=(hidden, d)) / 2, rng.normal(size=hidden) * 0.5),
                      ir.Activation("relu"),
                      ir.Dense(rng.normal(size=(n_out, hidden)) / np.sqrt(hidden), rng.normal(size=n_out) * 0.5)],
                     (d,))
    model = quantize(net, np.random.default_rng(22).normal(size=(256, d)), requant="shift")
    return model, code_blocks(model, net)


def make_board(name, lanes=4):
    """The :class:`Board` ``name`` (one of :data:`BUILDS`), not yet compiled."""
    from ..boards.top import BoardTop
    from ..hw.engine import MLPEngine

    timeout = TIMEOUT_BYTES * 10 * DIVISOR
    if name == "plain":
        from ..synth import random_model
        model = random_model(11, [4, 8, 3])
        ram = lambda m, p, target: MLPEngine(m, p, target=target, weight_memory="ram")  # noqa: E731
        top = BoardTop(model, lanes=lanes, clk_freq=1e6, divisor=DIVISOR, target="generic", timeout=timeout,
                       engine=ram)
        # the image the host loads (pwlnet.host.weight_image computes the same from the plan)
        return Board(name, model, top, top.link.info, None, [int(w) for w in top.engine.weight_words], [])
    if name == "cached":
        from ..code_cache import make_entry
        from ..hw.slot_format import SlotFormat
        model, blocks = _cache_model()
        top = BoardTop(model, lanes=lanes, clk_freq=1e6, divisor=DIVISOR, target="generic", timeout=timeout,
                       cache_entries=4, cache_metric="linf")
        fmt = SlotFormat(model, lanes, "linf")
        rng = np.random.default_rng(5)
        entries = []
        while len(entries) < 8:
            c = rng.integers(-100, 100, size=model.input_dim)
            e = make_entry(model, blocks, c, "linf")
            if e.bound > 0:
                entries.append((c, e, fmt.image(e)))
        return Board(name, model, top, top.link.info, top.link.cache_info, [], entries)
    if name == "wide":
        from ..synth import random_model
        model = random_model(12, [5, 8, 3], act_bits=12)
        top = BoardTop(model, lanes=lanes, clk_freq=1e6, divisor=DIVISOR, target="generic", timeout=timeout)
        return Board(name, model, top, top.link.info, None, [], [])
    if name == "small":
        from ..synth import random_model
        model = random_model(13, [6, 8, 3], act_bits=12)
        top = BoardTop(model, lanes=lanes, clk_freq=1e6, divisor=DIVISOR, target="generic", timeout=timeout,
                       link="small")
        return Board(name, model, top, top.link.info, None, [], [])
    raise ValueError(f"build must be one of {', '.join(BUILDS)}, not {name!r}")


def compile_board(board, log=print):
    """Build ``board``'s bench with Verilator (or find it built) and set ``board.binary``."""
    from amaranth.back import verilog

    from .runner import _locked, cache_root, verilator_env

    text = verilog.convert(board.top, name="board", emit_src=False)
    bench = _TB.format(max_bytes=MAX_BYTES, max_steps=MAX_STEPS)
    key = hashlib.sha256(b"\0".join([bench.encode(), text.encode()])).hexdigest()[:16]
    final = cache_root() / "link_fuzz" / f"{board.name}-{key}"
    binary = final / "obj_dir" / "simv"
    t0 = time.monotonic()
    with _locked(cache_root() / "link_fuzz" / f".{board.name}-{key}.lock"):
        if not binary.is_file():
            verilator_env()
            work = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
            (work / "tb.v").write_text(bench)
            (work / "board.v").write_text(text)
            cmd = ["verilator", "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", "tb",
                   "-o", "simv", "-j", "2", "-CFLAGS", "-O1 -std=c++20 -fcoroutines", "tb.v", "board.v"]
            run = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(f"Verilator could not build the link bench in {work}:\n{run.stderr[-3000:]}")
            for item in (work / "obj_dir").iterdir():      # keep the executable only
                if item.name != "simv":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
            log(f"built the {board.name} link bench in {time.monotonic() - t0:.1f} s")
    board.binary = binary
    board.build_seconds = time.monotonic() - t0
    return board


# ---- the reference -----------------------------------------------------------------------

@dataclasses.dataclass
class Expect:
    """One reply the device must send: command byte, payload, and the payload fields the
    protocol does not fix (``(offset, size, what)``, checked by :func:`check_steps`)."""

    cmd: int
    payload: bytes
    loose: tuple = ()
    runs: int = 0            # INFER / INFER_BATCH executions behind this reply (for busy cycles)
    limit: int = 0           # most cycles its `cycles` field may report
    clears: bool = False     # a CLEAR_COUNTERS reply (busy cycles restart)

    @property
    def length(self):
        return 6 + len(self.payload)

    @property
    def name(self):
        if self.cmd == ERROR_REPLY:
            return ErrorCode(self.payload[0]).name
        return f"{Command(self.cmd & ~REPLY_FLAG).name} reply"


def _codes_bytes(codes, bits):
    n = code_bytes(bits)
    return b"".join((int(c) & ((1 << (8 * n)) - 1)).to_bytes(n, "little") for c in np.ravel(codes))


class LinkModel:
    """The link's behaviour as docs/protocol.md gives it, on a byte stream.

    :meth:`feed` takes the bytes the host sends and returns the replies they cause;
    :meth:`pause` is the line falling silent (a frame cut short is answered ``TIMEOUT``).
    """

    def __init__(self, board):
        self.b = board
        info = board.info
        self.d, self.bi = info.input_dim, code_bytes(info.input_bits)
        self.ob = code_bytes(info.output_bits)
        self.wb = info.weight_word_bytes
        self.max_chunk = (info.max_payload - 2) // self.wb * self.wb if self.wb else 0
        self.cpi = info.cycles_per_inference
        if board.cache_info is not None:
            from ..code_cache import HwCache
            self.cache = HwCache(board.model, board.cache_info.entries, board.cache_info.metric)
            self.images = {img: e for _c, e, img in board.entries}
            self.cpi = max(self.cpi, board.cache_info.hit_cycles)
        else:
            self.cache = None
        self.unknown_slots = set()     # slots written with an image the reference cannot decode
        self.dirty = set()             # weight words that differ from the true image
        self.frames = self.inferences = self.errors = self.uart_errors = 0
        self.hits = self.misses = 0    # cache lookups over the whole run (never reset)
        self._idle()

    def _idle(self):
        self.state, self.cmd, self.length, self.body = "idle", 0, 0, bytearray()
        self.hdr = bytearray()

    def _error(self, code, cmd):
        self.errors += 1
        self._idle()
        return Expect(ERROR_REPLY, bytes([code, cmd & 0xFF]))

    def pause(self):
        """The line is silent for longer than the timeout."""
        if self.state == "idle":
            return []
        cmd = self.cmd if self.state != "cmd" else 0
        return [self._error(ErrorCode.TIMEOUT, cmd)]

    def feed(self, data, bad=()):
        """The replies to ``data``; the bytes at indices ``bad`` arrive with a low stop bit
        (the receiver drops them and counts a UART error)."""
        out = []
        for i, byte in enumerate(bytes(data)):
            if i in bad:
                self.uart_errors += 1
                continue
            st = self.state
            if st == "idle":
                if byte == REQ_SYNC:
                    self.state, self.hdr = "cmd", bytearray()
            elif st == "cmd":
                self.cmd, self.hdr = byte, bytearray([byte])
                self.state = "len_lo"
            elif st == "len_lo":
                self.hdr.append(byte)
                self.state = "len_hi"
            elif st == "len_hi":
                self.hdr.append(byte)
                self.length = self.hdr[1] | self.hdr[2] << 8
                self.body = bytearray()
                if self.length > self.b.info.max_payload:
                    out.append(self._error(ErrorCode.BAD_LENGTH, self.cmd))
                else:
                    self.state = "payload" if self.length else "crc_lo"
            elif st == "payload":
                self.body.append(byte)
                if len(self.body) == self.length:
                    self.state = "crc_lo"
            elif st == "crc_lo":
                self.crc = byte
                self.state = "crc_hi"
            elif st == "crc_hi":
                crc = self.crc | byte << 8
                out.append(self._dispatch(crc == crc16(bytes(self.hdr) + bytes(self.body))))
        return out

    # the checks in their documented order: BAD_CRC, UNSUPPORTED, UNKNOWN_COMMAND,
    # BAD_LENGTH, BAD_ARGUMENT
    def _dispatch(self, crc_ok):
        cmd, n, body = self.cmd, self.length, bytes(self.body)
        if not crc_ok:
            return self._error(ErrorCode.BAD_CRC, cmd)
        if self.unsupported(cmd):
            return self._error(ErrorCode.UNSUPPORTED, cmd)
        if not self.known(cmd):
            return self._error(ErrorCode.UNKNOWN_COMMAND, cmd)
        if not self.length_ok(cmd, n):
            return self._error(ErrorCode.BAD_LENGTH, cmd)
        if (cmd == Command.CACHE_WRITE and body[0] >= self.b.cache_info.entries) or \
                (cmd == Command.CACHE_STATS and n == 1 and body[0] >> 1) or \
                (cmd == Command.LOAD_WEIGHTS and (body[0] | body[1] << 8) + (n - 2) // self.wb > len(self.b.weights)):
            return self._error(ErrorCode.BAD_ARGUMENT, cmd)
        self._idle()
        return self._execute(Command(cmd), body)

    def unsupported(self, cmd):
        cached = self.cache is not None
        return ((cmd in RESERVED_COMMANDS and not (cached and cmd in CACHE_COMMANDS))
                or (cmd == Command.LOAD_WEIGHTS and not self.b.loadable)
                or (cmd == Command.INFER_BATCH and not self.b.batch))

    def known(self, cmd):
        return cmd in (Command.INFO, Command.INFER, Command.COUNTERS, Command.CLEAR_COUNTERS, Command.LOAD_WEIGHTS,
                       Command.INFER_BATCH, *CACHE_COMMANDS)

    def length_rule(self, cmd):
        """``(shortest, longest, step)`` of the payload of command ``cmd`` on this build."""
        one = self.d * self.bi
        if cmd == Command.INFER:
            return one, one, 1
        if cmd == Command.INFER_BATCH:
            return one, self.b.batch * one, one
        if cmd == Command.LOAD_WEIGHTS:
            return 2 + self.wb, 2 + self.max_chunk, self.wb
        if cmd == Command.CACHE_WRITE:
            # (a build without the cache has no image length: any will do, it is UNSUPPORTED)
            image = self.b.cache_info.image_bytes if self.b.cache_info is not None else 16
            return 1 + image, 1 + image, 1
        if cmd == Command.CACHE_STATS:
            return 0, 1, 1
        return 0, 0, 1

    def length_ok(self, cmd, n):
        lo, hi, step = self.length_rule(cmd)
        return lo <= n <= hi and (n - lo) % step == 0

    def _execute(self, cmd, body):
        b, flag = self.b, cmd | REPLY_FLAG
        if cmd != Command.CLEAR_COUNTERS:
            self.frames += 1
        if cmd == Command.INFO:
            return Expect(flag, b.info.pack())
        if cmd == Command.COUNTERS:
            payload = struct.pack("<IIIII", self.frames, self.inferences, self.errors, 0, self.uart_errors)
            return Expect(flag, payload, loose=((12, 4, "busy"),))
        if cmd == Command.CLEAR_COUNTERS:
            self.frames = self.inferences = self.errors = self.uart_errors = 0
            return Expect(flag, b"", clears=True)
        if cmd == Command.INFER:
            return self._infer(flag, body)
        if cmd == Command.INFER_BATCH:
            return self._infer(flag, body, batch=True)
        if cmd == Command.LOAD_WEIGHTS:
            addr = body[0] | body[1] << 8
            for i in range(0, len(body) - 2, self.wb):
                a = addr + i // self.wb
                word = int.from_bytes(body[2 + i:2 + i + self.wb], "little")
                (self.dirty.discard if word == b.weights[a] else self.dirty.add)(a)
            return Expect(flag, b"")
        if cmd == Command.CACHE_WRITE:
            slot, entry = body[0], self.images.get(body[1:])
            if entry is None:
                self.unknown_slots.add(slot)
                self.cache.invalidate(slot)
            else:
                self.unknown_slots.discard(slot)
                self.cache.write_entry(slot, entry)
            return Expect(flag, b"")
        if cmd == Command.CACHE_CLEAR:
            self.cache.clear()
            self.unknown_slots.clear()
            return Expect(flag, b"")
        if cmd == Command.CACHE_STATS:
            payload = struct.pack("<II", self.cache.hits, self.cache.misses)
            if body and body[0] & 1:
                self.cache.reset_counters()
            return Expect(flag, payload)
        if cmd == Command.CACHE_INFO:
            return Expect(flag, b.cache_info.pack())
        raise AssertionError(cmd)

    def _infer(self, flag, body, batch=False):
        info, one = self.b.info, self.d * self.bi
        n = self.bi
        codes = np.array([int.from_bytes(body[i:i + n], "little", signed=True) for i in range(0, len(body), n)],
                         dtype=np.int64).reshape(len(body) // one, self.d)
        k = len(codes)
        self.inferences += k
        loose = []
        if self.dirty or self.unknown_slots:
            # The reference no longer knows the weights or a slot: the answer is not checked.
            outs, amax, extra = None, None, None
        elif self.cache is not None:
            look = self.cache.lookup(codes)
            self.hits += int(look.hit.sum())
            self.misses += int((~look.hit).sum())
            outs, amax = look.outputs, golden.argmax(look.outputs)
            extra = bytes([int(look.hit[0]), max(0, int(look.slot[0]))])
        else:
            outs = golden.forward(self.b.model, codes)
            amax, extra = golden.argmax(outs), b""
        rec = info.output_dim * self.ob + 2
        payload = bytearray()
        for j in range(k):
            if outs is None:
                payload += bytes(rec)
                loose.append((j * rec, rec, "unknown"))
            else:
                payload += _codes_bytes(outs[j], info.output_bits) + struct.pack("<H", int(amax[j]))
            if not batch:
                payload += bytes(4)
                loose.append((len(payload) - 4, 4, "cycles"))
                if self.cache is not None:
                    if outs is None:
                        loose.append((len(payload), 2, "unknown"))
                    payload += extra or bytes(2)
        if batch:
            payload += bytes(4)
            loose.append((len(payload) - 4, 4, "cycles"))
        return Expect(flag, bytes(payload), loose=tuple(loose), runs=1, limit=k * (4 * self.cpi + 64))


# ---- the frames --------------------------------------------------------------------------

@dataclasses.dataclass
class Step:
    """Bytes the bench sends in one go, what kind of frame they are, and a note."""

    kind: str
    data: bytes
    note: str
    bad: frozenset = frozenset()     # indices of bytes sent with a low stop bit


def _valid_frame(board, model, rng, cmd=None):
    """A well-formed request of a command this build answers, with a note."""
    info, cached = board.info, board.cache_info is not None
    cmds = [Command.INFO, Command.INFER, Command.COUNTERS, Command.CLEAR_COUNTERS]
    if board.loadable:
        cmds.append(Command.LOAD_WEIGHTS)
    if board.batch:
        cmds.append(Command.INFER_BATCH)
    if cached:
        cmds += list(CACHE_COMMANDS)
    if cmd is None:
        # mostly INFERs, the commands with side effects often enough to matter
        often = {Command.INFO: 4, Command.INFER: 8, Command.COUNTERS: 3, Command.CLEAR_COUNTERS: 1,
                 Command.LOAD_WEIGHTS: 3, Command.INFER_BATCH: 3, Command.CACHE_WRITE: 4, Command.CACHE_CLEAR: 1,
                 Command.CACHE_STATS: 2, Command.CACHE_INFO: 1}
        weights = np.array([often[c] for c in cmds], float)
        cmd = Command(cmds[int(rng.choice(len(cmds), p=weights / weights.sum()))])
    lo, hi = -(1 << (info.input_bits - 1)), (1 << (info.input_bits - 1)) - 1
    if cmd == Command.INFER:
        if cached and rng.random() < 0.6:
            # near the center of an entry a slot holds (the generator's reference follows
            # the frames), so that hits happen
            held = [(e.center, e) for e in (model.cache.entries if model.cache is not None else []) if e is not None]
            c, e = held[int(rng.integers(len(held)))] if held else board.entries[int(rng.integers(len(board.entries)))][:2]
            r = e.bound + int(rng.random() < 0.3)       # inside the ball, or up to a code outside
            x = np.clip(c + rng.integers(-r, r + 1, size=c.size), lo, hi)
        else:
            x = rng.integers(lo, hi + 1, size=info.input_dim)
        return encode_frame(cmd, _codes_bytes(x, info.input_bits)), "INFER"
    if cmd == Command.INFER_BATCH:
        k = int(rng.integers(1, board.batch + 1))
        x = rng.integers(lo, hi + 1, size=(k, info.input_dim))
        return encode_frame(cmd, _codes_bytes(x, info.input_bits)), f"INFER_BATCH of {k}"
    if cmd == Command.LOAD_WEIGHTS:
        per = (info.max_payload - 2) // info.weight_word_bytes
        n = int(rng.integers(1, min(per, len(board.weights)) + 1))
        a = int(rng.integers(0, len(board.weights) - n + 1))
        words = b"".join(w.to_bytes(info.weight_word_bytes, "little") for w in board.weights[a:a + n])
        return encode_frame(cmd, struct.pack("<H", a) + words), f"LOAD_WEIGHTS of words {a}..{a + n - 1}"
    if cmd == Command.CACHE_WRITE:
        # entry j always goes to slot j mod entries, so the entries INFER aims at are often there
        j = int(rng.integers(len(board.entries)))
        slot = j % board.cache_info.entries
        return encode_frame(cmd, bytes([slot]) + board.entries[j][2]), f"CACHE_WRITE of entry {j} to slot {slot}"
    if cmd == Command.CACHE_STATS:
        flags = [b"", b"\0", b"\1"][int(rng.integers(3))]
        return encode_frame(cmd, flags), f"CACHE_STATS {flags.hex()}"
    return encode_frame(cmd), cmd.name


def _length_variants(board, model, rng, cmd, longer):
    """Frames of ``cmd`` one byte shorter (or longer) than its rule allows, with notes.

    Each of: ``LEN`` one below the rule's shortest payload (none below an empty one) or,
    for a rule of whole words or inputs, one below its longest; ``LEN`` one above the
    longest or one above the shortest; all with a correct CRC.  And the frame itself one
    byte short (its last CRC byte missing) or one byte long (a random byte after the CRC).
    """
    lo, hi, step = model.length_rule(cmd)
    if longer:
        lengths = [hi + 1] + ([lo + 1] if step > 1 else [])
    else:
        lengths = ([lo - 1] if lo > 0 else []) + ([hi - 1] if step > 1 and hi - 1 > lo else [])
    if model.known(cmd) and not model.unsupported(cmd):
        good, note = _valid_frame(board, model, rng, cmd)
    else:
        good, note = encode_frame(cmd), cmd.name
    out = []
    for n in lengths:
        payload = bytearray(good[4:-2])
        payload = (payload + bytes(rng.integers(0, 256, size=max(0, n - len(payload)), dtype=np.uint8)))[:n]
        if cmd == Command.CACHE_WRITE and payload and board.cache_info is not None:
            payload[0] %= board.cache_info.entries
        out.append((encode_frame(cmd, bytes(payload)), f"{cmd.name} with LEN {n} (rule {lo}..{hi} step {step})"))
    if longer:
        extra = int(rng.integers(0, 256)) if rng.random() < 0.75 else REQ_SYNC
        out.append((good + bytes([extra]), f"{note} and one byte 0x{extra:02x} after its CRC"))
    else:
        out.append((good[:-1], f"{note} without its last CRC byte"))
    return out


def _length_variant(board, model, rng, cmd, longer):
    """One of :func:`_length_variants`, at random."""
    variants = _length_variants(board, model, rng, cmd, longer)
    return variants[int(rng.integers(len(variants)))]


def make_steps(board, n, seed):
    """``n`` steps for ``board``: first the weights (plain build), then every command one
    byte short and one byte long, then a seeded random mix of :data:`KINDS`."""
    rng = np.random.default_rng([seed, BUILDS.index(board.name)])
    model = LinkModel(board)
    steps = []
    if board.loadable:
        per = (board.info.max_payload - 2) // board.info.weight_word_bytes
        for a in range(0, len(board.weights), per):
            words = b"".join(w.to_bytes(board.info.weight_word_bytes, "little") for w in board.weights[a:a + per])
            steps.append(Step("valid", encode_frame(Command.LOAD_WEIGHTS, struct.pack("<H", a) + words),
                              f"LOAD_WEIGHTS of words {a}.. (start-up)"))
        # one word past the end (before the fix, it wrapped around onto word 0)
        end = struct.pack("<H", len(board.weights)) + bytes([0x7F]) * board.info.weight_word_bytes
        steps.append(Step("bad_argument", encode_frame(Command.LOAD_WEIGHTS, end), "LOAD_WEIGHTS one word past the end"))
    if board.cache_info is not None:
        for slot in range(board.cache_info.entries):
            steps.append(Step("valid", encode_frame(Command.CACHE_WRITE, bytes([slot]) + board.entries[slot][2]),
                              f"CACHE_WRITE of entry {slot} to slot {slot} (start-up)"))
        steps += [Step("bad_argument", encode_frame(Command.CACHE_WRITE, bytes([board.cache_info.entries])
                                                    + board.entries[0][2]), "CACHE_WRITE to the first slot too many"),
                  Step("bad_argument", encode_frame(Command.CACHE_STATS, b"\x02"), "CACHE_STATS 02")]
    for cmd in Command:      # every command of the protocol, on both builds
        for longer in (False, True):
            for v in _length_variants(board, model, rng, cmd, longer):
                steps.append(Step("long" if longer else "short", *v))
    kinds = np.array(KINDS)
    has_arguments = board.loadable or board.cache_info is not None
    p = np.array([36, 6, 6, 8, 8, 8, 4, 5, 4, 4, 3 if has_arguments else 0, 4, 3], float)
    info = board.info
    fed = 0
    while len(steps) < n:
        for step in steps[fed:]:      # the reference follows the frames (which slots hold what)
            model.feed(step.data, step.bad)
            model.pause()
        fed = len(steps)
        kind = str(kinds[rng.choice(len(kinds), p=p / p.sum())])
        if kind == "valid":
            steps.append(Step(kind, *_valid_frame(board, model, rng)))
        elif kind in ("short", "long"):
            cmds = list(Command)
            v = _length_variant(board, model, rng, cmds[int(rng.integers(len(cmds)))], kind == "long")
            steps.append(Step(kind, *v))
        elif kind == "bad_crc":
            f, note = _valid_frame(board, model, rng)
            f = bytearray(f)
            bad = (f[-2] | f[-1] << 8) ^ int(rng.integers(1, 1 << 16))
            f[-2:] = struct.pack("<H", bad)
            steps.append(Step(kind, bytes(f), f"{note}, CRC replaced"))
        elif kind == "flipped":
            f, note = _valid_frame(board, model, rng)
            f = bytearray(f)
            bits = sorted(int(b) for b in rng.choice(8 * len(f), size=int(rng.integers(1, 4)), replace=False))
            for bit in bits:
                f[bit // 8] ^= 1 << (bit % 8)
            steps.append(Step(kind, bytes(f), f"{note}, bits {bits} flipped"))
        elif kind == "truncated":
            f, note = _valid_frame(board, model, rng)
            cut = int(rng.integers(1, len(f)))
            steps.append(Step(kind, f[:cut], f"{note}, cut after {cut} of {len(f)} bytes"))
        elif kind == "oversized":
            length = int(rng.integers(info.max_payload + 1, 1 << 16))
            cmd = int(rng.integers(0, 256))
            body = rng.integers(0, 256, size=min(length, info.max_payload + int(rng.integers(1, 17))),
                                dtype=np.uint8).tobytes()
            hdr = bytes([cmd]) + struct.pack("<H", length)
            data = bytes([REQ_SYNC]) + hdr + body + struct.pack("<H", crc16(hdr + body))
            steps.append(Step(kind, data, f"command 0x{cmd:02x} with LEN {length}, {len(body)} body bytes sent"))
        elif kind == "garbage":
            data = rng.integers(0, 256, size=int(rng.integers(1, 41)), dtype=np.uint8).tobytes()
            steps.append(Step(kind, data, f"{len(data)} random bytes"))
        elif kind == "unknown":
            cmd = int(rng.choice([c for c in range(256) if not model.known(c) and not model.unsupported(c)]))
            data = encode_frame(cmd, rng.integers(0, 256, size=int(rng.integers(0, 9)), dtype=np.uint8).tobytes())
            steps.append(Step(kind, data, f"command 0x{cmd:02x}"))
        elif kind == "unsupported":
            cmd = int(rng.choice([c for c in range(256) if model.unsupported(c)]))
            data = encode_frame(cmd, rng.integers(0, 256, size=int(rng.integers(0, 9)), dtype=np.uint8).tobytes())
            steps.append(Step(kind, data, f"command 0x{cmd:02x}"))
        elif kind == "burst":
            # Requests back to back, not waiting for the replies: they queue in the receive FIFO.
            frames, notes = [], []
            while len(frames) < int(rng.integers(2, 7)):
                f, note = _valid_frame(board, model, rng)
                if sum(map(len, frames)) + len(f) > 200:
                    break
                frames.append(f)
                notes.append(note)
            steps.append(Step(kind, b"".join(frames), "back to back: " + ", ".join(notes)))
        elif kind == "line_error":
            f, note = _valid_frame(board, model, rng)
            at = int(rng.integers(0, len(f)))
            steps.append(Step(kind, f, f"{note}, byte {at} sent with a low stop bit", frozenset([at])))
        elif kind == "bad_argument" and board.loadable:
            # words running past the end of the weight memory
            per = (info.max_payload - 2) // info.weight_word_bytes
            k = int(rng.integers(1, per + 1))
            a = int(rng.integers(len(board.weights) - k + 1, 1 << 16))
            words = rng.integers(0, 256, size=k * info.weight_word_bytes, dtype=np.uint8).tobytes()
            steps.append(Step(kind, encode_frame(Command.LOAD_WEIGHTS, struct.pack("<H", a) + words),
                              f"LOAD_WEIGHTS of words {a}..{a + k - 1} of {len(board.weights)}"))
        elif kind == "bad_argument":
            if rng.random() < 0.5:
                ci = board.cache_info
                slot = int(rng.integers(ci.entries, 256))
                data = encode_frame(Command.CACHE_WRITE, bytes([slot]) + board.entries[0][2])
                steps.append(Step(kind, data, f"CACHE_WRITE to slot {slot}"))
            else:
                flags = int(rng.integers(2, 256))
                steps.append(Step(kind, encode_frame(Command.CACHE_STATS, bytes([flags])), f"CACHE_STATS {flags:02x}"))
    # The run ends with the counters (and the cache's), so each run's totals are checked.
    last = [Step("valid", encode_frame(Command.COUNTERS), "COUNTERS (final)")]
    if board.cache_info is not None:
        last.append(Step("valid", encode_frame(Command.CACHE_STATS), "CACHE_STATS (final)"))
    return steps[:max(0, n - len(last))] + last[:n]


# ---- running and checking ----------------------------------------------------------------

@dataclasses.dataclass
class Result:
    """Outcome counts of a campaign (or of one build's run)."""

    frames: collections.Counter = dataclasses.field(default_factory=collections.Counter)    # by kind
    answers: collections.Counter = dataclasses.field(default_factory=collections.Counter)   # by reply
    steps: int = 0
    hangs: list = dataclasses.field(default_factory=list)
    mismatches: list = dataclasses.field(default_factory=list)
    counter_checks: int = 0
    unchecked: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    sim_seconds: float = 0.0
    build_seconds: float = 0.0
    seconds: float = 0.0
    builds: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        return not self.hangs and not self.mismatches


def _bound(exps):
    """Watchdog cycles for a step whose replies are ``exps``."""
    byte = 10 * DIVISOR
    return (sum(e.length for e in exps) + 8) * byte * 2 + TIMEOUT_BYTES * byte + sum(e.limit for e in exps) + 4096


#: What :func:`run_steps` returns: the reference's replies per step (lists of :class:`Expect`),
#: the bytes the device sent per step, the index of the step that hung (or ``None``), the
#: simulation's wall time, and the reference model after the last step.
Run = collections.namedtuple("Run", ["expects", "replies", "hang", "seconds", "model"])


def run_steps(board, steps, workdir):
    """Run ``steps`` on ``board``'s bench from reset; returns a :data:`Run`."""
    model = LinkModel(board)
    expects = []
    for s in steps:
        expects.append(model.feed(s.data, s.bad) + model.pause())
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = [b | (0x100 if i in s.bad else 0) for s in steps for i, b in enumerate(s.data)]
    if len(steps) > MAX_STEPS or len(data) > MAX_BYTES:
        raise ValueError(f"{len(steps)} steps of {len(data)} bytes exceed the bench's {MAX_STEPS} and {MAX_BYTES}")
    startup = 64
    (work / "params.hex").write_text(f"{DIVISOR:x}\n{startup:x}\n{len(steps):x}\n{GAP_BYTES * 10 * DIVISOR:x}\n")
    (work / "req.hex").write_text("".join(f"{b:03x}\n" for b in data) or "000\n")
    (work / "steps.hex").write_text("".join(f"{len(s.data):x}\n{sum(e.length for e in ex):x}\n{_bound(ex):x}\n"
                                            for s, ex in zip(steps, expects)) or "0\n")
    t0 = time.monotonic()
    run = subprocess.run([str(board.binary)], cwd=work, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if run.returncode:
        raise RuntimeError(f"the link bench failed ({run.returncode}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    replies = [bytearray() for _ in steps]
    framing = set()
    for line in (work / "tx.txt").read_text().splitlines():
        idx, val = line.split()
        if val == "framing":
            framing.add(int(idx))
        else:
            replies[int(idx)].append(int(val, 16))
    hang = None
    for line in run.stdout.splitlines():
        if line.startswith("HANG "):
            hang = int(line.split()[1])
    if hang is None and not any(line.startswith("RESULT ") for line in run.stdout.splitlines()):
        raise RuntimeError(f"the link bench stopped without a result:\n{run.stdout[-2000:]}")
    for i in sorted(framing):
        replies[i] += b"<framing error>"
    return Run(expects, [bytes(r) for r in replies], hang, seconds, model)


def check_steps(board, steps, run, result):
    """Compare every step's reply bytes (``run``, from :func:`run_steps`) with the reference;
    add the counts, hangs and mismatches to ``result``."""
    expects, replies, hang = run.expects, run.replies, run.hang
    cycles_sum = runs = 0
    n = len(steps) if hang is None else hang
    for i in range(n):
        step, exps, got = steps[i], expects[i], replies[i]
        result.steps += 1
        result.frames[step.kind] += 1
        pos, problems = 0, []
        for e in exps:
            frame = got[pos:pos + e.length]
            pos += e.length
            if e.runs:
                runs += e.runs
            if e.clears:
                cycles_sum = runs = 0
            want = bytes([REP_SYNC, e.cmd]) + struct.pack("<H", len(e.payload))
            if len(frame) != e.length or frame[:4] != want:
                problems.append(f"expected {e.name} ({e.length} bytes, {want.hex()}...), got {frame.hex() or 'nothing'}")
                continue
            if struct.unpack("<H", frame[-2:])[0] != crc16(frame[1:-2]):
                problems.append(f"{e.name}: bad reply CRC in {frame.hex()}")
                continue
            payload, mask = bytearray(frame[4:-2]), bytearray(e.payload)
            for off, size, what in e.loose:
                value = int.from_bytes(payload[off:off + size], "little")
                if what == "cycles":
                    if not 0 < value <= e.limit:
                        problems.append(f"{e.name}: cycles {value} outside 1..{e.limit}")
                    cycles_sum += value
                elif what == "busy":
                    result.counter_checks += 1
                    if not cycles_sum <= value <= cycles_sum + 8 * runs:
                        problems.append(f"COUNTERS: busy cycles {value}, the replies since the last clear "
                                        f"reported {cycles_sum} cycles in {runs} runs")
                elif what == "unknown":
                    result.unchecked += 1
                payload[off:off + size] = mask[off:off + size]
            if bytes(payload) != bytes(mask):
                problems.append(f"{e.name}: payload {frame[4:-2].hex()}, expected {e.payload.hex()}"
                                f"{' (cycles fields not compared)' if e.loose else ''}")
                continue
            result.answers[e.name] += 1
        if pos != len(got):
            problems.append(f"{len(got) - pos} bytes more than expected: {got[pos:].hex()}")
        if problems:
            result.mismatches.append((board.name, i, step, "; ".join(problems)))
    if hang is not None:
        step = steps[hang]
        result.frames[step.kind] += 1
        result.steps += 1
        exp = " + ".join(e.name for e in expects[hang]) or "nothing"
        result.hangs.append((board.name, hang, step, f"waited for {exp}, got {replies[hang].hex() or 'nothing'}"))


def campaign(frames, seed=0, *, builds=BUILDS, workdir=None, log=print):
    """Fuzz the link with ``frames`` steps in all, split over ``builds`` (the plain build
    takes two shares, the others one each); returns a :class:`Result`."""
    t0 = time.monotonic()
    result = Result()
    shares = {"plain": 2, "cached": 1, "wide": 1, "small": 1}
    total = sum(shares[b] for b in builds)
    left = frames
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="pwlnet-link-fuzz-")
        workdir = tmp.name
    try:
        for j, name in enumerate(builds):
            n = left if j == len(builds) - 1 else frames * shares[name] // total
            left -= n
            board = compile_board(make_board(name), log=log)
            result.build_seconds += board.build_seconds
            steps = make_steps(board, n, seed)
            run = run_steps(board, steps, Path(workdir) / name)
            result.sim_seconds += run.seconds
            check_steps(board, steps, run, result)
            result.cache_hits += run.model.hits
            result.cache_misses += run.model.misses
            result.builds.append((name, n))
    finally:
        if tmp is not None:
            tmp.cleanup()
    result.seconds = time.monotonic() - t0
    return result


def format_result(result, frames, seed):
    """The counts as the command prints them."""
    lines = [f"link fuzzing, seed {seed}: {result.steps} of {frames} frames sent "
             f"({', '.join(f'{n} on the {b} build' for b, n in result.builds)})"]
    lines.append("  frames by kind:  " + ", ".join(f"{k} {result.frames[k]}" for k in KINDS if result.frames[k]))
    lines.append("  answers by code: " + ", ".join(f"{k} {v}" for k, v in sorted(result.answers.items(),
                                                                                   key=lambda kv: -kv[1])))
    lines.append(f"  COUNTERS replies checked: {result.counter_checks}; cached build: {result.cache_hits} INFERs "
                 f"answered by a slot, {result.cache_misses} by the network; answers not checked (weights or a "
                 f"slot the reference did not know): {result.unchecked}")
    lines.append(f"  hangs: {len(result.hangs)}, mismatches: {len(result.mismatches)}")
    lines.append(f"  time: {result.seconds:.1f} s ({result.build_seconds:.1f} s building or finding the benches, "
                 f"{result.sim_seconds:.1f} s simulating)")
    for what, items in (("hang", result.hangs), ("mismatch", result.mismatches)):
        for build, i, step, detail in items[:10]:
            lines.append(f"{what} on the {build} build, frame {i} ({step.kind}: {step.note}): "
                         f"sent {step.data.hex()}: {detail}")
    return "\n".join(lines)
