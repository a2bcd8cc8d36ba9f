"""PeLU layers: the torch module, training, ONNX import, and conservation of mass in float and in integers."""

import argparse
import dataclasses
import io
import json
import warnings
from fractions import Fraction

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import REGRESSION, ort_run
from pwlnet import artifact, golden, ir, pelu, quantize as q, train
from pwlnet.onnx_import import import_model

REG = REGRESSION / "iris_pelu_h3"


def export(module, *, fold=True, opset=17):
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(2, module.input_dim),), buf, dynamo=False, opset_version=opset,
                          do_constant_folding=fold, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def random_net(seed, dims=(4, 3, 3), scale=10.0, h_scale=3.0):
    torch.manual_seed(seed)
    net = pelu.PeluNet(dims[0], dims[1:-1], dims[-1], input_scale=scale)
    with torch.no_grad():
        for layer in net.layers:
            layer.h.mul_(h_scale)
            layer.A.mul_(2.0)
    return net.eval()


# --------------------------------------------------------------------------- float


def test_pelu_layer_formula_and_gradients():
    layer = pelu.PeLU(3, 2).double()
    v = torch.tensor([[5.0, 0.0, 2.0]], dtype=torch.float64)
    y = layer(v)
    p = torch.softmax(layer.A, dim=1)
    want = torch.clamp(v - layer.h ** 2, min=0) @ p
    assert torch.allclose(y, want)
    assert torch.allclose(layer.split().sum(dim=1), torch.ones(3, dtype=torch.float64))  # each input's split
    y.sum().backward()
    assert layer.h.grad is not None and layer.A.grad is not None
    assert layer.h.grad[0] != 0          # input 0 overflows its hole: its height matters


def _float_excess(v, h, a, axis=1):
    """max over rows of sum(y) - sum(relu(v)) for y = relu(v - h^2) @ softmax(a, axis)."""
    p = torch.softmax(a, dim=axis)
    y = torch.relu(v - h * h) @ p
    return float((y.sum(dim=1) - torch.relu(v).sum(dim=1)).max())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n_in=st.integers(1, 6), n_out=st.integers(1, 6),
       spread=st.floats(0.0, 20.0), signed=st.booleans())
def test_float_layer_conserves_mass(seed, n_in, n_out, spread, signed):
    # sum_o y_o = sum_i relu(v_i - h_i^2) <= sum_i relu(v_i): never more out than in.
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(32, n_in, generator=g, dtype=torch.float64) * 50
    if signed:
        v = v - 25      # negative volumes: the bound is then the sum of the positive ones
    h = torch.randn(n_in, generator=g, dtype=torch.float64) * 3
    a = torch.randn(n_in, n_out, generator=g, dtype=torch.float64) * spread
    assert _float_excess(v, h, a) <= 1e-12 * float(torch.relu(v).sum(dim=1).max() + 1)
    # the layer itself computes the same thing
    layer = pelu.PeLU(n_in, n_out).double()
    with torch.no_grad():
        layer.h.copy_(h)
        layer.A.copy_(a)
        y = layer(v)
    assert float((y.sum(dim=1) - torch.relu(v - h * h).sum(dim=1)).abs().max()) <= 1e-9


def test_softmax_over_the_input_axis_would_not_conserve():
    # What the property test guards against: normalising over the wrong axis makes each
    # output an average of the inputs, and three outputs of one full input put out 3x.
    v = torch.tensor([[10.0, 0.0]], dtype=torch.float64)
    h = torch.zeros(2, dtype=torch.float64)
    a = torch.zeros(2, 3, dtype=torch.float64)
    assert _float_excess(v, h, a, axis=1) <= 1e-12
    assert _float_excess(v, h, a, axis=0) > 4.9


def test_peluNet_checks_arguments_and_training_refuses_negative_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"input_scale must be a positive number, not -1"):
        pelu.PeluNet(4, (3,), 3, input_scale=-1)
    with pytest.raises(ValueError, match=r"hidden layer size 0 must be a positive integer, not 0"):
        pelu.PeluNet(4, (0,), 3)
    path = tmp_path / "neg.npz"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    from pwlnet import data
    with pytest.raises(ValueError, match=r"PeLU models take non-negative inputs \(volumes\), but feature \d of "
                                         r"the training split goes down to -"):
        pelu.train_pelu(data.load_file(path), epochs=1, verbose=False)
    with pytest.raises(ValueError, match=r"a PeLU model has no --activation or --region-margin options"):
        train.train("iris", (3,), model="pelu", activation="lerp", verbose=False)
    with pytest.raises(ValueError, match=r"model must be one of mlp, pelu, not 'cnn'"):
        train.train("iris", (3,), model="cnn", verbose=False)


def test_cli_train_pelu_writes_the_model(tmp_path, capsys):
    out = tmp_path / "p.onnx"
    args = argparse.Namespace(dataset="iris", data=None, hidden="64,64", out=str(out), epochs=20, lr=None,
                              seed=0, batch_size=None, model="pelu")
    assert train.cli_train(args) == 0
    assert "PeLU 4 -> 3 -> 3, inputs x 10, 20 epochs" in capsys.readouterr().out
    proto = onnx.load(out)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["pwlnet.model"] == "pelu" and meta["pwlnet.activation"] == "pelu"
    assert json.loads(meta["pwlnet.pelu"]) == {"input_scale": 10.0}
    assert [n.op_type for n in proto.graph.node] == ["Mul", "Sub", "Relu", "MatMul", "Sub", "Relu", "MatMul"]


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize("fold,opset", [(True, 17), (False, 17), (False, 11)])
def test_export_imports_as_buckets_and_splits(fold, opset):
    net = random_net(1)
    proto = export(net, fold=fold, opset=opset)
    assert ("Softmax" in {n.op_type for n in proto.graph.node}) == (not fold)
    imported = import_model(proto)
    kinds = [(type(l).__name__, getattr(l, "keep_mass", None)) for l in imported.layers]
    assert kinds == [("Dense", True), ("Activation", None), ("Dense", True), ("Activation", None), ("Dense", True)]
    first = imported.layers[0]
    np.testing.assert_array_equal(first.weight, np.diag([10.0] * 4))
    h = net.layers[0].h.detach().double().numpy()
    np.testing.assert_allclose(first.bias, -h * h, rtol=1e-6)
    for dense in imported.layers[2::2]:
        # each input's split sums to at most 1 exactly, and to 1 within float64 rounding
        for col in dense.weight.T:
            assert sum((Fraction(float(c)) for c in col), Fraction(0)) <= 1
        np.testing.assert_allclose(dense.weight.sum(axis=0), 1.0, atol=1e-15)
    x = np.random.default_rng(2).uniform(0, 8, size=(50, 4))
    with torch.no_grad():
        want = net(torch.tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(imported(x), want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ort_run(proto, x), want, rtol=1e-5, atol=1e-4)
    assert any("PeLU split" in n for n in imported.notices)
    assert any("a PeLU bucket: it keeps mass" in n for n in imported.notices)


def test_softmax_over_inputs_and_signed_thresholds_are_not_marked():
    # softmax(A, dim=0) normalises what each output receives, not what each input gives:
    # an ordinary dense layer.  A bucket whose hole is below the floor (a positive shift)
    # adds mass: its diagonal layer is imported, unmarked.
    class Other(torch.nn.Module):
        input_dim = 4

        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return torch.relu(x + 1.5) @ torch.softmax(self.A, dim=0)

    torch.manual_seed(0)
    imported = import_model(export(Other()))
    assert [getattr(l, "keep_mass", None) for l in imported.layers] == [False, None, False]
    np.testing.assert_array_equal(imported.layers[0].bias, [1.5] * 4)


# --------------------------------------------------------------------------- integers


def _check_masses(model, codes, scale):
    """Exact per-layer conservation; returns the largest output/input mass ratio seen."""
    masses = pelu.integer_masses(model, codes)
    for k in range(len(model.layers)):
        factor = scale if k == 0 else 1
        for m_in, m_out in zip(masses[k], masses[k + 1]):
            assert m_out <= factor * m_in, (k, float(m_out), float(m_in))
    return masses


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), requant=st.sampled_from(["multiply", "shift"]),
       dims=st.sampled_from([(4, 3, 3), (3, 5, 2), (6, 4, 4, 3)]), bits=st.sampled_from([8, 6]),
       scale=st.sampled_from([10.0, 1.0, 2.5]))
def test_integer_model_conserves_mass(seed, requant, dims, bits, scale):
    # For every input code q >= zero point (non-negative dequantized input), every
    # keep_mass layer puts out at most what it takes in (the bucket layer: input_scale
    # times), in exact rational arithmetic of the dequantized codes.
    net = random_net(seed, dims, scale=scale)
    rng = np.random.default_rng(seed)
    calib = rng.uniform(0, rng.uniform(1, 10), size=(100, dims[0]))
    model = q.quantize(net.to_ir(), calib, requant=requant, weight_bits=bits, act_bits=bits)
    assert np.all(model.input_zero_point <= -(1 << (bits - 1)))  # a calibration minimum >= 0
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = np.concatenate([rng.integers(lo, hi + 1, size=(60, dims[0])),
                            np.full((1, dims[0]), hi), np.full((1, dims[0]), lo)])
    _check_masses(model, codes, scale)


def test_plain_quantization_would_break_the_integer_bound():
    # Without keep_mass the same layers round to nearest and overshoot: the bound above
    # is the quantizer's doing, not a given.
    net = random_net(0)
    marked = net.to_ir()
    plain = ir.Network([dataclasses.replace(l, keep_mass=False) if isinstance(l, ir.Dense) else l
                        for l in marked.layers], marked.input_shape)
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 8, size=(200, 4))
    codes = rng.integers(-128, 128, size=(300, 4))
    _check_masses(q.quantize(marked, calib), codes, 10.0)
    with pytest.raises(AssertionError):
        _check_masses(q.quantize(plain, calib), codes, 10.0)


def test_keep_mass_needs_a_conserving_layer():
    with pytest.raises(ir.IRError, match=r"keep_mass needs non-negative weights and a non-positive bias"):
        ir.Dense(np.array([[1.0, -0.5]]), np.zeros(1), name="d", keep_mass=True)
    with pytest.raises(ir.IRError, match=r"largest bias 0.5"):
        ir.Dense(np.eye(2), np.array([0.5, 0.0]), name="d", keep_mass=True)


# --------------------------------------------------------------------------- the reference model


def test_reference_model_is_a_conserving_pelu_model():
    model = artifact.load(REG / "compiled")
    assert [l.n_out for l in model.layers] == [4, 3, 3]
    meta = model.source["metadata"]
    assert meta["pwlnet.model"] == "pelu"
    codes = np.load(REG / "codes_in.npy")
    np.testing.assert_array_equal(golden.forward(model, codes), np.load(REG / "codes_out.npy"))
    rng = np.random.default_rng(3)
    assert np.all(model.input_zero_point <= -128)           # every code is a non-negative input
    everything = np.concatenate([codes, rng.integers(-128, 128, size=(400, 4))])
    _check_masses(model, everything, 10.0)
    s = model.summary
    assert s["quantized_accuracy"] >= 0.9 and s["float_accuracy"] >= 0.9
