"""The polyhedral complex of 2-D/3-D ReLU networks against brute-force sampling, the
decision boundary's Betti numbers on networks with a known answer, pattern statistics,
and ``pwlnet regions``.

The grid check (:func:`check_against_grid`).  The grid has spacing ``h`` and covers the
box, edges included.  (1) Every activation pattern met at a grid point must be one of the
reported regions: sampling cannot invent a region (grid points on a bent hyperplane,
within rounding, are left out: they lie on a region's boundary, not inside it).  (2) Each reported pattern must be
reported once (the set of inputs with one pattern is convex, so it is one cell).  (3) A
reported region the grid does not hit must be too thin for the grid: a ball of radius
``r >= h sqrt(d) / 2`` inside the box holds a closed cube of side ``2 r / sqrt(d) >= h``,
and such a cube holds a grid point; so an unhit region's inradius (its largest inscribed
ball, a linear program over the facets of its vertices' convex hull) must be below
``h sqrt(d) / 2`` (``h / sqrt(2)`` in 2-D).  Together: the
reported regions are exactly the sampled ones plus regions too small for the grid.
(4) Each region's reported point has the region's pattern, (5) every vertex's sign
sequence is what a forward pass gives there (zeros within tolerance), and (6) the
complex fills the box: ``V - E + R = 1`` (Euler characteristic of a disc).
"""

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.spatial import ConvexHull

from helpers import graph_model, random_blocks
from pwlnet import cli, polycomplex as pcm, regions


def inradius(points):
    """Radius of the largest ball inside the convex hull of ``points`` (a linear program)."""
    hull = ConvexHull(points)
    n, off = hull.equations[:, :-1], hull.equations[:, -1]      # unit normals: n . x + off <= 0 inside
    d = points.shape[1]
    res = linprog(np.r_[np.zeros(d), -1.0], A_ub=np.hstack([n, np.ones((len(n), 1))]), b_ub=-off,
                  bounds=[(None, None)] * d + [(0, None)])
    assert res.status == 0
    return res.x[d]


def grid_patterns(net, box, n):
    axes = [np.linspace(box[0, i], box[1, i], n) for i in range(box.shape[1])]
    P = np.stack(np.meshgrid(*axes), axis=-1).reshape(-1, box.shape[1])
    ev = regions.evaluate(net, P)
    pats = np.concatenate(ev.patterns, axis=1)
    # A grid point on a neuron's bent hyperplane (z = 0 within rounding) lies on the
    # boundary of a region, not inside one; its "pattern" is not a region's.
    inside = np.all(np.abs(np.concatenate(ev.pre_activations, axis=1))
                    > 1e-9 * np.concatenate(ev.magnitudes, axis=1), axis=1)
    return {p.tobytes() for p in pats[inside]}, (box[1] - box[0]).max() / (n - 1)


def check_vertices(net, pc):
    ev = regions.evaluate(net, pc.vertices)
    z = np.concatenate(ev.pre_activations, axis=1)
    m = np.concatenate(ev.magnitudes, axis=1)
    zero = pc.vertex_signs == 0
    assert np.all(np.abs(z[zero]) <= 1e-7 * m[zero] + 1e-12)
    assert np.all(np.sign(z[~zero]) == pc.vertex_signs[~zero])
    # a vertex of a d-dimensional complex lies on at least d hyperplanes (neurons or box faces)
    assert np.all(zero.sum(axis=1) + (pc.vertex_box == 0).sum(axis=1) >= pc.dim)
    lo, hi = pc.box
    assert np.all(pc.vertices >= lo - 1e-9) and np.all(pc.vertices <= hi + 1e-9)
    # the end points of an edge share d - 1 hyperplanes
    u, v = pc.edges.T
    shared = ((pc.vertex_signs[u] == 0) & (pc.vertex_signs[v] == 0)).sum(axis=1) + \
        ((pc.vertex_box[u] == 0) & (pc.vertex_box[v] == 0)).sum(axis=1)
    assert np.all(shared >= pc.dim - 1)


def check_against_grid(net, pc, n):
    sampled, h = grid_patterns(net, pc.box, n)
    reported = [p.tobytes() for p in pc.region_patterns]
    assert len(set(reported)) == len(reported), "a pattern reported twice"
    assert sampled <= set(reported), f"{len(sampled - set(reported))} sampled patterns not reported"
    unhit = [r for r, p in enumerate(reported) if p not in sampled]
    for r in unhit:
        assert inradius(pc.vertices[pc.region_vertices[r]]) < h * np.sqrt(pc.dim) / 2
    if pc.dim == 2:
        assert len(pc.vertices) - len(pc.edges) + len(pc.region_patterns) == 1
    ok = regions.same_pattern(net, pc.region_points[:1], np.split(pc.region_patterns[0], np.cumsum(pc.layer_sizes)[:-1]))
    assert ok.all()
    ev = regions.evaluate(net, pc.region_points)
    got = np.concatenate(ev.patterns, axis=1)
    z = np.abs(np.concatenate(ev.pre_activations, axis=1))
    clear = z > 1e-9 * np.concatenate(ev.magnitudes, axis=1)
    assert not np.any(clear & (got != pc.region_patterns))
    check_vertices(net, pc)
    return len(sampled), len(unhit)


@pytest.mark.parametrize("seed", range(20))
def test_random_2d_networks_agree_with_the_grid(seed):
    rng = np.random.default_rng(seed)
    hidden = [int(rng.integers(4, 14)) for _ in range(int(rng.integers(1, 4)))]
    net = random_blocks(seed, 2, hidden, int(rng.integers(1, 4)))
    pc = pcm.poly_complex(net, (-2.0, 2.0))
    n_sampled, n_unhit = check_against_grid(net, pc, 401)
    assert n_sampled + n_unhit == len(pc.region_patterns)


def test_trained_network_agrees_with_the_grid():
    from pwlnet.pictures import _box, toy_network
    net, ds = toy_network()
    pc = pcm.poly_complex(net, _box(ds))
    assert len(pc.region_patterns) > 100
    check_against_grid(net, pc, 601)
    db = pcm.decision_boundary(pc)
    # the boundary separates the test set as the network does: it is where the scores tie
    y = regions.evaluate(net, db.points).outputs
    assert np.allclose(y[:, 0], y[:, 1], atol=1e-9 * np.abs(y).max())
    assert db.betti[0] >= 1


@pytest.mark.parametrize("seed", range(3))
def test_random_3d_networks_agree_with_the_grid(seed):
    net = random_blocks(100 + seed, 3, [8, 6], 1)
    pc = pcm.poly_complex(net, (-1.5, 1.5))
    check_against_grid(net, pc, 81)


def test_degenerate_network_duplicate_neurons_and_triple_points():
    # relu(x) and relu(-x) share one hyperplane; with relu(y), relu(-y) all meet at the origin
    W = np.array([[1, 0], [-1, 0], [0, 1], [0, -1.0], [1, 1.0]])
    net = [(W, np.zeros(5), "relu"), (np.ones((1, 5)), np.array([-1.0]), "none")]
    pc = pcm.poly_complex(net, (-1.0, 1.0))
    check_against_grid(net, pc, 201)
    origin = np.flatnonzero(np.all(np.abs(pc.vertices) < 1e-12, axis=1))
    assert len(origin) == 1 and np.all(pc.vertex_signs[origin[0]] == 0)


# ---- Betti numbers of the decision boundary --------------------------------------------

_AXES = np.array([[1, 0], [-1, 0], [0, 1], [0, -1.0]])


def _diamond(outputs=1):
    """f = 1 - |x| - |y|: the boundary is one closed loop."""
    if outputs == 1:
        return [(_AXES, np.zeros(4), "relu"), (-np.ones((1, 4)), np.array([1.0]), "none")]
    return [(_AXES, np.zeros(4), "relu"), (np.vstack([-np.ones(4), np.zeros(4)]), np.array([1.0, 0.0]), "none")]


def _two_lines():
    """f = |x| - 1/2: two vertical lines."""
    return [(_AXES[:2], np.zeros(2), "relu"), (np.ones((1, 2)), np.array([-0.5]), "none")]


def _ring():
    """f = 1/2 - | |x| + |y| - 1 |: two nested diamonds."""
    g = np.ones((1, 4))
    return [(_AXES, np.zeros(4), "relu"), (np.vstack([g, -g]), np.array([-1.0, 1.0]), "relu"),
            (-np.ones((1, 2)), np.array([0.5]), "none")]


def _two_diamonds():
    """f = 1 - min(|x + 3/2| + |y|, |x - 3/2| + |y|): two separate loops."""
    W = np.array([[1, 0], [-1, 0], [1, 0], [-1, 0], [0, 1], [0, -1.0]])
    b = np.array([1.5, -1.5, -1.5, 1.5, 0, 0])
    g1, g2 = np.array([1, 1, 0, 0, 1, 1.0]), np.array([0, 0, 1, 1, 1, 1.0])
    return [(W, b, "relu"), (np.vstack([g1, g1 - g2]), np.zeros(2), "relu"), (np.array([[-1.0, 1.0]]), np.array([1.0]), "none")]


def _three_classes():
    """Scores x, y, 0 (a max of affine maps): three rays meeting at the origin, one piece."""
    W = np.array([[1, 0], [-1, 0], [0, 1], [0, -1.0]])
    return [(W, np.zeros(4), "relu"), (np.array([[1, -1, 0, 0], [0, 0, 1, -1], [0, 0, 0, 0.0]]), np.zeros(3), "none")]


@pytest.mark.parametrize("net, box, betti", [
    (_diamond(), 2.0, (1, 1)),
    (_diamond(2), 2.0, (1, 1)),
    (_diamond(), 0.5, (0, 0)),            # the loop lies outside the box
    (_diamond(), 0.8, (4, 0)),            # the box cuts the loop into four arcs
    (_two_lines(), 2.0, (2, 0)),
    (_ring(), 3.0, (2, 2)),
    (_two_diamonds(), 3.0, (2, 2)),
    (_three_classes(), 1.0, (1, 0)),
])
def test_betti_numbers_of_known_boundaries(net, box, betti):
    db = pcm.decision_boundary(pcm.poly_complex(net, (-box, box)))
    assert tuple(db.betti) == betti


def test_betti_numbers_of_a_graph():
    assert tuple(pcm.betti_numbers(4, [(0, 1), (1, 2), (2, 3), (3, 0)])) == (1, 1)
    assert tuple(pcm.betti_numbers(4, [(0, 1), (2, 3)])) == (2, 0)


# ---- any dimension ---------------------------------------------------------------------

def test_pattern_statistics_in_five_dimensions():
    net = random_blocks(7, 5, [16, 16], 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    st = pcm.pattern_statistics(net, x)
    ev = regions.evaluate(net, x)
    assert st["n_patterns"] == len(np.unique(np.concatenate(ev.patterns, axis=1), axis=0))
    lin = regions.linearize(net, x[17])
    assert st["radii"]["l2"][17] == pytest.approx(lin.l2) and st["radii"]["linf"][17] == pytest.approx(lin.linf)
    assert st["radius_stats"]["linf"]["median"] == pytest.approx(np.median(st["radii"]["linf"]))
    still = pcm.pattern_statistics(net, np.repeat(x[:1], 10, axis=0))
    assert still["n_patterns"] == 1 and still["n_changes"] == 0


def test_errors():
    with pytest.raises(pcm.RegionsError, match="has 5 inputs.*2 or 3"):
        pcm.poly_complex(random_blocks(0, 5, [4], 1), (-1, 1))
    with pytest.raises(pcm.RegionsError, match="upper bound"):
        pcm.poly_complex(random_blocks(0, 2, [4], 1), (1, -1))
    with pytest.raises(pcm.RegionsError, match="LO,HI"):
        pcm.parse_box("1,2,3", 2)
    assert pcm.parse_box("-1,2", 2).tolist() == [[-1, -1], [2, 2]]
    assert pcm.parse_box("0,1,2,3", 2).tolist() == [[0, 2], [1, 3]]


def test_default_box_without_calibration_data():
    box, why = pcm.default_box(random_blocks(0, 2, [4], 1))
    assert box.tolist() == [[-1, -1], [1, 1]] and "[-1, 1]" in why


# ---- the command line ------------------------------------------------------------------

def _gemm_model(d, act="Relu", hidden=6, seed=0):
    import onnx.helper as oh
    rng = np.random.default_rng(seed)
    inits = {"W1": rng.normal(size=(hidden, d)).astype(np.float32), "b1": rng.normal(size=hidden).astype(np.float32),
             "W2": rng.normal(size=(2, hidden)).astype(np.float32), "b2": rng.normal(size=2).astype(np.float32)}
    nodes = [oh.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), oh.make_node(act, ["h"], ["a"]),
             oh.make_node("Gemm", ["a", "W2", "b2"], ["y"], transB=1)]
    return graph_model(nodes, inits, in_shape=("N", d), out_shape=("N", 2))


def test_cli_writes_the_complex(tmp_path, capsys):
    import onnx
    path = tmp_path / "m.onnx"
    onnx.save(_gemm_model(2), path)
    x = np.random.default_rng(1).normal(size=(50, 2))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.npz"
    assert cli.main(["regions", str(path), "--out", str(out), "--box=-2,2", "--inputs", str(tmp_path / "x.npy")]) == 0
    text = capsys.readouterr().out
    assert "vertices" in text and "regions" in text and "distinct activation patterns" in text and " s" in text
    r = np.load(out)
    want = {"vertices": np.float64, "vertex_signs": np.int8, "edges": np.int64, "region_patterns": np.bool_,
            "region_points": np.float64, "betti": np.int64}
    for k, dt in want.items():
        assert r[k].dtype == dt, k
    assert r["vertices"].shape[1] == 2 and r["vertex_signs"].shape == (len(r["vertices"]), 6)
    assert r["edges"].shape[1] == 2 and r["region_patterns"].shape == (len(r["region_points"]), 6)
    assert r["betti"].shape == (2,)
    pc = pcm.poly_complex(str(path), (-2, 2))      # an ONNX path is loaded
    assert len(pc.region_patterns) == len(r["region_patterns"])


@pytest.mark.parametrize("d, act, message", [(5, "Relu", "has 5 inputs"), (2, "Tanh", "LERP table, not a ReLU")])
def test_cli_refuses_and_writes_nothing(tmp_path, capsys, d, act, message):
    import onnx
    path = tmp_path / "m.onnx"
    onnx.save(_gemm_model(d, act), path)
    out = tmp_path / "r.npz"
    assert cli.main(["regions", str(path), "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err
    assert not out.exists()


def test_cli_statistics_in_any_dimension(tmp_path, capsys):
    import onnx
    path = tmp_path / "m.onnx"
    onnx.save(_gemm_model(5), path)
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(40, 5)))
    assert cli.main(["regions", str(path), "--inputs", str(tmp_path / "x.npy")]) == 0
    text = capsys.readouterr().out
    assert "40 inputs" in text and "safe radius L2" in text and "L-inf" in text


def test_default_box_is_the_calibration_range(tmp_path):
    from pwlnet import ir
    from pwlnet.quantize import quantize
    blocks = random_blocks(3, 2, [5], 2)
    x = np.random.default_rng(0).uniform([-1, 2], [3, 5], size=(64, 2))
    y = np.arange(64) % 2
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    layers = [ir.Dense(*blocks[0][:2]), ir.Activation("relu"), ir.Dense(*blocks[1][:2])]
    net = ir.Network(layers, (2,), metadata={"pwlnet.data_file": str(tmp_path / "d.npz")})
    box, why = pcm.default_box(net)
    assert np.allclose(box, [x.min(axis=0), x.max(axis=0)]) and "d.npz" in why
    model = quantize(net, x)
    cbox, why = pcm.default_box(net, model)
    assert np.all(cbox[0] <= x.min(axis=0) + 0.05) and np.all(cbox[1] >= x.max(axis=0) - 0.05) and "code range" in why
    assert np.array_equal(pcm.poly_complex(net, compiled=model).box, cbox)


def test_cli_checks_the_inputs_before_writing(tmp_path, capsys):
    import onnx
    path = tmp_path / "m.onnx"
    onnx.save(_gemm_model(2), path)
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    out = tmp_path / "r.npz"
    assert cli.main(["regions", str(path), "--out", str(out), "--inputs", str(tmp_path / "x.npy")]) != 0
    err = capsys.readouterr().err.strip()
    assert "x.npy" in err and "takes 2 inputs" in err and not out.exists()


@pytest.mark.parametrize("seed", [46, 50])
def test_betti_numbers_agree_with_the_grid_for_one_output(seed):
    """For one output the zero set is generically a 1-manifold: arcs from box face to box
    face and closed loops.  Each arc or loop adds one component to the box minus the
    boundary, and a component not touching the box's border lies inside a loop.  So on a
    fine grid the sign components of f number 1 + b0, and those off the border b1.
    (Seed 50 has a loop.)"""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    hidden = [int(rng.integers(4, 14)) for _ in range(int(rng.integers(1, 4)))]
    net = random_blocks(seed, 2, hidden, 1)
    db = pcm.decision_boundary(pcm.poly_complex(net, (-2.0, 2.0)))
    g = np.linspace(-2.0, 2.0, 1201)
    gx, gy = np.meshgrid(g, g)
    h = np.stack([gx.ravel(), gy.ravel()], axis=1)
    for w, b, act in net:
        h = h @ w.T + b
        if act == "relu":
            np.maximum(h, 0.0, out=h)
    f = h[:, 0].reshape(gx.shape)
    total = inner = 0
    for mask in (f > 0, f < 0):
        lab, k = ndimage.label(mask)
        border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))) - {0}
        total += k
        inner += k - len(border)
    assert (total, inner) == (1 + db.betti[0], db.betti[1])
