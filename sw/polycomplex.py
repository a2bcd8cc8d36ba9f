"""The polyhedral complex of a ReLU network on a 2-D or 3-D input box.

A ReLU MLP cuts its input space into convex cells on each of which every hidden neuron
keeps one sign.  This module finds, within a box, the *vertices* of that complex with
their sign sequences, the *edges* between them, and the *regions* (full-dimensional
cells) with their on/off patterns and a point inside each; for 2-D inputs it also gives
the Betti numbers of the decision boundary.  For any input dimension,
:func:`pattern_statistics` counts the distinct patterns met by a stream of inputs and
summarises the hypersphere cache's safe radii (:mod:`pwlnet.regions`) over it.

Method
------
The idea is the layer-by-layer one of Masden, "Algorithmic Determination of the
Combinatorial Structure of the Linear Regions of ReLU Neural Networks": a neuron of
layer 1 is a true hyperplane; a neuron of layer ``k`` is a hyperplane inside each cell
of the complex of layers ``< k`` (its pre-activation is affine there) and *bends* where
it meets that complex.  So the complex is built one neuron at a time.  Each cell is
kept as its vertices, and each vertex carries the set of *labels* of the hyperplanes
it lies on (hidden neurons, the ``2 d`` faces of the box, and for the decision boundary
the output's hyperplanes).  Cutting a cell with the new neuron's affine function
``z`` (its pre-activation with the cell's pattern frozen):

* ``z`` is evaluated at the cell's vertices; vertices with ``|z| <= REL_TOL * m`` (``m``
  the magnitude ``|A| |x| + |c|`` of the terms summed) lie on the hyperplane and get
  its label;
* if ``z`` keeps one sign the cell is not cut: that sign is the neuron's bit in the
  cell's pattern;
* otherwise the candidate new vertices are the crossings of the hyperplane with the
  cell's edges, and a crossing is kept only on an edge whose end points have opposite
  signs -- the consistency test, which leaves exactly the points of the bent
  hyperplane that are vertices of the refined complex.  A new vertex's labels are the
  labels its edge's end points share, plus the neuron's.  The two children are the
  non-negative and the non-positive vertices plus the new ones.

Two vertices of a convex cell are joined by an edge iff the labels they share define a
face holding just the two of them (at least ``d - 1`` shared labels): a combinatorial
test that needs no special case for degenerate positions (several hyperplanes through
one point, duplicate neurons, a neuron touching a cell along an edge).

After the last hidden layer the copies of each vertex in the cells that share it are
merged by their *sign sequence* -- per hidden neuron ``-1``, ``0`` (on its bent
hyperplane) or ``+1`` from a float64 forward pass at the vertex, with ``0`` forced for
the vertex's labels -- and the box-face signs: the set of points of one sign sequence
is convex, so the sign sequence names a cell of the complex uniquely.

Tolerance
---------
Everything is float64.  A value ``z`` at a point is taken as zero when ``|z| <=
REL_TOL * m`` with ``REL_TOL = 1e-9`` and ``m`` the sum of the absolute values of the
terms of ``z`` (the scale of its rounding error, as :func:`pwlnet.regions.evaluate`
reports it).  Float64 rounds at about ``1e-16`` relative, so this margin is wide; the
price is that features of the complex thinner than about ``1e-9`` of the input scale
are merged.

Decision boundary and its Betti numbers (2-D)
---------------------------------------------
For one output ``f`` the decision boundary is its zero set ``{x in box : f(x) = 0}``;
for several outputs it is the set of points where the largest output is reached by at
least two outputs (where the arg-max changes).  An output that is zero, or a tie that
holds, on a whole region is not met by trained networks and is not handled (the
region's outline would be counted as boundary).  Within each region the outputs are affine, so
the boundary is a union of segments: the regions are cut once more by ``f`` (or by
every ``f_i - f_j``), and an edge of that refinement lying on such a line belongs to
the boundary when its midpoint ties the largest output.  The boundary is then a graph
(a 1-dimensional complex) and its Betti numbers follow from union-find: ``b0`` =
connected pieces, ``b1`` = independent loops = ``E - V + b0``.  A piece running from
box face to box face counts in ``b0`` only.

The box
-------
Its faces act as ``2 d`` extra hyperplanes.  :func:`default_box` gives the model's
calibration range when it records one (a compiled model's input code range, or the
training data the ONNX model names in its metadata), else ``[-1, 1]`` per axis.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time

import numpy as np

from . import ir, regions

__all__ = ["REL_TOL", "MAX_DIM", "PolyComplex", "DecisionBoundary", "RegionsError", "default_box", "parse_box", "poly_complex",
           "decision_boundary", "betti_numbers", "pattern_statistics", "random_network", "bench",
           "add_regions_arguments", "cli_regions", "main"]

#: Relative tolerance of every "is this value zero" decision (see the module notes).
REL_TOL = 1e-9
#: Largest input dimension the complex is built for.
MAX_DIM = 3


class RegionsError(ValueError):
    """A network, box or input set the region analysis cannot take."""


# --------------------------------------------------------------------------- helpers

def _blocks(net, where="network"):
    """float64 blocks of a ReLU MLP; RegionsError naming ``where`` otherwise."""
    if isinstance(net, ir.Network):
        for _, act in net.blocks():
            if act is not None and act.kind != "relu":
                what = "a LERP table" if act.kind == "lerp" else repr(act.kind)
                raise RegionsError(f"{where}: activation {act.name!r} is {what}, not a ReLU; "
                                   f"linear regions are computed for ReLU networks only")
    try:
        return regions.as_blocks(net)
    except (TypeError, ValueError) as e:
        msg = str(e)
        raise RegionsError(msg if msg.startswith(str(where)) else f"{where}: {msg}") from None


def _is_zero(vals, mags):
    return np.abs(vals) <= REL_TOL * mags + 1e-300


def _edges(labels, d):
    """Vertex pairs of one convex cell joined by an edge (see the module notes)."""
    k = len(labels)
    out = []
    for i in range(k):
        li = labels[i]
        for j in range(i + 1, k):
            common = li & labels[j]
            if len(common) < d - 1:
                continue
            holders = 0
            for w in range(k):
                if common <= labels[w]:
                    holders += 1
                    if holders > 2:
                        break
            if holders == 2:
                out.append((i, j))
    return out


def _cut(X, L, A, c, label_ids, d):
    """Cut the cell ``(X, L)`` by the hyperplanes ``A[j] x + c[j] = 0`` one after another.

    Returns a list of ``(X, L, side)`` children, ``side`` an int8 array of the sign
    (+1 / -1, 0 for a neuron constant zero on the cell) of every function on the child.
    """
    n = len(c)
    vals = X @ A.T + c
    mags = np.abs(X) @ np.abs(A).T + np.abs(c)
    zero = _is_zero(vals, mags)
    pos = (vals > 0) & ~zero
    neg = (vals < 0) & ~zero
    crossing = pos.any(axis=0) & neg.any(axis=0)
    side = np.where(pos.any(axis=0), 1, np.where(neg.any(axis=0), -1, 0)).astype(np.int8)
    L = list(L)
    for j in np.flatnonzero(zero.any(axis=0) & ~crossing):   # touching, not cutting
        lab = label_ids[j]
        for v in np.flatnonzero(zero[:, j]):
            L[v] = L[v] | {lab}
    pieces = [(X, L, side)]
    for j in np.flatnonzero(crossing):
        lab = label_ids[j]
        nxt = []
        for Xp, Lp, sp in pieces:
            v = Xp @ A[j] + c[j]
            z = _is_zero(v, np.abs(Xp) @ np.abs(A[j]) + abs(c[j]))
            p = (v > 0) & ~z
            q = (v < 0) & ~z
            if z.any():
                Lp = [l | {lab} if zz else l for l, zz in zip(Lp, z)]
            if not (p.any() and q.any()):
                s2 = sp.copy()
                s2[j] = 1 if p.any() else (-1 if q.any() else 0)
                nxt.append((Xp, Lp, s2))
                continue
            newX, newL = [], []
            for a, b in _edges(Lp, d):
                if (p[a] and q[b]) or (q[a] and p[b]):
                    t = v[a] / (v[a] - v[b])
                    newX.append(Xp[a] + t * (Xp[b] - Xp[a]))
                    newL.append((Lp[a] & Lp[b]) | {lab})
            newX = np.array(newX).reshape(-1, d)
            for keep, sgn in ((p | z, 1), (q | z, -1)):
                idx = np.flatnonzero(keep)
                s2 = sp.copy()
                s2[j] = sgn
                nxt.append((np.concatenate([Xp[idx], newX]), [Lp[i] for i in idx] + newL, s2))
        pieces = nxt
    return pieces


@dataclasses.dataclass
class _Cell:
    X: np.ndarray         # (k, d) vertices
    L: list               # k frozensets of labels
    bits: list            # per hidden layer so far, bool array of the on/off pattern
    G: np.ndarray         # affine map input -> current layer's input: h = G x + a
    a: np.ndarray


def _box_cell(lo, hi, n_hidden):
    d = len(lo)
    X, L = [], []
    for corner in itertools.product((0, 1), repeat=d):
        X.append([hi[i] if corner[i] else lo[i] for i in range(d)])
        L.append(frozenset(n_hidden + 2 * i + corner[i] for i in range(d)))
    return _Cell(np.array(X, dtype=np.float64), L, [], np.eye(d), np.zeros(d))


def _progress(total, desc, enabled):
    """A tqdm bar on stderr when asked for, shown only for runs longer than half a second."""
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="cell", file=sys.stderr, leave=False, delay=0.5)


def _refine_layer(cells, w, b, label_base, d, bar=None):
    """Cut every cell by the neurons ``w, b`` of one layer; new cells with their side signs."""
    out = []
    for i, cell in enumerate(cells):
        A = w @ cell.G
        c = w @ cell.a + b
        for X, L, side in _cut(cell.X, cell.L, A, c, range(label_base, label_base + len(b)), d):
            out.append((cell, X, L, side, A, c))
        if bar is not None and i % 64 == 63:
            bar.update(64)
    if bar is not None:
        bar.close()
    return out


# --------------------------------------------------------------------------- the complex

@dataclasses.dataclass(frozen=True, eq=False)
class PolyComplex:
    """The polyhedral complex of a ReLU network within a box.

    Attributes
    ----------
    box : numpy.ndarray, shape (2, d)
        Lower and upper corner.
    vertices : numpy.ndarray, shape (V, d), float64
    vertex_signs : numpy.ndarray, shape (V, n_hidden), int8
        Per hidden neuron (layers concatenated in order): ``-1`` off, ``0`` on its bent
        hyperplane, ``+1`` on.
    vertex_box : numpy.ndarray, shape (V, 2 d), int8
        ``0`` on box face ``2 i`` (lower, axis ``i``) or ``2 i + 1`` (upper), ``+1`` off it.
    edges : numpy.ndarray, shape (E, 2), int64
        Vertex index pairs, each edge once, smaller index first.
    region_patterns : numpy.ndarray, shape (R, n_hidden), bool
        The on/off pattern of each region (pre-activation ``> 0``).
    region_points : numpy.ndarray, shape (R, d)
        A point inside each region (the mean of its vertices).
    region_vertices : list of numpy.ndarray
        Per region, the indices of its vertices.
    layer_sizes : tuple of int
        Hidden widths.
    seconds : float
        Time taken to build the complex.
    """

    box: np.ndarray
    vertices: np.ndarray
    vertex_signs: np.ndarray
    vertex_box: np.ndarray
    edges: np.ndarray
    region_patterns: np.ndarray
    region_points: np.ndarray
    region_vertices: list
    layer_sizes: tuple
    seconds: float
    _cells: list = dataclasses.field(repr=False, default_factory=list)
    _blocks: list = dataclasses.field(repr=False, default_factory=list)

    @property
    def dim(self) -> int:
        return self.vertices.shape[1]

    @property
    def n_hidden(self) -> int:
        return int(sum(self.layer_sizes))

    def counts(self) -> dict:
        """``{"vertices": V, "edges": E, "regions": R}``."""
        return {"vertices": len(self.vertices), "edges": len(self.edges), "regions": len(self.region_patterns)}

    def region_polygon(self, r):
        """2-D: region ``r``'s vertices in counter-clockwise order (for drawing)."""
        P = self.vertices[self.region_vertices[r]]
        if self.dim != 2:
            raise RegionsError("region polygons are drawn for 2-D complexes only")
        c = P.mean(axis=0)
        return P[np.argsort(np.arctan2(P[:, 1] - c[1], P[:, 0] - c[0]))]


def parse_box(text, d=None):
    """``"LO,HI"`` (same on every axis) or ``"LO0,HI0,LO1,HI1,..."`` as a ``(2, d)`` array."""
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise RegionsError(f"box must be LO,HI or LO0,HI0,LO1,HI1,... numbers, not {text!r}") from None
    if len(vals) == 2 and d is not None:
        vals = vals * d
    if len(vals) % 2 or not vals or (d is not None and len(vals) != 2 * d):
        raise RegionsError(f"box {text!r} must give LO,HI or one LO,HI pair per input ({d} inputs)")
    box = np.array(vals, dtype=np.float64).reshape(-1, 2).T
    return _check_box(box, box.shape[1])


def _check_box(box, d):
    box = np.asarray(box, dtype=np.float64)
    if box.shape == (2,):
        box = np.repeat(box[:, None], d, axis=1)
    if box.shape != (2, d):
        raise RegionsError(f"box must have shape (2, {d}) (lower and upper corner), not {box.shape}")
    if not np.all(np.isfinite(box)) or np.any(box[1] <= box[0]):
        raise RegionsError(f"box must be finite with every upper bound above its lower bound, not "
                           f"{box.tolist()}")
    return box


def default_box(net, compiled=None):
    """The box the complex is built in when none is given, and where it comes from.

    Parameters
    ----------
    net : pwlnet.ir.Network or blocks
    compiled : pwlnet.artifact.CompiledModel, optional
        Its input code range, mapped back to floats, is the calibration range exactly.

    Returns
    -------
    box : numpy.ndarray, shape (2, d)
    provenance : str
    """
    d = _blocks(net)[0][0].shape[1]
    if compiled is not None:
        from . import fixedpoint as fx
        lo_code, hi_code = fx.signed_range(compiled.input_bits)
        s = np.asarray(compiled.input_scale, dtype=np.float64)
        z = np.asarray(compiled.input_zero_point, dtype=np.float64)
        return np.stack([(lo_code - z) * s, (hi_code - z) * s]), "the compiled model's input code range"
    meta = getattr(net, "metadata", None) or {}
    if meta.get("pwlnet.data_file") or meta.get("pwlnet.dataset"):
        from .compile import load_calibration
        try:
            x = np.asarray(load_calibration(None, meta)[0], dtype=np.float64).reshape(-1, d)
        except (ValueError, OSError) as e:
            raise RegionsError(f"{getattr(net, 'source', '') or 'network'}: cannot load the calibration data "
                               f"it records ({e}); give the box with --box LO,HI") from None
        lo, hi = x.min(axis=0), x.max(axis=0)
        flat = hi - lo <= 1e-12 * np.maximum(1.0, np.abs(lo))
        hi = np.where(flat, lo + 1.0, hi)
        what = meta.get("pwlnet.data_file") or meta.get("pwlnet.dataset")
        return np.stack([lo, hi]), f"the calibration range of {what!r} recorded in the model"
    return np.stack([-np.ones(d), np.ones(d)]), "[-1, 1] on every axis (the model records no calibration data)"


def _split_blocks(blocks):
    hidden = [(w, b) for w, b, act in blocks if act == "relu"]
    if blocks[-1][2] != "none" or any(act != "relu" for _, _, act in blocks[:-1]):
        raise RegionsError("the network must be dense+ReLU layers followed by one dense output layer")
    return hidden, blocks[-1][:2]


def poly_complex(net, box=None, *, compiled=None, progress=False, where=None) -> PolyComplex:
    """Build the polyhedral complex of a ReLU MLP with 2- or 3-D input within ``box``.

    Parameters
    ----------
    net : pwlnet.ir.Network, sequence of (W, b, activation), or path of an ONNX file
        Dense layers with ReLU, then a dense output layer (:func:`pwlnet.regions.as_blocks`).
    box : array_like, shape (2, d) or (2,), optional
        Lower and upper corner (a pair applies to every axis); default :func:`default_box`.
    compiled : pwlnet.artifact.CompiledModel, optional
        The network's compiled model: without ``box``, its input code range is the box.
    progress : bool
        A tqdm bar on stderr per hidden layer, counting the cells cut (shown after 0.5 s).
    where : str, optional
        How errors name the network (default its ``source``).

    Raises
    ------
    RegionsError
        For another input dimension, a non-ReLU network or a bad box.
    """
    if isinstance(net, (str, os.PathLike)):
        from .onnx_import import load_onnx
        net = load_onnx(net)
    where = where or getattr(net, "source", "") or "network"
    blocks = _blocks(net, where)
    d = blocks[0][0].shape[1]
    if not 2 <= d <= MAX_DIM:
        raise RegionsError(f"{where}: has {d} inputs; the polyhedral complex is built for 2 or 3 inputs "
                           f"(pattern_statistics / --inputs work in any dimension)")
    hidden, _ = _split_blocks(blocks)
    box = default_box(net, compiled)[0] if box is None else _check_box(box, d)
    sizes = tuple(len(b) for _, b in hidden)
    n_hidden = sum(sizes)
    t0 = time.perf_counter()
    cells = [_box_cell(box[0], box[1], n_hidden)]
    base = 0
    for k, (w, b) in enumerate(hidden):
        bar = _progress(len(cells), f"layer {k + 1}/{len(hidden)}: cells cut", progress)
        new = []
        for parent, X, L, side, A, c in _refine_layer(cells, w, b, base, d, bar):
            on = side > 0
            new.append(_Cell(X, L, parent.bits + [on], A * on[:, None], np.where(on, c, 0.0)))
        cells = new
        base += len(b)
    return _assemble(blocks, cells, box, sizes, time.perf_counter() - t0)


def _signs(blocks, X, labels, n_hidden, d):
    """Hidden sign sequences (forward pass, zero within tolerance or by label) and box signs."""
    ev = regions.evaluate(blocks, X)
    z = np.concatenate(ev.pre_activations, axis=1) if ev.pre_activations else np.zeros((len(X), 0))
    m = np.concatenate(ev.magnitudes, axis=1) if ev.magnitudes else np.zeros((len(X), 0))
    s = np.sign(z).astype(np.int8)
    s[_is_zero(z, m)] = 0
    bx = np.ones((len(X), 2 * d), dtype=np.int8)
    for i, lab in enumerate(labels):
        for l in lab:
            if l < n_hidden:
                s[i, l] = 0
            elif l < n_hidden + 2 * d:
                bx[i, l - n_hidden] = 0
    return s, bx


def _merge(keys):
    """Unique ids of byte keys, in order of first appearance."""
    ids, out = {}, np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        out[i] = ids.setdefault(k, len(ids))
    return out, len(ids)


def _assemble(blocks, cells, box, sizes, seconds):
    d = box.shape[1]
    n_hidden = sum(sizes)
    X = np.concatenate([c.X for c in cells])
    labels = [l for c in cells for l in c.L]
    s, bx = _signs(blocks, X, labels, n_hidden, d)
    keys = [a.tobytes() + b.tobytes() for a, b in zip(s, bx)]
    gid, V = _merge(keys)
    cnt = np.bincount(gid, minlength=V).astype(np.float64)
    verts = np.zeros((V, d))
    np.add.at(verts, gid, X)
    verts /= cnt[:, None]
    vsign = np.zeros((V, n_hidden), dtype=np.int8)
    vbox = np.zeros((V, 2 * d), dtype=np.int8)
    vsign[gid] = s
    vbox[gid] = bx
    edges = set()
    reg_v = []
    off = 0
    for c in cells:
        g = gid[off:off + len(c.X)]
        off += len(c.X)
        reg_v.append(np.unique(g))
        for a, b in _edges(c.L, d):
            edges.add((min(g[a], g[b]), max(g[a], g[b])))
    edges = np.array(sorted(e for e in edges if e[0] != e[1]), dtype=np.int64).reshape(-1, 2)
    pats = np.array([np.concatenate(c.bits) if c.bits else np.zeros(0, bool) for c in cells],
                    dtype=bool).reshape(len(cells), n_hidden)
    pts = np.array([c.X.mean(axis=0) for c in cells]).reshape(len(cells), d)
    return PolyComplex(box=box, vertices=verts, vertex_signs=vsign, vertex_box=vbox, edges=edges,
                       region_patterns=pats, region_points=pts, region_vertices=reg_v, layer_sizes=sizes,
                       seconds=seconds, _cells=cells, _blocks=blocks)


# --------------------------------------------------------------------------- decision boundary

@dataclasses.dataclass(frozen=True, eq=False)
class DecisionBoundary:
    """The decision boundary of a 2-D network as a graph of segments (see the module notes).

    Attributes
    ----------
    points : numpy.ndarray, shape (P, 2)
    segments : numpy.ndarray, shape (S, 2), int64
        Index pairs into ``points``.
    betti : numpy.ndarray, shape (2,), int64
        ``(b0, b1)``: connected pieces and independent loops.
    """

    points: np.ndarray
    segments: np.ndarray
    betti: np.ndarray


def _components(n, pairs):
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    return len({find(i) for i in range(n)})


def betti_numbers(n_points, segments):
    """``(b0, b1)`` of the graph with ``n_points`` vertices (all used) and ``segments`` edges."""
    segments = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
    b0 = _components(n_points, segments.tolist())
    return np.array([b0, len(segments) - n_points + b0], dtype=np.int64)


def decision_boundary(pc: PolyComplex) -> DecisionBoundary:
    """Cut ``pc``'s regions by the output's lines and keep the boundary edges (2-D only)."""
    if pc.dim != 2:
        raise RegionsError(f"the decision boundary's Betti numbers are computed for 2-D inputs, not {pc.dim}-D")
    w, b = pc._blocks[-1][0], pc._blocks[-1][1]
    k = len(b)
    pairs = [(0, None)] if k == 1 else list(itertools.combinations(range(k), 2))
    base = pc.n_hidden + 2 * pc.dim
    D = np.zeros((len(pairs), k))
    for i, (p, q) in enumerate(pairs):
        D[i, p] = 1.0
        if q is not None:
            D[i, q] = -1.0
    out_lab = {base + i: pair for i, pair in enumerate(pairs)}
    seg_pts, seg_lab = [], []
    for cell in pc._cells:
        Fo = w @ cell.G                     # outputs: Fo x + fo
        fo = w @ cell.a + b
        for X, L, _ in _cut(cell.X, cell.L, D @ Fo, D @ fo, range(base, base + len(pairs)), 2):
            for a, bb in _edges(L, 2):
                on = [l for l in (L[a] & L[bb]) if l >= base]
                if not on:
                    continue
                mid = 0.5 * (X[a] + X[bb])
                if k > 1:
                    y = Fo @ mid + fo
                    p, q = out_lab[on[0]]
                    top = max(y[p], y[q])
                    if y.max() - top > REL_TOL * (np.abs(Fo) @ np.abs(mid) + np.abs(fo)).max():
                        continue
                seg_pts.append((X[a], X[bb]))
                seg_lab.append((L[a], L[bb]))
    if not seg_pts:
        return DecisionBoundary(np.zeros((0, 2)), np.zeros((0, 2), dtype=np.int64), np.zeros(2, dtype=np.int64))
    P = np.array([p for pair in seg_pts for p in pair])
    labs = [l for pair in seg_lab for l in pair]
    s, bx = _signs(pc._blocks, P, labs, pc.n_hidden, 2)
    # The output lines' signs complete the key: a vertex of the refinement is named by
    # its signs on hidden neurons, box faces and output lines together.
    y = regions.evaluate(pc._blocks, P).outputs
    so = np.sign(y @ D.T).astype(np.int8)
    for i, lab in enumerate(labs):
        for l in lab:
            if l >= base:
                so[i, l - base] = 0
    gid, n = _merge([a.tobytes() + b.tobytes() + c.tobytes() for a, b, c in zip(s, bx, so)])
    pts = np.zeros((n, 2))
    pts[gid] = P
    segs = {(min(a, b), max(a, b)) for a, b in gid.reshape(-1, 2).tolist() if a != b}
    segs = np.array(sorted(segs), dtype=np.int64).reshape(-1, 2)
    used = np.unique(segs)
    remap = -np.ones(n, dtype=np.int64)
    remap[used] = np.arange(len(used))
    segs = remap[segs]
    return DecisionBoundary(pts[used], segs, betti_numbers(len(used), segs))


# --------------------------------------------------------------------------- any dimension

def _stat_inputs(x, d, where="inputs"):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1 and d == 1:
        x = x[:, None]
    x = x.reshape(len(x), -1) if x.ndim > 2 else x
    if x.ndim != 2 or x.shape[1] != d:
        raise RegionsError(f"{where} have shape {np.shape(x)}; the network takes {d} inputs per row")
    if len(x) == 0:
        raise RegionsError(f"{where} hold no row")
    if not np.all(np.isfinite(x)):
        raise RegionsError(f"{where} must be finite")
    return x


def pattern_statistics(net, x, *, chunk=512) -> dict:
    """Activation patterns and the cache's safe radii over the rows of ``x`` (any dimension).

    Parameters
    ----------
    net : pwlnet.ir.Network or blocks
    x : array_like, shape (N, d)
        A data set or, in order, a stream.

    Returns
    -------
    dict
        ``n_points``; ``n_patterns`` (distinct on/off patterns met); ``n_changes``
        (consecutive rows whose patterns differ: the misses a one-entry cache would
        have along the stream); and for ``"l2"`` and ``"linf"`` the safe radii
        (:func:`pwlnet.regions.linearize_batch`) as ``radii[metric]`` and the summary
        ``radius_stats[metric]`` = ``{min, p10, median, mean, p90, max}``.
    """
    blocks = _blocks(net)
    x = _stat_inputs(x, blocks[0][0].shape[1])
    rb = regions.linearize_batch(blocks, x, chunk=chunk)
    pat = np.concatenate(rb.patterns, axis=1) if rb.patterns else np.zeros((len(x), 0), bool)
    packed = np.packbits(pat, axis=1)
    n_pat = len(np.unique(packed, axis=0))
    changes = int(np.any(packed[1:] != packed[:-1], axis=1).sum())
    stats = {}
    for m in ("l2", "linf"):
        r = rb.radii[m]
        fin = r[np.isfinite(r)]
        q = (lambda p: float(np.percentile(fin, p))) if len(fin) else (lambda p: float("inf"))
        stats[m] = {"min": q(0), "p10": q(10), "median": q(50), "mean": float(fin.mean()) if len(fin) else float("inf"),
                    "p90": q(90), "max": q(100)}
    return {"n_points": len(x), "n_patterns": n_pat, "n_changes": changes,
            "radii": {m: rb.radii[m] for m in ("l2", "linf")}, "radius_stats": stats}


# --------------------------------------------------------------------------- bench

def random_network(widths, seed=0):
    """Blocks of a random ReLU MLP ``widths = (d, n1, ..., out)``: He-normal weights, normal biases."""
    rng = np.random.default_rng(seed)
    blocks = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        act = "relu" if i < len(widths) - 2 else "none"
        blocks.append((rng.normal(0, np.sqrt(2.0 / a), (b, a)), rng.normal(0, 1.0, b), act))
    return blocks


def bench(widths=range(6, 25, 2), *, seeds=5, box=(-1e4, 1e4), out=sys.stdout):
    """Time :func:`poly_complex` on random 2-n-n-1 networks (and 2-10-5-1); print a Markdown table.

    The networks are :func:`random_network` with seeds ``0 .. seeds - 1``; the box
    ``[-1000, 1000]^2`` holds every vertex of networks at this scale, so the counts are
    those of the whole plane's complex (its unbounded cells cut off by the box).  The times
    are medians over the seeds, of the complex alone and of the complex plus the
    decision boundary's Betti numbers; the counts are medians too.

    Returns the rows as dicts.
    """
    rows = []
    print(f"| network | vertices | edges | regions | complex, s | with Betti numbers, s |", file=out)
    print("|---|---:|---:|---:|---:|---:|", file=out)
    archs = [(2, 10, 5, 1)] + [(2, n, n, 1) for n in widths]
    for arch in archs:
        t_pc, t_all, cnt = [], [], []
        for s in range(seeds):
            net = random_network(arch, seed=s)
            t0 = time.perf_counter()
            pc = poly_complex(net, box=box)
            t1 = time.perf_counter()
            decision_boundary(pc)
            t2 = time.perf_counter()
            t_pc.append(t1 - t0)
            t_all.append(t2 - t0)
            cnt.append([len(pc.vertices), len(pc.edges), len(pc.region_patterns)])
        med = np.median(np.array(cnt), axis=0)
        row = {"network": "-".join(map(str, arch)), "vertices": float(med[0]), "edges": float(med[1]),
               "regions": float(med[2]), "seconds": float(np.median(t_pc)), "seconds_betti": float(np.median(t_all))}
        rows.append(row)
        print(f"| {row['network']} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.0f} | {row['seconds']:.3f} | "
              f"{row['seconds_betti']:.3f} |", file=out, flush=True)
    return rows


# --------------------------------------------------------------------------- command line

def add_regions_arguments(parser):
    """Arguments of ``pwlnet regions``."""
    parser.add_argument("model", help="ONNX file of a ReLU MLP")
    parser.add_argument("--out", default=None, metavar="R.npz",
                        help="write the complex (2-D or 3-D input) to this .npz: vertices, vertex_signs, edges, "
                             "region_patterns, region_points, betti (2-D)")
    parser.add_argument("--box", default=None, metavar="LO,HI",
                        help="the input box, written --box=LO,HI (every axis) or --box=LO0,HI0,LO1,HI1,...; "
                             "default: the calibration range the model records, else [-1, 1]")
    parser.add_argument("--inputs", default=None, metavar="X.npy",
                        help="a data set or stream (N, d), any d: distinct activation patterns and the "
                             "cache's safe radii over it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def cli_regions(args) -> int:
    """``pwlnet regions``: the complex to ``--out`` and/or statistics over ``--inputs``."""
    import tempfile
    from pathlib import Path
    from .onnx_import import load_onnx
    src = args.model
    if args.out is None and args.inputs is None:
        raise RegionsError(f"{src}: nothing to do: give --out R.npz (2-D/3-D complex) and/or --inputs X.npy")
    from .files import check_output_file, load_inputs
    if args.out is not None:
        check_output_file(args.out, "--out")     # before any work
    net = load_onnx(src)
    blocks = _blocks(net, src)
    d = blocks[0][0].shape[1]
    try:
        _split_blocks(blocks)
    except RegionsError as e:
        raise RegionsError(f"{src}: {e}") from None
    x = None
    if args.inputs is not None:
        x = load_inputs(args.inputs)
        x = _stat_inputs(x, d, f"{args.inputs}: inputs")     # before anything is written
    if args.out is not None:
        if d not in (2, 3):
            raise RegionsError(f"{src}: has {d} inputs; the polyhedral complex (--out) is built for 2 or 3 "
                               f"inputs (--inputs alone works in any dimension)")
        if args.box is not None:
            box, prov = parse_box(args.box, d), "--box"
        else:
            box, prov = default_box(net)
        print(f"box: {prov}: " + " x ".join(f"[{lo:.6g}, {hi:.6g}]" for lo, hi in box.T))
        pc = poly_complex(net, box, progress=not args.no_progress and sys.stderr.isatty(), where=src)
        arrays = {"vertices": pc.vertices, "vertex_signs": pc.vertex_signs, "vertex_box": pc.vertex_box,
                  "edges": pc.edges, "region_patterns": pc.region_patterns, "region_points": pc.region_points,
                  "box": pc.box, "layer_sizes": np.array(pc.layer_sizes, dtype=np.int64)}
        t = pc.seconds
        if d == 2:
            t0 = time.perf_counter()
            db = decision_boundary(pc)
            t += time.perf_counter() - t0
            arrays["betti"] = db.betti
            arrays["boundary_points"] = db.points
            arrays["boundary_segments"] = db.segments
        out = Path(args.out)
        # Through a temporary file beside it, as pwlnet.files.save_npy: never half a file.
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        c = pc.counts()
        print(f"{c['vertices']} vertices, {c['edges']} edges, {c['regions']} regions"
              + (f"; decision boundary b0 = {arrays['betti'][0]}, b1 = {arrays['betti'][1]}" if d == 2 else "")
              + f"; {t:.3f} s")
        print(f"wrote {out}")
    if x is not None:
        t0 = time.perf_counter()
        st = pattern_statistics(blocks, x)
        print(f"{args.inputs}: {st['n_points']} inputs, {st['n_patterns']} distinct activation patterns, "
              f"{st['n_changes']} pattern changes between consecutive inputs ({time.perf_counter() - t0:.3f} s)")
        for m, name in (("l2", "L2"), ("linf", "L-inf")):
            r = st["radius_stats"][m]
            print(f"  safe radius {name:5s}: min {r['min']:.4g}  p10 {r['p10']:.4g}  median {r['median']:.4g}  "
                  f"mean {r['mean']:.4g}  p90 {r['p90']:.4g}  max {r['max']:.4g}")
    return 0


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m pwlnet.polycomplex",
                                description="time the polyhedral complex on random 2-n-n-1 networks")
    p.add_argument("--bench", action="store_true", help="the timing table (n = 6..24)")
    p.add_argument("--widths", default="6,8,10,12,14,16,18,20,22,24")
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args(argv)
    if not args.bench:
        p.print_help()
        return 0
    bench([int(v) for v in args.widths.split(",")], seeds=args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
