"""Tests of :mod:`pwlnet.onnx_import` against onnxruntime on torch-exported models."""

import math
import os

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from hypothesis import given, settings, strategies as st

from pwlnet.ir import Activation, Dense, Network
from pwlnet.onnx_import import (FOLDABLE_OPS, SUPPORTED_OPS, OnnxImportError, import_model,
                                load_onnx)

from helpers import export_torch, graph_model, ort_run, torch_models

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

# torch.onnx.export(dynamo=False) warns that the TorchScript exporter is deprecated on
# every call; it is the exporter this importer is specified against, so only that
# warning is silenced.
pytestmark = pytest.mark.filterwarnings(
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")

OPSETS = (11, 13, 17)
TORCH_MODELS = torch_models()


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _inputs(shape, n=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _assert_matches_ort(net, model_or_path, shape):
    x = _inputs(shape)
    np.testing.assert_allclose(net(x), ort_run(model_or_path, x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- torch exports


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_torch_export_matches_onnxruntime(tmp_path, name, opset):
    torch.manual_seed(opset)
    factory, shape = TORCH_MODELS[name]
    path = export_torch(factory(), tmp_path / f"{name}.onnx", shape, opset)
    net = load_onnx(path)

    assert isinstance(net, Network)
    assert net.input_shape == shape
    assert net.source == str(path)
    x = _inputs(shape)
    got, want = net(x), ort_run(path, x)
    if name == "softmax":
        got = _softmax(got)
    elif name == "log_softmax":
        got = np.log(_softmax(got))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.array_equal(net(x).argmax(axis=1), want.argmax(axis=1))
    # Every BatchNormalization, Add, Sub, Div and Mul was folded away: only dense
    # layers and ReLUs are left, alternating.
    assert all(isinstance(l, (Dense, Activation)) for l in net.layers)


@pytest.mark.parametrize("opset", OPSETS)
def test_matmul_add_become_dense_layers_with_bias(tmp_path, opset):
    torch.manual_seed(1)
    factory, shape = TORCH_MODELS["matmul_add"]
    module = factory()
    net = load_onnx(export_torch(module, tmp_path / "m.onnx", shape, opset))
    kinds = [type(l).__name__ for l in net.layers]
    assert kinds == ["Dense", "Activation", "Dense"]
    np.testing.assert_allclose(net.layers[0].weight, module.w1.detach().numpy().T)
    np.testing.assert_allclose(net.layers[0].bias, module.b1.detach().numpy())
    np.testing.assert_allclose(net.layers[2].bias, module.b2.detach().numpy())


@pytest.mark.parametrize("name", ["bn_after_dense", "bn_before_dense", "bn_on_input"])
def test_batchnorm_folds_into_a_neighbouring_dense_layer(tmp_path, name):
    torch.manual_seed(2)
    factory, shape = TORCH_MODELS[name]
    net = load_onnx(export_torch(factory(), tmp_path / "m.onnx", shape, 17))
    n_dense = sum(isinstance(l, torch.nn.Linear) for l in factory().modules())
    assert [type(l) for l in net.layers].count(Dense) == n_dense
    assert not net.notices


@pytest.mark.parametrize("name, op", [("softmax", "Softmax"), ("log_softmax", "LogSoftmax")])
def test_trailing_softmax_is_dropped_with_a_notice(tmp_path, name, op):
    factory, shape = TORCH_MODELS[name]
    net = load_onnx(export_torch(factory(), tmp_path / "m.onnx", shape, 13))
    assert len(net.notices) == 1
    assert f"({op})" in net.notices[0] and "argmax" in net.notices[0]
    assert isinstance(net.layers[-1], Dense)


def test_metadata_and_source_are_recorded(tmp_path):
    factory, shape = TORCH_MODELS["flatten"]
    path = export_torch(factory(), tmp_path / "m.onnx", shape, 17)
    model = onnx.load(path)
    oh.set_model_props(model, {"dataset": "toy", "input_mean": "[0.5, 1.5]"})
    onnx.save(model, path)
    net = load_onnx(os.fspath(path))
    assert net.metadata == {"dataset": "toy", "input_mean": "[0.5, 1.5]"}
    assert net.source == str(path)
    assert net.input_shape == (2, 4) and net.input_dim == 8 and net.output_dim == 3


@pytest.mark.filterwarnings("ignore:You are exporting the model in training mode with onnx opset version 11")
def test_dropout_node_opset11_is_skipped(tmp_path):
    # In training-mode export torch keeps the Dropout node; at opset 11 ONNX defines
    # Dropout as the identity at inference, which is what onnxruntime runs.
    torch.manual_seed(3)
    factory, shape = TORCH_MODELS["dropout"]
    path = export_torch(factory(), tmp_path / "m.onnx", shape, 11,
                        training=torch.onnx.TrainingMode.TRAINING)
    assert "Dropout" in [n.op_type for n in onnx.load(path).graph.node]
    net = load_onnx(path)
    _assert_matches_ort(net, path, shape)


@pytest.mark.parametrize("opset", [13, 17])
def test_dropout_in_training_mode_is_refused_and_in_inference_mode_skipped(tmp_path, opset):
    factory, shape = TORCH_MODELS["dropout"]
    path = export_torch(factory(), tmp_path / "m.onnx", shape, opset,
                        training=torch.onnx.TrainingMode.TRAINING)
    with pytest.raises(OnnxImportError, match=r"node '/2/Dropout' \(Dropout\): training_mode is true"):
        load_onnx(path)
    # Switch the exported training_mode constant off: now it is the identity.
    model = onnx.load(path)
    dropout = next(n for n in model.graph.node if n.op_type == "Dropout")
    for node in model.graph.node:
        if node.output[0] == dropout.input[2]:
            node.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(False)))
    onnx.save(model, path)
    _assert_matches_ort(load_onnx(path), path, shape)


def test_identity_nodes_from_default_batchnorm_are_followed(tmp_path):
    # A fresh BatchNorm1d has weight == running_var == 1 and bias == running_mean == 0;
    # the exporter then shares the tensors through Identity nodes.
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    path = export_torch(module, tmp_path / "m.onnx", (4,), 17)
    assert "Identity" in [n.op_type for n in onnx.load(path).graph.node]
    _assert_matches_ort(load_onnx(path), path, (4,))


def test_constant_node_weights(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    b = np.array([1.0, -1.0, 0.5], dtype=np.float32)
    nodes = [
        oh.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(w)),
        oh.make_node("Constant", [], ["b"], value_floats=b.tolist()),
        oh.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        oh.make_node("Add", ["h", "b"], ["y"], name="add"),
    ]
    model = graph_model(nodes)
    net = import_model(model)
    assert net.source == "<model>" and len(net.layers) == 1
    _assert_matches_ort(net, model, (4,))


def test_constant_transpose_of_weight_is_evaluated():
    w = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    nodes = [
        oh.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        oh.make_node("MatMul", ["x", "wt"], ["y"], name="mm"),
    ]
    model = graph_model(nodes, {"w": w})
    _assert_matches_ort(import_model(model), model, (4,))


@pytest.mark.parametrize("option", [{"do_constant_folding": False}, {"keep_initializers_as_inputs": True}])
@pytest.mark.parametrize("name", ["view", "standardise_view", "bn_channels_then_flatten", "matmul_add"])
def test_other_export_options(tmp_path, name, option):
    # Without constant folding the shape chains stay longer; with initializers as
    # inputs (the pre-IR-4 style) the weights are listed among the graph inputs.
    torch.manual_seed(5)
    factory, shape = TORCH_MODELS[name]
    path = export_torch(factory(), tmp_path / "m.onnx", shape, 11, **option)
    _assert_matches_ort(load_onnx(path), path, shape)


def test_unnamed_nodes_name_layers_after_their_outputs():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["hidden"]), oh.make_node("Relu", ["hidden"], ["y"])]
    net = import_model(graph_model(nodes, {"w": np.ones((4, 3), np.float32)}))
    assert [l.name for l in net.layers] == ["hidden", "y"]


def test_file_path_is_a_pathlike_or_str(tmp_path):
    factory, shape = TORCH_MODELS["flatten"]
    path = export_torch(factory(), tmp_path / "m.onnx", shape, 17)
    assert load_onnx(path).source == load_onnx(str(path)).source == str(path)


@settings(max_examples=40, deadline=None)
@given(trans_b=st.booleans(),
       alpha=st.sampled_from([1.0, 0.5, -2.0]),
       beta=st.sampled_from([1.0, 0.0, 3.0]),
       c_shape=st.sampled_from([None, (3,), (1, 3), (), (1,), (1, 1)]),
       seed=st.integers(0, 2**16))
def test_gemm_attributes_match_onnxruntime(trans_b, alpha, beta, c_shape, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 4) if trans_b else (4, 3)).astype(np.float32)
    inits = {"w": w}
    ins = ["x", "w"]
    if c_shape is not None:
        inits["c"] = rng.normal(size=c_shape).astype(np.float32)
        ins.append("c")
    node = oh.make_node("Gemm", ins, ["y"], name="gemm", alpha=alpha, beta=beta, transB=int(trans_b))
    model = graph_model([node], inits)
    net = import_model(model)
    x = _inputs((4,), n=16, seed=seed)
    np.testing.assert_allclose(net(x), ort_run(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", [[0, -1], [-1, 8], [0, 8]])
def test_reshape_targets_meaning_batch_by_features(target):
    nodes = [oh.make_node("Reshape", ["x", "t"], ["f"], name="reshape"),
             oh.make_node("Gemm", ["f", "w"], ["y"], name="gemm")]
    model = graph_model(nodes, {"t": np.array(target, dtype=np.int64),
                                "w": np.ones((8, 3), dtype=np.float32)}, in_shape=("N", 2, 4))
    _assert_matches_ort(import_model(model), model, (2, 4))


def test_fixed_batch_axis_is_still_the_batch_axis(tmp_path):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
    path = tmp_path / "m.onnx"
    torch.onnx.export(module.eval(), (torch.randn(1, 2, 4),), str(path), dynamo=False, opset_version=17)
    net = load_onnx(path)
    assert net.input_shape == (2, 4)
    x = _inputs((2, 4), n=1)
    np.testing.assert_allclose(net(x), ort_run(path, x), rtol=1e-5, atol=1e-5)


def test_consecutive_relus_collapse():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="gemm"),
             oh.make_node("Relu", ["h"], ["r1"], name="r1"),
             oh.make_node("Relu", ["r1"], ["y"], name="r2")]
    model = graph_model(nodes, {"w": np.ones((4, 3), dtype=np.float32)})
    net = import_model(model)
    assert [type(l) for l in net.layers] == [Dense, Activation]


def test_supported_op_lists():
    for op in ("Gemm", "MatMul", "Add", "Relu", "Flatten", "Reshape", "BatchNormalization",
               "Identity", "Dropout", "Softmax", "LogSoftmax"):
        assert op in SUPPORTED_OPS
    assert {"Constant", "Shape", "Gather", "Unsqueeze", "Concat"} <= set(FOLDABLE_OPS)
    assert issubclass(OnnxImportError, ValueError)


# ----------------------------------------------------------------------------- refusals


def test_conv_is_refused_naming_node_op_and_supported_ops(tmp_path):
    module = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(6, 2))
    path = export_torch(module, tmp_path / "conv.onnx", (2, 4), 17)
    with pytest.raises(OnnxImportError) as info:
        load_onnx(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: node '/0/Conv' (Conv): op type 'Conv' is not supported")
    assert "Supported ops: Gemm, MatMul, Relu" in msg
    assert info.value.node == "/0/Conv" and info.value.op_type == "Conv"
    assert info.value.source == str(path)


def test_discontinuous_elementwise_op_is_refused(tmp_path):
    # Tanh and friends import as LERP tables (tests/test_lerp_onnx.py); a step such as
    # Sign has no faithful table and stays unsupported.
    class Sign(torch.nn.Module):
        def forward(self, x):
            return torch.sign(x)

    module = torch.nn.Sequential(torch.nn.Linear(4, 3), Sign(), torch.nn.Linear(3, 2))
    path = export_torch(module, tmp_path / "m.onnx", (4,), 13)
    with pytest.raises(OnnxImportError, match=r"node '/1/Sign' \(Sign\): op type 'Sign' is not supported"):
        load_onnx(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(OnnxImportError, match=f"^{path}: no such file$"):
        load_onnx(path)


def test_directory(tmp_path):
    with pytest.raises(OnnxImportError, match="is a directory"):
        load_onnx(tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    path.chmod(0)
    try:
        with pytest.raises(OnnxImportError, match="cannot be read"):
            load_onnx(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a model\n", b"\x08\x07\x12\xff\xff"])
def test_not_onnx(tmp_path, content):
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxImportError, match=f"^{path}: is not (a valid )?(an )?ONNX model"):
        load_onnx(path)


def test_truncated_file(tmp_path):
    factory, shape = TORCH_MODELS["flatten"]
    path = export_torch(factory(), tmp_path / "m.onnx", shape, 17)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(OnnxImportError, match=f"^{path}: is not"):
        load_onnx(path)


def test_two_graph_outputs(tmp_path):
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            h = self.fc(x)
            return h, torch.relu(h)

    path = export_torch(TwoHeads(), tmp_path / "m.onnx", (4,), 13)
    with pytest.raises(OnnxImportError, match=r"the graph has 2 outputs"):
        load_onnx(path)


def test_weight_as_graph_input(tmp_path):
    class XW(torch.nn.Module):
        def forward(self, x, w):
            return x @ w

    path = export_torch(XW(), tmp_path / "m.onnx", (4, 4), 13, n_inputs=2)
    with pytest.raises(OnnxImportError,
                       match=r"node '/MatMul' \(MatMul\): its input 1 'x1' is a graph input, not a constant"):
        load_onnx(path)


def test_extra_unused_graph_input():
    inputs = [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4]),
              oh.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["N", 4])]
    model = graph_model([oh.make_node("Gemm", ["x", "w"], ["y"], name="g")],
                        {"w": np.ones((4, 3), np.float32)}, inputs=inputs)
    with pytest.raises(OnnxImportError, match=r"the graph has 2 inputs \['x', 'z'\]"):
        import_model(model, "two.onnx")


def test_residual_branch_is_refused(tmp_path):
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.relu(h)) + h

    path = export_torch(Residual(), tmp_path / "m.onnx", (4,), 17)
    with pytest.raises(OnnxImportError,
                       match=r"value '/a/Gemm_output_0' is used 2 times .*'/Relu' \(Relu\).*'/Add' \(Add\)"):
        load_onnx(path)


def test_value_used_twice_by_one_node():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Add", ["h", "h"], ["y"], name="twice")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"'h' is used 2 times"):
        import_model(model)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weight(tmp_path, bad):
    module = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with torch.no_grad():
        module[0].weight[1, 2] = bad
    path = export_torch(module, tmp_path / "m.onnx", (4,), 13)
    with pytest.raises(OnnxImportError,
                       match=rf"node '/0/Gemm' \(Gemm\): its weight B '0.weight' \(input 1\) holds "
                             rf"{bad!r} at index \[1, 2\]"):
        load_onnx(path)


def test_non_finite_batchnorm_statistic(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    module[1].running_mean[0] = math.nan
    path = export_torch(module, tmp_path / "m.onnx", (4,), 13)
    with pytest.raises(OnnxImportError, match=r"\(BatchNormalization\): its running mean .* holds nan"):
        load_onnx(path)


@pytest.mark.parametrize("op, w_shape, msg", [
    ("Gemm", (5, 3), r"node 'layer' \(Gemm\): shape mismatch: its weight B is 5x3 but the input has 4 features"),
    ("MatMul", (5, 3), r"node 'layer' \(MatMul\): shape mismatch: its weight is 5x3 but the input has 4"),
    ("MatMul", (4,), r"node 'layer' \(MatMul\): its weight has shape \(4,\); a 2-D"),
])
def test_weight_shape_mismatch(op, w_shape, msg):
    model = graph_model([oh.make_node(op, ["x", "w"], ["y"], name="layer")],
                        {"w": np.ones(w_shape, np.float32)})
    with pytest.raises(OnnxImportError, match="^bad.onnx: " + msg):
        import_model(model, "bad.onnx")


def test_bias_varying_per_sample_is_refused():
    model = graph_model([oh.make_node("Gemm", ["x", "w", "c"], ["y"], name="g")],
                        {"w": np.ones((4, 3), np.float32), "c": np.ones((2, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"its bias C has shape \(2, 3\)"):
        import_model(model)


def test_add_growing_the_data_is_refused():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Add", ["h", "c"], ["y"], name="add")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32), "c": np.ones((5, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"node 'add' \(Add\): its constant operand has shape \(5, 3\)"):
        import_model(model)


def test_gemm_transa_on_data_is_refused():
    model = graph_model([oh.make_node("Gemm", ["x", "w"], ["y"], name="g", transA=1)],
                        {"w": np.ones((4, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"node 'g' \(Gemm\): transA=1 on the network input"):
        import_model(model)


@pytest.mark.parametrize("alpha, beta, what", [(float("nan"), 1.0, "alpha = nan makes the weights"),
                                               (float("-inf"), 1.0, "alpha = -inf makes the weights"),
                                               (1.0, float("inf"), "beta = inf makes the bias")])
def test_gemm_attributes_making_weights_non_finite_are_refused(alpha, beta, what):
    # (the importer fuzzer's case 7495: alpha=nan on a softmax-split layer crashed the split check)
    model = graph_model([oh.make_node("Gemm", ["x", "w", "b"], ["y"], name="g", alpha=alpha, beta=beta)],
                        {"w": np.full((4, 3), 10.0, np.float32), "b": np.ones(3, np.float32)})
    with pytest.raises(OnnxImportError, match=rf"node 'g' \(Gemm\): its {what} non-finite; weights must be finite"):
        import_model(model)


def test_gemm_with_weight_as_operand_a_is_refused():
    model = graph_model([oh.make_node("Gemm", ["w", "x"], ["y"], name="g", transA=1, transB=1)],
                        {"w": np.ones((4, 3), np.float32)}, out_shape=(3, "N"))
    with pytest.raises(OnnxImportError, match=r"node 'g' \(Gemm\): the network input enters as operand B"):
        import_model(model)


def test_matmul_with_data_second_is_refused():
    # With a batch of 5 fixed, W (3x5) @ x (5x4) is well-typed but sums over samples.
    model = graph_model([oh.make_node("MatMul", ["w", "x"], ["y"], name="mm")],
                        {"w": np.ones((3, 5), np.float32)}, in_shape=(5, 4), out_shape=(3, 4))
    with pytest.raises(OnnxImportError, match=r"node 'mm' \(MatMul\): the network input enters as the second"):
        import_model(model)


def test_flatten_with_wrong_axis():
    nodes = [oh.make_node("Flatten", ["x"], ["f"], name="flat", axis=2),
             oh.make_node("Gemm", ["f", "w"], ["y"], name="g")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32)}, in_shape=("N", 2, 4))
    with pytest.raises(OnnxImportError, match=r"node 'flat' \(Flatten\): axis=2 would not give \(batch, features\)"):
        import_model(model)


@pytest.mark.parametrize("target", [[-1, 4], [2, -1], [0, 2, 4], [0, 0]])
def test_reshape_not_to_batch_by_features(target):
    nodes = [oh.make_node("Reshape", ["x", "t"], ["f"], name="rs"),
             oh.make_node("Gemm", ["f", "w"], ["y"], name="g")]
    model = graph_model(nodes, {"t": np.array(target, np.int64), "w": np.ones((8, 3), np.float32)},
                        in_shape=("N", 2, 4))
    with pytest.raises(OnnxImportError, match=r"node 'rs' \(Reshape\): reshapes \(N, 2, 4\) to .*"
                                              r"only a reshape to \(batch, 8\) is supported"):
        import_model(model)


def test_dense_on_unflattened_input():
    model = graph_model([oh.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                        {"w": np.ones((4, 3), np.float32)}, in_shape=("N", 2, 4), out_shape=("N", 2, 3))
    with pytest.raises(OnnxImportError, match=r"needs a \(batch, features\) input but receives \(N, 2, 4\)"):
        import_model(model)


def test_softmax_in_the_middle_is_refused(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1), torch.nn.Linear(3, 2))
    path = export_torch(module, tmp_path / "m.onnx", (4,), 13)
    with pytest.raises(OnnxImportError, match=r"node '/1/Softmax' \(Softmax\) can only be dropped as the last "
                                              r"operation, but node '/2/Gemm' \(Gemm\) follows it"):
        load_onnx(path)


def test_softmax_across_the_batch_is_refused():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Softmax", ["h"], ["y"], name="sm", axis=0)]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"node 'sm' \(Softmax\): axis=0 normalises across the batch"):
        import_model(model)


def test_batchnorm_after_final_relu_cannot_fold(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.BatchNorm1d(3))
    path = export_torch(module, tmp_path / "m.onnx", (4,), 17)
    with pytest.raises(OnnxImportError, match=r"'/2/BatchNormalization' \(BatchNormalization\) cannot be folded"):
        load_onnx(path)


def test_batchnorm_between_relus_cannot_fold(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.BatchNorm1d(3),
                                 torch.nn.ReLU(), torch.nn.Linear(3, 2))
    path = export_torch(module, tmp_path / "m.onnx", (4,), 17)
    with pytest.raises(OnnxImportError, match=r"cannot be folded into a dense layer: it sits between an "
                                              r"activation and node '/3/Relu'"):
        load_onnx(path)


def test_batchnorm_in_training_mode_is_refused():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["y"], name="bn", training_mode=1)]
    ones = np.ones(3, np.float32)
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32), "s": ones, "b": ones, "m": ones, "v": ones},
                        opset=15)
    with pytest.raises(OnnxImportError, match=r"node 'bn' \(BatchNormalization\): training_mode=1"):
        import_model(model)


def test_network_must_start_with_a_dense_layer():
    nodes = [oh.make_node("Relu", ["x"], ["r"], name="first"),
             oh.make_node("Gemm", ["r", "w"], ["y"], name="g")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"must start with a dense layer, but node 'first' \(Relu\)"):
        import_model(model)


def test_division_by_zero_constant():
    nodes = [oh.make_node("Div", ["x", "d"], ["s"], name="div"),
             oh.make_node("Gemm", ["s", "w"], ["y"], name="g")]
    model = graph_model(nodes, {"d": np.array([1, 2, 0, 4], np.float32), "w": np.ones((4, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"node 'div' \(Div\): its divisor holds a zero at index \[2\]"):
        import_model(model)


def test_old_opset_is_lifted():
    model = graph_model([oh.make_node("MatMul", ["x", "w"], ["y"], name="g")],
                        {"w": np.ones((4, 3), np.float32)}, opset=9)
    net = import_model(model)
    assert [type(l) for l in net.layers] == [Dense]
    assert "opset 9 was lifted to opset 11" in net.notices[0]


def test_future_opset_is_refused():
    model = graph_model([oh.make_node("MatMul", ["x", "w"], ["y"], name="g")],
                        {"w": np.ones((4, 3), np.float32)}, opset=13)
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 1
    with pytest.raises(OnnxImportError, match=r"opset \d+ is not supported; pwlnet imports opsets 11 to"):
        import_model(model)


def test_dynamic_feature_axis_is_refused():
    model = graph_model([oh.make_node("Gemm", ["x", "w"], ["y"], name="g")],
                        {"w": np.ones((4, 3), np.float32)}, in_shape=("N", "F"))
    with pytest.raises(OnnxImportError, match=r"graph input 'x': axis 1 has size 'F'"):
        import_model(model)


def test_integer_input_is_refused():
    model = graph_model([oh.make_node("Relu", ["x"], ["y"], name="r")], in_type=onnx.TensorProto.INT32)
    with pytest.raises(OnnxImportError, match=r"graph input 'x' has element type INT32"):
        import_model(model)


def test_declared_output_shape_mismatch():
    model = graph_model([oh.make_node("Gemm", ["x", "w"], ["y"], name="g")],
                        {"w": np.ones((4, 3), np.float32)}, out_shape=("N", 5))
    with pytest.raises(OnnxImportError, match=r"graph output 'y' is declared with shape \(N, 5\) but the "
                                              r"layers compute \(N, 3\)"):
        import_model(model)


def test_output_not_depending_on_input():
    nodes = [oh.make_node("Identity", ["c"], ["y"], name="id")]
    model = graph_model(nodes, {"c": np.ones((1, 3), np.float32)})
    with pytest.raises(OnnxImportError, match=r"graph output 'y' does not depend on the graph input"):
        import_model(model)


def test_batch_size_in_arithmetic_is_refused():
    # Shape(x)[0] * 2 as a reshape target: not a per-sample flatten, and pwlnet
    # does not compute with the symbolic batch size.
    nodes = [oh.make_node("Shape", ["x"], ["s"]),
             oh.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             oh.make_node("Mul", ["n", "two"], ["n2"], name="double"),
             oh.make_node("Unsqueeze", ["n2", "axes"], ["n2v"]),
             oh.make_node("Concat", ["n2v", "four"], ["t"], axis=0),
             oh.make_node("Reshape", ["x", "t"], ["f"], name="rs"),
             oh.make_node("Gemm", ["f", "w"], ["y"], name="g")]
    inits = {"zero": np.array(0, np.int64), "two": np.array(2, np.int64), "axes": np.array([0], np.int64),
             "four": np.array([4], np.int64), "w": np.ones((4, 3), np.float32)}
    model = graph_model(nodes, inits, in_shape=("N", 8))
    with pytest.raises(OnnxImportError, match=r"node 'double' \(Mul\): it computes with the batch size"):
        import_model(model)


def test_unnamed_node_is_described_by_index_and_output():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"]), oh.make_node("Sign", ["h"], ["y"])]
    with pytest.raises(OnnxImportError, match=r"^<model>: unnamed node #1 \(Sign, output 'y'\): op type 'Sign'"):
        import_model(graph_model(nodes, {"w": np.ones((4, 3), np.float32)}))


def test_unknown_attribute_is_refused_not_ignored(monkeypatch):
    # The checker rejects attributes outside the schema; this guards against a future
    # opset adding one to an op pwlnet translates.
    monkeypatch.setattr(onnx.checker, "check_model", lambda model: None)
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Relu", ["h"], ["y"], name="r", slope=0.1)]
    with pytest.raises(OnnxImportError, match=r"node 'r' \(Relu\): attribute 'slope' is not supported "
                                              r"\(supported attributes: none\)"):
        import_model(graph_model(nodes, {"w": np.ones((4, 3), np.float32)}))


def test_unknown_domain_is_refused():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("FusedThing", ["h"], ["y"], name="f", domain="com.example")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32)})
    model.opset_import.append(oh.make_opsetid("com.example", 1))
    with pytest.raises(OnnxImportError, match=r"node 'f' \(FusedThing\): op type 'FusedThing' of domain "
                                              r"'com.example' is not supported. Supported ops:"):
        import_model(model)


def test_network_without_dense_layer():
    model = graph_model([oh.make_node("Flatten", ["x"], ["y"], name="f")], out_shape=("N", 4))
    with pytest.raises(OnnxImportError, match=r"^m.onnx: holds no dense layer$"):
        import_model(model, "m.onnx")


def test_not_a_model_proto():
    with pytest.raises(OnnxImportError, match="expected an onnx.ModelProto"):
        import_model(b"bytes")


# ----------------------------------------------------------------------------- every problem at once


def test_every_unsupported_node_is_listed_in_one_error():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Sign", ["h"], ["s"], name="sign"),
             oh.make_node("Floor", ["s"], ["f"]),
             oh.make_node("FusedThing", ["f"], ["y"], name="fused", domain="com.example")]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32)})
    model.opset_import.append(oh.make_opsetid("com.example", 1))
    with pytest.raises(OnnxImportError) as info:
        import_model(model, "m.onnx")
    msg = str(info.value)
    assert msg.startswith("m.onnx: 3 nodes use ops pwlnet does not support: node 'sign' (Sign); "
                          "unnamed node #2 (Floor, output 'f'); node 'fused' (FusedThing) of domain "
                          "'com.example'. Supported ops: Gemm, MatMul, Relu")
    assert info.value.nodes == [("sign", "Sign"), ("", "Floor"), ("fused", "FusedThing")]
    assert (info.value.node, info.value.op_type, info.value.source) == ("sign", "Sign", "m.onnx")


def test_the_conv_is_named_not_the_unsqueeze_in_front_of_it(tmp_path):
    class ConvOnVector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 2, 3)
            self.pool = torch.nn.MaxPool1d(2)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.pool(self.conv(x.unsqueeze(1))).flatten(1))

    path = export_torch(ConvOnVector(), tmp_path / "conv.onnx", (6,), 13)
    with pytest.raises(OnnxImportError) as info:
        load_onnx(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 2 nodes use ops pwlnet does not support: node '/conv/Conv' (Conv); "
                          f"node '/pool/MaxPool' (MaxPool). Supported ops:")
    assert "Unsqueeze" not in msg.split(". Supported ops:")[0]
    assert [op for _, op in info.value.nodes] == ["Conv", "MaxPool"]


def test_a_node_nothing_depends_on_is_not_listed():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["y"], name="g"),
             oh.make_node("Sign", ["w"], ["unused"], name="stray")]
    net = import_model(graph_model(nodes, {"w": np.ones((4, 3), np.float32)}))
    assert [type(l) for l in net.layers] == [Dense]


# ----------------------------------------------------------------------------- old opsets


@pytest.mark.parametrize("opset", (7, 9, 10))
def test_old_torch_export_is_lifted_with_a_notice(tmp_path, opset):
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                 torch.nn.Dropout(0.2), torch.nn.Linear(8, 3)).eval()
    with torch.no_grad():
        module[1].running_mean.uniform_(-1, 1)
        module[1].running_var.uniform_(0.5, 2)
    path = export_torch(module, tmp_path / "old.onnx", (4,), opset)
    net = load_onnx(path)
    assert net.notices[0] == (f"the model's opset {opset} was lifted to opset 11 with onnx's version "
                              f"converter before import")
    _assert_matches_ort(net, path, (4,))


def test_old_opset_the_converter_cannot_lift_is_refused_naming_opset_and_why():
    nodes = [oh.make_node("MatMul", ["x", "w"], ["h"], name="g"),
             oh.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["y"], name="bn", spatial=0)]
    inits = {"w": np.ones((4, 3), np.float32), "s": np.ones(3, np.float32), "b": np.zeros(3, np.float32),
             "m": np.zeros(3, np.float32), "v": np.ones(3, np.float32)}
    with pytest.raises(OnnxImportError, match=r"^m.onnx: opset 8 is older than the opsets pwlnet imports "
                                              r"\(11 to \d+\) and onnx's version converter could not lift "
                                              r"it to opset 11: Attribute spatial must have value 1 \(re-export"):
        import_model(graph_model(nodes, inits, opset=8), "m.onnx")


# ----------------------------------------------------------------------------- found by pwlnet.fuzz


def test_checker_message_with_a_name_that_is_not_utf8(tmp_path):
    # The checker refuses the node (Gemm needs two inputs) and quotes its name; the name's
    # bytes are not UTF-8, so the checker's own message cannot be decoded.
    model = graph_model([oh.make_node("Gemm", ["x"], ["y"], name="zzzz")], {"w": np.ones((4, 3), np.float32)})
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString().replace(b"zzzz", b"\xfc\xfd\xfe\xff"))
    with pytest.raises(OnnxImportError, match=f"^{path}: is not a valid ONNX model: it holds a name or "
                                              f"string that is not UTF-8"):
        load_onnx(path)


def test_input_element_type_no_onnx_version_defines():
    # The checker lets an unknown element type of a graph input through.
    model = graph_model([oh.make_node("Gemm", ["x", "w"], ["y"], name="g")], {"w": np.ones((4, 3), np.float32)})
    model.graph.input[0].type.tensor_type.elem_type = 47
    with pytest.raises(OnnxImportError, match=r"^m.onnx: graph input 'x' has element type 47 \(not an ONNX "
                                              r"data type\); a floating-point input is needed"):
        import_model(model, "m.onnx")


@pytest.mark.parametrize("where", ("node name", "metadata value"))
def test_names_and_metadata_that_are_not_utf8(tmp_path, where):
    # protobuf hands such strings to Python as bytes; they reached the compiled model's JSON.
    model = graph_model([oh.make_node("Gemm", ["x", "w"], ["y"], name="zzzz" if where == "node name" else "g")],
                        {"w": np.ones((4, 3), np.float32)})
    oh.set_model_props(model, {"pwlnet.note": "zzzz" if where == "metadata value" else "ok"})
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString().replace(b"zzzz", b"\xfc\xfd\xfe\xff"))
    what = "node #0's name" if where == "node name" else "metadata value of 'pwlnet.note'"
    with pytest.raises(OnnxImportError, match=f"^{path}: is not a valid ONNX model: {what} is not UTF-8 text "
                                              r"\(b'\\xfc\\xfd\\xfe\\xff'\)$"):
        load_onnx(path)


# ----------------------------------------------------------------------------- several outputs


def _two_heads():
    nodes = [oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
             oh.make_node("Relu", ["h"], ["r"], name="relu")]
    outputs = [oh.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", 3]) for n in ("h", "r")]
    w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    return graph_model(nodes, {"w": w}, outputs=outputs)


@pytest.mark.parametrize("output", ("h", "r"))
def test_output_picks_one_of_several_heads(output):
    model = _two_heads()
    net = import_model(model, output=output)
    assert [type(l) for l in net.layers] == ([Dense] if output == "h" else [Dense, Activation])
    assert net.reference_output == output
    x = _inputs((4,))
    np.testing.assert_allclose(net(x), ort_run(model, x) if output == "h" else np.maximum(ort_run(model, x), 0),
                               rtol=1e-5, atol=1e-5)


def test_several_heads_without_output_are_refused_naming_the_option():
    with pytest.raises(OnnxImportError, match=r"^m.onnx: the graph has 2 outputs \['h', 'r'\], and they are not "
                                              r"views of the same scores; pwlnet imports one: name it with "
                                              r"--output NAME"):
        import_model(_two_heads(), "m.onnx")


@pytest.mark.parametrize("attrs, msg", [({"axis": 0}, r"is an ArgMax over axis 0, across the batch"),
                                        ({"axis": 1, "select_last_index": 1}, r"is an ArgMax with select_last_index=1")])
def test_a_label_output_the_engine_cannot_give_is_refused(attrs, msg):
    nodes = [oh.make_node("Gemm", ["x", "w"], ["y"], name="g"),
             oh.make_node("ArgMax", ["y"], ["label"], name="am", **attrs)]
    outputs = [oh.make_tensor_value_info("label", onnx.TensorProto.INT64, ["N", 1]),
               oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32)}, outputs=outputs)
    with pytest.raises(OnnxImportError, match=rf"^m.onnx: node 'am' \(ArgMax\): graph output 'label' {msg}"):
        import_model(model, "m.onnx")
    assert len(import_model(model, output="y").layers) == 1


def test_cast_of_the_data_to_an_integer_is_refused():
    nodes = [oh.make_node("Cast", ["x"], ["c"], name="c", to=onnx.TensorProto.INT32),
             oh.make_node("Gemm", ["c", "w"], ["y"], name="g")]
    with pytest.raises(OnnxImportError, match=r"node 'c' \(Cast\): it casts the network's values to INT32, "
                                              r"which rounds them"):
        import_model(graph_model(nodes, {"w": np.ones((4, 3), np.float32)}))


def _label_model(classes):
    nodes = [oh.make_node("Gemm", ["x", "w"], ["y"], name="g"),
             oh.make_node("ArgMax", ["y"], ["am"], name="am", axis=1),
             oh.make_node("ArrayFeatureExtractor", ["classes", "am"], ["label"], name="afe", domain="ai.onnx.ml")]
    outputs = [oh.make_tensor_value_info("label", onnx.TensorProto.INT64, ["N", 1]),
               oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])]
    model = graph_model(nodes, {"w": np.ones((4, 3), np.float32), "classes": np.asarray(classes, np.int64)},
                        outputs=outputs)
    model.opset_import.append(oh.make_opsetid("ai.onnx.ml", 1))
    return model


def test_label_class_list_must_have_one_entry_per_output():
    # Found by pwlnet.fuzz (a mutated skl2onnx-like classifier): onnxruntime fails on
    # such a model only when the argmax lands past the list.
    assert len(import_model(_label_model([0, 1, 2])).layers) == 1
    with pytest.raises(OnnxImportError, match=r"^m.onnx: node 'afe' \(ArrayFeatureExtractor\): graph output "
                                              r"'label' looks the argmax up in a class list of 2 entries, but "
                                              r"the network has 3 outputs$"):
        import_model(_label_model([0, 1]), "m.onnx")
    assert len(import_model(_label_model([0, 1]), output="y").layers) == 1
