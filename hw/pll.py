"""iCE40 PLL configuration computed in Python, and the clock domain it drives.

The iCE40 PLL in simple-feedback mode produces::

    f_pfd = f_in / (DIVR + 1)          10 .. 133 MHz   (phase detector input)
    f_vco = f_pfd * (DIVF + 1)        533 .. 1066 MHz
    f_out = f_vco / 2**DIVQ            16 .. 275 MHz

with ``DIVR`` 0..15, ``DIVF`` 0..127, ``DIVQ`` 1..6, and the loop filter range chosen from
``f_pfd``.  :func:`pll_config` searches every legal setting for the one closest to the
requested frequency; :class:`ICE40PLL` instantiates it (``SB_PLL40_PAD`` or
``SB_PLL40_2F_PAD``) and holds the domain in reset until the PLL has locked and the
block RAMs have come out of their post-configuration blackout.
"""

import dataclasses

from amaranth import *
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["PLLConfig", "PLLError", "pll_config", "ICE40PLL", "hold_reset",
           "F_IN_RANGE", "F_PFD_RANGE", "F_VCO_RANGE", "F_OUT_RANGE"]

F_IN_RANGE = (10e6, 133e6)
F_PFD_RANGE = (10e6, 133e6)
F_VCO_RANGE = (533e6, 1066e6)
F_OUT_RANGE = (16e6, 275e6)
DIVR_MAX, DIVF_MAX, DIVQ_RANGE = 15, 127, (1, 6)

# Upper f_pfd bound (MHz, exclusive) of loop filter ranges 1..5; above the last is range 6.
_FILTER_BOUNDS = (17, 26, 44, 66, 101)


class PLLError(ValueError):
    """A frequency the PLL cannot make (or an input it cannot take)."""


@dataclasses.dataclass(frozen=True)
class PLLConfig:
    """One legal PLL setting and the frequencies it gives (Hz)."""

    f_in: float
    divr: int
    divf: int
    divq: int
    filter_range: int

    @property
    def f_pfd(self):
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self):
        return self.f_pfd * (self.divf + 1)

    @property
    def f_out(self):
        """The achieved output frequency."""
        return self.f_vco / (1 << self.divq)

    def __str__(self):
        return (f"{self.f_in / 1e6:g} MHz -> {self.f_out / 1e6:.4f} MHz (DIVR={self.divr} "
                f"DIVF={self.divf} DIVQ={self.divq} FILTER_RANGE={self.filter_range}, "
                f"VCO {self.f_vco / 1e6:.1f} MHz)")


def _filter_range(f_pfd):
    mhz = f_pfd / 1e6
    for i, bound in enumerate(_FILTER_BOUNDS):
        if mhz < bound:
            return i + 1
    return len(_FILTER_BOUNDS) + 1


def pll_config(f_out, f_in=12e6, *, tolerance=0.01):
    """The legal PLL setting whose output is closest to ``f_out``.

    Parameters
    ----------
    f_out : float
        Requested output frequency in Hz.
    f_in : float
        Reference frequency in Hz (the iCEBreaker's oscillator: 12 MHz).
    tolerance : float
        Largest accepted relative error of the achieved frequency.

    Returns
    -------
    PLLConfig
        Ties are broken toward the lower frequency (timing margin), then toward the
        higher phase-detector frequency (less jitter).

    Raises
    ------
    PLLError
        If ``f_in`` or ``f_out`` is out of range or nothing is within ``tolerance``.
    """
    if not F_IN_RANGE[0] <= f_in <= F_IN_RANGE[1]:
        raise PLLError(f"PLL input {f_in / 1e6:g} MHz is outside "
                       f"{F_IN_RANGE[0] / 1e6:g}..{F_IN_RANGE[1] / 1e6:g} MHz")
    if not F_OUT_RANGE[0] <= f_out <= F_OUT_RANGE[1]:
        raise PLLError(f"PLL output {f_out / 1e6:g} MHz is outside "
                       f"{F_OUT_RANGE[0] / 1e6:g}..{F_OUT_RANGE[1] / 1e6:g} MHz")
    best, best_key = None, None
    for divr in range(DIVR_MAX + 1):
        f_pfd = f_in / (divr + 1)
        if not F_PFD_RANGE[0] <= f_pfd <= F_PFD_RANGE[1]:
            continue
        for divf in range(DIVF_MAX + 1):
            f_vco = f_pfd * (divf + 1)
            if not F_VCO_RANGE[0] <= f_vco <= F_VCO_RANGE[1]:
                continue
            for divq in range(DIVQ_RANGE[0], DIVQ_RANGE[1] + 1):
                out = f_vco / (1 << divq)
                if not F_OUT_RANGE[0] <= out <= F_OUT_RANGE[1]:
                    continue
                key = (abs(out - f_out), out, -f_pfd)
                if best_key is None or key < best_key:
                    best_key = key
                    best = PLLConfig(f_in, divr, divf, divq, _filter_range(f_pfd))
    if best is None or abs(best.f_out - f_out) > tolerance * f_out:
        near = f" (nearest: {best.f_out / 1e6:.4f} MHz)" if best else ""
        raise PLLError(f"no PLL setting makes {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz "
                       f"within {tolerance:.1%}{near}")
    return best


class ICE40PLL(Elaboratable):
    """The PLL fed from a clock pad, driving clock domain ``domain``.

    The caller defines the domain (``m.domains.sync = ClockDomain()``, and
    ``sync_half`` for the two-output variant); this block drives its clock and reset.

    Parameters
    ----------
    config : PLLConfig
        From :func:`pll_config`.
    pin : port
        The clock input pad, as ``platform.request("clk12", dir="-")`` returns it; it must
        be a PLL-capable pad (pin 35 on the iCEBreaker).
    domain : str
        Name of the clock domain created.
    variant : str
        ``"SB_PLL40_PAD"`` (one output) or ``"SB_PLL40_2F_PAD"`` (port A is the PLL
        output; port B, half of it, drives domain ``domain + "_half"``).
    reset_delay : float
        Seconds the domain stays in reset after lock; iCE40 block RAMs read as zero for
        about 3 us after configuration.

    Attributes
    ----------
    locked : Signal
        The PLL's LOCK output.
    clk : Signal
        The PLL's output clock (for ``platform.add_clock_constraint``).
    """

    VARIANTS = ("SB_PLL40_PAD", "SB_PLL40_2F_PAD")

    def __init__(self, config, pin, *, domain="sync", variant="SB_PLL40_PAD", reset_delay=15e-6):
        if not isinstance(config, PLLConfig):
            raise TypeError(f"config must be a PLLConfig, not {config!r}")
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, not {variant!r}")
        self.config = config
        self.pin = pin
        self.domain = domain
        self.variant = variant
        self.reset_delay = reset_delay
        self.locked = Signal()
        self.clk = Signal()

    def elaborate(self, platform):
        m = Module()
        c = self.config
        clk = self.clk
        params = dict(
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=c.divr, p_DIVF=c.divf, p_DIVQ=c.divq, p_FILTER_RANGE=c.filter_range,
            i_PACKAGEPIN=self.pin.io,
            i_RESETB=C(1, 1), i_BYPASS=C(0, 1),
            o_LOCK=self.locked,
        )
        if self.variant == "SB_PLL40_PAD":
            m.submodules.pll = Instance("SB_PLL40_PAD", o_PLLOUTGLOBAL=clk, **params)
        else:
            half = Signal()
            m.submodules.pll = Instance("SB_PLL40_2F_PAD",
                                        p_PLLOUT_SELECT_PORTA="GENCLK",
                                        p_PLLOUT_SELECT_PORTB="GENCLK_HALF",
                                        o_PLLOUTGLOBALA=clk, o_PLLOUTGLOBALB=half, **params)
            m.d.comb += ClockSignal(self.domain + "_half").eq(half)
            m.submodules.rst_half = ResetSynchronizer(~self.locked, domain=self.domain + "_half")
        m.d.comb += ClockSignal(self.domain).eq(clk)

        hold_reset(m, clk, self.locked, c.f_out, self.domain, self.reset_delay, por="pll_por")
        return m


def hold_reset(m, clk, ready_in, f_clk, domain, delay=15e-6, *, por="clk_por"):
    """Hold ``domain`` (clocked by ``clk``) in reset until ``ready_in`` (a PLL's LOCK, or 1)
    has been high for ``delay`` seconds.

    The count runs in the new clock, in a reset-less local domain ``por`` whose flip-flops
    power up at zero; iCE40 block RAMs read as zero for about 3 us after configuration.
    """
    cycles = max(1, int(delay * f_clk))
    timer = Signal(range(cycles + 1))
    ready = Signal()
    m.domains += ClockDomain(por, reset_less=True, local=True)
    m.d.comb += ClockSignal(por).eq(clk)
    with m.If(~ready_in):
        m.d[por] += [timer.eq(0), ready.eq(0)]
    with m.Elif(timer == cycles):
        m.d[por] += ready.eq(1)
    with m.Else():
        m.d[por] += timer.eq(timer + 1)
    m.submodules.rst_sync = ResetSynchronizer(~ready, domain=domain)
