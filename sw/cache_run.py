"""``pwlnet cache``: run an input stream through the hardware cache, golden model or RTL.

The stream is quantized with the compiled model's input quantizer and looked up in
order.  Without ``--simulator`` :func:`pwlnet.cache_host.run_stream` does it, filling a slot
on every miss exactly as the host would (it linearizes the float network at the missed
codes and writes the entry): which inputs hit, the entry that answered, and the output
codes returned.  Its cycle figures are the engine's exact analytic counts
(:class:`pwlnet.hw.engine.MLPEngine` never stalls inside an inference): a miss costs the
whole network, a hit the entry's one-layer program ``W x + b``, and both add the
comparator bank's lookup latency (:data:`pwlnet.hw.comparator_bank.LOOKUP_LATENCY`), since the
engine can only choose the program once the bank has answered.

With ``--simulator verilator|icarus`` the same stream runs through the RTL of the engine
with the cache (:class:`pwlnet.hw.cached_engine.CachedEngine`) in cocotb
(:func:`pwlnet.sim.cached_engine_sim.simulate_cache`), driven as the host drives it: one input,
its answer, and on a miss the new entry written to the slot the policy picks, before the
next input.  The result file then holds the RTL's answers, the cycles per inference
printed are *measured* in the simulation (first input beat to last output beat), and
every answer and the hit/miss counters are compared with the golden model in lockstep
(:func:`~pwlnet.cache_host.run_stream` with the engine's slot format: entries that do not
fit a slot stay unwritten on both sides).  Any difference makes the command exit with
status 1.  ``pwlnet run --cache`` hands :func:`run_cache` a board's answers the same way
(``board=``, from :meth:`pwlnet.host.Device.run_cached`) and checks them likewise.

Why the float network is needed.  A compiled model keeps only quantized weights, and the
safe radius of an entry must be the float network's (the one whose linear regions the
guarantee is about, :mod:`pwlnet.code_cache`).  The ONNX file the model was compiled from is
therefore an input; when the model records the file's SHA-256 (``pwlnet compile`` does),
the file is checked against it, because radii computed from another network would make
hits that are not exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import artifact, cache_host, code_cache, golden, ir
from .artifact import CompiledModel
from .hw.engine.plan import EnginePlan
from .hw.slot_format import SlotFormat
from .sim.runner import SIMULATORS

__all__ = ["CacheRunError", "CacheRun", "DEFAULT_LANES",
           "load_float_network", "engine_cycles", "run_cache", "check_result_path", "save_result",
           "add_cache_arguments", "cli_cache"]

#: Engine lanes ``P`` the cycle figures assume unless told otherwise (the bench's default).
DEFAULT_LANES = 8

# Keys of the result file, in the order they are written.
_NPZ_KEYS = ("hit", "hit_center", "inputs", "outputs")


class CacheRunError(ValueError):
    """A cache run that cannot be made: a missing or mismatched float network, bad arguments."""


@dataclasses.dataclass
class CacheRun:
    """One stream through the cache: the golden model, or the RTL checked against it.

    Attributes
    ----------
    hit : numpy.ndarray of bool, shape (N,)
        Answered from the cache (by the RTL when :attr:`rtl` is set).
    slot : numpy.ndarray of int64, shape (N,)
        The answering slot, ``-1`` on a miss.
    hit_center : numpy.ndarray of float64, shape (N, d)
        The dequantized center of the answering entry on a hit; ``nan`` rows on a miss.
        (For an RTL run: the center of the entry the host last wrote to that slot.)
    inputs : numpy.ndarray of float64, shape (N, d)
        The dequantized input codes: what the cache saw (inputs after quantization).
    codes : numpy.ndarray of int64, shape (N, n_out)
        Output codes the cache returned (the entry's layer on a hit, the full network on
        a miss; the RTL's when :attr:`rtl` is set).
    outputs : numpy.ndarray of float64, shape (N, n_out)
        ``codes * output_scale``, the format of ``pwlnet predict``.
    full_codes : numpy.ndarray of int64, shape (N, n_out)
        The full quantized network's output codes (:func:`pwlnet.golden.forward`).
    stream : pwlnet.cache_host.StreamResult
        Everything :func:`pwlnet.cache_host.run_stream` recorded (the golden model).
    lanes : int
        Engine lanes ``P`` of the cycle figures.
    cycles_full : int
        The network's cycles per inference (program 0).
    cycles_hit : int or None
        An entry's one-layer program's cycles (``None`` if no entry could be made).
    lookup_latency : int
        The comparator bank's cycles from the last query beat to its answer.
    rtl : pwlnet.sim.cached_engine_sim.CacheSimResult or None
        The RTL run (measured cycles, mismatches against the golden model), when one
        was asked for.
    board : pwlnet.host.CachedRun or None
        The board's run (:meth:`pwlnet.host.Device.run_cached`), when its answers were
        given; the golden model's are in :attr:`stream`.
    """

    hit: np.ndarray
    slot: np.ndarray
    hit_center: np.ndarray
    inputs: np.ndarray
    codes: np.ndarray
    outputs: np.ndarray
    full_codes: np.ndarray
    stream: cache_host.StreamResult
    lanes: int
    cycles_full: int
    cycles_hit: int | None
    lookup_latency: int
    rtl: object = None
    board: object = None

    @property
    def n(self) -> int:
        return int(len(self.hit))

    @property
    def hit_rate(self) -> float:
        return float(self.hit.mean()) if self.n else float("nan")

    @property
    def n_argmax_disagree(self) -> int:
        """Inputs whose cached answer has another argmax than the full quantized network."""
        return int((golden.argmax(self.codes) != golden.argmax(self.full_codes)).sum())

    @property
    def n_false_hits(self) -> int:
        """Hits whose float ReLU pattern differs from their entry's (must be 0)."""
        return self.stream.n_false_hits

    @property
    def max_code_diff(self) -> int:
        """Largest ``|cached - full|`` output code difference (hits only; misses are equal)."""
        return self.stream.max_code_diff

    @property
    def mean_cycles_without(self) -> float:
        """Engine cycles per inference without a cache: the network every time (analytic, exact)."""
        return float(self.cycles_full)

    @property
    def mean_cycles_with(self) -> float:
        """Mean engine cycles per inference with the cache (analytic, exact; see the module docs).

        A hit costs the entry's program plus the lookup latency, a miss the network plus
        the lookup latency.
        """
        hits = int(self.hit.sum())
        hit_cost = 0 if self.cycles_hit is None else self.cycles_hit
        total = hits * (hit_cost + self.lookup_latency) + (self.n - hits) * (self.cycles_full + self.lookup_latency)
        return total / self.n

    @property
    def speedup(self) -> float:
        return self.mean_cycles_without / self.mean_cycles_with


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_float_network(model: CompiledModel, onnx_path) -> ir.Network:
    """The float network ``model`` was compiled from, read from ``onnx_path`` and checked.

    Raises
    ------
    CacheRunError
        When no file is given (``None``: the message names ``--onnx`` and the file the
        model recorded), the file cannot be read, or its SHA-256 differs from the one the model
        recorded at compile time (radii from another network would give inexact hits).
    """
    from .onnx_import import load_onnx
    if onnx_path is None:
        raise CacheRunError("the cache needs the float network the model was compiled from, for the safe "
                            f"radii: give --onnx {(model.source or {}).get('onnx', 'MODEL.onnx')}")
    path = Path(onnx_path)
    if not path.is_file():
        raise CacheRunError(f"{path}: no such ONNX file")
    want = (model.source or {}).get("sha256")
    if want and _sha256(path) != want:
        raise CacheRunError(f"{path} is not the network this model was compiled from (its SHA-256 differs "
                            f"from the {model.source.get('onnx', 'ONNX file')!r} recorded in the model)")
    return load_onnx(path)


def _as_model(model_dir_or_model) -> CompiledModel:
    if isinstance(model_dir_or_model, CompiledModel):
        return model_dir_or_model
    if isinstance(model_dir_or_model, (str, os.PathLike)):
        return artifact.load(model_dir_or_model)
    raise TypeError(f"model must be a CompiledModel or a compiled-model directory, not {model_dir_or_model!r}")


def _as_blocks(model: CompiledModel, net):
    """Code-space blocks of the float network, whatever form it was given in."""
    if net is None:
        raise CacheRunError("the cache needs the float network the model was compiled from (for the safe "
                            "radii); give net= (a pwlnet.ir.Network or an ONNX path), or --onnx MODEL.onnx")
    if isinstance(net, (str, os.PathLike)):
        net = load_float_network(model, net)
    try:
        blocks = code_cache.code_blocks(model, net)
    except (TypeError, ValueError) as e:
        raise CacheRunError(f"float network: {e}") from None
    if blocks[0][0].shape[1] != model.input_dim or blocks[-1][0].shape[0] != model.output_dim:
        raise CacheRunError(f"the float network maps {blocks[0][0].shape[1]} inputs to {blocks[-1][0].shape[0]} "
                            f"outputs; the compiled model maps {model.input_dim} to {model.output_dim}")
    return blocks


def engine_cycles(model: CompiledModel, lanes: int, entry_layer=None) -> tuple:
    """``(network cycles, one-layer program cycles or None)`` of ``MLPEngine(model, lanes)``.

    The second figure is ``program_cycles(1)`` of an engine built with
    ``programs=[[entry_layer]]`` (program 0 is the network, extra programs count from 1).
    Both are the engine's exact analytic counts, read off its plan
    (:class:`pwlnet.hw.engine.plan.EnginePlan`; no hardware is built), not simulation results.
    """
    plan = EnginePlan(model, lanes, programs=[] if entry_layer is None else [[entry_layer]])
    # program 0 alone: a cached engine runs one inference at a time (no pair program)
    return plan.program_cycles(0), None if entry_layer is None else plan.program_cycles(1)


def run_cache(model_dir_or_model, x_float, entries, metric, *, policy="lru", net=None,
              lanes=DEFAULT_LANES, margin=code_cache.DEFAULT_MARGIN, simulator=None, target="generic",
              verbose=False, board=None) -> CacheRun:
    """Run float inputs through the hardware cache in order: the golden model, or the RTL too.

    Parameters
    ----------
    model_dir_or_model : CompiledModel or path
        The compiled model (full network, input quantizer, output scale).
    x_float : array_like, shape (N, d) or (N, *input_shape)
        Float inputs, in arrival order.
    entries : int
        Slots of the comparator bank.
    metric : {"l2", "linf", "l1"}
    policy : {"lru", "round_robin"}
        The host's slot choice on a miss (:func:`pwlnet.cache_host.run_stream`).
    net : pwlnet.ir.Network, list of blocks or path to ONNX
        The float network the model was compiled from; it gives the safe radii.  A path
        is checked against the model's recorded SHA-256.
    lanes : int
        Engine lanes ``P`` (of the cycle figures, and of the simulated engine).
    margin : float
        Relative shrink of each radius (:func:`pwlnet.code_cache.radius_bound`).
    simulator : {"verilator", "icarus"}, optional
        Also run the stream through the RTL of the cached engine on this simulator
        (:func:`pwlnet.sim.cached_engine_sim.simulate_cache`); the answers in the result are then
        the RTL's, :attr:`CacheRun.rtl` holds the measured cycles and the mismatches
        against the golden model, and the golden model keeps to the engine's slot
        format (entries that do not fit a slot are not written).
    target : {"generic", "ice40"}
        The simulated engine's target.
    verbose : bool
        Show the simulator's output.
    board : pwlnet.host.CachedRun, optional
        What a board (or the simulated board) answered for this stream:
        :meth:`pwlnet.host.Device.run_cached` with the same ``policy`` and ``margin`` on
        a cache of ``entries`` slots and ``metric``, engine of ``lanes`` lanes.  As with
        ``simulator``, the answers in the result are then the board's
        (:attr:`CacheRun.board`) and the golden model keeps to the engine's slot format;
        comparing the two is the caller's (``pwlnet run --cache``).

    Returns
    -------
    CacheRun
        Its cycle figures are the engine's exact analytic counts; measured ones are in
        :attr:`CacheRun.rtl` when a simulator ran.

    Raises
    ------
    CacheRunError
        No or a mismatched float network, no inputs, bad ``entries``/``metric``/``policy``
        or ``simulator``.
    pwlnet.golden.InputError
        Inputs of the wrong shape or with non-finite values.
    pwlnet.sim.runner.SimError
        An RTL build or run that failed (not a mismatch: those are in the result).
    """
    model = _as_model(model_dir_or_model)
    if isinstance(entries, bool) or not isinstance(entries, (int, np.integer)) or entries < 1:
        raise CacheRunError(f"entries must be a positive integer, not {entries!r}")
    if metric not in code_cache.METRICS:
        raise CacheRunError(f"metric must be one of {', '.join(code_cache.METRICS)}, not {metric!r}")
    if policy not in cache_host.POLICIES:
        raise CacheRunError(f"policy must be one of {', '.join(cache_host.POLICIES)}, not {policy!r}")
    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)) or lanes < 1:
        raise CacheRunError(f"lanes must be a positive integer, not {lanes!r}")
    if simulator is not None and simulator not in SIMULATORS:
        raise CacheRunError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator is not None and board is not None:
        raise CacheRunError("give a simulator or a board's run, not both")
    blocks = _as_blocks(model, net)
    q = golden.quantize_inputs(model, x_float)
    if len(q) == 0:
        raise CacheRunError("the input stream holds no rows")
    if board is not None and len(board.hit) != len(q):
        raise CacheRunError(f"the board's run has {len(board.hit)} answers for {len(q)} inputs")
    engine = simulator is not None or board is not None
    fmt = SlotFormat(model, int(lanes), metric) if engine else None
    res = cache_host.run_stream(model, blocks, q, int(entries), metric, policy, margin=margin, verify=True,
                                slot_format=fmt)
    hit, slot, out_codes, center_codes = res.hit, res.slot, res.outputs, res.center
    rtl = None
    if simulator is not None:
        from pwlnet.sim.cached_engine_sim import simulate_cache
        rtl = simulate_cache(model, blocks, q, int(entries), metric, policy, simulator=simulator, lanes=int(lanes),
                             target=target, margin=margin, verbose=verbose)
    if engine:
        ran = rtl if rtl is not None else board
        hit, slot, out_codes = ran.hit, ran.slot, ran.outputs
        # The center of each engine answer: the inputs whose entries the host wrote to that slot.
        center_codes = q.copy()
        in_slot = {}
        for t in range(len(q)):
            if hit[t]:
                center_codes[t] = in_slot.get(int(slot[t]), q[t])
            if ran.written[t] >= 0:
                in_slot[int(ran.written[t])] = q[t]
    centers = golden.dequantize_inputs(model, center_codes)
    hit_center = np.where(hit[:, None], centers, np.nan)

    # Any entry gives the program shape; make one at the first input if the stream wrote
    # none that survived (e.g. every entry uncacheable), so the figure is still defined.
    from .hw.comparator_bank import LOOKUP_LATENCY
    layer = None
    try:
        layer = code_cache.make_entry(model, blocks, q[0], metric, margin=margin).layer
    except code_cache.EntryError:
        pass
    cycles_full, cycles_hit = engine_cycles(model, int(lanes), layer)
    return CacheRun(hit=hit, slot=slot, hit_center=hit_center, inputs=golden.dequantize_inputs(model, q),
                    codes=out_codes, outputs=golden.dequantize_outputs(model, out_codes), full_codes=res.full,
                    stream=res, lanes=int(lanes), cycles_full=int(cycles_full),
                    cycles_hit=None if cycles_hit is None else int(cycles_hit), lookup_latency=LOOKUP_LATENCY,
                    rtl=rtl, board=board)


def check_result_path(path) -> Path:
    """``path`` as a :class:`~pathlib.Path` if :func:`save_result` can write there (not a
    directory, in a directory that exists and takes a new file); called before a long run,
    so that it does not end in this error."""
    from .files import OutputPathError, check_output_file
    try:
        return check_output_file(path)
    except OutputPathError as e:
        raise CacheRunError(str(e)) from None


def save_result(path, run: CacheRun) -> Path:
    """Write ``hit``, ``hit_center``, ``inputs`` and ``outputs`` to ``path`` (``.npz``), atomically.

    The arrays go to a temporary file in the same directory that then replaces ``path``,
    so an interrupted write never leaves a partial result under the final name.
    """
    path = check_result_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # Through a file object, so that numpy does not append ".npz" to the name.
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: getattr(run, k) for k in _NPZ_KEYS})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def add_cache_arguments(parser):
    """Add the ``pwlnet cache`` arguments to ``parser`` (the one definition of the CLI)."""
    from .cli_args import positive_int
    parser.add_argument("model_dir", metavar="DIR", help="compiled-model directory")
    parser.add_argument("--inputs", required=True, help=".npy of float inputs (N, *input_shape), in stream order")
    parser.add_argument("--entries", required=True, type=positive_int, help="cache slots N")
    parser.add_argument("--metric", required=True, choices=code_cache.METRICS,
                        help="ball metric of the comparator bank: l2, linf (no multiplier) or l1")
    parser.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                        help="the ONNX file DIR was compiled from (needed: the safe radii are the float "
                             "network's; checked against the SHA-256 recorded in DIR)")
    parser.add_argument("--policy", choices=cache_host.POLICIES, default="lru",
                        help="slot the host overwrites on a miss (default lru)")
    parser.add_argument("--lanes", type=positive_int, default=DEFAULT_LANES,
                        help=f"engine lanes P, of the cycle figures and the simulated engine (default {DEFAULT_LANES})")
    parser.add_argument("--simulator", choices=SIMULATORS, default=None,
                        help="run the RTL of the engine with the cache on this simulator, checked against "
                             "the golden model (the result file then holds the RTL's answers)")
    parser.add_argument("--out", required=True, metavar="RESULT.npz",
                        help="write hit, hit_center, inputs and outputs here")
    return parser


def cli_cache(args) -> int:
    """``pwlnet cache``: returns the exit status.

    0 on success; with ``--simulator``, 1 when the RTL disagreed with the golden model
    anywhere (the result file then holds the RTL's answers) and 2 when the simulation
    could not be built or run.
    """
    from .files import load_input_codes
    model = artifact.load(args.model_dir)
    net = load_float_network(model, args.onnx)
    x, _codes = load_input_codes(model, args.inputs)     # refused here, naming the file
    simulator = getattr(args, "simulator", None)
    check_result_path(args.out)     # before a simulation, not after it
    from pwlnet.sim.runner import SimError
    try:
        run = run_cache(model, x, args.entries, args.metric, policy=args.policy, net=net, lanes=args.lanes,
                        simulator=simulator)
    except golden.InputError as e:
        raise golden.InputError(f"{args.inputs}: {e}") from None
    except SimError as e:
        print(f"pwlnet cache: error: {simulator} simulation failed: {e}", file=sys.stderr)
        return 2
    save_result(args.out, run)
    hits = int(run.hit.sum())
    print(f"{run.n} inputs, {args.entries} entries, {args.metric}, {args.policy}: hit rate "
          f"{100 * run.hit_rate:.2f} % ({hits} hits, {run.n - hits} misses); argmax differs from the full "
          f"network on {run.n_argmax_disagree}; false hits {run.n_false_hits}")
    written = int((run.stream.written >= 0).sum())
    print(f"tie guard: {run.stream.shrunk} of the {written} entries the golden host wrote have a smaller bound "
          f"than their safe radius allows (a decision boundary or a near-tie in the ball)")
    if run.rtl is None:
        hit_cost = "n/a" if run.cycles_hit is None else f"{run.cycles_hit} + {run.lookup_latency}"
        print(f"mean cycles per inference (engine P={run.lanes}, analytic): without cache "
              f"{run.mean_cycles_without:.1f}, with cache {run.mean_cycles_with:.1f} (hit {hit_cost}, "
              f"miss {run.cycles_full} + {run.lookup_latency})")
        if run.stream.uncacheable:
            print(f"note: {run.stream.uncacheable} misses left no entry (their affine piece does not quantize)")
        return 0
    r = run.rtl

    def fmt_cycles(v):
        return "n/a" if np.isnan(v) else f"{v:.1f}"

    print(f"mean cycles per inference measured on {simulator} (engine P={run.lanes}, first input beat to last "
          f"output beat): {r.mean_cycles:.1f} (hits {fmt_cycles(r.mean_hit_cycles)}, misses "
          f"{fmt_cycles(r.mean_miss_cycles)}); engine occupancy: hit {r.hit_cycles}, network {r.engine_cycles} cycles")
    print(f"RTL counters: hits {r.hits}, misses {r.misses}; simulated in {r.run_s:.1f} s (build {r.build_s:.1f} s)")
    if r.uncacheable:
        print(f"note: {r.uncacheable} misses left no entry (their entry does not fit the engine's slots)")
    if not r.ok:
        counters = "agree" if (r.hits, r.misses) == (r.expected_hits, r.expected_misses) else "differ"
        print(f"pwlnet cache: error: the RTL disagrees with the golden model: {r.mismatches} mismatches "
              f"({int(r.bad.sum())} of {r.n} inferences differ, final counters {counters}); "
              f"{args.out} holds the RTL's answers", file=sys.stderr)
        for line in r.details:
            print(f"  {line}", file=sys.stderr)
        if r.run_dir:
            print(f"  run directory: {r.run_dir}", file=sys.stderr)
        return 1
    print(f"RTL and golden model agree on all {r.n} inferences and the counters")
    return 0
