"""The engine plan: everything :class:`~pwlnet.hw.engine.MLPEngine` derives from a model.

An :class:`EnginePlan` is plain Python (integers, lists, numpy arrays).  It holds the
layer descriptor table, the weight memory image, the per-channel requantization
parameters, the datapath widths, the pipeline depth (``write_delay``) and the exact cycle
counts of every program.  The hardware blocks are built from it; software that only needs
the numbers (the host's weight image, the cache simulator's cycle counts, the cache's
slot format) asks the plan and elaborates nothing.

The rules stated here once:

* :func:`ideal_cycles`: ``sum(ceil(n_out / P) * n_in)`` over the layers;
* :func:`pack_weight_words`: one weight word per (pass, input), lane ``p`` in bits
  ``p*wb .. p*wb + wb - 1``;
* :func:`requant_offset`: ``off = bias * m + 2**(s-1)`` (``0`` when ``s == 0``), so that the
  requantizer's ``(acc * m + off) >> s`` equals ``round_shift((acc + bias) * m, s)``;
* :meth:`EnginePlan.program_cycles`: ``1 + sum(G * L + gap)`` over a program's layers
  (see the engine's module docstring for ``L`` and ``gap``).
"""

from __future__ import annotations

import numpy as np

from pwlnet import fixedpoint as fx
from pwlnet.artifact import CompiledModel, Layer

from ..lerp import lerp_latency
from ..mac import MUL_LATENCY, lanes_per_dsp
from ..memory import SPRAM_BLOCKS, SPRAM_DEPTH, SPRAM_WIDTH
from ..params import check_target

__all__ = ["EnginePlan", "schedule", "ENGINE_ACTIVATIONS", "WEIGHT_MEMORIES", "EBR_WEIGHT_BUDGET", "ICE40_DSPS",
           "ideal_cycles", "pack_weight_words", "requant_offset", "check_activations"]

#: Activations the engine implements, chosen per layer.  ``"lerp"`` layers share one
#: :class:`~pwlnet.hw.lerp.LerpUnit`, so all of them (in every program) must have the
#: same ``out_bits`` and ``index_bits``.
ENGINE_ACTIVATIONS = ("none", "relu", "lerp")

#: Weight storage choices: ``"auto"`` picks ``"rom"`` (EBR) when it fits, else ``"ram"`` (SPRAM).
WEIGHT_MEMORIES = ("auto", "rom", "ram")

#: EBR bits the weights may take before ``"auto"`` moves them to SPRAM (of 30 x 4 Kbit
#: on the UP5K; the rest is left for buffers, parameters and the rest of the design).
EBR_WEIGHT_BUDGET = 22 * 4096

#: ``SB_MAC16`` blocks on the iCE40UP5K.  The ``"ice40"`` target gives each lane its own
#: DSP up to this many lanes and pairs them (two 8x8 products per DSP) beyond.
ICE40_DSPS = 8


def _width(lo, hi):
    return fx.signed_width(min(int(lo), 0), max(int(hi), 0))


def _passes(n_out, lanes):
    return -(-int(n_out) // int(lanes))


def ideal_cycles(layers, lanes):
    """Sum over ``layers`` of ``ceil(n_out / lanes) * n_in``: the lanes' busy cycles."""
    return sum(_passes(l.n_out, lanes) * l.n_in for l in layers)


def pack_weight_words(weight, lanes, weight_bits):
    """The weight words of one layer: ``ceil(n_out / lanes) * n_in`` ints, pass by pass.

    Word ``g * n_in + i`` holds ``weight[g * lanes + p, i]`` (two's complement, masked to
    ``weight_bits``) in bits ``p * weight_bits .. p * weight_bits + weight_bits - 1``; lanes
    past ``n_out`` in the last pass are 0.
    """
    weight = np.asarray(weight)
    n_out, n_in = weight.shape
    mask = (1 << weight_bits) - 1
    words = []
    for g in range(_passes(n_out, lanes)):
        for i in range(n_in):
            word = 0
            for p in range(lanes):
                o = g * lanes + p
                if o < n_out:
                    word |= (int(weight[o, i]) & mask) << (p * weight_bits)
            words.append(word)
    return words


def requant_offset(bias, mult, shift):
    """``bias * mult + 2**(shift - 1)`` (``bias * mult`` when ``shift == 0``), a Python int.

    With it the requantizer computes ``(acc * mult + off) >> shift``, which is
    :func:`pwlnet.fixedpoint.requantize`'s ``round_shift((acc + bias) * mult, shift)``
    with one addition.
    """
    b, mu, s = int(bias), int(mult), int(shift)
    return b * mu + ((1 << (s - 1)) if s else 0)


def check_activations(layers, where):
    """Refuse a layer whose activation the engine does not implement (``ValueError``).

    ``where`` prefixes the message (``""`` for the network, ``"program 2: "`` for others).
    """
    # Refuse rather than compute something else: a layer whose activation the datapath
    # does not implement would otherwise come out silently wrong.
    for i, l in enumerate(layers):
        if l.activation not in ENGINE_ACTIVATIONS:
            name = f" ({l.name!r})" if l.name else ""
            raise ValueError(f"{where}layer {i}{name}: activation {l.activation!r} is not supported "
                             f"by MLPEngine (supported: {', '.join(ENGINE_ACTIVATIONS)})")


def _check_program(model, k, layers):
    """An extra program: layers from the model's input codes to its output codes."""
    if isinstance(layers, CompiledModel):
        layers = layers.layers
    layers = list(layers)
    where = f"program {k}"
    if not layers or not all(isinstance(l, Layer) for l in layers):
        raise TypeError(f"{where} must be a non-empty list of pwlnet.artifact.Layer, not {layers!r}")
    probe = CompiledModel(input_shape=model.input_shape, input_bits=model.input_bits,
                          input_scale=model.input_scale, input_zero_point=model.input_zero_point,
                          layers=layers)
    try:
        probe.validate(where=where)
    except ValueError as e:
        raise ValueError(str(e)) from None
    check_activations(layers, f"{where}: ")
    last, want = layers[-1], model.layers[-1]
    if (last.n_out, last.out_bits) != (want.n_out, want.out_bits):
        raise ValueError(f"{where} gives {last.n_out} outputs of {last.out_bits} bits; the output "
                         f"stream carries {want.n_out} of {want.out_bits} bits")
    return layers


def _empty_slot(model, fmt):
    """The initial contents of an unwritten cache slot: ``W = 0, b = 0`` (never run: invalid)."""
    last = model.layers[-1]
    n_out, d = model.output_dim, model.input_dim
    return Layer(weight=np.zeros((n_out, d), dtype=np.int64), bias=np.zeros(n_out, dtype=np.int64),
                 multiplier=np.ones(n_out, dtype=np.int64), shift=np.full(n_out, fmt.min_shift, dtype=np.int64),
                 weight_bits=fmt.weight_bits, in_bits=model.input_bits, out_bits=last.out_bits,
                 acc_bits=2, activation="none", out_scale=last.out_scale, requant=last.requant,
                 name="cache_slot")


def _check_lerp_split(programs):
    """Refuse LERP layers of different ``(out_bits, index_bits)``: there is one LERP unit.

    ``programs`` is the list of layer lists (program 0 = the network).  Supporting several
    splits would take one unit (and table memory) per split and a write-back arbiter;
    the models pwlnet produces use one split throughout, so a clear refusal is better.
    """
    first = None
    for k, layers in enumerate(programs):
        for i, l in enumerate(layers):
            if l.activation != "lerp":
                continue
            where = (f"program {k}: " if k else "") + f"layer {i}" + (f" ({l.name!r})" if l.name else "")
            split = (l.out_bits, l.index_bits)
            if first is None:
                first = (where, split)
            elif split != first[1]:
                raise ValueError(
                    f"{where}: LERP layer with out_bits {split[0]} and index_bits {split[1]}, but "
                    f"{first[0]} has out_bits {first[1][0]} and index_bits {first[1][1]}; MLPEngine "
                    f"has one LERP unit, so every LERP layer must use the same out_bits and index_bits")


def _check_model(model):
    if not isinstance(model, CompiledModel):
        raise TypeError(f"model must be a pwlnet.artifact.CompiledModel, not {model!r}")
    model.validate()
    check_activations(model.layers, "")


def _check_lanes(lanes):
    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)):
        raise TypeError(f"lanes must be a positive integer, not {lanes!r}")
    if lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")


def _slot_programs(model, lanes, n_programs, cache_slots, slot_format, slot_layers):
    """Check the cache-slot arguments; return ``(slots, first slot program, slot programs)``."""
    cache_slots = 0 if cache_slots is None else cache_slots
    if isinstance(cache_slots, bool) or not isinstance(cache_slots, (int, np.integer)) or cache_slots < 0:
        raise ValueError(f"cache_slots must be a non-negative integer, not {cache_slots!r}")
    n = int(cache_slots)
    if not n:
        return 0, None, []
    if slot_format is None:
        raise ValueError("cache_slots needs slot_format (a pwlnet.hw.slot_format.SlotFormat)")
    if slot_format.lanes != lanes or slot_format.dim != model.input_dim or slot_format.n_out != model.output_dim:
        raise ValueError(f"slot_format {slot_format!r} does not describe this model at {lanes} lanes")
    slot_layers = list(slot_layers) if slot_layers is not None else [None] * n
    if len(slot_layers) != n:
        raise ValueError(f"slot_layers has {len(slot_layers)} items for {n} slots")
    first = 1 + n_programs
    progs = [_check_program(model, first + k, [_empty_slot(model, slot_format) if l is None else l])
             for k, l in enumerate(slot_layers)]
    return n, first, progs


def schedule(entries, lanes, write_delay, d, producers, hold_slots=1):
    """Set ``L`` (cycles per pass) and ``gap`` (cycles without reads after the entry) of a
    program's descriptor entries, in place, entry by entry, so that each ends as early as
    the data path allows.  Returns the entries' start cycles and ``E`` of the last pass
    (below).

    ``entries`` run in order, each ``G`` passes of ``L`` cycles whose first ``n_in`` issue
    reads; ``producers[e]`` is the index of the entry whose outputs entry ``e`` reads (or
    ``None``: it reads the input buffer).  With entry ``e`` starting (first read) at
    ``s``, pass ``g``'s last read is at ``R = s + g*L + n_in - 1``.  Counting every time
    from the last reads (the lanes' pipeline adds the same delay to all):

    * the sequence: after the previous entry's last pass, at once, or a cycle later when
      the previous entry lasts a single cycle (the sequencer reads each descriptor
      from its ROM while the entry before runs);
    * the hold registers: a pass's sums are copied into a hold register at ``R`` and come
      out one per cycle, lane ``j`` at ``O + j`` with ``O = max(R, E') + 1``, where ``E'``
      is when the pass before put out its last sum (``E = O + nv - 1``).  With one hold
      register ``R >= E'`` (the pass before is out); with two, ``R >= E''`` (the one
      before that is);
    * the data: output ``o = g*P + j`` of the producer is in the buffer for a read issued
      at ``O + j + write_delay`` or later, and entry ``e`` reads input ``o`` at
      ``s + o``;
    * the program's end: the last entry lasts until the first pass of any program that
      may follow (its first entry reads the ``d`` input codes after one LOAD cycle) ends
      no earlier than the last sum is out.  So every program starts with empty hold
      registers.

    The gap of the last entry is 0: the next program may start in its last cycle.
    """
    P = lanes
    start, outs = [], []          # per entry: start cycle, per pass O
    e_prev = e_prev2 = None       # E of the last two passes
    for e, x in enumerate(entries):
        G, n_in = x["G"], x["n_in"]
        nvs = [P] * (G - 1) + [x["nv_last"]]
        lo = 0
        if e:
            y = entries[e - 1]
            lo = start[e - 1] + y["G"] * y["L"] + (y["G"] * y["L"] < 2)    # sequence
            p = producers[e]
            if p is not None:
                lo = max(lo, max(o + write_delay - g * P for g, o in enumerate(outs[p])))   # data
        last = e == len(entries) - 1
        best = None
        for L in range(n_in, max(n_in, P) + P + 2):
            for t in range(lo, lo + 4 * P * G + 4 * P + 8):
                res = _passes_out(t, L, n_in, nvs, hold_slots, e_prev, e_prev2)
                if res is None:
                    continue
                Os, e1, e2 = res
                if last and t + G * L + d < e1:
                    continue                    # not drained before the next program's first pass
                if best is None or t + G * L < best[0] + G * best[1]:
                    best = (t, L, Os, e1, e2)
                break
            if best is not None and L > best[1] + P:
                break
        if best is None:
            raise AssertionError(f"no schedule for entry {e} ({x})")
        t, L, Os, e_prev, e_prev2 = best
        x["L"] = L
        if e:
            y = entries[e - 1]
            y["gap"] = t - start[e - 1] - y["G"] * y["L"]
        start.append(t)
        outs.append(Os)
    entries[-1]["gap"] = 0
    return start, e_prev


def _passes_out(t, L, n_in, nvs, hold_slots, e_prev, e_prev2):
    """``(O per pass, E of the last pass, E of the one before)`` of an entry's passes from
    start ``t``, or ``None`` when a pass would find no free hold register."""
    Os = []
    for g, nv in enumerate(nvs):
        R = t + g * L + n_in - 1
        free = e_prev if hold_slots == 1 else e_prev2
        if free is not None and R < free:
            return None
        O = R + 1 if e_prev is None else max(R, e_prev) + 1
        Os.append(O)
        e_prev, e_prev2 = O + nv - 1, e_prev
    return Os, e_prev, e_prev2


#: The fraction of the cycles per inference that the second hold register or the pair
#: program must save to be built.
PAYS = 0.02


def _run_cycles(entries):
    """Cycles a program occupies the lanes: one LOAD cycle (its first descriptor), then
    each entry's ``G`` passes of ``L`` cycles and ``gap`` cycles without reads."""
    return 1 + sum(x["G"] * x["L"] + x["gap"] for x in entries)


class EnginePlan:
    """What the engine computes from a compiled model and a lane count (no hardware).

    Parameters
    ----------
    model : pwlnet.artifact.CompiledModel
        The network (program 0).
    lanes : int
        Number of lanes ``P``.
    programs : sequence of (list of Layer or CompiledModel)
        Extra programs (1, 2, ...), as for :class:`~pwlnet.hw.engine.MLPEngine`.
    cache_slots : int
        Writable one-layer programs after the extra programs (the hypersphere cache's).
    slot_format : pwlnet.hw.slot_format.SlotFormat
        The slots' widths (required with ``cache_slots``): the datapath is sized for any
        entry the host may write later.
    slot_layers : sequence of (Layer or None)
        Initial slot contents (``None``: an empty slot, ``W = 0, b = 0``).
    interleave : bool
        Allow the *pair program* (see :attr:`pair`).

    Attributes
    ----------
    lanes : int
        ``P``.
    programs : list of (int, int)
        Per program, its first descriptor-table index and its number of layers.
    table : list of Layer
        The layers of all programs, in table order.
    layers : list of dict
        One descriptor per table entry: ``w_base``, ``n_in``, ``G`` (passes), ``L``
        (cycles per pass), ``nv_last`` (lanes used in the last pass), ``chan_base``,
        ``src_in``/``src_base``, ``dst_out``/``dst_base``, ``gap``, ``last``, ``lo``/``hi``
        (saturation bounds), ``n_out``, ``ob`` (output bits), ``lerp``, ``lerp_base``.
    words : list of int
        The weight memory image (:func:`pack_weight_words` of every layer in table order).
    params : list of (int, int, int)
        Per output channel of every layer: ``(off, mult, shift)`` (:func:`requant_offset`).
    write_delay : int
        Cycles from a pass's last read to the write of its first result; a read issued
        one cycle later gets it (see :func:`schedule`).
    cache_slots, first_slot_program : int
        Number of cache slots and the program number of slot 0 (``None`` without slots).
    pair : (int, int) or None
        The pair program's first descriptor index and length: two inferences, ``A`` on the
        current bank and ``B`` on the other, their layers interleaved (``A1 B1 A2 B2
        ...``) so that each fills the other's waits for its data.  Only a network alone
        (no extra programs) of two or more layers gets one, only where back-to-back
        inputs do run as pairs (``_pair_enters``, ``_pair_keeps``) and only where it
        takes at least :data:`PAYS` fewer cycles per inference.  Its entries (after
        program 0's in :attr:`layers`) carry ``ctx`` (0: A, 1: B) and ``endc`` (the last
        layer of its inference).
    hold_slots : int
        Hold registers of the lanes (1, or 2 where they lower the cycles per inference:
        a pass may then end while the one before is still being shifted out).
    act_regions : int
        Activation buffer regions of ``act_depth`` codes: 2 (ping, pong), 4 with a pair
        program (ping and pong per inference).
    out_banks : int
        Output buffer banks: 2, or 4 with a pair program (a pair claims two, while the
        two before it may still be being sent).

    Raises
    ------
    TypeError, ValueError
        For a model, program, lane count or slot argument the engine cannot run (the
        same messages as :class:`~pwlnet.hw.engine.MLPEngine`).
    """

    def __init__(self, model, lanes, *, programs=(), cache_slots=0, slot_format=None, slot_layers=None,
                 interleave=True):
        _check_model(model)
        programs = [_check_program(model, k + 1, p) for k, p in enumerate(programs)]
        n_slots, first_slot, slot_progs = _slot_programs(model, lanes, len(programs), cache_slots,
                                                         slot_format, slot_layers)
        programs += slot_progs
        _check_lerp_split([list(model.layers)] + programs)
        _check_lanes(lanes)
        self.model = model
        self.cache_slots = n_slots
        self.first_slot_program = first_slot
        self.slot_format = slot_format if n_slots else None
        self._derive(model, int(lanes), [list(model.layers)] + programs, self.slot_format)
        self._derive_schedule(bool(interleave))

    # -- derivation ----------------------------------------------------------------------
    def _derive(self, model, lanes, programs, slots):
        P = self.lanes = lanes
        self.programs = []          # (first table index, number of layers)
        table = []
        for prog in programs:
            self.programs.append((len(table), len(prog)))
            table.extend(prog)
        self.table = table
        self.d = model.input_dim
        self.in_bits = model.input_bits
        last = model.layers[-1]
        self.n_out = last.n_out
        self.out_bits = last.out_bits
        self.weight_bits = max(l.weight_bits for l in table)
        hidden = [l for prog in programs for l in prog[:-1]]
        self.act_bits = max((l.out_bits for l in hidden), default=0)
        self.act_depth = max((l.n_out for l in hidden), default=0)
        self.x_bits = max(self.in_bits, self.act_bits)
        self._derive_widths(table, slots)
        self._derive_lerp(table)
        self._derive_table(table, P)

    def _derive_widths(self, table, slots):
        # Lane accumulators hold partial sums W x (bias is added later), so size them for
        # the reach of W x alone as well as for the layer's declared acc_bits.
        acc = 2
        for l in table:
            reach = int(np.abs(l.weight).sum(axis=1).max(initial=0)) << (l.in_bits - 1)
            acc = max(acc, l.acc_bits, _width(-reach, reach))
        # Writable cache slots (`slots`, a pwlnet.hw.slot_format.SlotFormat): the widths must hold
        # whatever entry the host may write later, not only the slots' initial contents.
        if slots is not None:
            acc = max(acc, slots.wx_bits)
        self.acc_bits = acc
        self.has_multiply = any(np.any(l.multiplier != 1) for l in table) or bool(slots and slots.mult_bits)
        mb = max(int(l.multiplier.max(initial=1)).bit_length() for l in table)
        if slots is not None:
            mb = max(mb, slots.mult_bits)
        self.mult_bits = mb if self.has_multiply else 0
        self.max_shift = max(int(l.shift.max(initial=0)) for l in table)
        self.shift_bits = max(1, self.max_shift.bit_length(), slots.shift_bits if slots is not None else 1)
        self.params = [(requant_offset(l.bias[o], l.multiplier[o], l.shift[o]), int(l.multiplier[o]),
                        int(l.shift[o])) for l in table for o in range(l.n_out)]
        offs = [p[0] for p in self.params] or [0]
        if slots is not None:
            offs += list(fx.signed_range(slots.off_bits))
        self.off_bits = _width(min(offs), max(offs))
        mmax = (1 << self.mult_bits) - 1 if self.has_multiply else 1
        amax = 1 << (acc - 1)
        self.pre_bits = _width(-amax * mmax + min(min(offs), 0), amax * mmax + max(max(offs), 0)) + 1
        min_shift = min((p[2] for p in self.params), default=0)
        if slots is not None:
            min_shift = min(min_shift, slots.min_shift)
        self.min_shift = min_shift
        max_ob = max(l.out_bits for l in table)
        self.post_bits = max(self.pre_bits - min_shift, max_ob + 1)
        # Requant stages after the hold register: param fetch, [partial products, adder
        # tree levels | offset add], shift (1 or 2), saturate (2).
        if self.has_multiply:
            levels = self.mult_bits.bit_length()     # adder-tree levels over mult_bits + 1 terms
            self.req_stages = 2 + levels + 1 + (self.shift_bits > 3) + 2
        else:
            self.req_stages = 2 + 1 + (self.shift_bits > 3) + 2
        #: Cycles from the last read of a pass to the first cycle its first result can be
        #: read back: memory 1, operand register 1, multiplier, accumulate 1, hold copy 1,
        #: serializer 1, requant stages.
        self.write_delay = 2 + MUL_LATENCY + 2 + self.req_stages

    def _derive_lerp(self, table):
        # LERP layers share one LerpUnit after the saturation stage.  Every layer's result
        # then goes through it (non-LERP ones bypass the table on a meta bit), so there is
        # one write point and one write_delay for all layers; models without a LERP layer
        # build no unit and keep their schedule and hardware exactly.
        lerp = [l for l in table if l.activation == "lerp"]
        self.has_lerp = bool(lerp)
        if lerp:
            self.lerp_bits, self.lerp_k = lerp[0].out_bits, lerp[0].index_bits
            self.lerp_tables = np.concatenate([l.table for l in lerp])
            self.lerp_latency = lerp_latency(self.lerp_bits, self.lerp_k)
            self.write_delay += self.lerp_latency
        else:
            self.lerp_bits = self.lerp_k = self.lerp_tables = None
            self.lerp_latency = 0

    def _derive_table(self, table, P):
        self.layers = []
        words = []
        chan = 0
        lerp_chan = 0
        for t, l in enumerate(table):
            first, count = next((f, n) for f, n in self.programs if f <= t < f + n)
            pos = t - first
            is_last = pos == count - 1
            G = _passes(l.n_out, P)
            lerp = l.activation == "lerp"
            self.layers.append(dict(
                w_base=len(words), n_in=l.n_in, G=G, nv_last=l.n_out - (G - 1) * P,
                chan_base=chan, src_in=int(pos == 0), src_base=(pos - 1) % 2 * self.act_depth,
                dst_out=int(is_last), dst_base=pos % 2 * self.act_depth if not is_last else 0,
                last=int(is_last), ctx=0, endc=int(is_last),
                lo=0 if l.activation == "relu" else fx.signed_range(l.out_bits)[0],
                hi=fx.signed_range(l.out_bits)[1], n_out=l.n_out, ob=l.out_bits,
                lerp=int(lerp), lerp_base=lerp_chan if lerp else 0))
            words.extend(pack_weight_words(l.weight, P, self.weight_bits))
            chan += l.n_out
            if lerp:
                lerp_chan += l.n_out
        self.words = words

    def _derive_schedule(self, interleave):
        """Pass lengths and gaps of every program (:func:`schedule`), the pair program
        where it pays, and the hold registers: two where they lower the cycles per
        inference, else one."""
        f, n = self.programs[0]
        net = self.layers[f:f + n]
        # The pair program: only for a network alone of two or more layers (with one
        # there is no wait to fill, and B's layer would clear its input bank in the
        # cycle the next inference may start; see Sequencer).
        pair = []
        if interleave and len(self.programs) == 1 and n >= 2:
            for x in net:
                for ctx in (0, 1):
                    base = 2 * ctx * self.act_depth
                    pair.append(dict(x, ctx=ctx, endc=x["last"], last=int(ctx == 1 and x["last"]),
                                     src_base=base + x["src_base"],
                                     dst_base=base + x["dst_base"] if not x["last"] else 0))
        # Candidates from the plainest up; a richer one (more hold registers, the pair
        # program's output banks and activation regions) is kept only for at least
        # PAYS fewer cycles per inference.
        best = None
        for slots in (1, 2):
            runs = [[dict(x) for x in self.layers[f:f + k]] for f, k in self.programs]
            for run in runs:
                schedule(run, self.lanes, self.write_delay, self.d, [None] + list(range(len(run) - 1)), slots)
            single = _run_cycles(runs[0])
            cands = [(single, runs, [])]
            if pair and self._pair_enters(runs[0]):
                prun = [dict(x) for x in pair]
                start, drained = schedule(prun, self.lanes, self.write_delay, self.d,
                                          [None, None] + list(range(len(prun) - 2)), slots)
                if self._pair_keeps(prun, start, drained):
                    cands.append((_run_cycles(prun) / 2, runs, prun))
            for cpi, r, p in cands:
                if best is None or cpi <= (1 - PAYS) * best[0]:
                    best = (cpi, slots, r, p)
        _, self.hold_slots, runs, prun = best
        self.layers = [x for run in runs for x in run]
        self.pair = None
        self.act_regions = self.out_banks = 2
        if prun:
            self.pair = (len(self.layers), len(prun))
            self.layers.extend(prun)
            self.act_regions = self.out_banks = 4

    # Whether back-to-back inputs run as pairs: the conditions below are sufficient with
    # a margin of a few cycles, and the engine's tests check that the steady state is
    # exactly the pair program's, on the regression models and random shapes.
    def _pair_enters(self, run):
        """A pair follows a lone inference: its first input bank is cleared at the end of
        its first layer and refilled (``d`` beats) before it ends."""
        return _run_cycles(run) - run[0]["G"] * run[0]["L"] >= self.d + 6

    def _pair_keeps(self, prun, start, drained):
        """A pair follows a pair: B's input bank is refilled after its first layer, and
        the previous pair's two output banks are sent (``2 n_out`` beats, after the last
        result's write-back) before the pair ends."""
        cyc = _run_cycles(prun)
        refill = cyc - start[1] - prun[1]["G"] * prun[1]["L"] >= self.d + 6
        sent = drained + self.write_delay + 2 * self.n_out + 8 <= 2 * cyc - 3
        return refill and sent

    # -- facts ---------------------------------------------------------------------------
    @property
    def min_last_read_distance(self):
        """Fewest cycles between the last reads of two consecutive passes.

        Within a layer it is ``L``; from a layer's last pass to the next layer's first,
        the pass's bubble cycles, the ``gap`` cycles without reads and the next layer's
        reads; after a program's last layer, any program may start (one LOAD cycle, then
        ``d`` reads at least).
        """
        dist = []
        for f, n in self.programs + ([self.pair] if self.pair else []):
            lay = self.layers[f:f + n]
            for k, x in enumerate(lay):
                if x["G"] > 1:
                    dist.append(x["L"])
                if k + 1 < n:
                    dist.append(x["L"] - x["n_in"] + x["gap"] + lay[k + 1]["n_in"])
                else:
                    dist.append(x["L"] - x["n_in"] + 1 + self.d)
        return min(dist)

    @property
    def ideal_cycles(self):
        """:func:`ideal_cycles` of the network (program 0)."""
        f, n = self.programs[0]
        return ideal_cycles(self.table[f:f + n], self.lanes)

    def program_cycles(self, k=0):
        """Exact cycles program ``k`` occupies the lanes (0 = the network, alone)."""
        f, n = self.programs[k]
        return _run_cycles(self.layers[f:f + n])

    @property
    def pair_cycles(self):
        """Exact cycles the pair program occupies the lanes (``None`` without one)."""
        if self.pair is None:
            return None
        f, n = self.pair
        return _run_cycles(self.layers[f:f + n])

    @property
    def cycles_per_inference(self):
        """Exact steady-state cycles per inference of the network with back-to-back inputs:
        half the pair program's with one (a float then), else program 0's.

        That is the lanes' time.  A program shorter than its own write-back and output
        beats (a one-layer 13-8 network at 16 lanes: 14 cycles, 8 results through the
        requantizer, 8 output beats) is bound by the two output banks instead; the pair
        program is only built where it is not (see ``_pair_keeps``)."""
        return self.pair_cycles / 2 if self.pair else self.program_cycles(0)

    @property
    def weight_word_bits(self):
        """Width of one weight word (``P * weight_bits``)."""
        return self.lanes * self.weight_bits

    @property
    def weight_words(self):
        """The weight memory image (a copy of :attr:`words`)."""
        return list(self.words)

    def slot_word_base(self, s):
        """Weight-memory address of cache slot ``s``'s first weight word."""
        return self.layers[self.programs[self.first_slot_program + s][0]]["w_base"]

    def slot_chan_base(self, s):
        """Parameter-memory index of cache slot ``s``'s first output channel."""
        return self.layers[self.programs[self.first_slot_program + s][0]]["chan_base"]

    def mac_pairs(self, target="generic"):
        """Whether the lanes are built two per ``SB_MAC16`` (:class:`~pwlnet.hw.mac.LanePairMAC`).

        On ``"ice40"`` when there are more lanes than :data:`ICE40_DSPS` and the weights and
        activations fit the dual 8x8 mode; never on ``"generic"``.
        """
        check_target(target)
        return (target == "ice40" and self.lanes > ICE40_DSPS
                and lanes_per_dsp(self.weight_bits, self.x_bits) == 2)

    def dsps(self, target="generic"):
        """``SB_MAC16`` blocks the lanes take on ``target`` (0 on ``"generic"``; the
        requantizer's multiplier, if any, is built from fabric)."""
        if check_target(target) != "ice40":
            return 0
        return -(-self.lanes // 2) if self.mac_pairs(target) else self.lanes

    def weight_memory_for(self, target="generic", weight_memory="auto"):
        """The weight storage an engine of this plan uses: ``"rom"`` or ``"ram"``.

        ``"auto"`` is ``"ram"`` (SPRAM) on ``"ice40"`` when the words exceed
        :data:`EBR_WEIGHT_BUDGET`, else ``"rom"``.  Raises ``ValueError`` for an unknown
        target or choice, and for ``"ram"`` on ``"ice40"`` beyond the SPRAM depth.
        """
        check_target(target)
        if weight_memory not in WEIGHT_MEMORIES:
            raise ValueError(f"weight_memory must be one of {WEIGHT_MEMORIES}, not {weight_memory!r}")
        bits = self.weight_word_bits * len(self.words)
        why = "asked for"
        if weight_memory == "auto":
            weight_memory = "ram" if target == "ice40" and bits > EBR_WEIGHT_BUDGET else "rom"
            why = f"{bits} bits, over the EBR budget of {EBR_WEIGHT_BUDGET}"
        if weight_memory == "ram" and target == "ice40":
            if len(self.words) > SPRAM_DEPTH:
                raise ValueError(f"the model needs {len(self.words)} weight words at {self.lanes} lanes; "
                                 f"SPRAM holds {SPRAM_DEPTH}")
            if self.weight_word_bits > SPRAM_BLOCKS * SPRAM_WIDTH:
                raise ValueError(
                    f"the weights need SPRAM ({why}) but a word of {self.lanes} lanes x {self.weight_bits} "
                    f"bits is {self.weight_word_bits} bits and SPRAM gives "
                    f"{SPRAM_BLOCKS * SPRAM_WIDTH}: use at most "
                    f"{SPRAM_BLOCKS * SPRAM_WIDTH // self.weight_bits} lanes")
        return weight_memory
