"""The fabric clock of each board: the setting for a requested frequency, and the hardware.

A board's :class:`~pwlnet.boards.registry.ClockSource` says where its clock comes from.
:func:`clock_setting` turns a requested frequency into what that source can make (an iCE40
:class:`~pwlnet.hw.pll.PLLConfig`, an :class:`ECP5PLLConfig`, or the :class:`Oscillator`
itself), and :func:`add_sync_domain` builds the ``sync`` domain from it on the board:

* ``"ice40-pad"``: :class:`~pwlnet.hw.pll.ICE40PLL` (``SB_PLL40_PAD``), as on the iCEBreaker;
* ``"ice40-core"``: :class:`ICE40CorePLL` (``SB_PLL40_CORE``), for a clock pin that is no
  PLL pad (iCEstick, TinyFPGA BX, UPduino v3);
* ``"ecp5"``: :class:`ECP5PLL` (``EHXPLLL``, settings searched as prjtrellis' ``ecppll`` does);
* ``"gowin"``: :class:`GowinPLL` (the GW1NR-9C's ``rPLL``, settings searched in the same way);
* ``"none"``: the pin drives the domain directly.

Every variant holds the domain in reset until the clock is stable (PLL lock) and a
short delay has passed, so no register needs an initial value.
"""

from __future__ import annotations

import dataclasses

from amaranth import *
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from ..hw.pll import ICE40PLL, PLLConfig, PLLError, hold_reset, pll_config

__all__ = ["Oscillator", "ECP5PLLConfig", "ecp5_pll_config", "GowinPLLConfig", "gowin_pll_config", "clock_setting",
           "ICE40CorePLL", "ECP5PLL", "GowinPLL", "DirectClock", "add_sync_domain", "hold_reset"]


@dataclasses.dataclass(frozen=True)
class Oscillator:
    """The board's oscillator used as the fabric clock (no PLL)."""

    f_in: float
    resource: str

    @property
    def f_out(self):
        return self.f_in

    def __str__(self):
        return f"none: the {self.f_in / 1e6:g} MHz oscillator ({self.resource}) drives the fabric"


#: ECP5 EHXPLLL limits (Hz): input, phase detector, VCO, output; and the dividers' ranges.
ECP5_F_IN = (8e6, 400e6)
ECP5_F_PFD = (3.125e6, 400e6)
ECP5_F_VCO = (400e6, 800e6)
ECP5_F_OUT = (3.125e6, 400e6)
ECP5_CLKI_DIV, ECP5_CLKFB_DIV, ECP5_CLKOP_DIV = 128, 80, 128


@dataclasses.dataclass(frozen=True)
class ECP5PLLConfig:
    """One EHXPLLL setting with CLKOP fed back: ``f_out = f_in / clki_div * clkfb_div`` and
    ``f_vco = f_out * clkop_div``."""

    f_in: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_out(self):
        return self.f_in / self.clki_div * self.clkfb_div

    @property
    def f_vco(self):
        return self.f_out * self.clkop_div

    def __str__(self):
        return (f"{self.f_in / 1e6:g} MHz -> {self.f_out / 1e6:.4f} MHz (CLKI_DIV={self.clki_div} "
                f"CLKFB_DIV={self.clkfb_div} CLKOP_DIV={self.clkop_div}, VCO {self.f_vco / 1e6:.1f} MHz)")


def ecp5_pll_config(f_out, f_in, *, tolerance=0.01):
    """The EHXPLLL setting closest to ``f_out`` from ``f_in`` (ties: lower output, then the
    VCO nearest 600 MHz).  Raises :class:`~pwlnet.hw.pll.PLLError` when nothing is within
    ``tolerance``."""
    if not ECP5_F_IN[0] <= f_in <= ECP5_F_IN[1]:
        raise PLLError(f"ECP5 PLL input {f_in / 1e6:g} MHz is outside "
                       f"{ECP5_F_IN[0] / 1e6:g}..{ECP5_F_IN[1] / 1e6:g} MHz")
    if not ECP5_F_OUT[0] <= f_out <= ECP5_F_OUT[1]:
        raise PLLError(f"ECP5 PLL output {f_out / 1e6:g} MHz is outside "
                       f"{ECP5_F_OUT[0] / 1e6:g}..{ECP5_F_OUT[1] / 1e6:g} MHz")
    best, best_key = None, None
    for clki in range(1, ECP5_CLKI_DIV + 1):
        f_pfd = f_in / clki
        if not ECP5_F_PFD[0] <= f_pfd <= ECP5_F_PFD[1]:
            continue
        for clkfb in range(1, ECP5_CLKFB_DIV + 1):
            out = f_pfd * clkfb
            if not ECP5_F_OUT[0] <= out <= ECP5_F_OUT[1]:
                continue
            for clkop in range(1, ECP5_CLKOP_DIV + 1):
                vco = out * clkop
                if not ECP5_F_VCO[0] <= vco <= ECP5_F_VCO[1]:
                    continue
                key = (abs(out - f_out), out, abs(vco - 600e6))
                if best_key is None or key < best_key:
                    best_key, best = key, ECP5PLLConfig(f_in, clki, clkfb, clkop)
    if best is None or abs(best.f_out - f_out) > tolerance * f_out:
        near = f" (nearest: {best.f_out / 1e6:.4f} MHz)" if best else ""
        raise PLLError(f"no ECP5 PLL setting makes {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz "
                       f"within {tolerance:.1%}{near}")
    return best


#: Gowin rPLL limits (Hz) of the GW1NR-9C, speed grade C6/I5 (Gowin's clock user guide
#: UG286 and the GW1NR data sheet DS117): input, phase detector, output, VCO; the
#: dividers' ranges and the output divider's values.
GOWIN_F_IN = (3e6, 400e6)
GOWIN_F_PFD = (3e6, 400e6)
GOWIN_F_OUT = (3.125e6, 600e6)
GOWIN_F_VCO = (400e6, 1200e6)
GOWIN_IDIV, GOWIN_FBDIV = 64, 64
GOWIN_ODIV = (2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128)
#: The device the rPLL's ``DEVICE`` parameter names (the only Gowin board is the Tang Nano 9K).
GOWIN_PLL_DEVICE = "GW1NR-9C"


@dataclasses.dataclass(frozen=True)
class GowinPLLConfig:
    """One rPLL setting with internal feedback: ``f_out = f_in * fbdiv / idiv`` and
    ``f_vco = f_out * odiv`` (the primitive's ``*_SEL`` parameters are the dividers minus one,
    but for ``ODIV_SEL``, which is the divider itself)."""

    f_in: float
    idiv: int
    fbdiv: int
    odiv: int
    device: str

    @property
    def f_out(self):
        return self.f_in * self.fbdiv / self.idiv

    @property
    def f_vco(self):
        return self.f_out * self.odiv

    def __str__(self):
        return (f"{self.f_in / 1e6:g} MHz -> {self.f_out / 1e6:.4f} MHz (rPLL IDIV_SEL={self.idiv - 1} "
                f"FBDIV_SEL={self.fbdiv - 1} ODIV_SEL={self.odiv}, VCO {self.f_vco / 1e6:.1f} MHz)")


def gowin_pll_config(f_out, f_in, device, *, tolerance=0.01):
    """The rPLL setting closest to ``f_out`` from ``f_in`` (ties: lower output, then the VCO
    nearest 800 MHz).  Raises :class:`~pwlnet.hw.pll.PLLError` when nothing is within
    ``tolerance``."""
    if not GOWIN_F_IN[0] <= f_in <= GOWIN_F_IN[1]:
        raise PLLError(f"Gowin PLL input {f_in / 1e6:g} MHz is outside "
                       f"{GOWIN_F_IN[0] / 1e6:g}..{GOWIN_F_IN[1] / 1e6:g} MHz")
    if not GOWIN_F_OUT[0] <= f_out <= GOWIN_F_OUT[1]:
        raise PLLError(f"Gowin PLL output {f_out / 1e6:g} MHz is outside "
                       f"{GOWIN_F_OUT[0] / 1e6:g}..{GOWIN_F_OUT[1] / 1e6:g} MHz")
    best, best_key = None, None
    for idiv in range(1, GOWIN_IDIV + 1):
        if not GOWIN_F_PFD[0] <= f_in / idiv <= GOWIN_F_PFD[1]:
            continue
        for fbdiv in range(1, GOWIN_FBDIV + 1):
            out = f_in * fbdiv / idiv
            if not GOWIN_F_OUT[0] <= out <= GOWIN_F_OUT[1]:
                continue
            for odiv in GOWIN_ODIV:
                vco = out * odiv
                if not GOWIN_F_VCO[0] <= vco <= GOWIN_F_VCO[1]:
                    continue
                key = (abs(out - f_out), out, abs(vco - 800e6))
                if best_key is None or key < best_key:
                    best_key, best = key, GowinPLLConfig(f_in, idiv, fbdiv, odiv, device)
    if best is None or abs(best.f_out - f_out) > tolerance * f_out:
        near = f" (nearest: {best.f_out / 1e6:.4f} MHz)" if best else ""
        raise PLLError(f"no Gowin PLL setting makes {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz "
                       f"within {tolerance:.1%}{near}")
    return best




def clock_setting(source, mhz):
    """What ``source`` (a :class:`~pwlnet.boards.registry.ClockSource`) makes of ``mhz``.

    Returns a :class:`~pwlnet.hw.pll.PLLConfig` (iCE40), an :class:`ECP5PLLConfig`, a
    :class:`GowinPLLConfig` or an :class:`Oscillator`; each has ``f_out`` (Hz) and a ``str`` for the report.  A source
    without a PLL makes only its own frequency; another ``mhz`` is a ``ValueError``.
    """
    if source.pll in ("ice40-pad", "ice40-core"):
        return pll_config(mhz * 1e6, source.freq)
    if source.pll == "ecp5":
        return ecp5_pll_config(mhz * 1e6, source.freq)
    if source.pll == "gowin":
        return gowin_pll_config(mhz * 1e6, source.freq, GOWIN_PLL_DEVICE)
    if abs(mhz * 1e6 - source.freq) > 1e-6 * source.freq:
        raise ValueError(f"this board's clock is its {source.freq / 1e6:g} MHz oscillator without a PLL; "
                         f"{mhz:g} MHz cannot be made (give --target-mhz {source.freq / 1e6:g})")
    return Oscillator(source.freq, source.resource)


class _PLLClock(Elaboratable):
    """A PLL primitive fed from the clock pin through an input buffer, driving ``domain``
    from its output and holding it in reset until it locks (:func:`hold_reset`).  A
    subclass names its setting type (``CONFIG``) and makes the primitive (``_primitive``)."""

    CONFIG = None

    def __init__(self, config, pin, *, domain="sync"):
        if not isinstance(config, self.CONFIG):
            raise TypeError(f"config must be a{'n' if self.CONFIG.__name__[0] in 'AEIOU' else ''} "
                            f"{self.CONFIG.__name__}, not {config!r}")
        self.config, self.pin, self.domain = config, pin, domain
        self.locked = Signal()
        self.clk = Signal()

    def _primitive(self, clk_in):
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = buf = io.Buffer("i", self.pin)
        m.submodules.pll = self._primitive(buf.i)
        m.d.comb += ClockSignal(self.domain).eq(self.clk)
        hold_reset(m, self.clk, self.locked, self.config.f_out, self.domain)
        return m


class ICE40CorePLL(_PLLClock):
    """``SB_PLL40_CORE`` fed from a clock input that is no PLL pad, driving ``domain``.

    Parameters
    ----------
    config : PLLConfig
        From :func:`~pwlnet.hw.pll.pll_config` with the board's input frequency.
    pin : port
        The clock input, as ``platform.request(..., dir="-")`` returns it.
    domain : str
        The clock domain driven (the caller defines it).
    """

    CONFIG = PLLConfig

    def _primitive(self, clk_in):
        c = self.config
        return Instance("SB_PLL40_CORE",
                        p_FEEDBACK_PATH="SIMPLE", p_DIVR=c.divr, p_DIVF=c.divf, p_DIVQ=c.divq,
                        p_FILTER_RANGE=c.filter_range,
                        i_REFERENCECLK=clk_in, i_RESETB=C(1, 1), i_BYPASS=C(0, 1),
                        o_PLLOUTGLOBAL=self.clk, o_LOCK=self.locked)


class ECP5PLL(_PLLClock):
    """An ``EHXPLLL`` with CLKOP fed back, driving ``domain`` (see :func:`ecp5_pll_config`)."""

    CONFIG = ECP5PLLConfig

    def _primitive(self, clk_in):
        c = self.config
        return Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{c.f_in / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{c.f_out / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=c.clki_div, p_CLKFB_DIV=c.clkfb_div, p_FEEDBK_PATH="CLKOP",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=c.clkop_div, p_CLKOP_CPHASE=c.clkop_div - 1, p_CLKOP_FPHASE=0,
            i_RST=C(0, 1), i_STDBY=C(0, 1), i_CLKI=clk_in, i_CLKFB=self.clk,
            i_PHASESEL0=C(0, 1), i_PHASESEL1=C(0, 1), i_PHASEDIR=C(1, 1), i_PHASESTEP=C(1, 1),
            i_PHASELOADREG=C(1, 1), i_PLLWAKESYNC=C(0, 1), i_ENCLKOP=C(0, 1),
            o_CLKOP=self.clk, o_LOCK=self.locked)


class GowinPLL(_PLLClock):
    """A Gowin ``rPLL`` with internal feedback, driving ``domain`` (see :func:`gowin_pll_config`)."""

    CONFIG = GowinPLLConfig

    def _primitive(self, clk_in):
        c = self.config
        return Instance(
            "rPLL",
            p_FCLKIN=f"{c.f_in / 1e6:g}", p_DEVICE=c.device,
            p_IDIV_SEL=c.idiv - 1, p_FBDIV_SEL=c.fbdiv - 1, p_ODIV_SEL=c.odiv,
            p_DYN_IDIV_SEL="false", p_DYN_FBDIV_SEL="false", p_DYN_ODIV_SEL="false", p_DYN_DA_EN="false",
            p_DYN_SDIV_SEL=2, p_PSDA_SEL="0000", p_DUTYDA_SEL="1000",
            p_CLKFB_SEL="internal", p_CLKOUT_BYPASS="false", p_CLKOUTP_BYPASS="false",
            p_CLKOUTD_BYPASS="false", p_CLKOUTD_SRC="CLKOUT", p_CLKOUTD3_SRC="CLKOUT",
            p_CLKOUT_FT_DIR=C(1, 1), p_CLKOUTP_FT_DIR=C(1, 1), p_CLKOUT_DLY_STEP=0, p_CLKOUTP_DLY_STEP=0,
            i_CLKIN=clk_in, i_CLKFB=C(0, 1), i_RESET=C(0, 1), i_RESET_P=C(0, 1),
            i_FBDSEL=C(0, 6), i_IDSEL=C(0, 6), i_ODSEL=C(0, 6), i_PSDA=C(0, 4), i_DUTYDA=C(0, 4),
            i_FDLY=C(0, 4),
            o_CLKOUT=self.clk, o_LOCK=self.locked)


class DirectClock(Elaboratable):
    """The clock input drives ``domain`` directly; reset is held for a few microseconds."""

    def __init__(self, config, pin, *, domain="sync"):
        if not isinstance(config, Oscillator):
            raise TypeError(f"config must be an Oscillator, not {config!r}")
        self.config, self.pin, self.domain = config, pin, domain
        self.clk = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = buf = io.Buffer("i", self.pin)
        m.d.comb += [self.clk.eq(buf.i), ClockSignal(self.domain).eq(self.clk)]
        hold_reset(m, self.clk, C(1, 1), self.config.f_out, self.domain)
        return m


def add_sync_domain(m, platform, source, setting):
    """Define ``sync`` in ``m`` and drive it from ``source`` with ``setting`` (from
    :func:`clock_setting`); the iCE40 pad PLL is exactly the iCEBreaker's original top's."""
    pin = platform.request(source.resource, 0, dir="-")
    m.domains.sync = ClockDomain("sync")
    # No clock constraint here: nextpnr derives the PLL output's from the pad's.
    if source.pll == "ice40-pad":
        m.submodules.pll = ICE40PLL(setting, pin, domain="sync")
    elif source.pll == "ice40-core":
        m.submodules.pll = ICE40CorePLL(setting, pin, domain="sync")
    elif source.pll == "ecp5":
        m.submodules.pll = ECP5PLL(setting, pin, domain="sync")
    elif source.pll == "gowin":
        m.submodules.pll = GowinPLL(setting, pin, domain="sync")
    else:
        m.submodules.clk = DirectClock(setting, pin, domain="sync")
