"""The command line end to end: train, compile, predict on every data set."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from pwlnet import artifact, data, golden
from pwlnet.cli import main

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")


def test_help_runs_as_a_console_script():
    out = subprocess.run([sys.executable, "-m", "pwlnet.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("train", "compile", "predict", "simulate", "run"):
        assert cmd in out.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 64,64 model per data set, trained and compiled through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for name in data.DATASETS:
        onnx_path, model_dir = root / f"{name}.onnx", root / name
        assert main(["train", "--dataset", name, "--hidden", "64,64", "--out", str(onnx_path)]) == 0
        assert main(["compile", str(onnx_path), "--out", str(model_dir)]) == 0
        out[name] = (onnx_path, model_dir)
    return out


@pytest.mark.parametrize("name", data.DATASETS)
def test_train_compile_predict(trained, name, tmp_path, capsys):
    onnx_path, model_dir = trained[name]
    ds = data.load(name)
    np.save(tmp_path / "x.npy", ds.x_test)
    assert main(["predict", str(model_dir), "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(tmp_path / "y.npy"), "--codes", str(tmp_path / "c.npy")]) == 0
    y, c = np.load(tmp_path / "y.npy"), np.load(tmp_path / "c.npy")
    model = artifact.load(model_dir)
    assert y.shape == c.shape == (len(ds.x_test), ds.n_classes)
    assert np.array_equal(c, golden.forward(model, golden.quantize_inputs(model, ds.x_test)))
    assert np.allclose(y, c * model.output_scale)
    # argmax agreement with onnxruntime's float outputs on the test split
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": ds.x_test.astype(np.float32)})[0]
    agreement = np.mean(ref.argmax(1) == golden.argmax(c))
    summary = json.loads((model_dir / "model.json").read_text())["summary"]
    assert summary["argmax_agreement"] == pytest.approx(agreement)
    assert summary["quantized_accuracy"] == pytest.approx(np.mean(golden.argmax(c) == ds.y_test))
    if name in ("digits", "basicmotions"):     # the acceptance sets
        assert agreement >= 0.99
        assert abs(summary["float_accuracy"] - summary["quantized_accuracy"]) <= 0.01


def test_compile_refuses_conv_and_writes_nothing(tmp_path, capsys):
    import torch
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3 * 6, 2))
    torch.onnx.export(net.eval(), (torch.zeros(1, 2, 8),), str(tmp_path / "conv.onnx"), dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "n"}})
    out = tmp_path / "out"
    assert main(["compile", str(tmp_path / "conv.onnx"), "--out", str(out), "--calib", "iris"]) == 2
    err = capsys.readouterr().err
    assert "Conv" in err and "not supported" in err and "conv.onnx" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx"]


@pytest.mark.parametrize("args, message", [
    (["compile", "missing.onnx", "--out", "o"], "missing.onnx"),
    (["compile", "{onnx}", "--out", "o", "--calib", "nosuchset"], "neither a .npy file nor a data set"),
    (["compile", "{onnx}", "--out", "o", "--weight-bits", "1"], "between 2 and 16 bits, not 1"),
    (["predict", "{dir}", "--inputs", "{bad}"], "non-finite value"),
    (["predict", "{dir}", "--inputs", "{wide}"], "expected (N, 4)"),
    (["predict", "nodir", "--inputs", "{bad}"], "not a compiled model directory"),
])
def test_errors_are_named_and_leave_nothing(trained, args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("bad.npy", np.array([[1.0, np.nan, 0.0, 0.0]]))
    np.save("wide.npy", np.zeros((2, 5)))
    fill = {"onnx": str(trained["iris"][0]), "dir": str(trained["iris"][1]), "bad": "bad.npy", "wide": "wide.npy"}
    assert main([a.format(**fill) for a in args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_compile_with_npy_calibration(trained, tmp_path):
    np.save(tmp_path / "calib.npy", data.load("iris").x_train)
    assert main(["compile", str(trained["iris"][0]), "--out", str(tmp_path / "m"),
                 "--calib", str(tmp_path / "calib.npy"), "--act-bits", "6", "--weight-bits", "5",
                 "--requant", "multiply"]) == 0
    m = artifact.load(tmp_path / "m")
    assert m.act_bits == 6 and m.weight_bits == 5 and m.layers[0].requant == "multiply"
    assert "quantized_accuracy" not in m.summary      # no labels with a bare .npy
