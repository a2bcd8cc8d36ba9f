"""The synthesized board top, simulated as a netlist and checked through its UART pins.

What the FPGA runs is not Amaranth's Verilog but yosys' netlist after ``synth_ice40``:
LUTs, flip-flops, carry chains, block RAMs with their initialisation, the lanes'
``SB_MAC16`` blocks, ``SB_IO`` pads and the PLL.  :func:`verify_netlist` simulates that
netlist (the ``top.netlist.v`` a :mod:`pwlnet.boards.build` run writes) with yosys' own
behavioural models of the iCE40 cells (``share/ice40/cells_sim.v``) on Icarus or
Verilator, from power-up: no reset is applied from outside, the flip-flops start at the
zero the models (and the silicon) give them, and the block RAMs hold what the netlist's
``INIT_*`` parameters say.  A Verilog bench bit-bangs request frames
(:func:`pwlnet.protocol.encode_frame`) into the UART's rx pad at the build's divisor and
records every byte the tx pad sends; the replies are then checked against the RTL's own
INFO record and against :func:`pwlnet.golden.forward`.

The PLL has no behavioural model (``cells_sim.v`` declares ``SB_PLL40_PAD`` and
``SB_PLL40_CORE`` as black boxes), so :data:`PLL_STANDIN` replaces both: the output clock
*is* the input clock (the pad's, or ``REFERENCECLK``), and LOCK rises :data:`LOCK_CYCLES`
input cycles after power-up.  Every count in the design
(UART divisor, reset delay, link timeout) is in cycles of that clock, so the bench runs
the pad at the PLL's output rate in cycles and nothing else changes.  The frequency
arithmetic of the real PLL (DIVR/DIVF/DIVQ) is not simulated, and neither is any delay:
this is a functional simulation of the netlist, not a timing one (nextpnr's timing
report covers timing).

Which boards the check covers is :func:`check_board`'s: the iCE40 boards, whose every cell
but the PLL has a model.  yosys ships no behavioural model of the ECP5 and Gowin block RAMs
(nor of the ECP5 multipliers) their netlists use, so those boards are refused rather than
simulated against models of our own (:data:`UNCHECKED_FAMILIES`).

The check is batch-wise: the bench sends a frame, waits for as many reply bytes as the
protocol says the reply has (or gives up after a bound), and moves on.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..protocol import REP_SYNC, CacheInfo, LinkInfo, crc16
from .netlist_plan import NetlistMismatch, cached_plan, model_blocks, plain_plan
from .runner import SIMULATORS, cache_root, ice40_cells_sim, verilator_env

__all__ = ["NetlistMismatch", "LOCK_CYCLES", "PLL_STANDIN", "CHECKED_CLOCKS", "UNCHECKED_FAMILIES", "check_board",
           "netlist_sources", "run_frames", "run_plan", "verify_netlist", "verify_top"]

#: Input-clock cycles from power-up until a PLL stand-in raises LOCK.
LOCK_CYCLES = 64


def _pll_standin(cell, clock_in):
    """A stand-in for the iCE40 PLL ``cell`` (``SB_PLL40_PAD`` or ``SB_PLL40_CORE``, whose
    ports and parameters are the same but for the name of the input clock, ``clock_in``)."""
    return f"""
`timescale 1ns/1ps
module {cell} (
  input {clock_in}, output PLLOUTCORE, output PLLOUTGLOBAL, input EXTFEEDBACK,
  input [7:0] DYNAMICDELAY, output LOCK, input BYPASS, input RESETB,
  input LATCHINPUTVALUE, output SDO, input SDI, input SCLK
);
  parameter FEEDBACK_PATH = "SIMPLE";
  parameter DELAY_ADJUSTMENT_MODE_FEEDBACK = "FIXED";
  parameter DELAY_ADJUSTMENT_MODE_RELATIVE = "FIXED";
  parameter SHIFTREG_DIV_MODE = 1'b0;
  parameter FDA_FEEDBACK = 4'b0000;
  parameter FDA_RELATIVE = 4'b0000;
  parameter PLLOUT_SELECT = "GENCLK";
  parameter DIVR = 4'b0000;
  parameter DIVF = 7'b0000000;
  parameter DIVQ = 3'b000;
  parameter FILTER_RANGE = 3'b000;
  parameter ENABLE_ICEGATE = 1'b0;
  parameter TEST_MODE = 1'b0;
  parameter EXTERNAL_DIVIDE_FACTOR = 1;
  assign PLLOUTGLOBAL = {clock_in};
  assign PLLOUTCORE = {clock_in};
  assign SDO = 1'b0;
  reg locked = 1'b0;
  integer count = 0;
  always @(posedge {clock_in})
    if (count < {LOCK_CYCLES}) count <= count + 1;
    else locked <= 1'b1;
  assign LOCK = locked & RESETB & ~BYPASS;
endmodule
"""


#: The PLL cells stood in for, with the name of their input clock port.
_STOOD_IN = {"SB_PLL40_PAD": "PACKAGEPIN", "SB_PLL40_CORE": "REFERENCECLK"}
#: The PLL stand-ins (see the module docstring); they keep the cells' ports and parameters.
PLL_STANDIN = "".join(_pll_standin(cell, port) for cell, port in _STOOD_IN.items())

#: The boards' clock sources (:data:`pwlnet.boards.registry.PLL_KINDS`) whose netlists the
#: check simulates: the iCE40 PLLs, each with its stand-in.
CHECKED_CLOCKS = ("ice40-pad", "ice40-core")
#: Why the other families' netlists are not simulated: their cells without a model.
UNCHECKED_FAMILIES = {
    "ecp5": "yosys ships no simulation model of the ECP5 block RAM and multipliers the netlist uses "
            "(share/ecp5/cells_sim.v declares DP16KD as a black box; PDPW16KD and MULT18X18D are only "
            "in cells_bb.v)",
    "gowin": "yosys ships no simulation model of the Gowin block RAM the netlist uses (DPX9B, SDPX9B, "
             "DPB, SDPB are port lists without a body in share/gowin/cells_xtra_gw1n.v)",
}


def check_board(board):
    """Refuse (``ValueError``, saying why) a board whose netlist :func:`verify_netlist`
    cannot simulate: ``board`` is a :class:`pwlnet.boards.registry.Board`."""
    head = (f"the netlist check simulates iCE40 cells with stand-ins for {' and '.join(_STOOD_IN)}; "
            f"the {board.name}'s clock is {board.clock.describe()}")
    if board.family in UNCHECKED_FAMILIES:
        raise ValueError(f"{head}, and its netlist cannot be simulated: "
                         f"{UNCHECKED_FAMILIES[board.family]}; build without --verify-netlist")
    if board.clock.pll not in CHECKED_CLOCKS:
        raise ValueError(f"{head}: build without --verify-netlist")


#: Most request bytes and frames one run takes (the bench's arrays; runs read their sizes
#: from files, so one compiled bench serves every run on a netlist).
MAX_BYTES, MAX_FRAMES = 1 << 20, 1 << 16

# params.hex: divisor, startup cycles, frame count.  frames.hex: per frame, request length,
# reply length, cycle bound.  req.hex: the request bytes.
_TB = """
`timescale 1ns/1ps
module tb;
  reg [31:0] prm [0:2];
  integer DIV;
  reg clk = 0;
  always #5 clk = ~clk;
  reg rx = 1'b1;
  wire tx;
  // the pads are inout ports of the netlist: drive them through nets
  wire clk_pad = clk, rx_pad = rx;
  {top} dut(.{clk_port}(clk_pad), .{rx_port}(rx_pad), .{tx_port}(tx));

  reg [7:0] req [0:{max_bytes}-1];
  reg [31:0] frm [0:{max_words}-1];
  integer f, i, j, k, p = 0, got = 0, want = 0, waited;

  task send_byte(input [7:0] b);
    begin
      rx <= 1'b0; repeat (DIV) @(posedge clk);
      for (k = 0; k < 8; k = k + 1) begin rx <= b[k]; repeat (DIV) @(posedge clk); end
      rx <= 1'b1; repeat (DIV) @(posedge clk);
    end
  endtask

  // tx monitor: start bit seen, sample the middle of every bit, keep bytes with a stop bit
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
           if (tx === 1'b1) begin $fwrite(f, "%0d %02x\\n", i, rbyte); got = got + 1; end
           else $fwrite(f, "%0d framing\\n", i);
           rstate <= 0;
         end
    endcase
  end

  initial begin
    $readmemh("params.hex", prm);
    DIV = prm[0];
    $readmemh("req.hex", req);
    $readmemh("frames.hex", frm);
    f = $fopen("tx.txt", "w");
    repeat (prm[1]) @(posedge clk);
    for (i = 0; i < prm[2]; i = i + 1) begin
      want = want + frm[3 * i + 1];
      for (j = 0; j < frm[3 * i]; j = j + 1) begin
        send_byte(req[p]); p = p + 1;
      end
      waited = 0;
      while (got < want && waited < frm[3 * i + 2]) begin @(posedge clk); waited = waited + 1; end
      if (got < want) begin
        $display("TIMEOUT %0d", i); $fclose(f); $finish;
      end
      // one byte time of idle line between a reply and the next request
      repeat (10 * DIV) @(posedge clk);
    end
    $display("RESULT %0d 0", i);
    $fclose(f);
    $finish;
  end
endmodule
"""


def netlist_sources(workdir, simulator="icarus"):
    """Write the cell models into ``workdir``: ``cells_sim.v`` without its black boxes of
    the PLLs stood in for, and :data:`PLL_STANDIN`.  Returns their paths.

    For Verilator, ``SB_IO``'s "an unconnected CLOCK_ENABLE reads as 1" (a test for
    ``1'bz``, which Verilator refuses as a tristate) becomes plain ``CLOCK_ENABLE``: the
    netlist connects that port of every ``SB_IO`` (see :func:`_check_defaults_connected`).
    """
    workdir = Path(workdir)
    text = ice40_cells_sim().read_text()
    # Drop the (* blackbox *) PLL declarations; the stand-ins replace them.
    for cell in _STOOD_IN:
        text, n = re.subn(rf"\(\* blackbox \*\)\s*module {cell} \(.*?endmodule", "", text, flags=re.S)
        if n != 1:
            raise RuntimeError(f"expected one {cell} black box in {ice40_cells_sim()}, found {n}")
    # Icarus cannot parse the models' input-port default values; yosys' write_verilog
    # connects every input of the cells synth_ice40 makes, so no default is ever used.
    text = "`define NO_ICE40_DEFAULT_ASSIGNMENTS\n" + text
    if simulator == "verilator":
        text, n = re.subn(r"wire clken_pulled = CLOCK_ENABLE \|\| CLOCK_ENABLE === 1'bz;",
                          "wire clken_pulled = CLOCK_ENABLE;", text)
        if n != 1:
            raise RuntimeError(f"expected one SB_IO clock-enable pull-up in {ice40_cells_sim()}, found {n}")
    cells, pll = workdir / "cells_sim.v", workdir / "pll_standin.v"
    cells.write_text(text)
    pll.write_text(PLL_STANDIN)
    return [cells, pll]


def _defaulted_ports():
    """``{cell: [input ports with a default value]}`` as ``cells_sim.v`` declares them."""
    out = {}
    for name, body in re.findall(r"^module (\w+)\s*\((.*?)\);", ice40_cells_sim().read_text(), re.S | re.M):
        ports = re.findall(r"input\s+(?:\[[^]]*\]\s*)?(\w+)\s*`ICE40_DEFAULT_ASSIGNMENT", body)
        if ports:
            out[name] = ports
    return out


def _check_defaults_connected(netlist_text):
    """Refuse a netlist with a cell whose defaulted input port is left unconnected.

    The cell models are compiled without their input-port defaults (see
    :func:`netlist_sources`), so such a port would float instead of taking its default.
    """
    loose = []
    for cell, ports in _defaulted_ports().items():
        for name, conns in re.findall(rf"^\s*{cell}\s+(?:#\(.*?\)\s*)?(\S+)\s*\((.*?)\);", netlist_text,
                                      re.S | re.M):
            loose += [f"{cell} {name} .{port}" for port in ports if f".{port}(" not in conns]
    if loose:
        raise RuntimeError(f"the netlist leaves {len(loose)} defaulted cell inputs unconnected, which the "
                           f"simulation cannot model: {', '.join(loose[:10])}")


def _black_boxes():
    """Cells ``cells_sim.v`` declares as black boxes (no behaviour), the PLLs stood in for aside."""
    text = ice40_cells_sim().read_text()
    return set(re.findall(r"\(\* blackbox \*\)\s*module (\w+)", text)) - set(_STOOD_IN)


def _check_modelled(netlist_text):
    """Refuse a netlist that instantiates a cell with no behavioural model: it would compile
    (a black box is an empty module) and then leave its outputs floating."""
    used = sorted(cell for cell in _black_boxes() if re.search(rf"^\s*{cell}\s", netlist_text, re.M))
    if used:
        raise RuntimeError(f"the netlist uses {', '.join(used)}, which yosys' cell models declare as black "
                           f"boxes (no behaviour to simulate)")


def _port(netlist_text, top, pattern, what):
    """The one port of module ``top`` whose name matches ``pattern``."""
    head = re.search(rf"module {re.escape(top)}\s*\((.*?)\);", netlist_text, re.S)
    if head is None:
        raise RuntimeError(f"the netlist has no module {top!r}")
    names = [p.strip() for p in head[1].split(",")]
    found = [n for n in names if re.fullmatch(pattern, n)]
    if len(found) != 1:
        raise RuntimeError(f"the netlist's top {top!r} has {len(found)} ports for {what} "
                           f"(pattern {pattern!r}) among {names}")
    return found[0]


def run_frames(netlist, frames, *, divisor, startup_cycles, simulator="verilator", workdir=None, top="top"):
    """Simulate ``netlist`` answering ``frames`` through its UART pads.

    Parameters
    ----------
    netlist : path
        yosys' ``write_verilog`` output of the synthesized board top.
    frames : list of (bytes, int, int)
        Request frame, length of its reply in bytes, and how many cycles to wait for it
        after the request's last stop bit.
    divisor : int
        Cycles per UART bit (the build's).
    startup_cycles : int
        Idle cycles from power-up before the first request.

    Returns
    -------
    replies : list of bytes
        What the tx pad sent while each frame was answered; the list stops at the first
        frame that got fewer bytes than its reply length.
    stdout : str
        The simulator's output.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    netlist = Path(netlist).resolve()
    work = Path(workdir or tempfile.mkdtemp(prefix="pwlnet-netlist-"))
    work.mkdir(parents=True, exist_ok=True)
    text = netlist.read_text()
    _check_defaults_connected(text)
    _check_modelled(text)
    # The board's clock resource (clk12, clk16, ...) is its one clk*_0 pad.
    ports = dict(clk_port=_port(text, top, r"\\?clk\w*_0__io", "the clock pad"),
                 rx_port=_port(text, top, r"\\?uart_0__rx__io", "the UART rx pad"),
                 tx_port=_port(text, top, r"\\?uart_0__tx__io", "the UART tx pad"))
    ports = {k: (v + " " if v.startswith("\\") else v) for k, v in ports.items()}
    data = b"".join(f[0] for f in frames)
    if len(data) > MAX_BYTES or len(frames) > MAX_FRAMES:
        raise ValueError(f"{len(frames)} frames of {len(data)} bytes exceed the bench's {MAX_FRAMES} frames "
                         f"and {MAX_BYTES} bytes")
    (work / "params.hex").write_text(f"{int(divisor):x}\n{int(startup_cycles):x}\n{len(frames):x}\n")
    (work / "req.hex").write_text("".join(f"{b:02x}\n" for b in data) or "00\n")
    (work / "frames.hex").write_text("".join(f"{len(r):x}\n{n:x}\n{c:x}\n" for r, n, c in frames) or "0\n")
    bench = _TB.format(top=top, max_bytes=MAX_BYTES, max_words=3 * MAX_FRAMES, **ports)
    binary = _compiled(bench, netlist, text, simulator)
    cmd = ["vvp", "-n", str(binary)] if simulator == "icarus" else [str(binary)]
    out = subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True).stdout
    replies = [bytearray() for _ in frames]
    for line in (work / "tx.txt").read_text().splitlines():
        idx, val = line.split()
        if val == "framing":
            raise NetlistMismatch(f"frame {idx}: the tx pad sent a byte without a stop bit")
        replies[int(idx)].append(int(val, 16))
    done = len(frames)
    m = re.search(r"^TIMEOUT (\d+)", out, re.M)
    if m:
        done = int(m[1]) + 1
    return [bytes(r) for r in replies[:done]], out


def _compiled(bench, netlist, netlist_text, simulator):
    """The bench compiled with ``netlist`` on ``simulator``, built once per content (kept
    under :func:`pwlnet.sim.runner.cache_root`).  Flags as in
    :func:`pwlnet.sim.verilog_check.run_selfcheck`."""
    cells = ice40_cells_sim().read_bytes()
    key = hashlib.sha256(b"\0".join([bench.encode(), netlist_text.encode(), cells, PLL_STANDIN.encode(),
                                      simulator.encode()])).hexdigest()[:16]
    final = cache_root() / "netlist" / f"{simulator}-{key}"
    binary = final / ("sim.vvp" if simulator == "icarus" else "obj_dir/simv")
    if binary.is_file():
        return binary
    final.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
    (build / "tb.v").write_text(bench)
    sources = [str(build / "tb.v"), str(netlist), *map(str, netlist_sources(build, simulator))]
    if simulator == "icarus":
        cmd = ["iverilog", "-g2012", "-o", "sim.vvp", "-s", "tb", *sources]
    else:
        verilator_env()
        # g++ 12 compiles Verilator's --timing coroutines only in C++20 mode with -fcoroutines.
        cmd = ["verilator", "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", "tb",
               "-o", "simv", "-j", str(os.cpu_count() or 1), "-CFLAGS", "-O0 -std=c++20 -fcoroutines", *sources]
    run = subprocess.run(cmd, cwd=build, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{simulator} could not compile the netlist bench in {build}:\n{run.stderr[-3000:]}")
    if simulator == "verilator":
        # Keep the executable only: the C++ and objects of one netlist take ~200 MB.
        for item in (build / "obj_dir").iterdir():
            if item.name != "simv":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    try:
        os.replace(build, final)
    except OSError:         # another process built the same bench meanwhile
        shutil.rmtree(build, ignore_errors=True)
    return binary


def _split_reply(buf, what):
    """``(cmd, payload)`` of the one reply frame in ``buf``, checked byte by byte."""
    if len(buf) < 6 or buf[0] != REP_SYNC:
        raise NetlistMismatch(f"{what}: reply {buf.hex()} does not start with a reply frame")
    cmd, length = buf[1], struct.unpack("<H", buf[2:4])[0]
    if len(buf) != 6 + length:
        raise NetlistMismatch(f"{what}: reply of {len(buf)} bytes announces a {length}-byte payload")
    body, crc = buf[1:4 + length], struct.unpack("<H", buf[4 + length:])[0]
    if crc16(body) != crc:
        raise NetlistMismatch(f"{what}: reply has a bad CRC")
    return cmd, bytes(buf[4:4 + length])


def run_plan(plan, netlist, *, divisor, clk_freq, simulator="verilator", workdir=None, top="top"):
    """Simulate ``netlist`` answering the frames of ``plan`` (:class:`pwlnet.sim.netlist_plan.Plan`)
    from power-up and check every reply in order; returns the simulation's wall time in seconds.

    Raises :class:`NetlistMismatch` naming the first frame whose reply differs or is missing.
    """
    byte_cycles = 10 * int(divisor)
    # Power-up: PLL lock, then the PLL block's reset delay (15 us), then margin.
    startup = LOCK_CYCLES + 2 * int(20e-6 * clk_freq) + 256
    # Each wait: the request's echo time plus the reply's, 4x the engine's cycles, and slack.
    waits = [(s.request, s.reply_len, (len(s.request) + s.reply_len + 8) * byte_cycles + 4 * s.engine_cycles + 4096)
             for s in plan.steps]
    t0 = time.monotonic()
    replies, _out = run_frames(netlist, waits, divisor=divisor, startup_cycles=startup, simulator=simulator,
                               workdir=workdir, top=top)
    seconds = time.monotonic() - t0
    for i, step in enumerate(plan.steps):
        what = f"frame {i} ({step.name})"
        if i >= len(replies) or len(replies[i]) < step.reply_len:
            got = replies[i].hex() if i < len(replies) else ""
            raise NetlistMismatch(f"{what}: no complete reply ({len(got) // 2} of {step.reply_len} bytes: "
                                  f"{got or 'nothing'})")
        step.verify(*_split_reply(replies[i], what), where=f"frame {i}")
    return seconds


def _check_args(info, cache_info, frames, batch, weight_words):
    """Refuse arguments that do not describe a board top :func:`verify_netlist` can check."""
    if not isinstance(info, LinkInfo):
        raise TypeError(f"info must be a LinkInfo, not {info!r}")
    if cache_info is not None and not isinstance(cache_info, CacheInfo):
        raise TypeError(f"cache_info must be a CacheInfo or None, not {cache_info!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, not {frames!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be a non-negative integer, not {batch!r}")
    if batch and cache_info is not None:
        raise ValueError(f"a cached top answers INFER_BATCH with UNSUPPORTED; batch must be 0, not {batch}")
    if info.weight_words and (weight_words is None or len(weight_words) != info.weight_words):
        got = "none" if weight_words is None else len(weight_words)
        raise ValueError(f"this build loads its {info.weight_words} weight words over the link (LOAD_WEIGHTS); "
                         f"weight_words must hold them, got {got}")
    if info.weight_words and cache_info is None:
        raise ValueError("verify_netlist covers the plain top with its weights in the bitstream; this one loads "
                         f"{info.weight_words} weight words over the link")


def verify_netlist(netlist, model, info, *, divisor, clk_freq, frames=32, seed=0, simulator="verilator",
                   workdir=None, top="top", cache_info=None, weight_words=None, batch=0, net=None):
    """Check the synthesized board top against the RTL's INFO record and the golden model.

    Sends a script of frames from power-up (:mod:`pwlnet.sim.netlist_plan`) and checks
    every reply: INFO equals ``info``; every INFER's output codes and arg-max equal
    :func:`pwlnet.golden.forward` and :func:`pwlnet.golden.argmax`, or on the cached top
    the golden cache's (:class:`pwlnet.code_cache.HwCache`: ``cached``, ``slot``, a hit's
    codes from the stored affine map, a miss's from the network), and every answer of one
    kind (network, hit) takes the same cycles; the refused frames (bad CRC, unknown
    command, wrong length, unsupported commands) get the protocol's error reply; COUNTERS
    counts the frames, inferences and errors sent (and zero after CLEAR_COUNTERS).

    * Plain top (``cache_info`` None): ``frames`` INFERs (both extremes, zero, random), and
      with ``batch`` INFER_BATCH frames of 1, ``batch // 2`` and ``batch`` inputs.
    * Cached top: CACHE_INFO, LOAD_WEIGHTS of ``weight_words`` when the build loads its
      weights into SPRAM, then ``frames`` INFERs (at least
      :data:`pwlnet.sim.netlist_plan.MIN_CACHED_FRAMES`) among cache writes made as the host
      makes them, probes on and past the entries' bounds, CACHE_STATS and CACHE_CLEAR
      (:func:`pwlnet.sim.netlist_plan.cached_plan`).

    Parameters
    ----------
    netlist : path
        The build's ``top.netlist.v``.
    model : CompiledModel
        The model built in.
    info : LinkInfo
        What the RTL's INFO reply holds (``BoardTop(...).link.info``).
    divisor : int
        The top's cycles per UART bit.
    clk_freq : float
        The top's fabric clock in Hz (sets the startup wait: PLL lock plus the reset delay).
    frames : int
        INFER frames to check.
    seed : int
        Seed of the random codes (and entries).
    simulator : {"verilator", "icarus"}
        Verilator compiles this netlist in ~15 s and then runs ~50 times faster than Icarus.
    cache_info : CacheInfo or None
        The RTL's CACHE_INFO record (``top.link.cache_info``); ``None``: the plain top.
    weight_words : sequence of int, optional
        The engine's weight memory image (``top.engine.weight_words``), when the build loads it.
    batch : int
        Inputs per INFER_BATCH the build takes (``top.link.batch``; 0: it must refuse them).
    net : pwlnet.ir.Network or list, optional
        The float network entries are made from (as :func:`pwlnet.code_cache.code_blocks`
        takes it); default :func:`pwlnet.sim.netlist_plan.model_blocks`.

    Returns
    -------
    dict
        ``{"simulator", "top", "frames", "inferences", "kinds", "seconds"}`` and on the
        cached top ``"cache": {"writes", "hits", "misses"}``: frames checked, inferences
        among them, frames per kind (``"ERROR"``: refused frames), wall time of the simulation.

    Raises
    ------
    NetlistMismatch
        Naming the first frame that differs, what came and what was expected.
    """
    _check_args(info, cache_info, frames, batch, weight_words)
    rng = np.random.default_rng(seed)
    if cache_info is None:
        plan = plain_plan(model, info, frames, rng, batch=batch)
    else:
        plan = cached_plan(model, info, cache_info, frames, rng, weight_words=weight_words,
                           blocks=model_blocks(model) if net is None else net)
    seconds = run_plan(plan, netlist, divisor=divisor, clk_freq=clk_freq, simulator=simulator, workdir=workdir,
                        top=top)
    out = {"simulator": simulator, "top": "plain" if cache_info is None else "cached", "frames": len(plan.steps),
           "inferences": plan.inferences, "kinds": dict(plan.kinds), "seconds": round(seconds, 1)}
    if cache_info is not None:
        out["cache"] = {"writes": plan.kinds["CACHE_WRITE"], "hits": plan.hits, "misses": plan.misses}
    return out


def verify_top(netlist, board_top, *, frames=32, **kwargs):
    """:func:`verify_netlist` for a :class:`~pwlnet.boards.top.BoardTop` (any link: the small
    link's ``batch`` is 0 and its ``cache_info`` None, as the plain top's): its
    model, INFO, CACHE_INFO, divisor, clock, batch size and (when loaded over the link) weight
    words are read from ``board_top``, the object that was synthesized."""
    info = board_top.link.info
    return verify_netlist(netlist, board_top.model, info, divisor=board_top.divisor, clk_freq=board_top.clk_freq,
                          frames=frames, cache_info=board_top.link.cache_info, batch=board_top.link.batch,
                          weight_words=list(board_top.engine.weight_words) if info.weight_words else None, **kwargs)
