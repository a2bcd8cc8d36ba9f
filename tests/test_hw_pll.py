# amaranth: UnusedElaboratable=no
"""PLL configuration search and the PLL block's checks."""

import pytest
from amaranth import *
from amaranth.back import rtlil

from pwlnet.hw.pll import (F_OUT_RANGE, F_PFD_RANGE, F_VCO_RANGE, ICE40PLL, PLLError,
                           pll_config)


def _legal(c):
    assert 0 <= c.divr <= 15 and 0 <= c.divf <= 127 and 1 <= c.divq <= 6
    assert F_PFD_RANGE[0] <= c.f_pfd <= F_PFD_RANGE[1]
    assert F_VCO_RANGE[0] <= c.f_vco <= F_VCO_RANGE[1]
    assert F_OUT_RANGE[0] <= c.f_out <= F_OUT_RANGE[1]
    assert 1 <= c.filter_range <= 6


def test_exact_48():
    c = pll_config(48e6)
    assert (c.divr, c.divf, c.divq, c.filter_range) == (0, 63, 4, 1)
    assert c.f_out == 48e6


def test_64_is_approximated_and_reported():
    c = pll_config(64e6)
    _legal(c)
    assert c.f_out == 63.75e6          # 12 MHz * 85 / 16; 64.5 MHz is farther away
    assert "63.7500 MHz" in str(c)


@pytest.mark.parametrize("mhz", [16, 20, 25, 30, 33.3, 40, 50, 60, 66, 80, 100, 120, 150, 200, 270])
def test_many_frequencies_are_legal_and_close(mhz):
    c = pll_config(mhz * 1e6)
    _legal(c)
    # From 12 MHz the output grid is 12/2**DIVQ MHz wide, well inside 1 %.
    assert abs(c.f_out - mhz * 1e6) <= 0.01 * mhz * 1e6


def test_other_reference_uses_divr():
    c = pll_config(48e6, f_in=100e6)
    _legal(c)
    assert c.divr > 0 and abs(c.f_out - 48e6) <= 0.48e6


@pytest.mark.parametrize("pfd_mhz, rng", [(10, 1), (16.9, 1), (17, 2), (25, 2), (26, 3), (43, 3),
                                          (44, 4), (65, 4), (66, 5), (100, 5), (101, 6), (133, 6)])
def test_filter_range_by_pfd(pfd_mhz, rng):
    from pwlnet.hw.pll import _filter_range
    assert _filter_range(pfd_mhz * 1e6) == rng


@pytest.mark.parametrize("f_out, f_in, msg", [
    (10e6, 12e6, "outside 16..275 MHz"),
    (300e6, 12e6, "outside 16..275 MHz"),
    (48e6, 5e6, "PLL input 5 MHz is outside"),
])
def test_out_of_range(f_out, f_in, msg):
    with pytest.raises(PLLError, match=msg):
        pll_config(f_out, f_in)


def test_tolerance():
    with pytest.raises(PLLError, match="nearest"):
        pll_config(64e6, tolerance=1e-4)


def test_pll_block_checks_arguments():
    with pytest.raises(TypeError, match="config must be a PLLConfig"):
        ICE40PLL((0, 63, 4, 1), pin=None)
    with pytest.raises(ValueError, match="variant must be one of"):
        ICE40PLL(pll_config(48e6), pin=None, variant="SB_PLL40_CORE")


@pytest.mark.parametrize("variant", ICE40PLL.VARIANTS)
def test_pll_block_elaborates(variant):
    # The instance and its parameters reach the netlist (no simulation: it is a primitive).
    from amaranth.hdl import IOPort

    class Pin:
        io = IOPort(1, name="clk12")

    c = pll_config(48e6)
    pll = ICE40PLL(c, Pin(), variant=variant)
    m = Module()
    m.domains.sync = ClockDomain()
    if variant == "SB_PLL40_2F_PAD":
        m.domains.sync_half = ClockDomain()
    m.submodules.pll = pll
    counter = Signal(4)
    m.d.sync += counter.eq(counter + 1)
    text = rtlil.convert(m, ports=[counter])
    assert variant in text
    assert "DIVF" in text and "63" in text
