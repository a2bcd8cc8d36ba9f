"""The engine's MAC lanes: ``P`` multiply-accumulate lanes and the hold register that
serialises their sums, one lane per cycle, into the shared requantizer."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..mac import LaneMAC, LanePairMAC

__all__ = ["LaneArray"]


class LaneArray(wiring.Component):
    """``P`` lanes computing ``sum_i w[p][i] * x[i]`` for one pass, then shifting the sums out.

    Timing, with ``c`` the cycle a read is issued on ``rd``: ``c+1`` the activation
    arrives on ``x_in``/``x_act`` (a registered memory read), ``c+2`` x is registered in
    fabric (0 on cycles without a read) and the weight word arrives on ``w`` (its
    memory is read a cycle later than the activations, and its output register stands in
    for an operand register), then the :class:`~pwlnet.hw.mac.LaneMAC` pipeline.  A read
    marked ``last`` ends the pass: its first add starts each accumulator from 0, and the
    cycle after the last add the ``P`` sums are copied into a hold register that shifts
    towards lane 0, one sum per cycle on ``o`` (``nv_m1 + 1`` of them, ``nv_m1`` from the
    pass facts).

    Parameters
    ----------
    lanes : int
        ``P``.
    weight_bits : int
        Width of one weight (``w`` is ``P`` of them, lane ``p`` in bits ``p*wb ..``).
    in_bits, act_bits : int
        Widths of the input codes and of the hidden activations (``0``: no activation
        buffer, ``x_act`` is absent).
    acc_bits : int
        Accumulator width.
    info_layout : Layout
        The pass facts carried to ``o`` (must have a field ``nv_m1``: lanes used - 1).
    capture : bool
        The pass facts arrive on ``info`` (held by the sequencer until the hold copy)
        rather than with every read.
    target : str
        ``"generic"`` or ``"ice40"`` (``SB_MAC16`` lanes).
    pairs : bool
        Build the lanes two by two as :class:`~pwlnet.hw.mac.LanePairMAC` (lanes ``2k``
        and ``2k + 1`` in one ``SB_MAC16`` on ``"ice40"``, accumulators in the fabric)
        instead of one :class:`~pwlnet.hw.mac.LaneMAC` each.  Same timing and sums.
    hold_slots : int
        Hold registers (1 or 2).  With two, a pass's sums are copied into the free one
        and shifted out after those of the pass before, so a pass may end while the one
        before it is still being shifted out (the schedule,
        :func:`~pwlnet.hw.engine.plan.schedule`, knows when each sum comes out).

    Attributes
    ----------
    rd : In(stream.Signature(StructLayout({"last", "src_in"[, "info"]}), always_ready=True))
        The reads, as issued (``src_in``: x comes from ``x_in``, else from ``x_act``).
    info : In(info_layout)
        Only with ``capture``: the facts of the pass whose last read was issued last.
    x_in, x_act : In(signed)
        The activation read for the read issued one cycle earlier.
    w : In(unsigned(P * weight_bits))
        The weight word for the read issued two cycles earlier.
    o : Out(stream.Signature(StructLayout({"acc", "j", "info"}), always_ready=True))
        One lane's sum per cycle: lane ``j`` of the pass with facts ``info``.
    """

    def __init__(self, lanes, weight_bits, in_bits, act_bits, acc_bits, info_layout, *, capture,
                 target="generic", pairs=False, hold_slots=1):
        if hold_slots not in (1, 2):
            raise ValueError(f"hold_slots must be 1 or 2, not {hold_slots!r}")
        self._lanes = lanes
        self._hold_slots = hold_slots
        self._pairs = bool(pairs)
        self._wb = weight_bits
        self._in_bits = in_bits
        self._act_bits = act_bits
        self._acc_bits = acc_bits
        self._info = info_layout
        self._capture = bool(capture)
        self._target = target
        read = {"last": 1, "src_in": 1}
        if not capture:
            read["info"] = info_layout
        members = {
            "rd": In(stream.Signature(data.StructLayout(read), always_ready=True)),
            "x_in": In(signed(in_bits)),
            "w": In(unsigned(lanes * weight_bits)),
            "o": Out(stream.Signature(data.StructLayout({
                "acc": signed(acc_bits), "j": range(lanes), "info": info_layout}), always_ready=True)),
        }
        if capture:
            members["info"] = In(info_layout)
        if act_bits:
            members["x_act"] = In(signed(act_bits))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        P, wb = self._lanes, self._wb
        xb = max(self._in_bits, self._act_bits)
        accw = self._acc_bits
        # The read flags follow the reads down the memory, operand and multiplier stages.
        flag_layout = data.StructLayout({"valid": 1, "last": 1, "src_in": 1,
                                         **({} if self._capture else {"pinfo": self._info})})
        f0 = Signal(flag_layout)
        m.d.comb += [f0.valid.eq(self.rd.valid), f0.last.eq(self.rd.payload.last),
                     f0.src_in.eq(self.rd.payload.src_in)]
        if not self._capture:
            m.d.comb += f0.pinfo.eq(self.rd.payload.info)
        f1 = Signal(flag_layout)
        f2 = Signal(flag_layout)
        f3 = Signal(flag_layout)
        fa = Signal(flag_layout)     # accumulate stage
        m.d.sync += [f1.eq(f0), f2.eq(f1), f3.eq(f2), fa.eq(f3)]

        # x is forced to 0 on cycles without a read, so the lanes' products are 0 there.
        # x is registered in fabric between the memories and the DSPs: the DSP columns sit
        # at the die edge, so the broadcast of x is a long route that must not share a
        # cycle with the memory output and the source mux.  Each weight byte goes to one
        # DSP only, straight from the weight memory's output register.
        x = Signal(signed(xb))
        w = self.w
        if self._act_bits:
            m.d.sync += x.eq(Mux(f1.valid, Mux(f1.src_in, self.x_in, self.x_act), 0))
        else:
            m.d.sync += x.eq(Mux(f1.valid, self.x_in, 0))
        # Each pass's first add starts its accumulator from 0 (`fresh`: the previous valid
        # read was a pass's last).  The clear is one AND per accumulator bit; the
        # alternative (free-running accumulators and a subtraction of the previous pass's
        # end value) costs two registers per accumulator bit (`prev` and its copy beside
        # the hold register), which share logic cells with nothing.
        accs = [Signal(signed(accw), name=f"acc{p}") for p in range(P)]
        fresh = Signal(init=1)
        with m.If(fa.valid):
            m.d.sync += fresh.eq(fa.last)
        # The hold register copies the accumulators the cycle *after* their last add (not
        # from the adder output), so no path runs through a carry chain and then a mux.
        f4 = Signal(flag_layout)
        pass_end = Signal()
        m.d.sync += [f4.eq(fa), pass_end.eq(fa.valid & fa.last)]
        w_lane = [w[p * wb:(p + 1) * wb].as_signed() for p in range(P)]
        m.d.comb += [a.eq(b) for a, b in zip(accs, self._macs(m, w_lane, x, fa.valid, fresh))]
        info = self.info if self._capture else f4.pinfo
        if self._hold_slots == 1:
            self._one_hold(m, accs, pass_end, info)
        else:
            self._two_holds(m, accs, pass_end, info)
        return m

    def _one_hold(self, m, accs, pass_end, info):
        """One hold register: copied at a pass end, shifted towards lane 0 every other cycle."""
        P, accw = self._lanes, self._acc_bits
        hold = [Signal(signed(accw), name=f"hold{p}", reset_less=True) for p in range(P)]
        ser_act = Signal()
        ser_j = Signal(range(P))
        sinfo = Signal(self._info, reset_less=True)
        for p in range(P):
            with m.If(pass_end):
                m.d.sync += hold[p].eq(accs[p])
            with m.Else():
                # Shift towards lane 0, which feeds the shared requant pipeline.
                m.d.sync += hold[p].eq(hold[p + 1] if p + 1 < P else 0)
        with m.If(pass_end):
            m.d.sync += [ser_act.eq(1), ser_j.eq(0), sinfo.eq(info)]
        with m.Elif(ser_act):
            m.d.sync += ser_j.eq(ser_j + 1)
            with m.If(ser_j == sinfo.nv_m1):
                m.d.sync += ser_act.eq(0)
        m.d.comb += [self.o.valid.eq(ser_act), self.o.payload.acc.eq(hold[0]),
                     self.o.payload.j.eq(ser_j), self.o.payload.info.eq(sinfo)]

    def _two_holds(self, m, accs, pass_end, info):
        """Two hold registers used in turn: a pass end copies into ``wp``; ``rp`` is shifted
        out (its sums, then the other's from the next cycle on).  A slot whose last sum
        goes out in a cycle may be copied into in that cycle."""
        P, accw = self._lanes, self._acc_bits
        holds = [[Signal(signed(accw), name=f"hold{k}_{p}", reset_less=True) for p in range(P)] for k in (0, 1)]
        infos = [Signal(self._info, name=f"sinfo{k}", reset_less=True) for k in (0, 1)]
        full = [Signal(name=f"hold_full{k}") for k in (0, 1)]
        wp, rp = Signal(), Signal()
        ser_j = Signal(range(P))
        out_valid = Signal()
        out_last = Signal()
        m.d.comb += [out_valid.eq(Mux(rp, full[1], full[0])),
                     out_last.eq(ser_j == Mux(rp, infos[1].nv_m1, infos[0].nv_m1))]
        with m.If(out_valid):
            with m.If(out_last):
                m.d.sync += [ser_j.eq(0), rp.eq(~rp)]
                for k in (0, 1):
                    with m.If(rp == k):
                        m.d.sync += full[k].eq(0)
            with m.Else():
                m.d.sync += ser_j.eq(ser_j + 1)
        for k in (0, 1):
            take = Signal(name=f"hold_take{k}")
            m.d.comb += take.eq(pass_end & (wp == k))
            shift = Signal(name=f"hold_shift{k}")
            m.d.comb += shift.eq(out_valid & (rp == k))
            for p in range(P):
                with m.If(take):
                    m.d.sync += holds[k][p].eq(accs[p])
                with m.Elif(shift):
                    m.d.sync += holds[k][p].eq(holds[k][p + 1] if p + 1 < P else 0)
            with m.If(take):
                # after the drain's clear above: a copy wins
                m.d.sync += [full[k].eq(1), infos[k].eq(info)]
        with m.If(pass_end):
            m.d.sync += wp.eq(~wp)
        m.d.comb += [self.o.valid.eq(out_valid),
                     self.o.payload.acc.eq(Mux(rp, holds[1][0], holds[0][0])),
                     self.o.payload.j.eq(ser_j),
                     self.o.payload.info.eq(Mux(rp, infos[1], infos[0]))]

    def _macs(self, m, w_lane, x, en, clr):
        """The lanes' multiply-accumulates; returns the ``P`` accumulators."""
        # The enable (not only the zero products of bubble cycles) keeps a Verilog
        # simulation exact: x * an undefined weight (SPRAM being loaded) is x there.
        wb, xb, accw = self._wb, max(self._in_bits, self._act_bits), self._acc_bits
        accs = []
        if not self._pairs:
            for p, a in enumerate(w_lane):
                # On iCE40 the accumulator is the DSP's own output register (see LaneMAC).
                m.submodules[f"mul{p}"] = mac = LaneMAC(wb, xb, accw, target=self._target)
                m.d.comb += [mac.a.eq(a), mac.b.eq(x), mac.en.eq(en), mac.clr.eq(clr)]
                accs.append(mac.acc)
            return accs
        for k in range(0, len(w_lane), 2):
            m.submodules[f"pair{k // 2}"] = mac = LanePairMAC(wb, xb, accw, target=self._target)
            odd = w_lane[k + 1] if k + 1 < len(w_lane) else 0
            m.d.comb += [mac.a0.eq(w_lane[k]), mac.a1.eq(odd), mac.b.eq(x), mac.en.eq(en), mac.clr.eq(clr)]
            accs += [mac.acc0, mac.acc1]
        return accs[:len(w_lane)]
