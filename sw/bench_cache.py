"""``python -m pwlnet.bench cache``: the hypersphere cache measured on real sensor streams.

Three things, all reproducible from one command:

* :func:`cache_table` -- ReLU MLPs with wide hidden layers are trained on Daphnet (12
  inputs) and BasicMotions (24 inputs), compiled at 8 bits, and each data set's test
  stream (:func:`pwlnet.data.stream`, windows in time order) runs through the golden
  hardware cache (:func:`pwlnet.cache_run.run_cache`) for every slot count and metric:
  hit rate, argmax decisions that differ from the full quantized network, false hits
  (float pattern check; must be 0), and mean engine cycles per inference with and
  without the cache.  The cycle figures are the engine's exact analytic counts, since
  the comparator bank is not yet wired into the engine.
* :func:`bank_cost_table` -- the comparator bank's iCE40UP5K cost after yosys synthesis
  (:func:`pwlnet.hw.synth_report.synth_ice40`, no DSP inference: the engine owns the
  UP5K's eight ``SB_MAC16``) for L2 against L-infinity at each slot count.
* :func:`cache_figure` -- a 2-D picture: a small ReLU network trained on a synthetic
  three-class task, its linear regions, a smooth path of inputs, the balls the cache
  stored (L2 ellipses -- circles in code units -- and L-infinity squares) and which
  points of the path hit.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["STREAMS", "HIDDEN", "ENTRIES", "BANK_METRICS", "cache_table", "bank_cost_table",
           "figure_model", "cache_figure", "add_bench_arguments", "cli_bench_cache", "main"]

#: Sensor streams measured (both low-dimensional: 12 and 24 features).
STREAMS = ("daphnet", "basicmotions")
#: Hidden layers of the measured networks: wide, as the cache wants.
HIDDEN = ((64, 64), (128, 128))
#: Slot counts ``N``.
ENTRIES = (8, 16, 32)
#: Metrics the comparator bank implements in hardware.
BANK_METRICS = ("l2", "linf")


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


def cache_table(streams=STREAMS, hidden=HIDDEN, entries=ENTRIES, metrics=BANK_METRICS, *, policy="lru",
                lanes=8, seed=0, out=sys.stdout, log=sys.stderr):
    """Measure the cache on each stream and network; print a Markdown table, return the rows.

    Parameters
    ----------
    streams : sequence of str
        Data sets with a time-ordered test stream.
    hidden : sequence of tuple of int
        Hidden widths of the networks trained (``pwlnet.train``, ``seed``, default epochs).
    entries : sequence of int
        Slot counts ``N``.
    metrics : sequence of str
    policy : {"lru", "round_robin"}
    lanes : int
        Engine lanes ``P`` of the cycle figures.
    seed : int
    out, log : file
        Where the table and the progress lines go.

    Returns
    -------
    list of dict
    """
    from . import compile as pcompile, data, train
    from .cache_run import run_cache
    from .onnx_import import load_onnx

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in streams:
            x, _ = data.stream(name)
            for h in hidden:
                spec = ",".join(map(str, h))
                res = train.train(name, h, seed=seed, verbose=False)
                path = Path(tmp) / f"{name}-{'x'.join(map(str, h))}.onnx"
                train.export_onnx(res, path)
                model = pcompile.compile_onnx(path, Path(tmp) / path.stem, calib=name, log=lambda *_: None)
                net = load_onnx(path)
                layers = "-".join(map(str, [model.input_dim, *h, model.output_dim]))
                for metric in metrics:
                    for n in entries:
                        run = run_cache(model, x, n, metric, policy=policy, net=net, lanes=lanes)
                        radius, nonzero = _radius_stats(run, metric)
                        rows.append({
                            "stream": name, "inputs": run.n, "layers": layers, "hidden": spec,
                            "q8": model.summary.get("quantized_accuracy", float("nan")),
                            "metric": metric, "entries": n, "hit_rate": run.hit_rate,
                            "disagree": run.n_argmax_disagree, "max_code_diff": run.max_code_diff,
                            "false_hits": run.n_false_hits, "radius": radius, "nonzero": nonzero,
                            "cycles_without": run.mean_cycles_without, "cycles_with": run.mean_cycles_with,
                            "cycles_hit": run.cycles_hit, "lookup": run.lookup_latency,
                        })
                print(f"measured {name} {layers}", file=log)
    cols = ["stream (inputs)", "layers", "8-bit acc.", "metric", "N", "hit rate", "argmax differs",
            "max code diff", "false hits", "median radius (codes)", "entries R > 0", "cycles without",
            "cycles with (hit)", "speed-up"]
    print("| " + " | ".join(cols) + " |", file=out)
    print("|" + "---|" * len(cols), file=out)
    for r in rows:
        cells = [f"{r['stream']} ({r['inputs']})", r["layers"], f"{100 * r['q8']:.2f} %", r["metric"], r["entries"],
                 f"{100 * r['hit_rate']:.2f} %", f"{r['disagree']} ({100 * r['disagree'] / r['inputs']:.2f} %)",
                 r["max_code_diff"], r["false_hits"], f"{r['radius']:.2f}", f"{100 * r['nonzero']:.1f} %",
                 f"{r['cycles_without']:.0f}", f"{r['cycles_with']:.1f} ({r['cycles_hit']} + {r['lookup']})",
                 f"{r['cycles_without'] / r['cycles_with']:.3f}x"]
        print("| " + " | ".join(map(str, cells)) + " |", file=out)
    return rows


def bank_cost_table(dims=None, entries=ENTRIES, metrics=BANK_METRICS, *, code_bits=8, out=sys.stdout,
                    log=sys.stderr):
    """The comparator bank's iCE40UP5K resources after yosys; print a Markdown table, return the rows.

    ``dims`` maps a label to ``d`` (default: the streams' feature counts, 12 and 24).
    """
    from .hw.cache import ComparatorBank
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


def figure_model(seed=0, hidden=(12, 12), n=1500):
    """A small ReLU network trained on a synthetic 2-D, three-class task, and its compiled model.

    The task: a point's class is the 120-degree sector of its angle, twisted by its
    radius, which takes curved boundaries and so many linear regions at this size.

    Returns
    -------
    net : pwlnet.ir.Network
    model : pwlnet.artifact.CompiledModel
        8-bit, calibrated on the training points.
    """
    from sklearn.neural_network import MLPClassifier
    from . import ir
    from .quantize import quantize

    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    angle = np.arctan2(x[:, 1], x[:, 0]) + 2.5 * np.hypot(x[:, 0], x[:, 1])
    y = np.floor((angle % (2 * np.pi)) / (2 * np.pi / 3)).astype(np.int64)
    # alpha = 0: sklearn's L2 penalty shrinks the weights of dead neurons towards 1e-200,
    # which no 8-bit weight scale can represent; without it they keep their initial values.
    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", alpha=0.0, max_iter=2000,
                        random_state=seed)
    clf.fit(x, y)
    layers = []
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        layers.append(ir.Dense(w.T, b, name=f"fc{i}"))     # sklearn stores (n_in, n_out)
        if i < len(clf.coefs_) - 1:
            layers.append(ir.Activation("relu", name=f"relu{i}"))
    net = ir.Network(layers, (2,), source="figure toy")
    return net, quantize(net, x)


def _path(n=88):
    """A smooth curve of ``n`` points (88, like the original design's path).

    Spaced about 2.5 input codes apart, like a slowly moving sensor: the balls are a few
    codes wide, so a path that jumps further than that can never hit.
    """
    t = np.linspace(0, 1, n)
    return np.stack([-0.8 + 1.5 * t + 0.1 * np.sin(5 * t), 0.55 * np.sin(2.6 * np.pi * t) - 0.1], axis=1)


def cache_figure(path, *, entries=8, seed=0, dpi=100):
    """Draw the 2-D example and save it to ``path`` (PNG).

    Parameters
    ----------
    path : path
        The PNG to write (``docs/cache_example.png``).
    entries : int
        Cache slots ``N`` in both panels.
    seed : int
        Seeds the toy task and its training (:func:`figure_model`).
    dpi : int

    Returns
    -------
    list of pwlnet.cache_run.CacheRun
        The L2 and the L-infinity run along the path, in panel order.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse, Rectangle
    from . import regions
    from .cache_run import run_cache

    net, model = figure_model(seed)
    pts = _path()
    lim = 1.0
    g = np.linspace(-lim, lim, 500)
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
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    runs = []
    for ax, metric, label in zip(axes, ("l2", "linf"), ("L2 balls", "L-infinity balls")):
        run = run_cache(model, pts, entries, metric, net=net)
        runs.append(run)
        ax.imshow(shade, origin="lower", extent=(-lim, lim, -lim, lim), interpolation="nearest")
        ax.plot(pts[:, 0], pts[:, 1], color="0.2", lw=0.8, zorder=2)
        st = run.stream
        for t in np.flatnonzero(st.written >= 0):
            c, r = run.inputs[t], float(st.bounds[t])
            # The bank compares in input codes; one code is input_scale wide on each axis.
            if metric == "l2":
                w, h = 2 * np.sqrt(r) * scale[0], 2 * np.sqrt(r) * scale[1]
                patch = Ellipse(c, w, h, fill=False, ec="navy", lw=1.0, zorder=3)
            else:
                w, h = 2 * r * scale[0], 2 * r * scale[1]
                patch = Rectangle(c - (w / 2, h / 2), w, h, fill=False, ec="navy", lw=1.0, zorder=3)
            ax.add_patch(patch)
        hit = run.hit
        ax.scatter(run.inputs[~hit, 0], run.inputs[~hit, 1], marker="x", s=28, c="crimson", lw=1.4, zorder=4,
                   label=f"miss ({int((~hit).sum())}): new entry")
        ax.scatter(run.inputs[hit, 0], run.inputs[hit, 1], marker="o", s=22, c="limegreen", ec="black", lw=0.6,
                   zorder=5, label=f"hit ({int(hit.sum())})")
        ax.set_title(f"{label}, N = {entries} entries: hit rate {100 * run.hit_rate:.1f} %, "
                     f"false hits {run.n_false_hits}", fontsize=10)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("input 0")
        ax.set_ylabel("input 1")
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    dims = "-".join(str(l.n_out) for l in model.layers)
    fig.suptitle(f"Hypersphere cache on a 2-{dims} ReLU network (8-bit codes, golden hardware model)\n"
                 f"colours: linear regions; line: an {len(pts)}-point input path; outlines: cached balls "
                 f"at their safe radii", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return runs


def add_bench_arguments(parser):
    """Arguments of ``python -m pwlnet.bench cache`` (one definition, for the bench's subparser)."""
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="only draw the 2-D example to this PNG (docs/cache_example.png)")
    parser.add_argument("--entries", default=",".join(map(str, ENTRIES)), help="slot counts, comma-separated")
    parser.add_argument("--hidden", default=";".join(",".join(map(str, h)) for h in HIDDEN),
                        help="hidden layer sets, ';'-separated, widths ','-separated (default 64,64;128,128)")
    from .hwcache import POLICIES
    parser.add_argument("--policy", choices=POLICIES, default="lru", help="slot the host overwrites on a miss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-synth", action="store_true", help="skip the comparator bank's yosys resource counts")
    return parser


def cli_bench_cache(args) -> int:
    """Run what ``args`` asks for: the figure alone, or the tables."""
    if args.figure:
        runs = cache_figure(args.figure, seed=args.seed)
        print(f"wrote {args.figure}: hit rate " + ", ".join(
            f"{m} {100 * r.hit_rate:.1f} %" for m, r in zip(("l2", "linf"), runs)))
        return 0
    entries = tuple(int(v) for v in args.entries.split(","))
    hidden = tuple(tuple(int(v) for v in h.split(",")) for h in args.hidden.split(";"))
    cache_table(hidden=hidden, entries=entries, policy=args.policy, seed=args.seed)
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
