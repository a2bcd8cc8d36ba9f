"""iCEstick (iCE40HX1K): no DSP, no SPRAM, 1280 logic cells, 16 EBR: binarized models on the
small link (the composed link alone takes about 950 LUT4s)."""

from ..registry import FTDI_BAUDS, Board, ClockSource, HostLink
from ._devices import HX1K_TQ144

BOARD = Board(
    name="icestick",
    title="Lattice iCEstick",
    platform="amaranth_boards.icestick:ICEStickPlatform",
    family="ice40",
    resources=HX1K_TQ144,
    clock=ClockSource("clk12", 12e6, "ice40-core"),
    link=HostLink("FT2232H (channel B)", FTDI_BAUDS, gateware="small"),
    target="generic",
    lanes="fabric",
    clocks_mhz=(96, 84, 72, 60, 48, 42, 36, 32, 24),
    leds=(("led", 0, None), ("led", 1, None), ("led", 2, None), ("led", 3, None)),
    programmers=(("iceprog", "{bitstream}"), ("openFPGALoader", "-b", "ice40_generic", "{bitstream}")),
    default_model="digits_b64x64.onnx",
    notes="binarized models only (pwlnet train --binary): an MLP's LUT multipliers do not fit (see docs/boards.md)",
)
