"""LERP activation unit: per-channel table look-up with linear interpolation, II = 1.

Computes exactly :func:`pwlnet.fixedpoint.lerp` for one code per cycle::

    u = code + 2**(bits-1);  i = u >> f;  r = u & (2**f - 1)          (f = bits - k)
    out = T[i] + round_shift((T[i+1] - T[i]) * r, f)

Table layout (why two banks and an end ROM)
-------------------------------------------
Every result needs two neighbouring entries ``T[i]`` and ``T[i+1]`` in the same cycle.
Storing both per address (two copies, or ``(T[i], T[i+1] - T[i])`` pairs) doubles the
table memory; on the iCE40UP5K the EBR is the scarcer resource (30 blocks, shared with
the engine's buffers and weights), so each entry is stored once instead:

* bank ``E`` holds the even entries ``T[0], T[2], ..., T[2**k - 2]``,
* bank ``O`` holds the odd entries ``T[1], T[3], ..., T[2**k - 1]``,
* the *end* ROM holds ``T[2**k]``, one word per channel.

Each bank has ``2**(k-1)`` words per channel at address ``channel * 2**(k-1) + j``, a
bit concatenation (no adder, and no unused words for any channel count).  For an even
``i`` the pair is ``(E[i/2], O[i/2])``, for an odd ``i`` it is ``(O[(i-1)/2],
E[(i+1)/2])``, and for the last segment ``i = 2**k - 1`` the upper entry comes from the
end ROM.  The only cost is a ``(k-1)``-bit increment on ``E``'s address.  A 64-channel
6/2 table of 8-bit codes is then two 2048 x 8 banks (4 EBR each) and a 64 x 8 end ROM
(LUTs): 8 EBR, where two copies would take 16 and pairs 17 bits x 4096.  With ``k = 0``
there is no ``O`` bank (``T[0]`` in ``E``, ``T[1]`` in the end ROM).

Pipeline (``latency`` cycles from the cycle a beat is taken to the cycle it is on ``o``)
--------------------------------------------------------------------------------------
1. table read: the memories' registered read ports (addresses come straight from the
   input payload: the sign-bit flip is free and the increment is ``k - 1`` bits);
2. select ``T[i]`` and ``T[i+1]`` among the bank outputs (LUTs only: no carry chain right
   after the memory's clock-to-output delay);
3. ``d = T[i+1] - T[i]`` (``bits + 1`` bits);
4. ``T[i] * 2**f + 2**(f-1) + d * r`` then ``>> f``: on ``"ice40"`` a tree of registered
   adders over the ``f`` partial products ``d * 2**j`` (gated by the bits of ``r``) and
   the term ``T[i] * 2**f + 2**(f-1)`` (a bit concatenation), ``ceil(log2(f + 1))``
   levels, kept in LUTs because the engine's lanes use all eight DSPs; on
   ``"generic"`` one ``*`` (which a tool may map to a DSP) followed by registers up to the
   same latency.  Both targets have the same latency and results.

So ``latency = 3 + ceil(log2(f + 1))`` (5 for the 6/2 split, 6 for 4/4); with ``f = 0``
the output is ``T[i]`` after stage 2 (``latency = 2``).  The adders work modulo
``2**(bits + f)``: the final sum always fits that width (the result lies between
``T[i]`` and ``T[i+1]``), so the wrap-around of partial sums cancels exactly.  For the
same reason the saturation of :func:`~pwlnet.fixedpoint.lerp` never acts and is not
built.

Flow control
------------
``backpressure=True`` (default): the whole pipeline (and the memories' read enables)
advances only when the output register is empty or being taken:
``en = ~o.valid | o.ready`` and ``i.ready = en``.  ``i.ready`` thus depends on
``o.ready`` through one gate, and ``o.valid`` never depends on ``o.ready``.
``backpressure=False``: both streams are ``always_ready``; the unit accepts a beat every
cycle and the consumer must take every result.  This is the mode for the MLP engine,
whose requantization pipeline never stalls: no enable logic at all.  (Amaranth makes the
``ready`` of an always-ready stream a constant, which cannot be a top-level port, so
such a unit is converted to Verilog as part of its parent, never on its own.)
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from pwlnet import fixedpoint as fx

from .params import check_int, check_target

__all__ = ["LerpUnit", "STORAGES", "LUT_ROM_MAX_BITS", "lerp_latency", "bank_images"]

#: Implementations a :class:`LerpUnit` can be built for.
#: Table storage choices: ``"auto"`` puts a bank in LUTs when it holds at most
#: :data:`LUT_ROM_MAX_BITS` bits, else in block RAM.
STORAGES = ("auto", "ebr", "lut")
#: Largest bank (in bits) that ``storage="auto"`` builds as a LUT ROM.  yosys packs about
#: 6-7 ROM bits into a LUT4 (a 16-channel 4/4 unit: ~340 LUTs for its 2176 table bits),
#: and one of the UP5K's 30 EBR is worth about 5280 / 30 = 176 of its LUTs, so a bank
#: much above 512 bits is cheaper as a block (which it would not even half fill).
LUT_ROM_MAX_BITS = 512


def lerp_latency(bits, index_bits):
    """Pipeline latency of a :class:`LerpUnit` with this split (see the module docstring)."""
    f = bits - index_bits
    return 2 if f == 0 else 3 + ceil_log2(f + 1)


def bank_images(tables, index_bits):
    """The memory images ``(even, odd, end)`` of a table array (lists of ints).

    ``even[c * 2**(k-1) + j] = T[c, 2j]``, ``odd[...] = T[c, 2j+1]``, ``end[c] = T[c, 2**k]``;
    with ``k = 0``, ``even[c] = T[c, 0]`` and ``odd`` is empty.
    """
    t = np.asarray(tables, dtype=np.int64)
    seg = 1 << index_bits
    if index_bits == 0:
        return [int(v) for v in t[:, 0]], [], [int(v) for v in t[:, 1]]
    even = t[:, 0:seg:2].reshape(-1)
    odd = t[:, 1:seg:2].reshape(-1)
    return [int(v) for v in even], [int(v) for v in odd], [int(v) for v in t[:, seg]]


def _check_tables(tables, channels, bits, index_bits):
    try:
        arr = np.asarray(tables)
    except (TypeError, ValueError):
        raise TypeError(f"tables must be an integer array, not {tables!r}") from None
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"tables must be an integer array, not an array of {arr.dtype}")
    arr = arr.astype(np.int64)
    want = (channels, (1 << index_bits) + 1)
    if arr.shape != want:
        raise ValueError(f"tables has shape {arr.shape}; expected {want} for {channels} channels "
                         f"and {index_bits} index bits")
    lo, hi = fx.signed_range(bits)
    bad = np.argwhere((arr < lo) | (arr > hi))
    if len(bad):
        c, j = (int(x) for x in bad[0])
        raise ValueError(f"tables[{c}, {j}] = {int(arr[c, j])} is outside the {bits}-bit range "
                         f"[{lo}, {hi}]")
    return arr


class LerpUnit(wiring.Component):
    """Pipelined per-channel LERP activation: bit-exact :func:`pwlnet.fixedpoint.lerp`.

    Parameters
    ----------
    channels : int
        Number of channels (tables), at least 1.
    bits : int
        Width of the input and output codes (2..16).
    index_bits : int
        ``k``, the segment-index width, ``0 <= k <= bits``; the fraction has
        ``f = bits - k`` bits.
    tables : array_like of int, shape (channels, 2**index_bits + 1)
        Output codes, each within the signed ``bits``-bit range.
    meta : int or shape-castable, optional
        Pass-through side data carried with every beat (e.g. the engine's destination
        address and flags): a width in bits (``0``, the default, carries nothing) or any
        shape, e.g. a :class:`~amaranth.lib.data.StructLayout`.
    target : str
        ``"generic"`` (multiply written as ``*``) or ``"ice40"`` (multiply as a tree of
        registered adders in LUTs: the UP5K's DSPs belong to the engine lanes).  Same
        latency and results.
    storage : str
        ``"ebr"`` (memories with registered read ports: block RAM), ``"lut"`` (LUT ROMs
        followed by a register, marked ``rom_style = "logic"`` for yosys), or ``"auto"``
        (per bank: LUTs up to :data:`LUT_ROM_MAX_BITS` bits, else block RAM).
    backpressure : bool
        ``True``: full valid/ready flow control (the pipeline stalls while the output
        is not taken).  ``False``: both streams are always ready (see the module
        docstring).

    Attributes
    ----------
    i : In(stream.Signature(StructLayout({"code": signed(bits), "channel": unsigned(ceil_log2(channels)), "meta": meta})))
        Input codes.  ``channel`` must be below ``channels``.
    o : Out(stream.Signature(StructLayout({"code": signed(bits), "meta": meta})))
        Results in input order, ``latency`` cycles after their input (without stalls).
    latency : int
        Cycles from taking a beat on ``i`` to presenting its result on ``o``.
    banks : dict
        Storage chosen for each bank: ``{"even": ..., "odd": ..., "end": ...}`` with values
        ``"ebr"`` or ``"lut"`` (``"odd"`` is ``None`` when ``index_bits == 0``).
    """

    def __init__(self, channels, bits, index_bits, tables, *, meta=0, target="generic",
                 storage="auto", backpressure=True):
        channels = check_int(channels, "channels", 1)
        bits = fx.check_bits(bits, "bits")
        index_bits = check_int(index_bits, "index_bits", 0, bits)
        self._tables = _check_tables(tables, channels, bits, index_bits)
        if isinstance(meta, bool):
            raise TypeError(f"meta must be a width or a shape, not {meta!r}")
        if isinstance(meta, (int, np.integer)):
            if meta < 0:
                raise ValueError(f"meta width must be at least 0, not {meta!r}")
            meta = unsigned(int(meta))
        else:
            try:
                Shape.cast(meta)
            except TypeError:
                raise TypeError(f"meta must be a width or a shape, not {meta!r}") from None
        check_target(target)
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, not {storage!r}")
        if not isinstance(backpressure, bool):
            raise TypeError(f"backpressure must be True or False, not {backpressure!r}")
        self._channels, self._bits, self._k = channels, bits, index_bits
        self._f = bits - index_bits
        self._meta = meta
        self._target, self._backpressure = target, backpressure
        self._images = dict(zip(("even", "odd", "end"), bank_images(self._tables, index_bits)))
        self._banks = {}
        for name, image in self._images.items():
            if not image:
                self._banks[name] = None
            elif storage == "auto":
                self._banks[name] = "lut" if len(image) * bits <= LUT_ROM_MAX_BITS else "ebr"
            else:
                self._banks[name] = storage
        ch_bits = ceil_log2(channels)
        in_layout = data.StructLayout({"code": signed(bits), "channel": unsigned(ch_bits), "meta": meta})
        out_layout = data.StructLayout({"code": signed(bits), "meta": meta})
        ar = not backpressure
        super().__init__({
            "i": In(stream.Signature(in_layout, always_ready=ar)),
            "o": Out(stream.Signature(out_layout, always_ready=ar)),
        })

    @property
    def channels(self):
        """Number of channels."""
        return self._channels

    @property
    def bits(self):
        """Width of the input and output codes."""
        return self._bits

    @property
    def index_bits(self):
        """Segment-index width ``k``."""
        return self._k

    @property
    def frac_bits(self):
        """Fraction width ``f = bits - index_bits``."""
        return self._f

    @property
    def latency(self):
        """Cycles from taking a beat on ``i`` to presenting its result on ``o`` (no stalls)."""
        return lerp_latency(self._bits, self._k)

    @property
    def banks(self):
        """Storage of each bank: ``"ebr"``, ``"lut"`` or ``None`` (bank absent)."""
        return dict(self._banks)

    @property
    def tables(self):
        """The tables, ``(channels, 2**index_bits + 1)`` int64 (a copy)."""
        return self._tables.copy()

    def elaborate(self, platform):
        m = Module()
        bits, k, f = self._bits, self._k, self._f
        ch_bits = ceil_log2(self._channels)
        seg_bits = max(k - 1, 0)

        # Global advance: with back-pressure every register (and each memory's read
        # enable) holds while a result waits on `o`; that costs only clock enables,
        # which the iCE40 flip-flops and EBR read ports have for free.
        if self._backpressure:
            en = Signal()
            m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        else:
            en = Const(1)

        pay = self.i.payload
        take = self.i.valid & en
        # Offset binary: adding 2**(bits-1) to a two's-complement code flips its sign bit.
        u = Cat(pay.code[:bits - 1], ~pay.code[bits - 1])
        idx = u[f:]
        frac = u[:f]
        if k == 0:
            odd, at_end, j = Const(0), Const(1), Const(0, 0)
            j_even = j
        else:
            odd = idx[0]
            at_end = idx == (1 << k) - 1
            j = idx[1:]
            # E[(i+1)/2] for odd i; at i = 2**k - 1 this wraps to 0 of the same channel,
            # whose word is replaced by the end ROM below.
            j_even = (j + odd)[:seg_bits]
        addr = {"even": Cat(j_even, pay.channel), "odd": Cat(j, pay.channel), "end": pay.channel}

        # ---- stage 1: table read ------------------------------------------------
        word = {}
        for name, image in self._images.items():
            kind = self._banks[name]
            if kind is None:
                continue
            attrs = {"rom_style": "logic" if kind == "lut" else "block"}
            mem = Memory(shape=signed(bits), depth=len(image), init=image, attrs=attrs)
            m.submodules[f"{name}_rom"] = mem
            if kind == "ebr":
                rd = mem.read_port(transparent_for=())
                m.d.comb += [rd.addr.eq(addr[name]), rd.en.eq(en)]
                word[name] = rd.data
            else:
                rd = mem.read_port(domain="comb")
                q = Signal(signed(bits), name=f"{name}_q")
                m.d.comb += rd.addr.eq(addr[name])
                with m.If(en):
                    m.d.sync += q.eq(rd.data)
                word[name] = q

        meta_shape = self._meta
        valid = [Signal(name=f"v{n}") for n in range(1, self.latency + 1)]
        metas = [Signal(meta_shape, name=f"meta{n}") for n in range(1, self.latency + 1)]
        with m.If(en):
            m.d.sync += [valid[0].eq(take), metas[0].eq(pay.meta)]
            for n in range(1, self.latency):
                m.d.sync += [valid[n].eq(valid[n - 1]), metas[n].eq(metas[n - 1])]
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.meta.eq(metas[-1])]

        def reg(value, shape, name):
            """A pipeline register of ``value`` (advances with ``en``)."""
            s = Signal(shape, name=name)
            with m.If(en):
                m.d.sync += s.eq(value)
            return s

        r1 = reg(frac, unsigned(f), "r1")
        odd1 = reg(odd, 1, "odd1")
        end1 = reg(at_end, 1, "end1")

        # ---- stage 2: select T[i], T[i+1] ---------------------------------------
        if k == 0:
            lo_v, hi_v = word["even"], word["end"]
        else:
            lo_v = Mux(odd1, word["odd"], word["even"])
            hi_v = Mux(odd1, Mux(end1, word["end"], word["even"]), word["odd"])
        lo2 = reg(lo_v, signed(bits), "lo2")
        if f == 0:
            m.d.comb += self.o.payload.code.eq(lo2)
            return m
        hi2 = reg(hi_v, signed(bits), "hi2")
        r2 = reg(r1, unsigned(f), "r2")

        # ---- stage 3: the difference ---------------------------------------------
        d3 = reg(hi2 - lo2, signed(bits + 1), "d3")
        lo3 = reg(lo2, signed(bits), "lo3")
        r3 = reg(r2, unsigned(f), "r3")

        # ---- stage 4..: T[i] * 2**f + 2**(f-1) + d * r, modulo 2**(bits + f) ------
        w = bits + f
        # T[i] * 2**f + 2**(f-1): the rounding constant fills the zero low bits.
        base = Cat(Const(1 << (f - 1), f), lo3).as_signed()
        levels = ceil_log2(f + 1)
        if self._target == "generic":
            acc = reg(base + d3 * r3, signed(w), "prod4")
            for n in range(1, levels):
                acc = reg(acc, signed(w), f"prod{4 + n}")
        else:
            # Shift-and-add: the gating of each partial product is a LUT in front of the
            # first level's carry chain; every later level is one registered adder.
            terms = [base] + [Mux(r3[b], d3 << b, 0) for b in range(f)]
            for n in range(levels):
                nxt = []
                for t in range(0, len(terms) - 1, 2):
                    nxt.append(reg(terms[t] + terms[t + 1], signed(w), f"sum{4 + n}_{t // 2}"))
                if len(terms) % 2:
                    nxt.append(reg(terms[-1], signed(w), f"sum{4 + n}_{len(terms) // 2}"))
                terms = nxt
            assert len(terms) == 1
            acc = terms[0]
        # The flooring shift is a wire selection; the result always fits `bits`.
        m.d.comb += self.o.payload.code.eq(acc[f:f + bits].as_signed())
        return m
