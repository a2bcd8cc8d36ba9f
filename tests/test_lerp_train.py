"""Training LERP MLPs, their export, and train -> compile -> predict through the CLI."""

import json

import numpy as np
import onnx
import pytest
import torch

from helpers import ort_run
from pwlnet import artifact, data, golden, train
from pwlnet.cli import main
from pwlnet.models import LerpMLP
from pwlnet.onnx_import import load_onnx

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")


@pytest.fixture(scope="module")
def iris_lerp():
    return train.train("iris", (8,), epochs=40, verbose=False, activation="lerp", grid=16, lerp_range=(-3, 3))


def test_lerp_training_result(iris_lerp):
    r = iris_lerp
    assert isinstance(r.model, LerpMLP) and r.activation == "lerp"
    assert r.lerp == {"grid": 16, "range": [-3.0, 3.0], "init": "relu", "smoothness": train.DEFAULT_SMOOTHNESS}
    assert r.float_test_accuracy >= 0.8
    # the tables learned something: no longer the ReLU they started as
    z = torch.linspace(-3, 3, 17)
    assert not torch.allclose(r.model.lerps[0].table, torch.relu(z).expand(8, 17))


def test_lerp_training_is_deterministic():
    a = train.train("iris", (4,), epochs=3, seed=1, verbose=False, activation="lerp", grid=8)
    b = train.train("iris", (4,), epochs=3, seed=1, verbose=False, activation="lerp", grid=8)
    assert a.losses == b.losses
    assert torch.equal(a.model.lerps[0].table, b.model.lerps[0].table)


def test_export_records_metadata_and_imports_back_exactly(iris_lerp, tmp_path):
    path = train.export_onnx(iris_lerp, tmp_path / "m.onnx")
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["pwlnet.activation"] == "lerp" and json.loads(meta["pwlnet.lerp"])["grid"] == 16
    assert [(f.domain, f.name) for f in proto.functions] == [("pwlnet", "Lerp")]
    net = load_onnx(path)
    table = iris_lerp.model.lerps[0].table.detach().numpy()
    assert np.array_equal(net.layers[1].table, table.astype(np.float64))
    x = data.load("iris").x_test
    ref = iris_lerp.model(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(net(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ort_run(path, x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw, message", [
    (dict(activation="gelu"), "activation must be one of relu, lerp, not 'gelu'"),
    (dict(activation="lerp", grid=10), "grid must be a power of two of at least 2, not 10"),
    (dict(activation="lerp", lerp_range=(2, 1)), r"finite with lo < hi, not \[2.0, 1.0\]"),
    (dict(activation="lerp", smoothness=-1.0), "smoothness must be a non-negative number, not -1.0"),
])
def test_train_rejects_bad_lerp_options(kw, message):
    with pytest.raises(ValueError, match=message):
        train.train("iris", (4,), epochs=1, verbose=False, **kw)


@pytest.mark.parametrize("spec, expected", [("-4,4", (-4.0, 4.0)), (" -1.5 , 2 ", (-1.5, 2.0))])
def test_parse_range(spec, expected):
    assert train.parse_range(spec) == expected


@pytest.mark.parametrize("spec", ["4", "4,-4", "a,b", "1,2,3", "nan,1"])
def test_parse_range_rejects(spec):
    with pytest.raises(ValueError, match="a LERP range must be two numbers lo,hi"):
        train.parse_range(spec)


def test_cli_train_compile_predict_lerp(tmp_path, capsys):
    onnx_path, model_dir = tmp_path / "m.onnx", tmp_path / "d"
    assert main(["train", "--dataset", "digits", "--activation", "lerp", "--grid", "64", "--hidden", "16",
                 "--epochs", "8", "--lerp-range=-4,4", "--smoothness", "0.001", "--out", str(onnx_path)]) == 0
    assert "digits: LERP hidden 16, 8 epochs" in capsys.readouterr().out
    assert main(["compile", str(onnx_path), "--out", str(model_dir)]) == 0
    model = artifact.load(model_dir)
    assert [l.activation for l in model.layers] == ["lerp", "none"]
    assert model.layers[0].index_bits == 6 and model.layers[0].frac_bits == 2
    s = model.summary
    assert s["float_reference"] == "onnxruntime"
    assert s["quantized_accuracy"] >= s["float_accuracy"] - 0.02 and s["argmax_agreement"] >= 0.95
    ds = data.load("digits")
    np.save(tmp_path / "x.npy", ds.x_test)
    assert main(["predict", str(model_dir), "--inputs", str(tmp_path / "x.npy"), "--codes",
                 str(tmp_path / "c.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "c.npy"),
                          golden.forward(model, golden.quantize_inputs(model, ds.x_test)))
    assert np.mean(golden.argmax(np.load(tmp_path / "c.npy")) == ds.y_test) == pytest.approx(s["quantized_accuracy"])


def test_cli_rejects_a_grid_that_is_not_a_power_of_two(tmp_path, capsys):
    assert main(["train", "--dataset", "iris", "--activation", "lerp", "--grid", "48",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert "grid must be a power of two of at least 2, not 48" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
