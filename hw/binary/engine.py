"""The binary layer engine: bit-exact :func:`pwlnet.binary.forward` with no multiplier.

Same ports as the MLP engine (:class:`~pwlnet.hw.engine.EngineSignature`): input codes
in (``input_dim`` beats per inference), output scores out with ``last`` and ``argmax``
(first maximum), so the link, the board top and the simulation bench take it as they are.

Data path, one inference after another (load, compute, send)::

    input stream -> input memory --q--> P adder lanes: s[p] +-= q    (first layer, d cycles per group)
    weight memory (B-bit words) --XNOR-- activation memory (B-bit words)
                                   v
                          popcount tree (one level per cycle) --> lane 0   (binary layers, C cycles per neuron)

    every neuron: s starts at its start value (block RAM), its bit is the sign of the total
                  -> shift register (B bits) -> activation memory, one write per word
    last layer:   s is the score table's address -> score memory, running argmax -> output stream

Each state of the sequencer issues one operation per cycle (a code of the first layer,
or a ``B``-bit chunk of a binary layer); three flags (first, last, write) travel beside the
data through registered stages, so no path holds more than one adder after a memory.  A
layer starts once the previous one's last word is written (a fixed drain).  Lane 0 is also
the binary layers' accumulator, and the first layer's bits take the same shift register
and memory as the binary layers' (:func:`~pwlnet.hw.binary.plan.positions`).

Area: no memory is read in a cycle in which the same word may be written (the input and
score memories' read enables exclude their writes; the activation memory's two blocks
differ in an address bit), so yosys maps them to block RAM without read-first logic; the
output payload and the memory addresses are driven in every state, not gated.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory

from ..engine import EngineSignature
from .plan import FIRST_DRAIN, BinaryPlan
from .popcount import PopcountTree

__all__ = ["BinaryEngine"]

#: The flags of one operation, carried beside its data.
_FLAGS = data.StructLayout({"first": 1, "last": 1, "write": 1})


class BinaryEngine(wiring.Component):
    """Binarized-network engine for a compiled binary model.

    Parameters
    ----------
    model : pwlnet.binary.BinaryModel
    lanes : int
        Adder lanes ``P`` of the first layer (capped at its width).
    target : str
        Accepted for the engine contract; the design uses no device primitive.
    weight_memory : str
        Accepted for the engine contract; weights are always in ROM (block RAM).
    chunk : int or None
        XNOR bits per cycle ``B`` (default :func:`~pwlnet.hw.binary.plan.default_chunk`
        of the lanes; rounded up to a multiple of ``P``, capped at the widest binary
        layer's fan-in).

    Attributes
    ----------
    i, o : the stream ports of :class:`~pwlnet.hw.engine.EngineSignature`
    plan : BinaryPlan
    ideal_cycles, cycles_per_inference : int
    weight_memory : str
        ``"rom"``.
    """

    def __init__(self, model, lanes=8, *, target="generic", weight_memory="auto", chunk=None):
        if weight_memory not in ("auto", "rom"):
            raise ValueError(f"the binary engine keeps its weights in ROM; weight_memory {weight_memory!r} "
                             f"is not available")
        self._plan = BinaryPlan(model, lanes, chunk)
        self._model = model
        self._target = target
        self.weight_memory = "rom"
        super().__init__(EngineSignature(model))

    @property
    def plan(self):
        return self._plan

    @property
    def lanes(self):
        return self._plan.lanes

    @property
    def ideal_cycles(self):
        return self._plan.ideal_cycles

    @property
    def cycles_per_inference(self):
        return self._plan.cycles_per_inference

    def elaborate(self, platform):
        m = Module()
        n = SimpleNamespace()                         # the ports and signals the parts share
        self._memories(m, n)
        self._sequencer(m, n)
        self._flags(m, n)
        self._lanes(m, n)
        self._results(m, n)
        return m

    def _memories(self, m, n):
        pl = self._plan
        P, B, A = pl.lanes, pl.chunk, pl.acc_bits
        m.submodules.inmem = inmem = Memory(shape=signed(self._model.input_bits), depth=pl.d, init=[])
        n.in_wr, n.in_rd = inmem.write_port(), inmem.read_port(transparent_for=())
        m.submodules.w0mem = w0mem = Memory(shape=unsigned(P), depth=len(pl.w0_words), init=pl.w0_words)
        n.w0_rd = w0mem.read_port()
        m.submodules.wbmem = wbmem = Memory(shape=unsigned(B), depth=len(pl.wb_words), init=pl.wb_words)
        n.wb_rd = wbmem.read_port()
        m.submodules.startmem = startmem = Memory(shape=unsigned(A), depth=len(pl.start_words),
                                                  init=pl.start_words)
        n.st_rd = startmem.read_port()
        n.st0_rd = None
        if P > 1:
            m.submodules.start0mem = start0mem = Memory(shape=unsigned((P - 1) * A), depth=max(2, pl.groups),
                                                        init=pl.start0_words)
            n.st0_rd = start0mem.read_port()
        # two blocks of activation words: a layer reads one and writes the other
        n.aw = max(0, (pl.act_words - 1).bit_length())
        m.submodules.actmem = actmem = Memory(shape=unsigned(B), depth=2 << n.aw, init=[])
        n.act_wr, n.act_rd = actmem.write_port(), actmem.read_port(transparent_for=())
        m.submodules.table = table = Memory(shape=signed(pl.out_bits), depth=len(pl.table_words),
                                            init=pl.table_words)
        n.tab_rd = table.read_port()
        m.submodules.scoremem = scoremem = Memory(shape=signed(pl.out_bits), depth=max(2, pl.n_out), init=[])
        n.score_wr, n.score_rd = scoremem.write_port(), scoremem.read_port(transparent_for=())

    def _sequencer(self, m, n):
        """Load, one operation per cycle per layer with a drain after each, send."""
        pl = self._plan
        d, B, n_out, nb = pl.d, pl.chunk, pl.n_out, len(pl.blayers)
        # one counter for the load beats, a neuron's steps, the drains and the output beats
        n.step = step = Signal(range(max([d, n_out, FIRST_DRAIN] + [b["chunks"] for b in pl.blayers]
                                         + [pl.binary_drain(b) for b in pl.blayers]) + 1))
        addr = Signal(range(max(len(pl.w0_words), len(pl.wb_words)) + 1))
        fill = Signal(range(B + 1))                   # neurons (groups) in the word being filled
        n.binary = Signal()                           # the layer in flight is a binary one
        n.lastl = Signal()                            # ... the last one
        n.wbuf = Signal()                             # the activation block it writes
        n.start = Signal()                            # a layer starts: the result side resets
        n.issue0 = Signal(_FLAGS)                     # the flags of this cycle's operation: first
        n.issueb = Signal(_FLAGS)                     # layer, binary layer
        n.loaded = Signal()                           # the last input beat is taken
        n.sending = Signal()
        n.best_at = Signal.like(self.o.payload.argmax)

        # addresses and data driven in every state (cheaper than gating them); enables and
        # valid only in their own
        m.d.comb += [n.in_wr.addr.eq(step), n.in_wr.data.eq(self.i.payload), n.in_rd.addr.eq(step),
                     n.w0_rd.addr.eq(addr), n.wb_rd.addr.eq(addr), n.act_rd.addr.eq(Cat(step[:n.aw], ~n.wbuf)),
                     self.o.payload.data.eq(n.score_rd.data), self.o.payload.last.eq(step == n_out - 1),
                     self.o.payload.argmax.eq(n.best_at),
                     n.score_rd.addr.eq(Mux(n.sending, step + self.o.ready, 0)),
                     # a memory is not read while it is written: no read-first logic
                     n.in_rd.en.eq(~self.i.ready), n.score_rd.en.eq(~n.score_wr.en)]
        with m.FSM(name="seq"):
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), n.in_wr.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == d - 1):
                        m.d.sync += [step.eq(0), addr.eq(0), fill.eq(0), n.binary.eq(0), n.lastl.eq(0),
                                     n.wbuf.eq(0)]
                        m.d.comb += [n.start.eq(1), n.loaded.eq(1)]
                        m.next = "L0"
            with m.State("L0"):
                end = addr == len(pl.w0_words) - 1
                self._issue(m, n.issue0, step, addr, fill, d, B // pl.lanes, end)
                with m.If(end):
                    m.next = "D0"
            with m.State("D0"):
                m.d.sync += step.eq(step + 1)
                with m.If(step == FIRST_DRAIN - 1):
                    m.d.sync += [step.eq(0), addr.eq(0), fill.eq(0), n.binary.eq(1), n.lastl.eq(nb == 1),
                                 n.wbuf.eq(1)]
                    m.d.comb += n.start.eq(1)
                    m.next = "B1"
            for k, b in enumerate(pl.blayers, start=1):
                with m.State(f"B{k}"):
                    end = addr == b["wbase"] + b["n_out"] * b["chunks"] - 1
                    self._issue(m, n.issueb, step, addr, fill, b["chunks"], B, end | b["last"])
                    with m.If(end):
                        m.next = f"DB{k}"
                with m.State(f"DB{k}"):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == pl.binary_drain(b) - 1):
                        m.d.sync += step.eq(0)
                        if k < nb:
                            m.d.sync += [fill.eq(0), n.lastl.eq(k + 1 == nb), n.wbuf.eq(~n.wbuf)]
                            m.d.comb += n.start.eq(1)
                            m.next = f"B{k + 1}"
                        else:
                            m.next = "OUT"
            with m.State("OUT"):
                # the score memory is read one beat ahead (beat 0 in the cycles before)
                m.d.comb += [n.sending.eq(1), self.o.valid.eq(1)]
                with m.If(self.o.ready):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == n_out - 1):
                        m.d.sync += step.eq(0)
                        m.next = "LOAD"

    def _flags(self, m, n):
        """The flags beside the data: ``flags[s]`` belongs to the operation issued ``s``
        cycles ago; the first layer's and the binary layers' apart, so that neither takes
        the other's tail for its own."""
        sa = self._plan.binary_acc_stage
        flags0 = [n.issue0] + [Signal(_FLAGS, name=f"flags0_{s}") for s in range(1, 4)]
        flagsb = [n.issueb] + [Signal(_FLAGS, name=f"flagsb_{s}") for s in range(1, sa + 4)]
        for f in (flags0, flagsb):
            for s in range(1, len(f)):
                m.d.sync += f[s].eq(f[s - 1])
        n.at_acc = Signal(_FLAGS)                     # the operation the accumulators take now
        n.at_res = Signal(_FLAGS)                     # ... whose total they hold now
        m.d.comb += [n.at_acc.eq(flags0[2].as_value() | flagsb[sa].as_value()),
                     n.at_res.eq(flags0[3].as_value() | flagsb[sa + 1].as_value())]
        n.at_score = flagsb[sa + 3]                   # ... whose score is looked up and registered

    def _lanes(self, m, n):
        """The accumulators: ``P`` lanes in the first layer, lane 0 in the binary layers."""
        pl = self._plan
        P, A = pl.lanes, pl.acc_bits
        # start values, read ahead: the next neuron's while this one's first operation is
        # taken (and neuron 0's while loading)
        ra = Signal.like(n.st_rd.addr)
        reading = self.i.ready | n.at_acc.first
        with m.If(n.sending):
            m.d.sync += ra.eq(0)
        with m.Elif(n.loaded | n.at_acc.first):
            m.d.sync += ra.eq(ra + 1)
        starts = [n.st_rd.data]
        for port in (n.st_rd, n.st0_rd):
            if port is not None:
                m.d.comb += [port.addr.eq(ra), port.en.eq(reading)]
        if P > 1:
            starts += [n.st0_rd.data[(p - 1) * A:p * A] for p in range(1, P)]

        # operands: the first layer registers the code and the weight bits; a lane adds the
        # code or its ones' complement and, subtracting, a carry in (no negation chain).  The
        # binary layers' XNOR feeds the popcount tree straight from the memories.
        q1, w1 = Signal(signed(self._model.input_bits)), Signal(P)
        m.d.sync += [q1.eq(n.in_rd.data), w1.eq(n.w0_rd.data)]
        m.submodules.tree = tree = PopcountTree(pl.chunk)
        m.d.comb += tree.i.eq(~(n.wb_rd.data ^ n.act_rd.data))

        # the sums wrap at A bits; a neuron's bit is the sign of its total
        n.sums = [Signal(signed(A), name=f"s{p}") for p in range(P)]
        for p, s in enumerate(n.sums):
            op, cin = q1 ^ Mux(w1[p], 0, -1), ~w1[p]
            if p == 0:
                op, cin = Mux(n.binary, tree.o, op), cin & ~n.binary
            m.d.sync += s.eq(Mux(n.at_acc.first, starts[p], s) + op + cin)

    def _results(self, m, n):
        """Activation words, or the last layer's scores and their first maximum."""
        pl = self._plan
        P, B = pl.lanes, pl.chunk
        k0 = B // P
        bits = [~s[-1] for s in n.sums]
        # every bit moves down one place per shift; lane 0 (the binary layers' bit) enters at
        # the top, lane p of the first layer at the top of slice P - 1 - p; a word is written
        # when full (or the layer's last) and then cleared
        sr = Signal(B)
        shifted = Signal(B)
        for j in range(B):
            p = P - 1 - j // k0
            above = sr[j + 1] if j + 1 < B else Const(0)
            if j % k0 == k0 - 1:
                m.d.comb += shifted[j].eq(bits[0] if p == 0 else Mux(n.binary, above, bits[p]))
            else:
                m.d.comb += shifted[j].eq(above)
        wc = Signal(range(max(pl.act_words, pl.n_out) + 1))    # words (scores) written this layer
        with m.If(n.at_res.last):
            m.d.sync += sr.eq(Mux(n.at_res.write, 0, shifted))
        m.d.comb += [n.act_wr.addr.eq(Cat(wc[:n.aw], n.wbuf)), n.act_wr.data.eq(shifted),
                     n.act_wr.en.eq(n.at_res.write & ~n.lastl)]

        # last layer: the total addresses the score table
        m.d.comb += n.tab_rd.addr.eq(n.sums[0])
        best = Signal(signed(pl.out_bits))
        score = Signal(signed(pl.out_bits))           # registered: block RAM, then the comparison
        m.d.sync += score.eq(n.tab_rd.data)
        scoring_layer = Signal()                      # lastl a cycle late: the hidden layer's last
        m.d.sync += scoring_layer.eq(n.lastl)         # flags reach this stage as lastl rises
        scoring = scoring_layer & n.at_score.last
        m.d.comb += [n.score_wr.addr.eq(wc), n.score_wr.data.eq(score), n.score_wr.en.eq(scoring)]
        # score > best as the sign of best - score: a subtraction, which yosys puts on the
        # carry chain (the comparison as written became a chain of LUTs, the iCEBreaker
        # build's critical path at 42 MHz)
        below = Signal(signed(pl.out_bits + 1))
        m.d.comb += below.eq(best - score)
        with m.If(scoring & ((wc == 0) | below[-1])):
            m.d.sync += [best.eq(score), n.best_at.eq(wc)]
        with m.If(n.start):
            m.d.sync += wc.eq(0)
        with m.Elif(n.act_wr.en | scoring):
            m.d.sync += wc.eq(wc + 1)

    @staticmethod
    def _issue(m, issue, step, addr, fill, steps, per_word, write_anyway):
        """One operation: ``step`` counts its ``steps`` per neuron (group), ``fill`` the
        neurons in the activation word, which is written when it holds ``per_word`` or
        ``write_anyway`` (the layer's last neuron, or every neuron of the last layer)."""
        last = step == steps - 1
        m.d.comb += [issue.first.eq(step == 0), issue.last.eq(last),
                     issue.write.eq(last & ((fill == per_word - 1) | write_anyway))]
        m.d.sync += [step.eq(step + 1), addr.eq(addr + 1)]
        with m.If(last):
            m.d.sync += [step.eq(0), fill.eq(Mux(issue.write, 0, fill + 1))]
