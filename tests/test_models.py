"""Tests of :mod:`pwlnet.models`: the ReLU MLP and its local linear pieces."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pwlnet import ir, regions
from pwlnet.models import ReluMLP
from pwlnet.regions import METRICS, norm

PROPERTY = settings(max_examples=40, deadline=None, database=None)


def make_mlp(seed, input_dim=3, hidden=(16, 12), output_dim=2):
    torch.manual_seed(seed)
    return ReluMLP(input_dim, hidden, output_dim)


def sample_ball(rng, centre, radius, metric, n):
    """``n`` points strictly inside the ``metric`` ball, many of them near its surface."""
    d = centre.size
    if metric == "l2":
        u = rng.standard_normal((n, d))
    elif metric == "linf":
        u = rng.uniform(-1, 1, (n, d))
        u[: n // 2] = np.sign(u[: n // 2])  # corners
    else:
        u = rng.exponential(size=(n, d)) * rng.choice([-1, 1], (n, d))
    u /= norm(u, metric)[:, None]
    scale = np.where(np.arange(n) % 2 == 0, 0.999, rng.uniform(0, 1, n))
    return centre + radius * scale[:, None] * u


def worst_direction(g, z, metric):
    """Unit vector (in ``metric``) along which a neuron with gradient ``g`` and value
    ``z`` reaches zero fastest: the equality case of Hoelder's inequality."""
    s = -np.sign(z)
    if metric == "l2":
        return s * g / np.linalg.norm(g)
    if metric == "linf":
        return s * np.sign(g)
    d = np.zeros_like(g)
    k = np.argmax(np.abs(g))
    d[k] = s * np.sign(g[k])
    return d


def gradient_row(net, c, layer, j):
    """Gradient of ReLU layer ``layer``'s pre-activation ``j`` at ``c``, by autograd."""
    model = copy.deepcopy(net).double()
    x = torch.tensor(c, requires_grad=True)
    h = x
    seen = -1
    for m in model:
        h = m(h)
        if isinstance(m, torch.nn.Linear):
            seen += 1
            if seen == layer:
                h[j].backward()
                return x.grad.numpy()
    raise AssertionError("layer not found")


# --- construction -------------------------------------------------------------------

def test_structure():
    m = ReluMLP(5, [8, 6], 3)
    kinds = [type(l).__name__ for l in m]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert (m.input_dim, m.hidden, m.output_dim) == (5, (8, 6), 3)
    assert [tuple(l.weight.shape) for l in m.linears] == [(8, 5), (6, 8), (3, 6)]
    assert m(torch.zeros(4, 5)).shape == (4, 3)
    assert [type(l).__name__ for l in ReluMLP(5, (), 3)] == ["Linear"]
    assert ReluMLP(2, np.array([4, 4]), 1).hidden == (4, 4)


@pytest.mark.parametrize("args, exc, msg", [
    ((0, (4,), 2), ValueError, "input_dim must be a positive integer, not 0"),
    ((2.5, (4,), 2), TypeError, "input_dim must be a positive integer, not 2.5"),
    ((2, (4,), True), TypeError, "output_dim must be a positive integer, not True"),
    ((2, "64,64", 2), TypeError, "hidden must be a sequence of positive integers, not '64,64'"),
    ((2, 64, 2), TypeError, "hidden must be a sequence of positive integers, not 64"),
    ((2, (4, 0), 2), ValueError, "hidden layer size 1 must be a positive integer, not 0"),
])
def test_bad_arguments(args, exc, msg):
    with pytest.raises(exc, match=msg):
        ReluMLP(*args)


def test_to_ir_matches_torch():
    m = make_mlp(1, 4, (10, 7), 3)
    net = m.to_ir(metadata={"k": "v"})
    assert isinstance(net, ir.Network)
    assert [type(l).__name__ for l in net.layers] == ["Dense", "Activation", "Dense", "Activation", "Dense"]
    assert [l.kind for l in net.layers if isinstance(l, ir.Activation)] == ["relu", "relu"]
    assert net.input_shape == (4,) and net.output_dim == 3 and net.metadata == {"k": "v"}
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    with torch.no_grad():
        expected = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-5)


def test_fold_standardization():
    m = make_mlp(2, 3, (8,), 2)
    mean = np.array([100.0, -5.0, 0.5])
    std = np.array([30.0, 2.0, 1.0])
    raw = np.random.default_rng(1).normal(mean, std, (40, 3)).astype(np.float32)
    with torch.no_grad():
        before = m(torch.from_numpy(((raw - mean) / std).astype(np.float32))).numpy()
        assert m.fold_standardization(mean, std) is m
        after = m(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"std must be positive, not \[1.0, 0.0, 1.0\]"):
        m.fold_standardization(mean, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"mean must have shape \(3,\), not \(2,\)"):
        m.fold_standardization([0.0, 0.0], std)


# --- linearization ------------------------------------------------------------------

def test_linearization_matches_autograd():
    m = make_mlp(3, 5, (20, 20, 10), 4)
    c = np.random.default_rng(3).standard_normal(5)
    lin = m.linearize_at_point(c)
    assert isinstance(lin, regions.Linearization)
    assert lin.W.shape == (4, 5) and lin.b.shape == (4,) and lin.W.dtype == np.float64
    jac = torch.autograd.functional.jacobian(m.double(), torch.tensor(c)).numpy()
    np.testing.assert_allclose(lin.W, jac, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin(c), m.to_ir()(c[None])[0], rtol=1e-12, atol=1e-12)
    assert [p.shape for p in lin.pattern] == [(20,), (20,), (10,)]
    assert all(p.dtype == bool for p in lin.pattern)
    assert set(lin.radii) == set(lin.tight) == set(METRICS)


def test_radius_is_the_tightest_neuron():
    m = make_mlp(4, 3, (6, 5), 2)
    c = np.array([0.3, -0.2, 0.9])
    lin = m.linearize_at_point(c)
    for metric, dual in (("l2", 2), ("linf", 1), ("l1", np.inf)):
        ratios = []
        for layer, z in enumerate(lin.pre_activations):
            for j in range(len(z)):
                g = gradient_row(m, c, layer, j)
                if np.any(g):
                    ratios.append((abs(z[j]) / np.linalg.norm(g, dual), (layer, j)))
        r, where = min(ratios)
        assert lin.radii[metric] == pytest.approx(r, rel=1e-12)
        assert lin.tight[metric] == where


@PROPERTY
@given(seed=st.integers(0, 2**31 - 1), input_dim=st.integers(1, 6),
       hidden=st.lists(st.integers(1, 24), min_size=1, max_size=3))
def test_inside_ball_pattern_and_map_are_fixed(seed, input_dim, hidden):
    m = make_mlp(seed % 1000, input_dim, tuple(hidden), 3)
    net = m.to_ir()
    rng = np.random.default_rng(seed)
    c = rng.standard_normal(input_dim) * 2
    lin = m.linearize_at_point(c)
    for metric in METRICS:
        r = lin.radii[metric]
        if not np.isfinite(r):
            r = 10.0  # no neuron depends on the input: any ball will do
        pts = sample_ball(rng, c, r, metric, 64)
        assert np.all(norm(pts - c, metric) < lin.radii[metric])
        assert all(lin.contains(p, metric) for p in pts)
        out = net(pts)
        np.testing.assert_allclose(lin(pts), out, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(out).max()))
        for p in pts:
            other = m.linearize_at_point(p)
            for a, b in zip(lin.pattern, other.pattern):
                assert np.array_equal(a, b)


@PROPERTY
@given(seed=st.integers(0, 2**31 - 1), input_dim=st.integers(1, 6),
       hidden=st.lists(st.integers(1, 24), min_size=1, max_size=3), metric=st.sampled_from(METRICS))
def test_tight_neuron_flips_just_past_the_radius(seed, input_dim, hidden, metric):
    m = make_mlp(seed % 1000, input_dim, tuple(hidden), 2)
    c = np.random.default_rng(seed).standard_normal(input_dim) * 2
    lin = m.linearize_at_point(c)
    r = lin.radii[metric]
    assume(np.isfinite(r))
    layer, j = lin.tight[metric]
    z = lin.pre_activations[layer][j]
    # Far enough from zero that a 1e-6 relative step dominates float64 rounding.
    assume(abs(z) > 1e-6)
    g = gradient_row(m, c, layer, j)
    d = worst_direction(g, z, metric)
    assert norm(d, metric) == pytest.approx(1.0)
    inside = m.linearize_at_point(c + (1 - 1e-6) * r * d)
    outside = m.linearize_at_point(c + (1 + 1e-6) * r * d)
    assert all(np.array_equal(a, b) for a, b in zip(lin.pattern, inside.pattern))
    assert np.sign(inside.pre_activations[layer][j]) == np.sign(z)
    assert np.sign(outside.pre_activations[layer][j]) == -np.sign(z)
    assert outside.pattern[layer][j] != lin.pattern[layer][j]
    assert not lin.contains(c + (1 + 1e-6) * r * d, metric)


def set_weights(model, *layers):
    with torch.no_grad():
        for lin, (w, b) in zip(model.linears, layers):
            lin.weight.copy_(torch.tensor(w))
            lin.bias.copy_(torch.tensor(b))
    return model


def test_dead_layer_does_not_bound_the_radius():
    # Layer 1 is all off, so layer 2's pre-activations are constant (its bias):
    # they never flip, and only layer 1 bounds the radius.
    m = set_weights(ReluMLP(2, (2, 1), 1), ([[1.0, 0.0], [0.0, 2.0]], [-5.0, -4.0]),
                    ([[1.0, 1.0]], [0.5]), ([[3.0]], [1.0]))
    lin = m.linearize_at_point([0.0, 0.0])
    assert lin.radii == pytest.approx({"l2": 2.0, "linf": 2.0, "l1": 2.0})  # min(5 / 1, 4 / 2)
    assert lin.tight["l2"] == (0, 1)
    assert np.array_equal(lin.W, [[0.0, 0.0]]) and np.allclose(lin.b, [2.5])  # 3 * relu(0.5) + 1
    assert [p.tolist() for p in lin.pattern] == [[False, False], [True]]


def test_metrics_differ_as_hoelder_says():
    m = set_weights(ReluMLP(2, (1,), 1), ([[1.0, 2.0]], [-6.0]), ([[1.0]], [0.0]))
    lin = m.linearize_at_point([0.0, 0.0])
    assert lin.radii == pytest.approx({"l2": 6 / np.sqrt(5), "linf": 2.0, "l1": 3.0})


def test_no_hidden_layer_has_infinite_radius():
    lin = ReluMLP(3, (), 2).linearize_at_point(np.ones(3))
    assert lin.radii == {m: np.inf for m in METRICS}
    assert lin.tight == {m: None for m in METRICS}
    assert lin.pattern == ()


def test_neuron_on_its_boundary_gives_zero_radius():
    m = set_weights(ReluMLP(1, (1,), 1), ([[1.0]], [0.0]), ([[1.0]], [0.0]))
    lin = m.linearize_at_point([0.0])
    assert lin.radii == {m: 0.0 for m in METRICS}
    assert not lin.contains([0.0])


def test_linearize_rejects_a_point_of_the_wrong_size():
    with pytest.raises(ValueError, match="the network takes 3 inputs"):
        make_mlp(0).linearize_at_point([1.0, 2.0])
