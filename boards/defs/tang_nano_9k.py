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
    # pwlnet has no Gowin PLL (rPLL) generator yet: the 27 MHz oscillator drives the fabric.
    clock=ClockSource("clk27", 27e6, "none", note="pwlnet has no Gowin rPLL generator yet"),
    # The on-board BL702 is the JTAG programmer and a USB serial port on pins 18 (rx) / 17 (tx);
    # its fastest rate is not documented, so 115 200 baud unless --baud asks for more.
    link=HostLink("BL702 USB serial port", ADAPTER_BAUDS, note="pins 18 (rx) and 17 (tx)"),
    # yosys' Gowin DSP mapping is left off (-nodsp, see pwlnet.boards.build), so the lanes
    # are LUT multipliers; DSP lanes on Gowin have not been tried yet.
    target="generic",
    lanes="fabric",
    clocks_mhz=(27,),
    leds=(("led", 0, None), ("led", 1, None), ("led", 2, None), ("led", 3, None)),
    programmers=(("openFPGALoader", "-b", "tangnano9k", "{bitstream}"),),
    bitstream_ext="fs",
    notes="LUT multipliers, 27 MHz without a PLL",
)
