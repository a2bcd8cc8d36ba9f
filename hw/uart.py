"""8N1 UART receiver and transmitter with :mod:`amaranth.lib.stream` byte interfaces.

Both halves take a ``divisor``: clock cycles per bit, ``round(clk_freq / baud)``
(:func:`baud_divisor` computes it and rejects clocks whose rounding error would break
the link).  The receiver samples each bit in its middle and passes the line through a
two-flip-flop synchroniser first, because the pin is asynchronous to the fabric clock.
"""

from amaranth import *
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "baud_divisor", "UARTTx", "UARTRx"]

#: Smallest supported divisor: mid-bit sampling needs a half bit of at least 2 cycles.
MIN_DIVISOR = 4


def _check_divisor(divisor):
    if isinstance(divisor, bool) or not isinstance(divisor, int):
        raise TypeError(f"divisor must be an integer, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} cycles per bit, not {divisor}")
    return divisor


def baud_divisor(clk_freq, baud, *, tolerance=0.02):
    """Cycles per bit for ``baud`` at ``clk_freq`` Hz.

    Parameters
    ----------
    clk_freq : float
        Fabric clock in Hz.
    baud : int
        Requested bit rate.
    tolerance : float
        Largest relative baud error accepted.  Both ends of an 8N1 link sample the
        stop bit 9.5 bits after the start edge, so the two clocks together may differ by
        about 5 %; 2 % leaves the host's share.

    Returns
    -------
    int
        The divisor (at least :data:`MIN_DIVISOR`).

    Raises
    ------
    ValueError
        If the clock is too slow for the rate or the rounding error exceeds ``tolerance``.
    """
    if not baud > 0:
        raise ValueError(f"baud must be positive, not {baud!r}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud {baud} is too fast for a {clk_freq / 1e6:.3f} MHz clock "
                         f"(needs at least {MIN_DIVISOR} cycles per bit)")
    actual = clk_freq / divisor
    error = abs(actual - baud) / baud
    if error > tolerance:
        raise ValueError(f"baud {baud} at {clk_freq / 1e6:.3f} MHz gives {actual:.0f} baud "
                         f"({error:.1%} off, more than {tolerance:.1%})")
    return divisor


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send; ``ready`` (a register) is high while the one-byte holding register
        is empty, which it is again as soon as its byte moves into the shift register.
    tx : Out(1)
        The serial line (idles high).
    """

    def __init__(self, divisor):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "i":  In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        # Start bit, 8 data bits LSB first, stop bit: shifted out from bit 0.
        shreg = Signal(10, init=1)
        bits = Signal(range(11))
        timer = Signal(range(self._divisor))
        expired = Signal()   # `timer == 0`, registered (see UARTRx)
        # A one-byte holding register in front of the shift register: `ready` is a flip-flop
        # (not decoded from the bit counter), so the sender's logic and this transmitter's
        # load do not share a cycle.  A byte waits there at most until the stop bit of
        # the one before has gone out; the next byte's start bit follows it directly.
        hold = Signal(8)
        full = Signal()

        m.d.comb += [
            self.tx.eq(shreg[0]),
            self.i.ready.eq(~full),
        ]
        with m.If(self.i.valid & ~full):
            m.d.sync += [hold.eq(self.i.payload), full.eq(1)]
        with m.If(bits == 0):
            with m.If(full):
                m.d.sync += [
                    shreg.eq(Cat(C(0, 1), hold, C(1, 1))),
                    bits.eq(10), full.eq(0),
                    timer.eq(self._divisor - 1), expired.eq(0),
                ]
        with m.Elif(expired):
            # Shift in ones so the line idles high once the stop bit has gone out.
            m.d.sync += [
                shreg.eq(Cat(shreg[1:], C(1, 1))),
                bits.eq(bits - 1),
                timer.eq(self._divisor - 1), expired.eq(0),
            ]
        with m.Else():
            m.d.sync += [timer.eq(timer - 1), expired.eq(timer == 1)]
        return m


class UARTRx(wiring.Component):
    """8N1 receiver with mid-bit sampling.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.

    Attributes
    ----------
    rx : In(1)
        The serial line, asynchronous to the clock (idles high).
    o : Out(stream.Signature(8))
        Received bytes.  A byte waits in an output register until taken; a byte that
        completes while the previous one is still waiting is dropped and flagged.
    frame_error : Out(1)
        One-cycle pulse (registered): the stop bit was low (wrong baud, noise or a break).
    overrun : Out(1)
        One-cycle pulse (registered): a byte was dropped because ``o`` was not ready in time.
    """

    def __init__(self, divisor):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "rx":          In(1, init=1),
            "o":           Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun":     Out(1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor

        rx = Signal(init=1)
        # Two flip-flops: the first may go metastable, the second gives it a cycle to settle.
        m.submodules.sync = cdc.FFSynchronizer(self.rx, rx, init=1, stages=2)

        timer = Signal(range(div))
        # `expired` is `timer == 0`, registered: the comparison then sits off the paths
        # from the timer into the state logic (every reload value is at least 1).  The
        # countdown is the default of every cycle; the states below only reload it.
        expired = Signal()
        m.d.sync += [timer.eq(timer - 1), expired.eq(timer == 1)]
        shreg = Signal(8)
        bitno = Signal(range(8))
        last_bit = Signal()      # `bitno == 7`, registered with bitno
        stop_ok = Signal()       # the stop bit's sample, decided upon a cycle later

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        # Error flags are registered pulses so their users are not timed through the
        # consumer's `ready` logic.
        m.d.sync += [self.overrun.eq(0), self.frame_error.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # Half a bit to reach the middle of the start bit.
                    m.d.sync += [timer.eq(div // 2 - 1), expired.eq(0)]
                    m.next = "START"
            with m.State("START"):
                with m.If(expired):
                    with m.If(rx):
                        # A glitch shorter than half a bit, not a start bit.
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), expired.eq(0), bitno.eq(0), last_bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(expired):
                    m.d.sync += [
                        shreg.eq(Cat(shreg[1:], rx)),
                        timer.eq(div - 1), expired.eq(0),
                        bitno.eq(bitno + 1), last_bit.eq(bitno == 6),
                    ]
                    with m.If(last_bit):
                        m.next = "STOP"
            with m.State("STOP"):
                # The middle of the stop bit: sample it, and decide in CHECK (half a bit
                # is left before the next start bit can begin).
                with m.If(expired):
                    m.d.sync += stop_ok.eq(rx)
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(stop_ok):
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.frame_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                # Wait for the line to go idle so a held-low line is not read as 0x00 bytes.
                with m.If(rx):
                    m.next = "IDLE"
        return m
