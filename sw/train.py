"""Train an MLP (:class:`~pwlnet.models.ReluMLP`, :class:`~pwlnet.models.LerpMLP`) on a data set; export ONNX.

The exported file is self-contained: input standardisation (mean and std of the
training inputs) is folded into the first layer, so it takes *raw* data set features
and returns logits.  What the exporter knows beside the weights is stored in the ONNX
``metadata_props``:

=============================  ==========================================================
key                            value
=============================  ==========================================================
``pwlnet.dataset``             data set name (:data:`pwlnet.data.DATASETS`)
``pwlnet.hidden``              hidden widths, ``"64,64"``
``pwlnet.activation``          ``"relu"``, ``"lerp"`` or ``"pelu"`` (a PeLU model)
``pwlnet.model``               ``"pelu"`` (PeLU models only; MLPs write no such key)
``pwlnet.pelu``                JSON object (PeLU models only): input_scale
``pwlnet.lerp``                JSON object (LERP models only): grid, range, init, smoothness
``pwlnet.float_test_accuracy`` float accuracy of the exported model on the test split
``pwlnet.input_mean``          JSON list, the folded mean (informational)
``pwlnet.input_std``           JSON list, the folded std (informational; 0 became 1)
``pwlnet.class_names``         JSON list
``pwlnet.feature_names``       JSON list
``pwlnet.train``               JSON object: epochs, lr, seed, batch_size, weight_decay
``pwlnet.region_margin``       JSON object (region-aware training only): gamma (input
                               codes), weight, metric, fraction, ramp, code_bits,
                               boundary
``pwlnet.data_file``           the ``.npz`` a model trained with ``--data`` learnt from
=============================  ==========================================================

Region-aware training (``region_margin=GAMMA``) adds :func:`pwlnet.margin.region_margin`
and :func:`pwlnet.margin.boundary_margin` to the loss: they push the hidden neurons'
hyperplanes and the decision boundaries ``GAMMA`` input codes away from the training
inputs, so that the hypersphere cache's safe balls around real inputs are that wide
(docs/cache.md).  The code width of each feature is the compiled model's (the
compiler's input quantizer on the training split, the data ``pwlnet compile``
calibrates on by default).

``model="pelu"`` (``pwlnet train --model pelu``) trains a :class:`pwlnet.pelu.PeluNet`
instead, mass-conserving PeLU layers behind a fixed input scale, on raw non-negative
features (see :mod:`pwlnet.pelu`); it exports as ``Mul, Sub, Relu, MatMul, ...``.

A LERP model's activations export as ``pwlnet.Lerp`` nodes whose tables are
initializers, with the model-local ONNX function that lets any runtime run them (see
:mod:`pwlnet.lerp`).

Training is deterministic for a given seed and thread count: torch and numpy are
seeded, batches are drawn from a private :class:`torch.Generator`, and torch runs on a
fixed small number of threads.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import numbers
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import data, fixedpoint
from . import lerp as lerp_np
from . import margin as margin_mod
from .lerp import parse_range
from .models import LerpMLP, ReluMLP

__all__ = [
    "DEFAULT_HIDDEN",
    "DEFAULT_EPOCHS",
    "DEFAULT_STEPS",
    "DEFAULT_LR",
    "DEFAULT_SEED",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_THREADS",
    "ACTIVATIONS",
    "MODELS",
    "DEFAULT_SMOOTHNESS",
    "ONNX_OPSET",
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "TrainResult",
    "parse_hidden",
    "parse_range",
    "standardization",
    "accuracy",
    "train",
    "onnx_metadata",
    "export_onnx",
    "cli_train",
]

DEFAULT_HIDDEN = (64, 64)
#: Epochs per data set, chosen so that each trains in seconds on 2 CPU cores and the
#: test accuracy has levelled off (roughly equal numbers of optimizer steps).
DEFAULT_EPOCHS = {"iris": 200, "digits": 30, "basicmotions": 100, "daphnet": 50}
#: Optimizer steps a data set of one's own gets by default (the built-in sets get about
#: this many from :data:`DEFAULT_EPOCHS`), between 10 and 500 epochs.
DEFAULT_STEPS = 1400
DEFAULT_LR = 1e-3
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 32
#: Threads torch may use while training.  These models are too small to gain from more,
#: spinning worker threads slow down badly on a busy machine, and a fixed count keeps
#: float reductions, hence results, reproducible.
DEFAULT_THREADS = 1

#: Hidden-layer activations :func:`train` offers.
ACTIVATIONS = ("relu", "lerp")
#: Model families :func:`train` offers: an MLP (ReLU or LERP) or a PeLU network.
MODELS = ("mlp", "pelu")
#: Weight of the LERP tables' roughness penalty (mean squared change of slope, see
#: :meth:`pwlnet.models.Lerp.roughness`) in the training loss.  On digits anything from
#: 0.01 to 2 did about equally well at widths 16 and 32; without it (or at 1e-3) width 16
#: lost about a point of test accuracy.
DEFAULT_SMOOTHNESS = 0.1

ONNX_OPSET = 17
ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"


@dataclasses.dataclass(eq=False)
class TrainResult:
    """A trained model and how it was made.

    Attributes
    ----------
    model : ReluMLP, LerpMLP or pwlnet.pelu.PeluNet
        In eval mode, standardisation folded in (a PeluNet has none): takes raw features.
    dataset : str
    hidden : tuple of int
    input_mean, input_std : numpy.ndarray
        float64, the standardisation folded into ``model`` (std 0 replaced by 1).
    float_test_accuracy : float
        Accuracy of ``model`` (float32) on the raw test split.
    train_accuracy : float
    losses : list of float
        Mean training cross-entropy per epoch.
    epochs, lr, seed, batch_size, weight_decay
        The hyperparameters used.
    class_names, feature_names : tuple of str
    activation : str
        ``"relu"``, ``"lerp"`` or ``"pelu"`` (a PeLU network).
    lerp : dict
        For LERP models: ``grid``, ``range``, ``init``, ``smoothness``; else empty.
    region : dict
        For region-aware training: ``gamma``, ``weight``, ``metric``, ``fraction``,
        ``ramp``, ``code_bits``, ``boundary``; else empty.
    data_file : str or None
        The ``.npz`` the model was trained on, when not a built-in data set.
    """

    model: ReluMLP | LerpMLP
    dataset: str
    hidden: tuple
    input_mean: np.ndarray
    input_std: np.ndarray
    float_test_accuracy: float
    train_accuracy: float
    losses: list
    epochs: int
    lr: float
    seed: int
    batch_size: int
    weight_decay: float
    class_names: tuple
    feature_names: tuple
    activation: str = "relu"
    lerp: dict = dataclasses.field(default_factory=dict)
    region: dict = dataclasses.field(default_factory=dict)
    data_file: str | None = None


def parse_hidden(spec) -> tuple:
    """Parse hidden layer widths such as ``"64,64"`` into ``(64, 64)``.

    Raises
    ------
    ValueError
        Naming the spec, unless it is comma-separated positive integers.
    """
    if not isinstance(spec, str):
        raise ValueError(f"hidden layer sizes must be a string like '64,64', not {spec!r}")
    parts = [p.strip() for p in spec.split(",")]
    if not all(p.isdecimal() and int(p) > 0 for p in parts):
        raise ValueError(f"hidden layer sizes must be comma-separated positive integers "
                         f"like '64,64', not {spec!r}")
    return tuple(int(p) for p in parts)


def standardization(x) -> tuple:
    """Per-feature ``(mean, std)`` of ``x`` in float64; a std of 0 becomes 1.

    A constant feature (digits has pixels that are always 0) then passes through
    centred but unscaled, instead of dividing by zero.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return mean, std


@torch.no_grad()
def accuracy(model: torch.nn.Module, x, y) -> float:
    """Fraction of rows of ``x`` whose arg-max logit equals ``y``."""
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.tensor(np.asarray(x, dtype=np.float32)))
    finally:
        model.train(was_training)
    return float((logits.argmax(dim=1).numpy() == np.asarray(y)).mean())


def _default_epochs(n_train, batch_size):
    return int(min(500, max(10, round(DEFAULT_STEPS * batch_size / max(n_train, 1)))))


def _check_positive(value, what, kind):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and value > 0 and (kind is float or isinstance(value, numbers.Integral))
    if not ok:
        noun = "integer" if kind is int else "number"
        raise ValueError(f"{what} must be a positive {noun}, not {value!r}")
    return kind(value)


@contextlib.contextmanager
def _torch_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _region_settings(region_margin, activation, weight, metric, fraction, ramp, boundary, code_bits):
    """The checked settings of region-aware training (``{}`` for plain training)."""
    if region_margin is None:
        return {}
    if activation != "relu":
        raise ValueError("region-aware training (region_margin) needs ReLU hidden layers, "
                         f"not activation={activation!r}")
    gamma = _check_positive(region_margin, "region_margin (the wanted radius in input codes)", float)
    if not (isinstance(weight, numbers.Real) and math.isfinite(weight) and weight >= 0):
        raise ValueError(f"region_weight must be a non-negative number, not {weight!r}")
    if metric not in margin_mod.METRICS:
        raise ValueError(f"region_metric must be one of {', '.join(margin_mod.METRICS)}, not {metric!r}")
    fraction = _check_positive(fraction, "region_fraction", float)
    if fraction > 1:
        raise ValueError(f"region_fraction must be at most 1, not {fraction!r}")
    if not (isinstance(ramp, numbers.Real) and 0 <= ramp <= 1):
        raise ValueError(f"region_ramp must be a number in [0, 1], not {ramp!r}")
    fixedpoint.check_bits(code_bits, "code_bits")
    return {"gamma": gamma, "weight": float(weight), "metric": metric, "fraction": fraction,
            "ramp": float(ramp), "code_bits": int(code_bits), "boundary": bool(boundary)}


def _fit(model, x_train, y_train, *, epochs, lr, seed, batch_size, weight_decay, margin, region, smoothness,
         lerp, verbose, desc):
    """Adam on cross-entropy (plus the region and smoothness penalties); the loss per epoch."""
    ramp_epochs = region["ramp"] * epochs if region else 0.0
    batches = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(y_train)
    losses = []
    model.train()
    with tqdm(range(epochs), desc=desc, unit="epoch", file=sys.stderr,
              disable=not verbose, dynamic_ncols=True) as bar:
        for epoch in bar:
            order = torch.randperm(n, generator=batches)
            total = 0.0
            n_batches = -(-n // batch_size)
            for b, start in enumerate(range(0, n, batch_size)):
                idx = order[start:start + batch_size]
                opt.zero_grad()
                if margin is None:
                    loss = loss_fn(model(x_train[idx]), y_train[idx])
                else:
                    dist, logits = margin.distances(model, x_train[idx])
                    progress = epoch + b / n_batches
                    weight = region["weight"] * (min(1.0, progress / ramp_epochs) if ramp_epochs > 0 else 1.0)
                    penalty = margin(model, x_train[idx], dist)
                    if region["boundary"]:
                        penalty = penalty + margin.boundary(model, x_train[idx], y_train[idx])
                    loss = loss_fn(logits, y_train[idx]) + weight * penalty
                if lerp and smoothness > 0:
                    loss = loss + smoothness * model.roughness()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            losses.append(total / n)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses


def train(dataset, hidden=DEFAULT_HIDDEN, epochs: int | None = None, lr: float | None = None,
          seed: int = DEFAULT_SEED, batch_size: int = DEFAULT_BATCH_SIZE, *,
          weight_decay: float = 0.0, threads: int = DEFAULT_THREADS,
          verbose: bool = True, activation: str = "relu", grid: int = lerp_np.DEFAULT_GRID,
          lerp_range=lerp_np.DEFAULT_RANGE, lerp_init: str = "relu",
          smoothness: float = DEFAULT_SMOOTHNESS, region_margin: float | None = None,
          region_weight: float = margin_mod.DEFAULT_WEIGHT, region_metric: str = "linf",
          region_fraction: float = margin_mod.DEFAULT_FRACTION,
          region_ramp: float = margin_mod.DEFAULT_RAMP, region_boundary: bool = True,
          code_bits: int = 8, model: str = "mlp") -> TrainResult:
    """Train a ReLU or LERP MLP (or a PeLU network) classifier with Adam and cross-entropy.

    Parameters
    ----------
    dataset : str or pwlnet.data.Dataset
        One of :data:`pwlnet.data.DATASETS`, or a data set of one's own
        (:func:`pwlnet.data.load_file`).
    hidden : iterable of int or str
        Hidden widths, or a spec for :func:`parse_hidden` such as ``"64,64"``.
    epochs : int, optional
        Defaults to :data:`DEFAULT_EPOCHS` for a built-in data set, else about
        :data:`DEFAULT_STEPS` optimizer steps.
    lr : float, optional
        Adam learning rate (default :data:`DEFAULT_LR`; a PeLU model's
        :data:`pwlnet.pelu.DEFAULT_LR`).
    seed : int
        Seeds weight initialisation and batch order.
    batch_size : int
    weight_decay : float
        Adam's L2 penalty.
    threads : int
        ``torch.set_num_threads`` while training (restored afterwards).
    verbose : bool
        Show a tqdm progress bar on stderr and print the float test accuracy on stdout.
    activation : {"relu", "lerp"}
        The hidden layers' activation.  The LERP options below apply to ``"lerp"`` only.
    grid : int
        Segments per LERP table (a power of two).
    lerp_range : (float, float)
        The tables' input range; inputs are standardised, so pre-activations start
        out of order 1.
    lerp_init : {"relu", "identity"}
        Starting shape of the tables.
    smoothness : float
        Weight of the tables' roughness penalty in the loss (0 turns it off).
    region_margin : float, optional
        Region-aware training (ReLU only): the wanted safe radius ``gamma`` of the
        hypersphere cache's balls, in input codes of the compiled model
        (:mod:`pwlnet.margin`).  ``None``: plain training.
    region_weight : float
        The penalty's weight ``lambda`` in the loss, once ramped up.
    region_metric : {"linf", "l2"}
        The ball metric of the cache the model is trained for.
    region_fraction : float
        Share of the hidden neurons whose distances are penalised per input.
    region_ramp : float
        Share of the epochs over which the weight ramps up linearly from 0.
    region_boundary : bool
        Also keep the decision boundaries ``region_margin`` codes from the training
        inputs (:func:`pwlnet.margin.boundary_margin`), so that the cache's tie guard
        need not shrink the balls.
    code_bits : int
        Input code width of the model the unit of ``region_margin`` refers to.
    model : {"mlp", "pelu"}
        ``"pelu"`` trains a :class:`pwlnet.pelu.PeluNet` with :func:`pwlnet.pelu.train_pelu`
        (``hidden`` are its inner widths; ``epochs`` and ``lr`` default to that module's;
        the activation, LERP and region options do not apply and must stay at their
        defaults).

    Returns
    -------
    TrainResult
        Its model takes raw features (standardisation folded in).
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
    ds = dataset if isinstance(dataset, data.Dataset) else data.load(dataset)
    dataset = ds.name
    if isinstance(hidden, str):
        hidden = parse_hidden(hidden)
    if model == "pelu":
        if activation != "relu" or region_margin is not None:
            raise ValueError("a PeLU model has no --activation or --region-margin options: its "
                             "non-linearity is the buckets' ReLU")
        from . import pelu
        return TrainResult(**pelu.train_pelu(ds, hidden, epochs=epochs, lr=lr, seed=seed,
                                             batch_size=batch_size, weight_decay=weight_decay,
                                             threads=threads, verbose=verbose))
    lr = _check_positive(DEFAULT_LR if lr is None else lr, "lr", float)
    batch_size = _check_positive(batch_size, "batch_size", int)
    if epochs is None:
        builtin = ds.path is None and dataset in DEFAULT_EPOCHS
        epochs = DEFAULT_EPOCHS[dataset] if builtin else _default_epochs(len(ds.y_train), batch_size)
    else:
        epochs = _check_positive(epochs, "epochs", int)
    threads = _check_positive(threads, "threads", int)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    if not (isinstance(weight_decay, numbers.Real) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a non-negative number, not {weight_decay!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
    if not (isinstance(smoothness, numbers.Real) and math.isfinite(smoothness) and smoothness >= 0):
        raise ValueError(f"smoothness must be a non-negative number, not {smoothness!r}")
    region = _region_settings(region_margin, activation, region_weight, region_metric, region_fraction,
                              region_ramp, region_boundary, code_bits)
    lerp = {}
    if activation == "lerp":
        lo, hi = (float(v) for v in lerp_range)
        lerp = {"grid": int(grid), "range": [lo, hi], "init": lerp_init, "smoothness": float(smoothness)}
        LerpMLP(1, (1,), 1, grid=grid, lo=lo, hi=hi, init=lerp_init)  # check the options before training

    mean, std = standardization(ds.x_train)
    x_train = torch.tensor(((ds.x_train - mean) / std).astype(np.float32))
    y_train = torch.tensor(ds.y_train)

    with _torch_threads(threads):
        torch.manual_seed(seed)
        np.random.seed(seed)
        if activation == "lerp":
            model = LerpMLP(ds.input_dim, hidden, ds.n_classes, grid=grid, lo=lerp["range"][0],
                            hi=lerp["range"][1], init=lerp_init)
        else:
            model = ReluMLP(ds.input_dim, hidden, ds.n_classes)
        margin = None
        if region:
            margin = margin_mod.RegionMargin(
                region["gamma"], margin_mod.code_widths(ds.x_train, mean, std, code_bits),
                region["metric"], region["fraction"])
        losses = _fit(model, x_train, y_train, epochs=epochs, lr=lr, seed=seed, batch_size=batch_size,
                      weight_decay=weight_decay, margin=margin, region=region, smoothness=smoothness,
                      lerp=activation == "lerp", verbose=verbose, desc=f"train {dataset}")
        # The artifact is the folded model, so its accuracy is the one reported.
        model.fold_standardization(mean, std)
        test_acc = accuracy(model, ds.x_test, ds.y_test)
        train_acc = accuracy(model, ds.x_train, ds.y_train)

    if verbose:
        kind = "LERP " if activation == "lerp" else ""
        print(f"{dataset}: {kind}hidden {','.join(map(str, hidden)) or '(none)'}, {epochs} epochs: "
              f"float test accuracy {test_acc:.4f} (train {train_acc:.4f})")
    return TrainResult(
        model=model, dataset=dataset, hidden=tuple(hidden), input_mean=mean, input_std=std,
        float_test_accuracy=test_acc, train_accuracy=train_acc, losses=losses, epochs=epochs,
        lr=lr, seed=int(seed), batch_size=batch_size, weight_decay=float(weight_decay),
        class_names=ds.class_names, feature_names=ds.feature_names, activation=activation, lerp=lerp,
        region=region, data_file=getattr(ds, "path", None))


def onnx_metadata(result: TrainResult) -> dict:
    """The ``metadata_props`` written by :func:`export_onnx` (all values strings)."""
    meta = {
        "pwlnet.dataset": result.dataset,
        "pwlnet.hidden": ",".join(str(h) for h in result.hidden),
        "pwlnet.activation": result.activation,
        "pwlnet.float_test_accuracy": repr(float(result.float_test_accuracy)),
        "pwlnet.input_mean": json.dumps([float(v) for v in result.input_mean]),
        "pwlnet.input_std": json.dumps([float(v) for v in result.input_std]),
        "pwlnet.class_names": json.dumps(list(result.class_names)),
        "pwlnet.feature_names": json.dumps(list(result.feature_names)),
        "pwlnet.train": json.dumps({"epochs": result.epochs, "lr": result.lr, "seed": result.seed,
                                    "batch_size": result.batch_size,
                                    "weight_decay": result.weight_decay}),
    }
    if result.activation == "lerp":
        meta["pwlnet.lerp"] = json.dumps(result.lerp)
    if result.activation == "pelu":
        meta["pwlnet.model"] = "pelu"
        meta["pwlnet.pelu"] = json.dumps({"input_scale": result.model.input_scale})
    if result.region:
        meta["pwlnet.region_margin"] = json.dumps(result.region)
    if result.data_file is not None:
        meta["pwlnet.data_file"] = str(result.data_file)
    return meta


def _onnx_bytes(result: TrainResult) -> bytes:
    import onnx

    model = copy.deepcopy(result.model).cpu().float().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # We choose the TorchScript exporter on purpose (plain Gemm/Relu graph, stable
        # initializer names).  torch warns about that choice from our own call site, and
        # the exporter itself calls a deprecated torch helper; neither is the user's to fix.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        torch.onnx.export(
            model, (torch.zeros(1, model.input_dim),), buf, dynamo=False, opset_version=ONNX_OPSET,
            input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            **({"custom_opsets": {lerp_np.ONNX_DOMAIN: lerp_np.ONNX_VERSION}}
               if result.activation == "lerp" else {}))
    proto = onnx.load_from_string(buf.getvalue())
    if result.activation == "lerp":
        lerp_np.attach_onnx_function(proto)
    onnx.helper.set_model_props(proto, onnx_metadata(result))
    proto.doc_string = (f"pwlnet {type(result.model).__name__} {result.dataset} hidden={list(result.hidden)}: raw "
                        f"features in, logits out (no softmax)")
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _write_atomically(path: Path, payload: bytes):
    # Same directory as the target so that os.replace is an atomic rename; opened
    # normally (not mkstemp) so that the file gets the usual umask permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check_out_dir(path: Path):
    """Refuse an ONNX output that could not be written, before training
    (:func:`pwlnet.files.check_output_file`: a directory there, a missing or unwritable one)."""
    from .files import check_output_file
    check_output_file(path, "--out")


def export_onnx(result: TrainResult, path) -> Path:
    """Write ``result.model`` as ONNX (opset 17, input ``"input"``, output ``"logits"``).

    The batch axis is dynamic.  The file appears atomically: on any error nothing is
    left at ``path`` (an existing file there stays untouched).

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    _check_out_dir(path)
    _write_atomically(path, _onnx_bytes(result))
    return path


def cli_train(args) -> int:
    """Entry point of ``pwlnet train``.

    Parameters
    ----------
    args : argparse.Namespace
        ``dataset`` or ``data`` (an ``.npz`` path), ``hidden`` (str such as ``"64,64"``),
        ``out``, and optionally ``epochs``, ``lr``, ``seed``, ``batch_size``,
        ``activation``, ``grid``, ``lerp_range`` (str such as ``"-4,4"``),
        ``smoothness``, ``region_margin``, ``region_weight``, ``region_metric``,
        ``model`` (``"mlp"`` or ``"pelu"``); a missing or ``None`` value takes the
        default.  With ``model="pelu"`` the parser's default ``hidden`` of ``"64,64"`` (or
        none) means the PeLU default :data:`pwlnet.pelu.DEFAULT_HIDDEN` (iris: 4 -> 3 -> 3);
        other widths are used as given.

    Returns
    -------
    int
        Exit status 0.  Bad arguments raise :class:`ValueError` (or
        :class:`FileNotFoundError` for a missing output directory) before any training.
    """
    def opt(name, default):
        value = getattr(args, name, None)
        return default if value is None else value

    data_file = opt("data", None)
    if opt("binary", False):
        clash = [flag for flag, used in (("--data", data_file is not None), ("--model pelu", opt("model", "mlp") != "mlp"),
                                         ("--activation lerp", opt("activation", "relu") != "relu"),
                                         ("--region-margin", opt("region_margin", None) is not None)) if used]
        if clash:
            raise ValueError(f"--binary trains a binarized MLP on a built-in --dataset; it does not take "
                             f"{', '.join(clash)}")
        _check_out_dir(Path(args.out))
        from .binary_train import cli_train_binary
        return cli_train_binary(args)
    if opt("code_noise", None) is not None or opt("standardize", False):
        raise ValueError("--code-noise and --standardize apply to --binary training only")
    if data_file is not None:
        dataset = data.load_file(data_file)
    elif args.dataset not in data.DATASETS:
        raise ValueError(f"unknown data set {args.dataset!r}; choose one of {', '.join(data.DATASETS)}")
    else:
        dataset = args.dataset
    model = opt("model", "mlp")
    hidden_spec = opt("hidden", "64,64")
    if model == "pelu" and hidden_spec == "64,64":
        from . import pelu
        hidden = pelu.DEFAULT_HIDDEN
    else:
        hidden = parse_hidden(hidden_spec)
    out = Path(args.out)
    _check_out_dir(out)
    lerp_range = opt("lerp_range", None)
    if lerp_range is not None:
        lerp_range = parse_range(lerp_range)
    region_margin = opt("region_margin", None)
    if region_margin is None and (opt("region_weight", None) is not None or opt("region_metric", None) is not None):
        raise ValueError("--region-weight and --region-metric need --region-margin GAMMA")
    result = train(dataset, hidden, epochs=opt("epochs", None), lr=opt("lr", None),
                   seed=opt("seed", DEFAULT_SEED), batch_size=opt("batch_size", DEFAULT_BATCH_SIZE),
                   activation=opt("activation", "relu"), grid=opt("grid", lerp_np.DEFAULT_GRID),
                   lerp_range=lerp_range or lerp_np.DEFAULT_RANGE,
                   smoothness=opt("smoothness", DEFAULT_SMOOTHNESS), region_margin=region_margin,
                   region_weight=opt("region_weight", margin_mod.DEFAULT_WEIGHT),
                   region_metric=opt("region_metric", "linf"), model=model)
    export_onnx(result, out)
    print(f"wrote {out}")
    return 0
