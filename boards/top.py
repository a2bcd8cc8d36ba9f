"""The board top level: PLL or oscillator, MLP engine (optionally with the hypersphere
cache) or binarized engine, framed UART link (the composed :class:`~pwlnet.hw.link.Link`, or
the board's small one, :class:`~pwlnet.hw.link.SmallLink`) and status LEDs, for any board of
:mod:`pwlnet.boards.registry`.

The same :class:`BoardTop` runs on a board and in Amaranth's simulator.  Elaborated for a
platform it makes its clock as the board's :class:`~pwlnet.boards.registry.ClockSource`
says (:func:`pwlnet.boards.clocks.add_sync_domain`), drives the board's UART pins (the
USB-serial bridge's, or header pins the board file adds) and whatever LEDs the board has;
elaborated with ``platform=None`` it uses the simulator's ``sync`` clock and exposes the
pins as its ports (``uart_rx``, ``uart_tx``, ``leds``), which is what
:class:`pwlnet.host.SimTransport` drives bit by bit.

LEDs, in the order of :data:`LED_NAMES`: heartbeat (the clock runs and reset is released),
error reply sent (held 0.1 s), busy (held 0.1 s), UART framing error or overrun (held 0.1 s);
a board with fewer LEDs shows the first ones.
"""

from amaranth import *
from amaranth.build import ResourceError
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from ..hw.link import Link, SmallLink
from ..protocol import check_cache_entries
from ..hw.pll import PLLConfig
from ..hw.uart import UARTRx, UARTTx, baud_divisor
from ..hw.engine import MLPEngine
from .clocks import ECP5PLLConfig, GowinPLLConfig, Oscillator, add_sync_domain, clock_setting
from .registry import board as board_named

__all__ = ["BoardTop", "LED_NAMES", "link_baud"]


def link_baud(clk_freq, baud=None, rates=(3_000_000, 1_000_000, 115_200)):
    """The link's ``(baud, divisor)`` at a fabric clock of ``clk_freq`` Hz.

    ``baud`` given: that rate, checked by :func:`pwlnet.hw.uart.baud_divisor` (which raises
    if the clock cannot make it within tolerance).  ``None``: the fastest of ``rates`` (the
    board's :attr:`~pwlnet.boards.registry.HostLink.bauds`) the clock makes within tolerance.
    """
    if baud is not None:
        return baud, baud_divisor(clk_freq, baud)
    errors = []
    for rate in rates:
        try:
            return rate, baud_divisor(clk_freq, rate)
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(f"no link rate of this board fits a {clk_freq / 1e6:.3f} MHz clock: " + "; ".join(errors))


#: Order of the bits of :attr:`BoardTop.leds`.
LED_NAMES = ("heartbeat", "error", "busy", "uart_error")


class BoardTop(wiring.Component):
    """Board top level.

    Parameters
    ----------
    model : CompiledModel
        The network.
    lanes : int
        Engine lanes (:func:`pwlnet.boards.lanes.auto_lanes` chooses per board).
    clk_freq : float
        Fabric clock in Hz.  On the board it is made by the board's clock source (pass
        ``pll`` to fix the setting; otherwise the closest one to ``clk_freq`` is chosen and
        ``clk_freq`` becomes what it achieves).
    baud : int or None
        UART bit rate; ``None``: the fastest of the board's link rates the clock makes
        (:func:`link_baud`).
    divisor : int or None
        Cycles per UART bit; default from ``baud`` (:func:`link_baud`).  Simulations pass a
        small one.
    target : str or None
        Engine target: ``"ice40"`` (SPRAM / DSP instances) or ``"generic"``; ``None``: the
        board's.
    timeout : int or None
        Link frame timeout in cycles; default 50 ms.
    engine : callable or None
        ``engine(model, lanes, target=...)`` makes the engine; default the real
        :class:`~pwlnet.hw.engine.MLPEngine`, or for a binarized model
        (:class:`pwlnet.binary.BinaryModel`) :class:`~pwlnet.hw.binary.BinaryEngine`.  With a cache it is called as
        ``engine(model, lanes, cache_entries, cache_metric, target=..., preload=...)``;
        default :class:`~pwlnet.hw.cached_engine.CachedEngine`.
    pll : PLLConfig, ECP5PLLConfig, GowinPLLConfig, Oscillator or None
        Clock setting for board builds (:func:`pwlnet.boards.clocks.clock_setting`).
    board : str or Board
        The board (:mod:`pwlnet.boards.registry`): its clock source, UART pins, link rates,
        LEDs and engine target.
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
    link : {"full", "small"} or None
        The link's gateware: :class:`~pwlnet.hw.link.Link` or the smaller
        :class:`~pwlnet.hw.link.SmallLink` (no batches, no cache, weights built in);
        ``None``: the board's (:attr:`~pwlnet.boards.registry.HostLink.gateware`).

    Attributes
    ----------
    uart_rx : In(1)
        Serial input (simulation; on the board the link's pin is used).
    uart_tx : Out(1)
        Serial output (simulation).
    leds : Out(4)
        Status, see :data:`LED_NAMES` (simulation).
    """

    def __init__(self, model, *, lanes=8, clk_freq=48e6, baud=None, divisor=None,
                 target=None, timeout=None, engine=None, pll=None, cache_entries=0,
                 cache_metric="linf", cache_preload=(), max_batch=16, board="icebreaker", link=None):
        board = board_named(board)
        if target is None:
            target = board.target
        if pll is not None:
            if not isinstance(pll, (PLLConfig, ECP5PLLConfig, GowinPLLConfig, Oscillator)):
                raise TypeError(f"pll must be a PLLConfig, ECP5PLLConfig, GowinPLLConfig or Oscillator, not {pll!r}")
            clk_freq = pll.f_out
        check_cache_entries(cache_entries)
        link = board.link.gateware if link is None else link
        if link not in ("full", "small"):
            raise ValueError(f"link must be 'full' or 'small', not {link!r}")
        if link == "small" and cache_entries:
            raise ValueError("the small link has no cache commands: build the cache with the full link "
                             "(a board with more logic)")
        if not cache_entries and len(cache_preload):
            raise ValueError("cache_preload needs a cache (cache_entries > 0)")
        self.board = board
        self.model = model
        self.lanes = lanes
        self.clk_freq = float(clk_freq)
        self.pll = pll
        if divisor is None:
            baud, divisor = link_baud(clk_freq, baud, board.link.bauds)
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
            if engine is None and getattr(model, "kind", "mlp") == "binary":
                from ..hw.binary import BinaryEngine as engine     # binarized networks: XNOR-popcount
            self.engine = (engine or MLPEngine)(model, lanes, target=target)
        # Weights too big for block RAM live in SPRAM and arrive over the link at run time.
        loads = "w_wr" in self.engine.signature.members
        if link == "small":
            if loads:
                raise ValueError("the small link cannot load weights at run time: keep the weights in "
                                 "block RAM (weight_memory='rom')")
            self.link = SmallLink(model, lanes=lanes, clk_freq=self.clk_freq, baud=round(clk_freq / self.divisor),
                                  cycles_per_inference=getattr(self.engine, "cycles_per_inference", 0),
                                  timeout=self.timeout)
        else:
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

        source = self.board.clock
        add_sync_domain(m, platform, source, self.pll or clock_setting(source, self.clk_freq / 1e6))

        # Every line of the UART resource raw (a bridge's RTS/DTR stay unused).
        lines = [sub.name for sub in platform.lookup("uart", 0).ios if hasattr(sub, "name")]
        uart = platform.request("uart", 0, dir={name: "-" for name in lines})
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [rx.rx.eq(rx_buf.i), tx_buf.o.eq(tx.tx)]

        wanted = self.board.leds[:len(LED_NAMES)]
        ports = {}
        for i, (name, number, sub) in enumerate(wanted):
            if (name, number) not in ports:
                # An RGB LED is one resource: request it once, all its colours raw.
                subs = [s for n, k, s in wanted if (n, k) == (name, number) and s]
                try:
                    ports[name, number] = platform.request(name, number, dir={s: "-" for s in subs} if subs else "-")
                except ResourceError:
                    # Optional LEDs (the iCEBreaker's snap-off PMOD) exist only if added.
                    ports[name, number] = None
            port = ports[name, number]
            if port is None:
                continue
            m.submodules[f"led{i}"] = buf = io.Buffer("o", port if sub is None else getattr(port, sub))
            m.d.comb += buf.o.eq(leds[i])
        return m
