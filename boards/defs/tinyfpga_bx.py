"""TinyFPGA BX (iCE40LP8K): no DSP, no SPRAM, 7680 logic cells, 32 EBR."""

from amaranth.build import Attrs
from amaranth_boards.resources import UARTResource

from ..registry import ADAPTER_BAUDS, Board, ClockSource, HostLink
from ._devices import LP8K_CM81

BOARD = Board(
    name="tinyfpga_bx",
    title="TinyFPGA BX",
    platform="amaranth_boards.tinyfpga_bx:TinyFPGABXPlatform",
    family="ice40",
    resources=LP8K_CM81,
    clock=ClockSource("clk16", 16e6, "ice40-core"),
    # The USB port goes straight to the FPGA (a USB core in the design would be needed to
    # use it); the link runs on two header pins instead.
    link=HostLink(None, ADAPTER_BAUDS,
                  (UARTResource(0, rx="2", tx="1", conn=("gpio", 0), attrs=Attrs(IO_STANDARD="SB_LVCMOS")),),
                  note="a 3.3 V USB-serial adapter's TX to pin 2 (rx), its RX to pin 1 (tx), and GND"),
    target="generic",
    lanes="fabric",
    clocks_mhz=(72, 64, 60, 56, 52, 48, 42, 36, 32, 24),
    leds=(("led", 0, None),),
    programmers=(("tinyprog", "-p", "{bitstream}"),),
    notes="LUT multipliers (the LP8K has no DSP)",
)
