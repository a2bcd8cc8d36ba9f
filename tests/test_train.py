"""Tests of :mod:`pwlnet.train`: determinism, folding, ONNX export, the CLI entry."""

import argparse
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pwlnet import data, train
from pwlnet.files import OutputPathError
from pwlnet.models import ReluMLP


def namespace(tmp_path, **kw):
    args = dict(dataset="iris", hidden="8,8", out=str(tmp_path / "model.onnx"), epochs=3, lr=None,
                seed=None, batch_size=None)
    args.update(kw)
    return argparse.Namespace(**args)


def run_onnx(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


@pytest.fixture(scope="module")
def iris_result():
    return train.train("iris", (16, 16), epochs=150, verbose=False)


# --- arguments ----------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [("64,64", (64, 64)), (" 8 , 4 ", (8, 4)), ("16", (16,))])
def test_parse_hidden(spec, expected):
    assert train.parse_hidden(spec) == expected


@pytest.mark.parametrize("spec", ["", "64,,64", "a,b", "0", "64,-1", "64.5", "64;64", "64,"])
def test_parse_hidden_rejects(spec):
    with pytest.raises(ValueError, match=f"comma-separated positive integers like '64,64', not {spec!r}"):
        train.parse_hidden(spec)


def test_standardization_keeps_constant_features():
    x = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    mean, std = train.standardization(x)
    assert mean.tolist() == [2.0, 5.0] and std.tolist() == [1.0, 1.0]
    assert mean.dtype == std.dtype == np.float64


@pytest.mark.parametrize("kw, msg", [
    (dict(epochs=0), "epochs must be a positive integer, not 0"),
    (dict(epochs=2.5), "epochs must be a positive integer, not 2.5"),
    (dict(lr=-1.0), "lr must be a positive number, not -1.0"),
    (dict(lr=float("nan")), "lr must be a positive number, not nan"),
    (dict(batch_size=0), "batch_size must be a positive integer, not 0"),
    (dict(seed=-1), "seed must be a non-negative integer, not -1"),
    (dict(hidden="64,x"), "not '64,x'"),
])
def test_train_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        train.train("iris", **{"epochs": 1, "verbose": False, **kw})


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        train.train("nope", verbose=False)


# --- training -----------------------------------------------------------------------

def test_deterministic():
    a = train.train("iris", (8,), epochs=5, seed=3, verbose=False)
    b = train.train("iris", (8,), epochs=5, seed=3, verbose=False)
    c = train.train("iris", (8,), epochs=5, seed=4, verbose=False)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.losses == b.losses
    assert not torch.equal(a.model.linears[0].weight, c.model.linears[0].weight)


def test_threads_restored():
    before = torch.get_num_threads()
    train.train("iris", (4,), epochs=1, threads=1, verbose=False)
    assert torch.get_num_threads() == before


def test_result(iris_result):
    r = iris_result
    assert isinstance(r.model, ReluMLP) and not r.model.training
    assert r.hidden == (16, 16) and r.epochs == 150 and r.dataset == "iris"
    assert len(r.losses) == 150 and r.losses[-1] < r.losses[0]
    assert r.float_test_accuracy >= 0.9
    ds = data.load("iris")
    np.testing.assert_allclose(r.input_mean, ds.x_train.astype(np.float64).mean(0))
    # The returned model is folded: raw features in.
    assert train.accuracy(r.model, ds.x_test, ds.y_test) == r.float_test_accuracy


def test_folded_model_equals_standardized_training_model(iris_result):
    r = iris_result
    ds = data.load("iris")
    # Undo the fold on a copy: feeding standardized inputs to the unfolded model must
    # reproduce the folded model on raw inputs.
    unfolded = ReluMLP(4, r.hidden, 3)
    unfolded.load_state_dict(r.model.state_dict())
    with torch.no_grad():
        first = unfolded.linears[0]
        first.bias.copy_(first.bias + first.weight @ torch.tensor(r.input_mean, dtype=torch.float32))
        first.weight.copy_(first.weight * torch.tensor(r.input_std, dtype=torch.float32))
        xs = torch.tensor(((ds.x_test - r.input_mean) / r.input_std).astype(np.float32))
        np.testing.assert_allclose(unfolded(xs).numpy(), r.model(torch.tensor(ds.x_test)).numpy(),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, minimum", [("iris", 0.93), ("digits", 0.95), ("basicmotions", 0.95),
                                           ("daphnet", 0.93)])
def test_default_accuracy(name, minimum):
    r = train.train(name, (64, 64), verbose=False)
    assert r.epochs == train.DEFAULT_EPOCHS[name]
    assert r.float_test_accuracy >= minimum


# --- export -------------------------------------------------------------------------

@pytest.mark.parametrize("name", data.DATASETS)
def test_onnxruntime_matches_torch(tmp_path, name):
    r = train.train(name, (32, 16), epochs=2, verbose=False)
    path = train.export_onnx(r, tmp_path / f"{name}.onnx")
    ds = data.load(name)
    with torch.no_grad():
        expected = r.model(torch.tensor(ds.x_test)).numpy()
    got = run_onnx(path, ds.x_test)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # Dynamic batch: one row at a time gives the same answers.
    np.testing.assert_allclose(run_onnx(path, ds.x_test[:1]), got[:1], rtol=1e-5, atol=1e-5)
    assert float(np.mean(got.argmax(1) == ds.y_test)) == pytest.approx(r.float_test_accuracy, abs=1e-9)


def test_onnx_graph_and_metadata(tmp_path, iris_result):
    path = train.export_onnx(iris_result, tmp_path / "iris.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 4
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["pwlnet.dataset"] == "iris"
    assert meta["pwlnet.hidden"] == "16,16"
    assert meta["pwlnet.activation"] == "relu"
    assert float(meta["pwlnet.float_test_accuracy"]) == iris_result.float_test_accuracy
    np.testing.assert_allclose(json.loads(meta["pwlnet.input_mean"]), iris_result.input_mean)
    np.testing.assert_allclose(json.loads(meta["pwlnet.input_std"]), iris_result.input_std)
    assert json.loads(meta["pwlnet.class_names"]) == ["setosa", "versicolor", "virginica"]
    assert len(json.loads(meta["pwlnet.feature_names"])) == 4
    assert json.loads(meta["pwlnet.train"])["epochs"] == 150
    assert train.onnx_metadata(iris_result) == meta


def test_export_is_atomic(tmp_path, iris_result, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(train.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        train.export_onnx(iris_result, target)
    assert os.listdir(tmp_path) == ["m.onnx"] and target.read_bytes() == b"old"


def test_export_failure_leaves_nothing(tmp_path, iris_result, monkeypatch):
    def fail(proto):
        raise onnx.checker.ValidationError("broken")

    monkeypatch.setattr(onnx.checker, "check_model", fail)
    with pytest.raises(onnx.checker.ValidationError):
        train.export_onnx(iris_result, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_export_to_missing_directory(tmp_path, iris_result):
    with pytest.raises(OutputPathError, match="directory .*nowhere does not exist"):
        train.export_onnx(iris_result, tmp_path / "nowhere" / "m.onnx")


# --- command line -------------------------------------------------------------------

def test_cli_train(tmp_path, capsys):
    assert train.cli_train(namespace(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert "iris: hidden 8,8, 3 epochs: float test accuracy" in out
    assert f"wrote {tmp_path / 'model.onnx'}" in out
    assert "train iris" in err  # the progress bar goes to stderr
    assert os.listdir(tmp_path) == ["model.onnx"]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert meta["pwlnet.hidden"] == "8,8"
    assert json.loads(meta["pwlnet.train"]) == {"epochs": 3, "lr": train.DEFAULT_LR, "seed": 0,
                                                "batch_size": train.DEFAULT_BATCH_SIZE,
                                                "weight_decay": 0.0}


def test_cli_passes_options(tmp_path):
    train.cli_train(namespace(tmp_path, epochs=2, lr=0.01, seed=7, batch_size=16))
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(meta["pwlnet.train"]) == {"epochs": 2, "lr": 0.01, "seed": 7, "batch_size": 16,
                                                "weight_decay": 0.0}


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(hidden="64,x"), ValueError, "not '64,x'"),
    (dict(dataset="mnist"), ValueError, "unknown data set 'mnist'; choose one of iris, digits"),
    (dict(epochs=-3), ValueError, "epochs must be a positive integer, not -3"),
])
def test_cli_errors_leave_nothing(tmp_path, capsys, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        train.cli_train(namespace(tmp_path, **kw))
    assert os.listdir(tmp_path) == []


def test_cli_missing_directory_fails_before_training(tmp_path, capsys):
    with pytest.raises(OutputPathError, match="does not exist"):
        train.cli_train(namespace(tmp_path, out=str(tmp_path / "no" / "m.onnx")))
    assert capsys.readouterr().err == ""  # no progress bar: nothing was trained
