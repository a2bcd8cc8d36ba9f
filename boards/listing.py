"""``pwlnet boards``: every board of the registry with its device, resources, clock and link."""

from __future__ import annotations

import json

from .registry import boards

__all__ = ["describe", "board_record", "cli_boards", "add_boards_arguments"]

_RULES = {"up5k": "SB_MAC16 lanes, two 8x8 lanes per DSP where they fit (16), else one (8)",
          "dsp": "one 18x18 multiplier per lane, up to the widest layer",
          "fabric": "LUT multipliers, a few lanes within the logic"}


def _tools(b):
    """The build's YoWASP tools (openFPGALoader, which some platforms ask for, programs only)."""
    return sorted({t for t in b.tools.values() if t != "openfpgaloader-cli"})


def board_record(b):
    """The facts of board ``b`` as a JSON-ready dict (what ``pwlnet boards --json`` prints)."""
    return {
        "name": b.name, "title": b.title, "family": b.family, "device": b.device,
        "resources": {k: r.count for k, r in b.resources.items()},
        "clock": {"resource": b.clock.resource, "mhz": b.clock.freq / 1e6, "pll": b.clock.pll,
                  "tries_mhz": list(b.clocks_mhz), "note": b.clock.note},
        "link": {"bridge": b.link.bridge, "bauds": list(b.link.bauds), "note": b.link.note},
        "target": b.target, "lanes": b.lanes, "link_gateware": b.link.gateware,
        "default_model": f"boards/models/{b.default_model}",
        "tools": _tools(b),
        "programmers": [c[0] for c in b.programmers],
        "bitstream": b.bitstream_ext,
        "notes": b.notes,
    }


def describe(b):
    """A few lines about board ``b`` for people."""
    res = ", ".join(f"{k} {r.count}" for k, r in b.resources.items())
    tries = b.clocks_mhz
    walk = f"{tries[0]:g} MHz" if len(tries) == 1 else f"tries {tries[0]:g} .. {tries[-1]:g} MHz"
    lines = [
        f"{b.name:<12} {b.title}",
        f"  device     {b.device} ({b.family}): {res}",
        f"  clock      {b.clock.describe()}; {walk}",
        f"  link       {b.link.describe()}",
        f"  engine     target {b.target}; --lanes auto: {_RULES[b.lanes]}",
        f"  model      boards/models/{b.default_model} unless one is given",
        f"  tools      {', '.join(_tools(b))}; program with "
        f"{' or '.join(c[0] for c in b.programmers)}",
    ]
    if b.notes:
        lines.append(f"  note       {b.notes}")
    return "\n".join(lines)


def add_boards_arguments(parser):
    """Arguments of ``pwlnet boards``."""
    parser.add_argument("names", nargs="*", metavar="BOARD", help="only these boards (default: all)")
    parser.add_argument("--json", action="store_true", help="print the boards as JSON")
    return parser


def cli_boards(args):
    """``pwlnet boards``: returns the exit status."""
    found = boards()
    names = list(getattr(args, "names", None) or found)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(f"unknown board {unknown[0]!r}; boards: {', '.join(found)}")
    if getattr(args, "json", False):
        print(json.dumps([board_record(found[n]) for n in names], indent=1))
    else:
        print("\n\n".join(describe(found[n]) for n in names))
    return 0
