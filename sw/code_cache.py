"""The hardware hypersphere cache, bit-exact: entries, lookup and the host's streaming loop.

This module is the specification of the comparator bank: the RTL must declare the same
hits, pick the same slot and return the same output codes as :class:`HwCache`.

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
:func:`pwlnet.golden.forward` by a few codes.  :func:`run_stream` measures that.  Near a
tie between two classes that could change the arg-max, so by default :func:`make_entry`
applies the tie guard (:mod:`pwlnet.tie_guard`): it shrinks ``R`` until both answers
provably have the same arg-max everywhere in the ball.  An input the guard turns away
is a miss like any other, in the hardware too (which only ever sees ``R``).

Entry words (:meth:`HwEntry.to_words`), the payload of the host link's "write entry"
command (the command itself carries the slot).  All words are 32-bit, sent as unsigned;
signed fields are two's complement; 64-bit fields take two words, low word first:

======================  =====================================================
word                    field
======================  =====================================================
0                       :data:`MAGIC` ``0x70774345`` (ASCII ``pwCE``)
1                       bits 0-7 :data:`WORD_VERSION`, 8-15 metric
                        (0 ``l2``, 1 ``linf``, 2 ``l1``), 16-23 requant
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
from .quantize import QuantizeError, code_space_blocks, quantize_dense
from .tie_guard import FullNetworkBound, guarded_bound

__all__ = ["METRICS", "POLICIES", "MAGIC", "WORD_VERSION", "DEFAULT_MARGIN", "EntryError",
           "distance", "max_distance", "distance_bits", "radius_bound", "HwEntry", "code_blocks", "make_entry",
           "SlotFormat", "Lookup", "HwCache", "CacheHost", "StreamResult", "run_stream", "preload"]

#: Metrics of the comparator bank.
METRICS = regions.METRICS
#: Slot choice of :func:`run_stream` on a miss.
POLICIES = ("round_robin", "lru")
#: First word of every entry payload.
MAGIC = 0x70774345
#: Layout version of the entry payload.
WORD_VERSION = 1
#: Default relative shrink of the float radius before it is rounded to an integer bound.
DEFAULT_MARGIN = 1e-6

_METRIC_CODE = {"l2": 0, "linf": 1, "l1": 2}
_REQUANT_CODE = {"shift": 0, "multiply": 1}
_HEADER_WORDS = 6


class EntryError(ValueError):
    """An entry that cannot be made, stored or decoded."""


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    return metric


def distance(codes, center, metric):
    """Integer distance between code vectors (last axis), as the comparator computes it.

    ``linf``: ``max |q - c|``; ``l2``: ``sum (q - c)**2`` (squared); ``l1``: ``sum |q - c|``.
    Returns int64.
    """
    _check_metric(metric)
    diff = np.asarray(codes, dtype=np.int64) - np.asarray(center, dtype=np.int64)
    if metric == "linf":
        return np.abs(diff).max(axis=-1)
    if metric == "l1":
        return np.abs(diff).sum(axis=-1)
    return (diff * diff).sum(axis=-1)


def max_distance(metric, dim, bits) -> int:
    """Largest :func:`distance` between two ``bits``-wide code vectors of length ``dim``."""
    _check_metric(metric)
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
    _check_metric(metric)
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
        _check_metric(self.metric)
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
                 WORD_VERSION | (_METRIC_CODE[self.metric] << 8) | (_REQUANT_CODE[l.requant] << 16),
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
        metrics = {v: k for k, v in _METRIC_CODE.items()}
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
    _check_metric(metric)
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


def _bytes_for(bits) -> int:
    return max(1, -(-int(bits) // 8))


class SlotFormat:
    """How one cache slot is stored in the engine built with the cache, and what fits in it.

    The engine (:class:`pwlnet.hw.cached_engine.CachedEngine`) keeps every slot's affine
    map as a one-layer program: ``G = ceil(n_out / P)`` passes of ``d`` weight words of
    ``P`` packed weights, and one ``(off, mult, shift)`` parameter triple per output
    channel, with ``off = bias * mult + 2**(shift - 1)`` (``0`` when ``shift == 0``),
    exactly as the engine stores the network's own layers.  The widths are fixed when the
    bitstream is built, so an entry fits only if

    * its weights fit ``weight_bits`` (always true for :func:`make_entry`),
    * every ``off`` fits :attr:`off_bits` (signed): ``|bias|`` may be up to about the
      largest ``|W x|`` of the slot,
    * every multiplier is below ``2**mult_bits`` and every shift lies in
      :attr:`min_shift` .. :attr:`max_shift` (about the range of the network's own
      shifts, so the slots cost the engine's shifter and saturation little extra width).

    An entry that does not fit is left uncached by the host (:func:`run_stream` with
    ``slot_format``), so the golden model and the hardware agree on which entries exist.

    Entry image (:meth:`image`): the payload of the host link's "cache write" command after
    its slot byte, and what the cached engine's write port takes, byte by byte, all fields
    little-endian, signed ones in two's complement:

    =====================  ==========================================================
    field                  bytes
    =====================  ==========================================================
    weight words           ``G * d`` words of :attr:`word_bytes` (lane ``p`` in bits
                           ``p * wb .. p * wb + wb - 1``; pass ``g`` outer, input ``i``
                           inner)
    channel parameters     ``n_out`` times: ``off`` (:attr:`off_bytes`), ``mult``
                           (:attr:`mult_bytes`, absent without multipliers), ``shift``
                           (1 byte)
    bound                  ``R`` (:attr:`bound_bytes`)
    center                 ``d`` codes of :attr:`code_bytes`
    =====================  ==========================================================

    The center comes last because the comparator bank marks the slot valid with the last
    center code: everything the slot needs is in place when it can first hit.

    Parameters
    ----------
    model : CompiledModel
    lanes : int
        Engine lanes ``P``.
    metric : {"l2", "linf", "l1"}
    """

    def __init__(self, model: CompiledModel, lanes: int, metric: str):
        if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self.metric = _check_metric(metric)
        self.lanes = P = int(lanes)
        last = model.layers[-1]
        self.dim = d = model.input_dim
        self.n_out = model.output_dim
        self.in_bits = model.input_bits
        self.out_bits = last.out_bits
        self.weight_bits = wb = max(l.weight_bits for l in model.layers)
        self.requant = last.requant
        self.passes = -(-self.n_out // P)
        self.weight_words = self.passes * d
        self.word_bits = P * wb
        # |W x| <= d * 2**(wb-1) * 2**(in_bits-1): the lane accumulators' reach for a slot.
        reach = d << (wb - 1) << (self.in_bits - 1)
        self.wx_bits = fx.signed_width(-reach, reach)
        # The multiplier width make_entry uses (the network's last layer's), none in shift mode.
        self.mult_bits = int(last.multiplier.max()).bit_length() if last.requant == "multiply" else 0
        # |bias| up to about the largest |W x|: off = bias * mult + 2**(shift-1).
        self.off_bits = self.wx_bits + max(1, self.mult_bits)
        # Shifts within the range the network's own layers already need, so the engine's
        # shifter and saturation keep their widths (a slot with shift 0 would make the
        # shifted value as wide as the product).
        shifts = np.concatenate([np.asarray(l.shift, dtype=np.int64).reshape(-1) for l in model.layers])
        # Four below the network's smallest: a slot's slope may exceed every layer's a
        # little (costs four bits of the shifted value's width).
        self.min_shift = max(0, int(shifts.min()) - 4)
        self.shift_bits = max(1, int(shifts.max()).bit_length())
        self.max_shift = min((1 << self.shift_bits) - 1, fx.GOLDEN_MAX_BITS)
        self.distance_bits = distance_bits(metric, d, self.in_bits)
        self.code_bytes = 1 if self.in_bits <= 8 else 2
        self.word_bytes = _bytes_for(self.word_bits)
        self.off_bytes = _bytes_for(self.off_bits)
        self.mult_bytes = _bytes_for(self.mult_bits) if self.mult_bits else 0
        self.bound_bytes = _bytes_for(self.distance_bits)
        self.param_bytes = self.off_bytes + self.mult_bytes + 1
        self.image_bytes = (self.weight_words * self.word_bytes + self.n_out * self.param_bytes
                            + self.bound_bytes + d * self.code_bytes)

    def __repr__(self):
        return (f"SlotFormat(d={self.dim}, n_out={self.n_out}, lanes={self.lanes}, metric={self.metric!r}, "
                f"image_bytes={self.image_bytes})")

    def offsets(self, layer: Layer) -> list:
        """``off = bias * mult + 2**(shift - 1)`` per output channel (Python ints)."""
        return [int(b) * int(mu) + ((1 << (int(s) - 1)) if s else 0)
                for b, mu, s in zip(layer.bias, layer.multiplier, layer.shift)]

    def check(self, entry: HwEntry):
        """Raise :class:`EntryError` naming the field if ``entry`` does not fit a slot."""
        l = entry.layer
        if entry.metric != self.metric:
            raise EntryError(f"entry metric {entry.metric!r} differs from the slots' {self.metric!r}")
        if (entry.dim, l.n_out, l.in_bits, l.out_bits) != (self.dim, self.n_out, self.in_bits, self.out_bits):
            raise EntryError(f"entry shape (d={entry.dim}, n_out={l.n_out}, in_bits={l.in_bits}, "
                             f"out_bits={l.out_bits}) does not match the slots (d={self.dim}, n_out={self.n_out}, "
                             f"in_bits={self.in_bits}, out_bits={self.out_bits})")
        if l.requant != self.requant:
            raise EntryError(f"entry requantization {l.requant!r} differs from the slots' {self.requant!r}")
        if np.any(fx.wraps(l.weight, self.weight_bits)):
            raise EntryError(f"a weight of the entry does not fit the engine's {self.weight_bits}-bit weights")
        if entry.bound > max_distance(self.metric, self.dim, self.in_bits):
            raise EntryError(f"bound {entry.bound} exceeds the largest distance "
                             f"{max_distance(self.metric, self.dim, self.in_bits)}")
        mult_cap = (1 << self.mult_bits) - 1 if self.mult_bits else 1
        bad = np.flatnonzero((l.multiplier < 1) | (l.multiplier > mult_cap))
        if bad.size:
            raise EntryError(f"channel {int(bad[0])}: multiplier {int(l.multiplier[bad[0]])} is outside "
                             f"1..{mult_cap}, the slots' multiplier range")
        bad = np.flatnonzero((l.shift < self.min_shift) | (l.shift > self.max_shift))
        if bad.size:
            raise EntryError(f"channel {int(bad[0])}: shift {int(l.shift[bad[0]])} is outside "
                             f"{self.min_shift}..{self.max_shift}, the slots' shift range")
        lo, hi = fx.signed_range(self.off_bits)
        for o, off in enumerate(self.offsets(l)):
            if not lo <= off <= hi:
                raise EntryError(f"channel {o}: bias {int(l.bias[o])} gives the offset {off}, which does not fit "
                                 f"the slots' {self.off_bits}-bit offset (bias too large for the entry's weights)")

    def fits(self, entry: HwEntry) -> bool:
        """Whether :meth:`check` accepts ``entry``."""
        try:
            self.check(entry)
        except EntryError:
            return False
        return True

    def words(self, layer: Layer) -> list:
        """The slot's weight words (unsigned ints), in the engine's order."""
        P, wb = self.lanes, self.weight_bits
        mask = (1 << wb) - 1
        out = []
        for g in range(self.passes):
            for i in range(self.dim):
                word = 0
                for p in range(P):
                    o = g * P + p
                    if o < self.n_out:
                        word |= (int(layer.weight[o, i]) & mask) << (p * wb)
                out.append(word)
        return out

    def image(self, entry: HwEntry) -> bytes:
        """The entry as the bytes a slot write carries (layout in the class docs)."""
        self.check(entry)
        l = entry.layer

        def le(v, n):
            return (int(v) & ((1 << (8 * n)) - 1)).to_bytes(n, "little")

        buf = bytearray()
        for w in self.words(l):
            buf += le(w, self.word_bytes)
        for off, mu, s in zip(self.offsets(l), l.multiplier, l.shift):
            buf += le(off, self.off_bytes)
            if self.mult_bytes:
                buf += le(mu, self.mult_bytes)
            buf += le(s, 1)
        buf += le(entry.bound, self.bound_bytes)
        for c in entry.center:
            buf += le(c, self.code_bytes)
        assert len(buf) == self.image_bytes
        return bytes(buf)


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
        self.metric = _check_metric(metric)
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
        The float network in code space (:func:`code_blocks`).
    n_entries : int
    metric : str
    policy : {"round_robin", "lru"}
    margin : float
    slot_format : SlotFormat, optional
        Entries that do not fit it are not written (the input stays uncached).
    tie_guard : bool
        Apply the tie guard to every entry (:func:`make_entry`).
    """

    def __init__(self, model, blocks, n_entries, metric, policy="round_robin", *, margin=DEFAULT_MARGIN,
                 slot_format: SlotFormat | None = None, tie_guard: bool = True):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.model, self.blocks, self.metric, self.policy = model, blocks, _check_metric(metric), policy
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
               slot_format: SlotFormat | None = None, tie_guard: bool = True) -> StreamResult:
    """Run input codes through the cache in order, filling entries on misses as the host would.

    On every miss the host linearizes the float network at the missed codes
    (:func:`make_entry`) and writes the entry into a slot chosen by ``policy``
    (:class:`CacheHost`).

    Parameters
    ----------
    model : CompiledModel
    net : pwlnet.ir.Network or list
        The float network ``model`` was compiled from, or its code-space blocks
        (:func:`code_blocks`).
    codes_stream : array_like of int, shape (N, d)
    n_entries : int
    metric : {"l2", "linf", "l1"}
    policy : {"round_robin", "lru"}
    margin : float
        See :func:`radius_bound`.
    verify : bool
        Check every hit's float pattern (:attr:`StreamResult.false_hit`).
    cache : HwCache, optional
        Start from this cache (its entries and counters) instead of an empty one.
    slot_format : SlotFormat, optional
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
    list of HwEntry
        In the order taken (write them to slots 0, 1, ...).
    """
    if isinstance(n_entries, bool) or not isinstance(n_entries, (int, np.integer)) or n_entries < 1:
        raise ValueError(f"n_entries must be a positive integer, not {n_entries!r}")
    _check_metric(metric)
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
