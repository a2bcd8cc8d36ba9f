"""cocotb test module: stream input codes through the engine and check every output.

Run by :func:`pwlnet.sim.runner.run`, never imported by hand.  The job comes from the
JSON file named by the ``PWLNET_SIM_JOB`` environment variable (written by the runner):

``model_dir``
    compiled model directory (the reference model is :func:`pwlnet.golden.forward`);
``codes``
    ``.npy`` of input codes ``(N, d)``;
``ports``
    :func:`pwlnet.sim.ports.describe_ports` of the component the Verilog came from;
``result``
    where to write the result JSON; output codes go to ``result`` with ``.npy``;
``reference``
    ``"golden"`` (the real engine) or ``"toy"`` (the stand-in of :mod:`pwlnet.sim.toy`);
``clean``
    how many leading inferences run without gaps or back-pressure, to measure cycles;
``weights``
    JSON list of hex weight words to load through ``w_wr`` first (``"ram"`` weights), or null;
``gap_prob``, ``stall_prob``, ``max_gap``, ``seed``, ``cycles_hint``
    stress and time-out settings.

The bench is the usual driver + monitor + reference model + in-order checker.  The
first ``clean`` inferences stream back to back with ``ready`` held high, so their
timing is the engine's own: latency is the cycles from accepting the first input beat
to the last output beat of inference 0, and cycles per inference is the mean spacing of
the last output beats over the second half of those inferences (past pipeline fill).  The remaining inferences run with random
input gaps and output back-pressure to shake out handshake bugs.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Event, First, Timer

from pwlnet import artifact, golden
from pwlnet.sim.ports import PortMap
from pwlnet.sim.streams import StreamDriver, StreamMonitor, start_dut

__all__ = ["run_vectors", "Checker", "PERIOD_NS"]

#: Clock period.  Only cycle counts are reported, so the value is arbitrary.
PERIOD_NS = 10

#: Mismatches logged in full (all are counted).
_LOG_LIMIT = 10


class Checker:
    """In-order scoreboard of output beats against the reference codes.

    Parameters
    ----------
    expected : ndarray, shape (N, n_out)
        Reference output codes.
    log :
        Logger for the first few mismatches.

    Attributes
    ----------
    got : ndarray, shape (N, n_out)
        Output codes as received.
    bad : ndarray of bool, shape (N,)
        Inferences with any wrong code, ``last`` flag or ``argmax``.
    last_at : list of int
        Cycle of each inference's last output beat.
    """

    def __init__(self, expected, log):
        self.expected = np.asarray(expected, dtype=np.int64)
        self.n, self.n_out = self.expected.shape
        self.exp_argmax = golden.argmax(self.expected)
        self.got = np.zeros_like(self.expected)
        self.got_argmax = np.full(self.n, -1, dtype=np.int64)
        self.bad = np.zeros(self.n, dtype=bool)
        self.details = []
        self.beats = 0
        self.last_at = []
        self.log = log
        self._waiters = {}
        self.extra_beats = 0

    def _fault(self, inf, msg):
        self.bad[inf] = True
        if len(self.details) < _LOG_LIMIT:
            self.details.append(f"inference {inf}: {msg}")
            self.log.error("inference %d: %s", inf, msg)

    def beat(self, fields, cycle):
        """Monitor callback: check one beat against the next expected one."""
        if self.beats >= self.n * self.n_out:
            self.extra_beats += 1
            return
        inf, k = divmod(self.beats, self.n_out)
        self.beats += 1
        data, last = fields["data"], fields["last"]
        self.got[inf, k] = data
        if data != self.expected[inf, k]:
            self._fault(inf, f"output {k} is {data}, expected {self.expected[inf, k]}")
        if bool(last) != (k == self.n_out - 1):
            self._fault(inf, f"last is {last} on output {k} of {self.n_out}")
        if k == self.n_out - 1:
            self.got_argmax[inf] = fields["argmax"]
            if fields["argmax"] != self.exp_argmax[inf]:
                self._fault(inf, f"argmax is {fields['argmax']}, expected {self.exp_argmax[inf]} "
                                 f"(codes {self.expected[inf].tolist()})")
            self.last_at.append(cycle)
            done = inf + 1
            if done in self._waiters:
                self._waiters.pop(done).set()

    def until(self, inferences) -> Event:
        """An event set once ``inferences`` inferences have fully come out."""
        ev = Event()
        if len(self.last_at) >= inferences:
            ev.set()
        else:
            self._waiters[inferences] = ev
        return ev


def _reference(job, model, codes):
    if job.get("reference", "golden") == "toy":
        from pwlnet.sim.toy import toy_forward
        return toy_forward(model, codes)
    return golden.forward(model, codes)


@cocotb.test()
async def run_vectors(dut):
    """Stream every input vector of the job through the DUT and check every output."""
    job = json.loads(Path(os.environ["PWLNET_SIM_JOB"]).read_text())
    wall0 = time.monotonic()
    model = artifact.load(job["model_dir"])
    codes = np.load(job["codes"]).astype(np.int64).reshape(-1, model.input_dim)
    n, d = codes.shape
    expected = _reference(job, model, codes)
    rng = random.Random(job.get("seed", 0))
    log = dut._log

    ports = PortMap(dut, job["ports"])
    checker = Checker(expected, log)
    driver = StreamDriver(ports.clk, ports.stream("i"), rng=rng, period_ns=PERIOD_NS)
    monitor = StreamMonitor(ports.clk, ports.stream("o"), checker.beat, rng=rng, period_ns=PERIOD_NS)

    # The C clock (not a Python coroutine toggling the pin twice a cycle) is what keeps
    # Python asleep while the engine computes.  cocotb picks it by itself only where it
    # trusts inertial writes (Verilator); our writes all happen right after a rising
    # edge, half a period away from the next one, so write ordering cannot matter.
    await start_dut(ports, job, rng, period_ns=PERIOD_NS, reset_cycles=3)

    cocotb.start_soon(monitor.run())
    hint = max(int(job.get("cycles_hint") or 0), d + model.output_dim, 1)
    limit_cycles = 1000 + n * (8 * hint + 8 * (d + model.output_dim) * (1 + job.get("max_gap", 3)))
    deadline = Timer(limit_cycles * PERIOD_NS, unit="ns")

    async def feed():
        clean = min(int(job.get("clean", 16)), n)
        await driver.send(codes[:clean].ravel().tolist())
        if clean < n:
            # wait for the clean inferences to drain so their timing stays undisturbed
            await checker.until(clean).wait()
            driver.set_gaps(job.get("gap_prob", 0.2), job.get("max_gap", 3))
            monitor.set_stalls(job.get("stall_prob", 0.2), job.get("max_gap", 3))
            await driver.send(codes[clean:].ravel().tolist())

    feeder = cocotb.start_soon(feed())
    await First(checker.until(n).wait(), deadline)
    timed_out = len(checker.last_at) < n
    if not timed_out:
        # a few idle cycles to catch surplus output beats
        await ClockCycles(ports.clk, 4 + model.output_dim)
    feeder.cancel()

    clean = min(int(job.get("clean", 16)), n)
    first_in = driver.accepted_at[0] if driver.accepted_at else None
    latency = checker.last_at[0] - first_in + 1 if checker.last_at and first_in is not None else None
    m = min(clean, len(checker.last_at))
    # Steady state: spacing over the second half of the clean run, past pipeline fill,
    # without its last inference (nothing is queued behind it: with a pair program it
    # runs alone), over an even number of intervals (whole pairs: with a pair program
    # the two inferences of a pair end a few cycles apart).
    if m >= 6:           # (fewer: the second half has no whole pair of intervals)
        a = m - 2
        h = (a + 1) // 2
        h += (a - h) % 2
        cpi = (checker.last_at[a] - checker.last_at[h]) / (a - h)
    else:
        cpi = (checker.last_at[m - 1] - checker.last_at[0]) / (m - 1) if m > 1 else latency

    result = {
        "vectors": n,
        "outputs_received": checker.beats,
        "extra_beats": checker.extra_beats,
        "mismatches": int(checker.bad.sum()) + (n - len(checker.last_at)),
        "mismatch_details": checker.details,
        "timed_out": timed_out,
        "latency_cycles": latency,
        "cycles_per_inference": cpi,
        "clean_last_at": [int(t) for t in checker.last_at[:clean]],
        "total_cycles": (checker.last_at[-1] - first_in + 1) if checker.last_at and first_in is not None else None,
        "bench_wall_s": time.monotonic() - wall0,
        "python_wakeups": driver.wakeups + monitor.wakeups,
    }
    out = Path(job["result"])
    np.save(out.with_suffix(".npy"), checker.got)
    np.save(out.with_suffix(".argmax.npy"), checker.got_argmax)
    out.write_text(json.dumps(result, indent=1))
    # Mismatches are data for the caller (pytest asserts on them); only a bench that
    # could not finish is a failed cocotb test.
    assert not timed_out, (f"timed out after {limit_cycles} cycles with {len(checker.last_at)} of {n} "
                           f"inferences out")
    assert checker.extra_beats == 0, f"{checker.extra_beats} output beats beyond the expected ones"

