"""Lanes of the folded MLP engine: generic ``*`` or an iCE40 ``SB_MAC16``.

:class:`LaneMultiplier` supplies the product ``p = a * b`` of a signed weight and a
signed activation with a fixed latency of :data:`MUL_LATENCY` clock cycles (input
register, then product register).  :class:`LaneMAC` adds the lane's accumulator, one
cycle after the product: in the fabric on the ``"generic"`` target, in the DSP's own
32-bit output register on ``"ice40"`` (the fed-back accumulator passes one AND per bit,
which is the clear at a pass's first add, and ``OHOLD`` is the enable).  Both targets
have exactly the same latency and result, so the engine's schedule and the golden-model
tests do not depend on the target.

Accumulators wider than 32 bits stay in the fabric behind a :class:`LaneMultiplier`.

:class:`LanePairMAC` is two lanes that share their activation operand: on ``"ice40"`` one
``SB_MAC16`` in its dual 8x8 mode (the top half multiplies the odd lane's weight, the
bottom half the even lane's, both by the same activation byte) with the two 16-bit
products registered inside the DSP, and the two accumulators in the fabric (the DSP's own
16-bit accumulators are too narrow for a layer's sum).  Same latency and result as two
:class:`LaneMAC`; operands of at most :data:`PAIR_BITS` bits.  With it the UP5K's eight
DSPs carry sixteen lanes (:func:`lanes_per_dsp`).
"""

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import check_target

__all__ = ["MUL_LATENCY", "DSP_ACC_BITS", "PAIR_BITS", "LaneMultiplier", "LaneMAC", "LanePairMAC",
           "lanes_per_dsp"]

#: Clock cycles from ``a``/``b`` to ``p``.
MUL_LATENCY = 2

_DSP_BITS = 16

#: Widest operands :class:`LanePairMAC` multiplies in one half of an ``SB_MAC16``.
PAIR_BITS = 8


def lanes_per_dsp(a_bits, b_bits):
    """Lanes one ``SB_MAC16`` can carry for these operand widths: 2 (dual 8x8 mode) when
    both fit :data:`PAIR_BITS` bits, else 1 (16x16 mode)."""
    return 2 if max(a_bits, b_bits) <= PAIR_BITS else 1


def _check_lane(target, **widths):
    """The checks both lane components make: positive integer widths, a known target,
    operands an ``SB_MAC16`` takes."""
    for name, v in widths.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an integer, not {v!r}")
        if v < 1:
            raise ValueError(f"{name} must be at least 1, not {v}")
    check_target(target)
    widest = max(widths["a_bits"], widths["b_bits"])
    if target == "ice40" and widest > _DSP_BITS:
        raise ValueError(f"SB_MAC16 operands are at most {_DSP_BITS} bits, not {widest}")


def _sb_mac16(a, b, o, *, c=0, d=0, ohold=0, dual=False, **output_params):
    """An ``SB_MAC16`` in signed mode with A/B input registers and the product register(s):
    one 16x16 product (register H), or with ``dual`` two 8x8 products (registers F, top,
    and G, bottom).  ``output_params`` choose what follows the product (output select,
    adder inputs), ``c``/``d`` feed the adder and ``ohold`` holds the output registers."""
    return Instance(
        "SB_MAC16",
        p_A_REG=1, p_B_REG=1, p_C_REG=0, p_D_REG=0,
        p_TOP_8x8_MULT_REG=int(dual), p_BOT_8x8_MULT_REG=int(dual),
        p_PIPELINE_16x16_MULT_REG1=0, p_PIPELINE_16x16_MULT_REG2=int(not dual),
        p_MODE_8x8=int(dual), p_A_SIGNED=1, p_B_SIGNED=1, p_NEG_TRIGGER=0,
        **output_params,
        i_CLK=ClockSignal("sync"), i_CE=1,
        i_A=a, i_B=b, i_C=c, i_D=d,
        i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0,
        i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=0, i_ORSTBOT=0,
        i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0, i_ADDSUBBOT=0,
        i_OHOLDTOP=ohold, i_OHOLDBOT=ohold, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
        o_O=o,
    )


class LaneMultiplier(wiring.Component):
    """Pipelined signed multiplier ``p = a * b`` with :data:`MUL_LATENCY` cycles of latency.

    Parameters
    ----------
    a_bits, b_bits : int
        Signed widths of the operands (1..16 for the ``"ice40"`` target).
    target : str
        ``"generic"`` (registers and ``*``; yosys may still map it to a DSP) or
        ``"ice40"`` (one ``SB_MAC16`` instance with its A/B input registers and its
        16x16 product register; simulate with yosys' ``ice40/cells_sim.v``).

    Attributes
    ----------
    a : In(signed(a_bits))
    b : In(signed(b_bits))
    p : Out(signed(a_bits + b_bits))
        Product of the ``a`` and ``b`` presented :data:`MUL_LATENCY` cycles earlier.
    """

    def __init__(self, a_bits, b_bits, *, target="generic"):
        _check_lane(target, a_bits=a_bits, b_bits=b_bits)
        self._a_bits, self._b_bits, self._target = a_bits, b_bits, target
        super().__init__({
            "a": In(signed(a_bits)),
            "b": In(signed(b_bits)),
            "p": Out(signed(a_bits + b_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        if self._target == "generic":
            a_r = Signal.like(self.a)
            b_r = Signal.like(self.b)
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), self.p.eq(a_r * b_r)]
        else:
            a16 = Signal(signed(_DSP_BITS))
            b16 = Signal(signed(_DSP_BITS))
            o32 = Signal(32)
            m.d.comb += [a16.eq(self.a), b16.eq(self.b),
                         self.p.eq(o32.as_signed()[:len(self.p)].as_signed())]
            # A/B input registers, 16x16 product register (rH), outputs taken from rH:
            # two register stages and no adder/accumulator in the path.
            m.submodules.dsp = _sb_mac16(
                a16, b16, o32, p_TOPOUTPUT_SELECT=3, p_BOTOUTPUT_SELECT=3,
                p_TOPADDSUB_LOWERINPUT=0, p_TOPADDSUB_UPPERINPUT=0, p_TOPADDSUB_CARRYSELECT=0,
                p_BOTADDSUB_LOWERINPUT=0, p_BOTADDSUB_UPPERINPUT=0, p_BOTADDSUB_CARRYSELECT=0)
        return m



#: Widest accumulator the ``"ice40"`` :class:`LaneMAC` keeps inside its ``SB_MAC16``.
DSP_ACC_BITS = 32


class LaneMAC(wiring.Component):
    """One engine lane: product :data:`MUL_LATENCY` cycles after its operands, then a
    registered accumulator, ``acc = (0 if clr else acc) + a*b`` in cycles with ``en``.

    Parameters
    ----------
    a_bits, b_bits : int
        Signed operand widths (1..16 for the ``"ice40"`` target).
    acc_bits : int
        Accumulator width (the sum wraps modulo ``2**acc_bits``).
    target : str
        ``"generic"``: :class:`LaneMultiplier` and a fabric adder.  ``"ice40"``: one
        ``SB_MAC16`` with its input registers, its 16x16 product register and its 32-bit
        accumulator register (``acc_bits`` up to :data:`DSP_ACC_BITS`; wider ones fall back
        to a fabric accumulator).  The DSP adds the product to its C/D inputs, which
        are the accumulator fed back through one AND per bit (the clear), and holds its
        output register (``OHOLD``) in cycles without ``en``.  No adder, carry chain or
        accumulator flip-flop is left in the fabric.

    Attributes
    ----------
    a : In(signed(a_bits))
    b : In(signed(b_bits))
    en : In(1)
        Add this cycle's product (the one of ``a``, ``b`` from :data:`MUL_LATENCY`
        cycles earlier).
    clr : In(1)
        With ``en``: start from 0 instead of ``acc``.
    acc : Out(signed(acc_bits))
        The accumulator (a register).

    Notes
    -----
    Board builds must not run yosys' ``ice40_dsp`` pass (``synth_ice40 -dsp``) over these
    instances: it rewrites an existing ``SB_MAC16``'s register parameters from the fabric
    flip-flops it finds around it, which drops the input and product registers.
    """

    def __init__(self, a_bits, b_bits, acc_bits, *, target="generic"):
        _check_lane(target, a_bits=a_bits, b_bits=b_bits, acc_bits=acc_bits)
        self._a_bits, self._b_bits, self._acc_bits, self._target = a_bits, b_bits, acc_bits, target
        super().__init__({
            "a": In(signed(a_bits)),
            "b": In(signed(b_bits)),
            "en": In(1),
            "clr": In(1),
            "acc": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        if self._target == "generic" or self._acc_bits > DSP_ACC_BITS:
            m.submodules.mul = mul = LaneMultiplier(self._a_bits, self._b_bits, target=self._target)
            m.d.comb += [mul.a.eq(self.a), mul.b.eq(self.b)]
            with m.If(self.en):
                m.d.sync += self.acc.eq(Mux(self.clr, 0, self.acc) + mul.p)
            return m
        a16 = Signal(signed(_DSP_BITS))
        b16 = Signal(signed(_DSP_BITS))
        o32 = Signal(32)
        fb = Signal(signed(32))      # accumulator fed back, 0 on a clear
        m.d.comb += [a16.eq(self.a), b16.eq(self.b),
                     self.acc.eq(o32[:self._acc_bits].as_signed()),
                     fb.eq(Mux(self.clr, 0, self.acc))]
        # A/B input registers, 16x16 product register (H), 32-bit adder H + {C, D}
        # into the output registers, which are the accumulator (OUTPUT_SELECT 1).
        m.submodules.dsp = _sb_mac16(
            a16, b16, o32, c=fb[16:], d=fb[:16], ohold=~self.en,
            p_TOPOUTPUT_SELECT=1, p_BOTOUTPUT_SELECT=1,
            p_TOPADDSUB_LOWERINPUT=2, p_TOPADDSUB_UPPERINPUT=1, p_TOPADDSUB_CARRYSELECT=2,
            p_BOTADDSUB_LOWERINPUT=2, p_BOTADDSUB_UPPERINPUT=1, p_BOTADDSUB_CARRYSELECT=0)
        return m


class LanePairMAC(wiring.Component):
    """Two engine lanes sharing the activation: ``acc0 += a0 * b`` and ``acc1 += a1 * b``,
    each exactly as :class:`LaneMAC` (same latency, clear and enable).

    Parameters
    ----------
    a_bits, b_bits : int
        Signed operand widths (1..:data:`PAIR_BITS` for the ``"ice40"`` target).
    acc_bits : int
        Accumulator width (the sums wrap modulo ``2**acc_bits``).
    target : str
        ``"generic"``: two :class:`LaneMultiplier`.  ``"ice40"``: one ``SB_MAC16`` in
        dual 8x8 signed mode, ``A = {a1, a0}`` and ``B = {b, b}`` (each byte sign-extended
        from its operand), the A/B input registers and the 8x8 product registers (F for
        the top half, G for the bottom), outputs taken from those registers.  The
        accumulators are fabric registers on both targets.

    Attributes
    ----------
    a0, a1 : In(signed(a_bits))
    b : In(signed(b_bits))
    en, clr : In(1)
        As for :class:`LaneMAC`, for both lanes.
    acc0, acc1 : Out(signed(acc_bits))
    """

    def __init__(self, a_bits, b_bits, acc_bits, *, target="generic"):
        _check_lane(target, a_bits=a_bits, b_bits=b_bits, acc_bits=acc_bits)
        widest = max(a_bits, b_bits)
        if target == "ice40" and widest > PAIR_BITS:
            raise ValueError(f"an SB_MAC16 in dual 8x8 mode takes operands of at most {PAIR_BITS} bits, "
                             f"not {widest}")
        self._a_bits, self._b_bits, self._acc_bits, self._target = a_bits, b_bits, acc_bits, target
        super().__init__({
            "a0": In(signed(a_bits)),
            "a1": In(signed(a_bits)),
            "b": In(signed(b_bits)),
            "en": In(1),
            "clr": In(1),
            "acc0": Out(signed(acc_bits)),
            "acc1": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        pw = self._a_bits + self._b_bits
        p0 = Signal(signed(pw))
        p1 = Signal(signed(pw))
        if self._target == "generic":
            for k, (a, p) in enumerate(((self.a0, p0), (self.a1, p1))):
                m.submodules[f"mul{k}"] = mul = LaneMultiplier(self._a_bits, self._b_bits)
                m.d.comb += [mul.a.eq(a), mul.b.eq(self.b), p.eq(mul.p)]
        else:
            a_hi, a_lo, b8 = (Signal(signed(PAIR_BITS)) for _ in range(3))
            o32 = Signal(32)
            m.d.comb += [a_lo.eq(self.a0), a_hi.eq(self.a1), b8.eq(self.b),
                         p0.eq(o32[:16].as_signed()), p1.eq(o32[16:].as_signed())]
            # Top half: A[15:8] * B[15:8] -> F -> O[31:16]; bottom: A[7:0] * B[7:0] -> G ->
            # O[15:0] (OUTPUT_SELECT 2: the registered 8x8 products; no adder in the path).
            m.submodules.dsp = _sb_mac16(
                Cat(a_lo, a_hi), Cat(b8, b8), o32, dual=True,
                p_TOPOUTPUT_SELECT=2, p_BOTOUTPUT_SELECT=2,
                p_TOPADDSUB_LOWERINPUT=0, p_TOPADDSUB_UPPERINPUT=0, p_TOPADDSUB_CARRYSELECT=0,
                p_BOTADDSUB_LOWERINPUT=0, p_BOTADDSUB_UPPERINPUT=0, p_BOTADDSUB_CARRYSELECT=0)
        with m.If(self.en):
            m.d.sync += [self.acc0.eq(Mux(self.clr, 0, self.acc0) + p0),
                         self.acc1.eq(Mux(self.clr, 0, self.acc1) + p1)]
        return m
