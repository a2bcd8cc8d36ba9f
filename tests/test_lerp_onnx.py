"""LERP through ONNX: the pwlnet.Lerp node and its function, and foreign activations as tables."""

import io
import warnings

import numpy as np
import onnx
import onnx.helper as oh
import pytest
import torch
from torch import nn

from helpers import graph_model, ort_run
from pwlnet import golden, lerp, quantize as q
from pwlnet.ir import Activation, Dense
from pwlnet.models import Lerp, LerpMLP
from pwlnet.onnx_import import FUNCTION_OPS, OnnxImportError, import_model


def export(module, sample_shape=(4,), opset=17):
    """``module`` exported the way pwlnet.train does, with the Lerp function attached."""
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, *sample_shape),), buf, dynamo=False, opset_version=opset,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}},
                          custom_opsets={lerp.ONNX_DOMAIN: lerp.ONNX_VERSION})
    proto = onnx.load_from_string(buf.getvalue())
    if any(n.domain == lerp.ONNX_DOMAIN for n in proto.graph.node):
        lerp.attach_onnx_function(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def trained_looking_lerp_mlp(seed=0, dims=(4, 6, 5, 3), grid=16):
    torch.manual_seed(seed)
    m = LerpMLP(dims[0], dims[1:-1], dims[-1], grid=grid, lo=-3.0, hi=2.0)
    with torch.no_grad():
        for act in m.lerps:
            act.table.add_(torch.randn_like(act.table))  # arbitrary, non-monotone tables
    return m


# --------------------------------------------------------------------------- the torch module


def test_lerp_module_gradients_reach_two_entries_and_the_input():
    act = Lerp(1, grid=4, lo=-2.0, hi=2.0, init="identity")
    x = torch.tensor([[0.25], [3.0]], requires_grad=True)   # segment 2 (fraction 1/4), and clamped
    y = act(x)
    assert torch.allclose(y.detach(), torch.tensor([[0.25], [2.0]]))
    y.sum().backward()
    # 0.25: t = 2.25, entries 2 and 3; 3.0 clamps to hi: last segment at fraction 1
    assert act.table.grad.tolist() == [[0.0, 0.0, 0.75, 0.25, 1.0]]
    assert x.grad.tolist() == [[1.0], [0.0]]                 # slope inside, zero outside


def test_lerp_module_starts_as_relu_and_checks_arguments():
    act = Lerp(3, grid=8)
    x = torch.linspace(-4, 4, 33)[:, None].repeat(1, 3)
    assert torch.allclose(act(x), torch.relu(x))
    for kwargs, message in [({"grid": 48}, "grid must be a power of two of at least 2, not 48"),
                            ({"lo": 1.0, "hi": 1.0}, r"finite with lo < hi, not \[1.0, 1.0\]"),
                            ({"init": "tanh"}, "init must be one of")]:
        with pytest.raises(ValueError, match=message):
            Lerp(2, **kwargs)


def test_ir_of_the_torch_model_computes_the_same():
    m = trained_looking_lerp_mlp()
    x = torch.randn(200, 4) * 3
    net = m.to_ir()
    np.testing.assert_allclose(net(x.numpy()), m(x).detach().numpy(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- ONNX round trip


def test_onnx_round_trip_keeps_the_tables_and_the_function():
    m = trained_looking_lerp_mlp()
    proto = export(m)
    ops = [(n.domain, n.op_type) for n in proto.graph.node if n.op_type != "Identity"]
    assert ops == [("", "Gemm"), ("pwlnet", "Lerp"), ("", "Gemm"), ("pwlnet", "Lerp"), ("", "Gemm")]
    net = import_model(proto, "m.onnx")
    acts = [l for l in net.layers if isinstance(l, Activation)]
    assert [type(a) for a in acts] == [Activation, Activation]
    for a, t in zip(acts, m.lerps):
        assert a.kind == "lerp" and (a.lo, a.hi) == (-3.0, 2.0)
        assert np.array_equal(a.table, t.table.detach().numpy().astype(np.float64))
    x = torch.randn(300, 4) * 3
    expect = m(x).detach().numpy()
    np.testing.assert_allclose(net(x.numpy()), expect, rtol=1e-5, atol=1e-5)
    # onnxruntime runs the model through the function body
    np.testing.assert_allclose(ort_run(proto, x.numpy()), expect, rtol=1e-4, atol=1e-4)  # float32
    assert not net.notices


def test_onnx_function_matches_interpolate_at_grid_points_edges_and_outside():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(3, 9)).astype(np.float32)
    lo, hi = -1.5, 2.5
    nodes = [oh.make_node("Lerp", ["x", "t", "r"], ["y"], domain=lerp.ONNX_DOMAIN, name="lerp")]
    model = graph_model(nodes, {"t": table, "r": np.array([lo, hi], np.float32)}, in_shape=("N", 3),
                        out_shape=("N", 3), opset=17)
    lerp.attach_onnx_function(model)
    z = np.concatenate([lerp.grid_points(lo, hi, 8), [-9.0, 9.0, hi - 1e-6, lo + 1e-6], rng.uniform(-3, 4, 50)])
    x = np.repeat(z[:, None], 3, axis=1).astype(np.float32)
    np.testing.assert_allclose(ort_run(model, x), lerp.interpolate(table, lo, hi, x), rtol=1e-5, atol=1e-5)


def test_lerp_node_with_a_wrong_table_is_refused():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Lerp", ["h", "t", "r"], ["y"], domain=lerp.ONNX_DOMAIN, name="bad")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32), "t": np.zeros((2, 5), np.float32),
                                "r": np.array([0.0, 1.0], np.float32)})
    lerp.attach_onnx_function(model)
    with pytest.raises(OnnxImportError, match=r"node 'bad' \(Lerp\): its table T has shape \(2, 5\); "
                                              r"\(3, G\+1\) with G >= 1 is needed"):
        import_model(model)


# --------------------------------------------------------------------------- foreign activations

FOREIGN = {
    "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "LeakyRelu": lambda: nn.LeakyReLU(0.1),
    "HardSigmoid": nn.Hardsigmoid, "HardSwish": nn.Hardswish, "Clip": nn.ReLU6, "Elu": nn.ELU,
    "Softplus": nn.Softplus, "GELU (Div, Erf, Add, Mul)": nn.GELU,
    "GELU tanh": lambda: nn.GELU(approximate="tanh"), "SiLU": nn.SiLU, "Mish": nn.Mish,
}


@pytest.mark.parametrize("name", list(FOREIGN))
def test_foreign_activation_imports_as_a_table_and_compiles(name):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 12), FOREIGN[name](), nn.Linear(12, 3))
    proto = export(m)
    net = import_model(proto, "m.onnx")
    assert [type(l).__name__ for l in net.layers] == ["Dense", "FunctionActivation", "Dense"]
    assert len(net.notices) == 1 and "imported as a LERP table of 64 segments" in net.notices[0]
    assert "max abs error" in net.notices[0]
    x = np.random.default_rng(1).normal(0, 2, (400, 4)).astype(np.float32)
    ref = ort_run(proto, x)
    np.testing.assert_allclose(net(x), ref, atol=0.03)
    model = q.quantize(net, x)
    assert model.layers[0].activation == "lerp"
    y, _ = golden.predict(model, x)
    assert np.abs(y - ref).mean() < 0.02 * np.abs(ref).mean() + 0.01


def test_function_ops_are_listed():
    assert {"Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "HardSwish", "Clip", "Elu", "Softplus",
            "Gelu", "Erf"} <= set(FUNCTION_OPS)


def test_gelu_op_of_opset_20():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Gelu", ["h"], ["y"], name="gelu", approximate="tanh")]
    w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    model = graph_model(nodes, {"w": w}, opset=20)
    net = import_model(model)
    x = np.random.default_rng(1).normal(size=(100, 4))
    h = x @ w
    expect = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
    np.testing.assert_allclose(net(x), expect, atol=0.02)


def test_clip_at_zero_without_maximum_is_a_relu():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Clip", ["h", "zero"], ["y"], name="clip")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32), "zero": np.array(0.0, np.float32)})
    net = import_model(model)
    assert [(type(l).__name__, getattr(l, "kind", None)) for l in net.layers] == [("Dense", None),
                                                                                 ("Activation", "relu")]


def test_adjacent_functions_become_one_table():
    torch.manual_seed(0)
    # ReLU, then tanh(0.5 * r) + 1: one function of the Linear's output
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.b(torch.tanh(torch.relu(self.a(x)) * 0.5) + 1.0)

    m = M()
    proto = export(m)
    net = import_model(proto)
    assert [type(l).__name__ for l in net.layers] == ["Dense", "FunctionActivation", "Dense"]
    assert net.layers[1].description == "Relu, Tanh"
    x = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float32)
    np.testing.assert_allclose(net(x), ort_run(proto, x), atol=0.01)


def test_grid_and_range_options():
    torch.manual_seed(0)
    proto = export(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)))
    net = import_model(proto, lerp_grid=16, lerp_range=(-3, 3))
    act = net.layers[1]
    assert act.table.shape == (3, 17) and (act.lo, act.hi) == (-3.0, 3.0) and not act.calibrate
    with pytest.raises(ValueError, match="the LERP grid must be a power of two of at least 2, not 12"):
        import_model(proto, lerp_grid=12)
    with pytest.raises(ValueError, match="the LERP range must be finite with lo < hi"):
        import_model(proto, lerp_range=(1, -1))


def test_function_not_finite_in_the_range_is_refused():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Exp", ["h"], ["e"], name="exp"),
             oh.make_node("Pow", ["e", "half"], ["y"], name="pow")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32), "half": np.array(-1000.0, np.float32)})
    with pytest.raises(OnnxImportError, match=r"is not finite at -8, inside the LERP range \[-8, 8\]"):
        import_model(model)


def test_branch_into_a_dense_layer_is_still_refused():
    # x * sigmoid(Linear(x)) is not a function of one variable
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Gemm", ["h", "v"], ["k"], name="g2"),
             oh.make_node("Sigmoid", ["k"], ["s"], name="sig"),
             oh.make_node("Mul", ["h", "s"], ["y"], name="mul")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32), "v": np.ones((3, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"value 'h' is used 2 times"):
        import_model(model)


def test_quantizer_keeps_a_fixed_import_range():
    torch.manual_seed(0)
    proto = export(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)))
    net = import_model(proto, lerp_range=(-6, 6))
    model = q.quantize(net, np.random.default_rng(0).normal(size=(100, 4)))
    assert np.allclose(model.layers[0].lerp_range, [[-6, 6]] * 3)
    assert isinstance(net.layers[0], Dense)


def test_roughness_is_the_squared_change_of_slope():
    act = Lerp(2, grid=8, lo=-2.0, hi=2.0)           # ReLU: one kink of slope change 1
    assert act.roughness().item() == pytest.approx(1 / 7)
    act = Lerp(2, grid=8, lo=-2.0, hi=2.0, init="identity")
    assert act.roughness().item() == pytest.approx(0.0, abs=1e-12)
