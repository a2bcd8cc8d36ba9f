"""``python -m pwlnet.bench cache``: the hypersphere cache measured on real sensor streams.

Everything below comes from one command (``python -m pwlnet.bench cache``, or
``make bench-cache``), which writes a Markdown table, PNG plots and the 2-D picture:

* :func:`cache_table` -- for Daphnet (12 inputs) and BasicMotions (24 inputs), a
  12/24-64-64-C ReLU MLP is trained plainly and with the region margin
  (:mod:`pwlnet.margin`) at several radii ``gamma`` (in input codes, for the L-infinity and
  the L2 ball), with the same epochs and seed, and compiled at 8 bits.  Each data set's
  test stream at the sensor rate (:func:`pwlnet.data.stream`, hop 1: a new window at
  every sample) runs through the golden hardware cache
  (:func:`pwlnet.cache_run.run_cache`, host-filled, LRU, tie guard on) for every slot
  count ``N``: float and 8-bit test accuracy, hit rate, arg-max changes against the full
  quantized network, false hits (float pattern check), median bound of the written
  entries in input codes, mean engine cycles per inference with and without the cache
  (the engine's exact analytic counts, which the RTL runs reproduce), the speed-up,
  microseconds per inference at the cached build's clock, and the host link traffic
  that filling the entries costs (entry image bytes per inference).  Beside it, the hit
  rate of a cache *preloaded at build time* from the training stream and never written
  (:func:`pwlnet.cache_host.preload`; a standalone node without a host).
* :func:`margin_plots` -- hit rate and 8-bit accuracy against ``gamma``; histograms of
  the safe radius along the test streams, plain against region-trained.
* :func:`bank_cost_table` -- the comparator bank's iCE40UP5K cost after yosys synthesis
  (:func:`pwlnet.hw.synth_report.synth_ice40`, no DSP inference: the engine owns the
  UP5K's eight ``SB_MAC16``) for L2 against L-infinity at each slot count.
* :func:`cache_figure` -- a 2-D picture: small ReLU networks trained on a synthetic
  three-class task, plainly and with the region margin, their linear regions, a smooth
  path of inputs, the balls the cache stored (L2 ellipses -- circles in code units -- and
  L-infinity squares) and which points of the path hit.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["STREAMS", "HIDDEN", "ENTRIES", "BANK_METRICS", "MARGINS", "EPOCHS", "CLOCK_MHZ", "Trained",
           "train_models", "cache_table", "margin_plots", "bank_cost_table", "figure_model", "cache_figure",
           "add_bench_arguments", "cli_bench_cache", "main"]

#: Sensor streams measured (both low-dimensional: 12 and 24 features).
STREAMS = ("daphnet", "basicmotions")
#: Hidden layers of the measured networks.
HIDDEN = (64, 64)
#: Slot counts ``N``.
ENTRIES = (8, 16, 32)
#: Metrics the comparator bank implements in hardware.
BANK_METRICS = ("l2", "linf")
#: Region margins ``gamma`` (input codes) the networks are trained with, beside plain training.
MARGINS = (8.0, 16.0, 32.0, 64.0)
#: Training epochs per stream, for the plain and the region-trained networks alike (the
#: data sets' defaults, :data:`pwlnet.train.DEFAULT_EPOCHS`).
EPOCHS = {"daphnet": 50, "basicmotions": 100}
#: Clock of the cached iCEBreaker build (MHz) used for the microseconds per inference: the
#: last ``make bitstream BOARD=icebreaker CACHE=16`` (README).
CLOCK_MHZ = 42.0


def _radius_stats(run, metric):
    """``(median bound as a distance in input codes, share of entries with a bound > 0)``.

    Over the entries written during the stream.  A bound of 0 still hits the exact
    center (sensor streams repeat codes), so the share shows how many entries can hit
    anything else.
    """
    bounds = run.stream.bounds[run.stream.written >= 0].astype(np.float64)
    if bounds.size == 0:
        return float("nan"), float("nan")
    # l2 bounds are squared distances (the bank compares squares, no square root).
    med = float(np.median(np.sqrt(bounds) if metric == "l2" else bounds))
    return med, float(np.mean(bounds > 0))


@dataclasses.dataclass
class Trained:
    """One network of the table: how it was trained, its files and accuracies."""

    stream: str
    training: str            # "plain" or "margin"
    gamma: float | None
    metric: str | None       # the ball the margin was trained for
    onnx: Path
    model: object            # CompiledModel
    float_acc: float
    q8_acc: float

    @property
    def label(self) -> str:
        return "plain" if self.gamma is None else f"margin {self.gamma:g} ({self.metric})"


def train_models(tmp, streams=STREAMS, margins=MARGINS, metrics=BANK_METRICS, *, hidden=HIDDEN, epochs=None,
                 seed=0, log=sys.stderr) -> list:
    """Train and compile the plain network and one region-trained network per margin and metric."""
    from . import compile as pcompile, train
    out = []
    for name in streams:
        ep = EPOCHS if epochs is None else epochs
        ep = ep.get(name) if isinstance(ep, dict) else ep
        configs = [(None, None)] + [(g, m) for m in metrics for g in margins]
        for gamma, metric in configs:
            res = train.train(name, hidden, epochs=ep, seed=seed, verbose=False, region_margin=gamma,
                              region_metric=metric or "linf")
            stem = f"{name}-{'plain' if gamma is None else f'{metric}-{gamma:g}'}"
            path = train.export_onnx(res, Path(tmp) / f"{stem}.onnx")
            model = pcompile.compile_onnx(path, Path(tmp) / stem, calib=name, log=lambda *_: None)
            out.append(Trained(name, "plain" if gamma is None else "margin", gamma, metric, path, model,
                               res.float_test_accuracy, model.summary["quantized_accuracy"]))
            print(f"trained {stem}: float {100 * res.float_test_accuracy:.2f} %, "
                  f"8-bit {100 * out[-1].q8_acc:.2f} %", file=log)
    return out


def _preloaded_hit_rate(model, net, train_codes, test_codes, n, metric):
    """Hit rate of a cache filled at build time from ``train_codes`` and never written again."""
    from . import cache_host, code_cache
    cache = code_cache.HwCache(model, n, metric)
    for slot, entry in enumerate(cache_host.preload(model, net, train_codes, n, metric)):
        cache.write_entry(slot, entry)
    return float(cache.lookup(test_codes).hit.mean())


def cache_table(trained=None, entries=ENTRIES, metrics=BANK_METRICS, *, policy="lru", lanes=8,
                clock_mhz=CLOCK_MHZ, seed=0, out=sys.stdout, log=sys.stderr, tmp=None):
    """Measure the cache on each stream and network; print a Markdown table, return the rows.

    Parameters
    ----------
    trained : list of Trained, optional
        The networks (:func:`train_models`; trained here when omitted).  A network
        trained for one metric is measured with that metric; the plain network with
        every metric.
    entries : sequence of int
        Slot counts ``N``.
    metrics : sequence of str
    policy : {"lru", "round_robin"}
    lanes : int
        Engine lanes ``P`` of the cycle figures.
    clock_mhz : float
        Clock of the cached build, for the microseconds per inference.
    seed : int
    out, log : file
        Where the table and the progress lines go.

    Returns
    -------
    list of dict
    """
    from . import data, golden
    from .cache_run import run_cache
    from .hw.slot_format import SlotFormat
    from .onnx_import import load_onnx

    with tempfile.TemporaryDirectory() as own_tmp:
        if trained is None:
            trained = train_models(tmp or own_tmp, metrics=metrics, seed=seed, log=log)
        rows = []
        for t in trained:
            x, _ = data.stream(t.stream)
            net = load_onnx(t.onnx)
            model = t.model
            train_codes = golden.quantize_inputs(model, data.stream(t.stream, "train")[0])
            test_codes = golden.quantize_inputs(model, x)
            layers = "-".join(map(str, [model.input_dim, *[l.n_out for l in model.layers]]))
            for metric in metrics if t.metric is None else (t.metric,):
                image_bytes = SlotFormat(model, lanes, metric).image_bytes
                for n in entries:
                    run = run_cache(model, x, n, metric, policy=policy, net=net, lanes=lanes)
                    radius, nonzero = _radius_stats(run, metric)
                    writes = int((run.stream.written >= 0).sum())
                    rows.append({
                        "stream": t.stream, "inputs": run.n, "layers": layers, "training": t.label,
                        "gamma": t.gamma, "float": t.float_acc, "q8": t.q8_acc, "metric": metric, "entries": n,
                        "hit_rate": run.hit_rate,
                        "preload_hit_rate": _preloaded_hit_rate(model, net, train_codes, test_codes, n, metric),
                        "disagree": run.n_argmax_disagree, "false_hits": run.n_false_hits,
                        "radius": radius, "nonzero": nonzero,
                        "cycles_without": run.mean_cycles_without, "cycles_with": run.mean_cycles_with,
                        "cycles_hit": run.cycles_hit, "lookup": run.lookup_latency,
                        "us_without": run.mean_cycles_without / clock_mhz, "us_with": run.mean_cycles_with / clock_mhz,
                        "entry_bytes": image_bytes, "bytes_per_inference": writes * image_bytes / run.n,
                    })
                print(f"measured {t.stream} {t.label} {metric}", file=log)
    print_cache_table(rows, clock_mhz, out)
    return rows


def print_cache_table(rows, clock_mhz=CLOCK_MHZ, out=sys.stdout):
    """The Markdown table of :func:`cache_table`'s rows."""
    cols = ["stream (inputs)", "layers", "training", "float acc.", "8-bit acc.", "metric", "N",
            "hit rate (host-filled)", "hit rate (preloaded)", "argmax changes", "false hits",
            "median bound of written entries (codes)", "cycles without", "cycles with (hit + lookup)", "speed-up",
            f"µs/inference at {clock_mhz:g} MHz", "entry bytes/inference"]
    print("| " + " | ".join(cols) + " |", file=out)
    print("|" + "---|" * len(cols), file=out)
    for r in rows:
        cells = [f"{r['stream']} ({r['inputs']})", r["layers"], r["training"], f"{100 * r['float']:.2f} %",
                 f"{100 * r['q8']:.2f} %", r["metric"], r["entries"], f"{100 * r['hit_rate']:.1f} %",
                 f"{100 * r['preload_hit_rate']:.1f} %", r["disagree"], r["false_hits"], f"{r['radius']:.1f}",
                 f"{r['cycles_without']:.0f}", f"{r['cycles_with']:.1f} ({r['cycles_hit']} + {r['lookup']})",
                 f"{r['cycles_without'] / r['cycles_with']:.2f}x",
                 f"{r['us_without']:.2f} → {r['us_with']:.2f}", f"{r['bytes_per_inference']:.1f}"]
        print("| " + " | ".join(map(str, cells)) + " |", file=out)


def margin_plots(rows, trained, directory, *, entries=16, dpi=100):
    """Two PNGs in ``directory``: hit rate and 8-bit accuracy against the margin, and radius histograms.

    ``cache_margin.png``: per stream and metric, the host-filled and preloaded hit rate
    (``N = entries``) and the 8-bit test accuracy against ``gamma`` (plain training at 0).
    ``cache_radii.png``: per stream, the safe L-infinity radius (input codes) at every input
    of the test stream, plain against the largest L-infinity margin.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from . import data, golden, code_cache, regions
    from .onnx_import import load_onnx

    directory = Path(directory)
    streams = list(dict.fromkeys(r["stream"] for r in rows))
    fig, axes = plt.subplots(1, len(streams), figsize=(5.5 * len(streams), 4.2), squeeze=False)
    for ax, name in zip(axes[0], streams):
        acc_ax = ax.twinx()
        for metric, style in (("linf", "-"), ("l2", "--")):
            sel = [r for r in rows if r["stream"] == name and r["metric"] == metric and r["entries"] == entries]
            if not sel:
                continue
            sel.sort(key=lambda r: r["gamma"] or 0.0)
            g = [r["gamma"] or 0.0 for r in sel]
            ax.plot(g, [100 * r["hit_rate"] for r in sel], "o" + style, color="tab:blue",
                    label=f"hits, host-filled ({metric})")
            ax.plot(g, [100 * r["preload_hit_rate"] for r in sel], "s" + style, color="tab:green",
                    label=f"hits, preloaded ({metric})")
            acc_ax.plot(g, [100 * r["q8"] for r in sel], "^" + style, color="tab:red", label=f"8-bit acc. ({metric})")
        ax.set_xlabel("region margin gamma (input codes; 0 = plain training)")
        ax.set_ylabel(f"hit rate, N = {entries} (%)")
        acc_ax.set_ylabel("8-bit test accuracy (%)", color="tab:red")
        ax.set_ylim(0, 100)
        acc_ax.set_ylim(80, 100.5)
        ax.set_title(f"{name}, test stream at hop 1", fontsize=10)
        lines = ax.get_legend_handles_labels()
        more = acc_ax.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(directory / "cache_margin.png", dpi=dpi)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(streams), figsize=(5.5 * len(streams), 3.8), squeeze=False)
    for ax, name in zip(axes[0], streams):
        cands = [t for t in trained if t.stream == name and t.metric in (None, "linf")]
        plain = [t for t in cands if t.gamma is None]
        wide = sorted((t for t in cands if t.gamma is not None), key=lambda t: t.gamma)
        for t, colour in ((plain[0] if plain else None, "tab:gray"), (wide[-1] if wide else None, "tab:blue")):
            if t is None:
                continue
            blocks = code_cache.code_blocks(t.model, load_onnx(t.onnx))
            codes = golden.quantize_inputs(t.model, data.stream(name)[0]).astype(np.float64)
            r = regions.linearize_batch(blocks, codes).radii["linf"]
            ax.hist(np.clip(r, 0, 64), bins=64, range=(0, 64), alpha=0.6, color=colour,
                    label=f"{t.label}: median {np.median(r):.1f}")
        ax.set_xlabel("safe L-infinity radius at each stream input (input codes, clipped at 64)")
        ax.set_ylabel("inputs")
        ax.set_title(f"{name}", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "cache_radii.png", dpi=dpi)
    plt.close(fig)
    return [directory / "cache_margin.png", directory / "cache_radii.png"]


def bank_cost_table(dims=None, entries=ENTRIES, metrics=BANK_METRICS, *, code_bits=8, out=sys.stdout,
                    log=sys.stderr):
    """The comparator bank's iCE40UP5K resources after yosys; print a Markdown table, return the rows.

    ``dims`` maps a label to ``d`` (default: the streams' feature counts, 12 and 24).
    """
    from .hw.comparator_bank import ComparatorBank
    from .hw.synth_report import synth_ice40

    dims = dims or {"daphnet": 12, "basicmotions": 24}
    rows = []
    # One temporary tree for every run's Verilog and logs, so nothing is left in /tmp.
    with tempfile.TemporaryDirectory(prefix="pwlnet-bank-") as tmp:
        for label, d in dims.items():
            for n in entries:
                for metric in metrics:
                    # No DSP inference: on the board the engine's lanes take every SB_MAC16.
                    r = synth_ice40(ComparatorBank(n, d, code_bits, metric), dsp_inference=False,
                                    workdir=Path(tmp) / f"bank-{label}-{n}-{metric}")
                    r.pop("workdir")
                    rows.append({"stream": label, "d": d, "entries": n, "metric": metric, **r})
                    print(f"synthesised bank N={n} d={d} {metric}", file=log)
    print("| stream | d | N | metric | LUT4 | carry | FF | EBR | DSP |", file=out)
    print("|" + "---|" * 9, file=out)
    for r in rows:
        print(f"| {r['stream']} | {r['d']} | {r['entries']} | {r['metric']} | {r['lut']} | {r['carry']} | "
              f"{r['ff']} | {r['ebr']} | {r['dsp']} |", file=out)
    return rows


def figure_model(seed=0, hidden=(12, 12), n=1500, region_margin=None, metric="linf", epochs=300):
    """A small ReLU network trained on a synthetic 2-D, three-class task, and its compiled model.

    The task: a point's class is the 120-degree sector of its angle, twisted by its
    radius, which takes curved boundaries and so many linear regions at this size.
    Trained with :func:`pwlnet.train.train` (plainly, or with the region margin
    ``region_margin`` in input codes for the ``metric`` ball).

    Returns
    -------
    net : pwlnet.ir.Network
    model : pwlnet.artifact.CompiledModel
        8-bit, calibrated on the training points.
    """
    from . import data, train
    from .quantize import quantize

    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    angle = np.arctan2(x[:, 1], x[:, 0]) + 2.5 * np.hypot(x[:, 0], x[:, 1])
    y = np.floor((angle % (2 * np.pi)) / (2 * np.pi / 3)).astype(np.int64)
    ds = data.Dataset("figure toy", x, y, x, y, ("a", "b", "c"), ("x0", "x1"), "synthetic twisted sectors")
    res = train.train(ds, hidden, epochs=epochs, seed=seed, verbose=False, region_margin=region_margin,
                      region_metric=metric)
    net = res.model.to_ir()
    return net, quantize(net, x)


def _path(n=88):
    """A smooth curve of ``n`` points (88, like the original design's path).

    Spaced about 2.5 input codes apart, like a slowly moving sensor: the balls are a few
    codes wide, so a path that jumps further than that can never hit.
    """
    t = np.linspace(0, 1, n)
    return np.stack([-0.8 + 1.5 * t + 0.1 * np.sin(5 * t), 0.55 * np.sin(2.6 * np.pi * t) - 0.1], axis=1)


def _draw_panel(ax, net, model, pts, entries, metric, title):
    from matplotlib.patches import Ellipse, Rectangle
    import matplotlib.pyplot as plt
    from . import regions
    from .cache_run import run_cache

    lim = 1.0
    g = np.linspace(-lim, lim, 400)
    gx, gy = np.meshgrid(g, g)
    ev = regions.evaluate(net, np.stack([gx.ravel(), gy.ravel()], axis=1))
    pat = np.concatenate(ev.patterns, axis=1)
    _, region = np.unique(pat, axis=0, return_inverse=True)
    region = region.reshape(gx.shape)
    # Neighbouring regions must not look alike: shuffle ids before mapping to colours.
    perm = np.random.default_rng(1).permutation(region.max() + 1)
    shade = plt.get_cmap("tab20")(perm[region] % 20)
    shade[..., :3] = 0.55 + 0.45 * shade[..., :3]          # pastel, so the overlay reads
    edge = np.zeros(region.shape, dtype=bool)
    edge[:, 1:] |= region[:, 1:] != region[:, :-1]
    edge[1:, :] |= region[1:, :] != region[:-1, :]
    shade[edge] = (0.35, 0.35, 0.35, 1.0)
    scale = np.asarray(model.input_scale, dtype=np.float64)
    run = run_cache(model, pts, entries, metric, net=net)
    ax.imshow(shade, origin="lower", extent=(-lim, lim, -lim, lim), interpolation="nearest")
    ax.plot(pts[:, 0], pts[:, 1], color="0.2", lw=0.8, zorder=2)
    st = run.stream
    for t in np.flatnonzero(st.written >= 0):
        c, r = run.inputs[t], float(st.bounds[t])
        # The bank compares in input codes; one code is input_scale wide on each axis.
        if metric == "l2":
            patch = Ellipse(c, 2 * np.sqrt(r) * scale[0], 2 * np.sqrt(r) * scale[1], fill=False, ec="navy",
                            lw=1.0, zorder=3)
        else:
            w, h = 2 * r * scale[0], 2 * r * scale[1]
            patch = Rectangle(c - (w / 2, h / 2), w, h, fill=False, ec="navy", lw=1.0, zorder=3)
        ax.add_patch(patch)
    hit = run.hit
    ax.scatter(run.inputs[~hit, 0], run.inputs[~hit, 1], marker="x", s=28, c="crimson", lw=1.4, zorder=4,
               label=f"miss ({int((~hit).sum())}): new entry")
    ax.scatter(run.inputs[hit, 0], run.inputs[hit, 1], marker="o", s=22, c="limegreen", ec="black", lw=0.6,
               zorder=5, label=f"hit ({int(hit.sum())})")
    ax.set_title(f"{title}: {len(np.unique(pat, axis=0))} regions in view\nN = {entries}: hit rate "
                 f"{100 * run.hit_rate:.1f} %, false hits {run.n_false_hits}, argmax changes "
                 f"{run.n_argmax_disagree}", fontsize=9)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("input 0")
    ax.set_ylabel("input 1")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    return run


def cache_figure(path, *, entries=8, seed=0, margin=16.0, dpi=100):
    """Draw the 2-D example (plain and region-trained networks, L2 and L-infinity) to ``path``.

    Parameters
    ----------
    path : path
        The PNG to write (``docs/cache_example.png``).
    entries : int
        Cache slots ``N`` in every panel.
    seed : int
        Seeds the toy task and its training (:func:`figure_model`).
    margin : float
        Region margin (input codes) of the region-trained networks.
    dpi : int

    Returns
    -------
    dict
        ``{(training, metric): pwlnet.cache_run.CacheRun}`` for ``training`` in
        ``"plain"``, ``"margin"``.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = _path()
    fig, axes = plt.subplots(2, 2, figsize=(11, 11))
    runs = {}
    for row, (training, gamma) in enumerate((("plain", None), ("margin", margin))):
        for col, (metric, label) in enumerate((("l2", "L2 balls"), ("linf", "L-infinity balls"))):
            net, model = figure_model(seed, region_margin=gamma, metric=metric)
            what = "plain training" if gamma is None else f"region margin {gamma:g} codes ({metric})"
            runs[training, metric] = _draw_panel(axes[row, col], net, model, pts, entries, metric,
                                                 f"{label}, {what}")
    dims = "-".join(str(l.n_out) for l in model.layers)
    fig.suptitle(f"Hypersphere cache on 2-{dims} ReLU networks (8-bit codes, golden hardware model, tie guard on)\n"
                 f"colours: linear regions; line: an {len(pts)}-point input path; outlines: cached balls "
                 f"at their bounds", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return runs


def add_bench_arguments(parser):
    """Arguments of ``python -m pwlnet.bench cache`` (one definition, for the bench's subparser)."""
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="only draw the 2-D example to this PNG (docs/cache_example.png)")
    parser.add_argument("--out", default="docs", metavar="DIR",
                        help="directory for the table (cache_table.md) and the plots (default docs)")
    parser.add_argument("--entries", default=",".join(map(str, ENTRIES)), help="slot counts, comma-separated")
    parser.add_argument("--margins", default=",".join(f"{g:g}" for g in MARGINS),
                        help="region margins gamma in input codes, comma-separated")
    parser.add_argument("--streams", default=",".join(STREAMS), help="sensor streams, comma-separated")
    parser.add_argument("--clock-mhz", type=float, default=CLOCK_MHZ,
                        help=f"clock of the cached build for the microseconds per inference (default {CLOCK_MHZ:g})")
    from .cache_host import POLICIES
    parser.add_argument("--policy", choices=POLICIES, default="lru", help="slot the host overwrites on a miss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-synth", action="store_true", help="skip the comparator bank's yosys resource counts")
    return parser


def cli_bench_cache(args) -> int:
    """Run what ``args`` asks for: the figure alone, or the tables, plots and figure."""
    if args.figure:
        runs = cache_figure(args.figure, seed=args.seed)
        print(f"wrote {args.figure}: hit rate " + ", ".join(
            f"{t} {m} {100 * r.hit_rate:.1f} %" for (t, m), r in runs.items()))
        return 0
    out_dir = Path(args.out)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"{out_dir}: no such directory for the bench's table and plots")
    entries = tuple(int(v) for v in args.entries.split(","))
    margins = tuple(float(v) for v in args.margins.split(","))
    streams = tuple(args.streams.split(","))
    import io
    table = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        trained = train_models(tmp, streams, margins, seed=args.seed)
        rows = cache_table(trained, entries, policy=args.policy, clock_mhz=args.clock_mhz, out=table)
        pngs = margin_plots(rows, trained, out_dir)
    sys.stdout.write(table.getvalue())
    (out_dir / "cache_table.md").write_text(table.getvalue())
    runs = cache_figure(out_dir / "cache_example.png", seed=args.seed)
    print("\nwrote " + ", ".join(str(p) for p in [out_dir / "cache_table.md", *pngs, out_dir / "cache_example.png"]))
    print("2-D example hit rates: " + ", ".join(f"{t} {m} {100 * r.hit_rate:.1f} %" for (t, m), r in runs.items()))
    if not args.no_synth:
        print()
        bank_cost_table(entries=entries)
    return 0


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m pwlnet.bench_cache", description=__doc__.splitlines()[0])
    add_bench_arguments(p)
    return cli_bench_cache(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
