"""How one hypersphere-cache slot is stored in the cached engine, and what fits in it.

Layer: hardware generators.  The slot is one of the engine's own one-layer programs, so
its weight words and channel parameters follow the engine plan's rules
(:func:`pwlnet.hw.engine.plan.pack_weight_words`,
:func:`pwlnet.hw.engine.plan.requant_offset`); its image is the payload of the host
link's CACHE_WRITE command after the slot byte (field widths by
:func:`pwlnet.protocol.code_bytes` and :func:`pwlnet.protocol.field_bytes`).  The integer
entries it stores are :class:`pwlnet.code_cache.HwEntry`.
"""

from __future__ import annotations

import numpy as np

from pwlnet import fixedpoint as fx
from pwlnet.artifact import CompiledModel, Layer
from pwlnet.code_cache import EntryError, HwEntry, check_metric, distance_bits, max_distance
from pwlnet.protocol import code_bytes, field_bytes

from .engine.plan import pack_weight_words, requant_offset

__all__ = ["SlotFormat"]


class SlotFormat:
    """How one cache slot is stored in the engine built with the cache, and what fits in it.

    The engine (:class:`pwlnet.hw.cached_engine.CachedEngine`) keeps every slot's affine
    map as a one-layer program: ``G = ceil(n_out / P)`` passes of ``d`` weight words of
    ``P`` packed weights, and one ``(off, mult, shift)`` parameter triple per output
    channel, with ``off = bias * mult + 2**(shift - 1)`` (``0`` when ``shift == 0``),
    exactly as the engine stores the network's own layers.  The widths are fixed when the
    bitstream is built, so an entry fits only if

    * its weights fit ``weight_bits`` (always true for :func:`pwlnet.code_cache.make_entry`),
    * every ``off`` fits :attr:`off_bits` (signed): ``|bias|`` may be up to about the
      largest ``|W x|`` of the slot,
    * every multiplier is below ``2**mult_bits`` and every shift lies in
      :attr:`min_shift` .. :attr:`max_shift` (about the range of the network's own
      shifts, so the slots cost the engine's shifter and saturation little extra width).

    An entry that does not fit is left uncached by the host
    (:func:`pwlnet.cache_host.run_stream` with ``slot_format``), so the golden model and
    the hardware agree on which entries exist.

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
        self.metric = check_metric(metric)
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
        self.code_bytes = code_bytes(self.in_bits)
        self.word_bytes = field_bytes(self.word_bits)
        self.off_bytes = field_bytes(self.off_bits)
        self.mult_bytes = field_bytes(self.mult_bits) if self.mult_bits else 0
        self.bound_bytes = field_bytes(self.distance_bits)
        self.param_bytes = self.off_bytes + self.mult_bytes + 1
        self.image_bytes = (self.weight_words * self.word_bytes + self.n_out * self.param_bytes
                            + self.bound_bytes + d * self.code_bytes)

    def __repr__(self):
        return (f"SlotFormat(d={self.dim}, n_out={self.n_out}, lanes={self.lanes}, metric={self.metric!r}, "
                f"image_bytes={self.image_bytes})")

    def offsets(self, layer: Layer) -> list:
        """``off = bias * mult + 2**(shift - 1)`` per output channel (Python ints,
        :func:`~pwlnet.hw.engine.plan.requant_offset`)."""
        return [requant_offset(b, mu, s) for b, mu, s in zip(layer.bias, layer.multiplier, layer.shift)]

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
        """The slot's weight words (unsigned ints), in the engine's order
        (:func:`~pwlnet.hw.engine.plan.pack_weight_words`)."""
        return pack_weight_words(layer.weight, self.lanes, self.weight_bits)

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
