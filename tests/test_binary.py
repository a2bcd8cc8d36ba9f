"""Binarized networks: the integer rule, the exact folding, the importer, the artifact."""

import warnings
from decimal import Decimal, getcontext
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pwlnet import artifact, binary, binary_onnx, data, golden
from pwlnet.compile import compile_onnx

ort = pytest.importorskip("onnxruntime")


# ---------------------------------------------------------------- the integer rule

def test_xnor_popcount_is_the_popcount_of_the_bits():
    rng = np.random.default_rng(1)
    w = rng.choice([-1, 1], size=(7, 37))
    a = rng.choice([-1, 1], size=(11, 37))
    wb, ab = w > 0, a > 0
    want = np.array([[int(np.sum(~(wr ^ ar))) for wr in wb] for ar in ab])
    assert np.array_equal(binary.xnor_popcount(w, a), want)
    # and W . a = 2 p - n
    assert np.array_equal(a @ w.T, 2 * want - 37)


def test_step_rule_and_direction():
    v = np.arange(-3, 4)
    assert binary.step(v, 0, 1).tolist() == [-1, -1, -1, 1, 1, 1, 1]
    assert binary.step(v, 0, -1).tolist() == [1, 1, 1, -1, -1, -1, -1]


def _dec_sign(a, b, r):
    getcontext().prec = 80
    x = Decimal(a.numerator) / Decimal(a.denominator) + \
        Decimal(b.numerator) / Decimal(b.denominator) * (Decimal(r.numerator) / Decimal(r.denominator)).sqrt()
    return (x > 0) - (x < 0)


def test_sign_sqrt_matches_high_precision():
    rng = np.random.default_rng(2)
    for _ in range(2000):
        a = Fraction(int(rng.integers(-50, 50)), int(rng.integers(1, 9)))
        b = Fraction(int(rng.integers(-50, 50)), int(rng.integers(1, 9)))
        r = Fraction(int(rng.integers(0, 40)), int(rng.integers(1, 9)))
        assert binary.sign_sqrt(a, b, r) == _dec_sign(a, b, r), (a, b, r)
    # exact ties: 3 - sqrt(9) == 0, -2 + sqrt(4) == 0
    assert binary.sign_sqrt(Fraction(3), Fraction(-1), Fraction(9)) == 0
    assert binary.sign_sqrt(Fraction(-2), Fraction(1), Fraction(4)) == 0


def test_fold_step_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(300):
        g = float(np.float32(rng.choice([rng.normal(), -abs(rng.normal()), 0.0], p=[0.6, 0.3, 0.1])))
        bn = binary.BatchNorm.of(g, np.float32(rng.normal()), np.float32(rng.normal() * 5),
                                 np.float32(rng.uniform(0.01, 9)), np.float32(1e-5))
        alpha = Fraction(int(rng.choice([-2, -1, 1, 2, 3])), int(rng.integers(1, 4)))
        beta = Fraction(int(rng.integers(-20, 20)), int(rng.integers(1, 5)))
        lo, hi = -12, 12
        t, d = binary.fold_step(alpha, beta, bn, lo, hi)
        assert lo <= t <= hi + 1 and d in (1, -1)
        for v in range(lo, hi + 1):
            want = bn.sign(alpha * v + beta) > 0
            assert bool(binary.step(v, t, d) > 0) == want, (v, t, d)


def _bn_step_graph(w, b, gamma, beta, mean, var, eps=1e-5):
    """One hidden binary layer as torch exports it: Gemm, BatchNormalization, the step."""
    n_out, n_in = w.shape
    init = [numpy_helper.from_array(np.asarray(x, np.float32), name) for x, name in
            ((w, "W"), (b, "B"), (gamma, "g"), (beta, "be"), (mean, "mu"), (var, "var"))]
    nodes = [
        helper.make_node("Gemm", ["x", "W", "B"], ["z"], name="gemm", transB=1),
        helper.make_node("BatchNormalization", ["z", "g", "be", "mu", "var"], ["y"], name="bn", epsilon=eps),
        helper.make_node("Constant", [], ["zero"], name="c0",
                         value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Greater", ["y", "zero"], ["cond"], name="gt"),
        helper.make_node("Constant", [], ["one"], name="c1",
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Constant", [], ["mone"], name="c2",
                         value=numpy_helper.from_array(np.array([-1.0], np.float32))),
        helper.make_node("Where", ["cond", "one", "mone"], ["out"], name="where"),
    ]
    g = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_in])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, n_out])], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])


def test_hidden_layer_folding_agrees_with_onnxruntime():
    """Every popcount of every neuron, folded BatchNorm + step against onnxruntime's float32."""
    rng = np.random.default_rng(4)
    n_in, n_out = 24, 40
    w = rng.choice([-1.0, 1.0], size=(n_out, n_in))
    b = rng.choice([-1.0, 1.0], size=n_out)
    gamma = rng.normal(size=n_out) * rng.choice([1, -1, 0], size=n_out, p=[0.6, 0.3, 0.1])
    beta, mean, var = rng.normal(size=n_out), rng.normal(size=n_out) * 4, rng.uniform(0.1, 30, size=n_out)
    sess = ort.InferenceSession(_bn_step_graph(w, b, gamma, beta, mean, var).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    # inputs with every agreement count p = 0..n_in for neuron o: flip the first n_in - p bits of w[o]
    eps = np.float32(1e-5)
    for o in range(n_out):
        bn = binary.BatchNorm.of(np.float32(gamma[o]), np.float32(beta[o]), np.float32(mean[o]),
                                 np.float32(var[o]), eps)
        t, d = binary.fold_step(2, binary._q(np.float32(b[o])) - n_in, bn, 0, n_in)
        xs = np.repeat(w[o][None], n_in + 1, axis=0)
        for p in range(n_in + 1):
            xs[p, :n_in - p] *= -1
        got = sess.run(None, {"x": xs.astype(np.float32)})[0][:, o]
        p = binary.xnor_popcount(w[o][None].astype(np.int64), xs.astype(np.int64))[:, 0]
        assert np.array_equal(binary.step(p, t, d), got.astype(np.int64)), o


def test_score_table_orders_like_the_reals():
    rng = np.random.default_rng(5)
    n_in, n_out = 9, 4
    bias = [np.float32(v) for v in rng.normal(size=n_out)]
    bns = [binary.BatchNorm.of(np.float32(rng.normal()), np.float32(rng.normal()), np.float32(rng.normal()),
                               np.float32(rng.uniform(0.5, 3)), np.float32(1e-5)) for _ in range(n_out)]
    table = binary.score_table(n_out, n_in, bias, bns)
    real = np.array([[float(bns[o].beta) + float(bns[o].gamma) * (2 * p - n_in + float(bias[o]) - float(bns[o].mean))
                      / np.sqrt(float(bns[o].var_eps)) for p in range(n_in + 1)] for o in range(n_out)])
    flat_r, flat_t = real.ravel(), table.ravel()
    for i in range(len(flat_r)):
        for j in range(len(flat_r)):
            assert (flat_r[i] < flat_r[j]) == (flat_t[i] < flat_t[j])
    # integer biases and no BatchNorm: the scores themselves
    assert np.array_equal(binary.score_table(2, 3, [1.0, -1.0]), [[-2, 0, 2, 4], [-4, -2, 0, 2]])


# ---------------------------------------------------------------- trained models end to end

@pytest.fixture(scope="module")
def iris_onnx(tmp_path_factory):
    from pwlnet import binary_train
    res = binary_train.train_binary("iris", (16,), epochs=30, seed=0)
    path = tmp_path_factory.mktemp("bin") / "iris_b16.onnx"
    binary_train.export_binary_onnx(res, path)
    return path


def test_export_is_the_fastinference_pattern_at_opset_11(iris_onnx):
    m = onnx.load(str(iris_onnx))
    assert m.opset_import[0].version == 11
    ops = [n.op_type for n in m.graph.node]
    assert ops == ["Sub", "Mul", "Gemm", "BatchNormalization", "Constant", "Greater", "Constant", "Constant",
                   "Where", "Gemm", "BatchNormalization", "LogSoftmax"]


def test_compile_golden_against_onnxruntime(iris_onnx, tmp_path):
    from pwlnet import data
    model = compile_onnx(iris_onnx, tmp_path / "m", calib="iris", log=lambda s: None)
    assert model.summary["codes_agreement"] == 1.0
    back = artifact.load(tmp_path / "m")
    assert isinstance(back, binary.BinaryModel)
    ds = data.load("iris")
    codes = golden.quantize_inputs(back, ds.x_test)
    assert np.array_equal(binary.forward(back, codes), binary.forward(model, codes))
    # the golden model on codes = onnxruntime on the inputs those codes stand for
    net = binary_onnx.load_binary_onnx(iris_onnx)
    ref = binary_onnx.onnxruntime_scores(iris_onnx, net, golden.dequantize_inputs(back, codes))
    assert np.array_equal(np.argmax(ref, 1), np.argmax(binary.forward(back, codes), 1))


def test_compile_cli_dispatches_binary(iris_onnx, tmp_path, capsys):
    from pwlnet.cli import main
    assert main(["compile", str(iris_onnx), "--out", str(tmp_path / "c"), "--calib", "iris"]) == 0
    out = capsys.readouterr().out
    assert "binarized 4-16-3" in out
    assert artifact.load(tmp_path / "c").kind == "binary"


def _mutate(path, tmp_path, fn):
    m = onnx.load(str(path))
    fn(m.graph)
    out = tmp_path / "mut.onnx"
    onnx.save(m, str(out))
    return out


def _node(g, op):
    return next(n for n in g.node if n.op_type == op)


def test_refuses_greater_or_equal(iris_onnx, tmp_path):
    p = _mutate(iris_onnx, tmp_path, lambda g: setattr(_node(g, "Greater"), "op_type", "GreaterOrEqual"))
    with pytest.raises(binary_onnx.BinaryImportError, match=r"node '/3/Greater' \(GreaterOrEqual\)"):
        binary_onnx.load_binary_onnx(p)


def test_refuses_nonzero_threshold(iris_onnx, tmp_path):
    def f(g):
        gt = _node(g, "Greater")
        c = next(n for n in g.node if n.output[0] == gt.input[1])
        c.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(0.5, np.float32)))
    with pytest.raises(binary_onnx.BinaryImportError, match=r"node '/3/Greater'.*compares against \[0.5\]"):
        binary_onnx.load_binary_onnx(_mutate(iris_onnx, tmp_path, f))


def test_refuses_zero_one_step(iris_onnx, tmp_path):
    def f(g):
        wh = _node(g, "Where")
        c = next(n for n in g.node if n.output[0] == wh.input[2])
        c.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([0.0], np.float32)))
    with pytest.raises(binary_onnx.BinaryImportError, match=r"node '/3/Where'.*\+1 where x > 0 and -1"):
        binary_onnx.load_binary_onnx(_mutate(iris_onnx, tmp_path, f))


def test_refuses_real_weights(iris_onnx, tmp_path):
    def f(g):
        w = next(t for t in g.initializer if t.name.endswith("weight") and len(t.dims) == 2)
        a = numpy_helper.to_array(w).copy()
        a[0, 0] = 0.5
        w.CopyFrom(numpy_helper.from_array(a, w.name))
    with pytest.raises(binary_onnx.BinaryImportError, match=r"Gemm\): weights must all be exactly -1 or \+1"):
        binary_onnx.load_binary_onnx(_mutate(iris_onnx, tmp_path, f))


def test_artifact_binary_refused_by_mlp_format_name(iris_onnx, tmp_path):
    compile_onnx(iris_onnx, tmp_path / "m", calib="iris", log=lambda s: None)
    import json
    desc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert desc["format"] == binary.FORMAT and desc["kind"] == "binary"
    desc["version"] = 99
    (tmp_path / "m" / "model.json").write_text(json.dumps(desc))
    with pytest.raises(artifact.ArtifactError, match="binary model version 99 is not supported"):
        artifact.load(tmp_path / "m")


def test_cli_train_binary(tmp_path, capsys):
    import argparse
    from pwlnet import binary_train
    out = tmp_path / "t.onnx"
    args = argparse.Namespace(dataset="iris", out=str(out), hidden="8", epochs=2, lr=None, seed=None, batch_size=None)
    assert binary_train.cli_train_binary(args) == 0
    assert "binarized iris 8" in capsys.readouterr().out
    net = binary_onnx.load_binary_onnx(out)
    assert [l.weight.shape for l in net.layers] == [(8, 4), (3, 8)]
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        binary_train.cli_train_binary(argparse.Namespace(dataset="nope", out=str(out)))


def test_pwlnet_train_binary_compile_predict(tmp_path, capsys):
    """The command line end to end: `pwlnet train --binary`, `pwlnet compile` (which finds
    the step pattern), `pwlnet predict` through the golden model's dispatch."""
    from pwlnet.cli import main
    onnx_path, model_dir = tmp_path / "b.onnx", tmp_path / "b"
    assert main(["train", "--dataset", "iris", "--binary", "--hidden", "8", "--epochs", "2",
                 "--out", str(onnx_path)]) == 0
    assert main(["compile", str(onnx_path), "--out", str(model_dir)]) == 0
    assert "binarized 4-8-3" in capsys.readouterr().out
    x = data.load("iris").x_test
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(model_dir), "--inputs", str(tmp_path / "x.npy"),
                 "--codes", str(tmp_path / "c.npy")]) == 0
    model = artifact.load(model_dir)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"),
                                  binary.forward(model, golden.quantize_inputs(model, x)))
    # options of the other trainers are refused, naming them, before any training
    assert main(["train", "--dataset", "iris", "--binary", "--activation", "lerp", "--out", str(tmp_path / "l.onnx")]) == 2
    assert main(["train", "--dataset", "iris", "--standardize", "--out", str(tmp_path / "s.onnx")]) == 2
    err = capsys.readouterr().err
    assert "does not take --activation lerp" in err and "apply to --binary training only" in err
    assert not (tmp_path / "l.onnx").exists() and not (tmp_path / "s.onnx").exists()


def test_calibrate_keeps_integer_inputs_exact():
    """Integer inputs under one common gain: every input is a code exactly (no flips possible)."""
    import types
    rng = np.random.default_rng(6)
    x = rng.integers(0, 17, size=(200, 5)).astype(np.float64)
    g = Fraction(float(np.float32(0.2)))
    net = types.SimpleNamespace(gain=[g] * 5)
    s, scale, zp = binary_onnx.calibrate(net, x, 8)
    assert s == float(g) / 8 and np.all(scale == 1 / 8)            # 16 units * 8 = 128 codes <= 255
    q = np.clip(np.floor(x / scale + 0.5) + zp, -128, 127)
    assert np.array_equal((q - zp) * scale, x)
    # per-feature gains: the plain rule (widest normalized range over 255 codes)
    net2 = types.SimpleNamespace(gain=[Fraction(1), Fraction(2), Fraction(1), Fraction(1), Fraction(1)])
    s2, _, _ = binary_onnx.calibrate(net2, x, 8)
    assert s2 == pytest.approx(32 / 255)
