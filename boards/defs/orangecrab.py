"""OrangeCrab r0.2 with the ECP5 LFE5U-25F: 28 18x18 multipliers, 56 EBR."""

from amaranth.build import Attrs
from amaranth_boards.resources import UARTResource

from ..registry import ADAPTER_BAUDS, Board, ClockSource, HostLink
from ._devices import ECP5_25F_MG285

BOARD = Board(
    name="orangecrab",
    title="Good Stuff Department OrangeCrab r0.2 (25F)",
    # pwlnet's subclass of the amaranth-boards platform leaves out the dfu-suffix step
    # (not on PyPI); the bootloader takes the plain bitstream through openFPGALoader.
    platform="pwlnet.boards.defs._orangecrab_platform:OrangeCrab25FPlatform",
    family="ecp5",
    resources=ECP5_25F_MG285,
    clock=ClockSource("clk", 48e6, "ecp5"),
    # The USB port goes straight to the FPGA; the link runs on the Feather header's
    # RX/TX pins (0 and 1) instead.
    link=HostLink(None, ADAPTER_BAUDS,
                  (UARTResource(0, rx="0", tx="1", conn=("io", 0), attrs=Attrs(IO_TYPE="LVCMOS33")),),
                  note="a 3.3 V USB-serial adapter's TX to header pin 0 (rx), its RX to pin 1 (tx), and GND"),
    target="generic",
    lanes="dsp",
    # What the EHXPLLL makes exactly from 48 MHz (its phase detector needs 3.125 MHz or more).
    clocks_mhz=(120, 112, 104, 96, 80, 72, 64, 60, 56, 52, 48, 40, 36),
    leds=(("rgb_led", 0, "g"), ("rgb_led", 0, "r"), ("rgb_led", 0, "b")),
    programmers=(("dfu-util", "-a", "0", "-D", "{bitstream}"), ("openFPGALoader", "-b", "orangecrab", "{bitstream}")),
    bitstream_ext="bit",
)
