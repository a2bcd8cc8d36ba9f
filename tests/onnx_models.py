"""Small models for the ONNX importer tests: torch modules and hand-built graphs.

Torch models are exported with the TorchScript exporter (``dynamo=False``) as the
importer's users do; hand-built graphs (:func:`graph_model`) cover what torch never
emits (Gemm attribute variants, Constant-node weights, malformed graphs).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh

__all__ = [
    "ORT_IR_VERSION",
    "export_torch",
    "graph_model",
    "ort_run",
    "torch_models",
]

#: IR version of hand-built models; the newest onnx writes a version onnxruntime may
#: not read yet.
ORT_IR_VERSION = 8


def ort_run(model_or_path, x):
    """Run a model (path or ModelProto) on ``x`` with onnxruntime on the CPU."""
    import onnxruntime as ort

    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: not the advice about initializers as inputs
    sess = ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, dtype=np.float32)})[0]


def export_torch(module, path, sample_shape, opset, *, training=None, n_inputs=1, **kwargs):
    """Export ``module`` in eval mode with a dynamic batch axis; return ``path``.

    ``kwargs`` go to ``torch.onnx.export`` (for example ``do_constant_folding``).
    """
    import torch

    module.eval()
    args = tuple(torch.randn(3, *sample_shape) for _ in range(n_inputs))
    names = ["x"] + [f"x{i}" for i in range(1, n_inputs)]
    kw = dict(kwargs) if training is None else {"training": training, **kwargs}
    torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                      input_names=names, dynamic_axes={"x": {0: "N"}}, **kw)
    return path


def graph_model(nodes, inits=(), in_shape=("N", 4), out_shape=("N", 3), *, opset=13,
                inputs=None, outputs=None, in_type=onnx.TensorProto.FLOAT):
    """A model from ``onnx.helper`` parts; ``inits`` is a dict or pairs of name, array."""
    inits = dict(inits)
    initializers = [onh.from_array(np.asarray(v), name=k) for k, v in inits.items()]
    if inputs is None:
        inputs = [oh.make_tensor_value_info("x", in_type, list(in_shape))]
    if outputs is None:
        outputs = [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(out_shape))]
    graph = oh.make_graph(nodes, "g", inputs, outputs, initializers)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = ORT_IR_VERSION
    return model


def torch_models():
    """Name -> (factory, per-sample input shape) for the torch round-trip tests.

    Factories build fresh modules with non-trivial BatchNorm statistics, so a
    BatchNorm left unfolded or folded the wrong way shows in the outputs.
    """
    import torch
    from torch import nn

    def bn(n):
        b = nn.BatchNorm1d(n)
        with torch.no_grad():
            b.weight.uniform_(0.5, 2.0)
            b.bias.uniform_(-1.0, 1.0)
            b.running_mean.uniform_(-1.0, 1.0)
            b.running_var.uniform_(0.5, 2.0)
        return b

    class AffineParams(nn.Module):
        """``x @ W + b`` with bare parameters: exported as MatMul and Add."""

        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(6, 5))
            self.b1 = nn.Parameter(torch.randn(5))
            self.w2 = nn.Parameter(torch.randn(5, 3))
            self.b2 = nn.Parameter(torch.randn(3))

        def forward(self, x):
            h = torch.relu(x @ self.w1 + self.b1)
            return self.b2 + h @ self.w2  # the bias first: Add(b, MatMul)

    class View(nn.Module):
        """``x.view(x.size(0), -1)``: Shape/Gather/Unsqueeze/Concat feeding Reshape."""

        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))

    class Standardise(nn.Module):
        """Input standardisation in the model, then a view built from three sizes."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mu", torch.randn(2, 4))
            self.register_buffer("sd", torch.rand(4) + 0.5)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            x = (x - self.mu) / self.sd
            return self.fc(x.view(x.shape[0], x.shape[1] * x.shape[2]))

    class ReshapeConst(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return torch.relu(self.fc(x.reshape(-1, 8) * 2.0))

    return {
        # BatchNorm after a dense layer: folded into it.
        "bn_after_dense": (lambda: nn.Sequential(nn.Linear(6, 5), bn(5), nn.ReLU(), nn.Linear(5, 3)), (6,)),
        # BatchNorm after an activation, before a dense layer: folded forward.
        "bn_before_dense": (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), bn(5), nn.Linear(5, 3)), (6,)),
        # BatchNorm on the raw input, and on a (N, C, L) input before the flatten.
        "bn_on_input": (lambda: nn.Sequential(bn(6), nn.Linear(6, 3)), (6,)),
        "bn_channels_then_flatten": (lambda: nn.Sequential(bn(2), nn.Flatten(), nn.Linear(8, 3)), (2, 4)),
        "matmul_add": (AffineParams, (6,)),
        "flatten": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)), (2, 4)),
        "view": (View, (2, 4)),
        "standardise_view": (Standardise, (2, 4)),
        "reshape_const": (ReshapeConst, (2, 4)),
        "dropout": (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3)), (6,)),
        "softmax": (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.Softmax(dim=1)), (6,)),
        "log_softmax": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(8, 5), bn(5), nn.ReLU(),
                                              nn.Linear(5, 3), nn.LogSoftmax(dim=-1)), (2, 4)),
    }
