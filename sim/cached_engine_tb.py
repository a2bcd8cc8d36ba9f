"""cocotb test module: the engine with the hypersphere cache, driven as the host drives it.

Run by :func:`pwlnet.sim.cached_engine_sim.simulate_cache` (through
:func:`pwlnet.sim.runner.run_bench`), never imported by hand.  The job comes from the
JSON file named by the ``PWLNET_SIM_JOB`` environment variable:

``script``
    a pickle of the scenario (written by :mod:`pwlnet.sim.cached_engine_sim`): the compiled
    model, the float network's code-space blocks, ``entries``, ``metric``, ``policy``,
    ``margin``, ``lanes``, the ``preload`` entries and the list of operations ``ops``;
``ports``
    :func:`pwlnet.sim.ports.describe_ports` of the DUT;
``result``
    where to write the result JSON; the arrays go beside it as ``.npz``;
``weights``
    JSON list of hex weight words to load through ``w_wr`` first (``"ram"`` weights), or null;
``image_bytes``, ``cycles_hint``, ``seed``, ``gap_prob``, ``stall_prob``, ``max_gap``
    the DUT's slot image length (checked against the golden slot format), its cycles
    per inference (for the time limit), and the random gaps on every input stream and
    back-pressure on the output.

Operations, in order (dicts):

``{"op": "infer", "codes": (k, d), "fill": bool}``
    For each row, as the host does: send its ``d`` codes on ``i``, take the ``n_out``
    output beats of ``o``, then report the answer (the RTL's ``cached`` and ``slot``) to
    :meth:`pwlnet.cache_host.CacheHost.seen`; when that returns ``(slot, entry)`` (a miss
    whose entry fits) and ``fill`` is set, send :meth:`pwlnet.hw.slot_format.SlotFormat.image`
    of the entry on ``cw`` before the next row.  Without ``fill`` the host is not told
    and writes nothing.
``{"op": "stream", "codes": (k, d), "write": write op or None, "after": j}``
    Send the rows back to back without waiting for answers (the host writes nothing
    for them).  With ``write``, offer that entry write as soon as the first code of row
    ``j`` has been taken, so that it meets inferences in flight: the golden model applies
    it between the rows whose first codes the DUT took before and after the write's first
    byte (the same cycle for both is a fault).
``{"op": "write", "slot": s, "entry": HwEntry, "golden": HwEntry or None}``
    Write an entry between inferences.  ``golden`` (normally ``None``) puts a *different*
    entry into the golden model's slot, which the bench must then report: it exists to
    prove that the comparison can fail.
``{"op": "clear"}``, ``{"op": "clear_stats"}``
    One-cycle strobes of ``clear`` and ``clear_stats``.
``{"op": "counters"}``
    Wait two cycles and then for ``idle``, read ``hits`` and ``misses`` and compare them
    with the golden model's counters.  The counters are always read and compared once
    more at the end.

The golden model runs in lockstep: an :class:`pwlnet.code_cache.HwCache` of the same
model, size and metric, starting with the same preloaded entries, receives every write
and clear the DUT receives; for every inference the expected ``cached`` flag, slot,
output codes and argmax are its :meth:`~pwlnet.code_cache.HwCache.lookup`.  Every
inference with any difference (and every counter read that differs) is a mismatch;
the first few are described.  Cycles per inference are counted from the rising edge
that accepts the first input beat to the one that takes the last output beat (both
included).

The bench is :class:`CacheBench` (drivers, monitor, golden model, checker); the cocotb
test :func:`run_script` runs one job with it.  Layer: simulation.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Event, First, RisingEdge, Timer

from pwlnet import golden
from pwlnet.cache_host import CacheHost
from pwlnet.code_cache import HwCache
from pwlnet.hw.slot_format import SlotFormat
from pwlnet.sim.ports import PortMap
from pwlnet.sim.streams import StreamDriver, StreamMonitor, _now_cycles, start_dut

__all__ = ["CacheBench", "run_script", "PERIOD_NS"]

#: Clock period.  Only cycle counts are reported, so the value is arbitrary.
PERIOD_NS = 10

#: Mismatches described in full (all are counted).
_LOG_LIMIT = 12

#: Most cycles to wait for ``idle`` before a counter read.
_IDLE_LIMIT = 10_000


class _Outputs:
    """Collects the output beats of the inferences in flight; beats nobody waits for are extra."""

    def __init__(self, n_out):
        self.n_out = n_out
        self.beats = []
        self.want = 0
        self.extra = 0
        self.done = Event()

    def start(self, inferences=1):
        """Expect the outputs of ``inferences`` inferences; :attr:`done` is set once they are in."""
        self.beats = []
        self.want = inferences * self.n_out
        self.done = Event()

    def beat(self, fields, cycle):
        if len(self.beats) >= self.want:
            self.extra += 1
            return
        self.beats.append((fields, cycle))
        if len(self.beats) == self.want:
            self.done.set()


class _Scoreboard:
    """Per-inference expectations against what came out, with the first few faults in words."""

    def __init__(self, log):
        self.log = log
        self.details = []
        self.bad_counters = 0

    def fault(self, what, msg):
        if len(self.details) < _LOG_LIMIT:
            self.details.append(f"{what}: {msg}")
            self.log.error("%s: %s", what, msg)


async def _strobe(clk, sig):
    sig.value = 1
    await RisingEdge(clk)
    sig.value = 0


async def _wait_idle(clk, idle):
    # A coroutine woken by a rising edge reads the values from before that edge: give a
    # strobe or a last beat just taken two edges to show in idle and the counters.
    await ClockCycles(clk, 2)
    for _ in range(_IDLE_LIMIT):
        if idle.value:
            return True
        await RisingEdge(clk)
    return bool(idle.value)


class CacheBench:
    """One run of the cached engine: driver, monitor, golden model and checker.

    The *drivers* send input codes on ``i`` and slot images on ``cw`` and strobe
    ``clear`` and ``clear_stats``; the *monitor* collects the output beats of ``o``
    (:class:`_Outputs`); the *model* is an :class:`pwlnet.code_cache.HwCache` that receives
    every write and clear the DUT receives, and the host's side
    (:class:`pwlnet.cache_host.CacheHost`) that chooses the writes; the *checker*
    (:meth:`check`, :meth:`read_counters`) compares each inference and counter read with
    the model and records it.

    Parameters
    ----------
    dut :
        The cocotb handle of the cached engine.
    job : dict
        The job file's contents (see the module docs).
    sc : dict
        The scenario (the unpickled ``script``).
    """

    def __init__(self, dut, job, sc):
        self.dut, self.job, self.sc = dut, job, sc
        self.model, self.ops = model, ops = sc["model"], sc["ops"]
        self.d, self.n_out = model.input_dim, model.output_dim
        rng = random.Random(job.get("seed", 0))

        self.fmt = fmt = SlotFormat(model, sc["lanes"], sc["metric"])
        if job.get("image_bytes") is not None and int(job["image_bytes"]) != fmt.image_bytes:
            raise AssertionError(f"the DUT takes {job['image_bytes']} bytes per entry write, the golden slot "
                                 f"format {fmt!r} makes {fmt.image_bytes}")
        self.gold = HwCache(model, sc["entries"], sc["metric"])
        self.host = CacheHost(model, sc["blocks"], sc["entries"], sc["metric"], sc["policy"], margin=sc["margin"],
                              slot_format=fmt)
        for k, item in enumerate(sc["preload"]):
            slot, entry = item if isinstance(item, (tuple, list)) else (k, item)
            self.gold.write_entry(slot, entry)
        self.host.valid[:] = self.gold.valid

        self.ports = ports = PortMap(dut, job["ports"])
        gap, stall = job.get("gap_prob", 0.0), job.get("stall_prob", 0.0)
        self.max_gap = max_gap = job.get("max_gap", 3)
        self.i_drv = StreamDriver(ports.clk, ports.stream("i"), gap_prob=gap, max_gap=max_gap, rng=rng,
                                  period_ns=PERIOD_NS)
        self.cw = ports.stream("cw")
        self.cw_drv = StreamDriver(ports.clk, self.cw, gap_prob=gap, max_gap=max_gap, rng=rng, period_ns=PERIOD_NS)
        self.outs = _Outputs(self.n_out)
        self.monitor = StreamMonitor(ports.clk, ports.stream("o"), self.outs.beat, stall_prob=stall,
                                     max_stall=max_gap, rng=rng, period_ns=PERIOD_NS)
        self.jittered = bool(gap or stall)
        self.rng = rng

        self.n = n = sum(len(op["codes"]) for op in ops if op["op"] in ("infer", "stream"))
        self.sb = _Scoreboard(dut._log)
        n_out = self.n_out
        self.rec = {
            "hit": np.zeros(n, dtype=bool), "slot": np.full(n, -1, dtype=np.int64),
            "outputs": np.zeros((n, n_out), dtype=np.int64), "argmax": np.full(n, -1, dtype=np.int64),
            "cycles": np.full(n, -1, dtype=np.int64), "exp_hit": np.zeros(n, dtype=bool),
            "exp_slot": np.full(n, -1, dtype=np.int64), "exp_outputs": np.zeros((n, n_out), dtype=np.int64),
            "written": np.full(n, -1, dtype=np.int64), "bad": np.zeros(n, dtype=bool),
        }
        self.counters = []
        self.done = 0
        self.first_in = None
        self.last_out = None
        self.finished = Event()

    def limit_cycles(self):
        """The run's time limit: generous for every inference, write and operation."""
        n, ops = self.n, self.ops
        writes = sum(op["op"] == "write" or op.get("write") is not None for op in ops) + n
        hint = max(int(self.job.get("cycles_hint") or 0), 1)
        slack = 1 + self.max_gap if self.jittered else 1
        return (2000 + n * 8 * (hint + 2 * (self.d + self.n_out) * slack)
                + writes * 4 * self.fmt.image_bytes * slack + len(ops) * 100)

    async def start(self):
        """Reset the DUT, start the clock and the output monitor."""
        self.dut.clear.value = 0
        self.dut.clear_stats.value = 0
        await start_dut(self.ports, self.job, self.rng, period_ns=PERIOD_NS, reset_cycles=4)
        cocotb.start_soon(self.monitor.run())

    # ---- drivers ------------------------------------------------------------------------

    async def write(self, slot, image):
        """Send one slot image on ``cw``."""
        cw = self.cw
        await self.cw_drv.send([cw.pack(slot=slot, data=b) for b in image])

    async def infer(self, q, fill):
        """One input, its answer checked; with ``fill`` the host writes the entry it asks for."""
        outs, i_drv = self.outs, self.i_drv
        outs.start()
        n_acc = len(i_drv.accepted_at)
        await i_drv.send([int(c) for c in q])
        await outs.done.wait()
        t, cached, slot, e_hit, e_slot = self.check(q, i_drv.accepted_at[n_acc], outs.beats)
        if fill:
            # The host acts on the answer it got (the RTL's), unless that names no slot.
            ok = not cached or 0 <= slot < self.sc["entries"]
            todo = self.host.seen(q, cached, slot) if ok else self.host.seen(q, e_hit, e_slot)
            if todo is not None:
                s, entry = todo
                self.gold.write_entry(s, entry)
                self.rec["written"][t] = s
                await self.write(s, self.fmt.image(entry))

    async def stream(self, codes, wr, after):
        """Inputs back to back; ``wr`` offered once inference ``after``'s first code is taken."""
        outs, i_drv, cw_drv, d = self.outs, self.i_drv, self.cw_drv, self.d
        k = len(codes)
        outs.start(k)
        n_acc, n_cw = len(i_drv.accepted_at), len(cw_drv.accepted_at)
        feeder = cocotb.start_soon(i_drv.send([int(c) for c in codes.ravel()]))
        w_first = None
        if wr is not None:
            while len(i_drv.accepted_at) <= n_acc + after * d:
                await RisingEdge(self.ports.clk)
            await self.write(int(wr["slot"]), self.fmt.image(wr["entry"]))
            w_first = cw_drv.accepted_at[n_cw]
        await feeder
        await outs.done.wait()
        # The golden model sees the write between the inferences whose first codes were
        # taken before and after the write's first byte.
        pending = wr is not None
        for j, q in enumerate(codes):
            first = i_drv.accepted_at[n_acc + j * d]
            if pending and first >= w_first:
                if first == w_first:
                    self.sb.fault(f"inference {self.done}", f"its first code and the write's first byte were "
                                                            f"taken in the same cycle {first}")
                self.golden_write(int(wr["slot"]), wr.get("golden") or wr["entry"])
                pending = False
            self.check(q, first, outs.beats[j * self.n_out:(j + 1) * self.n_out])
        if pending:
            self.golden_write(int(wr["slot"]), wr.get("golden") or wr["entry"])

    async def clear(self):
        await _strobe(self.ports.clk, self.dut.clear)
        self.gold.clear()
        self.host.clear()

    async def clear_stats(self):
        await _strobe(self.ports.clk, self.dut.clear_stats)
        self.gold.reset_counters()

    # ---- model --------------------------------------------------------------------------

    def golden_write(self, s, entry):
        """A write the host did not choose itself: the golden model and the host's slot book."""
        if s < self.sc["entries"]:
            self.gold.write_entry(s, entry)
            self.host.valid[s] = True
            self.host.age[s] = self.host.t

    # ---- checker ------------------------------------------------------------------------

    def check(self, q, first_in, beats):
        """Look ``q`` up in the golden model and compare the inference's output ``beats``."""
        rec, n_out = self.rec, self.n_out
        t = self.done
        exp = self.gold.lookup(q[None])
        e_hit, e_slot, e_out = bool(exp.hit[0]), int(exp.slot[0]), exp.outputs[0]
        e_arg = int(golden.argmax(exp.outputs)[0])
        rec["exp_hit"][t], rec["exp_slot"][t], rec["exp_outputs"][t] = e_hit, e_slot, e_out
        last_out = beats[-1][1]
        self.first_in = first_in if self.first_in is None else self.first_in
        self.last_out = last_out
        rec["cycles"][t] = last_out - first_in + 1
        fields = [f for f, _ in beats]
        data = np.array([f["data"] for f in fields], dtype=np.int64)
        cached = bool(fields[0]["cached"])
        slot = int(fields[0]["slot"])
        rec["outputs"][t] = data
        rec["hit"][t] = cached
        rec["slot"][t] = slot if cached else -1
        rec["argmax"][t] = fields[-1]["argmax"]
        msgs = _differences(fields, data, cached, slot, e_hit, e_slot, e_out, e_arg, n_out)
        if msgs:
            rec["bad"][t] = True
            self.sb.fault(f"inference {t} (codes {q.tolist()})", "; ".join(msgs))
        self.done = t + 1
        return t, cached, slot, e_hit, e_slot

    async def read_counters(self, where):
        """Wait for ``idle``, then compare ``hits`` and ``misses`` with the golden model's."""
        dut, sb = self.dut, self.sb
        idle = await _wait_idle(self.ports.clk, dut.idle)
        got = (int(dut.hits.value.to_unsigned()), int(dut.misses.value.to_unsigned()))
        want = (self.gold.hits, self.gold.misses)
        self.counters.append({"after": self.done, "hits": got[0], "misses": got[1],
                              "exp_hits": want[0], "exp_misses": want[1], "idle": idle})
        if not idle:
            sb.bad_counters += 1
            sb.fault(where, f"idle stayed low for {_IDLE_LIMIT} cycles")
        elif got != want:
            sb.bad_counters += 1
            sb.fault(where, f"counters hits={got[0]} misses={got[1]}, expected hits={want[0]} misses={want[1]}")

    # ---- the run ------------------------------------------------------------------------

    async def scenario(self):
        """Every operation in order, then a last counter read."""
        d = self.d
        for op in self.ops:
            kind = op["op"]
            if kind == "infer":
                for q in np.asarray(op["codes"], dtype=np.int64).reshape(-1, d):
                    await self.infer(q, op.get("fill", True))
            elif kind == "stream":
                await self.stream(np.asarray(op["codes"], dtype=np.int64).reshape(-1, d), op.get("write"),
                                  int(op.get("after", 0)))
            elif kind == "write":
                self.golden_write(int(op["slot"]), op.get("golden") or op["entry"])
                await self.write(int(op["slot"]), self.fmt.image(op["entry"]))
            elif kind == "clear":
                await self.clear()
            elif kind == "clear_stats":
                await self.clear_stats()
            elif kind == "counters":
                await self.read_counters(f"counters after inference {self.done}")
            else:
                raise ValueError(f"unknown operation {kind!r}")
        await self.read_counters("counters at the end")
        self.finished.set()

    def result(self, timed_out, wall_s):
        """The result JSON's contents."""
        rec, sb, n, done = self.rec, self.sb, self.n, self.done
        mismatches = int(rec["bad"].sum()) + (n - done) + sb.bad_counters
        cyc = rec["cycles"][:done]
        final = self.counters[-1] if self.counters and not timed_out else {}
        return {
            "inferences": n,
            "completed": done,
            "mismatches": mismatches,
            "bad_inferences": int(rec["bad"].sum()),
            "bad_counters": sb.bad_counters,
            "mismatch_details": sb.details,
            "timed_out": timed_out,
            "extra_beats": self.outs.extra,
            "counters": self.counters,
            "hits": final.get("hits"),
            "misses": final.get("misses"),
            "exp_hits": self.gold.hits,
            "exp_misses": self.gold.misses,
            "uncacheable": self.host.uncacheable,
            "mean_cycles": float(cyc.mean()) if done else None,
            "total_cycles": (self.last_out - self.first_in + 1) if done else None,
            "end_cycle": _now_cycles(PERIOD_NS),
            "bench_wall_s": wall_s,
            "python_wakeups": self.i_drv.wakeups + self.cw_drv.wakeups + self.monitor.wakeups,
        }


def _differences(fields, data, cached, slot, e_hit, e_slot, e_out, e_arg, n_out):
    """What differs between one inference's output beats and the golden answer, in words."""
    msgs = []
    if cached != e_hit:
        msgs.append(f"cached is {int(cached)}, expected {int(e_hit)}"
                    + (f" (slot {e_slot})" if e_hit else ""))
    want_slot = e_slot if e_hit else 0
    if slot != want_slot:
        msgs.append(f"slot is {slot}, expected {want_slot}")
    for k, f in enumerate(fields):
        if bool(f["cached"]) != cached or int(f["slot"]) != slot:
            msgs.append(f"cached/slot change within the inference at output {k}: "
                        f"{f['cached']}/{f['slot']} after {int(cached)}/{slot}")
            break
    for k, f in enumerate(fields):
        if bool(f["last"]) != (k == n_out - 1):
            msgs.append(f"last is {f['last']} on output {k} of {n_out}")
            break
    if not np.array_equal(data, e_out):
        k = int(np.flatnonzero(data != e_out)[0])
        msgs.append(f"outputs {data.tolist()}, expected {e_out.tolist()} (first difference at {k})")
    if fields[-1]["argmax"] != e_arg:
        msgs.append(f"argmax is {fields[-1]['argmax']}, expected {e_arg}")
    return msgs


@cocotb.test()
async def run_script(dut):
    """Run the job's operations on the cached engine and check every answer against the golden model."""
    job = json.loads(Path(os.environ["PWLNET_SIM_JOB"]).read_text())
    wall0 = time.monotonic()
    with open(job["script"], "rb") as f:
        sc = pickle.load(f)
    bench = CacheBench(dut, job, sc)
    await bench.start()
    limit_cycles = bench.limit_cycles()

    runner = cocotb.start_soon(bench.scenario())
    await First(bench.finished.wait(), Timer(limit_cycles * PERIOD_NS, unit="ns"))
    timed_out = not bench.finished.is_set()
    if timed_out:
        runner.cancel()
        bench.sb.fault("run", f"timed out after {limit_cycles} cycles with {bench.done} of {bench.n} "
                              f"inferences out")
    else:
        await ClockCycles(bench.ports.clk, 4 + bench.n_out)     # catch surplus output beats

    result = bench.result(timed_out, time.monotonic() - wall0)
    out = Path(job["result"])
    np.savez(out.with_suffix(".npz"), **bench.rec)
    out.write_text(json.dumps(result, indent=1))
    # Mismatches are data for the caller; only a bench that could not finish fails here.
    assert not timed_out, f"timed out after {limit_cycles} cycles with {bench.done} of {bench.n} inferences out"
    assert bench.outs.extra == 0, f"{bench.outs.extra} output beats outside any inference"
