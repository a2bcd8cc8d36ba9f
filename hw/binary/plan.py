"""What the binary engine is built from, computed from a compiled binary model (no hardware).

:class:`BinaryPlan` packs the memories' words and gives the cycle counts; the engine
(:class:`~pwlnet.hw.binary.engine.BinaryEngine`) only lays them out.

* First layer (``n1`` neurons on ``d`` input codes), ``P`` adder lanes: group ``g`` of
  ``P`` neurons takes ``d`` cycles, one input code per cycle added to or subtracted from
  every lane's sum; weight word ``g * d + i`` holds bit ``p`` = (``W[gP + p, i] = +1``).
  Threshold word ``g``: per lane ``threshold`` (signed) and the direction bit above it.
  Lanes past ``n1`` get a threshold nothing reaches, so their bits are 0.
* Binary layers, ``B`` XNORs per cycle: neuron ``o`` takes ``C = ceil(n_in / B)`` cycles,
  one ``B``-bit chunk each; weight word ``base + o * C + c`` holds the chunk's weight bits,
  padded with 1s, which meet the activations' padding 0s and count nothing.
* Last layer: the score table, row ``o`` at ``o * 2**k`` (``2**k >= n_in + 1``).
"""

from __future__ import annotations

from amaranth.utils import ceil_log2

from ... import fixedpoint as fx

__all__ = ["BinaryPlan", "FIRST_DRAIN", "DEFAULT_CHUNK"]

#: Bits XNORed per cycle unless given (capped by the widest binary layer's fan-in).
DEFAULT_CHUNK = 64
#: Cycles between the first layer's last issue and the next layer's first (its bits are
#: written at the end of the third cycle after the issue; the next layer reads them one
#: cycle after its first issue).
FIRST_DRAIN = 3


def _bit(w):
    return 1 if w > 0 else 0


class BinaryPlan:
    """The binary engine's memories and schedule for ``model`` with ``lanes`` adder lanes
    and ``chunk`` XNOR bits per cycle."""

    #: Tells board reports which engine this plan belongs to.
    kind = "binary"

    def __init__(self, model, lanes=8, chunk=None):
        if getattr(model, "kind", "mlp") != "binary":
            raise TypeError(f"the binary engine takes a compiled binary model, not {type(model).__name__}")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        layers = model.layers
        first, rest = layers[0], layers[1:]
        widest = max(l.n_in for l in rest)
        if chunk is None:
            chunk = min(DEFAULT_CHUNK, widest)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, not {chunk!r}")
        self.model = model
        self.lanes = P = min(lanes, first.n_out)
        self.chunk = B = min(chunk, widest)
        self.d = d = model.input_dim
        self.n1 = first.n_out
        self.groups = G = -(-first.n_out // P)
        self.acc0_bits = first.acc_bits
        lo, hi = first.v_range
        self.thr0_bits = fx.signed_width(lo, hi + 1)
        f = self.thr0_bits + 1
        self.w0_words = [sum(_bit(first.weight[g * P + p, i]) << p for p in range(P) if g * P + p < first.n_out)
                         for g in range(G) for i in range(d)]
        mask = (1 << self.thr0_bits) - 1
        self.thr0_words = []
        for g in range(G):
            word = 0
            for p in range(P):
                o = g * P + p
                t, neg = (int(first.threshold[o]), int(first.direction[o]) < 0) if o < first.n_out else (hi + 1, False)
                word |= ((t & mask) | (int(neg) << self.thr0_bits)) << (p * f)
            self.thr0_words.append(word)

        # binary layers: one weight memory, one threshold memory (hidden layers), one table
        self.blayers = []
        self.wb_words, self.thr_words = [], []
        self.thr_bits = max(1, (widest + 1).bit_length())
        for k, l in enumerate(rest, start=1):
            C = -(-l.n_in // B)
            info = {"layer": k, "n_in": l.n_in, "n_out": l.n_out, "chunks": C, "wbase": len(self.wb_words),
                    "tbase": len(self.thr_words), "last": l.is_last}
            for o in range(l.n_out):
                for c in range(C):
                    self.wb_words.append(sum((_bit(l.weight[o, c * B + j]) if c * B + j < l.n_in else 1) << j
                                             for j in range(B)))
                if not l.is_last:
                    neg = int(l.direction[o]) < 0
                    self.thr_words.append(int(l.threshold[o]) | (int(neg) << self.thr_bits))
            self.blayers.append(info)
        last = layers[-1]
        self.n_out = last.n_out
        self.out_bits = last.out_bits
        self.row_bits = ceil_log2(last.n_in + 1)
        self.table_words = [int(last.table[o, p]) if p <= last.n_in else 0
                            for o in range(last.n_out) for p in range(1 << self.row_bits)]
        #: Register levels of the popcount tree.
        self.tree_latency = ceil_log2(B)
        #: Cycles from a binary layer's last issue until its results can be read.
        self.binary_drain = self.tree_latency + 6

    @property
    def first_cycles(self) -> int:
        return self.groups * self.d

    def binary_cycles(self, info) -> int:
        return info["n_out"] * info["chunks"]

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
                + sum(self.binary_cycles(b) + self.binary_drain for b in self.blayers) + self.n_out)
