"""The iCEBreaker top level (:class:`~pwlnet.boards.top.BoardTop` on the iCEBreaker), its
link rates and its lane rule, which every iCE40UP5K board shares.

The same :class:`ICEBreakerTop` runs on the board and in Amaranth's simulator (see
:mod:`pwlnet.boards.top`); the board itself is described in
:mod:`pwlnet.boards.defs.icebreaker`.

LEDs on the board: green = heartbeat (the PLL clock runs and reset is released),
red = error reply sent (held 0.1 s); on the snap-off PMOD: green 1 = busy (held 0.1 s),
red 1 = UART framing error or overrun (held 0.1 s).
"""

from ..hw.engine.plan import ICE40_DSPS, EnginePlan
from .registry import FTDI_BAUDS
from .top import LED_NAMES, BoardTop
from .top import link_baud as _link_baud

__all__ = ["ICEBreakerTop", "LINK_BAUDS", "DEFAULT_BAUD", "link_baud", "LED_NAMES", "MAX_LANES", "auto_lanes"]

#: Bit rates of the host link on this board, fastest first: rates the FT2232H's UART
#: channel makes exactly (3 Mbaud is its 12 MHz clock over 4).  A build takes the fastest
#: one its fabric clock divides within the UART's tolerance (:func:`link_baud`).
LINK_BAUDS = FTDI_BAUDS
DEFAULT_BAUD = LINK_BAUDS[0]


def link_baud(clk_freq, baud=None):
    """The link's ``(baud, divisor)`` at a fabric clock of ``clk_freq`` Hz.

    ``baud`` given: that rate, checked by :func:`pwlnet.hw.uart.baud_divisor` (which raises
    if the clock cannot make it within tolerance).  ``None``: the fastest of
    :data:`LINK_BAUDS` the clock makes within tolerance (:func:`pwlnet.boards.top.link_baud`).
    """
    return _link_baud(clk_freq, baud, LINK_BAUDS)


#: Most lanes the UP5K carries: its eight SB_MAC16 blocks, each as two 8x8 multipliers.
MAX_LANES = 2 * ICE40_DSPS


def auto_lanes(model, cache_entries=0):
    """The lane count a build takes when none is given: ``(lanes, why)``.

    :data:`MAX_LANES` (two 8x8 lanes per DSP) when the weights and activations fit 8 bits
    and the 128-bit weight words stay in EBR; else :data:`~pwlnet.hw.engine.plan.ICE40_DSPS`
    (one lane per DSP, and a 64-bit word that SPRAM can give).  A cached build keeps
    :data:`~pwlnet.hw.engine.plan.ICE40_DSPS`: its comparator bank and slot images already
    take nearly all the EBR.
    """
    if cache_entries:
        return ICE40_DSPS, "the cached top is built with one lane per DSP"
    plan = EnginePlan(model, MAX_LANES)
    if not plan.mac_pairs("ice40"):
        return ICE40_DSPS, (f"{plan.weight_bits}-bit weights and {plan.x_bits}-bit activations do not fit "
                            f"the DSP's 8x8 halves")
    try:
        if plan.weight_memory_for("ice40") != "rom":
            raise ValueError
    except ValueError:
        return ICE40_DSPS, "the weights need SPRAM, whose 64-bit word feeds 8 lanes"
    return MAX_LANES, "two 8x8 lanes per DSP, weights in EBR"


class ICEBreakerTop(BoardTop):
    """:class:`~pwlnet.boards.top.BoardTop` on the iCEBreaker (the default board), with the
    ``"ice40"`` engine target unless another is given; every parameter as there."""

    def __init__(self, model, **kwargs):
        kwargs.setdefault("board", "icebreaker")
        super().__init__(model, **kwargs)
