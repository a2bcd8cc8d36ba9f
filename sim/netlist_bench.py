"""The long netlist check: synthesize a board top and run :func:`pwlnet.sim.netlist.verify_top` on it.

``python -m pwlnet.sim.netlist_bench`` (``make verify-netlist``) synthesizes the board top
of a model exactly as the bitstream build does (:func:`pwlnet.boards.build.synthesize_netlist`,
no place and route), the plain top or the cached one, and checks its netlist on one or
both simulators with as many INFER frames as asked.  It prints one line per simulator
and, with ``--json``, writes the results.  Too slow for ``make test`` on Icarus (about
4 s per inference there); the test suite runs a short check on Verilator.
Layer: simulation and boards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["run", "main"]

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "boards" / "models" / "basicmotions_h64x64.onnx"


def run(model, out, *, lanes="auto", cache_entries=0, cache_metric="linf", batch=0, frames=200,
        simulators=("verilator",), seed=0, mhz=48, log=print):
    """Synthesize ``model`` (an ONNX file or a compiled-model directory) into ``out`` and check
    the netlist on each of ``simulators``; returns the list of results
    (:func:`pwlnet.sim.netlist.verify_netlist`), each with ``"lanes"`` and ``"synthesis_seconds"``.

    ``lanes="auto"`` takes the bitstream build's default
    (:func:`pwlnet.boards.icebreaker.auto_lanes`: 16 lanes, two per SB_MAC16, for the default
    model's plain top; 8 for a cached top).
    """
    from .. import artifact
    from ..boards.build import synthesize_netlist
    from ..boards.icebreaker import auto_lanes
    from ..compile import compile_onnx
    from .netlist import verify_top

    out = Path(out)
    model = Path(model)
    if model.suffix.lower() == ".onnx":
        compiled = compile_onnx(model, out / "model", log=lambda *a, **k: None)
    else:
        compiled = artifact.load(model)
    if lanes == "auto":
        lanes, why = auto_lanes(compiled, cache_entries)
        log(f"{lanes} lanes: {why}")
    t0 = time.monotonic()
    top, netlist = synthesize_netlist(compiled, out / "gateware", lanes=lanes, mhz=mhz, cache_entries=cache_entries,
                                      cache_metric=cache_metric, batch=batch)
    synth = round(time.monotonic() - t0, 1)
    log(f"synthesized {netlist} in {synth} s")
    results = []
    for sim in simulators:
        r = verify_top(netlist, top, frames=frames, seed=seed, simulator=sim, workdir=out / f"sim-{sim}")
        r.update(lanes=lanes, synthesis_seconds=synth)
        kinds = ", ".join(f"{v} {k}" for k, v in r["kinds"].items())
        cache = r.get("cache")
        log(f"{r['top']} top on {sim}: {r['frames']} frames ({kinds}) answered as the golden model, "
            + (f"{cache['hits']} hits, {cache['misses']} misses, " if cache else "")
            + f"0 mismatches, {r['seconds']} s")
        results.append(r)
    return results


def _lanes(text):
    """``--lanes``: ``auto`` or a positive integer."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"lanes must be 'auto' or a positive integer, not {text!r}")
    return int(text)


def main(argv=None):
    """Command line; returns the exit status (1 on a mismatch, naming the frame)."""
    from .netlist import NetlistMismatch

    p = argparse.ArgumentParser(prog="python -m pwlnet.sim.netlist_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="ONNX file or compiled-model directory")
    p.add_argument("--out", default="build/netlist-check", help="work directory")
    p.add_argument("--lanes", type=_lanes, default="auto", help="engine lanes (default auto: as the bitstream build)")
    p.add_argument("--cache-entries", type=int, default=0, metavar="N", help="the cached top with N slots")
    p.add_argument("--cache-metric", default="linf", choices=("linf", "l2", "l1"))
    p.add_argument("--batch", type=int, default=0, metavar="K", help="INFER_BATCH of up to K inputs (plain top)")
    p.add_argument("--frames", type=int, default=200, help="INFER frames to check (default 200)")
    p.add_argument("--simulator", nargs="+", default=["verilator"], choices=("verilator", "icarus"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    try:
        results = run(args.model, args.out, lanes=args.lanes, cache_entries=args.cache_entries,
                      cache_metric=args.cache_metric,
                      batch=args.batch, frames=args.frames, simulators=args.simulator, seed=args.seed)
    except NetlistMismatch as e:
        print(f"netlist check FAILED: {e}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
