"""RTL regression: every golden regression model through the engine in cocotb.

``python -m pwlnet.sim.regress --simulator verilator --vectors 2000`` (what
``make sim`` runs) finds the regression models in ``tests/regression/<name>/`` (a
compiled model directory, itself or one folder below such as ``compiled/``, plus
``codes_in.npy`` / ``codes_out.npy`` or a float ``inputs.npy``), runs their stored
inputs and ``--vectors`` random input-code vectors through
the simulated engine, and prints per model the mismatches and the measured cycles per
inference (beside the engine's own figure and the ideal ``sum ceil(n_out/P) * n_in``).
The exit status is non-zero when any output differs from the golden model or from the
stored ``codes_out.npy``.  Binarized models run on the binary engine against
:func:`pwlnet.binary.forward` (not with ``--weight-memory ram`` or ``--dut toy``, which
are the MLP engine's).

While no regression models exist, three synthetic models from
:func:`pwlnet.synth.random_model` stand in (see :data:`SYNTH_MODELS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from pwlnet import artifact, fixedpoint as fx, golden
from pwlnet.hw.engine import ENGINE_ACTIVATIONS
from pwlnet.synth import random_model
from pwlnet.hw.params import TARGETS
from pwlnet.sim import runner
from pwlnet.sim.engine_sim import simulate

__all__ = ["SYNTH_MODELS", "RegressionCase", "regression_dir", "find_cases", "left_out",
           "unsupported_reason", "random_codes",
           "run_case", "stored_mismatches", "main"]

#: Stand-in models ``(name, seed, dims, options)``: different depths and widths, one
#: hidden width not a multiple of 8 and one with multiplier requantization.
SYNTH_MODELS = (
    ("synth-16-32-10", 11, (16, 32, 10), {}),
    ("synth-12-24-20-16-5", 12, (12, 24, 20, 16, 5), {"requant": "multiply"}),
    ("synth-13-21-7", 13, (13, 21, 7), {}),
)


@dataclasses.dataclass
class RegressionCase:
    """One model to regress.

    Attributes
    ----------
    name : str
    model : CompiledModel
    codes : ndarray or None
        Stored input codes ``(M, d)``.
    expected : ndarray or None
        Stored output codes ``(M, n_out)`` for ``codes``: the RTL must reproduce them,
        which catches a change of the golden model as well as of the engine.
    source : str
        Where the case came from.
    """

    name: str
    model: artifact.CompiledModel
    codes: np.ndarray | None
    source: str
    expected: np.ndarray | None = None


def regression_dir() -> Path:
    """``tests/regression`` of the source tree (``$PWLNET_REGRESSION_DIR`` overrides)."""
    env = os.environ.get("PWLNET_REGRESSION_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "tests" / "regression"


def _stored_codes(case_dir: Path, model):
    """The stored inputs of a regression case as ``(codes, expected codes or None)``.

    ``codes_in.npy`` (with ``codes_out.npy``) is used as it is; otherwise float
    ``inputs*.npy`` are quantized like ``predict`` does."""
    if (case_dir / "codes_in.npy").is_file():
        codes = np.load(case_dir / "codes_in.npy").astype(np.int64).reshape(-1, model.input_dim)
        out = case_dir / "codes_out.npy"
        expected = np.load(out).astype(np.int64).reshape(len(codes), -1) if out.is_file() else None
        return codes, expected
    names = sorted(case_dir.glob("inputs*.npy")) or sorted(case_dir.glob("*input*.npy"))
    if not names:
        return None, None
    x = np.load(names[0])
    if np.issubdtype(x.dtype, np.integer):
        return np.asarray(x, dtype=np.int64).reshape(len(x), model.input_dim), None
    return golden.quantize_inputs(model, x), None


def unsupported_reason(model):
    """Why the engine cannot run ``model`` yet, or ``None`` when it can.

    A binarized model runs on :class:`pwlnet.hw.binary.BinaryEngine` (the same stream
    ports; :func:`pwlnet.sim.runner.make_component` picks it by the model's kind)."""
    if getattr(model, "kind", "mlp") == "binary":
        return None
    for i, l in enumerate(model.layers):
        if l.activation not in ENGINE_ACTIVATIONS:
            return f"layer {i} has activation {l.activation!r}; the engine implements {ENGINE_ACTIVATIONS}"
    return None


def left_out(directory=None) -> list:
    """``(name, reason)`` of the stored regression models the engine cannot run yet."""
    return [(c.name, unsupported_reason(c.model))
            for c in find_cases(directory, synth_fallback=False, include_unsupported=True)
            if unsupported_reason(c.model)]


def find_cases(directory=None, *, synth_fallback=True, include_unsupported=False) -> list:
    """Regression cases in ``directory`` (default :func:`regression_dir`), sorted by name.

    Models the engine cannot run yet (see :func:`unsupported_reason`) are left out unless
    ``include_unsupported``; :func:`left_out` lists them.  Falls back to
    :data:`SYNTH_MODELS` when there are none and ``synth_fallback``.
    """
    directory = Path(directory) if directory is not None else regression_dir()
    cases = []
    if directory.is_dir():
        for case_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
            # the compiled model is the case directory itself or one folder below it
            found = [case_dir] if (case_dir / "model.json").is_file() else \
                sorted(p.parent for p in case_dir.glob("*/model.json"))
            if found:
                model = artifact.load(found[0])
                if not include_unsupported and unsupported_reason(model):
                    continue
                codes, expected = _stored_codes(case_dir, model)
                cases.append(RegressionCase(case_dir.name, model, codes, str(case_dir), expected))
    if not cases and synth_fallback:
        for name, seed, dims, opts in SYNTH_MODELS:
            cases.append(RegressionCase(name, random_model(seed, list(dims), **opts), None,
                                        f"pwlnet.synth.random_model({seed}, {list(dims)}, {opts})"))
    return cases


def random_codes(model, n, seed=0) -> np.ndarray:
    """``n`` uniformly random input-code vectors over the whole input range."""
    lo, hi = fx.signed_range(model.input_bits)
    rng = np.random.default_rng(seed)
    return rng.integers(lo, hi + 1, size=(n, model.input_dim), dtype=np.int64)


def run_case(case, *, vectors=2000, simulator="verilator", lanes=8, target="generic", waves=False,
             weight_memory="auto", seed=0, dut="engine", root=None):
    """Simulate the stored inputs plus ``vectors`` random ones; return a :class:`SimResult`."""
    parts = [] if case.codes is None else [case.codes]
    if vectors:
        parts.append(random_codes(case.model, vectors, seed))
    codes = np.concatenate(parts) if parts else random_codes(case.model, 1, seed)
    return simulate(case.model, codes, simulator=simulator, lanes=lanes, target=target, waves=waves,
                    weight_memory=weight_memory, seed=seed, dut=dut, root=root)


def stored_mismatches(case, result) -> int:
    """Stored vectors whose RTL outputs differ from the stored expected codes (0 without them)."""
    if case.expected is None:
        return 0
    got = result.outputs[:len(case.expected)]
    return int((got != case.expected).any(axis=1).sum())


def _dims(model):
    return "x".join(str(n) for n in [model.input_dim] + [l.n_out for l in model.layers])


def main(argv=None) -> int:
    """Command-line entry of ``make sim``; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m pwlnet.sim.regress", description=__doc__.split("\n")[0])
    p.add_argument("--simulator", choices=runner.SIMULATORS, default="verilator")
    p.add_argument("--vectors", type=int, default=2000, help="random input vectors per model (default 2000)")
    p.add_argument("--lanes", type=int, default=8)
    p.add_argument("--target", choices=TARGETS, default="generic")
    p.add_argument("--weight-memory", choices=("auto", "rom", "ram"), default="auto")
    p.add_argument("--waves", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", help="regression directory (default tests/regression)")
    p.add_argument("--dut", choices=("engine", "toy"), default="engine",
                   help="'toy' checks the bench itself on a stand-in component")
    args = p.parse_args(argv)
    if args.vectors < 0:
        p.error(f"--vectors must be >= 0, not {args.vectors}")

    cases = find_cases(args.dir)
    for name, why in left_out(args.dir):
        print(f"left out {name}: {why}")
    print(f"{len(cases)} models on {args.simulator}, P={args.lanes}, {args.target}, "
          f"{args.vectors} random vectors each (+ stored inputs)")
    header = f"{'model':28} {'dims':18} {'vectors':>7} {'mism':>5} {'cyc/inf':>8} {'engine':>6} " \
             f"{'ideal':>6} {'latency':>7} {'build s':>7} {'run s':>6}"
    print(header)
    failed = 0
    t0 = time.monotonic()
    for case in cases:
        if getattr(case.model, "kind", "mlp") == "binary" and (args.weight_memory == "ram" or args.dut == "toy"):
            why = "the toy stands in for the MLP engine" if args.dut == "toy" else \
                "the binary engine keeps its weights in ROM, not in RAM"
            print(f"{case.name:28} skipped: binarized; {why}")
            continue
        try:
            r = run_case(case, vectors=args.vectors, simulator=args.simulator, lanes=args.lanes,
                         target=args.target, waves=args.waves, weight_memory=args.weight_memory,
                         seed=args.seed, dut=args.dut)
        except (runner.SimError, ValueError, ImportError) as e:
            failed += 1
            print(f"{case.name:28} ERROR {e}")
            continue
        stored_bad = stored_mismatches(case, r)
        failed += (not r.ok) or stored_bad > 0
        if stored_bad:
            print(f"    {stored_bad} stored vectors differ from codes_out.npy")
        print(f"{case.name:28} {_dims(case.model):18} {len(r.outputs):7d} {r.mismatches:5d} "
              f"{r.cycles_per_inference:8.1f} {r.engine_cycles!s:>6} {r.ideal_cycles!s:>6} {r.latency_cycles!s:>7} "
              f"{r.build_s:7.1f} {r.run_s:6.1f}")
        for line in r.details:
            print(f"    {line}")
        if r.waves:
            print(f"    waves: {r.waves}")
    print(f"{'FAIL' if failed else 'PASS'}: {failed} of {len(cases)} models failed "
          f"({time.monotonic() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
