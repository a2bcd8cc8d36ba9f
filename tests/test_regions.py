"""Linear regions: the safe radii never let a ball leave its region, and are tight."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from pwlnet import ir, regions

from helpers import nets, random_blocks


metrics = st.sampled_from(regions.METRICS)


def worst_direction(g, z, metric):
    """Unit vector (in ``metric``) along which the neuron with row ``g`` and value ``z``
    moves toward zero fastest: the equality case of Hoelder's inequality."""
    s = -np.sign(z)
    if metric == "l2":
        return s * g / np.linalg.norm(g)
    if metric == "linf":
        return s * np.sign(g)
    e = np.zeros_like(g)
    k = int(np.argmax(np.abs(g)))
    e[k] = s * np.sign(g[k])
    return e


def random_directions(rng, d, metric, n):
    """Unit vectors in ``metric``: random ones plus that metric's extreme points."""
    v = rng.normal(size=(n, d))
    v /= regions.norm(v, metric)[:, None]
    if metric == "linf":      # corners of the cube
        v = np.concatenate([v, rng.choice([-1.0, 1.0], size=(n, d))])
    elif metric == "l1":      # vertices of the cross-polytope
        v = np.concatenate([v, np.eye(d), -np.eye(d)])
    return v


def assert_exact_inside(blocks, lin, q):
    """Every row of ``q`` has the center's pattern and ``f(q) == W q + b``."""
    assert regions.same_pattern(blocks, q, lin.pattern).all()
    ev = regions.evaluate(blocks, q)
    scale = 1.0 + np.abs(q) @ np.abs(lin.W).T + np.abs(lin.b)
    np.testing.assert_array_less(np.abs(ev.outputs - lin(q)), 1e-9 * scale)


@settings(max_examples=60, deadline=None)
@given(nets, st.integers(0, 2**31 - 1), metrics)
def test_no_false_hit_up_to_the_boundary(blocks, seed, metric):
    rng = np.random.default_rng(seed)
    d = blocks[0][0].shape[1]
    c = rng.normal(size=d)
    lin = regions.linearize(blocks, c)
    r = lin.radii[metric]
    assume(np.isfinite(r) and r > 0)
    # The most dangerous points: every neuron's own worst direction, at 0.999..1 of r.
    dirs = [worst_direction(g, z, metric) for G, Z in zip(lin.gradients, lin.pre_activations)
            for g, z in zip(G, Z) if np.any(g != 0)]
    dirs = np.concatenate([np.array(dirs), random_directions(rng, d, metric, 32)])
    frac = rng.uniform(0.999, 1.0, size=(len(dirs), 1))
    q = c + r * frac * dirs
    assert np.all(regions.norm(q - c, metric) <= r * (1 + 1e-12))
    assert_exact_inside(blocks, lin, q)
    # and inside, well away from the boundary
    q = c + r * rng.uniform(0, 0.999, size=(len(dirs), 1)) * dirs
    assert_exact_inside(blocks, lin, q)


@settings(max_examples=60, deadline=None)
@given(nets, st.integers(0, 2**31 - 1), metrics)
def test_radius_is_tight(blocks, seed, metric):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=blocks[0][0].shape[1])
    lin = regions.linearize(blocks, c)
    r = lin.radii[metric]
    assume(np.isfinite(r))
    layer, j = lin.tight[metric]
    z, g = lin.pre_activations[layer][j], lin.gradients[layer][j]
    mag = regions.evaluate(blocks, c[None]).magnitudes[layer][0, j]
    assume(abs(z) > 1e-6 * mag)       # not sitting on the boundary within rounding
    # The critical neuron reaches zero at exactly r along its worst direction, so
    # 1 % further the pattern must differ (if nothing else flipped first, this one did).
    p = c + 1.01 * r * worst_direction(g, z, metric)
    assert not regions.same_pattern(blocks, p[None], lin.pattern)[0]


def test_known_one_dimensional_network():
    # f(x) = relu(x - 1) + 2 relu(4 - x): regions split at 1 and 4
    blocks = [(np.array([[1.0], [-1.0]]), np.array([-1.0, 4.0]), "relu"),
              (np.array([[1.0, 2.0]]), np.array([0.0]), "none")]
    lin = regions.linearize(blocks, [3.0])
    assert lin.radii == {"l2": 1.0, "linf": 1.0, "l1": 1.0}
    assert lin.tight["l2"] == (0, 1)
    assert lin.W.tolist() == [[-1.0]] and lin.b.tolist() == [7.0]
    assert [p.tolist() for p in lin.pattern] == [[True, True]]
    assert lin.contains([3.999]) and not lin.contains([4.0])
    assert lin(np.array([3.5])).tolist() == [3.5]
    assert (lin.l2, lin.linf, lin.l1) == (1.0, 1.0, 1.0)


def test_norms_use_the_dual_of_the_ball():
    # one neuron z = 3 x0 + 4 x1 - 10 at the origin: |z| = 10, ||g|| = 5, 7, 4
    blocks = [(np.array([[3.0, 4.0]]), np.array([-10.0]), "relu"), (np.ones((1, 1)), np.zeros(1), "none")]
    lin = regions.linearize(blocks, [0.0, 0.0])
    assert lin.l2 == pytest.approx(2.0) and lin.linf == pytest.approx(10 / 7) and lin.l1 == pytest.approx(2.5)


def test_constant_neurons_do_not_bound_the_radius():
    # neuron 0 has no input weights: it never flips; neuron 1 is off everywhere in layer 2
    blocks = [(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([1.0, 0.0]), "relu"),
              (np.array([[1.0, 0.0]]), np.array([0.0]), "none")]
    lin = regions.linearize(blocks, [2.0, 5.0])
    assert lin.radii["l2"] == 2.0 and lin.tight["l2"] == (0, 1)
    lin = regions.linearize([(np.zeros((1, 2)), np.ones(1), "relu")], [0.0, 0.0])
    assert lin.radii == {"l2": np.inf, "linf": np.inf, "l1": np.inf}
    assert lin.tight == {"l2": None, "linf": None, "l1": None}


@settings(max_examples=20, deadline=None)
@given(nets, st.integers(0, 2**31 - 1))
def test_batch_and_network_forms_agree(blocks, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(7, blocks[0][0].shape[1]))
    batch = regions.linearize_batch(blocks, x, chunk=3)
    layers = []
    for w, b, act in blocks:
        layers.append(ir.Dense(w, b))
        if act == "relu":
            layers.append(ir.Activation("relu"))
    net = ir.Network(layers, (x.shape[1],))
    assert len(batch) == 7
    for i in range(7):
        one = regions.linearize(net, x[i])
        # batched and single matrix products may round differently in the last bit
        np.testing.assert_allclose(batch.W[i], one.W, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(batch.b[i], one.b, rtol=1e-12, atol=1e-14)
        for m in regions.METRICS:
            assert batch[i].radii[m] == pytest.approx(one.radii[m], rel=1e-12)
        assert all(np.array_equal(p, q) for p, q in zip(batch[i].pattern, one.pattern))
        np.testing.assert_allclose(one(x[i]), net(x[i:i + 1])[0], rtol=1e-12, atol=1e-12)


def test_errors_name_the_problem():
    blocks = random_blocks(0, 3, [8], 2)
    with pytest.raises(ValueError, match="metric must be one of l2, linf, l1, not 'l3'"):
        regions.norm([1.0], "l3")
    with pytest.raises(ValueError, match="the network takes 3 inputs"):
        regions.linearize(blocks, [1.0, 2.0])
    with pytest.raises(ValueError, match="must be finite"):
        regions.linearize(blocks, [1.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="block 1: activation must be one of"):
        regions.linearize([blocks[0], (blocks[1][0], blocks[1][1], "tanh")], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="block 1: W takes 5 inputs but the previous block gives 8"):
        regions.as_blocks([blocks[0], (np.zeros((2, 5)), np.zeros(2), "none")])
    lerp = ir.Network([ir.Dense(np.eye(2), np.zeros(2)),
                       ir.Activation("lerp", table=np.zeros((2, 3)), lo=-1.0, hi=1.0),
                       ir.Dense(np.eye(2), np.zeros(2))], (2,))
    with pytest.raises(ValueError, match="is 'lerp'; only ReLU networks"):
        regions.linearize(lerp, [0.0, 0.0])
