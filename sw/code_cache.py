"""The hardware hypersphere cache, bit-exact: entries and lookup in input-code space.

Layer: arithmetic and compiled model (the bottom; imports only its neighbours there).

This module is the specification of the comparator bank: the RTL must declare the same
hits, pick the same slot and return the same output codes as :class:`HwCache`.  How an
entry is stored in the cached engine's slots is the hardware's business
(:mod:`pwlnet.hw.slot_format`); the host's loop that fills the slots on misses is
:mod:`pwlnet.cache_host`.

Entries live in *input-code space* of a compiled model.  An entry holds

* ``center``: ``d`` input codes ``c``;
* ``bound``: an integer ``R`` on the integer distance (:func:`distance`) -- the query
  codes ``q`` hit iff ``distance(q, c) <= R``, where the distance is
  ``max_i |q_i - c_i|`` (``linf``), ``sum_i (q_i - c_i)**2`` (``l2``, squared so that no
  square root is needed) or ``sum_i |q_i - c_i|`` (``l1``);
* one dense layer (:class:`pwlnet.artifact.Layer`, no activation) from input codes to
  output codes at the compiled model's output scale: the network's affine piece around
  ``c``, evaluated with the engine's ordinary arithmetic (:func:`pwlnet.golden.layer_forward`).

How ``R`` is made (:func:`radius_bound`).  The float network reading codes,
:func:`pwlnet.quantize.code_space_blocks`, is linearized at ``c``
(:func:`pwlnet.regions.linearize`); its safe radius ``r`` (in code units) bounds an open
ball in which the float network is exactly ``W q + b``.  ``R`` is the largest integer
strictly below ``(r (1 - margin))`` (``linf``, ``l1``) or ``(r (1 - margin))**2`` (``l2``),
so every integer hit lies strictly inside the float ball: rounding always goes toward a
miss.  The relative ``margin`` (default ``1e-6``) covers the float64 rounding of ``r``,
which is a few ulps of the terms of each pre-activation; it only matters when ``r`` is
within ``1e-6`` of an integer.  Two further rules:

* ``R`` is at least 0: ``q == c`` always hits its own entry, even when ``r == 0`` (``c`` on
  a region boundary), because at ``c`` itself the map with ``c``'s pattern is exact
  (``relu(0) == 0`` whichever side a zero neuron is counted on).  Sensor streams repeat
  exact codes often, so this is worth having.
* ``R`` is at most :func:`max_distance`, the largest distance two codes can have, which
  fixes the width of the radius register without changing any decision.

The float ball is exact for the float network; the quantized full network and the
entry's quantized layer round differently, so outputs on hits can differ from
:func:`pwlnet.golden.forward` by a few codes (:func:`pwlnet.cache_host.run_stream` measures
that).  Near a tie between two classes that could change the arg-max, so by default
:func:`make_entry` applies the tie guard (:mod:`pwlnet.tie_guard`): it shrinks ``R``
until both answers provably have the same arg-max everywhere in the ball.  An input the
guard turns away is a miss like any other, in the hardware too (which only ever sees ``R``).

Entry words (:meth:`HwEntry.to_words`), the payload of the host link's "write entry"
command (the command itself carries the slot).  All words are 32-bit, sent as unsigned;
signed fields are two's complement; 64-bit fields take two words, low word first:

======================  =====================================================
word                    field
======================  =====================================================
0                       :data:`MAGIC` ``0x70774345`` (ASCII ``pwCE``)
1                       bits 0-7 :data:`WORD_VERSION`, 8-15 metric
                        (:data:`pwlnet.protocol.CACHE_METRIC_CODES`: 0 ``l2``,
                        1 ``linf``, 2 ``l1``), 16-23 requant
                        (0 ``shift``, 1 ``multiply``)
2                       bits 0-15 ``d``, 16-31 ``n_out``
3                       bits 0-7 in_bits, 8-15 weight_bits, 16-23 out_bits,
                        24-31 acc_bits
4, 5                    bound ``R`` (64 bits)
6 .. 6+d-1              center codes ``c[i]`` (signed)
next ``n_out*d``        weights ``W[o, i]``, row by row (signed)
next ``2*n_out``        bias ``b[o]`` (64 bits each, signed)
next ``n_out``          multiplier ``M[o]`` (unsigned)
next ``n_out``          shift ``S[o]`` (unsigned)
======================  =====================================================

Total ``6 + d + n_out * (d + 4)`` words.  The output scale (a float the hardware never
uses) is not sent.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import fixedpoint as fx
from . import golden, regions
from .artifact import CompiledModel, Layer
from .protocol import CACHE_METRIC_CODES
from .quantize import QuantizeError, code_space_blocks, quantize_dense
from .tie_guard import FullNetworkBound, guarded_bound

__all__ = ["METRICS", "MAGIC", "WORD_VERSION", "DEFAULT_MARGIN", "EntryError", "check_metric",
           "distance", "max_distance", "distance_bits", "radius_bound", "HwEntry", "code_blocks", "make_entry",
           "Lookup", "HwCache"]

#: Metrics of the comparator bank.
METRICS = regions.METRICS
#: First word of every entry payload.
MAGIC = 0x70774345
#: Layout version of the entry payload.
WORD_VERSION = 1
#: Default relative shrink of the float radius before it is rounded to an integer bound.
DEFAULT_MARGIN = 1e-6

_REQUANT_CODE = {"shift": 0, "multiply": 1}
_HEADER_WORDS = 6


class EntryError(ValueError):
    """An entry that cannot be made, stored or decoded."""


def check_metric(metric):
    """Return ``metric`` if it is one of :data:`METRICS`, else raise ``ValueError`` naming it."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    return metric


def distance(codes, center, metric):
    """Integer distance between code vectors (last axis), as the comparator computes it.

    ``linf``: ``max |q - c|``; ``l2``: ``sum (q - c)**2`` (squared); ``l1``: ``sum |q - c|``.
    Returns int64.
    """
    check_metric(metric)
    diff = np.asarray(codes, dtype=np.int64) - np.asarray(center, dtype=np.int64)
    if metric == "linf":
        return np.abs(diff).max(axis=-1)
    if metric == "l1":
        return np.abs(diff).sum(axis=-1)
    return (diff * diff).sum(axis=-1)


def max_distance(metric, dim, bits) -> int:
    """Largest :func:`distance` between two ``bits``-wide code vectors of length ``dim``."""
    check_metric(metric)
    span = (1 << bits) - 1
    return {"linf": span, "l1": dim * span, "l2": dim * span * span}[metric]


def distance_bits(metric, dim, bits) -> int:
    """Width of an unsigned register that holds every :func:`distance` and every bound."""
    return max_distance(metric, dim, bits).bit_length()


def radius_bound(r, metric, *, dim, bits, margin=DEFAULT_MARGIN) -> int:
    """The integer bound ``R`` for a float safe radius ``r`` in code units (see module docs).

    ``R = max(0, largest integer < t)`` with ``t = r (1 - margin)`` (``linf``, ``l1``) or
    ``t = (r (1 - margin))**2`` (``l2``), capped at :func:`max_distance`.
    """
    check_metric(metric)
    r = float(r)
    if math.isnan(r) or r < 0:
        raise ValueError(f"radius must be a non-negative number, not {r}")
    if not (0.0 <= margin < 1.0):
        raise ValueError(f"margin must be in [0, 1), not {margin!r}")
    cap = max_distance(metric, dim, bits)
    safe = r * (1.0 - margin)
    t = safe * safe if metric == "l2" else safe
    if t > cap:
        return cap
    return max(0, math.ceil(t) - 1)


def _signed32(v, what):
    v = np.asarray(v, dtype=np.int64).reshape(-1)
    if np.any(v < -(1 << 31)) or np.any(v >= (1 << 31)):
        raise EntryError(f"{what} does not fit a 32-bit word")
    return [int(x) & 0xFFFFFFFF for x in v]


def _wide64(v):
    out = []
    for x in np.asarray(v, dtype=np.int64).reshape(-1):
        u = int(x) & 0xFFFFFFFFFFFFFFFF
        out += [u & 0xFFFFFFFF, u >> 32]
    return out


def _from32(words):
    w = np.asarray(words, dtype=np.int64)
    return np.where(w >= (1 << 31), w - (1 << 32), w)


def _from64(words):
    w = np.asarray(words, dtype=np.int64).reshape(-1, 2)
    u = [int(lo) | (int(hi) << 32) for lo, hi in w]
    return np.array([x - (1 << 64) if x >= (1 << 63) else x for x in u], dtype=np.int64)


@dataclasses.dataclass(eq=False)
class HwEntry:
    """One entry of the hardware cache.

    Attributes
    ----------
    center : numpy.ndarray of int64, shape (d,)
        Input codes ``c``.
    bound : int
        ``R``: codes ``q`` hit iff ``distance(q, c, metric) <= R``.
    metric : str
    layer : pwlnet.artifact.Layer
        The affine piece from input codes to output codes (``activation == "none"``).
    radius : float
        The float safe radius in code units ``R`` came from (host side only; ``nan``
        when unknown, for example after :meth:`from_words`).
    pattern : tuple of numpy.ndarray of bool
        The float network's ReLU pattern at ``c`` (host side only, for verification).
    region_bound : int
        The bound the safe radius alone gives, before the tie guard shrank it to
        :attr:`bound` (host side only; ``-1`` when unknown).
    """

    center: np.ndarray
    bound: int
    metric: str
    layer: Layer
    radius: float = float("nan")
    pattern: tuple = ()
    region_bound: int = -1

    def __post_init__(self):
        self.center = np.asarray(self.center, dtype=np.int64).reshape(-1)
        check_metric(self.metric)
        self.bound = int(self.bound)
        if self.bound < 0:
            raise EntryError(f"bound must be >= 0, not {self.bound}")
        if self.layer.n_in != self.center.size:
            raise EntryError(f"the entry's layer takes {self.layer.n_in} inputs but the center has "
                             f"{self.center.size} codes")
        if self.layer.activation != "none":
            raise EntryError(f"the entry's layer must have no activation, not {self.layer.activation!r}")
        if np.any(fx.wraps(self.center, self.layer.in_bits)):
            raise EntryError(f"center codes {self.center.tolist()} do not fit {self.layer.in_bits} bits")

    @property
    def dim(self) -> int:
        return int(self.center.size)

    def hits(self, codes):
        """Whether each code vector (``(d,)`` or ``(N, d)``) is within the bound."""
        return distance(codes, self.center, self.metric) <= self.bound

    def evaluate(self, codes):
        """Output codes of the entry's layer for input codes ``(N, d)``."""
        return golden.layer_forward(self.layer, np.atleast_2d(np.asarray(codes, dtype=np.int64)))[1]

    def to_words(self) -> np.ndarray:
        """The "write entry" payload: ``uint32`` words in the layout of the module docs."""
        l = self.layer
        if self.dim >= (1 << 16) or l.n_out >= (1 << 16):
            raise EntryError(f"d = {self.dim} and n_out = {l.n_out} must be below 65536")
        if l.acc_bits > 64:  # pragma: no cover - the golden model caps widths at 62 bits
            raise EntryError(f"acc_bits {l.acc_bits} does not fit the 64-bit bias field")
        words = [MAGIC,
                 WORD_VERSION | (CACHE_METRIC_CODES[self.metric] << 8) | (_REQUANT_CODE[l.requant] << 16),
                 self.dim | (l.n_out << 16),
                 l.in_bits | (l.weight_bits << 8) | (l.out_bits << 16) | (l.acc_bits << 24)]
        words += _wide64([self.bound])
        words += _signed32(self.center, "a center code")
        words += _signed32(l.weight, "a weight")
        words += _wide64(l.bias)
        words += _signed32(l.multiplier, "a multiplier")
        words += _signed32(l.shift, "a shift")
        return np.array(words, dtype=np.uint32)

    @classmethod
    def from_words(cls, words, *, out_scale=1.0, name="cache_entry") -> "HwEntry":
        """Decode :meth:`to_words`; ``out_scale`` (not in the payload) labels the output codes.

        Raises
        ------
        EntryError
            On a wrong magic word, version, length or an out-of-range field.
        """
        w = np.asarray(words, dtype=np.int64).reshape(-1)
        if w.size < _HEADER_WORDS:
            raise EntryError(f"an entry needs at least {_HEADER_WORDS} words, got {w.size}")
        if np.any(w < 0) or np.any(w > 0xFFFFFFFF):
            raise EntryError("entry words must be unsigned 32-bit values")
        if w[0] != MAGIC:
            raise EntryError(f"word 0 is {int(w[0]):#010x}, not the entry magic {MAGIC:#010x}")
        version, mcode, rcode = int(w[1]) & 0xFF, (int(w[1]) >> 8) & 0xFF, (int(w[1]) >> 16) & 0xFF
        if version != WORD_VERSION:
            raise EntryError(f"entry layout version {version} is not supported (this pwlnet reads {WORD_VERSION})")
        metrics = {v: k for k, v in CACHE_METRIC_CODES.items()}
        requants = {v: k for k, v in _REQUANT_CODE.items()}
        if mcode not in metrics or rcode not in requants:
            raise EntryError(f"word 1 holds metric code {mcode} and requant code {rcode}; "
                             f"allowed are {sorted(metrics)} and {sorted(requants)}")
        d, n_out = int(w[2]) & 0xFFFF, int(w[2]) >> 16
        in_bits, weight_bits = int(w[3]) & 0xFF, (int(w[3]) >> 8) & 0xFF
        out_bits, acc_bits = (int(w[3]) >> 16) & 0xFF, int(w[3]) >> 24
        need = _HEADER_WORDS + d + n_out * (d + 4)
        if w.size != need:
            raise EntryError(f"an entry with d = {d} and n_out = {n_out} has {need} words, not {w.size}")
        try:
            for what, bits in (("in_bits", in_bits), ("weight_bits", weight_bits), ("out_bits", out_bits)):
                fx.check_bits(bits, what)
        except ValueError as e:
            raise EntryError(str(e)) from None
        pos = 4
        bound = int(_from64(w[pos:pos + 2])[0])
        pos += 2
        center = _from32(w[pos:pos + d])
        pos += d
        weight = _from32(w[pos:pos + n_out * d]).reshape(n_out, d)
        pos += n_out * d
        bias = _from64(w[pos:pos + 2 * n_out])
        pos += 2 * n_out
        mult = w[pos:pos + n_out].copy()
        pos += n_out
        shift = w[pos:pos + n_out].copy()
        if np.any(fx.wraps(weight, weight_bits)):
            raise EntryError(f"a weight does not fit {weight_bits} bits")
        if acc_bits < fx.accumulator_bits(weight, bias, in_bits):
            raise EntryError(f"acc_bits {acc_bits} cannot hold the worst case of these weights and biases")
        if np.any(mult < 1) or np.any(shift > fx.GOLDEN_MAX_BITS):
            raise EntryError(f"multipliers must be >= 1 and shifts at most {fx.GOLDEN_MAX_BITS}")
        layer = Layer(weight=weight, bias=bias, multiplier=mult, shift=shift, weight_bits=weight_bits,
                      in_bits=in_bits, out_bits=out_bits, acc_bits=acc_bits, activation="none",
                      out_scale=float(out_scale), requant=requants[rcode], name=name)
        return cls(center=center, bound=bound, metric=metrics[mcode], layer=layer)


def code_blocks(model: CompiledModel, net) -> list:
    """The float network reading ``model``'s input codes, as blocks.

    ``net`` is the :class:`pwlnet.ir.Network` the model was compiled from (its input
    quantizer is folded in), or blocks that already read codes (returned as they are).
    """
    if isinstance(net, (list, tuple)):
        return regions.as_blocks(net)
    blocks = code_space_blocks(net, model.input_scale, model.input_zero_point)
    return regions.as_blocks(blocks)


def make_entry(model: CompiledModel, blocks, codes, metric, *, margin=DEFAULT_MARGIN,
               weight_bits=None, tie_guard=True) -> HwEntry:
    """The entry centred on input codes ``codes``, as the host computes it on a miss.

    Parameters
    ----------
    model : CompiledModel
        Gives the code widths, the output scale and the requantization mode.
    blocks : list
        The float network in code space (:func:`code_blocks`).
    codes : array_like of int, shape (d,)
    metric : {"l2", "linf", "l1"}
    margin : float
        See :func:`radius_bound`.
    weight_bits : int, optional
        Width of the entry's weights; the model's widest by default (the engine's
        weight memory width).
    tie_guard : bool or pwlnet.tie_guard.FullNetworkBound
        Shrink the bound so that no hit can answer with another arg-max than the full
        network (:mod:`pwlnet.tie_guard`); pass a prepared ``FullNetworkBound`` to
        save rebuilding it for every entry, or ``False`` for the safe radius alone.

    Raises
    ------
    EntryError
        If the affine piece cannot be quantized at the model's output scale (for
        example a slope of more than ``2**(weight_bits-1)`` output codes per input code
        in shift mode), or if the entry would answer its own center with another
        arg-max than the full network (a tie at the center); the host then leaves the
        input uncached.
    """
    check_metric(metric)
    c = np.asarray(codes, dtype=np.int64).reshape(-1)
    if c.size != model.input_dim:
        raise EntryError(f"center has {c.size} codes; the model takes {model.input_dim}")
    lin = regions.linearize(blocks, c.astype(np.float64))
    last = model.layers[-1]
    wb = model.weight_bits if weight_bits is None else fx.check_bits(weight_bits, "weight bits")
    mb = int(last.multiplier.max()).bit_length() if last.requant == "multiply" else 8
    try:
        layer = quantize_dense(lin.W, lin.b, 1.0, model.output_scale, weight_bits=wb,
                               act_bits=model.input_bits, requant=last.requant, multiplier_bits=mb,
                               activation="none", name="cache_entry",
                               where=f"cache entry at codes {c.tolist()}")
    except QuantizeError as e:
        raise EntryError(str(e)) from None
    layer = dataclasses.replace(layer, out_bits=last.out_bits)
    region_bound = radius_bound(lin.radii[metric], metric, dim=c.size, bits=model.input_bits, margin=margin)
    bound = region_bound
    if tie_guard is not False:
        full = tie_guard if isinstance(tie_guard, FullNetworkBound) else FullNetworkBound(model, blocks)
        bound = guarded_bound(full, lin, layer, region_bound, metric)
        if bound is None:
            raise EntryError(f"cache entry at codes {c.tolist()}: the entry's answer at its own center has "
                             f"another arg-max than the full network (a near-tie); left uncached")
    return HwEntry(center=c, bound=bound, metric=metric, layer=layer, radius=lin.radii[metric],
                   pattern=lin.pattern, region_bound=region_bound)


@dataclasses.dataclass
class Lookup:
    """Result of :meth:`HwCache.lookup` for ``N`` code vectors.

    ``hit`` (bool), ``slot`` (the hitting slot, ``-1`` on a miss) and ``outputs``
    (output codes, from the entry on a hit and from :func:`pwlnet.golden.forward` on a miss).
    """

    hit: np.ndarray
    slot: np.ndarray
    outputs: np.ndarray


class HwCache:
    """Golden model of the comparator bank and its engine.

    Parameters
    ----------
    model : CompiledModel
        The full network, run on a miss.
    n_entries : int
        Slots.
    metric : {"l2", "linf", "l1"}
        The bank's distance; every entry must use it.

    Notes
    -----
    A lookup compares the codes with every valid slot; the lowest-index slot that hits
    wins (priority encoder).  :meth:`clear` invalidates all slots and leaves the hit and
    miss counters alone (the host reads and resets them with its own commands:
    :attr:`hits`, :attr:`misses`, :meth:`reset_counters`).
    """

    def __init__(self, model: CompiledModel, n_entries: int, metric: str):
        if isinstance(n_entries, bool) or not isinstance(n_entries, (int, np.integer)) or n_entries < 1:
            raise ValueError(f"n_entries must be a positive integer, not {n_entries!r}")
        self.model = model
        self.n_entries = int(n_entries)
        self.metric = check_metric(metric)
        self.entries = [None] * self.n_entries
        self.hits = 0
        self.misses = 0

    @property
    def valid(self) -> np.ndarray:
        """Which slots hold an entry."""
        return np.array([e is not None for e in self.entries])

    def _check_slot(self, slot):
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.n_entries:
            raise IndexError(f"slot must be an integer in 0..{self.n_entries - 1}, not {slot!r}")
        return int(slot)

    def write_entry(self, slot, entry: HwEntry):
        """Store ``entry`` in ``slot`` (replacing whatever was there)."""
        slot = self._check_slot(slot)
        m = self.model
        if entry.metric != self.metric:
            raise EntryError(f"entry metric {entry.metric!r} differs from the cache's {self.metric!r}")
        l = entry.layer
        if (entry.dim, l.n_out, l.in_bits, l.out_bits) != (m.input_dim, m.output_dim, m.input_bits,
                                                           m.layers[-1].out_bits):
            raise EntryError(f"entry shape (d={entry.dim}, n_out={l.n_out}, in_bits={l.in_bits}, "
                             f"out_bits={l.out_bits}) does not match the model (d={m.input_dim}, "
                             f"n_out={m.output_dim}, in_bits={m.input_bits}, "
                             f"out_bits={m.layers[-1].out_bits})")
        self.entries[slot] = entry

    def invalidate(self, slot):
        """Empty one slot."""
        self.entries[self._check_slot(slot)] = None

    def clear(self):
        """Empty every slot (counters unchanged)."""
        self.entries = [None] * self.n_entries

    def reset_counters(self):
        """Set the hit and miss counters to zero."""
        self.hits = 0
        self.misses = 0

    def match(self, codes):
        """The slot each code vector hits (``-1`` for none), without counting or evaluating."""
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        slot = np.full(len(codes), -1, dtype=np.int64)
        # Walk from the highest slot down so that the lowest hitting slot is written last.
        for s in range(self.n_entries - 1, -1, -1):
            e = self.entries[s]
            if e is not None:
                slot[e.hits(codes)] = s
        return slot

    def lookup(self, codes) -> Lookup:
        """Look up input codes (``(d,)`` or ``(N, d)``) and produce their output codes."""
        codes = np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer):
            raise golden.InputError(f"input codes must be integers, not {codes.dtype}")
        codes = np.atleast_2d(codes.astype(np.int64))
        if codes.ndim != 2 or codes.shape[1] != self.model.input_dim:
            raise golden.InputError(f"input codes have shape {codes.shape}; expected (N, {self.model.input_dim})")
        if np.any(fx.wraps(codes, self.model.input_bits)):
            lo, hi = fx.signed_range(self.model.input_bits)
            raise golden.InputError(f"input codes outside the {self.model.input_bits}-bit range [{lo}, {hi}]")
        slot = self.match(codes)
        hit = slot >= 0
        out = np.zeros((len(codes), self.model.output_dim), dtype=np.int64)
        for s in np.unique(slot[hit]):
            sel = slot == s
            out[sel] = self.entries[s].evaluate(codes[sel])
        if np.any(~hit):
            out[~hit] = golden.forward(self.model, codes[~hit])
        self.hits += int(hit.sum())
        self.misses += int((~hit).sum())
        return Lookup(hit=hit, slot=slot, outputs=out)
