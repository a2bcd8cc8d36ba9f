"""The pictures module draws every figure from a network without training one (the
trained toy network is exercised by tests/test_polycomplex.py)."""

import types

import numpy as np

from helpers import random_blocks
from pwlnet import pictures, polycomplex as pcm


def test_every_picture_is_drawn_and_small(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    net = random_blocks(5, 2, [8, 8], 2)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (60, 2))
    ds = types.SimpleNamespace(x_train=x, y_train=np.arange(60) % 2, x_test=x, y_test=np.arange(60) % 2)
    pc = pcm.poly_complex(net, pictures._box(ds))
    db = pcm.decision_boundary(pc)
    paths = [pictures.draw_output(net, ds, pc, db, tmp_path / "o.png"),
             pictures.draw_neurons(pc, db, tmp_path / "n.png"),
             pictures.draw_complex(pc, tmp_path / "c.png"),
             pictures.draw_cache(net, pc, tmp_path / "k.png"),
             pictures.draw_per_neuron(net, pc, tmp_path / "p.png", n=40)]
    cases = [("toy", net, x, x), ("4-D", random_blocks(6, 4, [8], 3), rng.normal(size=(50, 4)), rng.normal(size=(50, 4)))]
    paths.append(pictures.draw_radii(cases, tmp_path / "r.png"))
    rates = pictures.draw_hit_rate(cases, tmp_path / "h.png", sizes=(1, 4))
    paths.append(tmp_path / "h.png")
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size < 200_000
    assert set(rates) == {(c[0], m) for c in cases for m in ("l2", "linf")}
    assert all(0 <= v <= 100 for hr in rates.values() for v in hr)


def test_edge_layers_name_the_layer_of_each_edge():
    net = random_blocks(2, 2, [5, 4], 1)
    pc = pcm.poly_complex(net, (-2, 2))
    layer = pictures._edge_layers(pc)
    assert set(np.unique(layer)) <= {-1, 0, 1} and (layer == -1).any() and (layer == 0).any()
