"""The engine with the hypersphere cache in cocotb, driven as the host drives it, against the golden model.

:func:`simulate_cache` builds (or reuses) :class:`pwlnet.hw.cached_engine.CachedEngine`
for a compiled model on Icarus or Verilator and runs an input stream through it in
order, exactly as the host does: send one input's codes, read its outputs (with the
``cached`` flag and the answering slot), report the answer to
:class:`pwlnet.cache_host.CacheHost`, and on a miss whose entry fits the slots write that
entry's image (:meth:`pwlnet.hw.slot_format.SlotFormat.image`) before the next input.  The
bench (:mod:`pwlnet.sim.cached_engine_tb`) keeps the golden model
(:class:`pwlnet.code_cache.HwCache`) in lockstep -- the same preloaded entries, writes and
clears -- and compares every inference's hit, slot, output codes and argmax, and the
``hits``/``misses`` counters.  Any difference is a mismatch: the RTL must equal the
golden model bit for bit.

Besides a plain stream, a test can script operations between inferences (:class:`Infer`,
:class:`Write`, :class:`Clear`, :class:`ClearStats`, :class:`ReadCounters`), and stream
inputs back to back with an entry write that meets the inferences in flight
(:class:`Stream`).

Cycles per inference are *measured*: from the rising edge that accepts an input's first
beat to the one that takes its last output beat, both included.  The host waits for
each answer (it must know whether to write an entry), so this is the latency of one
inference, not a streaming interval.

Builds are cached by :func:`pwlnet.sim.runner.build`; the key includes the slots, the
metric, the preloaded entries, the squarer, the lanes and the target.

Layer: simulation (above the hardware generators; the host's side comes from the bottom
layer, :mod:`pwlnet.cache_host`).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import uuid

import numpy as np

from pwlnet import artifact, cache_host, code_cache, golden
from pwlnet.hw.slot_format import SlotFormat
from pwlnet.sim import runner

__all__ = ["Infer", "Stream", "Write", "Clear", "ClearStats", "ReadCounters", "CacheSimResult",
           "simulate_cache"]


@dataclasses.dataclass
class Infer:
    """Run input codes ``(k, d)`` through the cache in order.

    With ``fill`` (the default) the host writes an entry after every miss whose entry
    fits (:meth:`pwlnet.cache_host.CacheHost.seen`); without it the host is not told of
    these inferences and writes nothing.
    """

    codes: np.ndarray
    fill: bool = True


@dataclasses.dataclass
class Write:
    """Write ``entry`` to ``slot`` between inferences.

    ``golden`` puts another entry into the golden model's slot instead: the bench must
    then report the difference (only for tests that prove the comparison can fail).
    """

    slot: int
    entry: code_cache.HwEntry
    golden: code_cache.HwEntry | None = None


@dataclasses.dataclass
class Stream:
    """Send input codes ``(k, d)`` back to back, without waiting for each answer.

    The host writes nothing for these inferences.  With ``write``, that entry write is
    offered as soon as the first code of inference ``after`` (counted within ``codes``)
    has been taken, so it meets inferences in flight; the golden model applies it between
    the inferences whose first codes the engine took before and after the write's first
    byte, which is the engine's promise.
    """

    codes: np.ndarray
    write: Write | None = None
    after: int = 0


@dataclasses.dataclass
class Clear:
    """Strobe ``clear``: every slot empty (the host forgets its slots too)."""


@dataclasses.dataclass
class ClearStats:
    """Strobe ``clear_stats``: the ``hits`` and ``misses`` counters back to zero."""


@dataclasses.dataclass
class ReadCounters:
    """Wait for ``idle``, read ``hits`` and ``misses`` and compare them with the golden model's."""


@dataclasses.dataclass
class CacheSimResult:
    """The outcome of one cached-engine simulation (``N`` inferences in order).

    Attributes
    ----------
    hit : ndarray of bool, shape (N,)
        The RTL's ``cached`` flag.
    slot : ndarray of int64, shape (N,)
        The RTL's answering slot, ``-1`` where it did not answer from the cache.
    outputs : ndarray of int64, shape (N, n_out)
        Output codes the RTL produced.
    argmax : ndarray of int64, shape (N,)
        The RTL's argmax.
    cycles : ndarray of int64, shape (N,)
        Measured cycles of each inference (first input beat accepted to last output
        beat taken, both included; in a :class:`Stream` this includes waiting behind
        the inferences before).
    expected_hit, expected_slot, expected_outputs :
        The golden model's answers (:meth:`pwlnet.code_cache.HwCache.lookup`).
    written : ndarray of int64, shape (N,)
        The slot the host wrote after this inference, ``-1`` if none.
    bad : ndarray of bool, shape (N,)
        Inferences with any difference from the golden model.
    mismatches : int
        Bad inferences, plus counter reads that differed, plus inferences that never
        completed.
    details : list of str
        The first few mismatches in words.
    hits, misses : int
        The RTL's counters at the end.
    expected_hits, expected_misses : int
        The golden model's counters at the end.
    counters : list of dict
        Every counter read: ``after`` (inferences done), ``hits``, ``misses``,
        ``exp_hits``, ``exp_misses``.
    uncacheable : int
        Misses whose entry did not fit the slots (left unwritten by the host).
    hit_cycles, engine_cycles : int or None
        The engine's analytic figures: lanes busy on a hit, and on the full network.
    image_bytes : int
        Bytes of one entry write.
    total_cycles : int or None
        From the first input beat to the last output beat of the whole run.
    build_s, run_s : float
    run_dir, waves : str or None
        The kept run directory (on a mismatch, or when asked) and the wave file.
    simulator, target, metric, policy : str
    lanes, entries : int
    """

    hit: np.ndarray
    slot: np.ndarray
    outputs: np.ndarray
    argmax: np.ndarray
    cycles: np.ndarray
    expected_hit: np.ndarray
    expected_slot: np.ndarray
    expected_outputs: np.ndarray
    written: np.ndarray
    bad: np.ndarray
    mismatches: int
    details: list
    hits: int | None
    misses: int | None
    expected_hits: int
    expected_misses: int
    counters: list
    uncacheable: int
    hit_cycles: int | None
    engine_cycles: int | None
    image_bytes: int | None
    total_cycles: int | None
    build_s: float
    run_s: float
    simulator: str
    target: str
    lanes: int
    entries: int
    metric: str
    policy: str
    run_dir: str | None = None
    waves: str | None = None
    python_wakeups: int | None = None

    @property
    def n(self) -> int:
        return int(len(self.hit))

    @property
    def ok(self) -> bool:
        """True when everything matched the golden model."""
        return self.mismatches == 0

    @property
    def hit_rate(self) -> float:
        return float(self.hit.mean()) if self.n else float("nan")

    @property
    def mean_cycles(self) -> float:
        """Mean measured cycles per inference."""
        return float(self.cycles.mean()) if self.n else float("nan")

    @property
    def mean_hit_cycles(self) -> float:
        """Mean measured cycles of the inferences answered from the cache (``nan`` if none)."""
        return float(self.cycles[self.hit].mean()) if self.hit.any() else float("nan")

    @property
    def mean_miss_cycles(self) -> float:
        """Mean measured cycles of the inferences the full network answered (``nan`` if none)."""
        return float(self.cycles[~self.hit].mean()) if (~self.hit).any() else float("nan")


_OPS = (Infer, Stream, Write, Clear, ClearStats, ReadCounters)


def _write_op(op: Write) -> dict:
    return {"op": "write", "slot": int(op.slot), "entry": op.entry, "golden": op.golden}


def _ops_from(codes_stream, d):
    """The operations of a stream or script, validated; returns (ops, all input codes)."""
    if isinstance(codes_stream, (list, tuple)) and codes_stream and all(
            isinstance(op, _OPS) for op in codes_stream):
        ops = list(codes_stream)
    elif isinstance(codes_stream, (list, tuple)) and any(
            isinstance(op, _OPS) for op in codes_stream):
        raise TypeError("a script must hold only Infer, Stream, Write, Clear, ClearStats and ReadCounters "
                        "operations")
    else:
        ops = [Infer(codes_stream)]
    out, parts = [], []
    for k, op in enumerate(ops):
        if isinstance(op, (Infer, Stream)):
            c = np.asarray(op.codes)
            if not np.issubdtype(c.dtype, np.integer):
                raise golden.InputError(f"operation {k}: input codes must be integers, not {c.dtype}")
            if c.size == 0:
                c = np.zeros((0, d), dtype=np.int64)
            elif c.ndim == 1 and c.size == d:
                c = c[None]
            if c.ndim != 2 or c.shape[1] != d:
                raise golden.InputError(f"operation {k}: input codes have shape {c.shape}; expected (N, {d})")
            c = c.astype(np.int64)
            parts.append(c)
            if isinstance(op, Infer):
                out.append({"op": "infer", "codes": c, "fill": bool(op.fill)})
            else:
                if op.write is not None and not 0 <= op.after < len(c):
                    raise ValueError(f"operation {k}: after={op.after} names no inference of the {len(c)} streamed")
                out.append({"op": "stream", "codes": c, "after": int(op.after),
                            "write": None if op.write is None else _write_op(op.write)})
        elif isinstance(op, Write):
            out.append(_write_op(op))
        elif isinstance(op, Clear):
            out.append({"op": "clear"})
        elif isinstance(op, ClearStats):
            out.append({"op": "clear_stats"})
        else:
            out.append({"op": "counters"})
    codes = np.concatenate(parts) if parts else np.zeros((0, d), dtype=np.int64)
    return out, codes


def simulate_cache(model, net, codes_stream, entries, metric, policy="lru", *, simulator="verilator",
                   lanes=8, target="generic", weight_memory="auto", preload=(), squarer="logic",
                   margin=code_cache.DEFAULT_MARGIN, seed=0, gap_prob=0.0, stall_prob=0.0, max_gap=3,
                   waves=False, keep=False, root=None, verbose=False) -> CacheSimResult:
    """Run an input stream through the simulated cached engine as the host would; check it.

    Parameters
    ----------
    model : CompiledModel or path-like
        The compiled model (or its directory).
    net : pwlnet.ir.Network or list
        The float network the model was compiled from, or its code-space blocks
        (:func:`pwlnet.code_cache.code_blocks`): the host makes entries from it.
    codes_stream : array_like of int, shape (N, d), or list of operations
        Input codes in arrival order, or a script of :class:`Infer`, :class:`Stream`,
        :class:`Write`, :class:`Clear`, :class:`ClearStats` and :class:`ReadCounters`.
    entries : int
        Cache slots ``N``.
    metric : {"l2", "linf", "l1"}
    policy : {"lru", "round_robin"}
        The host's slot choice on a miss.
    simulator : {"verilator", "icarus"}
    lanes : int
        Engine lanes ``P``.
    target : {"generic", "ice40"}
    weight_memory : {"auto", "rom", "ram"}
    preload : sequence of HwEntry
        Entries in slots 0, 1, ... at configuration (part of the build).
    squarer : {"logic", "ebr"}
        The ``l2`` comparator's squarer.
    margin : float
        The host's radius margin (:func:`pwlnet.code_cache.radius_bound`).
    seed : int
        Seed of the random gaps and back-pressure.
    gap_prob, stall_prob, max_gap :
        Probability of an idle run before each input or entry-write beat / of a stall
        before each output beat, and the longest run in cycles.  Measured cycles then
        include them; the defaults (none) measure the engine alone.
    waves : bool
        Dump waves (kept in the run directory).
    keep : bool
        Keep the run directory even when everything matched.
    root : path-like, optional
        Build cache root (default ``$PWLNET_SIM_BUILD`` or ``~/.cache/pwlnet/sim``).
    verbose : bool
        Show simulator output.

    Returns
    -------
    CacheSimResult

    Raises
    ------
    pwlnet.golden.InputError
        Input codes of the wrong shape or range.
    pwlnet.code_cache.EntryError
        A preloaded or scripted entry that does not fit the slots (named by its place).
    ValueError
        Bad ``entries``, ``metric``, ``policy`` or ``lanes``.
    pwlnet.sim.runner.SimError
        A build that failed or a run that did not finish.
    """
    if not isinstance(model, artifact.CompiledModel):
        model = artifact.load(model)
    if isinstance(entries, bool) or not isinstance(entries, (int, np.integer)) or entries < 1:
        raise ValueError(f"entries must be a positive integer, not {entries!r}")
    code_cache.check_metric(metric)
    if policy not in cache_host.POLICIES:
        raise ValueError(f"policy must be one of {', '.join(cache_host.POLICIES)}, not {policy!r}")
    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
    entries, lanes = int(entries), int(lanes)
    blocks = code_cache.code_blocks(model, net)
    ops, codes = _ops_from(codes_stream, model.input_dim)
    if len(codes) == 0:
        raise golden.InputError("no input vectors to simulate")
    golden.forward(model, codes)      # names a bad shape or value before any build starts
    fmt = SlotFormat(model, lanes, metric)
    preload = tuple(preload)
    if len(preload) > entries:
        raise ValueError(f"{len(preload)} preloaded entries for {entries} slots")
    for k, e in enumerate(preload):
        try:
            fmt.check(e)
        except code_cache.EntryError as err:
            raise code_cache.EntryError(f"preloaded entry {k}: {err}") from None
    for k, op in enumerate(ops):
        op = op.get("write") or op
        if op["op"] == "write":
            if not 0 <= op["slot"] < (1 << max(1, (entries - 1).bit_length())):
                raise ValueError(f"operation {k}: slot {op['slot']} does not fit the write port's slot field")
            try:
                fmt.check(op["entry"])
            except code_cache.EntryError as err:
                raise code_cache.EntryError(f"operation {k} (write to slot {op['slot']}): {err}") from None

    cfg = runner.CacheConfig(entries=entries, metric=metric, preload=preload, squarer=squarer)
    b = runner.build(model, lanes=lanes, target=target, simulator=simulator, waves=waves, dut="cached",
                     weight_memory=weight_memory, root=root, verbose=verbose, cache=cfg)
    waves = runner._effective_waves(waves)
    run_dir = b.build_dir / "runs" / uuid.uuid4().hex[:12]
    run_dir.mkdir(parents=True)
    script = {"model": model, "blocks": blocks, "entries": entries, "metric": metric, "policy": policy,
              "margin": margin, "lanes": lanes, "preload": list(preload), "ops": ops}
    with open(run_dir / "script.pkl", "wb") as f:
        pickle.dump(script, f)
    job = {"script": str(run_dir / "script.pkl"), "ports": b.ports, "result": str(run_dir / "result.json"),
           "seed": int(seed), "gap_prob": gap_prob, "stall_prob": stall_prob, "max_gap": int(max_gap),
           "weights": str(b.build_dir / "weights.json") if (b.build_dir / "weights.json").is_file() else None,
           "image_bytes": b.info.get("image_bytes"), "cycles_hint": b.info.get("cycles_per_inference")}
    failure, run_s, log = runner.run_bench(b, "pwlnet.sim.cached_engine_tb", job, run_dir, seed=seed,
                                           waves=waves, verbose=verbose)
    res_file = run_dir / "result.json"
    if not res_file.is_file():
        tail = log.read_text()[-4000:] if log.is_file() else ""
        raise runner.SimError(f"{simulator} run in {run_dir} produced no result ({failure!r}):\n{tail}")
    r = json.loads(res_file.read_text())
    if failure is not None or r.get("timed_out") or r.get("extra_beats"):
        tail = log.read_text()[-4000:] if log.is_file() else ""
        raise runner.SimError(f"{simulator} cache bench failed in {run_dir}: {failure!r}; "
                              f"timed_out={r.get('timed_out')}, extra beats={r.get('extra_beats')}; "
                              + "\n".join(r.get("mismatch_details", [])) + f"\n{tail}")
    with np.load(run_dir / "result.npz") as f:
        a = {k: f[k] for k in f.files}
    wave_file = runner.collect_waves(b, run_dir) if waves else None
    kept = str(run_dir)
    if not keep and not waves and r["mismatches"] == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
        kept = None
    return CacheSimResult(
        hit=a["hit"], slot=a["slot"], outputs=a["outputs"], argmax=a["argmax"], cycles=a["cycles"],
        expected_hit=a["exp_hit"], expected_slot=a["exp_slot"], expected_outputs=a["exp_outputs"],
        written=a["written"], bad=a["bad"], mismatches=int(r["mismatches"]), details=r["mismatch_details"],
        hits=r["hits"], misses=r["misses"], expected_hits=r["exp_hits"], expected_misses=r["exp_misses"],
        counters=r["counters"], uncacheable=r["uncacheable"], hit_cycles=b.info.get("hit_cycles"),
        engine_cycles=b.info.get("cycles_per_inference"), image_bytes=b.info.get("image_bytes"),
        total_cycles=r["total_cycles"], build_s=b.info.get("build_s", 0.0), run_s=round(run_s, 2),
        simulator=simulator, target=target, lanes=lanes, entries=entries, metric=metric, policy=policy,
        run_dir=kept, waves=wave_file, python_wakeups=r.get("python_wakeups"))
