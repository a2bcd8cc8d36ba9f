"""Pictures of a piecewise-linear network: ``python -m pwlnet.pictures --out docs/pictures``.

One command (also ``make pictures``) trains a small ReLU network on a 2-D toy task
(:func:`toy_network`: two moons, 2-16-16-2, fixed seed) and draws, as PNG:

``regions_output.png``
    the network's output (score difference of the two classes) as a heat map, with the
    decision boundary and its Betti numbers (:func:`pwlnet.polycomplex.decision_boundary`);
``regions_neurons.png``
    every hidden neuron's zero set (its bent hyperplane), coloured by layer: the edges
    of the polyhedral complex (:func:`pwlnet.polycomplex.poly_complex`);
``regions_complex.png``
    the linear regions, each filled in its own colour, with the complex's vertices;
``regions_cache.png``
    the software hypersphere cache (:class:`pwlnet.float_cache.RegionCache`) along a
    path of inputs: the stored L2 and L-infinity balls, hits and misses;
``regions_per_neuron.png``
    per hidden neuron, its output after ReLU over the plane and the contour where its
    pre-activation is zero;
``regions_radii.png`` and ``regions_hit_rate.png`` (any input dimension)
    histograms of the cache's safe radii (L2, L-infinity) over a data set, and the
    cache's hit rate against its size, for the toy network and for a random 8-input
    network.  The 8-bit hardware cache on the sensor streams has its own plots
    (``docs/cache_radii.png``, ``docs/cache_margin.png`` from ``make bench-cache``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import polycomplex, regions

__all__ = ["TOY_HIDDEN", "toy_dataset", "toy_network", "draw_all", "main"]

#: Hidden widths of the toy network.
TOY_HIDDEN = (16, 16)
_DPI = 80
_LAYER_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


def toy_dataset(seed=0, n=600):
    """Two interleaved half-moons (scikit-learn), as a :class:`pwlnet.data.Dataset`."""
    from sklearn.datasets import make_moons
    from . import data
    x, y = make_moons(n_samples=n, noise=0.15, random_state=seed)
    x = x.astype(np.float32)
    y = y.astype(np.int64)
    half = n // 2
    return data.Dataset("two moons", x[:half], y[:half], x[half:], y[half:], ("upper", "lower"), ("x0", "x1"),
                        "scikit-learn make_moons, noise 0.15")


def toy_network(seed=0, hidden=TOY_HIDDEN, epochs=150):
    """A 2-16-16-2 ReLU network trained on :func:`toy_dataset` (deterministic for a seed).

    Returns
    -------
    net : pwlnet.ir.Network
    ds : pwlnet.data.Dataset
    """
    from . import train
    ds = toy_dataset(seed)
    res = train.train(ds, hidden, epochs=epochs, seed=seed, verbose=False, threads=1)
    return res.model.to_ir(), ds


def _box(ds, pad=0.1):
    x = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = hi - lo
    return np.stack([lo - pad * span, hi + pad * span])


def _grid(box, n):
    gx, gy = np.meshgrid(np.linspace(box[0, 0], box[1, 0], n), np.linspace(box[0, 1], box[1, 1], n))
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], axis=1)


def _frame(ax, box, title):
    ax.set_xlim(box[0, 0], box[1, 0])
    ax.set_ylim(box[0, 1], box[1, 1])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("input 0", fontsize=8)
    ax.set_ylabel("input 1", fontsize=8)
    ax.tick_params(labelsize=7)


def _segments(ax, pts, pairs, **kw):
    from matplotlib.collections import LineCollection
    if len(pairs):
        ax.add_collection(LineCollection(pts[pairs], **kw))


def _edge_layers(pc):
    """Per edge of ``pc``: the hidden layer of a neuron it lies on, or -1 for a box edge."""
    starts = np.cumsum((0,) + pc.layer_sizes)
    u, v = pc.edges[:, 0], pc.edges[:, 1]
    on = (pc.vertex_signs[u] == 0) & (pc.vertex_signs[v] == 0)
    layer = np.full(len(pc.edges), -1)
    for l in range(len(pc.layer_sizes) - 1, -1, -1):
        hit = on[:, starts[l]:starts[l + 1]].any(axis=1)
        layer[hit] = l
    return layer


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return Path(path)


def draw_output(net, ds, pc, db, path):
    import matplotlib.pyplot as plt
    box = pc.box
    gx, gy, P = _grid(box, 300)
    y = regions.evaluate(net, P).outputs
    score = (y[:, 1] - y[:, 0]) if y.shape[1] == 2 else y[:, 0]
    lim = np.percentile(np.abs(score), 98)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    im = ax.imshow(score.reshape(gx.shape), origin="lower", extent=(box[0, 0], box[1, 0], box[0, 1], box[1, 1]),
                   cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="bilinear")
    fig.colorbar(im, ax=ax, shrink=0.8, label="score 1 - score 0")
    ax.scatter(ds.x_test[:, 0], ds.x_test[:, 1], c=ds.y_test, cmap="coolwarm", s=5, lw=0, alpha=0.6)
    _segments(ax, db.points, db.segments, colors="k", linewidths=2.0)
    _frame(ax, box, f"output of the 2-{'-'.join(map(str, pc.layer_sizes))}-{y.shape[1]} network; "
                    f"decision boundary (black):\nb0 = {db.betti[0]} piece(s), b1 = {db.betti[1]} loop(s) "
                    f"in the box")
    return _save(fig, path)


def draw_neurons(pc, db, path):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    layer = _edge_layers(pc)
    handles = []
    for l in range(len(pc.layer_sizes)):
        col = _LAYER_COLOURS[l % len(_LAYER_COLOURS)]
        _segments(ax, pc.vertices, pc.edges[layer == l], colors=col, linewidths=1.2 if l == 0 else 0.9)
        handles.append(Line2D([], [], color=col, label=f"layer {l + 1} neurons ({pc.layer_sizes[l]})"))
    _segments(ax, pc.vertices, pc.edges[layer < 0], colors="0.6", linewidths=0.8)
    _segments(ax, db.points, db.segments, colors="k", linewidths=2.2, linestyles="--")
    handles.append(Line2D([], [], color="k", ls="--", lw=2, label="decision boundary"))
    ax.legend(handles=handles, fontsize=7, loc="lower left", framealpha=0.9)
    _frame(ax, pc.box, "every hidden neuron's zero set (bent hyperplane), by layer")
    return _save(fig, path)


def draw_complex(pc, path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    rng = np.random.default_rng(3)
    cols = plt.get_cmap("tab20")(rng.permutation(len(pc.region_patterns)) % 20)
    cols[:, :3] = 0.45 + 0.55 * cols[:, :3]
    polys = [pc.region_polygon(r) for r in range(len(pc.region_patterns))]
    ax.add_collection(PolyCollection(polys, facecolors=cols, edgecolors="0.25", linewidths=0.4))
    ax.scatter(pc.vertices[:, 0], pc.vertices[:, 1], s=3, c="k", lw=0)
    c = pc.counts()
    _frame(ax, pc.box, f"linear regions: {c['regions']} regions, {c['edges']} edges, {c['vertices']} vertices\n"
                       f"(the polyhedral complex within the box)")
    return _save(fig, path)


def _path(box, n=88):
    t = np.linspace(0, 1, n)
    lo, hi = box[0], box[1]
    u = 0.12 + 0.76 * t
    v = 0.5 + 0.28 * np.sin(2.2 * np.pi * t)
    return np.stack([lo[0] + u * (hi[0] - lo[0]), lo[1] + v * (hi[1] - lo[1])], axis=1)


def draw_cache(net, pc, path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Circle, Rectangle
    from .float_cache import RegionCache
    pts = _path(pc.box)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.4))
    for ax, metric, name in ((axes[0], "l2", "L2 balls"), (axes[1], "linf", "L-infinity balls")):
        ax.add_collection(LineCollection(pc.vertices[pc.edges], colors="0.75", linewidths=0.5))
        cache = RegionCache(net, metric)
        _, hit = cache.predict(pts)
        for s in cache.slots():
            c, r, _, _ = cache.entry(s)
            ax.add_patch(Circle(c, r, fill=False, ec="navy", lw=0.9) if metric == "l2"
                         else Rectangle(c - r, 2 * r, 2 * r, fill=False, ec="navy", lw=0.9))
        ax.plot(pts[:, 0], pts[:, 1], color="0.3", lw=0.7)
        ax.scatter(*pts[~hit].T, marker="x", s=22, c="crimson", lw=1.2, label=f"miss ({int((~hit).sum())}): new entry")
        ax.scatter(*pts[hit].T, marker="o", s=16, c="limegreen", ec="k", lw=0.5, label=f"hit ({int(hit.sum())})")
        ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
        _frame(ax, pc.box, f"{name}: hit rate {100 * hit.mean():.1f} % on an {len(pts)}-point path\n"
                           f"(float cache, grey: region edges)")
    return _save(fig, path)


def draw_per_neuron(net, pc, path, n=120):
    import matplotlib.pyplot as plt
    box = pc.box
    gx, gy, P = _grid(box, n)
    ev = regions.evaluate(net, P)
    z = np.concatenate(ev.pre_activations, axis=1)
    cols = 8
    rows = int(np.ceil(z.shape[1] / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.45 * rows + 0.4))
    starts = np.cumsum((0,) + pc.layer_sizes)
    ext = (box[0, 0], box[1, 0], box[0, 1], box[1, 1])
    for j, ax in enumerate(np.ravel(axes)):
        ax.set_xticks([])
        ax.set_yticks([])
        if j >= z.shape[1]:
            ax.axis("off")
            continue
        l = int(np.searchsorted(starts, j, side="right") - 1)
        zz = z[:, j].reshape(gx.shape)
        ax.imshow(np.maximum(zz, 0), origin="lower", extent=ext, cmap="viridis", interpolation="nearest")
        if zz.min() < 0 < zz.max():
            ax.contour(gx, gy, zz, levels=[0], colors=_LAYER_COLOURS[l % len(_LAYER_COLOURS)], linewidths=1.2)
        ax.set_title(f"L{l + 1} n{j - starts[l]}", fontsize=7)
    fig.suptitle("each hidden neuron: output after ReLU (colour, dark = 0) and its zero contour (line, by layer)",
                 fontsize=8)
    return _save(fig, path)


def _loop(lo, hi, n, turns, rng, d):
    """``turns`` passes round one random smooth closed curve in the box: a stream that comes back."""
    t = np.linspace(0, turns, n, endpoint=False)[:, None]
    k = np.arange(1, 4)[None, :, None]
    a, b = rng.normal(0, 1, (2, 1, 3, d)) / k
    c = (a * np.sin(2 * np.pi * k * t[:, :, None]) + b * np.cos(2 * np.pi * k * t[:, :, None])).sum(axis=1)
    c = (c - c.min(axis=0)) / (c.max(axis=0) - c.min(axis=0))
    return lo + (0.1 + 0.8 * c) * (hi - lo)


def _cases(net, ds):
    """(label, network, data set for the radii, stream for the hit rate) of the any-dimension plots.

    The streams go four times round a closed curve (375 inputs a turn): a cache that holds
    one turn's entries hits from the second turn on, a smaller LRU cache thrashes.
    """
    big = polycomplex.random_network((8, 32, 32, 3), seed=1)
    rng = np.random.default_rng(2)
    box = _box(ds)
    return [("2-16-16-2 toy (two moons test set / a closed curve)", net, ds.x_test,
             _loop(box[0], box[1], 1500, 4, rng, 2)),
            ("random 8-32-32-3 (normal inputs / a closed curve)", big, rng.normal(0, 1, (1500, 8)),
             _loop(-1.5 * np.ones(8), 1.5 * np.ones(8), 1500, 4, rng, 8))]


def draw_radii(cases, path):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 3.6))
    for ax, (label, net, x, _) in zip(np.ravel(axes), cases):
        st = polycomplex.pattern_statistics(net, x)
        for m, name, col in (("l2", "L2", "tab:blue"), ("linf", "L-infinity", "tab:orange")):
            r = st["radii"][m]
            r = r[np.isfinite(r) & (r > 0)]
            bins = np.logspace(np.log10(r.min()), np.log10(r.max()), 30)
            ax.hist(r, bins=bins, alpha=0.6, color=col, label=f"{name}: median {np.median(r):.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("safe radius (input units)", fontsize=8)
        ax.set_ylabel("inputs", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        ax.set_title(f"{label}\n{st['n_points']} inputs, {st['n_patterns']} distinct activation patterns",
                     fontsize=8)
    return _save(fig, path)


def draw_hit_rate(cases, path, sizes=(1, 4, 16, 32, 64, 128, 256, 512)):
    import matplotlib.pyplot as plt
    from .float_cache import RegionCache
    fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 3.6))
    rates = {}
    for ax, (label, net, _, stream) in zip(np.ravel(axes), cases):
        for m, name, col in (("l2", "L2", "tab:blue"), ("linf", "L-infinity", "tab:orange")):
            hr = []
            for n in sizes:
                _, hit = RegionCache(net, m, capacity=n, policy="lru").predict(stream)
                hr.append(100 * hit.mean())
            rates[label, m] = hr
            ax.plot(sizes, hr, "o-", color=col, label=name, ms=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cache entries (LRU)", fontsize=8)
        ax.set_ylabel("hit rate (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        ax.set_title(f"{label}\n{len(stream)}-input stream, float cache", fontsize=8)
    _save(fig, path)
    return rates


def draw_all(out, seed=0):
    """Train the toy network and draw every picture into the directory ``out``; return the paths."""
    import matplotlib
    matplotlib.use("Agg")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net, ds = toy_network(seed)
    pc = polycomplex.poly_complex(net, _box(ds))
    db = polycomplex.decision_boundary(pc)
    paths = [draw_output(net, ds, pc, db, out / "regions_output.png"),
             draw_neurons(pc, db, out / "regions_neurons.png"),
             draw_complex(pc, out / "regions_complex.png"),
             draw_cache(net, pc, out / "regions_cache.png"),
             draw_per_neuron(net, pc, out / "regions_per_neuron.png")]
    cases = _cases(net, ds)
    paths.append(draw_radii(cases, out / "regions_radii.png"))
    rates = draw_hit_rate(cases, out / "regions_hit_rate.png")
    paths.append(out / "regions_hit_rate.png")
    c = pc.counts()
    print(f"toy network: {c['regions']} regions, {c['edges']} edges, {c['vertices']} vertices, "
          f"decision boundary b0 = {db.betti[0]}, b1 = {db.betti[1]}")
    for (label, m), hr in rates.items():
        print(f"hit rate {m:4s} {label}: " + ", ".join(f"{v:.1f}" for v in hr))
    return paths


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m pwlnet.pictures", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/pictures", help="directory for the PNGs (default docs/pictures)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for path in draw_all(args.out, args.seed):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
