"""Payload layouts the engine's blocks pass to each other, derived from an :class:`EnginePlan`.

A *read* is one cycle of the sequencer's schedule (one input code broadcast to every lane);
the *pass facts* say where a pass's ``P`` results go (parameter channel, write address,
layer, output bank); the *meta* is what rides along with one result through the
requantizer to the write-back.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

__all__ = ["lerp_channel_shape", "pass_layout", "read_layout", "meta_layout", "capture_pass_facts"]


def lerp_channel_shape(plan):
    """Shape of a LERP table channel number (zero bits in a model without LERP layers)."""
    return unsigned(ceil_log2(len(plan.lerp_tables))) if plan.has_lerp else unsigned(0)


def pass_layout(plan):
    """Facts about one pass, fixed from its first read to its hold-register copy.

    ``chan``: parameter index of the pass's first output; ``wbase``: buffer address its
    first result is written to; ``obase``: output index of its first result; ``nv_m1``:
    lanes used minus one; ``lidx``: descriptor index of the layer; ``to_out``: written to
    the output buffer; ``lastpass``: the last pass of a program; ``obank``: output bank;
    with LERP layers, ``lerp`` and ``lchan`` (the LERP table channel of the first output).
    """
    P = plan.lanes
    n_layers = len(plan.layers)
    max_G = max(x["G"] for x in plan.layers)
    return data.StructLayout({
        "chan": range(len(plan.params) + P + 1),
        "wbase": range(max(plan.act_regions * plan.act_depth, plan.out_banks * plan.n_out) + max_G * P + 1),
        "obase": range(max_G * P + 1),
        "nv_m1": range(P),
        "lidx": range(max(2, n_layers)),
        "to_out": 1,
        "lastpass": 1,
        "obank": range(plan.out_banks),
        # LERP table channel of the pass's first output (0 on other layers, so the
        # unit's table addresses stay inside its memories even when bypassed).
        **({"lerp": 1, "lchan": lerp_channel_shape(plan)} if plan.has_lerp else {}),
    })


def capture_pass_facts(plan):
    """Whether the sequencer holds a pass's facts in one register until its hold copy.

    The facts only change from one pass to the next, so when the last reads of two
    passes are always at least as far apart as a last read from its hold copy (5
    cycles), one register captured at the last read holds them; only the read flags
    travel down the lanes' pipeline.  Otherwise the facts ride along with every read.
    """
    return plan.min_last_read_distance >= 5


def read_layout(plan):
    """Payload of one read (the stream's ``valid`` is "a read is issued"): ``last`` (the
    pass's last read), ``src_in`` (x comes from the input buffer), and, unless the facts
    are captured (:func:`capture_pass_facts`), ``info`` (:func:`pass_layout`)."""
    fields = {"last": 1, "src_in": 1}
    if not capture_pass_facts(plan):
        fields["info"] = pass_layout(plan)
    return data.StructLayout(fields)


def meta_layout(plan):
    """What rides along with one result through the requantizer: ``valid``, write address
    ``waddr``, output index ``o``, layer ``lidx``, ``to_out``, ``lastchan`` (the program's
    last output), ``obank``, ``ofirst`` (the program's first output), and with LERP layers
    ``lerp`` and ``lchan``."""
    pl = pass_layout(plan)
    return data.StructLayout({
        "valid": 1, "waddr": pl["wbase"].shape, "o": pl["obase"].shape,
        "lidx": pl["lidx"].shape, "to_out": 1, "lastchan": 1, "obank": pl["obank"].shape,
        "ofirst": 1, **({"lerp": 1, "lchan": lerp_channel_shape(plan)} if plan.has_lerp else {})})
