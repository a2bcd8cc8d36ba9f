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
* Cycles: each pass issues ``L = max(n_in, min(P, max n_out))`` cycles (so the hold
  register has drained before the next pass ends); after each layer the sequencer spends
  ``max(gap, 1)`` cycles without reads, where ``gap = max(0, write_delay - (G-1)*P)``
  makes sure the next layer never reads an activation before it is written and the one
  cycle is the descriptor LOAD.  Program cycles = ``sum(G*L + max(gap, 1))``.
* Nothing inside an inference ever stalls: input availability and output back-pressure
  only decide when the next inference *starts*, which keeps the schedule static and the
  analytic cycle count exact.  Inputs are double-buffered (the next one loads while the
  current one computes), outputs too (the next inference writes while the consumer still
  reads the previous one).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..lerp import LerpUnit
from ..mac import LaneMAC
from ..memory import NO_RW_CHECK, WeightMemory, delay_line, unchecked_read_port
from .plan import EnginePlan

__all__ = ["MLPEngine", "output_layout"]


def output_layout(model, programs=1):
    """Payload layout of the engine's (and the board's) output stream for ``model``.

    An engine with extra programs (``programs > 1``) adds ``program``: the program that
    computed the inference, on every beat.
    """
    n_out = model.layers[-1].n_out
    fields = {
        "data": signed(model.layers[-1].out_bits),
        "last": 1,
        "argmax": unsigned(max(1, ceil_log2(n_out))),
    }
    if programs > 1:
        fields["program"] = range(programs)
    return data.StructLayout(fields)


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
    cycles_per_inference : int
        Steady-state cycles between inferences with back-to-back inputs (exact).

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
    ``d + cycles_per_inference + write_delay + P + n_out``.
    """

    def __init__(self, model, lanes, *, target="generic", weight_memory="auto", programs=(),
                 cache_slots=0, slot_format=None, slot_layers=None):
        # The plan checks the model, programs, slots and lane count (in that order), then
        # the target and weight storage are checked by the choice of weight memory.
        self._plan = plan = EnginePlan(model, lanes, programs=programs, cache_slots=cache_slots,
                                       slot_format=slot_format, slot_layers=slot_layers)
        self._weight_memory = plan.weight_memory_for(target, weight_memory)
        self._model = model
        self._target = target
        self._n_slots = plan.cache_slots
        self._slots = plan.slot_format
        self._first_slot = plan.first_slot_program
        members = {
            "i": In(stream.Signature(signed(model.input_bits))),
            "o": Out(stream.Signature(output_layout(model, len(plan.programs)))),
        }
        if len(plan.programs) > 1:
            members["prog"] = In(stream.Signature(range(len(plan.programs))))
        if self._n_slots:
            members["cw"] = In(stream.Signature(self.slot_write_layout))
            members["quiet"] = Out(1)
        if self._weight_memory == "ram":
            members["w_wr"] = In(stream.Signature(data.StructLayout({
                "addr": range(max(2, len(plan.words))),
                "data": unsigned(plan.lanes * plan.weight_bits)})))
        super().__init__(members)

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
        ``mult`` and ``shift`` (``pwlnet.code_cache.SlotFormat`` widths) to channel ``addr``.
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
        """Exact steady-state interval between inferences (back-to-back inputs, no back-pressure)."""
        return self._plan.cycles_per_inference

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
        P, d, n_out = pl.lanes, pl.d, pl.n_out
        descs = pl.layers
        n_layers = len(descs)
        wb, xb = pl.weight_bits, pl.x_bits
        n_words = max(1, len(pl.words))
        max_L = max(x["L"] for x in descs)
        max_G = max(x["G"] for x in descs)
        max_gap = max(x["gap"] for x in descs)
        n_chan = len(pl.params)

        # ---- memories -------------------------------------------------------------
        slots = self._n_slots > 0
        m.submodules.wmem = wmem = WeightMemory(
            P * wb, n_words, init=pl.words if self._weight_memory == "rom" else (),
            kind=self._weight_memory, target=self._target, writable=slots)
        if self._weight_memory == "ram" and not slots:
            m.d.comb += [self.w_wr.ready.eq(1), wmem.wr_addr.eq(self.w_wr.payload.addr),
                         wmem.wr_data.eq(self.w_wr.payload.data), wmem.wr_en.eq(self.w_wr.valid)]
        if slots:
            # Cache slot writes (the host only sends them while the engine is quiet); a
            # weight load through w_wr wins, the slot write waits.  The two sources are
            # merged into a write register, one cycle ahead of the memory: on SPRAM the
            # write address shares the single address port with the reads, and the
            # sources' valids come from other blocks' state machines.
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
            m.d.comb += [wmem.wr_addr.eq(wr_addr), wmem.wr_data.eq(wr_data), wmem.wr_en.eq(wr_en)]

        # Read ports without collision logic (unchecked_read_port): no read of the address
        # being written in the same cycle is ever used.  The loader writes the bank the
        # sequencer is not reading, a layer reads an activation only cycles after it was
        # written (the gap), the streamer reads a bank only once it is full, and
        # parameters are written only while the engine is quiet.
        no_rw = NO_RW_CHECK
        m.submodules.in_mem = in_mem = Memory(shape=signed(pl.in_bits), depth=2 * d, init=[], attrs=no_rw)
        in_wr = in_mem.write_port()
        in_rd = unchecked_read_port(m, in_mem, "in_rd")

        has_act = pl.act_depth > 0
        if has_act:
            m.submodules.act_mem = act_mem = Memory(shape=signed(pl.act_bits), depth=2 * pl.act_depth, init=[],
                                                        attrs=no_rw)
            act_wr = act_mem.write_port()
            act_rd = unchecked_read_port(m, act_mem, "act_rd")

        # Block RAM even when tiny: in flip-flops it costs a register per bit (and the read
        # mux), logic cells the cached build does not have to spare.
        m.submodules.out_mem = out_mem = Memory(shape=signed(pl.out_bits), depth=2 * n_out, init=[],
                                                attrs={**no_rw, "ram_style": "block"})
        out_wr = out_mem.write_port()
        out_rd = unchecked_read_port(m, out_mem, "out_rd")

        param_layout = data.StructLayout({
            "off": signed(pl.off_bits),
            "mult": unsigned(max(1, pl.mult_bits)),
            "shift": unsigned(pl.shift_bits),
        })
        m.submodules.par_mem = par_mem = Memory(
            shape=param_layout, depth=max(1, n_chan),
            init=[{"off": o, "mult": mu if pl.has_multiply else 0, "shift": s} for o, mu, s in pl.params],
            attrs=no_rw)
        par_rd = unchecked_read_port(m, par_mem, "par_rd")
        if pl.has_multiply:
            # The offset joins the multiplier's adder tree only at its last levels: it has
            # a memory of its own, read then (a delayed address, not a delayed offset).
            # par_mem's copy of it is never read, and yosys drops those bits.
            m.submodules.off_mem = off_mem = Memory(
                shape=signed(pl.off_bits), depth=max(1, n_chan), init=[o for o, _, _ in pl.params],
                attrs=no_rw)
            off_rd = unchecked_read_port(m, off_mem, "off_rd")
        if slots:
            par_wr = par_mem.write_port()
            par_we = self.cw.valid & self.cw.ready & (cwp.kind == 1)
            m.d.comb += [par_wr.addr.eq(cwp.addr), par_wr.data.off.eq(cwp.off),
                         par_wr.data.mult.eq(cwp.mult if pl.has_multiply else 0),
                         par_wr.data.shift.eq(cwp.shift),
                         par_wr.en.eq(par_we)]
            if pl.has_multiply:
                off_wr = off_mem.write_port()
                m.d.comb += [off_wr.addr.eq(cwp.addr), off_wr.data.eq(cwp.off), off_wr.en.eq(par_we)]

        # Layer descriptor table: a small LUT ROM read combinationally by the sequencer,
        # whose outputs are registered into `cur` when a layer starts.
        # Besides the plain fields, the table holds the constants the sequencer compares
        # its counters with ("x_m2" = x - 2, or a never-reached sentinel), so every
        # terminal-count flag is an equality into a register, not a subtract-and-compare
        # on the path that restarts the counters.
        never_L, never_G = max_L, max_G
        # LERP fields exist only in models with a LERP layer (ReLU-only hardware unchanged).
        lch_shape = unsigned(ceil_log2(len(pl.lerp_tables))) if pl.has_lerp else unsigned(0)
        lerp_fields = {"lerp": 1, "lerp_base": lch_shape} if pl.has_lerp else {}
        desc_layout = data.StructLayout({
            "w_base": range(n_words + 1),
            "n_in_m2": range(max_L + 1),
            "n_in_is1": 1,
            "L_m2": range(max_L + 1),
            "L_is1": 1,
            "G_m2": range(max_G + 1),
            "G_is1": 1,
            "nv_last_m1": range(P),
            "chan_base": range(n_chan + 1),
            "src_in": 1,
            "src_base": range(2 * pl.act_depth + 1),
            "dst_out": 1,
            "dst_base": range(2 * pl.act_depth + 1),
            "gap_m2": range(max_gap + 1),
            "gap_is2": 1,
            "to_wait": 1,
            "last": 1,
            **lerp_fields,
        })

        def encode(x):
            return {
                "w_base": x["w_base"],
                "n_in_m2": x["n_in"] - 2 if x["n_in"] >= 2 else never_L, "n_in_is1": x["n_in"] == 1,
                "L_m2": x["L"] - 2 if x["L"] >= 2 else never_L, "L_is1": x["L"] == 1,
                "G_m2": x["G"] - 2 if x["G"] >= 2 else never_G, "G_is1": x["G"] == 1,
                "nv_last_m1": x["nv_last"] - 1, "chan_base": x["chan_base"],
                "src_in": x["src_in"], "src_base": x["src_base"],
                "dst_out": x["dst_out"], "dst_base": x["dst_base"],
                "gap_m2": max(0, x["gap"] - 2), "gap_is2": x["gap"] == 2, "to_wait": x["gap"] >= 2,
                "last": x["last"],
                **({"lerp": x["lerp"], "lerp_base": x["lerp_base"]} if pl.has_lerp else {}),
            }
        m.submodules.desc_rom = desc_rom = Memory(
            shape=desc_layout, depth=n_layers, init=[encode(x) for x in descs])
        desc_rd = desc_rom.read_port(domain="comb")

        # ---- input loader: fills one bank while the engine reads the other -----------
        # Verilog-simulation robustness rule used throughout: no combinational signal is
        # assigned inside `m.If` and no Array is *read* with a signal index.  yosys writes
        # both as `always @*` blocks, which Icarus in -g2012 mode (cocotb's default) does
        # not run at time 0, so they would stay x until an input happens to change.
        in_full = Array([Signal(name=f"in_full{b}") for b in range(2)])
        cb = Signal()            # bank (input and output) of the current inference
        ld_bank = Signal()
        ld_cnt = Signal(range(d))
        ld_last = Signal(init=int(d == 1))   # ld_cnt == d - 1, registered
        ld_addr = Signal(range(2 * d))       # ld_bank * d + ld_cnt, as its own counter
        # `ready` is a register holding exactly ~in_full[ld_bank] of this cycle, computed
        # from the next-state values, so the handshake drives no logic chain.
        rdy = Signal(init=1)
        take = Signal()
        ld_done = Signal()
        in_clear = Signal()       # driven by the sequencer: input bank cb fully read
        m.d.comb += [
            self.i.ready.eq(rdy),
            take.eq(self.i.valid & rdy),
            ld_done.eq(take & ld_last),
            in_wr.addr.eq(ld_addr),
            in_wr.data.eq(self.i.payload),
            in_wr.en.eq(take),
        ]
        with m.If(take):
            m.d.sync += ld_addr.eq(Mux(ld_addr == 2 * d - 1, 0, ld_addr + 1))
            with m.If(ld_last):
                m.d.sync += [ld_cnt.eq(0), ld_last.eq(d == 1)]
            with m.Else():
                m.d.sync += [ld_cnt.eq(ld_cnt + 1), ld_last.eq(ld_cnt == d - 2)]
        full_next = []
        for b_ in range(2):
            fn = Signal(name=f"in_full_next{b_}")
            m.d.comb += fn.eq((in_full[b_] & ~(in_clear & (cb == b_))) | (ld_done & (ld_bank == b_)))
            m.d.sync += in_full[b_].eq(fn)
            full_next.append(fn)
        bank_next = ld_bank ^ ld_done
        m.d.sync += [ld_bank.eq(bank_next), rdy.eq(~Mux(bank_next, full_next[1], full_next[0]))]

        # ---- sequencer -------------------------------------------------------------
        # One-hot states: IDLE (no inference), RUN (issuing reads), WAIT (gap before the
        # next layer), LOAD (descriptor of the next layer into `cur`).  LOAD is a cycle of
        # its own so that no combinational path runs from the end-of-layer decision
        # through the descriptor ROM into the many `cur`/counter registers; it costs one
        # cycle per layer, absorbed by the gap where there is one.  Every decision input is
        # a register (terminal-count flags are computed a cycle ahead), so the control
        # logic is two or three LUTs deep.
        st_idle = Signal(init=1)
        st_run, st_wait, st_load = Signal(), Signal(), Signal()
        gap_cnt = Signal(range(max_gap + 1))
        gap_z = Signal()         # gap_cnt == 0, registered
        nb = Signal()            # bank of the next inference
        out_busy = Array([Signal(name=f"out_busy{b}") for b in range(2)])
        out_full = Array([Signal(name=f"out_full{b}") for b in range(2)])
        nidx = Signal(range(max(2, n_layers)))   # table entry of the next layer
        firsts = Array([Const(f, range(max(2, n_layers))) for f, _ in pl.programs])
        cur = Signal(desc_layout, reset_less=True)
        i = Signal(range(max_L))
        g = Signal(range(max_G))
        gp = Signal(range(max_G * P + 1))     # g * P, kept as a counter (no multiplier)
        waddr = Signal(range(n_words + 1))
        # Registered flags about the current (i, g): read valid, last read of the pass,
        # last cycle of the pass, last pass of the layer, last cycle of the layer (and of
        # the program).
        f_iv, f_il, f_li, f_lg, f_end, f_endl = (Signal(name=n) for n in (
            "f_iv", "f_il", "f_li", "f_lg", "f_end", "f_endl"))
        xbase = Signal(range(max(2 * d, 2 * pl.act_depth)))
        xa = Signal.like(xbase)

        # Program select: one `prog` beat per inference when extra programs exist.
        if len(pl.programs) > 1:
            sel_valid, sel = self.prog.valid, self.prog.payload
        else:
            sel_valid, sel = Const(1), Const(0)
        m.d.comb += [desc_rd.addr.eq(nidx)]
        issue = st_run
        iss_valid = Signal()
        layer_end = Signal()
        m.d.comb += [iss_valid.eq(st_run & f_iv), layer_end.eq(st_run & f_end),
                     # every read of the input bank has been issued: it may be refilled
                     in_clear.eq(st_run & f_end & cur.src_in)]

        # Registered: it can only fall by our own start (which toggles nb), and the cycle
        # after a start is a LOAD, where no start can happen, so one cycle of staleness
        # is harmless and keeps the flag logic off the start decision path.
        can_start = Signal()
        m.d.sync += can_start.eq(Mux(nb, in_full[1] & ~out_busy[1], in_full[0] & ~out_busy[0]))
        start_inf = Signal()
        m.d.comb += start_inf.eq(can_start & sel_valid & (st_idle | (st_run & f_endl)))
        if len(pl.programs) > 1:
            m.d.comb += self.prog.ready.eq(start_inf)

        with m.If(issue):
            with m.If(f_li):
                nxt_end = cur.L_is1 & (g == cur.G_m2)
                m.d.sync += [i.eq(0), g.eq(g + 1), gp.eq(gp + P),
                             f_iv.eq(1), f_il.eq(cur.n_in_is1), f_li.eq(cur.L_is1),
                             f_lg.eq(g == cur.G_m2), f_end.eq(nxt_end), f_endl.eq(nxt_end & cur.last)]
            with m.Else():
                nxt_end = f_lg & (i == cur.L_m2)
                m.d.sync += [i.eq(i + 1), f_iv.eq(f_iv & ~f_il),
                             f_il.eq(i == cur.n_in_m2), f_li.eq(i == cur.L_m2),
                             f_end.eq(nxt_end), f_endl.eq(nxt_end & cur.last)]
            # The last read of a layer does not step the address (LOAD sets the next
            # layer's base): it never leaves the memory, whose size stays the exact sum
            # of the layers' words (EBR/SPRAM granularity), and never reads an address a
            # Verilog simulation would answer with x.
            with m.If(iss_valid & ~(f_il & f_lg)):
                m.d.sync += waddr.eq(waddr + 1)
            # Activation read address: a register, restarted every pass and frozen on the
            # bubble cycles of a pass (so it always stays inside the buffer).
            with m.If(f_li):
                m.d.sync += xa.eq(xbase)
            with m.Elif(f_iv & ~f_il):
                m.d.sync += xa.eq(xa + 1)
        with m.If(layer_end):
            m.d.sync += st_run.eq(0)
            with m.If(cur.last):
                m.d.sync += st_idle.eq(1)
            with m.Elif(cur.to_wait):
                # gap - 1 WAIT cycles, then the LOAD cycle: `gap` cycles without reads.
                m.d.sync += [st_wait.eq(1), gap_cnt.eq(cur.gap_m2), gap_z.eq(cur.gap_is2)]
            with m.Else():
                m.d.sync += st_load.eq(1)
        with m.If(st_wait):
            with m.If(gap_z):
                m.d.sync += [st_wait.eq(0), st_load.eq(1)]
            with m.Else():
                m.d.sync += [gap_cnt.eq(gap_cnt - 1), gap_z.eq(gap_cnt == 1)]
        with m.If(start_inf):
            m.d.sync += [st_idle.eq(0), st_load.eq(1), cb.eq(nb), nb.eq(~nb), out_busy[nb].eq(1),
                         nidx.eq(firsts[sel])]
        if len(pl.programs) > 1:
            # Which program computed each output bank's inference (reported on `o`).
            prog_of = [Signal(range(len(pl.programs)), name=f"prog_of{b}") for b in range(2)]
            for b in range(2):
                with m.If(start_inf & (nb == b)):
                    m.d.sync += prog_of[b].eq(sel)
        if self._n_slots:
            # Nothing loaded, running or still being written back, and no input partly
            # received: the cache slots' weights and parameters may be rewritten.
            # Registered; one cycle stale is safe because only an input beat (which the
            # writer holds off) can end quiescence.
            computing = (out_busy[0] & ~out_full[0]) | (out_busy[1] & ~out_full[1])
            m.d.sync += self.quiet.eq(st_idle & ~start_inf & ~in_full[0] & ~in_full[1] & ~computing
                                      & (ld_cnt == 0) & ~take)
        lidx = Signal(range(max(2, n_layers)))
        with m.If(st_load):
            new = desc_rd.data
            base = Mux(new.src_in, Mux(cb, d, 0), new.src_base)
            m.d.sync += [st_load.eq(0), st_run.eq(1), cur.eq(new), i.eq(0), g.eq(0), gp.eq(0),
                         waddr.eq(new.w_base), nidx.eq(nidx + 1), lidx.eq(nidx),
                         xbase.eq(base), xa.eq(base),
                         f_iv.eq(1), f_il.eq(new.n_in_is1), f_li.eq(new.L_is1), f_lg.eq(new.G_is1),
                         f_end.eq(new.L_is1 & new.G_is1), f_endl.eq(new.L_is1 & new.G_is1 & new.last)]

        # The weight word is read one cycle after the activations, from a copy of the
        # address: its memory's output register then stands in for an operand register
        # (11 flip-flops instead of P * weight_bits).
        waddr_d = Signal.like(waddr)
        m.d.sync += waddr_d.eq(waddr)
        m.d.comb += [wmem.rd_addr.eq(waddr_d), in_rd.addr.eq(xa)]
        if has_act:
            m.d.comb += act_rd.addr.eq(xa)

        # Per-pass facts, captured at the pass's last read and carried to the hold register.
        pass_layout = data.StructLayout({
            "chan": range(n_chan + P + 1),
            "wbase": range(max(2 * pl.act_depth, 2 * n_out) + max_G * P + 1),
            "obase": range(max_G * P + 1),
            "nv_m1": range(P),
            "lidx": range(max(2, n_layers)),
            "to_out": 1,
            "lastpass": 1,
            "obank": 1,
            # LERP table channel of the pass's first output (0 on other layers, so the
            # unit's table addresses stay inside its memories even when bypassed).
            **({"lerp": 1, "lchan": lch_shape} if pl.has_lerp else {}),
        })
        flag_layout = data.StructLayout({
            "valid": 1, "last": 1, "src_in": 1, "pinfo": pass_layout})
        f0 = Signal(flag_layout)
        m.d.comb += [
            f0.valid.eq(iss_valid), f0.last.eq(f_il),
            f0.src_in.eq(cur.src_in),
            f0.pinfo.chan.eq(cur.chan_base + gp),
            f0.pinfo.wbase.eq(Mux(cur.dst_out, Mux(cb, n_out, 0), cur.dst_base) + gp),
            f0.pinfo.obase.eq(gp),
            f0.pinfo.nv_m1.eq(Mux(f_lg, cur.nv_last_m1, P - 1)),
            f0.pinfo.lidx.eq(lidx),
            f0.pinfo.to_out.eq(cur.dst_out),
            f0.pinfo.lastpass.eq(cur.last & f_lg),
            f0.pinfo.obank.eq(cb),
        ]
        if pl.has_lerp:
            m.d.comb += [f0.pinfo.lerp.eq(cur.lerp),
                         f0.pinfo.lchan.eq(Mux(cur.lerp, cur.lerp_base + gp, 0))]
        # The pass facts only change from one pass to the next, so when the last reads of
        # two passes are always at least as far apart as a last read from its hold copy
        # (5 cycles), one register captured at the last read holds them until the copy;
        # only the read flags travel down the pipeline.  Otherwise the facts ride along.
        capture = pl.min_last_read_distance >= 5
        if capture:
            flag_layout = data.StructLayout({"valid": 1, "last": 1, "src_in": 1})
            pcap = Signal(pass_layout, reset_less=True)
            with m.If(iss_valid & f_il):
                m.d.sync += pcap.eq(f0.pinfo)
            f0f = Signal(flag_layout)
            m.d.comb += [f0f.valid.eq(f0.valid), f0f.last.eq(f0.last), f0f.src_in.eq(f0.src_in)]
        else:
            f0f = f0
        f1 = Signal(flag_layout)
        f2 = Signal(flag_layout)
        f3 = Signal(flag_layout)
        fa = Signal(flag_layout)     # accumulate stage
        m.d.sync += [f1.eq(f0f), f2.eq(f1), f3.eq(f2), fa.eq(f3)]

        # ---- lanes ----------------------------------------------------------------
        # x is forced to 0 on cycles without a read, so the lanes' products are 0 there.
        # x is registered in fabric between the memories and the DSPs: the DSP columns sit
        # at the die edge, so the broadcast of x is a long route that must not share a
        # cycle with the memory output and the source mux.  Each weight byte goes to one
        # DSP only, straight from the weight memory's output register.
        x = Signal(signed(xb))
        w = wmem.rd_data
        if has_act:
            m.d.sync += x.eq(Mux(f1.valid, Mux(f1.src_in, in_rd.data, act_rd.data), 0))
        else:
            m.d.sync += x.eq(Mux(f1.valid, in_rd.data, 0))
        accw = pl.acc_bits
        # Each pass's first add starts its accumulator from 0 (`fresh`: the previous valid
        # read was a pass's last).  The clear is one AND per accumulator bit; the
        # alternative (free-running accumulators and a subtraction of the previous pass's
        # end value) costs two registers per accumulator bit (`prev` and its copy beside
        # the hold register), which share logic cells with nothing.
        accs = [Signal(signed(accw), name=f"acc{p}") for p in range(P)]
        hold = [Signal(signed(accw), name=f"hold{p}", reset_less=True) for p in range(P)]
        fresh = Signal(init=1)
        with m.If(fa.valid):
            m.d.sync += fresh.eq(fa.last)
        ser_act = Signal()
        ser_j = Signal(range(P))
        sinfo = Signal(pass_layout, reset_less=True)
        # The hold register copies the accumulators the cycle *after* their last add (not
        # from the adder output), so no path runs through a carry chain and then a mux.
        f4 = Signal(flag_layout)
        pass_end = Signal()
        m.d.sync += [f4.eq(fa), pass_end.eq(fa.valid & fa.last)]
        for p in range(P):
            # On iCE40 the accumulator is the DSP's own output register (see LaneMAC).
            mac = LaneMAC(wb, xb, accw, target=self._target)
            m.submodules[f"mul{p}"] = mac
            # The enable (not only the zero products of bubble cycles) keeps a Verilog
            # simulation exact: x * an undefined weight (SPRAM being loaded) is x there.
            m.d.comb += [mac.a.eq(w[p * wb:(p + 1) * wb].as_signed()), mac.b.eq(x),
                         mac.en.eq(fa.valid), mac.clr.eq(fresh), accs[p].eq(mac.acc)]
            with m.If(pass_end):
                m.d.sync += hold[p].eq(accs[p])
            with m.Else():
                # Shift towards lane 0, which feeds the shared requant pipeline.
                m.d.sync += hold[p].eq(hold[p + 1] if p + 1 < P else 0)

        with m.If(pass_end):
            m.d.sync += [ser_act.eq(1), ser_j.eq(0), sinfo.eq(pcap if capture else f4.pinfo)]
        with m.Elif(ser_act):
            m.d.sync += ser_j.eq(ser_j + 1)
            with m.If(ser_j == sinfo.nv_m1):
                m.d.sync += ser_act.eq(0)

        # ---- shared requantization pipeline ------------------------------------------
        # y = saturate((acc * m + off) >> s) with off = bias * m + 2**(s-1) folded at build
        # time (exactly fixedpoint.requantize: (acc + b) * m + half = acc * m + off).
        # One carry chain per stage at most; the multiply is an adder tree of partial
        # products; the shift and the saturation take two stages each.
        meta_layout = data.StructLayout({
            "valid": 1, "waddr": pass_layout["wbase"].shape, "o": pass_layout["obase"].shape,
            "lidx": pass_layout["lidx"].shape, "to_out": 1, "lastchan": 1, "obank": 1,
            "ofirst": 1, **({"lerp": 1, "lchan": lch_shape} if pl.has_lerp else {})})
        m.d.comb += par_rd.addr.eq(sinfo.chan + ser_j)
        # The meta only rides along: up to the saturation stage (where `lidx` is needed)
        # it goes through a block-RAM delay line, and only its `valid` bit, which must be
        # reset, through registers.  `stage` counts the stages; `meta_at` gives the meta
        # of the current one.
        stages = []
        valids = []

        def stage(prev_meta):
            v = Signal(name=f"s{len(stages) + 1}_valid")
            m.d.sync += v.eq(valids[-1] if valids else meta0.valid)
            valids.append(v)
            stages.append(None)
            return None

        def meta_at():
            n = len(stages)
            line = delay_line(m, meta0, n, "meta_line") if n >= 2 else None
            out = Signal(meta_layout, name=f"s{n}")
            if line is None:
                m.d.sync += out.eq(meta0)
            else:
                m.d.comb += [out.eq(line), out.valid.eq(valids[-1])]
            return out

        # s1: accumulator and meta registered, parameters arrive from the EBR
        meta0 = Signal(meta_layout)
        m.d.comb += [
            meta0.valid.eq(ser_act), meta0.waddr.eq(sinfo.wbase + ser_j), meta0.o.eq(sinfo.obase + ser_j),
            meta0.lidx.eq(sinfo.lidx), meta0.to_out.eq(sinfo.to_out),
            meta0.lastchan.eq(sinfo.lastpass & (ser_j == sinfo.nv_m1)), meta0.obank.eq(sinfo.obank),
            meta0.ofirst.eq((sinfo.obase == 0) & (ser_j == 0)),
        ]
        if pl.has_lerp:
            # channel = lerp_base + output index in the layer, formed like the write address
            m.d.comb += [meta0.lerp.eq(sinfo.lerp),
                         meta0.lchan.eq(sinfo.lchan + Mux(sinfo.lerp, ser_j, 0))]
        s = stage(meta0)
        a1 = Signal(signed(accw))
        m.d.sync += a1.eq(hold[0])
        prm = par_rd.data
        pw = pl.pre_bits
        sh = Signal(unsigned(pl.shift_bits))
        if pl.has_multiply:
            # partial products acc * m[k] * 2**k (an AND, no carry chain), plus the offset,
            # summed by a tree of registered adders (one carry chain per stage)
            terms = []
            for k in range(pl.mult_bits):
                t = Signal(signed(pw), name=f"pp{k}")
                m.d.sync += t.eq(Mux(prm.mult[k], a1 << k, 0))
                terms.append(t)
            # The offset is the odd term out until the level that adds it: it is read
            # from off_mem just in time, with the parameter address delayed (level i's
            # inputs are registers i + 1 cycles after the address).
            OFF = "off"
            terms.append(OFF)
            m.d.sync += sh.eq(prm.shift)
            s = stage(s)
            level = 0
            off_addr = par_rd.addr
            while len(terms) > 1:
                level += 1
                nxt = []
                for k in range(0, len(terms) - 1, 2):
                    a, b = terms[k], terms[k + 1]
                    if a is OFF or b is OFF:
                        for _ in range(level):
                            d_ = Signal.like(off_addr, name=f"off_addr{level}")
                            m.d.sync += d_.eq(off_addr)
                            off_addr = d_
                        m.d.comb += off_rd.addr.eq(off_addr)
                        a, b = (off_rd.data if x is OFF else x for x in (a, b))
                    t = Signal(signed(pw), name=f"sum{len(stages)}_{k}")
                    m.d.sync += t.eq(a + b)
                    nxt.append(t)
                if len(terms) % 2:
                    if terms[-1] is OFF:
                        nxt.append(OFF)
                    else:
                        t = Signal(signed(pw), name=f"sum{len(stages)}_{len(terms) - 1}")
                        m.d.sync += t.eq(terms[-1])
                        nxt.append(t)
                terms = nxt
                sh_n = Signal.like(sh)
                m.d.sync += sh_n.eq(sh)
                sh = sh_n
                s = stage(s)
            pre = terms[0]
        else:
            pre = Signal(signed(pw))
            m.d.sync += [pre.eq(a1 + prm.off), sh.eq(prm.shift)]
            s = stage(s)
        # arithmetic (flooring) shift: low three bits of the shift, then the rest
        v = Signal(signed(pw), name="shr_lo")
        m.d.sync += v.eq(pre >> sh[:3])
        sh_hi = Signal(unsigned(pl.shift_bits), name="sh_hi")
        m.d.sync += sh_hi.eq(sh & ~7)
        s = stage(s)
        if pl.shift_bits > 3:
            v2 = Signal(signed(pl.post_bits), name="shr_hi")
            m.d.sync += v2.eq((v >> sh_hi)[:pl.post_bits])
            v = v2
            s = stage(s)
        else:
            v = v[:pl.post_bits].as_signed()
        # Every channel shifts by at least min_shift, so the shifted value fits
        # post_bits = pre_bits - min_shift: the truncation above is exact and keeps the
        # overflow test below narrow (a LUT or two, not a long reduction).
        # saturation: overflow = the bits from the layer's sign position up are not all
        # equal (a LUT tree, not a compare); ReLU layers clamp at 0.
        yb = max(pl.act_bits, pl.out_bits)
        out_bits_set = sorted({x["ob"] for x in descs})
        # Per-layer saturation constants in a small LUT ROM (a Memory read port, not an
        # Array of constants: that becomes an `always @*` case block in Verilog, which
        # Icarus never evaluates while the index keeps its initial value).
        sat_layout = data.StructLayout({"relu": 1, "lo": signed(yb), "hi": signed(yb),
                                        "obsel": len(out_bits_set)})
        m.submodules.sat_rom = sat_rom = Memory(
            shape=sat_layout, depth=n_layers,
            init=[{"relu": x["lo"] == 0, "lo": x["lo"], "hi": x["hi"],
                   "obsel": 1 << out_bits_set.index(x["ob"])} for x in descs])
        sat_rd = sat_rom.read_port(domain="comb")
        ovfs = []
        for b in out_bits_set:
            top = v[b - 1:]
            ovfs.append(~((top == 0) | (top == (1 << len(top)) - 1)))
        ovf = Signal()
        neg = Signal()
        vlow = Signal(signed(yb))
        s = meta_at()
        m.d.comb += sat_rd.addr.eq(s.lidx)
        ovf_sel = 0
        for k, o in enumerate(ovfs):
            ovf_sel = ovf_sel | (o & sat_rd.data.obsel[k])
        relu, lo, hi = Signal(), Signal(signed(yb)), Signal(signed(yb))
        m.d.sync += [ovf.eq(ovf_sel), neg.eq(v[-1]), vlow.eq(v[:yb]),
                     relu.eq(sat_rd.data.relu), lo.eq(sat_rd.data.lo), hi.eq(sat_rd.data.hi)]
        stage2 = Signal(meta_layout, name=f"s{len(stages) + 1}")
        m.d.sync += stage2.eq(s)
        stages.append(stage2)
        s = stage2
        y = Signal(signed(yb), name="y")
        y_next = Mux(relu & neg, 0, Mux(ovf, Mux(neg, lo, hi), vlow))
        m.d.sync += y.eq(y_next)
        s6 = Signal(meta_layout, name=f"s{len(stages) + 1}")
        m.d.sync += s6.eq(s)
        stages.append(s6)
        y6 = y
        assert len(stages) == pl.req_stages, (len(stages), pl.req_stages)

        if pl.has_lerp:
            # ---- LERP unit -------------------------------------------------------------
            # Every layer's codes go through the one unit (always ready: the requant
            # pipeline never stalls); non-LERP layers carry their code past the table in
            # the meta and select it at the output, so all layers still have a single
            # write point and one write_delay.
            wb_layout = data.StructLayout({
                "waddr": meta_layout["waddr"].shape, "o": meta_layout["o"].shape, "to_out": 1,
                "lastchan": 1, "obank": 1, "ofirst": 1, "y": signed(yb), "bypass": 1})
            m.submodules.lerp = lerp = LerpUnit(
                len(pl.lerp_tables), pl.lerp_bits, pl.lerp_k, pl.lerp_tables, meta=wb_layout,
                target=self._target, backpressure=False)
            m.d.comb += [
                lerp.i.valid.eq(s6.valid),
                # a LERP layer's y fits lerp_bits (its out_bits); other layers' codes may be
                # cut here, but those are bypassed
                lerp.i.payload.code.eq(y6[:pl.lerp_bits].as_signed()),
                lerp.i.payload.channel.eq(s6.lchan),
                lerp.i.payload.meta.waddr.eq(s6.waddr), lerp.i.payload.meta.o.eq(s6.o),
                lerp.i.payload.meta.to_out.eq(s6.to_out), lerp.i.payload.meta.lastchan.eq(s6.lastchan),
                lerp.i.payload.meta.obank.eq(s6.obank), lerp.i.payload.meta.ofirst.eq(s6.ofirst),
                lerp.i.payload.meta.y.eq(y6), lerp.i.payload.meta.bypass.eq(~s6.lerp),
            ]
            wr_valid, wr_meta = lerp.o.valid, lerp.o.payload.meta
            wr_data = Signal(signed(yb), name="wr_data")
            m.d.comb += wr_data.eq(Mux(wr_meta.bypass, wr_meta.y, lerp.o.payload.code))
        else:
            wr_valid, wr_meta, wr_data = s6.valid, s6, y6
        if has_act:
            m.d.comb += [act_wr.addr.eq(wr_meta.waddr), act_wr.data.eq(wr_data),
                         act_wr.en.eq(wr_valid & ~wr_meta.to_out)]
        m.d.comb += [out_wr.addr.eq(wr_meta.waddr), out_wr.data.eq(wr_data),
                     out_wr.en.eq(wr_valid & wr_meta.to_out)]

        # ---- argmax (first maximum, in channel order) --------------------------------
        # The running maximum is a recurrence (compare, then update), which would put a
        # carry chain and the update logic in one cycle.  Instead a code is compared, in
        # stage X, both with the running maximum B and with the code one stage ahead (in Y,
        # whose update of B lands at the end of this cycle); in stage Y the registered
        # "did Y's predecessor update B" flag picks the right comparison.  Codes are
        # compared in offset binary (sign flipped: an unsigned compare is a bare carry
        # chain).  The final index is copied to the bank's argmax one cycle later.
        am_w = max(1, ceil_log2(n_out))
        ob = pl.out_bits
        sign_flip = 1 << (ob - 1)
        best_b = Signal(ob, reset_less=True)      # offset-binary running maximum
        best_idx = Signal(am_w, reset_less=True)
        argmax = Array([Signal(am_w, name=f"argmax{b}", reset_less=True) for b in range(2)])
        x_layout = data.StructLayout({"code": ob, "en": 1, "first": 1, "last": 1,
                                      "o": am_w, "obank": 1})
        y_pre = Signal(signed(yb))
        if pl.has_lerp:
            # The last layer may be a LERP layer: compare the codes as written, one cycle
            # after the write (stage X follows the unit's output).
            m.d.comb += y_pre.eq(wr_data)
            ax_valid, ax_meta = wr_valid, wr_meta
        else:
            # Stage X beside s6: it registers what s6 registers, from the same inputs.
            m.d.comb += y_pre.eq(y_next)
            ax_valid, ax_meta = s.valid, s
        ax = Signal(x_layout)
        m.d.sync += [ax.code.eq(y_pre[:ob] ^ sign_flip), ax.en.eq(ax_valid & ax_meta.to_out),
                     ax.first.eq(ax_valid & ax_meta.to_out & ax_meta.ofirst),
                     ax.last.eq(ax_valid & ax_meta.to_out & ax_meta.lastchan),
                     ax.o.eq(ax_meta.o), ax.obank.eq(ax_meta.obank)]
        ay = Signal(x_layout)                     # stage Y
        gt_best, gt_prev, upd = Signal(), Signal(), Signal()
        m.d.sync += [ay.eq(ax), gt_best.eq(ax.code > best_b), gt_prev.eq(ax.code > ay.code)]
        better = Signal()
        m.d.comb += better.eq(ay.first | (ay.en & Mux(upd, gt_prev, gt_best)))
        m.d.sync += upd.eq(better)
        with m.If(better):
            m.d.sync += [best_b.eq(ay.code), best_idx.eq(ay.o)]
        fin, fin_bank = Signal(), Signal()
        m.d.sync += [fin.eq(ay.last), fin_bank.eq(ay.obank)]
        with m.If(fin):
            m.d.sync += [argmax[fin_bank].eq(best_idx), out_full[fin_bank].eq(1)]

        # ---- output streamer -----------------------------------------------------
        # The read port's output register is the payload register: it only advances when
        # the current beat is taken (or there is none), so the payload is stable.
        st_bank = Signal()
        st_ptr = Signal(range(n_out))
        st_all = Signal()
        st_addr = Signal(range(2 * n_out))    # st_bank * n_out + st_ptr, as its own counter
        o_last = Signal()
        adv = ~self.o.valid | self.o.ready
        m.d.comb += [
            out_rd.en.eq(adv),
            out_rd.addr.eq(st_addr),
            self.o.payload.data.eq(out_rd.data),
            self.o.payload.last.eq(o_last),
            self.o.payload.argmax.eq(Mux(st_bank, argmax[1], argmax[0])),
        ]
        if len(pl.programs) > 1:
            m.d.comb += self.o.payload.program.eq(Mux(st_bank, prog_of[1], prog_of[0]))
        with m.If(adv):
            with m.If(Mux(st_bank, out_full[1], out_full[0]) & ~st_all):
                m.d.sync += [self.o.valid.eq(1), o_last.eq(st_ptr == n_out - 1),
                             st_addr.eq(Mux(st_addr == 2 * n_out - 1, 0, st_addr + 1))]
                with m.If(st_ptr == n_out - 1):
                    m.d.sync += [st_ptr.eq(0), st_all.eq(1)]
                with m.Else():
                    m.d.sync += st_ptr.eq(st_ptr + 1)
            with m.Else():
                m.d.sync += self.o.valid.eq(0)
        with m.If(self.o.valid & self.o.ready & o_last):
            m.d.sync += [out_full[st_bank].eq(0), out_busy[st_bank].eq(0),
                         st_bank.eq(~st_bank), st_all.eq(0)]
        return m
