"""Weight memory of the folded MLP engine: one wide word of P packed weights per read.

Two storage kinds, each for two targets:

``"rom"``
    Contents fixed at build time (``init``).  An :class:`amaranth.lib.memory.Memory`
    without write port; yosys maps it to EBR (``SB_RAM40_4K``) on iCE40, with the
    initial contents in the bitstream.  Preferred whenever the weights fit the EBR.
``"ram"``
    Contents written at run time through the ``wr_*`` port (a boot loader copies them
    from flash or the host).  On the ``"ice40"`` target this is ``ceil(width/16)``
    ``SB_SPRAM256KA`` blocks side by side (four of them give the 64-bit word of eight
    int8 weights) -- SPRAM cannot be initialised by the bitstream, which is why this kind
    has a write port and no ``init``.  On the ``"generic"`` target it is a writable
    :class:`~amaranth.lib.memory.Memory` with the same timing, for simulation.

A ``"rom"`` memory built with ``writable=True`` keeps its initial contents and also gets
the ``wr_*`` port (EBR with bitstream contents that can be overwritten): the hypersphere
cache writes its slots' weights there at run time, beside the network's.

Either way the read port is synchronous with one cycle of latency and a registered output,
so the engine's schedule is the same for all four combinations.
"""

from types import SimpleNamespace

from amaranth.hdl import ClockSignal, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["KINDS", "SPRAM_DEPTH", "SPRAM_WIDTH", "SPRAM_BLOCKS", "WeightMemory", "NO_RW_CHECK", "unchecked_read_port",
           "delay_line"]

#: Memory attribute: a read of the address written in the same cycle may return anything.
NO_RW_CHECK = {"no_rw_check": 1}


def unchecked_read_port(m, mem, name):
    """A synchronous read port of ``mem`` whose same-address read/write collisions are
    don't-care in synthesis: ``.addr``, ``.en`` (default 1) and ``.data`` (registered).

    Behaves in simulation exactly like ``mem.read_port(transparent_for=())`` (``data`` is
    the word at ``addr`` before a write of the same edge).  An Amaranth synchronous read
    port reaches yosys as such, and yosys then emulates that read-first behaviour on
    iCE40 block RAM with a register and a multiplexer per data bit (plus the address
    compare).  Built as a combinational port and a register, the port is assembled by
    yosys' ``memory_dff``, which honours the memory's ``no_rw_check`` attribute
    (:data:`NO_RW_CHECK`, which ``mem`` must carry) and adds no such logic.

    Use it only where a read of the address being written in the same cycle is never
    used (the caller's comment must say why).
    """
    rp = mem.read_port(domain="comb")
    port = SimpleNamespace(addr=Signal.like(rp.addr, name=f"{name}_addr"),
                           en=Signal(init=1, name=f"{name}_en"),
                           data=Signal(mem.shape, name=f"{name}_data", reset_less=True))
    m.d.comb += rp.addr.eq(port.addr)
    with m.If(port.en):
        m.d.sync += port.data.eq(rp.data)
    return port


def delay_line(m, value, n, name):
    """``value`` delayed by ``n >= 2`` cycles, through a small block RAM instead of ``n``
    registers: a circular buffer written every cycle and read ``n - 1`` words behind.

    The contents are *not* reset: after a reset the output repeats the last ``n`` values
    from before it, so anything that must be reset (a valid flag) has to be carried in
    registers beside the line.
    """
    if n < 2:
        raise ValueError(f"a delay line needs at least 2 cycles, not {n!r}")
    bits = max(1, (n - 1).bit_length())
    mem = Memory(shape=Signal.like(value).shape(), depth=1 << bits, init=[],
                 attrs={**NO_RW_CHECK, "ram_style": "block"})
    m.submodules[name] = mem
    wr = mem.write_port()
    # The read address stays n - 1 words behind the write address, so they never meet.
    rd = unchecked_read_port(m, mem, f"{name}_rd")
    wptr = Signal(bits, name=f"{name}_wptr")
    rptr = Signal(bits, name=f"{name}_rptr", init=(1 - n) % (1 << bits))
    m.d.sync += [wptr.eq(wptr + 1), rptr.eq(rptr + 1)]
    m.d.comb += [wr.addr.eq(wptr), wr.data.eq(value), wr.en.eq(1), rd.addr.eq(rptr)]
    return rd.data

#: Storage kinds of :class:`WeightMemory`.
KINDS = ("rom", "ram")
#: Geometry of one iCE40UP ``SB_SPRAM256KA``.
SPRAM_DEPTH, SPRAM_WIDTH = 16384, 16
#: ``SB_SPRAM256KA`` blocks on the iCE40UP5K: side by side they give at most a 64-bit word.
SPRAM_BLOCKS = 4


class WeightMemory(wiring.Component):
    """Synchronous-read weight store of ``depth`` words of ``width`` bits.

    Parameters
    ----------
    width, depth : int
        Word width in bits and number of words.
    init : sequence of int, optional
        Initial contents (``"rom"`` only; unsigned word values).
    kind : str
        ``"rom"`` or ``"ram"`` (see the module docstring).
    target : str
        ``"generic"`` or ``"ice40"``.

    Attributes
    ----------
    rd_addr : In(range(depth))
        Address read every cycle.
    rd_data : Out(width)
        Word at the ``rd_addr`` of the previous cycle.
    wr_addr, wr_data, wr_en : In
        Write port (``"ram"``, or ``"rom"`` with ``writable``).  On iCE40 SPRAM a write cycle does not read, so the
        engine must not run while weights are loaded.
    """

    def __init__(self, width, depth, *, init=(), kind="rom", target="generic", writable=False):
        for name, v in (("width", width), ("depth", depth)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an integer, not {v!r}")
            if v < 1:
                raise ValueError(f"{name} must be at least 1, not {v}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if target not in ("generic", "ice40"):
            raise ValueError(f"target must be 'generic' or 'ice40', not {target!r}")
        if kind == "ram" and len(init):
            raise ValueError("a 'ram' weight memory has no initial contents; load it through wr_*")
        if kind == "ram" and target == "ice40" and depth > SPRAM_DEPTH:
            raise ValueError(f"SPRAM holds at most {SPRAM_DEPTH} words, not {depth}")
        if kind == "ram" and target == "ice40" and width > SPRAM_BLOCKS * SPRAM_WIDTH:
            raise ValueError(f"SPRAM words are at most {SPRAM_BLOCKS * SPRAM_WIDTH} bits ({SPRAM_BLOCKS} blocks "
                             f"side by side), not {width}")
        self._width, self._depth, self._kind, self._target = width, depth, kind, target
        self._writable = kind == "ram" or bool(writable)
        self._init = [int(v) for v in init]
        members = {"rd_addr": In(range(depth)), "rd_data": Out(width)}
        if self._writable:
            members.update(wr_addr=In(range(depth)), wr_data=In(width), wr_en=In(1))
        super().__init__(members)

    @property
    def spram_count(self):
        """Number of ``SB_SPRAM256KA`` blocks used (0 unless ``"ram"`` on ``"ice40"``)."""
        if self._kind == "ram" and self._target == "ice40":
            return -(-self._width // SPRAM_WIDTH)
        return 0

    def elaborate(self, platform):
        m = Module()
        if self.spram_count:
            addr = Signal(14)
            m.d.comb += addr.eq(self.rd_addr)
            with m.If(self.wr_en):
                m.d.comb += addr.eq(self.wr_addr)
            for k in range(self.spram_count):
                lo = k * SPRAM_WIDTH
                hi = min(lo + SPRAM_WIDTH, self._width)
                din = Signal(SPRAM_WIDTH)
                dout = Signal(SPRAM_WIDTH)
                m.d.comb += [din.eq(self.wr_data[lo:hi]), self.rd_data[lo:hi].eq(dout)]
                m.submodules[f"spram{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr, i_DATAIN=din, i_MASKWREN=0b1111, i_WREN=self.wr_en,
                    i_CHIPSELECT=1, i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=dout)
        else:
            init = self._init + [0] * (self._depth - len(self._init))
            m.submodules.mem = mem = Memory(shape=unsigned(self._width), depth=self._depth, init=init)
            rd = mem.read_port(transparent_for=())
            m.d.comb += [rd.addr.eq(self.rd_addr), self.rd_data.eq(rd.data)]
            if self._writable:
                wr = mem.write_port()
                m.d.comb += [wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data), wr.en.eq(self.wr_en)]
        return m
