"""Train a binarized MLP in torch (straight-through estimator) and export fastinference-style ONNX.

``python -m pwlnet.binary_train --dataset digits --out X.onnx`` (and, once wired,
``pwlnet train --dataset NAME --binary``) trains

    normalize -> [BinaryLinear -> BatchNorm1d -> step] * len(hidden) -> BinaryLinear [-> BatchNorm1d]

where a binary Linear uses the sign of its latent weights and biases (``> 0`` is +1,
as the step) in the forward pass and passes the gradient straight through where the
latent value lies in [-1, 1] (Courbariaux et al., "Binarized Neural Networks", 2016;
the latent weights are clipped to [-1, 1] after each update).  The step does the same
on the activations.

The export is the sanitised graph :mod:`pwlnet.binary_onnx` imports: ``Sub`` and ``Mul``
(the input normalization: each feature's mean, one common gain unless ``--standardize``),
then per layer an ordinary ``Gemm`` holding the +-1 weights and biases,
``BatchNormalization`` and ``torch.where(x > 0, 1., -1.)`` (``Constant -> Greater ->
Constant -> Constant -> Where``), and a trailing ``LogSoftmax``;
TorchScript exporter, opset 11.  Metadata: ``pwlnet.dataset``, ``pwlnet.model`` =
``"binary"``, ``pwlnet.hidden``, ``pwlnet.class_names``, ``pwlnet.float_test_accuracy``,
``pwlnet.train``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data

__all__ = ["BinaryMLP", "Step", "train_binary", "export_binary_onnx", "cli_train_binary", "main",
           "DEFAULT_HIDDEN", "ONNX_OPSET"]

DEFAULT_HIDDEN = (64,)
ONNX_OPSET = 11


class _SignSTE(torch.autograd.Function):
    """+1 where ``x > 0`` else -1; gradient passed where ``|x| <= 1`` (hard-tanh STE)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class Step(nn.Module):
    """The sign step as fastinference's sanitised graphs write it (exported as Greater/Where)."""

    def forward(self, x):
        return torch.where(x > 0, torch.tensor([1.0]), torch.tensor([-1.0]))


class _BinaryLinear(nn.Linear):
    def forward(self, x):
        return nn.functional.linear(x, _SignSTE.apply(self.weight), _SignSTE.apply(self.bias))


class _Standardize(nn.Module):
    def __init__(self, mean, inv_std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(inv_std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) * self.inv_std


class BinaryMLP(nn.Module):
    """Binarized MLP for training (STE); :meth:`sanitized` gives the exportable float twin."""

    def __init__(self, input_dim, hidden, n_classes, mean, inv_std, last_bn=True):
        super().__init__()
        self.norm = _Standardize(mean, inv_std)
        dims = [input_dim, *hidden]
        self.linears = nn.ModuleList(_BinaryLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(b) for b in hidden)
        self.out = _BinaryLinear(dims[-1], n_classes)
        self.out_bn = nn.BatchNorm1d(n_classes) if last_bn else None
        for lin in [*self.linears, self.out]:
            nn.init.uniform_(lin.weight, -1, 1)
            nn.init.uniform_(lin.bias, -1, 1)

    #: Width of uniform noise added to the normalized inputs while training (0: none).
    code_noise = 0.0

    def forward(self, x):
        x = self.norm(x)
        if self.training and self.code_noise:
            x = x + (torch.rand_like(x) - 0.5) * self.code_noise
        for lin, bn in zip(self.linears, self.bns):
            x = _SignSTE.apply(bn(lin(x)))
        x = self.out(x)
        return self.out_bn(x) if self.out_bn is not None else x

    def clip_(self):
        with torch.no_grad():
            for lin in [*self.linears, self.out]:
                lin.weight.clamp_(-1, 1)
                lin.bias.clamp_(-1, 1)

    def sanitized(self) -> nn.Sequential:
        """Plain modules: Linear layers holding the +-1 weights and biases, BatchNorm1d, :class:`Step`."""
        def plain(lin):
            p = nn.Linear(lin.in_features, lin.out_features)
            with torch.no_grad():
                p.weight.copy_(torch.where(lin.weight > 0, 1.0, -1.0))
                p.bias.copy_(torch.where(lin.bias > 0, 1.0, -1.0))
            return p
        mods = [copy.deepcopy(self.norm)]
        for lin, bn in zip(self.linears, self.bns):
            mods += [plain(lin), copy.deepcopy(bn), Step()]
        mods.append(plain(self.out))
        if self.out_bn is not None:
            mods.append(copy.deepcopy(self.out_bn))
        mods.append(nn.LogSoftmax(dim=1))
        return nn.Sequential(*mods).eval()


@dataclasses.dataclass
class BinaryTrainResult:
    model: BinaryMLP
    dataset: str
    hidden: tuple
    class_names: tuple
    float_test_accuracy: float
    settings: dict


def train_binary(dataset, hidden=DEFAULT_HIDDEN, *, epochs=60, lr=0.01, seed=0, batch_size=64, last_bn=True,
                 threads=1, code_noise=0.0, standardize=False) -> BinaryTrainResult:
    """Train a binarized MLP on a data set (name or :class:`pwlnet.data.Dataset`).

    ``standardize``: ``False`` (default) subtracts each feature's mean and scales all
    features by one gain (the mean std): the first layer's +-1 weights then see every
    feature in its own units, as a plain Linear on raw inputs would, and a common grid of
    the raw inputs (integer pixels) stays exact in the input codes; ``True`` scales each
    feature by its own std (better where features differ by orders of magnitude, e.g.
    Daphnet, at the price of coarser input codes for the narrow ones).

    ``code_noise``: while training, add uniform noise of that many 8-bit input-code
    steps to the normalized inputs (one step spans the
    widest normalized feature range of the training split over 255 codes), so that the
    decisions learnt hold through the first layer's input coding."""
    ds = data.load(dataset) if isinstance(dataset, str) else dataset
    hidden = tuple(int(h) for h in hidden)
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"hidden must be one or more positive widths, not {hidden!r}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        x = torch.tensor(np.array(ds.x_train, np.float32))
        y = torch.tensor(np.array(ds.y_train, np.int64))
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        inv_std = torch.where(std > 0, 1 / std, torch.ones_like(std))
        if not standardize:
            # one gain for every feature (the pooled std): the input coding can keep a
            # common grid such as integer pixel values exact (pwlnet.binary_onnx.calibrate)
            inv_std = torch.full_like(std, float(1 / std[std > 0].mean()) if bool((std > 0).any()) else 1.0)
        model = BinaryMLP(x.shape[1], hidden, len(ds.class_names), mean, inv_std, last_bn=last_bn)
        if code_noise:
            xn = (x - mean) * inv_std
            step = float((xn.max(0).values - xn.min(0).values).max()) / 255
            model.code_noise = float(code_noise) * step
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                idx = perm[i:i + batch_size]
                if len(idx) < 2:
                    continue
                opt.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
                model.clip_()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(torch.tensor(np.array(ds.x_test, np.float32))).argmax(1).numpy() == ds.y_test).mean())
    finally:
        torch.set_num_threads(old_threads)
    return BinaryTrainResult(model=model, dataset=ds.name, hidden=hidden, class_names=tuple(ds.class_names),
                             float_test_accuracy=acc,
                             settings={"epochs": epochs, "lr": lr, "seed": seed, "batch_size": batch_size,
                                       "last_bn": last_bn, "code_noise": code_noise, "standardize": standardize})


def export_binary_onnx(result: BinaryTrainResult, path, opset=ONNX_OPSET) -> Path:
    """Write the sanitised graph (TorchScript exporter, ``opset``) with pwlnet metadata."""
    import onnx
    seq = result.model.sanitized()
    d = int(result.model.norm.mean.shape[0])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that writes the Greater/Where step as
        # fastinference documents it; torch warns about choosing it, and about the
        # constant tensors of torch.where, from our own call site.
        warnings.simplefilter("ignore")
        torch.onnx.export(seq, (torch.zeros(1, d),), buf, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, {
        "pwlnet.dataset": result.dataset, "pwlnet.model": "binary",
        "pwlnet.hidden": ",".join(map(str, result.hidden)),
        "pwlnet.class_names": json.dumps(list(result.class_names)),
        "pwlnet.float_test_accuracy": f"{result.float_test_accuracy:.6f}",
        "pwlnet.train": json.dumps(result.settings)})
    onnx.checker.check_model(proto)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(proto.SerializeToString())
    tmp.replace(path)
    return path


def _hidden(spec):
    try:
        return tuple(int(h) for h in str(spec).split(",") if h.strip())
    except ValueError:
        raise ValueError(f"--hidden must be comma-separated widths such as 64,64, not {spec!r}") from None


def cli_train_binary(args) -> int:
    """``pwlnet train --dataset NAME --binary``: ``dataset``, ``out``, optional ``hidden``
    (``"64"``; the parser's MLP default ``"64,64"`` is taken as given), ``epochs``, ``lr``,
    ``seed``, ``batch_size``, ``code_noise`` (float), ``standardize`` (bool)."""
    def opt(name, default):
        v = getattr(args, name, None)
        return default if v is None else v
    if args.dataset not in data.DATASETS:
        raise ValueError(f"unknown data set {args.dataset!r}; choose one of {', '.join(data.DATASETS)}")
    hidden = _hidden(opt("hidden", ",".join(map(str, DEFAULT_HIDDEN))))
    res = train_binary(args.dataset, hidden, epochs=opt("epochs", 60), lr=opt("lr", 0.01), seed=opt("seed", 0),
                       batch_size=opt("batch_size", 64), code_noise=opt("code_noise", 0.0),
                       standardize=bool(opt("standardize", False)))
    export_binary_onnx(res, args.out)
    print(f"wrote {args.out}: binarized {res.dataset} {'-'.join(map(str, hidden))}, float test accuracy "
          f"{100 * res.float_test_accuracy:.2f} %")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pwlnet.binary_train", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help=", ".join(data.DATASETS))
    p.add_argument("--out", required=True, metavar="X.onnx")
    p.add_argument("--hidden", default=",".join(map(str, DEFAULT_HIDDEN)), help="hidden widths (default 64)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--code-noise", type=float, default=0.0, metavar="STEPS",
                   help="train with uniform noise of this many 8-bit input-code steps on the inputs")
    p.add_argument("--standardize", action="store_true",
                   help="scale each feature by its own std (default: one gain for all features, which keeps "
                        "integer inputs exact codes)")
    return cli_train_binary(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
