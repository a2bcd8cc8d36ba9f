"""The iCEBreaker top level: PLL, MLP engine (optionally with the hypersphere cache),
framed UART link and status LEDs.

The same :class:`ICEBreakerTop` runs on the board and in Amaranth's simulator.  Elaborated
for a platform it makes its clock with the PLL from the 12 MHz pad and drives the FTDI
UART pins and LEDs; elaborated with ``platform=None`` it uses the simulator's ``sync``
clock and exposes the pins as its ports (``uart_rx``, ``uart_tx``, ``leds``), which is
what :class:`pwlnet.host.SimTransport` drives bit by bit.

LEDs on the board: green = heartbeat (the PLL clock runs and reset is released),
red = error reply sent (held 0.1 s); on the snap-off PMOD: green 1 = busy (held 0.1 s),
red 1 = UART framing error or overrun (held 0.1 s).
"""

from amaranth import *
from amaranth.build import ResourceError
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from ..hw.link import Link
from ..protocol import check_cache_entries
from ..hw.pll import ICE40PLL, PLLConfig, pll_config
from ..hw.uart import UARTRx, UARTTx, baud_divisor
from ..hw.engine import MLPEngine
from ..hw.engine.plan import ICE40_DSPS, EnginePlan

__all__ = ["ICEBreakerTop", "LINK_BAUDS", "DEFAULT_BAUD", "link_baud", "LED_NAMES", "MAX_LANES", "auto_lanes"]

#: Bit rates of the host link on this board, fastest first: rates the FT2232H's UART
#: channel makes exactly (3 Mbaud is its 12 MHz clock over 4).  A build takes the fastest
#: one its fabric clock divides within the UART's tolerance (:func:`link_baud`).
LINK_BAUDS = (3_000_000, 1_000_000, 115_200)
DEFAULT_BAUD = LINK_BAUDS[0]


def link_baud(clk_freq, baud=None):
    """The link's ``(baud, divisor)`` at a fabric clock of ``clk_freq`` Hz.

    ``baud`` given: that rate, checked by :func:`pwlnet.hw.uart.baud_divisor` (which raises
    if the clock cannot make it within tolerance).  ``None``: the fastest of
    :data:`LINK_BAUDS` the clock makes within tolerance.
    """
    if baud is not None:
        return baud, baud_divisor(clk_freq, baud)
    errors = []
    for rate in LINK_BAUDS:
        try:
            return rate, baud_divisor(clk_freq, rate)
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(f"no link rate of this board fits a {clk_freq / 1e6:.3f} MHz clock: " + "; ".join(errors))


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


#: Order of the bits of :attr:`ICEBreakerTop.leds`.
LED_NAMES = ("heartbeat", "error", "busy", "uart_error")


class ICEBreakerTop(wiring.Component):
    """Board top level.

    Parameters
    ----------
    model : CompiledModel
        The network.
    lanes : int
        Engine lanes: 8 fills the UP5K's DSPs one lane each (and the SPRAM word); up to
        :data:`MAX_LANES` with 8-bit operands, two per DSP (:func:`auto_lanes` chooses).
    clk_freq : float
        Fabric clock in Hz.  On the board it is made by the PLL (pass ``pll`` to fix the
        setting; otherwise the closest one to ``clk_freq`` is chosen and ``clk_freq``
        becomes what it achieves).
    baud : int or None
        UART bit rate; ``None``: the fastest of :data:`LINK_BAUDS` the clock makes
        (:func:`link_baud`).
    divisor : int or None
        Cycles per UART bit; default from ``baud`` (:func:`link_baud`).  Simulations pass a
        small one.
    target : str
        Engine target: ``"ice40"`` (SPRAM / DSP instances) or ``"generic"``.
    timeout : int or None
        Link frame timeout in cycles; default 50 ms.
    engine : callable or None
        ``engine(model, lanes, target=...)`` makes the engine; default the real
        :class:`~pwlnet.hw.engine.MLPEngine`.  With a cache it is called as
        ``engine(model, lanes, cache_entries, cache_metric, target=..., preload=...)``;
        default :class:`~pwlnet.hw.cached_engine.CachedEngine`.
    pll : PLLConfig or None
        PLL setting for board builds.
    cache_entries : int
        Slots of the hypersphere cache (0: no cache).  The link then implements the cache
        commands (``CACHE_WRITE``, ``CACHE_CLEAR``, ``CACHE_STATS``, ``CACHE_INFO``, see
        ``docs/protocol.md``).
    cache_metric : {"linf", "l2", "l1"}
        The comparator bank's distance.
    cache_preload : sequence of HwEntry
        Entries the slots hold at configuration (slots 0, 1, ...).
    max_batch : int
        Inputs per INFER_BATCH frame the link takes (0: none; see
        :class:`~pwlnet.hw.link.Link`).  The simulated board keeps the link's default;
        the bitstream build leaves batches out unless asked (``--batch``).

    Attributes
    ----------
    uart_rx : In(1)
        Serial input (simulation; on the board the FTDI pin is used).
    uart_tx : Out(1)
        Serial output (simulation).
    leds : Out(4)
        Status, see :data:`LED_NAMES` (simulation).
    """

    def __init__(self, model, *, lanes=8, clk_freq=48e6, baud=None, divisor=None,
                 target="ice40", timeout=None, engine=None, pll=None, cache_entries=0,
                 cache_metric="linf", cache_preload=(), max_batch=16):
        if pll is not None:
            if not isinstance(pll, PLLConfig):
                raise TypeError(f"pll must be a PLLConfig, not {pll!r}")
            clk_freq = pll.f_out
        check_cache_entries(cache_entries)
        if not cache_entries and len(cache_preload):
            raise ValueError("cache_preload needs a cache (cache_entries > 0)")
        self.model = model
        self.lanes = lanes
        self.clk_freq = float(clk_freq)
        self.pll = pll
        if divisor is None:
            baud, divisor = link_baud(clk_freq, baud)
        self.baud = baud
        self.divisor = divisor
        self.target = target
        self.timeout = timeout if timeout is not None else max(1, int(0.05 * clk_freq))
        self.cache_entries = cache_entries
        self.cache_metric = cache_metric
        if cache_entries:
            if engine is None:
                from ..hw.cached_engine import CachedEngine as engine
            self.engine = engine(model, lanes, cache_entries, cache_metric, target=target,
                                 preload=tuple(cache_preload))
        else:
            self.engine = (engine or MLPEngine)(model, lanes, target=target)
        # Weights too big for block RAM live in SPRAM and arrive over the link at run time.
        loads = "w_wr" in self.engine.signature.members
        self.link = Link(model, lanes=lanes, clk_freq=self.clk_freq, baud=round(clk_freq / self.divisor),
                         cycles_per_inference=getattr(self.engine, "cycles_per_inference", 0),
                         timeout=self.timeout,
                         weight_words=len(self.engine.weight_words) if loads else 0,
                         weight_word_bits=self.engine.weight_word_bits if loads else 0,
                         cache_entries=cache_entries,
                         cache_image_bytes=self.engine.fmt.image_bytes if cache_entries else 0,
                         cache_metric=cache_metric,
                         cache_hit_cycles=self.engine.hit_cycles if cache_entries else 0,
                         max_batch=max_batch)
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "leds":    Out(len(LED_NAMES)),
        })

    def _stretch(self, m, name, pulse, tick):
        """Hold ``pulse`` for 3 to 4 ``tick`` periods (about 0.1 s) so a person can see it."""
        count = Signal(3, name=f"{name}_hold")
        with m.If(pulse):
            m.d.sync += count.eq(4)
        with m.Elif(tick & (count != 0)):
            m.d.sync += count.eq(count - 1)
        return count != 0

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.link = link = self.link
        m.submodules.uart_rx = rx = UARTRx(self.divisor)
        m.submodules.uart_tx = tx = UARTTx(self.divisor)

        wiring.connect(m, rx.o, link.rx)
        wiring.connect(m, link.tx, tx.i)
        wiring.connect(m, link.eng_i, engine.i)
        wiring.connect(m, engine.o, link.eng_o)
        if "w_wr" in engine.signature.members:
            wiring.connect(m, link.w_wr, engine.w_wr)
        if self.cache_entries:
            wiring.connect(m, link.cw, engine.cw)
            m.d.comb += [engine.clear.eq(link.cache_clear), engine.clear_stats.eq(link.clear_stats),
                         link.hits.eq(engine.hits), link.misses.eq(engine.misses)]
        uart_err = Signal()
        m.d.sync += uart_err.eq(rx.frame_error | rx.overrun)
        m.d.comb += link.uart_error.eq(uart_err)

        # One free-running counter makes the heartbeat (its top bit, about 1 Hz) and a
        # registered ~30 ms tick for the LED hold timers, which keeps those timers 3 bits
        # wide instead of putting 22-bit down-counters on the critical path.
        tick_bits = max(1, (int(self.clk_freq) // 32).bit_length() - 1)
        beat = Signal(tick_bits + 5)
        tick = Signal()
        m.d.sync += [beat.eq(beat + 1), tick.eq(beat[:tick_bits] == 0)]
        leds = Signal(len(LED_NAMES))
        m.d.comb += leds.eq(Cat(beat[-1],
                                self._stretch(m, "error", link.error, tick),
                                self._stretch(m, "busy", link.busy, tick),
                                self._stretch(m, "uart_error", uart_err, tick)))

        if platform is None:
            m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx), self.leds.eq(leds)]
            return m

        pll = self.pll or pll_config(self.clk_freq)
        clk_pin = platform.request("clk12", 0, dir="-")
        # No clock constraint here: nextpnr derives the PLL output's from the 12 MHz pad's.
        m.domains.sync = ClockDomain("sync")
        m.submodules.pll = ICE40PLL(pll, clk_pin, domain="sync")

        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [rx.rx.eq(rx_buf.i), tx_buf.o.eq(tx.tx)]

        pins = [("led_g", 0), ("led_r", 0), ("led_g", 1), ("led_r", 1)]
        for i, (name, number) in enumerate(pins):
            try:
                led = platform.request(name, number, dir="-")
            except ResourceError:
                # The snap-off PMOD's LEDs exist only if its resources were added.
                continue
            m.submodules[f"led{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(leds[i])
        return m
