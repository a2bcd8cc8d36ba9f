"""iCESugar v1.5 (iCE40UP5K): the iCEBreaker's device, clock pad and engine."""

from ..registry import ADAPTER_BAUDS, Board, ClockSource, HostLink
from ._devices import UP5K_SG48

BOARD = Board(
    name="icesugar",
    title="MuseLab iCESugar",
    platform="amaranth_boards.icesugar:ICESugarPlatform",
    family="ice40",
    resources=UP5K_SG48,
    clock=ClockSource("clk12", 12e6, "ice40-pad"),
    # The iCELink (an STM32 on the board) is both the programmer and a USB CDC serial port
    # wired to FPGA pins 4 (rx) and 6 (tx); its fastest rate is not documented, so the build
    # takes 115 200 baud unless --baud asks for more.
    link=HostLink("iCELink USB CDC serial port", ADAPTER_BAUDS,
                  note="pins 4 (rx) and 6 (tx); faster rates with --baud if the iCELink firmware makes them"),
    target="ice40",
    lanes="up5k",
    clocks_mhz=(64, 60, 56, 52, 48, 45, 42, 40, 36, 34, 32),
    leds=(("led_g", 0, None), ("led_r", 0, None), ("led_b", 0, None)),
    programmers=(("icesprog", "{bitstream}"), ("openFPGALoader", "-b", "ice40_generic", "{bitstream}")),
)
