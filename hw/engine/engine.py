"""The folded MLP engine: P multiply-accumulate lanes run a compiled model layer by layer.

Data path (one *pass* computes ``P`` outputs of one layer)::

    input stream -> input buffer (2 banks) --.
                                             +--> x[i] broadcast --> P lanes: w*x (DSP), acc
    activation buffer (ping/pong) ----------'         ^                      |
                                                      |                      v  (pass end)
    weight memory: word = P packed weights -----------'        hold register (shifts out)
                                                                             |
              bias, multiplier, shift (per channel, EBR) --> shared requant pipeline
                                                                             |
              LERP unit (only if a layer is LERP)  <--  saturate + ReLU  <--------'
                     |
                     +--> activation buffer (next layer)
                     '--> output buffer (2 banks) --> output stream (+ argmax, last beat)

One block per module, composed by :meth:`MLPEngine.elaborate`:

* :class:`~.loader.InputLoader` (input stream into the two-bank input buffer),
* :class:`~.sequencer.Sequencer` (descriptor ROM, the read schedule, inference start),
* :class:`~.lanes.LaneArray` (the ``P`` :class:`~pwlnet.hw.mac.LaneMAC` lanes and the
  hold register),
* :class:`~.requant.Requantizer` (parameter memories, offset/multiply, shift, saturation),
* :class:`~pwlnet.hw.lerp.LerpUnit` (only with LERP layers),
* :class:`~.argmax.ArgmaxTracker` and :class:`~.streamer.OutputStreamer` (output buffer
  and stream),

with the weight memory and the activation buffer between them; what they are built from
(descriptor table, weight words, parameters, cycle counts) is the
:class:`~.plan.EnginePlan`.

The sequencer runs *programs*: a program is a run of consecutive entries of a layer
descriptor table (weight base address, fan-in, number of passes, source and destination
buffers, parameter base, gap).  Program 0 is the whole network; a later block (the
hypersphere cache) can add one-layer programs ``W x + b`` to the same table and weight
memory and ask for them instead.

Schedule (``c`` = cycle a read is issued; every arrow is a register, and no path goes
through more than one carry chain or through a memory and a DSP at once):

* ``c+1`` memory outputs (registered in the EBR/SPRAM); ``c+2`` operands: x registered
  in fabric (forced to 0 on bubble cycles), the weight word straight from the weight
  memory's output register (its address is registered once more, so it is read a cycle
  later than the activations); ``c+3`` DSP input registers; ``c+4`` product register;
  ``c+5`` lane accumulator (``acc = p`` on a pass's first read, else ``acc += p``).
* At a pass end the ``P`` accumulators are copied into a hold register that shifts one
  lane per cycle into one shared requantization pipeline: ``acc * m + off`` (``off = bias * m + 2**(s-1)`` folded at build time; the
  multiply is an adder tree of partial products, only if some layer uses ``multiply``),
  flooring shift in two stages, saturation in two stages (overflow = the bits above the
  sign are not all equal), ReLU, then the write into the destination buffer.  The last
  layer's codes also feed a two-stage running argmax (first maximum wins).
* In a model with LERP layers, every code then passes one shared
  :class:`~pwlnet.hw.lerp.LerpUnit` (tables of all LERP layers stacked; channel =
  ``lerp_base`` of the layer + output index) before the write; other layers' codes ride
  along in the unit's meta and bypass the table.  One write point for every layer, so
  ``write_delay`` grows by the unit's latency for such models only; argmax then follows
  the unit.  Models without a LERP layer build no unit: their hardware and cycle counts
  are those of an engine without LERP support.
* Cycles: each pass lasts ``L`` cycles, of which the first ``n_in`` issue reads; after
  each layer the sequencer spends ``gap`` cycles without reads, and a program starts
  with one cycle (the LOAD of its first descriptor).  :func:`~.plan.schedule` sets ``L``
  and ``gap`` per layer to the
  earliest start the data path allows: a pass waits for the hold register to have
  shifted out the pass before it, and a layer never reads an activation before it is
  written.  Program cycles = ``1 + sum(G*L + gap)``.
* Nothing inside an inference ever stalls: input availability and output back-pressure
  only decide when the next inference *starts*, which keeps the schedule static and the
  analytic cycle count exact.  Inputs are double-buffered (the next one loads while the
  current one computes), outputs too (the next inference writes while the consumer still
  reads the previous one).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..lerp import LerpUnit
from ..memory import NO_RW_CHECK, WeightMemory, unchecked_read_port
from .argmax import ArgmaxTracker
from .lanes import LaneArray
from .layouts import capture_pass_facts, pass_layout
from .loader import InputLoader
from .plan import EnginePlan
from .requant import Requantizer
from .sequencer import Sequencer
from .streamer import OutputStreamer, stream_layout

__all__ = ["MLPEngine", "EngineSignature", "output_layout", "weight_write_layout"]


def output_layout(model, programs=1):
    """Payload layout of the engine's (and the board's) output stream for ``model``.

    ``data`` (one output code), ``last`` (the inference's final beat) and ``argmax``; an
    engine with extra programs (``programs > 1``) adds ``program``: the program that
    computed the inference, on every beat.
    """
    last = model.layers[-1]
    return stream_layout(last.n_out, last.out_bits, programs)


def weight_write_layout(words, word_bits):
    """Payload of the engine's ``w_wr`` port (and of the link's, which drives it): one weight
    word of ``word_bits`` and its address among ``words``."""
    return data.StructLayout({"addr": range(max(2, words)), "data": unsigned(word_bits)})


class EngineSignature(wiring.Signature):
    """The engine's ports, as every engine of the contract has them (:class:`MLPEngine`, the
    stand-in :class:`pwlnet.sim.toy.ToyEngine`) and the link and board top expect them.

    Parameters
    ----------
    model : pwlnet.artifact.CompiledModel
    programs : int
        Programs the engine holds; with more than one there is a ``prog`` port and the
        output carries the ``program`` field.
    slot_write : Layout or None
        Payload of the ``cw`` port of an engine with cache slots (and its ``quiet`` flag).
    weight_words, weight_word_bits : int
        Weight memory loaded at run time through a ``w_wr`` port (0 words: none).

    Members
    -------
    i : In(stream.Signature(signed(model.input_bits)))
    o : Out(stream.Signature(output_layout(model, programs)))
    prog : In(stream.Signature(range(programs))), only with ``programs > 1``
    cw : In(stream.Signature(slot_write)) and quiet : Out(1), only with ``slot_write``
    w_wr : In(stream.Signature(weight_write_layout(...))), only with ``weight_words``
    """

    def __init__(self, model, *, programs=1, slot_write=None, weight_words=0, weight_word_bits=0):
        members = {
            "i": In(stream.Signature(signed(model.input_bits))),
            "o": Out(stream.Signature(output_layout(model, programs))),
        }
        if programs > 1:
            members["prog"] = In(stream.Signature(range(programs)))
        if slot_write is not None:
            members["cw"] = In(stream.Signature(slot_write))
            members["quiet"] = Out(1)
        if weight_words:
            members["w_wr"] = In(stream.Signature(weight_write_layout(weight_words, weight_word_bits)))
        super().__init__(members)


class MLPEngine(wiring.Component):
    """Folded MLP engine for a compiled model: bit-exact :func:`pwlnet.golden.forward`.

    Parameters
    ----------
    model : pwlnet.artifact.CompiledModel
        The network (program 0).
    lanes : int
        Number of parallel multiply-accumulate lanes ``P`` (1 .. any; ``P`` larger than
        the widest layer is fully parallel).
    target : str
        ``"generic"`` (Amaranth memories and ``*``; runs in Amaranth's simulator) or
        ``"ice40"`` (``SB_MAC16`` lanes and, for ``"ram"`` weights, ``SB_SPRAM256KA``;
        simulate with yosys' ``ice40/cells_sim.v``).
    weight_memory : str
        ``"rom"``: weights initialised in the bitstream (EBR on iCE40); ``"ram"``: weights
        loaded at run time through the ``w_wr`` port (SPRAM on iCE40; see
        :attr:`weight_words`); ``"auto"`` (default): ``"rom"`` unless the weights exceed
        the EBR budget on the ``"ice40"`` target.
    programs : sequence of (list of Layer or CompiledModel)
        Extra programs (1, 2, ...) stored beside the network (program 0) in the same
        descriptor table and weight memory, e.g. the hypersphere cache's one-layer affine
        maps ``W x + b``.  Each takes the model's input codes and gives its output codes.
        With extra programs the engine has a ``prog`` port.
    interleave : bool
        Build the pair program where it lowers the cycles per inference (a network of
        two or more layers without extra programs, whose layers wait for each other's
        data): when two inputs are waiting, their layers run interleaved, each filling
        the other's waits.  One input alone runs as before, so latency is unchanged.

    Attributes
    ----------
    i : In(stream.Signature(signed(model.input_bits)))
        Input codes, ``model.input_dim`` beats per inference.
    o : Out(stream.Signature(output_layout(model)))
        Output codes in order, ``last`` on the final beat, ``argmax`` (index of the first
        largest code) valid on the final beat.
    prog : In(stream.Signature(range(1 + len(programs))))
        Only with extra programs: the program to run, one beat per inference, taken when
        that inference starts (after its input has been loaded).
    w_wr : In(stream.Signature(StructLayout({"addr", "data"})))
        Only with ``"ram"`` weights: word writes, always ready.  Load every word of
        :attr:`weight_words` before the first input.
    ideal_cycles : int
        Sum over layers of ``ceil(n_out / P) * n_in``.
    cycles_per_inference : int or float
        Steady-state cycles per inference with back-to-back inputs (exact; with a pair
        program, half of :attr:`pair_cycles`), unless the output side is slower (see
        :attr:`EnginePlan.cycles_per_inference <pwlnet.hw.engine.plan.EnginePlan>`).

    Notes
    -----
    LERP layers (``activation == "lerp"``) share one LERP unit, so every LERP layer of
    the network and of the extra programs must have the same ``out_bits`` and
    ``index_bits``; other combinations raise ``ValueError``.

    Hold ``rst`` for at least four cycles after power-up in simulation (the lane
    accumulators are only ever reset, never cleared, and the DSP pipeline must flush);
    on the FPGA the configuration values already are the reset values.  The engine
    never stalls inside an inference, so the cycle counts above are exact, and latency
    from the first input beat to the last output beat is about
    ``d + program_cycles(0) + write_delay + P + n_out``.
    """

    def __init__(self, model, lanes, *, target="generic", weight_memory="auto", programs=(),
                 cache_slots=0, slot_format=None, slot_layers=None, interleave=True):
        # The plan checks the model, programs, slots and lane count (in that order), then
        # the target and weight storage are checked by the choice of weight memory.
        self._plan = plan = EnginePlan(model, lanes, programs=programs, cache_slots=cache_slots,
                                       slot_format=slot_format, slot_layers=slot_layers, interleave=interleave)
        self._weight_memory = plan.weight_memory_for(target, weight_memory)
        self._model = model
        self._target = target
        self._n_slots = plan.cache_slots
        self._slots = plan.slot_format
        self._first_slot = plan.first_slot_program
        ram = self._weight_memory == "ram"
        super().__init__(EngineSignature(
            model, programs=len(plan.programs), slot_write=self.slot_write_layout if self._n_slots else None,
            weight_words=len(plan.words) if ram else 0, weight_word_bits=plan.lanes * plan.weight_bits))

    # -- cache slots -----------------------------------------------------------------
    @property
    def cache_slots(self):
        """Number of writable one-layer cache programs (0 without a cache)."""
        return self._n_slots

    @property
    def first_slot_program(self):
        """Program number of cache slot 0 (slot ``s`` is program ``first_slot_program + s``)."""
        return self._first_slot

    def slot_word_base(self, s):
        """Weight-memory address of slot ``s``'s first weight word."""
        return self._plan.slot_word_base(s)

    def slot_chan_base(self, s):
        """Parameter-memory index of slot ``s``'s first output channel."""
        return self._plan.slot_chan_base(s)

    @property
    def slot_write_layout(self):
        """Payload of the ``cw`` port: one weight word or one channel's parameters per beat.

        ``kind`` 0 writes ``word`` to weight address ``addr``; ``kind`` 1 writes ``off``,
        ``mult`` and ``shift`` (``pwlnet.hw.slot_format.SlotFormat`` widths) to channel ``addr``.
        """
        f, pl = self._slots, self._plan
        return data.StructLayout({
            "kind": 1,
            "addr": range(max(2, len(pl.words), len(pl.params))),
            "word": unsigned(pl.lanes * pl.weight_bits),
            "off": signed(f.off_bits),
            "mult": unsigned(max(1, f.mult_bits)),
            "shift": unsigned(f.shift_bits),
        })

    # -- read-only facts -------------------------------------------------------------
    @property
    def plan(self):
        """The :class:`~pwlnet.hw.engine.plan.EnginePlan` the engine is built from."""
        return self._plan

    @property
    def lanes(self):
        """Number of lanes ``P``."""
        return self._plan.lanes

    @property
    def ideal_cycles(self):
        """Sum over layers of ``ceil(n_out / P) * n_in``."""
        return self._plan.ideal_cycles

    @property
    def cycles_per_inference(self):
        """Exact steady-state cycles per inference (back-to-back inputs, no back-pressure):
        half the pair program's with one (a float then; see ``interleave``), else the
        network's."""
        return self._plan.cycles_per_inference

    @property
    def pair_cycles(self):
        """Exact cycles of the pair program, two interleaved inferences (``None`` without)."""
        return self._plan.pair_cycles

    def program_cycles(self, k):
        """Exact cycles program ``k`` occupies the lanes (0 = the network)."""
        return self._plan.program_cycles(k)

    @property
    def weight_memory(self):
        """The weight storage actually used: ``"rom"`` or ``"ram"``."""
        return self._weight_memory

    @property
    def weight_words(self):
        """Weight memory image: one int per word, lane ``p`` in bits ``[p*wb, (p+1)*wb)``."""
        return self._plan.weight_words

    @property
    def weight_word_bits(self):
        """Width of one weight word (``P * weight_bits``)."""
        return self._plan.weight_word_bits

    @property
    def write_delay(self):
        """Cycles from a pass's last read to the write of its first result."""
        return self._plan.write_delay

    # -- hardware ----------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        pl = self._plan
        multi = len(pl.programs) > 1
        capture = capture_pass_facts(pl)
        m.submodules.loader = loader = InputLoader(pl.d, pl.in_bits)
        m.submodules.sequencer = seq = Sequencer(pl)
        m.submodules.lanes = lanes = LaneArray(pl.lanes, pl.weight_bits, pl.in_bits, pl.act_bits, pl.acc_bits,
                                               pass_layout(pl), capture=capture, target=self._target,
                                               pairs=pl.mac_pairs(self._target), hold_slots=pl.hold_slots)
        m.submodules.requant = rq = Requantizer(pl, writable=self._n_slots > 0)
        m.submodules.argmax = am = ArgmaxTracker(pl.n_out, pl.out_bits, banks=pl.out_banks)
        m.submodules.streamer = st = OutputStreamer(pl.n_out, pl.out_bits, len(pl.programs), banks=pl.out_banks)
        wmem = self._weights(m, rq)

        # Inference control: the loader fills input banks, the sequencer starts an
        # inference when its input is there and its output bank free, the streamer frees
        # that bank when the consumer has taken the last beat.
        wiring.connect(m, wiring.flipped(self.i), loader.i)
        wiring.connect(m, st.o, wiring.flipped(self.o))
        m.d.comb += [seq.in_full.eq(loader.full), loader.clear.eq(seq.in_clear), loader.clear_bank.eq(seq.clear_bank),
                     seq.out_busy.eq(st.busy), st.claim.eq(seq.claim), st.claim_bank.eq(seq.claim_bank)]
        if multi:
            wiring.connect(m, wiring.flipped(self.prog), seq.prog)
            m.d.comb += st.claim_prog.eq(seq.claim_prog)
        if pl.pair:
            m.d.comb += st.claim_pair.eq(seq.claim_pair)

        # Reads: x from the input or activation buffer, the weight word a cycle later.
        # Read ports without collision logic (unchecked_read_port) on every buffer: the
        # loader writes the bank the sequencer is not reading, a layer reads an activation
        # only cycles after it was written (the gap), the streamer reads a bank only once
        # it is full, and parameters are written only while the engine is quiet.
        wiring.connect(m, seq.rd, lanes.rd)
        if capture:
            m.d.comb += lanes.info.eq(seq.info)
        m.d.comb += [loader.rd_addr.eq(seq.x_addr), lanes.x_in.eq(loader.rd_data),
                     wmem.rd_addr.eq(seq.w_addr), lanes.w.eq(wmem.rd_data)]
        if pl.act_depth:
            m.submodules.act_mem = act_mem = Memory(shape=signed(pl.act_bits), depth=pl.act_regions * pl.act_depth,
                                                    init=[], attrs=NO_RW_CHECK)
            act_wr = act_mem.write_port()
            act_rd = unchecked_read_port(m, act_mem, "act_rd")
            m.d.comb += [act_rd.addr.eq(seq.x_addr), lanes.x_act.eq(act_rd.data)]
        wiring.connect(m, lanes.o, rq.i)

        # One write point for every layer: the activation buffer or the output buffer.
        wr_valid, wr_meta, wr_data = self._write_back(m, rq)
        if pl.act_depth:
            m.d.comb += [act_wr.addr.eq(wr_meta.waddr), act_wr.data.eq(wr_data),
                         act_wr.en.eq(wr_valid & ~wr_meta.to_out)]
        m.d.comb += [st.wr_addr.eq(wr_meta.waddr), st.wr_data.eq(wr_data), st.wr_en.eq(wr_valid & wr_meta.to_out)]

        # Argmax over the last layer's codes.  With a LERP unit it compares the codes as
        # written, one cycle after the write (the last layer may be a LERP layer); without
        # one its first stage sits beside the requantizer's last register, fed from the
        # same inputs.
        if pl.has_lerp:
            ax_valid, ax_meta, y_pre = wr_valid, wr_meta, wr_data
        else:
            ax_valid, ax_meta, y_pre = rq.early.valid, rq.early.payload.meta, rq.early.payload.y
        m.d.comb += [am.i.valid.eq(ax_valid & ax_meta.to_out), am.i.payload.code.eq(y_pre),
                     am.i.payload.o.eq(ax_meta.o), am.i.payload.first.eq(ax_meta.ofirst),
                     am.i.payload.last.eq(ax_meta.lastchan), am.i.payload.obank.eq(ax_meta.obank),
                     st.done.eq(am.done), st.done_bank.eq(am.done_bank), st.argmax.eq(am.index)]

        if self._n_slots:
            # Nothing loaded, running or still being written back, and no input partly
            # received: the cache slots' weights and parameters may be rewritten.
            # Registered; one cycle stale is safe because only an input beat (which the
            # writer holds off) can end quiescence.
            computing = (st.busy[0] & ~st.full[0]) | (st.busy[1] & ~st.full[1])
            m.d.sync += self.quiet.eq(seq.idle & ~seq.claim & ~loader.full[0] & ~loader.full[1] & ~computing
                                      & loader.idle)
        return m

    def _weights(self, m, rq):
        """The weight memory, its load port ``w_wr`` and the cache slots' writes (``cw``)."""
        pl = self._plan
        slots = self._n_slots > 0
        m.submodules.wmem = wmem = WeightMemory(
            pl.weight_word_bits, max(1, len(pl.words)), init=pl.words if self._weight_memory == "rom" else (),
            kind=self._weight_memory, target=self._target, writable=slots)
        if self._weight_memory == "ram" and not slots:
            m.d.comb += [self.w_wr.ready.eq(1), wmem.wr_addr.eq(self.w_wr.payload.addr),
                         wmem.wr_data.eq(self.w_wr.payload.data), wmem.wr_en.eq(self.w_wr.valid)]
        if not slots:
            return wmem
        # Cache slot writes (the host only sends them while the engine is quiet); a weight
        # load through w_wr wins, the slot write waits.  The two sources are merged into a
        # write register, one cycle ahead of the memory: on SPRAM the write address shares
        # the single address port with the reads, and the sources' valids come from other
        # blocks' state machines.
        cwp = self.cw.payload
        busy_wr = self.w_wr.valid if self._weight_memory == "ram" else Const(0)
        m.d.comb += self.cw.ready.eq(~busy_wr)
        wr_en = Signal()
        wr_addr = Signal.like(wmem.wr_addr)
        wr_data = Signal.like(wmem.wr_data)
        m.d.sync += wr_en.eq(0)
        if self._weight_memory == "ram":
            m.d.comb += self.w_wr.ready.eq(1)
            with m.If(self.w_wr.valid):
                m.d.sync += [wr_en.eq(1), wr_addr.eq(self.w_wr.payload.addr), wr_data.eq(self.w_wr.payload.data)]
        with m.If(self.cw.valid & ~busy_wr & (cwp.kind == 0)):
            m.d.sync += [wr_en.eq(1), wr_addr.eq(cwp.addr), wr_data.eq(cwp.word)]
        m.d.comb += [wmem.wr_addr.eq(wr_addr), wmem.wr_data.eq(wr_data), wmem.wr_en.eq(wr_en),
                     # the slots' channel parameters go to the requantizer's memories
                     rq.pw.valid.eq(self.cw.valid & self.cw.ready & (cwp.kind == 1)),
                     rq.pw.payload.addr.eq(cwp.addr), rq.pw.payload.off.eq(cwp.off),
                     rq.pw.payload.mult.eq(cwp.mult), rq.pw.payload.shift.eq(cwp.shift)]
        return wmem

    def _write_back(self, m, rq):
        """``(valid, meta, code)`` of the write into the buffers, through the LERP unit if any.

        Every layer's codes go through the one unit (always ready: the requantizer never
        stalls); non-LERP layers carry their code past the table in the meta and select it
        at the output, so all layers still have a single write point and one write_delay.
        """
        pl = self._plan
        res = rq.o.payload
        if not pl.has_lerp:
            return rq.o.valid, res.meta, res.y
        meta = res.meta
        wb_layout = data.StructLayout({
            "waddr": meta.waddr.shape(), "o": meta.o.shape(), "to_out": 1,
            "lastchan": 1, "obank": meta.obank.shape(), "ofirst": 1, "y": res.y.shape(), "bypass": 1})
        m.submodules.lerp = lerp = LerpUnit(
            len(pl.lerp_tables), pl.lerp_bits, pl.lerp_k, pl.lerp_tables, meta=wb_layout,
            target=self._target, backpressure=False)
        lm = lerp.i.payload.meta
        m.d.comb += [
            lerp.i.valid.eq(rq.o.valid),
            # a LERP layer's y fits lerp_bits (its out_bits); other layers' codes may be
            # cut here, but those are bypassed
            lerp.i.payload.code.eq(res.y[:pl.lerp_bits].as_signed()),
            lerp.i.payload.channel.eq(meta.lchan),
            lm.waddr.eq(meta.waddr), lm.o.eq(meta.o), lm.to_out.eq(meta.to_out), lm.lastchan.eq(meta.lastchan),
            lm.obank.eq(meta.obank), lm.ofirst.eq(meta.ofirst), lm.y.eq(res.y), lm.bypass.eq(~meta.lerp),
        ]
        wr_data = Signal(res.y.shape(), name="wr_data")
        m.d.comb += wr_data.eq(Mux(lerp.o.payload.meta.bypass, lerp.o.payload.meta.y, lerp.o.payload.code))
        return lerp.o.valid, lerp.o.payload.meta, wr_data
