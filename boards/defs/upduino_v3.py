"""UPduino v3 (iCE40UP5K): the iCEBreaker's engine, clocked from the 12 MHz oscillator."""

from amaranth.build import Attrs
from amaranth_boards.resources import UARTResource

from ..registry import ADAPTER_BAUDS, Board, ClockSource, HostLink
from ._devices import UP5K_SG48

BOARD = Board(
    name="upduino_v3",
    title="tinyVision.ai UPduino v3",
    platform="amaranth_boards.upduino_v3:UpduinoV3Platform",
    family="ice40",
    resources=UP5K_SG48,
    # The internal SB_HFOSC is off by up to 10 % (data sheet), too far for a UART, so the
    # build uses the 12 MHz oscillator; pin 20 is no PLL pad, hence SB_PLL40_CORE.
    clock=ClockSource("clk12", 12e6, "ice40-core",
                      note="solder the OSC jumper to bring the 12 MHz oscillator to pin 20"),
    # The FT232H on the board drives the flash (SPI), not a UART.
    link=HostLink(None, ADAPTER_BAUDS,
                  (UARTResource(0, rx="46", tx="47", attrs=Attrs(IO_STANDARD="SB_LVCMOS")),),
                  note="a 3.3 V USB-serial adapter's TX to pin 46 (rx), its RX to pin 47 (tx), and GND"),
    target="ice40",
    lanes="up5k",
    clocks_mhz=(64, 60, 56, 52, 48, 45, 42, 40, 36, 34, 32),
    leds=(("rgb_led", 0, "g"), ("rgb_led", 0, "r"), ("rgb_led", 0, "b")),
    programmers=(("iceprog", "{bitstream}"), ("openFPGALoader", "-b", "ice40_generic", "{bitstream}")),
)
