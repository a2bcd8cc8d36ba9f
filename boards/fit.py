"""Does a model fit a board?  Checked before synthesis, from the engine plan alone.

:func:`estimate` gives lower bounds of what a build takes of the device's logic, block RAM
and multipliers; :func:`check_fit` refuses a build whose lower bound is already over the
device, naming what does not fit and what to change.  The figures are lower bounds on
purpose: a model the estimate lets through can still fail in nextpnr (which then raises
:class:`~pwlnet.boards.build.FitError` with nextpnr's own counts), but no model that would
fit is refused.

How the bounds were measured (yosys ``synth_ice40`` of the whole top, iris 4-10-3, 8-bit,
the ``"generic"`` target with LUT multipliers): 1653 LUT4 with one lane and 2320 with four,
so the top without lanes (UART, framed link, engine control, requantizer) is about
:data:`BASE_LUTS` and a LUT multiplier lane of 8x8 bits about :data:`FABRIC_LANE_LUTS`.
With the small link (:class:`pwlnet.hw.link.SmallLink`, the iCEstick's) the same top is
1356 LUT4 with one lane, so :data:`SMALL_BASE_LUTS`; a binarized model's top without its
engine (UART, link, LEDs) is :data:`BINARY_BASE_LUTS` (digits 64-64-64-10 at one lane on
the iCEstick: 951 LUT4 flattened; 993 before flattening, of which the engine 286).
"""

from __future__ import annotations

from ..hw.engine.plan import EnginePlan
from .registry import board as board_named

__all__ = ["DoesNotFit", "estimate", "check_fit", "BASE_LUTS", "SMALL_BASE_LUTS", "BINARY_BASE_LUTS",
           "FABRIC_LANE_LUTS", "EBR_SHAPES"]

#: LUT4s of the top without its lanes (the host link alone is most of it).
BASE_LUTS = 1430
#: The same with the small link.
SMALL_BASE_LUTS = 1130
#: LUT4s of a binarized model's top without its engine, by the link's gateware.
BINARY_BASE_LUTS = {"full": 1000, "small": 600}
#: LUT4s of one lane whose 8x8 multiplier is built from LUTs (scaled by the operand widths).
FABRIC_LANE_LUTS = 220
#: Block RAM shapes (width, depth) yosys can give a read-only memory, per family.
EBR_SHAPES = {
    "ice40": ((16, 256), (8, 512), (4, 1024), (2, 2048)),
    "ecp5": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),
    "gowin": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),
}


class DoesNotFit(ValueError):
    """The model, at the lanes asked for, cannot fit the board (raised before synthesis)."""


def _ebrs(family, width, depth):
    """Fewest block RAMs of ``family`` holding ``depth`` words of ``width`` bits."""
    return min(-(-width // w) * -(-depth // d) for w, d in EBR_SHAPES[family])


def estimate(board, model, lanes, cache_entries=0):
    """Lower bounds of what the top takes on ``board``: ``{"LUT", "EBR", "weights_in"}``.

    ``LUT``: :data:`BASE_LUTS` plus, on a board whose lanes are LUTs, one
    :data:`FABRIC_LANE_LUTS` per lane (scaled by the operand widths).  ``EBR``: the weight
    memory alone when the weights are in block RAM (``weights_in`` is ``"EBR"``; on the
    UP5K they may go to ``"SPRAM"`` instead).
    """
    b = board_named(board)
    if getattr(model, "kind", "mlp") == "binary":
        # XNOR-popcount and adders: no lower bound beyond the top's own logic
        return {"LUT": BINARY_BASE_LUTS[b.link.gateware], "EBR": 0, "weights_in": "EBR",
                "weights": sum(l.weight.size for l in model.layers), "weight_bits": 1}
    plan = EnginePlan(model, lanes)
    luts = SMALL_BASE_LUTS if b.link.gateware == "small" else BASE_LUTS
    if b.lanes == "fabric":
        luts += lanes * FABRIC_LANE_LUTS * plan.weight_bits * plan.x_bits // 64
    kind = plan.weight_memory_for(b.target)
    ebr = _ebrs(b.family, plan.weight_word_bits, len(plan.words)) if kind == "rom" else 0
    return {"LUT": luts, "EBR": ebr, "weights_in": "EBR" if kind == "rom" else "SPRAM",
            "weights": sum(l.weight.size for l in model.layers), "weight_bits": plan.weight_bits}


def _bigger(b, key):
    """Boards with more of ``key`` than ``b``, for the message."""
    from .registry import boards
    more = sorted(((x.count(key), n) for n, x in boards().items() if x.count(key) > b.count(key)), reverse=True)
    return ", ".join(f"{n} ({c})" for c, n in more[:3])


def check_fit(board, model, lanes, cache_entries=0):
    """Refuse (:class:`DoesNotFit`) a build that cannot fit ``board``; return :func:`estimate`.

    The message names the board and its device, every resource whose lower bound is over
    the device's count, and what to change.
    """
    b = board_named(board)
    est = estimate(b, model, lanes, cache_entries)
    over = []
    luts = b.count("LUT")
    if est["LUT"] > luts:
        base = SMALL_BASE_LUTS if b.link.gateware == "small" else BASE_LUTS
        if getattr(model, "kind", "mlp") != "binary" and b.link.gateware == "small":
            over.append(f"logic: the MLP engine with {lanes} lane{'s' * (lanes > 1)} of LUT multipliers, the link and "
                        f"the UART take about {est['LUT']} LUT4s and the device has {luts} logic cells; a binarized "
                        f"model fits (pwlnet train --binary, docs/binary.md), or build for a board with more logic: "
                        f"{_bigger(b, 'LUT')}")
        elif base > luts:
            over.append(f"logic: the host link, UART and engine control alone take about {base} LUT4s and the "
                        f"device has {luts} logic cells, so no model fits this board's top; build for a board with "
                        f"more logic: {_bigger(b, 'LUT')}")
        else:
            over.append(f"logic: {lanes} lanes of LUT multipliers take about {est['LUT']} LUT4s of the {luts} "
                        f"logic cells: use fewer lanes (--lanes 1) or a board with DSPs")
    ebrs = b.count("EBR")
    if est["EBR"] > ebrs:
        over.append(f"block RAM: {est['weights']} {est['weight_bits']}-bit weights in words of {lanes} lanes take at "
                    f"least {est['EBR']} of the {ebrs} {b.resources['EBR'].what}: use a smaller model (fewer or "
                    f"narrower hidden layers), fewer weight bits (pwlnet compile --weight-bits) or a board with "
                    f"more block RAM: {_bigger(b, 'EBR')}")
    if over:
        dims = "-".join(str(d) for d in [model.input_dim] + [l.n_out for l in model.layers])
        raise DoesNotFit(f"the {dims} model does not fit the {b.name} ({b.device}): " + "; ".join(over))
    return est
