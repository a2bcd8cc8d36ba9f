"""The host's side of the hypersphere cache: fill slots on misses, stream inputs, preload.

Layer: arithmetic and compiled model (the bottom).  It needs the golden cache
(:mod:`pwlnet.code_cache`), the golden model and the region geometry, and nothing of the
hardware: where the cached engine's slot limits matter, the caller passes the slot format
(:class:`pwlnet.hw.slot_format.SlotFormat`, or anything with its ``check(entry)``) as an
argument, so the simulation, the host driver and the application above can all use it.

* :class:`CacheHost` -- on a miss, make the entry and choose its slot; the golden loop
  (:func:`run_stream`), the RTL bench (:mod:`pwlnet.sim.cached_engine_tb`) and the board
  driver (:meth:`pwlnet.host.Device.run_cached`) all call it, so they write the same
  entries to the same slots.
* :func:`run_stream` -- the whole host-and-device loop against the golden cache
  (:class:`pwlnet.code_cache.HwCache`), with what it saw per input (:class:`StreamResult`).
* :func:`preload` -- entries to build into the bitstream: a greedy cover of a
  calibration set.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import golden, regions
from .artifact import CompiledModel
from .code_cache import DEFAULT_MARGIN, EntryError, HwCache, check_metric, code_blocks, make_entry
from .tie_guard import FullNetworkBound

__all__ = ["POLICIES", "CacheHost", "StreamResult", "run_stream", "preload"]

#: Slot choice of :class:`CacheHost` (and :func:`run_stream`) on a miss.
POLICIES = ("round_robin", "lru")


class CacheHost:
    """The host's side of the cache: on a miss, make the entry and choose its slot.

    One object per stream; the golden loop (:func:`run_stream`) and the RTL loop
    (:mod:`pwlnet.sim.cached_engine_sim`) both call :meth:`seen` after every inference, so they
    write the same entries to the same slots.

    Slot choice (``policy``):

    ``"round_robin"``
        slots ``0, 1, ..., N-1, 0, ...`` in turn (first in, first out).  Needs nothing
        from the hardware but the miss itself.
    ``"lru"``
        an empty slot if there is one (the lowest), else the slot least recently
        written or reported in a hit response.  The host learns the hitting slot from
        each response, so it keeps the ages itself; the hardware stays a plain register
        bank.

    Parameters
    ----------
    model : CompiledModel
    blocks : list
        The float network in code space (:func:`pwlnet.code_cache.code_blocks`).
    n_entries : int
    metric : str
    policy : {"round_robin", "lru"}
    margin : float
    slot_format : pwlnet.hw.slot_format.SlotFormat, optional
        Entries that do not fit it (its ``check`` raises
        :class:`~pwlnet.code_cache.EntryError`) are not written (the input stays uncached).
    tie_guard : bool
        Apply the tie guard to every entry (:func:`pwlnet.code_cache.make_entry`).
    """

    def __init__(self, model, blocks, n_entries, metric, policy="round_robin", *, margin=DEFAULT_MARGIN,
                 slot_format=None, tie_guard: bool = True):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.model, self.blocks, self.metric, self.policy = model, blocks, check_metric(metric), policy
        self.n_entries = int(n_entries)
        self.margin = margin
        self.slot_format = slot_format
        self.tie_guard = FullNetworkBound(model, blocks) if tie_guard else False
        self.valid = np.zeros(self.n_entries, dtype=bool)
        self.age = np.full(self.n_entries, -1, dtype=np.int64)
        self.rr = 0
        self.t = 0
        self.uncacheable = 0

    def clear(self):
        """The host cleared the cache: every slot is empty again."""
        self.valid[:] = False
        self.age[:] = -1

    def seen(self, codes, hit, slot):
        """Record one inference's answer; on a miss return ``(slot, entry)`` to write, or ``None``.

        ``None`` on a hit, and on a miss whose entry cannot be made or does not fit the
        slots (counted in :attr:`uncacheable`).
        """
        t = self.t
        self.t += 1
        if hit:
            self.age[int(slot)] = t
            return None
        try:
            e = make_entry(self.model, self.blocks, codes, self.metric, margin=self.margin,
                           tie_guard=self.tie_guard)
            if self.slot_format is not None:
                self.slot_format.check(e)
        except EntryError:
            self.uncacheable += 1
            return None
        if self.policy == "round_robin":
            s = self.rr
            self.rr = (self.rr + 1) % self.n_entries
        else:
            empty = np.flatnonzero(~self.valid)
            s = int(empty[0]) if empty.size else int(np.argmin(self.age))
        self.valid[s] = True
        self.age[s] = t
        return s, e


@dataclasses.dataclass
class StreamResult:
    """What :func:`run_stream` saw, per input (``N`` rows) and in total.

    Attributes
    ----------
    hit : bool (N,)
    slot : int (N,)
        The slot that answered, ``-1`` on a miss.
    written : int (N,)
        The slot the host wrote after this miss, ``-1`` if none (a hit, or an
        input whose affine piece could not be quantized).
    center : int (N, d)
        On a hit the answering entry's center; on a miss the input itself (the
        center of the entry written for it).
    outputs : int (N, n_out)
        Output codes the cache returned.
    full : int (N, n_out)
        Output codes of the full quantized network (:func:`pwlnet.golden.forward`).
    float_outputs : float (N, n_out)
        The float network at the same input codes, in output-code units
        (``f(q) / output_scale``): the reference both quantized answers approximate.
    code_diff : int (N,)
        ``max |outputs - full|`` per input (0 on misses).
    argmax_disagree : bool (N,)
        ``argmax(outputs) != argmax(full)``.
    false_hit : bool (N,)
        A hit whose float pattern in code space differs from its entry's (checked with
        :func:`pwlnet.regions.same_pattern` when ``verify``; must never be true).
    bounds : int (N,)
        The bound ``R`` of the answering or written entry (``-1`` otherwise).
    uncacheable : int
        Misses whose entry could not be made.
    hits, misses : int
        The cache's counters after the stream.
    shrunk : int
        Entries written whose bound the tie guard made smaller than the safe radius
        alone allowed.
    """

    hit: np.ndarray
    slot: np.ndarray
    written: np.ndarray
    center: np.ndarray
    outputs: np.ndarray
    full: np.ndarray
    float_outputs: np.ndarray
    code_diff: np.ndarray
    argmax_disagree: np.ndarray
    false_hit: np.ndarray
    bounds: np.ndarray
    uncacheable: int
    hits: int
    misses: int
    shrunk: int = 0

    @property
    def hit_rate(self) -> float:
        n = len(self.hit)
        return float(self.hit.sum() / n) if n else float("nan")

    @property
    def max_code_diff(self) -> int:
        return int(self.code_diff.max(initial=0))

    @property
    def n_argmax_disagree(self) -> int:
        return int(self.argmax_disagree.sum())

    @property
    def n_false_hits(self) -> int:
        return int(self.false_hit.sum())


def run_stream(model: CompiledModel, net, codes_stream, n_entries, metric="linf", policy="round_robin", *,
               margin=DEFAULT_MARGIN, verify=True, cache: HwCache | None = None,
               slot_format=None, tie_guard: bool = True) -> StreamResult:
    """Run input codes through the cache in order, filling entries on misses as the host would.

    On every miss the host linearizes the float network at the missed codes
    (:func:`pwlnet.code_cache.make_entry`) and writes the entry into a slot chosen by ``policy``
    (:class:`CacheHost`).

    Parameters
    ----------
    model : CompiledModel
    net : pwlnet.ir.Network or list
        The float network ``model`` was compiled from, or its code-space blocks
        (:func:`pwlnet.code_cache.code_blocks`).
    codes_stream : array_like of int, shape (N, d)
    n_entries : int
    metric : {"l2", "linf", "l1"}
    policy : {"round_robin", "lru"}
    margin : float
        See :func:`pwlnet.code_cache.radius_bound`.
    verify : bool
        Check every hit's float pattern (:attr:`StreamResult.false_hit`).
    cache : pwlnet.code_cache.HwCache, optional
        Start from this cache (its entries and counters) instead of an empty one.
    slot_format : pwlnet.hw.slot_format.SlotFormat, optional
        The hardware's slot limits: an entry that does not fit them is not written (the
        input counts as :attr:`StreamResult.uncacheable`), as the host does with a real
        cached engine.
    tie_guard : bool
        Entries with the tie guard (the default; :func:`make_entry`).

    Returns
    -------
    StreamResult
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    blocks = code_blocks(model, net)
    codes_stream = np.asarray(codes_stream)
    if not np.issubdtype(codes_stream.dtype, np.integer):
        raise golden.InputError(f"input codes must be integers, not {codes_stream.dtype}")
    codes_stream = codes_stream.astype(np.int64).reshape(len(codes_stream), -1)
    cache = HwCache(model, n_entries, metric) if cache is None else cache
    if cache.metric != metric or cache.n_entries != n_entries:
        raise ValueError("the given cache has another metric or size than asked")
    n = len(codes_stream)
    full = golden.forward(model, codes_stream) if n else np.zeros((0, model.output_dim), dtype=np.int64)
    hit = np.zeros(n, dtype=bool)
    slot = np.full(n, -1, dtype=np.int64)
    written = np.full(n, -1, dtype=np.int64)
    bounds = np.full(n, -1, dtype=np.int64)
    center = codes_stream.copy()
    outputs = np.zeros_like(full)
    false_hit = np.zeros(n, dtype=bool)
    host = CacheHost(model, blocks, cache.n_entries, metric, policy, margin=margin, slot_format=slot_format,
                     tie_guard=tie_guard)
    host.valid[:] = cache.valid
    shrunk = 0
    for t, q in enumerate(codes_stream):
        res = cache.lookup(q[None])
        outputs[t] = res.outputs[0]
        s = int(res.slot[0])
        todo = host.seen(q, bool(res.hit[0]), s)
        if res.hit[0]:
            e = cache.entries[s]
            hit[t], slot[t], center[t], bounds[t] = True, s, e.center, e.bound
            if verify and e.pattern:
                false_hit[t] = not regions.same_pattern(blocks, q[None].astype(np.float64), e.pattern)[0]
        elif todo is not None:
            s, e = todo
            cache.write_entry(s, e)
            written[t], bounds[t] = s, e.bound
            shrunk += e.bound < e.region_bound
    uncacheable = host.uncacheable
    diff = np.abs(outputs - full).max(axis=1, initial=0) if n else np.zeros(0, dtype=np.int64)
    disagree = golden.argmax(outputs) != golden.argmax(full) if n else np.zeros(0, dtype=bool)
    ref = (regions.evaluate(blocks, codes_stream.astype(np.float64)).outputs / model.output_scale if n
           else np.zeros((0, model.output_dim)))
    return StreamResult(hit=hit, slot=slot, written=written, center=center, outputs=outputs, full=full,
                        float_outputs=ref, code_diff=diff, argmax_disagree=disagree, false_hit=false_hit, bounds=bounds,
                        uncacheable=uncacheable, hits=cache.hits, misses=cache.misses, shrunk=int(shrunk))


def preload(model: CompiledModel, net, calib_codes, n_entries, metric, *, margin=DEFAULT_MARGIN,
            max_candidates=1000, seed=0, tie_guard=True) -> list:
    """Entries to preload at build time: a greedy cover of calibration input codes.

    Every distinct calibration code vector (at most ``max_candidates`` of them, drawn at
    random with ``seed`` when there are more) is a candidate center.  The entry covering
    the most calibration inputs not yet covered (repeats counted) is taken first, until
    ``n_entries`` are taken or no candidate covers anything new.  Greedy set cover is
    within a factor ``1 - 1/e`` of the best possible coverage.

    Returns
    -------
    list of pwlnet.code_cache.HwEntry
        In the order taken (write them to slots 0, 1, ...).
    """
    if isinstance(n_entries, bool) or not isinstance(n_entries, (int, np.integer)) or n_entries < 1:
        raise ValueError(f"n_entries must be a positive integer, not {n_entries!r}")
    check_metric(metric)
    blocks = code_blocks(model, net)
    codes = np.asarray(calib_codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise golden.InputError(f"calibration codes must be integers, not {codes.dtype}")
    uniq, count = np.unique(codes.astype(np.int64).reshape(len(codes), -1), axis=0, return_counts=True)
    pick = np.arange(len(uniq))
    if len(pick) > max_candidates:
        pick = np.sort(np.random.default_rng(seed).choice(len(uniq), max_candidates, replace=False))
    cands = []
    guard = FullNetworkBound(model, blocks) if tie_guard else False
    for c in uniq[pick]:
        try:
            cands.append(make_entry(model, blocks, c, metric, margin=margin, tie_guard=guard))
        except EntryError:
            pass
    if not cands:
        return []
    covers = np.stack([e.hits(uniq) for e in cands])          # (candidates, distinct codes)
    left = count.astype(np.int64)
    chosen = []
    while len(chosen) < n_entries:
        gain = covers @ left
        best = int(np.argmax(gain))
        if gain[best] == 0:
            break
        chosen.append(cands[best])
        left = np.where(covers[best], 0, left)
    return chosen
