"""Comparator bank of the hypersphere cache: which stored entry, if any, holds a query.

Bit-exact with :meth:`pwlnet.code_cache.HwCache.match`: a query ``q`` (``dim`` signed codes)
hits slot ``s`` iff the slot is valid and ``distance(q, c_s, metric) <= R_s``
(:func:`pwlnet.code_cache.distance`); the lowest hitting slot wins.

Layer: hardware generators (the integer rules it implements are :mod:`pwlnet.code_cache`'s).

Streams and ports
-----------------
``q`` (in)
    The query, ``lanes_per_cycle`` codes per beat, dimensions in order
    (``q[0..L-1]``, then ``q[L..2L-1]``, ...): ``beats = ceil(dim / L)`` beats per query,
    no ``last`` flag (the bank counts beats).  With ``L = 1`` this is exactly the MLP
    engine's input stream (one ``signed(code_bits)`` code per beat), so the bank can
    watch the engine's input: ``q.payload[0]`` is the engine's ``i.payload``.  On the last
    beat, lanes past ``dim`` are ignored.
``o`` (out)
    One beat ``{hit, slot}`` per query, in order; ``slot`` is 0 on a miss.
``w`` (in)
    Entry writes, one *center word* (``L`` codes) per beat:
    ``{slot, index, codes, bound, valid, commit}`` writes ``codes`` as dimensions
    ``index*L .. index*L+L-1`` of ``slot``'s center (``index < beats``); a beat with
    ``commit`` also sets the slot's ``valid`` bit and its bound ``R`` (unsigned,
    :func:`pwlnet.code_cache.distance_bits` wide).  ``bound`` must be the entry's on *every*
    beat of a write: ``linf`` stores each code's window ``c +- R``.  A full entry write is ``beats`` beats
    with ``commit`` on the last one (so an entry becomes valid only once its whole center
    is in place); invalidating a slot is one beat with ``commit = 1, valid = 0`` (its
    center word is overwritten, which does not matter for an invalid slot).  One word per
    beat matches the host link, which carries one center code per 32-bit word.  A
    ``slot >= entries`` (when ``entries`` is not a power of two) writes nothing.
``clear`` (in)
    A strobe: every slot is invalid from the next cycle on (it wins over a ``commit`` in
    the same cycle).  Like the host's "clear" command, issue it between queries: a query
    whose compare stage has not run yet sees the cleared bank.
``idle``, ``at_first`` (out)
    ``at_first``: the next query beat is a query's first; ``idle``: that, and no result
    is owed.  A block that writes entries between queries (the cached engine) holds
    off a query's first beat on them.

Preload.  ``init`` gives slots their contents at configuration (and after reset):
centers in the memory's initial image, bounds and valid bits as register reset values;
``clear`` still empties them.

Ordering.  ``w.ready`` is high only while the bank is idle -- no query partly received,
no result waiting to be taken -- so a write can never tear a query: every query sees
exactly the writes accepted before its first beat.  When a write and the first beat of a
query are offered in the same idle cycle the write goes first.

Storage (why one shared memory)
-------------------------------
All ``N`` entries need the center codes of the current dimension in the same cycle.
Registers would cost ``N * dim * code_bits`` flip-flops (6144 for N = 32, d = 24 at 8
bits: more than the UP5K's 5280 logic cells) plus a ``dim``-to-1 multiplexer per entry.
Instead the centers live in *one* memory of ``beats`` rows, each row the ``N * L`` codes
of one beat for every slot, written with a per-slot write enable (granularity ``L``
codes) and read once per query beat at the beat index.  On the iCE40 this becomes
``ceil(N * L * code_bits / 16)`` EBR in 256 x 16 mode with bit masks (N/2 blocks for
8-bit codes and ``L = 1``; twice that for ``linf``, which stores two codes per
dimension); a memory per entry would take ``N`` blocks for the same bits
(an EBR is at least 16 bits wide in the 256-deep mode, and 8-bit-wide modes are 512 deep,
far more than ``dim``).  Valid bits and (``l1``, ``l2``) bounds are registers,
``N * (1 + distance_bits)`` flip-flops, as are the per-entry accumulators (``distance_bits + 1`` bits, one bit for
``linf``): every entry reads its own on every beat.

Datapath (all entries in parallel)
----------------------------------
1. memory read (registered read port) at the beat index; the query codes are registered
   alongside;
2. per entry and lane ``|q_i - c_i|`` (``code_bits`` wide: at most ``2**code_bits - 1``),
   registered, so that the subtraction after the memory's clock-to-output delay is not
   chained with the accumulation;
3. per entry: ``linf`` keeps one bit, "every ``|q_i - c_i| <= R`` so far" (no running
   max and no final compare, since ``max_i |d_i| <= R`` iff every ``|d_i| <= R``); for
   ``linf`` the memory holds each code's window ``[c_i - R, c_i + R]`` (clipped to the
   code range, computed as the word is written), so stage 2 is two comparisons per lane
   with no subtraction or absolute value; ``l1`` and ``l2`` count the bound down, ``R - sum |q_i - c_i|`` or
   ``R - sum (q_i - c_i)**2``, in a ``distance_bits + 1``-bit signed register and hit
   iff it ends non-negative (one subtractor, no final comparator).  The ``l2`` square
   cannot use a ``SB_MAC16`` (the MLP engine owns all eight of the UP5K's), so it is
   either a ``code_bits`` x ``code_bits`` LUT multiplier per entry and lane
   (``squarer="logic"``, ~90 LUT4 at 8 bits: ``l2`` costs ~3x the LUTs of ``linf``)
   or a table of the ``2**code_bits`` squares per entry and lane (``squarer="ebr"``:
   one EBR each at 8 bits, whose registered read port replaces the stage-2 register).
   Sharing one squarer among the entries by time-multiplexing would make a lookup
   ``N`` times slower than the query stream, so the bank could no longer just watch the
   engine's input; ``linf`` needs no squarer and has the same no-false-hit guarantee;
4. after the last beat: ``valid & inside`` per entry and the priority encoder (lowest
   index) into the output register.

So ``lookup_latency = 4``: the result is on ``o`` four cycles after the cycle in which the
query's last beat was taken.  Query beats stream at one per cycle; the only stall is
that a query's *last* beat waits while the previous query's result is still untaken,
so with a consumer that is always ready the bank takes one query every
``max(beats, lookup_latency + 1)`` cycles: with ``beats > lookup_latency`` ``q`` never
stalls.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from pwlnet import fixedpoint as fx
from pwlnet import code_cache

from .memory import NO_RW_CHECK, unchecked_read_port
from .params import check_int

__all__ = ["ComparatorBank", "LOOKUP_LATENCY", "SQUARERS"]

#: How an ``l2`` bank squares ``|q_i - c_i|``: ``"logic"`` (a LUT multiplier per entry
#: and lane) or ``"ebr"`` (a table of squares in a memory per entry and lane).
SQUARERS = ("logic", "ebr")

#: Cycles from taking a query's last beat to its result on ``o`` (see the module docs).
LOOKUP_LATENCY = 4


class ComparatorBank(wiring.Component):
    """``entries`` hyperspheres compared in parallel with a streamed query; bit-exact
    :meth:`pwlnet.code_cache.HwCache.match`.

    Parameters
    ----------
    entries : int
        Slots ``N`` (at least 1).
    dim : int
        Codes per query and per center ``d`` (at least 1).
    code_bits : int
        Width of the signed input codes (2..16, :func:`pwlnet.fixedpoint.check_bits`).
    metric : {"l2", "linf", "l1"}
        The bank's distance (:func:`pwlnet.code_cache.distance`).
    lanes_per_cycle : int
        Dimensions per query beat and per center write beat, ``1 <= L <= dim``;
        ``dim`` need not be a multiple of ``L``.
    squarer : {"logic", "ebr"}
        ``l2`` only: square ``|q_i - c_i|`` with a LUT multiplier per entry and lane
        (``"logic"``, about 90 LUT4 each for 8-bit codes), or look it up in a table of
        squares, one memory per entry and lane (``"ebr"``: one 256 x 16 EBR each for
        codes up to 8 bits, next to no LUTs).  Same results and latency.

    Attributes
    ----------
    q : In(stream.Signature(ArrayLayout(signed(code_bits), lanes_per_cycle)))
        Query codes, ``beats`` beats per query.
    o : Out(stream.Signature(StructLayout({"hit": 1, "slot": unsigned(ceil_log2(entries))})))
        One result per query.
    w : In(stream.Signature(StructLayout({"slot", "index", "codes", "bound", "valid", "commit"})))
        Entry writes (see the module docstring).
    clear : In(1)
        Invalidate every slot.
    beats : int
        ``ceil(dim / lanes_per_cycle)``.
    distance_bits : int
        Width of ``bound`` (:func:`pwlnet.code_cache.distance_bits`).
    lookup_latency : int
        Cycles from the cycle a query's last beat is taken to the first cycle its result
        is valid on ``o`` (:data:`LOOKUP_LATENCY`).
    """

    def __init__(self, entries, dim, code_bits, metric, *, lanes_per_cycle=1, squarer="logic", init=()):
        self._entries = check_int(entries, "entries", 1)
        self._dim = check_int(dim, "dim", 1)
        if isinstance(code_bits, bool) or not isinstance(code_bits, (int, np.integer)):
            raise TypeError(f"code_bits must be an integer, not {code_bits!r}")
        self._bits = fx.check_bits(int(code_bits), "code_bits")
        self._metric = code_cache.check_metric(metric)
        self._lanes = check_int(lanes_per_cycle, "lanes_per_cycle", 1, self._dim)
        if squarer not in SQUARERS:
            raise ValueError(f"squarer must be one of {SQUARERS}, not {squarer!r}")
        if squarer == "ebr" and metric != "l2":
            raise ValueError(f"squarer 'ebr' needs metric 'l2', not {metric!r}")
        self._squarer = squarer
        self.beats = -(-self._dim // self._lanes)
        self.distance_bits = code_cache.distance_bits(metric, self._dim, self._bits)
        self.lookup_latency = LOOKUP_LATENCY
        init = list(init)
        if len(init) > self._entries:
            raise ValueError(f"init has {len(init)} slots; the bank has {self._entries}")
        self._init = []
        lo, hi = fx.signed_range(self._bits)
        cap = code_cache.max_distance(metric, self._dim, self._bits)
        for s_, item in enumerate(init):
            if item is None:
                self._init.append(None)
                continue
            center, bnd = item
            center = np.asarray(center, dtype=np.int64).reshape(-1)
            if center.size != self._dim or np.any(center < lo) or np.any(center > hi):
                raise ValueError(f"init slot {s_}: the center must be {self._dim} codes in [{lo}, {hi}]")
            if isinstance(bnd, bool) or not isinstance(bnd, (int, np.integer)) or not 0 <= bnd <= cap:
                raise ValueError(f"init slot {s_}: bound {bnd!r} is outside 0..{cap}")
            self._init.append((center, int(bnd)))
        self._init += [None] * (self._entries - len(self._init))
        codes = data.ArrayLayout(signed(self._bits), self._lanes)
        super().__init__({
            "q": In(stream.Signature(codes)),
            "o": Out(stream.Signature(data.StructLayout({
                "hit": 1, "slot": unsigned(ceil_log2(self._entries))}))),
            "w": In(stream.Signature(data.StructLayout({
                "slot": unsigned(ceil_log2(self._entries)),
                "index": unsigned(ceil_log2(self.beats)),
                "codes": codes,
                "bound": unsigned(self.distance_bits),
                "valid": 1,
                "commit": 1,
            }))),
            "clear": In(1),
            "idle": Out(1),
            "at_first": Out(1),
        })

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def code_bits(self) -> int:
        return self._bits

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def lanes_per_cycle(self) -> int:
        return self._lanes

    @property
    def squarer(self) -> str:
        return self._squarer

    def elaborate(self, platform):
        m = Module()
        wr, rd = self._centers(m)
        k, take, taken, at_last = self._control(m)
        valid, bound = self._writes(m, wr)

        # ---- stage 1: memory read, query registered alongside ---------------------------
        m.d.comb += [rd.addr.eq(k), rd.en.eq(take)]
        q1 = Signal(data.ArrayLayout(signed(self._bits), self._lanes))
        v1, first1, last1 = Signal(), Signal(), Signal()
        m.d.sync += [v1.eq(take), first1.eq(k == 0), last1.eq(at_last)]
        with m.If(take):
            m.d.sync += q1.eq(self.q.payload)

        # ---- stage 2: |q_i - c_i| per entry and lane --------------------------------------
        v2, first2, last2 = Signal(), Signal(), Signal()
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1)]
        ad = self._terms(m, rd.data, q1, v1, last1)

        # ---- stage 3: accumulate --------------------------------------------------------
        done3 = Signal()
        m.d.sync += done3.eq(v2 & last2)
        inside = self._accumulate(m, ad, bound, v2, first2)

        # ---- stage 4: priority encoder, output register ---------------------------------
        hits = [valid[e] & inside[e] for e in range(self._entries)]
        slot = _lowest(hits)[1] if self._entries > 1 else Const(0, 1)
        with m.If(done3):
            m.d.sync += [self.o.valid.eq(1),
                         self.o.payload.hit.eq(Cat(*hits).any()),
                         self.o.payload.slot.eq(slot)]
        with m.Elif(taken):
            m.d.sync += self.o.valid.eq(0)
        return m

    @property
    def _window(self):
        # linf stores the window [c - R, c + R] (clipped to the code range) instead of c:
        # |q - c| <= R iff lo <= q <= hi for every code q, so a lane needs two compares
        # and no subtractor, absolute value or bound register (about half the LUTs),
        # for twice the memory bits.
        return self._metric == "linf"

    def _center_image(self):
        """Initial rows of the center memory: row = beat index, element e*L + j = slot e, lane j."""
        lanes, win = self._lanes, self._window
        per = 2 if win else 1
        lo_code, hi_code = fx.signed_range(self._bits)

        def stored(c, r):
            return [max(c - r, lo_code), min(c + r, hi_code)] if win else [c]

        rows = []
        for r in range(self.beats):
            row = []
            for e in range(self._entries):
                for j in range(lanes):
                    i = r * lanes + j
                    if self._init[e] is not None and i < self._dim:
                        row += stored(int(self._init[e][0][i]), self._init[e][1])
                    else:
                        row += [0] * per
            rows.append(row)
        return rows

    def _centers(self, m):
        """The center memory (see the module docs); returns its write and read ports."""
        per = 2 if self._window else 1
        m.submodules.centers = mem = Memory(shape=data.ArrayLayout(signed(self._bits),
                                                                   self._entries * self._lanes * per),
                                            depth=self.beats, init=self._center_image(),
                                            attrs=NO_RW_CHECK)
        wr = mem.write_port(granularity=self._lanes * per)
        # writes and reads never overlap (w.ready): no collision logic
        rd = unchecked_read_port(m, mem, "centers_rd")
        return wr, rd

    def _control(self, m):
        """Beat counter and handshakes; returns (beat index, query beat taken, result
        taken, the beat is a query's last)."""
        k = Signal(range(self.beats), init=0)    # beat index of the next query beat
        owed = Signal()                          # a result is in the pipeline or on o
        at_last = k == self.beats - 1
        # `idle` (= k == 0 and nothing owed) is a register computed from the next-state
        # values, so the write enables that depend on it start at a flip-flop.
        idle = Signal(init=1)
        m.d.comb += [self.w.ready.eq(idle), self.idle.eq(idle), self.at_first.eq(k == 0)]
        # The output register holds one result and the pipeline behind it cannot stall,
        # so a query's last beat waits until the previous query's result has been taken.
        # Nor does one start in the cycle an entry write lands in the center memory (see
        # `_writes`): its first beat would read the row being written.
        landing = Signal()
        m.d.sync += landing.eq(self.w.valid & idle)
        m.d.comb += self.q.ready.eq(~(at_last & owed) & ~(idle & self.w.valid) & ~landing)
        take = self.q.valid & self.q.ready
        taken = self.o.valid & self.o.ready
        k_next = Signal.like(k)
        owed_next = Signal()
        m.d.comb += [k_next.eq(Mux(take, Mux(at_last, 0, k + 1), k)),
                     owed_next.eq(Mux(take & at_last, 1, Mux(taken, 0, owed)))]
        m.d.sync += [k.eq(k_next), owed.eq(owed_next), idle.eq((k_next == 0) & ~owed_next)]
        return k, take, taken, at_last

    def _writes(self, m, wr):
        """Entry writes into the center memory, the valid bits and the bounds; returns
        (valid bits, bound registers)."""
        n, bits, win = self._entries, self._bits, self._window
        lo_code, hi_code = fx.signed_range(bits)
        valid = Signal(n, init=sum(1 << e for e in range(n) if self._init[e] is not None))
        bound = [Signal(self.distance_bits, name=f"bound{e}",
                        init=self._init[e][1] if self._init[e] is not None else 0)
                 for e in range(n)]
        wp = self.w.payload
        wfire = self.w.valid & self.w.ready
        if win:
            # the window of each code of the word, from the bound sent with every beat
            parts = []
            for j in range(self._lanes):
                c = wp.codes[j]
                lo = c - wp.bound
                hi = c + wp.bound
                parts += [Mux(lo < lo_code, lo_code, lo)[:bits], Mux(hi > hi_code, hi_code, hi)[:bits]]
            word = Cat(*parts)
        else:
            word = wp.codes.as_value()
        # The write lands a cycle late, from registers: the window's adders and clamps
        # (and the payload's route) then do not share a cycle with the memory's write
        # port.  `_control` keeps a query from starting in the cycle a write lands.
        w_addr = Signal.like(wr.addr, name="w_addr")
        w_word = Signal(len(word), name="w_word", reset_less=True)
        w_en = Signal(n, name="w_en")
        m.d.sync += [w_addr.eq(wp.index), w_word.eq(word), w_en.eq(Mux(wfire, Const(1, n) << wp.slot, 0))]
        m.d.comb += [wr.addr.eq(w_addr), wr.data.eq(w_word.replicate(n)), wr.en.eq(w_en)]
        # The commit (valid bit, bound) lands with the last row, and a clear a cycle late
        # too, so the two keep their order (a clear in the cycle of a commit wins).
        c_en = Signal(n, name="c_en")
        c_valid = Signal(name="c_valid")
        c_bound = Signal.like(wp.bound, name="c_bound", reset_less=True)
        clear = Signal(name="clear_d")
        m.d.sync += [c_en.eq(Mux(wfire & wp.commit, Const(1, n) << wp.slot, 0)), c_valid.eq(wp.valid),
                     c_bound.eq(wp.bound), clear.eq(self.clear)]
        for e in range(n):
            with m.If(c_en[e]):
                m.d.sync += valid[e].eq(c_valid)
                if not win:
                    m.d.sync += bound[e].eq(c_bound)
        with m.If(clear):
            m.d.sync += valid.eq(0)
        return valid, bound

    def _terms(self, m, row, q1, v1, last1):
        """Stage 2: per entry, ``linf``'s "every lane inside" bit or the lanes' ``|q_i - c_i|``
        (squares from the table with ``squarer="ebr"``), registered."""
        n, lanes, bits = self._entries, self._lanes, self._bits
        # Lanes past dim on the last beat contribute 0: within every bound (linf) and
        # adding nothing to a sum (l1, l2; 0 squares to 0 in the table too).
        live_last = self._dim - (self.beats - 1) * lanes
        ad = [[Signal(bits, name=f"ad{e}_{j}") for j in range(lanes)] for e in range(n)]
        for e in range(n):
            if self._window:
                # per lane: q inside the stored window (lanes past dim always inside)
                ins = []
                for j in range(lanes):
                    lo = row[(e * lanes + j) * 2]
                    hi = row[(e * lanes + j) * 2 + 1]
                    t = (q1[j] >= lo) & (q1[j] <= hi)
                    if j >= live_last:
                        t = t | last1
                    ins.append(t)
                lane_ok = Signal(name=f"lane_ok{e}")
                m.d.sync += lane_ok.eq(Cat(*ins).all())
                ad[e] = lane_ok
                continue
            for j in range(lanes):
                diff = q1[j] - row[e * lanes + j]
                mag = abs(diff)[:bits]              # |diff| <= 2**bits - 1 always fits
                if j >= live_last:
                    mag = Mux(last1, 0, mag)
                if self._squarer == "ebr":
                    # The table's registered read port is this stage's register: the
                    # square arrives in stage 3 at no extra latency.
                    rom = Memory(shape=unsigned(2 * bits), depth=1 << bits,
                                 init=[x * x for x in range(1 << bits)])
                    m.submodules[f"square{e}_{j}"] = rom
                    sq = rom.read_port(transparent_for=())
                    m.d.comb += [sq.addr.eq(mag), sq.en.eq(v1)]
                    ad[e][j] = sq.data
                else:
                    m.d.sync += ad[e][j].eq(mag)
        return ad

    def _accumulate(self, m, ad, bound, v2, first2):
        """Stage 3: per entry, the register that says whether the query is inside so far.

        No final distance comparator: for linf, max_i |d_i| <= R iff every |d_i| <= R, so
        each entry keeps one "inside" bit (a comparator per lane, no running max); for
        l1/l2 each entry counts its bound down, R - sum of the terms, and hits iff the
        remainder is not negative (the terms are never negative, so once below zero it
        stays there, and R - max_distance fits distance_bits + 1 signed bits).
        """
        inside = []
        for e in range(self._entries):
            if self._window:
                flag = Signal(name=f"inside{e}")
                with m.If(v2):
                    m.d.sync += flag.eq(ad[e] & (first2 | flag))
                inside.append(flag)
            else:
                if self._metric == "l1" or self._squarer == "ebr":
                    parts = ad[e]
                else:
                    parts = [a * a for a in ad[e]]
                term = parts[0]
                for p in parts[1:]:
                    term = term + p
                left = Signal(signed(self.distance_bits + 1), name=f"left{e}")
                with m.If(v2):
                    m.d.sync += left.eq(Mux(first2, bound[e], left) - term)
                inside.append(~left[-1])
        return inside


def _lowest(hs):
    """Priority encoder as a tree (log2 N levels of 2:1 muxes instead of a chain of N):
    ``(any of hs, index of the lowest set one)``; the index is 0 when none is set."""
    if len(hs) == 1:
        return hs[0], Const(0, 0)
    half = 1 << (ceil_log2(len(hs)) - 1)
    any_lo, idx_lo = _lowest(hs[:half])
    any_hi, idx_hi = _lowest(hs[half:])
    w = ceil_log2(half)
    # the top bit is set only when the hit is in the upper half (0 on a miss)
    if w == 0:
        return any_lo | any_hi, ~any_lo & any_hi
    hi_idx = Cat(idx_hi, Const(0, w - len(idx_hi))) if len(idx_hi) < w else idx_hi
    return any_lo | any_hi, Cat(Mux(any_lo, idx_lo, hi_idx)[:w], ~any_lo & any_hi)
