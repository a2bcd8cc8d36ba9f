"""The engine's shared requantizer: one lane sum per cycle to a saturated output code.

``y = saturate((acc * m + off) >> s)`` with ``off = bias * m + 2**(s-1)`` folded at build
time (:func:`~pwlnet.hw.engine.plan.requant_offset`), which is exactly
:func:`pwlnet.fixedpoint.requantize`: ``(acc + b) * m + half = acc * m + off``; ReLU layers
clamp at 0.  One carry chain per stage at most; the multiply is an adder tree of partial
products; the shift and the saturation take two stages each.  The data registers have no
reset (only the stages' valid flags do): nothing reads them without a valid flag, and
without the reset net nextpnr places the adder tree tighter (the 16-lane board top's fmax
at a 64 MHz try went from 55.3 to 59.0 MHz with this alone).
"""

from amaranth.hdl import Mux, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..memory import NO_RW_CHECK, delay_line, unchecked_read_port
from .layouts import meta_layout, pass_layout

__all__ = ["Requantizer", "param_layout", "result_layout"]


def param_layout(plan):
    """One channel's requantization parameters: ``off`` (signed), ``mult``, ``shift``."""
    return data.StructLayout({
        "off": signed(plan.off_bits),
        "mult": unsigned(max(1, plan.mult_bits)),
        "shift": unsigned(plan.shift_bits),
    })


def result_layout(plan):
    """A requantized code ``y`` (wide enough for every layer) and its ``meta``
    (:func:`~pwlnet.hw.engine.layouts.meta_layout`)."""
    return data.StructLayout({"y": signed(max(plan.act_bits, plan.out_bits)), "meta": meta_layout(plan)})


class Requantizer(wiring.Component):
    """Requantizes the lanes' sums, one per cycle, with per-channel parameters from block RAM.

    The parameters of every channel of every layer (:attr:`EnginePlan.params
    <pwlnet.hw.engine.plan.EnginePlan>`) sit in a parameter memory indexed by the pass's
    ``chan`` plus the lane; the per-layer saturation bounds in a small LUT ROM indexed by
    the layer.  The result appears :attr:`EnginePlan.req_stages
    <pwlnet.hw.engine.plan.EnginePlan>` cycles after its sum.

    Parameters
    ----------
    plan : pwlnet.hw.engine.plan.EnginePlan
        Widths, parameters and saturation bounds.
    writable : bool
        Add the ``pw`` port (the cache slots' parameters are written at run time).

    Attributes
    ----------
    i : In(stream.Signature(StructLayout({"acc", "j", "info"}), always_ready=True))
        Lane ``j``'s sum ``acc`` of the pass with facts ``info``
        (:func:`~pwlnet.hw.engine.layouts.pass_layout`), as from
        :class:`~pwlnet.hw.engine.lanes.LaneArray`.
    o : Out(stream.Signature(result_layout(plan), always_ready=True))
        The code and where it goes.
    early : Out(stream.Signature(result_layout(plan), always_ready=True))
        What ``o`` will carry one cycle later (the inputs of its last register), for a
        consumer that registers it anyway (the argmax tracker beside the write-back).
    pw : In(stream.Signature(StructLayout({"addr", "off", "mult", "shift"}), always_ready=True))
        Only when ``writable``: parameter writes (only while no result is in flight).
    """

    def __init__(self, plan, *, writable=False):
        self._plan = plan
        self._writable = bool(writable)
        result = stream.Signature(result_layout(plan), always_ready=True)
        members = {
            "i": In(stream.Signature(data.StructLayout({
                "acc": signed(plan.acc_bits), "j": range(plan.lanes), "info": pass_layout(plan)}),
                always_ready=True)),
            "o": Out(result),
            "early": Out(result),
        }
        if writable:
            members["pw"] = In(stream.Signature(data.StructLayout({
                "addr": range(max(1, len(plan.params))), **param_layout(plan).members}), always_ready=True))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        pl = self._plan
        st = _Stages(m, self._meta0(m))
        par_rd, off_rd = self._param_memories(m)
        m.d.comb += par_rd.addr.eq(self.i.payload.info.chan + self.i.payload.j)
        # s1: accumulator and meta registered, parameters arrive from the EBR
        st.stage()
        a1 = Signal(signed(pl.acc_bits), reset_less=True)
        m.d.sync += a1.eq(self.i.payload.acc)
        if pl.has_multiply:
            pre, sh = self._multiply(m, st, a1, par_rd, off_rd)
        else:
            pre = Signal(signed(pl.pre_bits), reset_less=True)
            sh = Signal(unsigned(pl.shift_bits), reset_less=True)
            m.d.sync += [pre.eq(a1 + par_rd.data.off), sh.eq(par_rd.data.shift)]
            st.stage()
        v = self._shift(m, st, pre, sh)
        self._saturate(m, st, v)
        assert len(st.stages) == pl.req_stages, (len(st.stages), pl.req_stages)
        return m

    def _meta0(self, m):
        """What rides along with the sum entering the pipeline."""
        pl = self._plan
        info, j = self.i.payload.info, self.i.payload.j
        meta0 = Signal(meta_layout(pl))
        m.d.comb += [
            meta0.valid.eq(self.i.valid), meta0.waddr.eq(info.wbase + j), meta0.o.eq(info.obase + j),
            meta0.lidx.eq(info.lidx), meta0.to_out.eq(info.to_out),
            meta0.lastchan.eq(info.lastpass & (j == info.nv_m1)), meta0.obank.eq(info.obank),
            meta0.ofirst.eq((info.obase == 0) & (j == 0)),
        ]
        if pl.has_lerp:
            # channel = lerp_base + output index in the layer, formed like the write address
            m.d.comb += [meta0.lerp.eq(info.lerp),
                         meta0.lchan.eq(info.lchan + Mux(info.lerp, j, 0))]
        return meta0

    def _param_memories(self, m):
        """The parameter memory (and the offset's own copy with a multiplier)."""
        pl = self._plan
        n_chan = len(pl.params)
        # Read ports without collision logic (unchecked_read_port): parameters are written
        # only while the engine is quiet.
        m.submodules.par_mem = par_mem = Memory(
            shape=param_layout(pl), depth=max(1, n_chan),
            init=[{"off": o, "mult": mu if pl.has_multiply else 0, "shift": s} for o, mu, s in pl.params],
            attrs=NO_RW_CHECK)
        par_rd = unchecked_read_port(m, par_mem, "par_rd")
        off_rd = None
        if pl.has_multiply:
            # The offset joins the multiplier's adder tree only at its last levels: it has
            # a memory of its own, read then (a delayed address, not a delayed offset).
            # par_mem's copy of it is never read, and yosys drops those bits.
            m.submodules.off_mem = off_mem = Memory(
                shape=signed(pl.off_bits), depth=max(1, n_chan), init=[o for o, _, _ in pl.params],
                attrs=NO_RW_CHECK)
            off_rd = unchecked_read_port(m, off_mem, "off_rd")
        if self._writable:
            pw = self.pw
            par_wr = par_mem.write_port()
            m.d.comb += [par_wr.addr.eq(pw.payload.addr), par_wr.data.off.eq(pw.payload.off),
                         par_wr.data.mult.eq(pw.payload.mult if pl.has_multiply else 0),
                         par_wr.data.shift.eq(pw.payload.shift),
                         par_wr.en.eq(pw.valid)]
            if pl.has_multiply:
                off_wr = off_mem.write_port()
                m.d.comb += [off_wr.addr.eq(pw.payload.addr), off_wr.data.eq(pw.payload.off),
                             off_wr.en.eq(pw.valid)]
        return par_rd, off_rd

    def _multiply(self, m, st, a1, par_rd, off_rd):
        """``acc * m + off``: partial products ``acc * m[k] * 2**k`` (an AND, no carry
        chain) and the offset, summed by a tree of registered adders (one carry chain per
        stage).  Returns the sum and the shift, delayed alike."""
        pl = self._plan
        prm, pw = par_rd.data, pl.pre_bits
        sh = Signal(unsigned(pl.shift_bits), reset_less=True)
        terms = []
        for k in range(pl.mult_bits):
            t = Signal(signed(pw), name=f"pp{k}", reset_less=True)
            m.d.sync += t.eq(Mux(prm.mult[k], a1 << k, 0))
            terms.append(t)
        # The offset is the odd term out until the level that adds it: it is read from
        # off_mem just in time, with the parameter address delayed (level i's inputs are
        # registers i + 1 cycles after the address; the offset's register is the last).
        OFF = "off"
        terms.append(OFF)
        m.d.sync += sh.eq(prm.shift)
        st.stage()
        level = 0
        off_addr = par_rd.addr
        while len(terms) > 1:
            level += 1
            nxt = []
            for k in range(0, len(terms) - 1, 2):
                a, b = terms[k], terms[k + 1]
                if a is OFF or b is OFF:
                    # Read a cycle early and register the offset in the fabric: the EBR's
                    # output then does not share a cycle with this level's carry chain.
                    for _ in range(level - 1):
                        d_ = Signal.like(off_addr, name=f"off_addr{level}")
                        m.d.sync += d_.eq(off_addr)
                        off_addr = d_
                    m.d.comb += off_rd.addr.eq(off_addr)
                    off_q = Signal.like(off_rd.data, name="off_q", reset_less=True)
                    m.d.sync += off_q.eq(off_rd.data)
                    a, b = (off_q if x is OFF else x for x in (a, b))
                t = Signal(signed(pw), name=f"sum{len(st.stages)}_{k}", reset_less=True)
                m.d.sync += t.eq(a + b)
                nxt.append(t)
            if len(terms) % 2:
                if terms[-1] is OFF:
                    nxt.append(OFF)
                else:
                    t = Signal(signed(pw), name=f"sum{len(st.stages)}_{len(terms) - 1}", reset_less=True)
                    m.d.sync += t.eq(terms[-1])
                    nxt.append(t)
            terms = nxt
            sh_n = Signal.like(sh)
            m.d.sync += sh_n.eq(sh)
            sh = sh_n
            st.stage()
        return terms[0], sh

    def _shift(self, m, st, pre, sh):
        """Arithmetic (flooring) shift: the low three bits of the shift, then the rest."""
        pl = self._plan
        v = Signal(signed(pl.pre_bits), name="shr_lo", reset_less=True)
        m.d.sync += v.eq(pre >> sh[:3])
        sh_hi = Signal(unsigned(pl.shift_bits), name="sh_hi", reset_less=True)
        m.d.sync += sh_hi.eq(sh & ~7)
        st.stage()
        if pl.shift_bits > 3:
            v2 = Signal(signed(pl.post_bits), name="shr_hi", reset_less=True)
            m.d.sync += v2.eq((v >> sh_hi)[:pl.post_bits])
            st.stage()
            return v2
        # Every channel shifts by at least min_shift, so the shifted value fits
        # post_bits = pre_bits - min_shift: the truncation is exact and keeps the
        # overflow test narrow (a LUT or two, not a long reduction).
        return v[:pl.post_bits].as_signed()

    def _saturate(self, m, st, v):
        """Saturation: overflow = the bits from the layer's sign position up are not all
        equal (a LUT tree, not a compare); ReLU layers clamp at 0.  Two stages."""
        pl = self._plan
        descs = pl.layers
        yb = max(pl.act_bits, pl.out_bits)
        out_bits_set = sorted({x["ob"] for x in descs})
        # Per-layer saturation constants in a small LUT ROM (a Memory read port, not an
        # Array of constants: that becomes an `always @*` case block in Verilog, which
        # Icarus never evaluates while the index keeps its initial value).
        sat_layout = data.StructLayout({"relu": 1, "lo": signed(yb), "hi": signed(yb),
                                        "obsel": len(out_bits_set)})
        m.submodules.sat_rom = sat_rom = Memory(
            shape=sat_layout, depth=len(descs),
            init=[{"relu": x["lo"] == 0, "lo": x["lo"], "hi": x["hi"],
                   "obsel": 1 << out_bits_set.index(x["ob"])} for x in descs])
        sat_rd = sat_rom.read_port(domain="comb")
        ovfs = []
        for b in out_bits_set:
            top = v[b - 1:]
            ovfs.append(~((top == 0) | (top == (1 << len(top)) - 1)))
        ovf = Signal(reset_less=True)
        neg = Signal(reset_less=True)
        vlow = Signal(signed(yb), reset_less=True)
        s = st.meta_at()
        m.d.comb += sat_rd.addr.eq(s.lidx)
        ovf_sel = 0
        for k, o in enumerate(ovfs):
            ovf_sel = ovf_sel | (o & sat_rd.data.obsel[k])
        relu = Signal(reset_less=True)
        lo, hi = Signal(signed(yb), reset_less=True), Signal(signed(yb), reset_less=True)
        m.d.sync += [ovf.eq(ovf_sel), neg.eq(v[-1]), vlow.eq(v[:yb]),
                     relu.eq(sat_rd.data.relu), lo.eq(sat_rd.data.lo), hi.eq(sat_rd.data.hi)]
        s = st.register(s)
        y = Signal(signed(yb), name="y", reset_less=True)
        y_next = Mux(relu & neg, 0, Mux(ovf, Mux(neg, lo, hi), vlow))
        m.d.sync += y.eq(y_next)
        s6 = st.register(s)
        m.d.comb += [self.early.valid.eq(s.valid), self.early.payload.y.eq(y_next),
                     self.early.payload.meta.eq(s),
                     self.o.valid.eq(s6.valid), self.o.payload.y.eq(y), self.o.payload.meta.eq(s6)]


class _Stages:
    """Counts the pipeline stages and carries the meta beside them.

    The meta only rides along: up to the saturation stage (where ``lidx`` is needed) it
    goes through a block-RAM delay line, and only its ``valid`` bit, which must be reset,
    through registers.  :meth:`stage` counts a stage; :meth:`meta_at` gives the meta of
    the current one; :meth:`register` adds a stage whose meta is a register.
    """

    def __init__(self, m, meta0):
        self.m = m
        self.meta0 = meta0
        self.stages = []
        self.valids = []

    def stage(self):
        v = Signal(name=f"s{len(self.stages) + 1}_valid")
        self.m.d.sync += v.eq(self.valids[-1] if self.valids else self.meta0.valid)
        self.valids.append(v)
        self.stages.append(None)

    def meta_at(self):
        m, n = self.m, len(self.stages)
        line = delay_line(m, self.meta0, n, "meta_line") if n >= 2 else None
        out = Signal(self.meta0.shape(), name=f"s{n}")
        if line is None:
            m.d.sync += out.eq(self.meta0)
        else:
            m.d.comb += [out.eq(line), out.valid.eq(self.valids[-1])]
        return out

    def register(self, meta):
        out = Signal(self.meta0.shape(), name=f"s{len(self.stages) + 1}")
        self.m.d.sync += out.eq(meta)
        self.stages.append(out)
        return out
