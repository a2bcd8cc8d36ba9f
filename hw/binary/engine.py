"""The binary layer engine: bit-exact :func:`pwlnet.binary.forward` with no multiplier.

Same ports as the MLP engine (:class:`~pwlnet.hw.engine.EngineSignature`): input codes
in (``input_dim`` beats per inference), output scores out with ``last`` and ``argmax``
(first maximum), so the link, the board top and the simulation bench take it as they are.

Data path, one inference after another (load, compute, send)::

    input stream -> input memory --q--> P adder lanes: s[p] +-= q  (first layer, d cycles per group)
                                              |  threshold word (P thresholds + directions, EBR)
                                              v
                                 act0 bits (shift register, P bits per group)
                                              |
    weight memory (B-bit words) --XNOR--> B bits --> popcount tree (one level per cycle)
                                              |
                                 per-neuron sum over C chunks, threshold memory
                                              v
                                 act_l bits (shift register, 1 bit per neuron) ... last layer:
                                 score table (EBR) --> score registers, running argmax --> output stream

Each state of the sequencer issues one operation per cycle (a code of the first layer,
or a ``B``-bit chunk of a binary layer); the operation's fields travel beside the data
through registered stages, so no path holds more than one adder or comparator after a
memory.  A layer starts once the previous one's bits are written (a fixed drain).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory

from ..engine import EngineSignature
from .plan import FIRST_DRAIN, BinaryPlan
from .popcount import PopcountTree

__all__ = ["BinaryEngine"]


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
        XNOR bits per cycle ``B`` (default :data:`~pwlnet.hw.binary.plan.DEFAULT_CHUNK`,
        capped at the widest binary layer's fan-in).

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
        model = self._model
        d, P, B, G = pl.d, pl.lanes, pl.chunk, pl.groups
        ib = model.input_bits
        n_out = pl.n_out
        nb = len(pl.blayers)

        # ---- memories
        m.submodules.inmem = inmem = Memory(shape=signed(ib), depth=d, init=[])
        in_wr = inmem.write_port()
        in_rd = inmem.read_port(transparent_for=())
        m.submodules.w0mem = w0mem = Memory(shape=unsigned(P), depth=len(pl.w0_words), init=pl.w0_words)
        w0_rd = w0mem.read_port()
        f0 = pl.thr0_bits + 1
        m.submodules.t0mem = t0mem = Memory(shape=unsigned(P * f0), depth=max(2, G), init=pl.thr0_words)
        t0_rd = t0mem.read_port()
        m.submodules.wbmem = wbmem = Memory(shape=unsigned(B), depth=len(pl.wb_words), init=pl.wb_words)
        wb_rd = wbmem.read_port()
        tb = pl.thr_bits
        if pl.thr_words:
            m.submodules.tbmem = tbmem = Memory(shape=unsigned(tb + 1), depth=max(2, len(pl.thr_words)),
                                                init=pl.thr_words)
            tb_rd = tbmem.read_port()
        m.submodules.table = table = Memory(shape=signed(pl.out_bits), depth=len(pl.table_words),
                                            init=pl.table_words)
        tab_rd = table.read_port()

        # ---- activation registers: act[0] from the first layer, act[k] from binary layer k
        acts = [Signal(G * P, name="act0")]
        for b in pl.blayers[:-1]:
            acts.append(Signal(b["n_out"], name=f"act{b['layer']}"))

        # ---- sequencer
        beat = Signal(range(max(d, n_out) + 1))
        inner = Signal(range(max([d] + [b["chunks"] for b in pl.blayers]) + 1))
        outer = Signal(range(max([G] + [b["n_out"] for b in pl.blayers]) + 1))
        addr = Signal(range(max(len(pl.w0_words), len(pl.wb_words)) + 1))
        drain = Signal(range(max(FIRST_DRAIN, pl.binary_drain) + 1))

        issue0 = Signal()                 # a first-layer operation this cycle
        issueb = Signal()                 # a binary-layer operation this cycle
        first = Signal()
        last = Signal()
        layer = Signal(range(nb + 1))

        scores = [Signal(signed(pl.out_bits), name=f"score{o}") for o in range(n_out)]
        best = Signal(signed(pl.out_bits))
        best_at = Signal.like(self.o.payload.argmax)
        out_data = Signal(signed(pl.out_bits))
        with m.Switch(beat):
            for o in range(n_out):
                with m.Case(o):
                    m.d.comb += out_data.eq(scores[o])

        m.d.comb += [first.eq(inner == 0)]
        with m.FSM(name="seq"):
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), in_wr.addr.eq(beat), in_wr.data.eq(self.i.payload),
                             in_wr.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == d - 1):
                        m.d.sync += [beat.eq(0), inner.eq(0), outer.eq(0), addr.eq(0)]
                        m.next = "L0"
            with m.State("L0"):
                m.d.comb += [issue0.eq(1), last.eq(inner == d - 1), in_rd.addr.eq(inner), w0_rd.addr.eq(addr)]
                m.d.sync += [inner.eq(inner + 1), addr.eq(addr + 1)]
                with m.If(inner == d - 1):
                    m.d.sync += [inner.eq(0), outer.eq(outer + 1)]
                    with m.If(outer == G - 1):
                        m.d.sync += [outer.eq(0), drain.eq(FIRST_DRAIN - 1)]
                        m.next = "D0"
            with m.State("D0"):
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.d.sync += [inner.eq(0), outer.eq(0), addr.eq(pl.blayers[0]["wbase"])]
                    m.next = "B1"
            for k, b in enumerate(pl.blayers, start=1):
                C, no = b["chunks"], b["n_out"]
                with m.State(f"B{k}"):
                    m.d.comb += [issueb.eq(1), layer.eq(k), last.eq(inner == C - 1), wb_rd.addr.eq(addr)]
                    m.d.sync += [inner.eq(inner + 1), addr.eq(addr + 1)]
                    with m.If(inner == C - 1):
                        m.d.sync += [inner.eq(0), outer.eq(outer + 1)]
                        with m.If(outer == no - 1):
                            m.d.sync += [outer.eq(0), drain.eq(pl.binary_drain - 1)]
                            m.next = f"DB{k}"
                with m.State(f"DB{k}"):
                    m.d.sync += drain.eq(drain - 1)
                    with m.If(drain == 0):
                        if k < nb:
                            m.d.sync += [inner.eq(0), outer.eq(0), addr.eq(pl.blayers[k]["wbase"])]
                            m.next = f"B{k + 1}"
                        else:
                            m.d.sync += beat.eq(0)
                            m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(out_data),
                             self.o.payload.last.eq(beat == n_out - 1), self.o.payload.argmax.eq(best_at)]
                with m.If(self.o.ready):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == n_out - 1):
                        m.d.sync += beat.eq(0)
                        m.next = "LOAD"

        # ---- first layer: stage 1 registers the code and its negation (one carry chain,
        # fanned out to every lane from registers), stage 2 adds, stage 3 compares and
        # shifts the bits in
        v1, first1, last1, g1 = Signal(), Signal(), Signal(), Signal.like(outer)
        m.d.sync += [v1.eq(issue0), first1.eq(first), last1.eq(last), g1.eq(outer)]
        v2, first2, last2, g2 = Signal(), Signal(), Signal(), Signal.like(outer)
        qp, qn, w2 = Signal(signed(ib + 1)), Signal(signed(ib + 1)), Signal(P)
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1), g2.eq(g1),
                     qp.eq(in_rd.data), qn.eq(-in_rd.data), w2.eq(w0_rd.data)]
        m.d.comb += t0_rd.addr.eq(g2)
        sums = [Signal(signed(pl.acc0_bits), name=f"s{p}") for p in range(P)]
        with m.If(v2):
            for p in range(P):
                m.d.sync += sums[p].eq(Mux(first2, 0, sums[p]) + Mux(w2[p], qp, qn))
        done2 = Signal()
        m.d.sync += done2.eq(v2 & last2)
        bits0 = Signal(P)
        for p in range(P):
            thr = t0_rd.data[p * f0:p * f0 + pl.thr0_bits].as_signed()
            neg = t0_rd.data[p * f0 + pl.thr0_bits]
            m.d.comb += bits0[p].eq((sums[p] >= thr) ^ neg)
        with m.If(done2):
            m.d.sync += acts[0].eq(bits0 if G == 1 else Cat(acts[0][P:], bits0))

        # ---- binary layers: stage 1 XNOR, tree, accumulate, compare / look up
        meta = data.StructLayout({"valid": 1, "first": 1, "last": 1, "o": unsigned(len(outer)),
                                  "c": unsigned(len(inner)), "layer": unsigned(len(layer))})
        depth = pl.tree_latency + 4
        st = [Signal(meta, name=f"m{s}") for s in range(depth + 1)]     # st[s]: stage s
        m.d.comb += [st[0].valid.eq(issueb), st[0].first.eq(first), st[0].last.eq(last), st[0].o.eq(outer),
                     st[0].c.eq(inner), st[0].layer.eq(layer)]
        for s in range(depth):
            m.d.sync += st[s + 1].eq(st[s])
        chunk = Signal(B)
        with m.Switch(st[1].layer):
            for b in pl.blayers:
                src = acts[b["layer"] - 1]
                padded = Cat(src, Const(0, b["chunks"] * B - len(src))) if b["chunks"] * B > len(src) else src
                with m.Case(b["layer"]):
                    with m.Switch(st[1].c):
                        for c in range(b["chunks"]):
                            with m.Case(c):
                                m.d.comb += chunk.eq(padded[c * B:(c + 1) * B])
        xnor = Signal(B)
        m.d.sync += xnor.eq(~(wb_rd.data ^ chunk))
        m.submodules.tree = tree = PopcountTree(B)
        m.d.comb += tree.i.eq(xnor)
        # tree.o belongs to the operation in stage 2 + latency
        sa = st[2 + pl.tree_latency]
        acc = Signal(range(max(b["n_in"] for b in pl.blayers) + 1))
        with m.If(sa.valid):
            m.d.sync += acc.eq(Mux(sa.first, 0, acc) + tree.o)
        sc = st[3 + pl.tree_latency]            # acc holds the neuron's popcount here when sc.last
        tbase = Signal(range(len(pl.thr_words) + 2))
        with m.Switch(sa.layer):
            for b in pl.blayers[:-1]:
                with m.Case(b["layer"]):
                    m.d.comb += tbase.eq(b["tbase"])
        if pl.thr_words:
            m.d.comb += tb_rd.addr.eq(tbase + sa.o)
            thr = tb_rd.data[:tb]
            neg = tb_rd.data[tb]
            bit = Signal()
            m.d.comb += bit.eq((acc >= thr) ^ neg)
        lastk = pl.blayers[-1]["layer"]
        with m.If(sc.valid & sc.last):
            with m.Switch(sc.layer):
                for b in pl.blayers[:-1]:
                    k = b["layer"]
                    with m.Case(k):
                        a = acts[k]
                        m.d.sync += a.eq(bit if len(a) == 1 else Cat(a[1:], bit))
        m.d.comb += tab_rd.addr.eq(Cat(acc[:pl.row_bits], sc.o))
        sd = st[4 + pl.tree_latency]
        with m.If(sd.valid & sd.last & (sd.layer == lastk)):
            score = tab_rd.data
            with m.Switch(sd.o):
                for o in range(n_out):
                    with m.Case(o):
                        m.d.sync += scores[o].eq(score)
            with m.If((sd.o == 0) | (score > best)):
                m.d.sync += [best.eq(score), best_at.eq(sd.o)]
        return m
