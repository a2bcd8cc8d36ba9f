"""The frames a netlist check sends, and what the reply to each must be.

:func:`pwlnet.sim.netlist.verify_netlist` sends a whole script of request frames into
the simulated netlist and checks the replies afterwards, so every expected reply is
computed here, in order, before the simulation runs: a :class:`Plan` is that script.
Each :class:`Step` holds a request frame, the length of its reply and a check of the
reply; the plan keeps the golden state the replies depend on as it grows:

* ``INFER`` and ``INFER_BATCH``: :func:`pwlnet.golden.forward` and
  :func:`pwlnet.golden.argmax`, or, on a build with the cache, the golden cache
  :class:`pwlnet.code_cache.HwCache` (a hit answers with the stored entry's affine map,
  a miss with the network), fed every ``CACHE_WRITE`` and ``CACHE_CLEAR`` the netlist is
  sent, so ``cached``, ``slot``, the output codes and ``CACHE_STATS`` follow it;
* ``COUNTERS``: frames, inferences and errors as the protocol counts them (an error
  reply counts as an error and not as a frame; ``CLEAR_COUNTERS`` counts as neither);
* error replies: ``(error code, offending command)`` (docs/protocol.md, "Errors").

:func:`plain_plan` and :func:`cached_plan` write the scripts for the two board tops.
On the cached top the entries are written as the host writes them
(:class:`pwlnet.cache_host.CacheHost` on every miss, as :meth:`pwlnet.host.Device.run_cached`
does), then the plan probes each entry at its center, on its bound and one code past
it, and writes a few entries with a widened bound, probed the same way, so the
comparator sees distances well above the few codes the default model's regions give.
Layer: simulation.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import struct
from typing import Callable

import numpy as np

from .. import golden
from ..cache_host import CacheHost
from ..code_cache import EntryError, HwCache, code_blocks, make_entry
from ..hw.slot_format import SlotFormat
from ..protocol import (COUNTER_NAMES, ERROR_REPLY, REPLY_FLAG, CacheInfo, Command, ErrorCode, LinkInfo,
                        batch_reply_len, code_bytes, encode_frame)

__all__ = ["NetlistMismatch", "MIN_CACHED_FRAMES", "Step", "Plan", "model_blocks", "plain_plan", "cached_plan"]


class NetlistMismatch(AssertionError):
    """The netlist answered a frame differently from the RTL's contract or the golden model."""


@dataclasses.dataclass
class Step:
    """One request frame of a plan.

    Attributes
    ----------
    kind : str
        The command's name (``"INFER"``, ...) or ``"ERROR"`` for a frame that must be refused.
    name : str
        How a mismatch names the frame (``"INFER #12 (hit, slot 3)"``).
    request : bytes
        The whole frame.
    reply_len : int
        Bytes of the whole reply frame.
    check : callable
        ``check(cmd, payload)``: raises :class:`NetlistMismatch` on a wrong reply (the
        message says what differs; :meth:`Step.verify` puts the frame's name before it).
    engine_cycles : int
        Engine cycles the reply may wait for (sets the bench's wait bound).
    """

    kind: str
    name: str
    request: bytes
    reply_len: int
    check: Callable[[int, bytes], None]
    engine_cycles: int = 0

    def verify(self, cmd, payload, where=""):
        """:attr:`check` the reply; a mismatch names ``where`` (``"frame 12"``) and the step."""
        try:
            self.check(cmd, payload)
        except NetlistMismatch as e:
            label = f"{where} ({self.name})" if where else self.name
            raise NetlistMismatch(f"{label}: {e}") from None


def model_blocks(model):
    """The compiled model's own arithmetic as a float ReLU network in code space, without
    rounding or saturation: blocks ``[(W, b, activation)]`` that read input codes and give
    outputs in the model's output units (codes times ``output_scale``).

    A cache check needs entries; :func:`pwlnet.code_cache.make_entry` makes them from a
    float network, and when the one the model was compiled from is not at hand this one
    stands in.  Its regions are not the float network's (the entries' bounds are not its
    safe radii), which does not matter to a bit-exact check: the golden cache answers
    with whatever entries the netlist is sent.
    """
    blocks = []
    for k, layer in enumerate(model.layers):
        if layer.activation not in ("relu", "none"):
            raise ValueError(f"layer {k} ({layer.name or 'dense'}) has activation {layer.activation!r}; "
                             "the cache needs a ReLU network")
        scale = np.asarray(layer.multiplier, dtype=np.float64) / np.exp2(np.asarray(layer.shift, dtype=np.float64))
        scale = np.broadcast_to(scale, (layer.weight.shape[0],))
        if k == len(model.layers) - 1:
            scale = scale * model.output_scale
        blocks.append((layer.weight * scale[:, None], layer.bias * scale, layer.activation))
    return blocks


def _expect(cmd, payload, want_cmd, want_len):
    """Refuse a reply whose command or payload length is not the expected one."""
    if cmd != want_cmd:
        detail = ""
        if cmd == ERROR_REPLY and len(payload) == 2:
            detail = f" (error {_error_name(payload[0])} for command 0x{payload[1]:02x})"
        raise NetlistMismatch(f"reply command 0x{cmd:02x}{detail}, expected 0x{want_cmd:02x} "
                              f"(payload {payload.hex()})")
    if len(payload) != want_len:
        raise NetlistMismatch(f"reply payload of {len(payload)} bytes, expected {want_len}")


def _error_name(code):
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:02x}"


def _codes(payload, n, width):
    return [int.from_bytes(payload[j:j + width], "little", signed=True) for j in range(0, n * width, width)]


class Plan:
    """A script of request frames with the reply each must get (see the module docstring).

    Parameters
    ----------
    model : CompiledModel
    info : LinkInfo
        The RTL's INFO record.
    cache_info : CacheInfo or None
        The RTL's CACHE_INFO record; ``None`` for the plain top.

    Attributes
    ----------
    steps : list of Step
    kinds : collections.Counter
        Frames per kind (``"INFER"``, ``"ERROR"``, ...).
    hits, misses : int
        INFER frames the golden cache answers with an entry and with the network.
    """

    def __init__(self, model, info, cache_info=None):
        if not isinstance(info, LinkInfo):
            raise TypeError(f"info must be a LinkInfo, not {info!r}")
        if cache_info is not None and not isinstance(cache_info, CacheInfo):
            raise TypeError(f"cache_info must be a CacheInfo or None, not {cache_info!r}")
        self.model, self.info, self.cache_info = model, info, cache_info
        self.steps = []
        self.kinds = collections.Counter()
        self.hits = self.misses = 0
        self.gold = HwCache(model, cache_info.entries, cache_info.metric) if cache_info else None
        self.fmt = SlotFormat(model, info.lanes, cache_info.metric) if cache_info else None
        self._bi, self._bo = code_bytes(model.input_bits), code_bytes(model.layers[-1].out_bits)
        self._count = {"frames": 0, "inferences": 0, "errors": 0}    # since power-up or CLEAR_COUNTERS
        # Filled while the replies are checked (in order): the engine cycles of every INFER
        # since the last CLEAR_COUNTERS, and the first cycle count of each kind of answer.
        self._busy = []
        self._first_cycles = {}
        self._batched = 0

    @property
    def inferences(self):
        """Inferences the plan asks for (INFER frames and the inputs of INFER_BATCH frames)."""
        return self.kinds["INFER"] + self._batched

    def _add(self, kind, name, request, reply_payload, check, *, counted=True, engine_cycles=0):
        self.steps.append(Step(kind, name, request, 6 + reply_payload, check, engine_cycles))
        self.kinds[kind] += 1
        if kind == "ERROR":
            self._count["errors"] += 1
        elif counted:
            self._count["frames"] += 1

    def add(self, kind, name, request, want_len, then=None, **kw):
        """Append a frame whose reply is ``kind | 0x80`` with ``want_len`` payload bytes,
        then checked by ``then(payload)``."""
        def check(cmd, payload):
            _expect(cmd, payload, int(Command[kind]) | REPLY_FLAG, want_len)
            if then is not None:
                then(payload)
        self._add(kind, name, request, want_len, check, **kw)

    # --- commands ------------------------------------------------------------------------

    def info_frame(self):
        def then(payload):
            got = LinkInfo.unpack(payload)
            if got != self.info:
                raise NetlistMismatch(f"INFO is {got}, the RTL reports {self.info}")
        self.add("INFO", "INFO", encode_frame(Command.INFO), struct.calcsize(LinkInfo._FORMAT), then)

    def cache_info_frame(self):
        def then(payload):
            got = CacheInfo.unpack(payload)
            if got != self.cache_info:
                raise NetlistMismatch(f"CACHE_INFO is {got}, the RTL reports {self.cache_info}")
        self.add("CACHE_INFO", "CACHE_INFO", encode_frame(Command.CACHE_INFO), struct.calcsize(CacheInfo._FORMAT),
                 then)

    def load_weights(self, words):
        """``LOAD_WEIGHTS`` frames of as many words as ``max_payload`` takes, as
        :meth:`pwlnet.host.Device.load_weights` sends them; on the cached top they empty the cache."""
        nb, words = self.info.weight_word_bytes, [int(w) for w in words]
        if len(words) != self.info.weight_words:
            raise ValueError(f"{len(words)} weight words given; the build loads {self.info.weight_words}")
        per_frame = (self.info.max_payload - 2) // nb
        for i in range(0, len(words), per_frame):
            payload = struct.pack("<H", i) + b"".join(w.to_bytes(nb, "little") for w in words[i:i + per_frame])
            self.add("LOAD_WEIGHTS", f"LOAD_WEIGHTS of words {i}..{min(i + per_frame, len(words)) - 1}",
                     encode_frame(Command.LOAD_WEIGHTS, payload), 0)
        if self.gold is not None:
            self.gold.clear()

    def _payload(self, rows):
        return b"".join(int(c).to_bytes(self._bi, "little", signed=True) for c in np.asarray(rows).reshape(-1))

    def infer(self, codes):
        """One ``INFER``; returns ``(hit, slot)`` as the golden cache answers (``(False, -1)``
        on the plain top)."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        k, n_out = self.kinds["INFER"], self.model.output_dim
        if self.gold is not None:
            look = self.gold.lookup(codes[None])
            hit, slot, want = bool(look.hit[0]), int(look.slot[0]), look.outputs[0].tolist()
        else:
            hit, slot, want = False, -1, golden.forward(self.model, codes[None])[0].tolist()
        self.hits, self.misses = self.hits + hit, self.misses + (not hit)
        arg = int(golden.argmax(np.array(want)))
        cached = self.gold is not None
        name = f"INFER #{k}" + ((f" (hit, slot {slot})" if hit else " (miss)") if cached else "")

        def then(payload):
            outs = _codes(payload, n_out, self._bo)
            am, cyc = struct.unpack("<HI", payload[n_out * self._bo:n_out * self._bo + 6])
            if outs != want or am != arg:
                raise NetlistMismatch(f"inputs {codes.tolist()} gave outputs {outs} arg-max {am}; the "
                                      f"golden {'cache' if cached else 'model'} gives {want} arg-max {arg}")
            if cached and tuple(payload[-2:]) != (int(hit), max(slot, 0)):
                raise NetlistMismatch(f"inputs {codes.tolist()} answered with cached={payload[-2]} "
                                      f"slot={payload[-1]}; the golden cache says cached={int(hit)} "
                                      f"slot={max(slot, 0)}")
            self._cycles("hit" if hit else "network", cyc)
        cycles = self.cache_info.hit_cycles if hit else self.info.cycles_per_inference
        self.add("INFER", name, encode_frame(Command.INFER, self._payload(codes)), n_out * self._bo + 6 + 2 * cached,
                 then, engine_cycles=cycles)
        self._count["inferences"] += 1
        return hit, slot

    def _cycles(self, what, cyc):
        """Every answer of one kind (network or hit) takes the same number of cycles."""
        first = self._first_cycles.setdefault(what, cyc)
        if cyc == 0 or cyc != first:
            raise NetlistMismatch(f"the inference took {cyc} cycles, the first {what} took {first}")
        self._busy.append(cyc)

    def infer_batch(self, rows):
        """One ``INFER_BATCH`` of the input rows ``(k, d)`` (plain top only)."""
        rows = np.asarray(rows, dtype=np.int64)
        k, n_out = len(rows), self.model.output_dim
        want = golden.forward(self.model, rows)
        arg = golden.argmax(want)

        def then(payload):
            rec = n_out * self._bo + 2
            for j in range(k):
                r = payload[j * rec:(j + 1) * rec]
                outs, am = _codes(r, n_out, self._bo), struct.unpack("<H", r[-2:])[0]
                if outs != want[j].tolist() or am != int(arg[j]):
                    raise NetlistMismatch(f"input {j} {rows[j].tolist()} gave outputs {outs} arg-max {am}; "
                                          f"the golden model gives {want[j].tolist()} arg-max {int(arg[j])}")
            if struct.unpack("<I", payload[-4:])[0] == 0:
                raise NetlistMismatch("the batch reports 0 cycles")
        self.add("INFER_BATCH", f"INFER_BATCH #{self.kinds['INFER_BATCH']} of {k} inputs",
                 encode_frame(Command.INFER_BATCH, self._payload(rows)), batch_reply_len(self.info, k), then,
                 engine_cycles=k * self.info.cycles_per_inference)
        self._count["inferences"] += k
        self._batched += k

    def cache_write(self, slot, entry):
        self.gold.write_entry(slot, entry)
        self.add("CACHE_WRITE", f"CACHE_WRITE #{self.kinds['CACHE_WRITE']} (slot {slot}, bound {entry.bound})",
                 encode_frame(Command.CACHE_WRITE, bytes([slot]) + self.fmt.image(entry)), 0,
                 engine_cycles=self.info.cycles_per_inference)

    def cache_clear(self):
        self.gold.clear()
        self.add("CACHE_CLEAR", f"CACHE_CLEAR #{self.kinds['CACHE_CLEAR']}", encode_frame(Command.CACHE_CLEAR), 0)

    def cache_stats(self, reset=False):
        want = (self.gold.hits, self.gold.misses)
        if reset:
            self.gold.reset_counters()

        def then(payload):
            got = struct.unpack("<II", payload)
            if got != want:
                raise NetlistMismatch(f"(hits, misses) {got}, the golden cache counts {want}")
        self.add("CACHE_STATS", f"CACHE_STATS #{self.kinds['CACHE_STATS']}" + (" (reset)" if reset else ""),
                 encode_frame(Command.CACHE_STATS, b"\x01" if reset else b""), 8, then)

    def counters(self):
        want = dict(self._count, frames=self._count["frames"] + 1, uart_errors=0)   # COUNTERS counts itself

        def then(payload):
            got = dict(zip(COUNTER_NAMES, struct.unpack(f"<{len(COUNTER_NAMES)}I", payload)))
            bad = {k: v for k, v in want.items() if got[k] != v}
            busy = sum(self._busy)      # the INFERs checked since the last CLEAR_COUNTERS
            if bad or got["busy_cycles"] < busy:
                raise NetlistMismatch(f"counters {got}; expected {want} and busy_cycles >= {busy}")
        self.add("COUNTERS", f"COUNTERS #{self.kinds['COUNTERS']}", encode_frame(Command.COUNTERS),
                 4 * len(COUNTER_NAMES), then)

    def clear_counters(self):
        def then(payload):
            self._busy = []       # the INFERs checked so far are before the clear
        self.add("CLEAR_COUNTERS", "CLEAR_COUNTERS", encode_frame(Command.CLEAR_COUNTERS), 0, then, counted=False)
        self._count = {"frames": 0, "inferences": 0, "errors": 0}

    def error(self, what, request, code, command):
        """A frame the device must refuse with ``(code, command)``; changes nothing else."""
        want = bytes([int(code), int(command)])

        def check(cmd, payload):
            _expect(cmd, payload, ERROR_REPLY, 2)
            if payload != want:
                raise NetlistMismatch(f"error reply {payload.hex()}, expected {want.hex()}")
        self._add("ERROR", f"{what}, to be refused with {ErrorCode(code).name}", request, 2, check)


# --- the scripts ------------------------------------------------------------------------

#: The smallest ``frames`` (INFER frames) :func:`cached_plan` takes: one round of each phase.
MIN_CACHED_FRAMES = 12


def _code_range(model):
    return -(1 << (model.input_bits - 1)), (1 << (model.input_bits - 1)) - 1


def _test_codes(model, n, rng):
    """``n`` input rows: the two extremes, zero, then uniform random codes."""
    lo, hi = _code_range(model)
    codes = rng.integers(lo, hi + 1, size=(n, model.input_dim))
    for row, value in zip(range(n), (hi, lo, 0)):
        codes[row] = value
    return codes


def _bad_crc(frame):
    return frame[:-1] + bytes([frame[-1] ^ 0x5A])


def _error_frames(plan, batch=0):
    """Frames every build must refuse: a bad CRC, an unknown command, a wrong length, and
    the commands this build does not implement."""
    d = plan.model.input_dim
    if not batch:
        plan.error("INFER_BATCH on a build without batches", encode_frame(Command.INFER_BATCH, bytes(d * plan._bi)),
                   ErrorCode.UNSUPPORTED, Command.INFER_BATCH)
    infer = encode_frame(Command.INFER, bytes(d * code_bytes(plan.model.input_bits)))
    plan.error("INFER with a corrupted CRC", _bad_crc(infer), ErrorCode.BAD_CRC, Command.INFER)
    plan.error("unknown command 0x7e", encode_frame(0x7E), ErrorCode.UNKNOWN_COMMAND, 0x7E)
    plan.error(f"INFER with {d - 1} input codes", encode_frame(Command.INFER, bytes((d - 1) * plan._bi)),
               ErrorCode.BAD_LENGTH, Command.INFER)
    plan.error("reserved cache command 0x14", encode_frame(0x14), ErrorCode.UNSUPPORTED, 0x14)
    if not plan.info.weight_words:
        plan.error("LOAD_WEIGHTS with the weights built in", encode_frame(Command.LOAD_WEIGHTS, bytes(2 + 8)),
                   ErrorCode.UNSUPPORTED, Command.LOAD_WEIGHTS)
    if plan.cache_info is None:
        plan.error("CACHE_INFO without a cache", encode_frame(Command.CACHE_INFO), ErrorCode.UNSUPPORTED,
                   Command.CACHE_INFO)
    else:
        entries = plan.cache_info.entries
        if entries < 256:
            plan.error(f"CACHE_WRITE to slot {entries} of {entries}",
                       encode_frame(Command.CACHE_WRITE, bytes([entries]) + bytes(plan.cache_info.image_bytes)),
                       ErrorCode.BAD_ARGUMENT, Command.CACHE_WRITE)
        plan.error("CACHE_WRITE one byte short", encode_frame(Command.CACHE_WRITE, bytes(plan.cache_info.image_bytes)),
                   ErrorCode.BAD_LENGTH, Command.CACHE_WRITE)


def _counter_frames(plan, rng):
    """COUNTERS, CLEAR_COUNTERS, one INFER, COUNTERS: the counters start again from zero."""
    plan.counters()
    plan.clear_counters()
    plan.infer(_test_codes(plan.model, 4, rng)[3])
    plan.counters()


def plain_plan(model, info, frames, rng, *, batch=0):
    """The script for the plain top: INFO, ``frames`` INFERs (both extremes, zero, random
    codes; the last one after CLEAR_COUNTERS), with ``batch`` > 0 INFER_BATCH frames of 1,
    ``batch // 2`` and ``batch`` inputs, the error frames and the counters."""
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, not {frames!r}")
    plan = Plan(model, info)
    plan.info_frame()
    for row in _test_codes(model, frames - 1, rng):
        plan.infer(row)
    if batch:
        lo, hi = _code_range(model)
        for k in sorted({1, max(1, batch // 2), batch}):
            plan.infer_batch(rng.integers(lo, hi + 1, size=(k, model.input_dim)))
    _error_frames(plan, batch)
    _counter_frames(plan, rng)
    return plan


def _toward_zero(center, k, t):
    """``center`` moved by ``t`` codes on coordinate ``k``, toward zero (so it stays in range)."""
    q = center.copy()
    q[k] += -t if q[k] >= 0 else t
    return q


def _probes(entry, rng, lo, hi):
    """Codes around ``entry``: its center, on its bound and one code past it along one axis,
    and on (or, for ``l2``, inside) its bound and past it with every coordinate moved."""
    c, b, d, metric = entry.center, entry.bound, entry.dim, entry.metric
    k = int(rng.integers(d))
    on = math.isqrt(b) if metric == "l2" else b
    if metric == "linf":
        spread = np.full(d, b)
    elif metric == "l1":
        spread = np.full(d, b // d) + (np.arange(d) < b % d)
    else:
        spread = np.full(d, math.isqrt(b // d))
    sign = np.where(c >= 0, -1, 1)
    wide = c + sign * spread
    past = wide.copy()
    past[k] += sign[k]
    points = [c, _toward_zero(c, k, on), _toward_zero(c, k, on + 1), wide, past]
    return [np.clip(q, lo, hi) for q in points]


def _entry_at(plan, blocks, rng, span):
    """An entry made at random codes in ``-span..span`` that fits the slots."""
    for _ in range(200):
        try:
            e = make_entry(plan.model, blocks, rng.integers(-span, span + 1, size=plan.model.input_dim),
                           plan.cache_info.metric)
        except EntryError:
            continue
        if plan.fmt.fits(e):
            return e
    raise ValueError("no entry that fits the slots in 200 tries (see pwlnet.code_cache.make_entry)")


def _host_rounds(plan, blocks, rng, limit):
    """The host's loop (:class:`pwlnet.cache_host.CacheHost`, round robin): a miss writes the
    entry made at its codes; each round sends a new input, then its entry's first three probes."""
    c = plan.cache_info
    host = CacheHost(plan.model, blocks, c.entries, c.metric, "round_robin", slot_format=plan.fmt)
    lo, hi = _code_range(plan.model)

    def infer(q):
        hit, slot = plan.infer(q)
        todo = host.seen(q, hit, slot)
        if todo is not None:
            plan.cache_write(*todo)
            return todo[1]
        return None

    while plan.kinds["INFER"] + 4 <= limit:
        entry = infer(rng.integers(lo // 2, hi // 2 + 1, size=plan.model.input_dim))
        for q in (_probes(entry, rng, lo, hi)[:3] if entry is not None else ()):
            infer(q)


def _wide_rounds(plan, blocks, rng, limit):
    """Entries with a widened bound (linf 4..20, l1 d..4d, l2 4d..64d), written to spread
    slots and probed at all five points of :func:`_probes`."""
    c, d = plan.cache_info, plan.model.input_dim
    lo, hi = _code_range(plan.model)
    span = {"linf": (4, 20), "l1": (d, 4 * d), "l2": (4 * d, 64 * d)}[c.metric]
    j = 0
    while plan.kinds["INFER"] + 5 <= limit:
        entry = dataclasses.replace(_entry_at(plan, blocks, rng, hi // 2), bound=int(rng.integers(*span)))
        plan.fmt.check(entry)
        plan.cache_write((3 * j + 1) % c.entries, entry)
        for q in _probes(entry, rng, lo, hi):
            plan.infer(q)
        j += 1


def cached_plan(model, info, cache_info, frames, rng, *, blocks, weight_words=None):
    """The script for the cached top, with ``frames`` INFERs in all (at least
    :data:`MIN_CACHED_FRAMES`).

    INFO and CACHE_INFO; LOAD_WEIGHTS of ``weight_words`` when the build loads its weights;
    the host's loop (about 40 % of the INFERs); widened entries (about 30 %); CACHE_STATS
    (read and reset), random codes against the filled cache, CACHE_STATS; the error frames;
    CACHE_CLEAR and the last entry's center again (now a miss); the counters.

    Parameters
    ----------
    blocks : list
        The float network in code space that entries are made from
        (:func:`pwlnet.code_cache.code_blocks`, or :func:`model_blocks`).
    weight_words : sequence of int
        The engine's weight memory image; needed when ``info.weight_words``.
    """
    if not isinstance(frames, int) or frames < MIN_CACHED_FRAMES:
        raise ValueError(f"frames must be an integer of at least {MIN_CACHED_FRAMES} on the cached top, "
                         f"not {frames!r}")
    plan = Plan(model, info, cache_info)
    blocks = code_blocks(model, blocks)
    plan.info_frame()
    plan.cache_info_frame()
    if info.weight_words:
        if weight_words is None:
            raise ValueError(f"this build loads {info.weight_words} weight words over the link; give weight_words")
        plan.load_weights(weight_words)
    tail = 2    # the center after CACHE_CLEAR and the INFER after CLEAR_COUNTERS
    _host_rounds(plan, blocks, rng, max(4, int(0.4 * frames)))
    _wide_rounds(plan, blocks, rng, max(plan.kinds["INFER"] + 5, int(0.7 * frames)))
    plan.cache_stats(reset=True)
    lo, hi = _code_range(model)
    while plan.kinds["INFER"] < frames - tail:
        plan.infer(rng.integers(lo, hi + 1, size=model.input_dim))
    plan.cache_stats()
    _error_frames(plan)
    last = next(e for e in reversed(plan.gold.entries) if e is not None)
    plan.cache_clear()
    plan.infer(last.center)
    _counter_frames(plan, rng)
    return plan
