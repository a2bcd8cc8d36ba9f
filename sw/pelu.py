"""PeLU, the porcelain-emulated linear unit: a layer that conserves mass.

A PeLU layer from ``n_in`` to ``n_out`` pours input ``i`` (a volume ``v_i``) into a
bucket with a hole at height ``h_i**2``; what flows out of the hole, ``ReLU(v_i - h_i**2)``,
runs into pipes that split it among the outputs in the proportions
``P = softmax(A, dim=1)``, ``A`` of shape ``(n_in, n_out)``::

    y_o = sum_i ReLU(v_i - h_i**2) * P[i, o],      sum_o P[i, o] = 1 for every input i.

The softmax runs over the *output* axis (dim 1 of ``A``): row ``i`` of ``P`` is how input
``i``'s overflow is shared out, so nothing is created or lost in the pipes and

    sum_o y_o = sum_i ReLU(v_i - h_i**2) <= sum_i ReLU(v_i),

which for non-negative inputs is at most ``sum_i v_i``: a PeLU layer never puts out more
than it takes in.  (A softmax over the input axis would instead make each output a
weighted average of the inputs, which does not conserve anything.)  The learnable
parameters are ``h`` (squared, so the hole is never below the bottom) and ``A`` (through
the softmax, so the pipes' cross-sections are positive and sum to one).

:class:`PeluNet` is a stack of such layers behind a fixed input scale, the iris model of
the layer's original write-up (Hardmath123, "PeLU: Porcelain-Emulated Linear Unit",
2021): the four measurements in centimetres times 10, then PeLU 4 -> 3 and PeLU 3 -> 3;
the three output volumes are the class scores.  Iris measurements are all positive (the
smallest is a petal width of 0.1 cm), so the model receives raw, non-negative features:
no standardisation, which would make inputs negative and break the conservation.
:func:`train_pelu` refuses data with a negative feature.

In ONNX (``torch.onnx.export``, what ``pwlnet train --model pelu`` writes) a PeLU layer is
``Sub(v, h*h) -> Relu -> MatMul(softmax(A))``, the softmax either constant-folded by the
exporter or left as a ``Softmax`` node on the parameter.  :mod:`pwlnet.onnx_import`
recognises the split weights and marks the dense layers ``keep_mass``, and the quantizer
rounds them so that the *integer* model conserves mass too
(:func:`pwlnet.quantize.keep_mass`; docs/pelu.md).
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import data, ir

__all__ = ["PeLU", "PeluNet", "DEFAULT_INPUT_SCALE", "DEFAULT_HIDDEN", "DEFAULT_EPOCHS", "DEFAULT_LR",
           "train_pelu", "integer_masses"]

#: The write-up's input scaling: iris measurements in millimetres rather than centimetres.
DEFAULT_INPUT_SCALE = 10.0
#: Widths between input and output: 4 -> 3 -> 3 on iris.
DEFAULT_HIDDEN = (3,)
#: Epochs and Adam learning rate of ``pwlnet train --model pelu`` (iris trains in seconds).
DEFAULT_EPOCHS = 300
DEFAULT_LR = 0.05


def _positive_int(value, what):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


class PeLU(nn.Module):
    """``y = ReLU(v - h**2) @ softmax(A, dim=1)``: buckets with holes feeding pipes.

    Parameters
    ----------
    in_features, out_features : int
    h_init : float
        Upper end of the uniform initialisation of ``h`` (holes start at heights
        ``h**2`` in ``[0, h_init**2]``).

    Attributes
    ----------
    h : Parameter, shape (in_features,)
        The square root of each bucket's hole height.
    A : Parameter, shape (in_features, out_features)
        Pipe logits; ``softmax(A, dim=1)[i, o]`` is the share of input ``i``'s overflow
        that reaches output ``o`` (each row sums to one).
    """

    def __init__(self, in_features: int, out_features: int, h_init: float = 1.0):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.h = nn.Parameter(torch.rand(self.in_features) * float(h_init))
        self.A = nn.Parameter(torch.randn(self.in_features, self.out_features))

    def split(self):
        """The pipes ``softmax(A, dim=1)``, shape ``(in_features, out_features)``."""
        return torch.softmax(self.A, dim=1)

    def forward(self, v):
        # h * h rather than h ** 2: exported as Mul, which any ONNX reader folds.
        return torch.relu(v - self.h * self.h) @ self.split()

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class PeluNet(nn.Module):
    """A fixed input scale, then PeLU layers ``input_dim -> *hidden -> output_dim``.

    The output volumes are the class scores (used as logits in training; their sum is
    at most ``input_scale`` times the sum of non-negative inputs).
    """

    def __init__(self, input_dim: int, hidden: Iterable[int], output_dim: int,
                 input_scale: float = DEFAULT_INPUT_SCALE):
        super().__init__()
        self.input_dim = _positive_int(input_dim, "input_dim")
        self.output_dim = _positive_int(output_dim, "output_dim")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
            raise ValueError(f"hidden must be a sequence of positive integers, not {hidden!r}")
        self.hidden = tuple(_positive_int(h, f"hidden layer size {i}") for i, h in enumerate(hidden))
        if not (isinstance(input_scale, numbers.Real) and math.isfinite(input_scale) and input_scale > 0):
            raise ValueError(f"input_scale must be a positive number, not {input_scale!r}")
        self.input_scale = float(input_scale)
        # A buffer, so that the export holds it as an initializer of one Mul node.
        self.register_buffer("scale", torch.tensor(self.input_scale))
        dims = (self.input_dim, *self.hidden, self.output_dim)
        self.layers = nn.ModuleList(PeLU(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x):
        v = x * self.scale
        for layer in self.layers:
            v = layer(v)
        return v

    def to_ir(self, metadata: dict | None = None) -> ir.Network:
        """The network as the importer reads its export: ``Dense(s I, -h1**2), ReLU, Dense(P1^T, -h2**2), ReLU, ...``.

        Every dense layer is marked ``keep_mass``; float64 copies of the parameters (the
        softmax taken in float64).
        """
        layers = []
        scale = np.full(self.input_dim, self.input_scale)
        weight = np.diag(scale)
        for k, layer in enumerate(self.layers):
            h = layer.h.detach().cpu().double().numpy()
            layers += [ir.Dense(weight, -h * h, name=f"dense{k}", keep_mass=True), ir.Activation("relu", name=f"relu{k}")]
            weight = _at_most_one(torch.softmax(layer.A.detach().cpu().double(), dim=1).numpy().T)
        layers.append(ir.Dense(weight, np.zeros(len(weight)), name=f"dense{len(self.layers)}", keep_mass=True))
        return ir.Network(layers, (self.input_dim,), metadata=dict(metadata or {}), source="PeluNet")


def _at_most_one(weight):
    """``weight (n_out, n_in)`` with each column's exact sum at most 1 (the largest entry
    nudged down by an ulp while rounding left it above), as the importer does."""
    from fractions import Fraction

    weight = np.array(weight, dtype=np.float64)
    for i in range(weight.shape[1]):
        while sum((Fraction(float(v)) for v in weight[:, i]), Fraction(0)) > 1:
            o = int(np.argmax(weight[:, i]))
            weight[o, i] = np.nextafter(weight[o, i], 0.0)
    return weight


def train_pelu(dataset, hidden=DEFAULT_HIDDEN, epochs: int | None = None, lr: float | None = None,
               seed: int = 0, batch_size: int = 32, *, weight_decay: float = 0.0, threads: int = 1,
               input_scale: float = DEFAULT_INPUT_SCALE, verbose: bool = True):
    """Train a :class:`PeluNet` classifier with Adam and cross-entropy on the output volumes.

    Takes the arguments of :func:`pwlnet.train.train` that apply (``epochs`` defaults to
    :data:`DEFAULT_EPOCHS`, ``lr`` to :data:`DEFAULT_LR`) and returns the fields of a
    :class:`pwlnet.train.TrainResult` as a dict (:func:`pwlnet.train.train` makes the
    result; this module stays below it) with ``activation="pelu"``, ``input_mean`` 0 and
    ``input_std`` 1 (nothing is folded: the model takes raw features).

    Raises
    ------
    ValueError
        If a training or test feature is negative: the buckets hold volumes.
    """
    ds = dataset if isinstance(dataset, data.Dataset) else data.load(dataset)
    for split, x in (("training", ds.x_train), ("test", ds.x_test)):
        if np.min(x) < 0:
            j = int(np.argmin(np.min(x, axis=0)))
            raise ValueError(f"{ds.name}: PeLU models take non-negative inputs (volumes), but feature {j} "
                             f"of the {split} split goes down to {float(np.min(x[:, j])):.4g}")
    hidden = tuple(hidden)
    epochs = DEFAULT_EPOCHS if epochs is None else _positive_int(epochs, "epochs")
    lr = DEFAULT_LR if lr is None else float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, not {lr!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    x_train = torch.tensor(np.asarray(ds.x_train, dtype=np.float32))
    y_train = torch.tensor(ds.y_train)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(_positive_int(threads, "threads"))
    try:
        torch.manual_seed(seed)
        model = PeluNet(ds.input_dim, hidden, ds.n_classes, input_scale=input_scale)
        batches = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        n, losses = len(y_train), []
        model.train()
        for _ in tqdm(range(epochs), desc=f"train {ds.name} (PeLU)", unit="epoch", file=sys.stderr,
                      disable=not verbose, dynamic_ncols=True):
            order = torch.randperm(n, generator=batches)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                opt.zero_grad()
                loss = loss_fn(model(x_train[idx]), y_train[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            losses.append(total / n)
        model.eval()
        with torch.no_grad():
            test_acc, train_acc = (float((model(torch.tensor(np.asarray(x, dtype=np.float32))).argmax(dim=1).numpy()
                                          == np.asarray(y)).mean())
                                   for x, y in ((ds.x_test, ds.y_test), (ds.x_train, ds.y_train)))
    finally:
        torch.set_num_threads(old_threads)
    if verbose:
        print(f"{ds.name}: PeLU {' -> '.join(map(str, (ds.input_dim, *hidden, ds.n_classes)))}, inputs x "
              f"{input_scale:g}, {epochs} epochs: float test accuracy {test_acc:.4f} (train {train_acc:.4f})")
    return dict(
        model=model, dataset=ds.name, hidden=hidden, input_mean=np.zeros(ds.input_dim),
        input_std=np.ones(ds.input_dim), float_test_accuracy=test_acc, train_accuracy=train_acc,
        losses=losses, epochs=epochs, lr=lr, seed=int(seed), batch_size=batch_size,
        weight_decay=float(weight_decay), class_names=ds.class_names, feature_names=ds.feature_names,
        activation="pelu", data_file=getattr(ds, "path", None))


def integer_masses(model, codes):
    """Per-layer masses of a compiled model's integer forward pass, as exact fractions.

    Returns a list of ``len(model.layers) + 1`` lists (one per input vector): entry 0 is
    the input mass ``sum_i s_i * (q_i - z_i)`` (the dequantized input), entry ``l + 1``
    the dequantized output mass of layer ``l``, ``out_scale * sum_o y_o``.  Scales are
    floats, hence exact binary fractions: no tolerance enters a comparison.
    """
    from fractions import Fraction

    from . import golden

    codes = np.asarray(codes, dtype=np.int64)
    trace = golden.trace(model, codes)
    scale = [Fraction(float(s)) for s in np.asarray(model.input_scale, dtype=np.float64).reshape(-1)]
    zero = np.asarray(model.input_zero_point, dtype=np.int64).reshape(-1)
    out = [[sum((s * int(q - z) for s, q, z in zip(scale, row, zero)), Fraction(0)) for row in codes]]
    for layer, (_, y) in zip(model.layers, trace):
        s = Fraction(float(layer.out_scale))
        out.append([s * int(v) for v in np.asarray(y, dtype=np.int64).sum(axis=1)])
    return out
