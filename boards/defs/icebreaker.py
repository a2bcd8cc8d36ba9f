"""iCEBreaker (iCE40UP5K): the board pwlnet was first built for."""

from ..registry import FTDI_BAUDS, Board, ClockSource, HostLink
from ._devices import UP5K_SG48

BOARD = Board(
    name="icebreaker",
    title="1BitSquared iCEBreaker",
    platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
    family="ice40",
    resources=UP5K_SG48,
    clock=ClockSource("clk12", 12e6, "ice40-pad"),
    link=HostLink("FT2232H (channel B)", FTDI_BAUDS),
    target="ice40",
    lanes="up5k",
    clocks_mhz=(64, 60, 56, 52, 48, 45, 42, 40, 36, 34, 32),
    leds=(("led_g", 0, None), ("led_r", 0, None), ("led_g", 1, None), ("led_r", 1, None)),
    programmers=(("iceprog", "{bitstream}"), ("openFPGALoader", "-b", "ice40_generic", "{bitstream}")),
    extra="break_off_pmod",
)
