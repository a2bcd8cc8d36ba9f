"""The lane count of a board build: ``--lanes auto`` per board, and a given count checked.

Each board names a rule (:data:`pwlnet.boards.registry.LANE_RULES`):

* ``"up5k"``: the lanes are ``SB_MAC16`` instances, two 8x8 lanes per DSP where the
  operands fit 8 bits and the weights stay in EBR
  (:func:`pwlnet.boards.icebreaker.auto_lanes`, unchanged since the iCEBreaker was the only
  board);
* ``"dsp"``: one multiplier block per lane (yosys maps each lane's ``*`` to an ECP5
  ``MULT18X18D``), and no more lanes than the widest layer can use: the fewest lanes that
  take as few passes over that layer as all the multipliers would;
* ``"fabric"``: multipliers in LUTs (iCE40 HX/LP, no DSP): lanes cost logic, so the rule
  takes the most lanes, up to :data:`FABRIC_MAX_LANES`, whose estimated logic
  (:func:`pwlnet.boards.fit.estimate`) stays within :data:`FABRIC_LOGIC_SHARE` of the device.

A binarized model (:class:`pwlnet.binary.BinaryModel`) uses no multiplier: its lanes are
the first layer's adders, :data:`BINARY_LANES` unless given, and one on a board with the
small link (the smallest devices, where every logic cell counts).

A count that the board's multipliers cannot carry is refused here, before synthesis.
"""

from __future__ import annotations

from ..hw.engine.plan import ICE40_DSPS, EnginePlan
from .registry import board as board_named

__all__ = ["auto_lanes", "check_lanes", "FABRIC_MAX_LANES", "FABRIC_LOGIC_SHARE", "BINARY_LANES"]

#: Most lanes ``--lanes auto`` gives a board whose multipliers are LUTs.
FABRIC_MAX_LANES = 8
#: Adder lanes ``--lanes auto`` gives a binarized model's first layer (capped at its width).
BINARY_LANES = 16
#: Share of the device's logic cells the LUT-multiplier lanes may bring the estimate to.
FABRIC_LOGIC_SHARE = 0.75


def _widest(model):
    return max(l.n_out for l in model.layers)


def auto_lanes(board, model, cache_entries=0):
    """``(lanes, why)`` for ``board`` (a name or :class:`~pwlnet.boards.registry.Board`)."""
    b = board_named(board)
    if getattr(model, "kind", "mlp") == "binary":
        if b.link.gateware == "small":
            return 1, ("binarized model on a small device: one adder lane for its first layer, XNOR-popcount "
                       "for the others")
        lanes = min(BINARY_LANES, model.layers[0].n_out)
        return lanes, (f"binarized model: {lanes} adder lanes for its first layer (no multiplier), "
                       f"XNOR-popcount for the others")
    if b.lanes == "up5k":
        from .icebreaker import auto_lanes as up5k_lanes
        return up5k_lanes(model, cache_entries)
    if b.lanes == "dsp":
        dsps = b.count("DSP")
        widest = _widest(model)
        passes = -(-widest // dsps)
        lanes = -(-widest // passes)
        if lanes == widest:
            return lanes, f"one {b.resources['DSP'].cell} per lane, one lane per output of the widest layer ({widest})"
        return lanes, (f"one {b.resources['DSP'].cell} per lane: {dsps} of them take {passes} passes over the "
                       f"widest layer ({widest} outputs), as {lanes} lanes do")
    from .fit import estimate
    luts = b.count("LUT")
    best = 1
    for lanes in range(1, FABRIC_MAX_LANES + 1):
        if estimate(b, model, lanes, cache_entries)["LUT"] <= FABRIC_LOGIC_SHARE * luts:
            best = lanes
    widest = _widest(model)
    passes = -(-widest // best)
    best = -(-widest // passes)          # the fewest lanes with as few passes over the widest layer
    return best, (f"multipliers in LUTs (no DSP): the most lanes, up to {FABRIC_MAX_LANES}, whose estimated "
                  f"logic stays within {FABRIC_LOGIC_SHARE:.0%} of the {luts} logic cells")


def check_lanes(board, model, lanes, cache_entries=0):
    """``(lanes, why)``: ``"auto"`` resolved by :func:`auto_lanes`, a given count checked
    against the multipliers it needs (``ValueError`` before any synthesis)."""
    b = board_named(board)
    if getattr(model, "kind", "mlp") == "binary" and cache_entries:
        raise ValueError("the hypersphere cache works on a ReLU MLP's linear regions; a binarized model has "
                         "none (build it without --cache-entries)")
    if lanes == "auto":
        return auto_lanes(b, model, cache_entries)
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer or 'auto', not {lanes!r}")
    if getattr(model, "kind", "mlp") == "binary":
        return lanes, "given"                  # adder lanes: no multiplier to run out of
    chip = b.chip
    if b.lanes == "up5k":
        from .icebreaker import MAX_LANES
        plan = EnginePlan(model, lanes)
        if plan.dsps("ice40") > ICE40_DSPS:
            why = (f"{plan.weight_bits}-bit weights and {plan.x_bits}-bit activations take one DSP per lane"
                   if lanes <= MAX_LANES else f"two 8x8 lanes per DSP make at most {MAX_LANES}")
            raise ValueError(f"{lanes} lanes need {plan.dsps('ice40')} SB_MAC16 blocks and the {chip} has "
                             f"{ICE40_DSPS} ({why}): use --lanes "
                             f"{MAX_LANES if plan.mac_pairs('ice40') else ICE40_DSPS} or fewer, or --lanes auto")
    elif b.lanes == "dsp":
        dsps = b.count("DSP")
        if lanes > dsps:
            raise ValueError(f"{lanes} lanes need {lanes} {b.resources['DSP'].cell} multipliers and the {chip} has "
                             f"{dsps}: use --lanes {dsps} or fewer, or --lanes auto")
    return lanes, "given"
