"""Simulate a compiled model's engine in cocotb and compare it with the golden model.

:func:`simulate` is the Python API and :func:`cli_simulate` the body of
``pwlnet simulate DIR --inputs X.npy``: build (or reuse) the engine for the model on
Icarus or Verilator, stream the input codes through it, check every output code and
argmax in order against :func:`pwlnet.golden.forward`, and report mismatches and the
measured cycles per inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from pwlnet import artifact, golden
from pwlnet.hw.params import TARGETS
from pwlnet.sim import runner

__all__ = ["SimResult", "simulate", "add_arguments", "cli_simulate", "main"]


@dataclasses.dataclass
class SimResult:
    """The outcome of one simulation.

    Attributes
    ----------
    outputs : ndarray, shape (N, n_out)
        Output codes the RTL produced (int64).
    argmax : ndarray, shape (N,)
        The RTL's argmax per inference.
    expected : ndarray, shape (N, n_out)
        The golden model's output codes.
    mismatches : int
        Inferences with any wrong output code, ``last`` flag or argmax.
    cycles_per_inference : float
        Measured steady-state spacing of inferences streamed back to back.
    latency_cycles : int
        Cycles from accepting the first input beat to the last output beat of one inference.
    ideal_cycles, engine_cycles : int or None
        The engine's analytic figures (``ideal_cycles``, ``cycles_per_inference``).
    details : list of str
        The first few mismatches in words.
    build_s, run_s : float
        Wall time of the build (0 when a cached build was reused) and of the run.
    run_dir, waves : str or None
        The kept run directory (waves, or a failure) and the wave file.
    total_cycles : int
        Cycles from the first input beat to the last output beat of the whole run.
    python_wakeups : int
        How often the bench's driver and monitor resumed: about one per stream beat,
        far fewer than ``total_cycles``, because they sleep while the engine computes.
    simulator, target : str
    lanes : int
    """

    outputs: np.ndarray
    argmax: np.ndarray
    expected: np.ndarray
    mismatches: int
    cycles_per_inference: float
    latency_cycles: int
    ideal_cycles: int | None
    engine_cycles: float | None
    details: list
    build_s: float
    run_s: float
    simulator: str
    target: str
    lanes: int
    run_dir: str | None = None
    waves: str | None = None
    total_cycles: int | None = None
    python_wakeups: int | None = None

    @property
    def ok(self) -> bool:
        """True when every output matched."""
        return self.mismatches == 0


def simulate(model_dir_or_model, codes, simulator="verilator", lanes=8, target="generic", waves=False,
             *, weight_memory="auto", seed=0, dut="engine", clean=16, gap_prob=0.2, stall_prob=0.2,
             root=None, verbose=False) -> SimResult:
    """Run input codes through the simulated engine and check them against the golden model.

    Parameters
    ----------
    model_dir_or_model : path-like or CompiledModel
        A compiled model directory or the model itself.
    codes : array_like of int, shape (N, d)
        Input codes (quantize float inputs with :func:`pwlnet.golden.quantize_inputs`).
    simulator : {"verilator", "icarus"}
    lanes : int
        Engine lanes P.
    target : {"generic", "ice40"}
    waves : bool
        Dump waves; the run directory is kept and named in the result.
    weight_memory : {"auto", "rom", "ram"}
        Engine weight storage; ``"ram"`` weights are loaded through ``w_wr`` by the bench.
    seed : int
        Seed of the random input gaps and output back-pressure.
    dut : {"engine", "toy"}
        The real engine, or the stand-in the bench infrastructure is proved on.
    clean : int
        Leading inferences streamed without gaps or back-pressure; cycles are measured on them.
    gap_prob, stall_prob : float
        Probability of an input gap / output stall before each beat after the clean ones.
    root : path-like, optional
        Build cache root (default ``$PWLNET_SIM_BUILD`` or ``~/.cache/pwlnet/sim``).
    verbose : bool
        Show simulator output.

    Returns
    -------
    SimResult
    """
    model = model_dir_or_model
    if not hasattr(model, "layers"):       # a CompiledModel or a pwlnet.binary.BinaryModel
        model = artifact.load(model)
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes.reshape(1, -1)
    # a binarized model has its own golden model (pwlnet.binary)
    if getattr(model, "kind", "mlp") == "binary":
        from pwlnet import binary
        reference = binary.forward
    else:
        reference = golden.forward
    # validates shape and range, and names the bad value, before any build starts
    reference(model, codes)
    if len(codes) == 0:
        raise golden.InputError("no input vectors to simulate")
    b = runner.build(model, lanes=lanes, target=target, simulator=simulator, waves=waves, dut=dut,
                     weight_memory=weight_memory, root=root, verbose=verbose)
    r = runner.run(b, codes, seed=seed, clean=clean, gap_prob=gap_prob, stall_prob=stall_prob,
                   waves=waves, verbose=verbose)
    if dut == "toy":
        from pwlnet.sim.toy import toy_forward
        expected = toy_forward(model, codes)
    else:
        expected = reference(model, codes)
    return SimResult(outputs=r["outputs"], argmax=r["argmax"], expected=expected,
                     mismatches=int(r["mismatches"]), cycles_per_inference=r["cycles_per_inference"],
                     latency_cycles=r["latency_cycles"], ideal_cycles=b.info.get("ideal_cycles"),
                     engine_cycles=b.info.get("cycles_per_inference"), details=r["mismatch_details"],
                     build_s=b.info.get("build_s", 0.0), run_s=r["run_s"], simulator=simulator,
                     target=target, lanes=lanes, run_dir=r["run_dir"],
                     waves=r.get("waves"), total_cycles=r.get("total_cycles"),
                     python_wakeups=r.get("python_wakeups"))


def add_arguments(parser: argparse.ArgumentParser):
    """Add the ``pwlnet simulate`` arguments to ``parser``."""
    parser.add_argument("model_dir", metavar="DIR", help="compiled model directory")
    parser.add_argument("--inputs", required=True, metavar="X.npy",
                        help="float inputs (N, *input_shape) or (N, d); quantized like 'predict'")
    parser.add_argument("--simulator", choices=runner.SIMULATORS, default="verilator")
    parser.add_argument("--lanes", type=int, default=8, metavar="P", help="engine lanes (default 8)")
    parser.add_argument("--target", choices=TARGETS, default="generic")
    parser.add_argument("--weight-memory", choices=("auto", "rom", "ram"), default="auto",
                        help="engine weight storage (ram: loaded through w_wr by the bench)")
    parser.add_argument("--outputs", metavar="Y.npy", help="write dequantized outputs (N, n_out)")
    parser.add_argument("--codes", metavar="C.npy", help="write the RTL's output codes (N, n_out)")
    parser.add_argument("--waves", action="store_true", help="dump waves (the run directory is kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random gaps and back-pressure")
    parser.add_argument("--verbose", action="store_true", help="show simulator output")
    return parser


def cli_simulate(args) -> int:
    """``pwlnet simulate``: returns the process exit code (1 on any mismatch).

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by a parser set up with :func:`add_arguments`.
    """
    from pwlnet.files import check_output_file, load_input_codes, save_npy
    try:
        # Everything that can be refused is refused before the (slow) build and run.
        if args.lanes < 1:
            raise ValueError(f"--lanes must be a positive integer, not {args.lanes}")
        for option, path in (("--outputs", args.outputs), ("--codes", args.codes)):
            if path:
                check_output_file(path, option)
        model = artifact.load(args.model_dir)
        _x, codes = load_input_codes(model, args.inputs)
    except (artifact.ArtifactError, golden.InputError, OSError, ValueError) as e:
        print(f"pwlnet simulate: error: {e}", file=sys.stderr)
        return 2
    try:
        res = simulate(model, codes, simulator=args.simulator, lanes=args.lanes, target=args.target,
                       waves=args.waves, weight_memory=args.weight_memory, seed=args.seed,
                       verbose=args.verbose)
    except (runner.SimError, ValueError) as e:
        print(f"pwlnet simulate: error: {e}", file=sys.stderr)
        return 2
    if args.outputs:
        save_npy(args.outputs, golden.dequantize_outputs(model, res.outputs))
    if args.codes:
        save_npy(args.codes, res.outputs)
    n = len(codes)
    print(f"{args.simulator}, P={args.lanes}, {args.target}: {n} inferences, "
          f"{res.mismatches} mismatches")
    print(f"cycles per inference: measured {res.cycles_per_inference:g} "
          f"(latency {res.latency_cycles}; engine's figure {res.engine_cycles}, ideal {res.ideal_cycles})")
    print(f"simulated {res.total_cycles} cycles with {res.python_wakeups} testbench wake-ups "
          f"in {res.run_s:.1f} s (build {res.build_s:.1f} s)")
    for line in res.details:
        print(f"  {line}")
    if res.waves:
        print(f"waves: {res.waves}")
    elif res.run_dir:
        print(f"run directory: {res.run_dir}")
    return 0 if res.ok else 1


def main(argv=None) -> int:
    """Stand-alone entry (``python -m pwlnet.sim.engine_sim``), the same as ``pwlnet simulate``."""
    parser = add_arguments(argparse.ArgumentParser(prog="pwlnet simulate", description=__doc__.split("\n")[0]))
    return cli_simulate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
