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
"""

from __future__ import annotations

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
        pl = self._plan
        d, P, B, G, A = pl.d, pl.lanes, pl.chunk, pl.groups, pl.acc_bits
        ib = self._model.input_bits
        n_out = pl.n_out
        nb = len(pl.blayers)
        k0 = B // P                                   # first-layer groups per activation word

        # ---- memories
        m.submodules.inmem = inmem = Memory(shape=signed(ib), depth=d, init=[])
        in_wr = inmem.write_port()
        in_rd = inmem.read_port(transparent_for=())
        m.submodules.w0mem = w0mem = Memory(shape=unsigned(P), depth=len(pl.w0_words), init=pl.w0_words)
        w0_rd = w0mem.read_port()
        m.submodules.wbmem = wbmem = Memory(shape=unsigned(B), depth=len(pl.wb_words), init=pl.wb_words)
        wb_rd = wbmem.read_port()
        m.submodules.startmem = startmem = Memory(shape=unsigned(A), depth=len(pl.start_words),
                                                  init=pl.start_words)
        st_rd = startmem.read_port()
        if P > 1:
            m.submodules.start0mem = start0mem = Memory(shape=unsigned((P - 1) * A), depth=max(2, G),
                                                        init=pl.start0_words)
            st0_rd = start0mem.read_port()
        aw = max(0, (pl.act_words - 1).bit_length())
        m.submodules.actmem = actmem = Memory(shape=unsigned(B), depth=2 << aw, init=[])
        act_wr = actmem.write_port()
        act_rd = actmem.read_port(transparent_for=())
        m.submodules.table = table = Memory(shape=signed(pl.out_bits), depth=len(pl.table_words),
                                            init=pl.table_words)
        tab_rd = table.read_port()
        m.submodules.scoremem = scoremem = Memory(shape=signed(pl.out_bits), depth=max(2, n_out), init=[])
        score_wr = scoremem.write_port()
        score_rd = scoremem.read_port(transparent_for=())

        # ---- sequencer: one counter for the load beats, a neuron's steps, the drains and the
        # output beats
        step = Signal(range(max([d, n_out, FIRST_DRAIN] + [b["chunks"] for b in pl.blayers]
                                + [pl.binary_drain(b) for b in pl.blayers]) + 1))
        addr = Signal(range(max(len(pl.w0_words), len(pl.wb_words)) + 1))
        fill = Signal(range(B + 1))                   # neurons (groups) in the word being filled
        binary = Signal()                             # the layer in flight is a binary one
        lastl = Signal()                              # ... the last one
        wbuf = Signal()                               # the activation block it writes
        start = Signal()                              # a layer starts: the result side resets
        issue0 = Signal(_FLAGS)                       # the flags of this cycle's operation: first
        issueb = Signal(_FLAGS)                       # layer, binary layer
        loaded = Signal()                             # the last input beat is taken
        sending = Signal()
        best_at = Signal.like(self.o.payload.argmax)

        # addresses and data driven in every state (cheaper than gating them); enables and
        # valid only in their own
        m.d.comb += [in_wr.addr.eq(step), in_wr.data.eq(self.i.payload), in_rd.addr.eq(step),
                     w0_rd.addr.eq(addr), wb_rd.addr.eq(addr), act_rd.addr.eq(Cat(step[:aw], ~wbuf)),
                     self.o.payload.data.eq(score_rd.data), self.o.payload.last.eq(step == n_out - 1),
                     self.o.payload.argmax.eq(best_at),
                     score_rd.addr.eq(Mux(sending, step + self.o.ready, 0)),
                     # a memory is not read while it is written: no read-first logic
                     in_rd.en.eq(~self.i.ready), score_rd.en.eq(~score_wr.en)]
        with m.FSM(name="seq"):
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), in_wr.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == d - 1):
                        m.d.sync += [step.eq(0), addr.eq(0), fill.eq(0), binary.eq(0), lastl.eq(0), wbuf.eq(0)]
                        m.d.comb += [start.eq(1), loaded.eq(1)]
                        m.next = "L0"
            with m.State("L0"):
                end = addr == len(pl.w0_words) - 1
                self._issue(m, issue0, step, addr, fill, d, k0, end)
                with m.If(end):
                    m.next = "D0"
            with m.State("D0"):
                m.d.sync += step.eq(step + 1)
                with m.If(step == FIRST_DRAIN - 1):
                    m.d.sync += [step.eq(0), addr.eq(0), fill.eq(0), binary.eq(1), lastl.eq(nb == 1), wbuf.eq(1)]
                    m.d.comb += start.eq(1)
                    m.next = "B1"
            for k, b in enumerate(pl.blayers, start=1):
                with m.State(f"B{k}"):
                    end = addr == b["wbase"] + b["n_out"] * b["chunks"] - 1
                    self._issue(m, issueb, step, addr, fill, b["chunks"], B, end | b["last"])
                    with m.If(end):
                        m.next = f"DB{k}"
                with m.State(f"DB{k}"):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == pl.binary_drain(b) - 1):
                        m.d.sync += step.eq(0)
                        if k < nb:
                            m.d.sync += [fill.eq(0), lastl.eq(k + 1 == nb), wbuf.eq(~wbuf)]
                            m.d.comb += start.eq(1)
                            m.next = f"B{k + 1}"
                        else:
                            m.next = "OUT"
            with m.State("OUT"):
                # the score memory is read one beat ahead (beat 0 in the cycles before)
                m.d.comb += [sending.eq(1), self.o.valid.eq(1)]
                with m.If(self.o.ready):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == n_out - 1):
                        m.d.sync += step.eq(0)
                        m.next = "LOAD"

        # ---- the flags beside the data: flags[s] belongs to the operation issued s cycles ago;
        # the first layer's and the binary layers' apart, so that neither takes the other's
        # tail for its own
        sa = pl.binary_acc_stage
        flags0 = [issue0] + [Signal(_FLAGS, name=f"flags0_{s}") for s in range(1, 4)]
        flagsb = [issueb] + [Signal(_FLAGS, name=f"flagsb_{s}") for s in range(1, sa + 4)]
        for f in (flags0, flagsb):
            for s in range(1, len(f)):
                m.d.sync += f[s].eq(f[s - 1])
        at_acc = Signal(_FLAGS)                       # the operation the accumulators take now
        at_res = Signal(_FLAGS)                       # ... whose total they hold now
        m.d.comb += [at_acc.eq(flags0[2].as_value() | flagsb[sa].as_value()),
                     at_res.eq(flags0[3].as_value() | flagsb[sa + 1].as_value())]

        # ---- start values: read ahead, the next neuron's while this one's first operation is
        # taken (and neuron 0's while loading)
        ra = Signal.like(st_rd.addr)
        m.d.comb += st_rd.addr.eq(ra), st_rd.en.eq(self.i.ready | at_acc.first)
        with m.If(sending):
            m.d.sync += ra.eq(0)
        with m.Elif(loaded | at_acc.first):
            m.d.sync += ra.eq(ra + 1)
        starts = [st_rd.data]
        if P > 1:
            m.d.comb += [st0_rd.addr.eq(ra), st0_rd.en.eq(self.i.ready | at_acc.first)]
            starts += [st0_rd.data[(p - 1) * A:p * A] for p in range(1, P)]

        # ---- operands: the first layer registers the code and the weight bits; a lane adds
        # the code or its ones' complement and, subtracting, a carry in (no negation chain)
        q1, w1 = Signal(signed(ib)), Signal(P)
        m.d.sync += [q1.eq(in_rd.data), w1.eq(w0_rd.data)]
        ops0 = [q1 ^ Mux(w1[p], 0, -1) for p in range(P)]
        cins = [~w1[p] for p in range(P)]
        m.submodules.tree = tree = PopcountTree(B)
        m.d.comb += tree.i.eq(~(wb_rd.data ^ act_rd.data))

        # ---- accumulators (wrapping at A bits) and their bits (the sign of the total)
        sums = [Signal(signed(A), name=f"s{p}") for p in range(P)]
        for p in range(P):
            op, cin = (Mux(binary, tree.o, ops0[0]), cins[0] & ~binary) if p == 0 else (ops0[p], cins[p])
            m.d.sync += sums[p].eq(Mux(at_acc.first, starts[p], sums[p]) + op + cin)
        bits = [~s[-1] for s in sums]

        # ---- activation words: every bit moves down one place per shift; lane 0 (the binary
        # layers' bit) enters at the top, lane p of the first layer at the top of slice
        # P - 1 - p; a word is written when full (or the layer's last) and then cleared
        sr = Signal(B)
        shifted = Signal(B)
        for j in range(B):
            p = P - 1 - j // k0
            above = sr[j + 1] if j + 1 < B else Const(0)
            if j % k0 == k0 - 1:
                m.d.comb += shifted[j].eq(bits[0] if p == 0 else Mux(binary, above, bits[p]))
            else:
                m.d.comb += shifted[j].eq(above)
        wc = Signal(range(max(pl.act_words, n_out) + 1))    # words (scores) written this layer
        with m.If(at_res.last):
            m.d.sync += sr.eq(Mux(at_res.write, 0, shifted))
        m.d.comb += [act_wr.addr.eq(Cat(wc[:aw], wbuf)), act_wr.data.eq(shifted),
                     act_wr.en.eq(at_res.write & ~lastl)]

        # ---- last layer: the total addresses the score table; the score is written and
        # the first maximum kept
        m.d.comb += tab_rd.addr.eq(sums[0])
        at_score = flagsb[sa + 3]
        best = Signal(signed(pl.out_bits))
        score = Signal(signed(pl.out_bits))          # registered: block RAM, then the comparison
        m.d.sync += score.eq(tab_rd.data)
        scoring_layer = Signal()                     # lastl a cycle late: the hidden layer's last
        m.d.sync += scoring_layer.eq(lastl)           # flags reach this stage as lastl rises
        scoring = scoring_layer & at_score.last
        m.d.comb += [score_wr.addr.eq(wc), score_wr.data.eq(score), score_wr.en.eq(scoring)]
        with m.If(scoring & ((wc == 0) | (score > best))):
            m.d.sync += [best.eq(score), best_at.eq(wc)]
        with m.If(start):
            m.d.sync += wc.eq(0)
        with m.Elif(act_wr.en | scoring):
            m.d.sync += wc.eq(wc + 1)

        return m

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
