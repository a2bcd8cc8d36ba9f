"""Tests of :mod:`pwlnet.margin` (the region margin penalty) and region-aware training."""

import argparse
import copy
import json

import numpy as np
import onnx
import pytest
import torch

from pwlnet import data, golden, code_cache, margin, regions, train
from pwlnet.models import LerpMLP, ReluMLP
from pwlnet.quantize import code_space_blocks, input_quantizer


def _model(seed=0, dims=(3, (7, 5), 2)):
    torch.manual_seed(seed)
    return ReluMLP(*dims).double()


@pytest.mark.parametrize("metric, key", [("linf", "linf"), ("l2", "l2")])
def test_distances_match_the_cache_radius(metric, key):
    """min_j d_j is the safe radius :func:`pwlnet.regions.linearize` computes (raw units)."""
    model = _model()
    x = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d, logits = margin.hyperplane_distances(model, x, metric=metric)
    assert d.shape == (20, 12)
    assert torch.allclose(logits, model(x))
    net = model.to_ir()
    for i in range(len(x)):
        lin = regions.linearize(net, x[i].numpy())
        assert float(d[i].min()) == pytest.approx(lin.radii[key], rel=1e-9)


@pytest.mark.parametrize("metric", margin.METRICS)
def test_distances_in_codes_are_the_compiled_models(metric):
    """With code_widths, d is counted in the input codes the comparator bank compares.

    The network is trained on standardised inputs; the compiled model reads codes of the
    raw features.  The minimum distance at u must equal the radius of the float network in
    code space (what code_cache stores) at the codes of the same point.
    """
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(200, 3)) * [1.0, 50.0, 0.01] + [0.0, 300.0, -2.0]
    mean, std = train.standardization(raw)
    model = _model(2)
    widths = margin.code_widths(raw, mean, std, bits=8)
    scale, zero = input_quantizer(raw, 8)
    assert np.allclose(widths, scale / std)
    folded = copy.deepcopy(model).fold_standardization(mean, std)
    blocks = regions.as_blocks(code_space_blocks(folded.to_ir(), scale, zero))
    codes = np.rint(raw[:10] / scale + zero)
    u = torch.tensor(((scale * (codes - zero)) - mean) / std)
    with torch.no_grad():
        d, _ = margin.hyperplane_distances(model, u, widths, metric)
    for i in range(10):
        assert float(d[i].min()) == pytest.approx(regions.linearize(blocks, codes[i]).radii[metric], rel=1e-7)


@pytest.mark.parametrize("metric, q", [("linf", 1), ("l2", 2)])
def test_boundary_distances(metric, q):
    """(z_y - z_j) / ||W_y - W_j||_dual with W the collapsed map at x (negative on the wrong side)."""
    model = _model(1)
    x = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1] * 5)
    with torch.no_grad():
        d = margin.boundary_distances(model, x, y, metric=metric)
    assert d.shape == (10, 1)
    net = model.to_ir()
    for i in range(10):
        lin = regions.linearize(net, x[i].numpy())
        z = lin(x[i].numpy())
        k, j = int(y[i]), 1 - int(y[i])
        want = (z[k] - z[j]) / np.linalg.norm(lin.W[k] - lin.W[j], ord=q)
        assert float(d[i, 0]) == pytest.approx(want, rel=1e-9)
    with torch.no_grad():
        want = torch.clamp(1 - d / 0.5, min=0).mean()
        assert float(margin.boundary_margin(model, x, y, 0.5, metric=metric)) == pytest.approx(float(want))


def test_penalty_formula_and_gradient():
    model = _model(3)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    d, _ = margin.hyperplane_distances(model, x)
    gamma, k = 0.5, 3          # 0.25 of 12 hidden neurons
    want = torch.clamp(1 - torch.sort(d, dim=1).values[:, :k] / gamma, min=0).mean()
    got = margin.region_margin(model, x, gamma, fraction=0.25)
    assert float(got.detach()) == pytest.approx(float(want.detach()))
    assert 0 < float(got.detach()) <= 1
    got.backward()
    # Every hidden layer learns from it; the output layer has no hyperplane to move.
    hidden = [p for lin in model.linears[:-1] for p in lin.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in hidden)
    assert all(p.grad is None for p in model.linears[-1].parameters())
    # Beyond gamma the hinge is flat: a tiny gamma makes the penalty exactly 0.
    assert float(margin.region_margin(model, x, 1e-12).detach()) == 0.0
    # The module holds the same settings.
    m = margin.RegionMargin(gamma, fraction=0.25)
    assert float(m(model, x).detach()) == pytest.approx(float(want.detach()))


def test_dead_neuron_has_no_hyperplane():
    model = _model(5)
    with torch.no_grad():
        model[0].weight[2] = 0.0            # neuron 2 of layer 0: constant, no hyperplane
    d, _ = margin.hyperplane_distances(model, torch.randn(4, 3, dtype=torch.float64))
    assert torch.isinf(d[:, 2]).all() and torch.isfinite(d[:, :2]).all()
    margin.region_margin(model, torch.randn(4, 3, dtype=torch.float64), 1.0).backward()
    assert torch.isfinite(model[0].weight.grad).all()


@pytest.mark.parametrize("call, msg", [
    (lambda m, x: margin.region_margin(m, x, -1.0), "gamma (the region margin) must be a positive number, not -1.0"),
    (lambda m, x: margin.region_margin(m, x, float("nan")), "gamma (the region margin) must be a positive number, not nan"),
    (lambda m, x: margin.region_margin(m, x, "4"), "gamma (the region margin) must be a positive number, not '4'"),
    (lambda m, x: margin.region_margin(m, x, 1.0, metric="l1"), "metric must be one of linf, l2, not 'l1'"),
    (lambda m, x: margin.region_margin(m, x, 1.0, fraction=1.5), "fraction must be at most 1, not 1.5"),
    (lambda m, x: margin.RegionMargin(1.0, widths=[1.0, 0.0, 1.0]), "widths must be a 1-D array of positive code widths"),
    (lambda m, x: margin.region_margin(LerpMLP(3, (4,), 2), x.float(), 1.0),
     "the region margin applies to Linear/ReLU stacks (ReluMLP), not LerpMLP"),
    (lambda m, x: margin.region_margin(ReluMLP(3, (), 2), x.float(), 1.0),
     "the region margin needs a network with at least one hidden layer"),
])
def test_errors(call, msg):
    with pytest.raises(ValueError) as e:
        call(_model(), torch.zeros(2, 3, dtype=torch.float64))
    assert str(e.value) == msg


# --- region-aware training -------------------------------------------------------------

@pytest.fixture(scope="module")
def daphnet_pair():
    """The same small daphnet network trained plainly and with a region margin."""
    kw = dict(hidden=(32, 32), epochs=15, verbose=False)
    return train.train("daphnet", **kw), train.train("daphnet", region_margin=16.0, **kw)


def _radii_in_codes(result, metric="linf"):
    from pwlnet.quantize import quantize
    ds = data.load(result.dataset)
    net = result.model.to_ir()
    model = quantize(net, ds.x_train)
    blocks = code_cache.code_blocks(model, net)
    codes = golden.quantize_inputs(model, data.stream(result.dataset)[0][::20])
    return np.array([regions.linearize(blocks, c).radii[metric] for c in codes])


def test_region_training_widens_the_safe_radius(daphnet_pair):
    plain, wide = daphnet_pair
    r_plain, r_wide = np.median(_radii_in_codes(plain)), np.median(_radii_in_codes(wide))
    assert r_wide > 3 * r_plain, (r_plain, r_wide)
    assert wide.region == {"gamma": 16.0, "weight": 1.0, "metric": "linf", "fraction": 0.1, "ramp": 0.2,
                           "code_bits": 8, "boundary": True}
    assert plain.region == {}


def test_region_settings_in_onnx_metadata(daphnet_pair, tmp_path):
    _, wide = daphnet_pair
    path = train.export_onnx(wide, tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(meta["pwlnet.region_margin"]) == wide.region
    assert "pwlnet.data_file" not in meta


@pytest.mark.parametrize("kw, msg", [
    (dict(region_margin=-2), "region_margin (the wanted radius in input codes) must be a positive number, not -2"),
    (dict(region_margin=0), "region_margin (the wanted radius in input codes) must be a positive number, not 0"),
    (dict(region_margin="x"), "region_margin (the wanted radius in input codes) must be a positive number, not 'x'"),
    (dict(region_margin=4, region_weight=-1), "region_weight must be a non-negative number, not -1"),
    (dict(region_margin=4, region_metric="l1"), "region_metric must be one of linf, l2, not 'l1'"),
    (dict(region_margin=4, activation="lerp"),
     "region-aware training (region_margin) needs ReLU hidden layers, not activation='lerp'"),
])
def test_training_rejects(kw, msg):
    with pytest.raises(ValueError) as e:
        train.train("iris", (4,), epochs=1, verbose=False, **kw)
    assert str(e.value) == msg


def test_cli_trains_on_a_data_file(tmp_path, capsys):
    """--data FILE.npz with a region margin, then compile with the data the model records."""
    from pwlnet import artifact
    from pwlnet.cli import main
    ds = data.load("iris")
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    out = tmp_path / "m.onnx"
    assert main(["train", "--data", str(npz), "--hidden", "8", "--epochs", "5", "--out", str(out),
                 "--region-margin", "4", "--region-metric", "l2"]) == 0
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["pwlnet.data_file"] == str(npz) and meta["pwlnet.dataset"] == "mine"
    assert json.loads(meta["pwlnet.region_margin"])["metric"] == "l2"
    assert main(["compile", str(out), "--out", str(tmp_path / "c")]) == 0
    model = artifact.load(tmp_path / "c")
    assert model.source["calibration"] == {"data_file": str(npz), "split": "train"}
    assert f"{npz} test split" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["--data", "{bad}"], "no array 'y_test'"),
    (["--dataset", "iris", "--region-margin", "-1"], "must be a positive number, not -1.0"),
    (["--dataset", "iris", "--region-weight", "2"], "--region-weight and --region-metric need --region-margin GAMMA"),
])
def test_cli_errors_write_nothing(tmp_path, capsys, argv, msg):
    from pwlnet.cli import main
    bad = tmp_path / "bad.npz"
    ds = data.load("iris")
    np.savez(bad, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test)
    out = tmp_path / "m.onnx"
    argv = [a.format(bad=bad) for a in argv]
    assert main(["train", *argv, "--hidden", "4", "--epochs", "1", "--out", str(out)]) == 2
    assert msg in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [bad]


def test_cli_non_numeric_margin(tmp_path, capsys):
    from pwlnet.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "iris", "--region-margin", "wide", "--out", str(tmp_path / "m.onnx")])
    assert e.value.code == 2
    assert "argument --region-margin: invalid float value: 'wide'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_namespace_without_region_options(tmp_path):
    """cli_train called with an older namespace (no region options) trains plainly."""
    args = argparse.Namespace(dataset="iris", hidden="4", out=str(tmp_path / "m.onnx"), epochs=1)
    assert train.cli_train(args) == 0
