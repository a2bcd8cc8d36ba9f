"""The engine's sequencer: runs programs of the layer descriptor table, one read per cycle."""

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import capture_pass_facts, lerp_channel_shape, pass_layout, read_layout

__all__ = ["Sequencer", "descriptor_layout", "encode_descriptor"]


def descriptor_layout(plan):
    """One entry of the descriptor ROM.

    Besides the plain fields, the table holds the constants the sequencer compares its
    counters with (``x_m2`` = x - 2, or a never-reached sentinel), so every terminal-count
    flag is an equality into a register, not a subtract-and-compare on the path that
    restarts the counters.  LERP fields exist only in models with a LERP layer, ``ctx``
    and ``endc`` only with a pair program.
    """
    descs = plan.layers
    max_L = max(x["L"] for x in descs)
    max_G = max(x["G"] for x in descs)
    max_gap = max(x["gap"] for x in descs)
    lerp_fields = {"lerp": 1, "lerp_base": lerp_channel_shape(plan)} if plan.has_lerp else {}
    pair_fields = {"ctx": 1, "endc": 1} if plan.pair else {}
    act_words = plan.act_regions * plan.act_depth
    return data.StructLayout({
        "w_base": range(max(1, len(plan.words)) + 1),
        "n_in_m2": range(max_L + 1),
        "n_in_is1": 1,
        "L_m2": range(max_L + 1),
        "L_is1": 1,
        "G_m2": range(max_G + 1),
        "G_is1": 1,
        "nv_last_m1": range(plan.lanes),
        "chan_base": range(len(plan.params) + 1),
        "src_in": 1,
        "src_base": range(act_words + 1),
        "dst_out": 1,
        "dst_base": range(act_words + 1),
        "gap_m1": range(max_gap + 1),
        "gap_is1": 1,
        "to_wait": 1,
        "last": 1,
        **lerp_fields,
        **pair_fields,
    })


def encode_descriptor(plan, x):
    """The ROM word (a dict for :func:`descriptor_layout`) of plan descriptor ``x``."""
    never_L = max(y["L"] for y in plan.layers)
    never_G = max(y["G"] for y in plan.layers)
    return {
        "w_base": x["w_base"],
        "n_in_m2": x["n_in"] - 2 if x["n_in"] >= 2 else never_L, "n_in_is1": x["n_in"] == 1,
        "L_m2": x["L"] - 2 if x["L"] >= 2 else never_L, "L_is1": x["L"] == 1,
        "G_m2": x["G"] - 2 if x["G"] >= 2 else never_G, "G_is1": x["G"] == 1,
        "nv_last_m1": x["nv_last"] - 1, "chan_base": x["chan_base"],
        "src_in": x["src_in"], "src_base": x["src_base"],
        "dst_out": x["dst_out"], "dst_base": x["dst_base"],
        "gap_m1": max(0, x["gap"] - 1), "gap_is1": x["gap"] == 1, "to_wait": x["gap"] >= 1,
        "last": x["last"],
        **({"lerp": x["lerp"], "lerp_base": x["lerp_base"]} if plan.has_lerp else {}),
        **({"ctx": x["ctx"], "endc": x["endc"]} if plan.pair else {}),
    }


class Sequencer(wiring.Component):
    """Issues the reads of one inference: every pass of every layer of the chosen program.

    One-hot states: IDLE (no inference), RUN (issuing reads), WAIT (``gap`` cycles
    before the next layer), LOAD (a program's first descriptor into ``cur``).  Within a
    program the next layer's descriptor waits in a register (``nxt``, read from the
    descriptor ROM while the layer before runs), and the switch to it (``cur`` and the
    counters restarted) happens at the end of the layer's last cycle or of its last WAIT
    cycle: no cycle is lost between layers, and no combinational path runs from the
    end-of-layer decision through the ROM.  A program's first descriptor has a LOAD
    cycle of its own.  Every decision input is a register (terminal-count flags are
    computed a cycle ahead), so the control logic is two or three LUTs deep.  A
    program's cycles are :meth:`EnginePlan.program_cycles`.

    An inference starts when its input bank is full, its output bank is free and (with
    several programs) a ``prog`` beat is there; it starts either from IDLE or in the last
    cycle of the previous inference, so back-to-back inferences leave no cycle unused.
    With a pair program (:attr:`EnginePlan.pair <pwlnet.hw.engine.plan.EnginePlan>`),
    when both input banks are full and the next two output banks free, two inferences
    start together: the pair program runs ``A`` on the next input bank and ``B`` on the
    other (each entry's input bank is the current one XOR its ``ctx``, its output bank
    the current one plus ``ctx``), and the input bank after them is the next one again.

    Parameters
    ----------
    plan : pwlnet.hw.engine.plan.EnginePlan
        The descriptor table (a LUT ROM here) and the buffer geometry.

    Attributes
    ----------
    prog : In(stream.Signature(range(programs)))
        Only with several programs: the program to run, taken when an inference starts.
    in_full : In(2)
        Per input bank: it holds a complete input.
    out_busy : In(out_banks)
        Per output bank: it is claimed (``plan.out_banks``: 2, or 4 with a pair program,
        where output banks are claimed round-robin, apart from the input banks).
    in_clear : Out(1)
        Every read of input bank ``clear_bank`` has been issued: it may be refilled.
    clear_bank : Out(1)
        See ``in_clear``.
    bank : Out(1)
        Input and output bank of the current inference (of ``A`` in a pair).
    claim : Out(1)
        An inference starts (on output bank ``claim_bank``, program ``claim_prog``).
    claim_pair : Out(1)
        Only with a pair program: with ``claim``, a pair starts; it claims the output bank
        after ``claim_bank`` too.
    idle : Out(1)
        No inference is running.
    x_addr : Out
        Activation read address (input buffer or activation buffer, same address).
    w_addr : Out
        Weight read address, one cycle behind ``x_addr`` (its read is a cycle later).
    rd : Out(stream.Signature(read_layout(plan), always_ready=True))
        The read issued this cycle (see :class:`~pwlnet.hw.engine.lanes.LaneArray`).
    info : Out(pass_layout(plan))
        Only when :func:`~.layouts.capture_pass_facts`: the facts of the pass whose last
        read was issued last (held until the next pass's last read).
    """

    def __init__(self, plan):
        self._plan = plan
        self._capture = capture_pass_facts(plan)
        programs = len(plan.programs)
        members = {
            "in_full": In(2),
            "out_busy": In(plan.out_banks),
            "in_clear": Out(1),
            "clear_bank": Out(1),
            "bank": Out(1),
            "claim": Out(1),
            "claim_bank": Out(range(plan.out_banks)),
            "idle": Out(1),
            "x_addr": Out(range(max(2 * plan.d, plan.act_regions * plan.act_depth))),
            "w_addr": Out(range(max(1, len(plan.words)) + 1)),
            "rd": Out(stream.Signature(read_layout(plan), always_ready=True)),
        }
        if programs > 1:
            members["prog"] = In(stream.Signature(range(programs)))
            members["claim_prog"] = Out(range(programs))
        if plan.pair:
            members["claim_pair"] = Out(1)
        if self._capture:
            members["info"] = Out(pass_layout(plan))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        pl = self._plan
        descs = pl.layers
        m.submodules.desc_rom = desc_rom = Memory(
            shape=descriptor_layout(pl), depth=len(descs), init=[encode_descriptor(pl, x) for x in descs])
        desc_rd = desc_rom.read_port(domain="comb")
        s = self._state(m, desc_rd)
        # the next layer's descriptor, read while the layer before runs (see _switch)
        s.nxt = Signal(descriptor_layout(pl), reset_less=True)
        m.d.sync += s.nxt.eq(desc_rd.data)
        self._counters(m, s)
        self._start(m, s)
        self._switch(m, s)
        self._load(m, s, desc_rd.data)
        self._reads(m, s)
        return m

    def _state(self, m, desc_rd):
        """The state flags, the counters' registers and the start of an inference."""
        pl = self._plan
        descs = pl.layers
        n_layers = len(descs)
        s = _Regs()
        s.st_idle = Signal(init=1)
        s.st_run, s.st_wait, s.st_load = Signal(), Signal(), Signal()
        s.gap_cnt = Signal(range(max(x["gap"] for x in descs) + 1))
        s.gap_z = Signal()         # gap_cnt == 0, registered
        s.cb = Signal()            # bank (input and output) of the current inference
        s.nb = Signal()            # bank of the next inference
        if pl.pair:
            s.cob = Signal(2)      # output bank of the current inference (A's in a pair)
            s.nob = Signal(2)      # output bank of the next inference
        else:
            s.cob, s.nob = s.cb, s.nb
        s.nidx = Signal(range(max(2, n_layers)))   # table entry of the next layer
        s.lidx = Signal(range(max(2, n_layers)))
        s.cur = Signal(descriptor_layout(pl), reset_less=True)
        max_L, max_G = max(x["L"] for x in descs), max(x["G"] for x in descs)
        s.i = Signal(range(max_L))
        s.g = Signal(range(max_G))
        s.gp = Signal(range(max_G * pl.lanes + 1))     # g * P, kept as a counter (no multiplier)
        s.waddr = Signal(range(max(1, len(pl.words)) + 1))
        # Registered flags about the current (i, g): read valid, last read of the pass,
        # last cycle of the pass, last pass of the layer, last cycle of the layer (and of
        # the program).
        # f_sw: last cycle of a layer that the next follows at once (no WAIT).
        s.f_iv, s.f_il, s.f_li, s.f_lg, s.f_end, s.f_endl, s.f_sw = (Signal(name=n) for n in (
            "f_iv", "f_il", "f_li", "f_lg", "f_end", "f_endl", "f_sw"))
        s.xbase = Signal(range(max(2 * pl.d, pl.act_regions * pl.act_depth)))
        s.xa = Signal.like(s.xbase)

        # Program select: one `prog` beat per inference when extra programs exist.
        firsts = Array([Const(f, range(max(2, n_layers))) for f, _ in pl.programs])
        if len(pl.programs) > 1:
            sel_valid, sel = self.prog.valid, self.prog.payload
        else:
            sel_valid, sel = Const(1), Const(0)
        m.d.comb += [desc_rd.addr.eq(s.nidx)]
        s.iss_valid = Signal()
        s.layer_end = Signal()
        # the bank of the current entry: A's (the current one) or, in a pair, B's
        s.eb = s.cb ^ s.cur.ctx if pl.pair else s.cb
        s.eob = (s.cob + s.cur.ctx)[:2] if pl.pair else s.cb
        m.d.comb += [s.iss_valid.eq(s.st_run & s.f_iv), s.layer_end.eq(s.st_run & s.f_end),
                     # every read of the input bank has been issued: it may be refilled
                     self.in_clear.eq(s.st_run & s.f_end & s.cur.src_in), self.clear_bank.eq(s.eb),
                     self.bank.eq(s.cb), self.idle.eq(s.st_idle)]

        # Registered: it can only fall by our own start (which toggles nb), and the cycle
        # after a start is a LOAD, where no start can happen, so one cycle of staleness
        # is harmless and keeps the flag logic off the start decision path.
        can_start = Signal()
        if pl.pair:
            nob_free = ~self.out_busy[0]
            for b in range(1, pl.out_banks):
                nob_free = Mux(s.nob == b, ~self.out_busy[b], nob_free)
            m.d.sync += can_start.eq(Mux(s.nb, self.in_full[1], self.in_full[0]) & nob_free)
        else:
            m.d.sync += can_start.eq(Mux(s.nb, self.in_full[1] & ~self.out_busy[1],
                                         self.in_full[0] & ~self.out_busy[0]))
        start_inf = Signal()
        m.d.comb += [start_inf.eq(can_start & sel_valid & (s.st_idle | (s.st_run & s.f_endl))),
                     self.claim.eq(start_inf), self.claim_bank.eq(s.nob)]
        if len(pl.programs) > 1:
            m.d.comb += [self.prog.ready.eq(start_inf), self.claim_prog.eq(sel)]
        s.can_pair = Signal()
        if pl.pair:
            # Registered like can_start.  Only our own start and the clears of running
            # inputs make it fall; a pair's B input is cleared at the end of its first
            # layer, never in the pair's last cycle (the network has two layers or more).
            # both input banks full, output banks nob and nob + 1 free
            two_free = ~self.out_busy[0] & ~self.out_busy[1]
            for b in range(1, pl.out_banks):
                two_free = Mux(s.nob == b, ~self.out_busy[b] & ~self.out_busy[(b + 1) % pl.out_banks], two_free)
            m.d.sync += s.can_pair.eq(self.in_full[0] & self.in_full[1] & two_free)
            m.d.comb += self.claim_pair.eq(start_inf & s.can_pair)
        s.start_inf, s.first_of_sel = start_inf, firsts[sel]
        return s

    def _start(self, m, s):
        """An inference starts: LOAD its first layer.  After `_counters`, whose end of the
        previous program (IDLE) it overrides in the same cycle."""
        with m.If(s.start_inf):
            m.d.sync += [s.st_idle.eq(0), s.st_load.eq(1), s.cb.eq(s.nb), s.nb.eq(~s.nb),
                         s.nidx.eq(s.first_of_sel)]
            if self._plan.pair:
                m.d.sync += [s.cob.eq(s.nob), s.nob.eq(s.nob + 1)]
                # a pair takes both input banks (the next inference is on this one again)
                # and two output banks
                with m.If(s.can_pair):
                    m.d.sync += [s.nb.eq(s.nb), s.nob.eq(s.nob + 2), s.nidx.eq(self._plan.pair[0])]

    def _counters(self, m, s):
        """RUN: step (i, g) and the read addresses; at a layer's end, IDLE, WAIT or (see
        `_switch`) the next layer."""
        P = self._plan.lanes
        cur = s.cur
        with m.If(s.st_run):
            with m.If(s.f_li):
                nxt_end = cur.L_is1 & (s.g == cur.G_m2)
                m.d.sync += [s.i.eq(0), s.g.eq(s.g + 1), s.gp.eq(s.gp + P),
                             s.f_iv.eq(1), s.f_il.eq(cur.n_in_is1), s.f_li.eq(cur.L_is1),
                             s.f_lg.eq(s.g == cur.G_m2), s.f_end.eq(nxt_end), s.f_endl.eq(nxt_end & cur.last),
                             s.f_sw.eq(nxt_end & ~cur.last & ~cur.to_wait)]
            with m.Else():
                nxt_end = s.f_lg & (s.i == cur.L_m2)
                m.d.sync += [s.i.eq(s.i + 1), s.f_iv.eq(s.f_iv & ~s.f_il),
                             s.f_il.eq(s.i == cur.n_in_m2), s.f_li.eq(s.i == cur.L_m2),
                             s.f_end.eq(nxt_end), s.f_endl.eq(nxt_end & cur.last),
                             s.f_sw.eq(nxt_end & ~cur.last & ~cur.to_wait)]
            # The last read of a layer does not step the address (the switch sets the
            # next layer's base): it never leaves the memory, whose size stays the exact sum
            # of the layers' words (EBR/SPRAM granularity), and never reads an address a
            # Verilog simulation would answer with x.
            with m.If(s.iss_valid & ~(s.f_il & s.f_lg)):
                m.d.sync += s.waddr.eq(s.waddr + 1)
            # Activation read address: a register, restarted every pass and frozen on the
            # bubble cycles of a pass (so it always stays inside the buffer).
            with m.If(s.f_li):
                m.d.sync += s.xa.eq(s.xbase)
            with m.Elif(s.f_iv & ~s.f_il):
                m.d.sync += s.xa.eq(s.xa + 1)
        with m.If(s.layer_end):
            m.d.sync += s.st_run.eq(0)
            with m.If(cur.last):
                m.d.sync += s.st_idle.eq(1)
            with m.Elif(cur.to_wait):
                # `gap` WAIT cycles without reads, then the switch (see _switch)
                m.d.sync += [s.st_wait.eq(1), s.gap_cnt.eq(cur.gap_m1), s.gap_z.eq(cur.gap_is1)]
        with m.If(s.st_wait & ~s.gap_z):
            m.d.sync += [s.gap_cnt.eq(s.gap_cnt - 1), s.gap_z.eq(s.gap_cnt == 1)]

    def _enter(self, s, new):
        """The assignments that make descriptor ``new`` (the entry at ``nidx``) the
        current layer: RUN with its counters restarted."""
        d = self._plan.d
        in_bank = s.cb ^ new.ctx if self._plan.pair else s.cb
        base = Mux(new.src_in, Mux(in_bank, d, 0), new.src_base)
        end = new.L_is1 & new.G_is1
        return [s.st_run.eq(1), s.cur.eq(new), s.i.eq(0), s.g.eq(0), s.gp.eq(0),
                s.waddr.eq(new.w_base), s.nidx.eq(s.nidx + 1), s.lidx.eq(s.nidx),
                s.xbase.eq(base), s.xa.eq(base),
                s.f_iv.eq(1), s.f_il.eq(new.n_in_is1), s.f_li.eq(new.L_is1), s.f_lg.eq(new.G_is1),
                s.f_end.eq(end), s.f_endl.eq(end & new.last), s.f_sw.eq(end & ~new.last & ~new.to_wait)]

    def _switch(self, m, s):
        """The next layer of the program, from ``nxt``, at the end of the layer's last cycle
        (no gap) or of its last WAIT cycle, so its first read follows at once.  After
        `_counters`, whose stepping it overrides.  ``nxt`` is read from the ROM the cycle
        after ``nidx`` moves on, so a layer must last two cycles (reads and gap) for it
        to be there; :func:`~.plan.schedule` gives a shorter one a gap."""
        with m.If((s.st_run & s.f_sw) | (s.st_wait & s.gap_z)):
            m.d.sync += [s.st_wait.eq(0), *self._enter(s, s.nxt)]

    def _load(self, m, s, new):
        """LOAD: a program's first descriptor, from the ROM, into `cur`."""
        with m.If(s.st_load):
            m.d.sync += [s.st_load.eq(0), *self._enter(s, new)]

    def _reads(self, m, s):
        """The read addresses, the read issued this cycle and its pass's facts."""
        pl = self._plan
        P, cur = pl.lanes, s.cur
        # The weight word is read one cycle after the activations, from a copy of the
        # address: its memory's output register then stands in for an operand register
        # (11 flip-flops instead of P * weight_bits).
        waddr_d = Signal.like(s.waddr)
        m.d.sync += waddr_d.eq(s.waddr)
        m.d.comb += [self.w_addr.eq(waddr_d), self.x_addr.eq(s.xa)]

        info = Signal(pass_layout(pl))
        m.d.comb += [
            info.chan.eq(cur.chan_base + s.gp),
            info.wbase.eq(Mux(cur.dst_out, s.eob * pl.n_out if pl.pair else Mux(s.cb, pl.n_out, 0),
                              cur.dst_base) + s.gp),
            info.obase.eq(s.gp),
            info.nv_m1.eq(Mux(s.f_lg, cur.nv_last_m1, P - 1)),
            info.lidx.eq(s.lidx),
            info.to_out.eq(cur.dst_out),
            info.lastpass.eq((cur.endc if pl.pair else cur.last) & s.f_lg),
            info.obank.eq(s.eob),
        ]
        if pl.has_lerp:
            m.d.comb += [info.lerp.eq(cur.lerp),
                         info.lchan.eq(Mux(cur.lerp, cur.lerp_base + s.gp, 0))]
        m.d.comb += [self.rd.valid.eq(s.iss_valid), self.rd.payload.last.eq(s.f_il),
                     self.rd.payload.src_in.eq(cur.src_in)]
        if self._capture:
            # One register captured at the pass's last read holds its facts until the
            # lanes' hold copy (see capture_pass_facts).
            pcap = Signal(pass_layout(pl), reset_less=True)
            with m.If(s.iss_valid & s.f_il):
                m.d.sync += pcap.eq(info)
            m.d.comb += self.info.eq(pcap)
        else:
            m.d.comb += self.rd.payload.info.eq(info)


class _Regs:
    """The sequencer's registers, shared by the methods that build its logic."""
