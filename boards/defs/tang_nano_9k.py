"""Sipeed Tang Nano 9K (Gowin GW1NR-9C): the third device family, on the Apicula flow."""

from ..registry import ADAPTER_BAUDS, Board, ClockSource, HostLink
from ._devices import GW1NR9_QN88

BOARD = Board(
    name="tang_nano_9k",
    title="Sipeed Tang Nano 9K",
    # pwlnet's subclass runs nextpnr-himbaechel instead of the legacy nextpnr-gowin.
    platform="pwlnet.boards.defs._tang_nano_platform:TangNano9kPlatform",
    family="gowin",
    resources=GW1NR9_QN88,
    # The 27 MHz oscillator feeds an rPLL (pwlnet.boards.clocks.GowinPLL).
    clock=ClockSource("clk27", 27e6, "gowin"),
    # The on-board BL702 is the JTAG programmer and a USB serial port on pins 18 (rx) / 17 (tx);
    # its fastest rate is not documented, so 115 200 baud unless --baud asks for more.
    link=HostLink("BL702 USB serial port", ADAPTER_BAUDS, note="pins 18 (rx) and 17 (tx)"),
    # yosys' Gowin DSP mapping is left off (-nodsp, see pwlnet.boards.build), so the lanes
    # are LUT multipliers; DSP lanes on Gowin have not been tried yet.
    target="generic",
    lanes="fabric",
    # 54 MHz closed with fmax 65.8 MHz for iris at 5 lanes (one place and route).
    clocks_mhz=(54, 40.5, 27),
    leds=(("led", 0, None), ("led", 1, None), ("led", 2, None), ("led", 3, None)),
    programmers=(("openFPGALoader", "-b", "tangnano9k", "{bitstream}"),),
    bitstream_ext="fs",
    notes="LUT multipliers",
)
