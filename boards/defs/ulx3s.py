"""ULX3S with the ECP5 LFE5U-85F: 156 18x18 multipliers, 208 EBR."""

from ..registry import FTDI_BAUDS, Board, ClockSource, HostLink
from ._devices import ECP5_85F_BG381

BOARD = Board(
    name="ulx3s",
    title="Radiona ULX3S (85F)",
    platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
    family="ecp5",
    resources=ECP5_85F_BG381,
    clock=ClockSource("clk25", 25e6, "ecp5"),
    link=HostLink("FT231X", FTDI_BAUDS),
    target="generic",
    lanes="dsp",
    clocks_mhz=(100, 90, 80, 75, 70, 65, 60, 55, 50, 45, 40),
    leds=(("led", 0, None), ("led", 1, None), ("led", 2, None), ("led", 3, None)),
    programmers=(("openFPGALoader", "-b", "ulx3s", "{bitstream}"), ("fujprog", "{bitstream}")),
    bitstream_ext="bit",
)
