"""What the binary engine is built from, computed from a compiled binary model (no hardware).

:class:`BinaryPlan` packs the memories' words and gives the cycle counts; the engine
(:class:`~pwlnet.hw.binary.engine.BinaryEngine`) only lays them out.

Every neuron's accumulator starts at a *start value* (block RAM) instead of 0 and its bit
is the sign of the total, so no comparator is built: a step ``(v >= t) XOR neg`` is
``v - t >= 0`` (start ``-t``) or, with the weights flipped (``v`` becomes ``-v``, or
``n_in - v`` for a popcount), ``-v + t - 1 >= 0`` (start ``t - 1``, or ``t - 1 - n_in``).
The last layer starts neuron ``o`` at ``o * (n_in + 1)``, so its total is the address of
``table[o, v]`` in the row-major score table.  Sums wrap at :attr:`BinaryPlan.acc_bits`
bits, which hold every total (two's complement addition is exact modulo ``2**bits``).

* First layer (``n1`` neurons on ``d`` input codes), ``P`` adder lanes: group ``g`` of
  ``P`` neurons takes ``d`` cycles, one input code per cycle added to or subtracted from
  every lane's sum; weight word ``g * d + i`` holds bit ``p`` = (lane ``p`` adds code
  ``i``).  Lanes past ``n1`` start so low that their bit is 0.
* Binary layers, ``B`` XNORs per cycle (``B`` a multiple of ``P``): neuron ``o`` takes
  ``C = ceil(n_in / B)`` cycles, one ``B``-bit activation word each; weight word
  ``base + o * C + c`` holds the weight bits in the word's bit order (:func:`positions`),
  padded with 1s, which meet the activations' padding 0s and count nothing.
* Activations: ``B``-bit words in block RAM, shifted in one bit per neuron (``P`` per
  group in the first layer) and written once per word.
"""

from __future__ import annotations

from amaranth.utils import ceil_log2

from ... import fixedpoint as fx

__all__ = ["BinaryPlan", "FIRST_DRAIN", "default_chunk", "positions"]

#: Cycles between the first layer's last issue and the next layer's first (its last word
#: is written at the end of the third cycle after the issue; the next layer reads it one
#: cycle later).
FIRST_DRAIN = 3


def default_chunk(lanes):
    """XNOR bits per cycle unless given: ``4 * lanes`` within [8, 64].  The XNOR width
    follows the adder lanes, so a build with few lanes (a small device) also gets a small
    popcount tree and narrow memories, and the iCEBreaker's 16 lanes get 64."""
    return min(64, max(8, 4 * lanes))


def positions(n, chunk, lanes=1):
    """Word and bit of each of ``n`` activations (``[(word, bit), ...]``) as the engine
    shifts them in: ``lanes`` bits at a time (activation ``g * lanes + p`` in the ``g``-th
    shift), ``chunk // lanes`` shifts per word, the last word maybe short.

    Each shift moves every bit of the word down one place, and lane ``p`` enters at the
    top of slice ``lanes - 1 - p`` (slices of ``chunk // lanes`` bits; one slice, the whole
    word, for one lane).  A word is cleared when written, so a short word's unused low
    bits are 0."""
    k = chunk // lanes
    groups = -(-n // lanes)
    out = []
    for a in range(n):
        g, p = divmod(a, lanes)
        w, j = divmod(g, k)
        r = min(k, groups - w * k)                   # shifts into this word
        out.append((w, (lanes - 1 - p) * k + (k - r) + j))
    return out


def _bit(w):
    return 1 if w > 0 else 0


class BinaryPlan:
    """The binary engine's memories and schedule for ``model`` with ``lanes`` adder lanes
    and ``chunk`` XNOR bits per cycle (rounded up to a multiple of the lanes, capped at the
    widest binary layer's fan-in)."""

    #: Tells board reports which engine this plan belongs to.
    kind = "binary"

    def __init__(self, model, lanes=8, chunk=None):
        if getattr(model, "kind", "mlp") != "binary":
            raise TypeError(f"the binary engine takes a compiled binary model, not {type(model).__name__}")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"chunk must be a positive integer, not {chunk!r}")
        layers = model.layers
        first, rest = layers[0], layers[1:]
        widest = max(l.n_in for l in rest)                   # >= n1 >= P
        self.model = model
        self.lanes = P = min(lanes, first.n_out)
        B = min(default_chunk(P) if chunk is None else chunk, widest)
        self.chunk = B = -(-B // P) * P
        self.d = d = model.input_dim
        self.n1 = n1 = first.n_out
        self.groups = G = -(-n1 // P)
        finals = []                                          # (lo, hi) of every total

        # first layer: weight words, start values (lane p of group g: neuron gP + p)
        qlo, qhi = fx.signed_range(first.in_bits)
        flip0, start0 = [], []
        for o in range(G * P):
            if o < n1:
                t, neg = int(first.threshold[o]), int(first.direction[o]) < 0
                flip0.append(neg)
                start0.append(t - 1 if neg else -t)
                row = [(w > 0) != neg for w in first.weight[o]]
            else:                                            # below any sum: bit 0
                flip0.append(False)
                start0.append(d * qlo - 1)
                row = [False] * d
            pos = sum(row)
            finals.append((start0[-1] + pos * qlo - (d - pos) * qhi, start0[-1] + pos * qhi - (d - pos) * qlo))
        self.w0_words = [sum(int((_bit(first.weight[g * P + p, i]) if g * P + p < n1 else 0) != flip0[g * P + p]) << p
                             for p in range(P)) for g in range(G) for i in range(d)]

        # binary layers: one weight memory; start values after the first layer's groups
        self.blayers = []
        self.wb_words, startb = [], []
        fan_in_pos = positions(n1, B, P)                     # where layer 1 finds its inputs
        wbase = 0
        for k, l in enumerate(rest, start=1):
            C = -(-l.n_in // B)
            info = {"layer": k, "n_in": l.n_in, "n_out": l.n_out, "chunks": C, "wbase": wbase,
                    "last": l.is_last}
            for o in range(l.n_out):
                if l.is_last:
                    neg, start = False, o * (l.n_in + 1)
                else:
                    t, neg = int(l.threshold[o]), int(l.direction[o]) < 0
                    start = t - 1 - l.n_in if neg else -t
                startb.append(start)
                finals.append((start, start + l.n_in))
                words = [(1 << B) - 1] * C
                for i, (w, j) in enumerate(fan_in_pos):
                    if not ((l.weight[o, i] > 0) != neg):
                        words[w] &= ~(1 << j)
                self.wb_words += words
            wbase += l.n_out * C
            fan_in_pos = positions(l.n_out, B)
            self.blayers.append(info)
        last = layers[-1]
        self.n_out = last.n_out
        self.out_bits = last.out_bits
        self.table_words = [int(v) for v in last.table.ravel()]
        #: Width of the accumulators: every total (and the score-table address) fits.
        self.acc_bits = max(max(fx.signed_width(lo, hi) for lo, hi in finals),
                            ceil_log2(len(self.table_words)))
        A = self.acc_bits
        mask = (1 << A) - 1
        #: Lane 0's start values: the first layer's groups, then every binary neuron.
        self.start_words = [start0[g * P] & mask for g in range(G)] + [s & mask for s in startb]
        #: Lanes 1 to ``P - 1`` (``A`` bits each, lane 1 lowest), one word per group.
        self.start0_words = [sum((start0[g * P + p] & mask) << ((p - 1) * A) for p in range(1, P))
                             for g in range(G)] if P > 1 else []
        #: Activation words of the widest layer (each layer's words share a block).
        self.act_words = max(-(-n // B) for n in [n1] + [b["n_out"] for b in self.blayers[:-1]])
        #: Register levels of the popcount tree.
        self.tree_latency = ceil_log2(B)
        #: Cycle (after its issue) in which a binary operation's count reaches the
        #: accumulator: the memories' output, then the tree.
        self.binary_acc_stage = 1 + self.tree_latency

    @property
    def first_cycles(self) -> int:
        return self.groups * self.d

    def binary_cycles(self, info) -> int:
        return info["n_out"] * info["chunks"]

    def binary_drain(self, info) -> int:
        """Cycles between a binary layer's last issue and the next layer's first (or the
        first output beat): the accumulator stage, then the activation word written and
        read one cycle later (a hidden layer), or the score looked up, registered, written
        and read back (the last layer)."""
        return self.binary_acc_stage + (4 if info["last"] else 2)

    @property
    def ideal_cycles(self) -> int:
        """Issue cycles of one inference (first layer plus binary layers)."""
        return self.first_cycles + sum(self.binary_cycles(b) for b in self.blayers)

    @property
    def cycles_per_inference(self) -> int:
        """Cycles of one inference with the input waiting and the output taken at once: ``d``
        load beats, the layers with their drains, ``n_out`` output beats (one after another:
        the next input is taken once the last output beat has gone)."""
        return (self.d + self.first_cycles + FIRST_DRAIN
                + sum(self.binary_cycles(b) + self.binary_drain(b) for b in self.blayers) + self.n_out)
