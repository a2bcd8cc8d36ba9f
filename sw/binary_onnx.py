"""Import a binarized MLP from ONNX and compile it (``pwlnet compile`` on such a graph).

The graph is what PyTorch exports for a binarized MLP sanitised the way fastinference
documents it: every binary Linear replaced by an ordinary Linear holding +-1 weights (and
biases), BatchNorm1d, the sign step written ``torch.where(x > 0, 1., -1.)`` and exported
as ``Constant -> Greater -> Constant -> Constant -> Where``, and a trailing LogSoftmax.
Accepted, in order:

* optionally ``Flatten``, then an input normalization: element-wise ``Sub``/``Add``/
  ``Mul``/``Div`` by per-feature constants (exact), or a ``BatchNormalization`` (its gain
  ``gamma / sqrt(var + eps)`` is taken as the float64 it rounds to, with a notice);
* per layer: ``Gemm`` (or ``MatMul`` + ``Add``) whose weights are all exactly +-1, an
  optional ``BatchNormalization``, then the step on every layer but the last;
* at the end an optional ``LogSoftmax`` or ``Softmax`` over the classes (neither changes
  the argmax, which is what the hardware gives).

The step is recognised exactly: ``Greater`` against a constant 0, whose only consumer is
a ``Where`` choosing constant +1 where true and constant -1 where false.  Anything else
there (``GreaterOrEqual``, a non-zero threshold, swapped or other constants, ``Sign``)
computes a different function at 0 and is refused with :class:`BinaryImportError` naming
the node.
"""

from __future__ import annotations

import dataclasses
import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import binary, golden

__all__ = ["BinaryImportError", "BinaryNet", "is_binarized", "load_binary_onnx", "calibrate", "default_headroom",
           "to_model", "compile_binary", "onnxruntime_scores"]


class BinaryImportError(ValueError):
    """An ONNX graph that is not a binarized MLP pwlnet can compile exactly."""


@dataclasses.dataclass
class DenseStep:
    """One imported layer: ``z = W x + b``, optional BatchNorm, step unless last."""

    weight: np.ndarray          # (n_out, n_in) of +-1
    bias: list                  # n_out Fractions
    bn: list | None             # n_out binary.BatchNorm or None
    step: bool
    name: str


@dataclasses.dataclass
class BinaryNet:
    """The imported graph: input normalization ``x~ = gain * x + offset`` and the layers."""

    input_name: str
    input_shape: tuple
    output_name: str
    gain: list                  # per feature, Fraction
    offset: list                # per feature, Fraction
    layers: list
    metadata: dict
    notices: list


def _nodename(n):
    return f"node {n.name or '(unnamed)'!r} ({n.op_type})"


def is_binarized(model) -> bool:
    """True for a graph with a ``Where`` or ``Greater`` node: the binarized importer's
    (whose error names the node when the step is not the exact pattern)."""
    import onnx
    if isinstance(model, (str, Path)):
        try:
            model = onnx.load(str(model))
        except Exception:  # noqa: BLE001 - not ONNX at all: the MLP importer says so, naming the file
            return False
    return any(n.op_type in ("Where", "Greater") for n in model.graph.node)


def load_binary_onnx(path) -> BinaryNet:
    """Read a binarized MLP from an ONNX file (see the module docstring for what is accepted)."""
    import onnx
    from onnx import numpy_helper
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf errors have no common base
        raise BinaryImportError(f"{path}: not a readable ONNX file: {e}") from None
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type == "Constant":
            attr = {a.name: a for a in n.attribute}
            if "value" in attr:
                consts[n.output[0]] = numpy_helper.to_array(attr["value"].t)
            elif "value_float" in attr:
                consts[n.output[0]] = np.array(attr["value_float"].f, np.float32)
            elif "value_int" in attr:
                consts[n.output[0]] = np.array(attr["value_int"].i, np.int64)
            else:
                raise BinaryImportError(f"{path}: {_nodename(n)}: unsupported constant form {list(attr)}")
        elif n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
        else:
            nodes.append(n)
    data_inputs = [i for i in g.input if i.name not in consts]
    if len(data_inputs) != 1:
        raise BinaryImportError(f"{path}: expected one data input, found {[i.name for i in data_inputs]}")
    inp = data_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    consumers = {}
    for n in nodes:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    outputs = {o.name for o in g.output}
    meta = {p.key: p.value for p in model.metadata_props}
    notices = []

    def where(n):
        return f"{path}: {_nodename(n)}"

    def const(n, k, what):
        name = n.input[k] if k < len(n.input) else ""
        if name not in consts:
            raise BinaryImportError(f"{where(n)}: {what} (input {k}, {name!r}) must be a constant")
        return consts[name]

    def attrs(n):
        from onnx import helper
        return {a.name: helper.get_attribute_value(a) for a in n.attribute}

    cur = inp.name
    d = None
    gain = offset = None
    layers = []
    pending = None            # the Gemm/MatMul layer waiting for its BN / step
    done = False
    while True:
        cons = consumers.get(cur, [])
        if not cons:
            break
        if len(cons) != 1:
            raise BinaryImportError(f"{path}: tensor {cur!r} feeds {len(cons)} nodes "
                                    f"({', '.join(_nodename(c) for c in cons)}); a binarized MLP is a chain")
        n = cons[0]
        if done:
            raise BinaryImportError(f"{where(n)}: nothing may follow the final {layers[-1].name or 'softmax'}")
        op = n.op_type
        if n.input[0] != cur:
            raise BinaryImportError(f"{where(n)}: the data must be its first input")
        if op == "Flatten" and not layers and pending is None and gain is None:
            pass
        elif op in ("Sub", "Add", "Mul", "Div") and not layers and pending is None:
            c = np.asarray(const(n, 1, "the normalization constant"), np.float64).reshape(-1)
            if d is None:
                d = dims[-1] if dims and dims[-1] else len(c)
            c = np.broadcast_to(c, (d,)) if c.size in (1, d) else None
            if c is None:
                raise BinaryImportError(f"{where(n)}: constant of shape {const(n, 1, '').shape} is not per feature")
            if gain is None:
                gain, offset = [Fraction(1)] * d, [Fraction(0)] * d
            cq = [binary._q(v) for v in c]
            if op == "Sub":
                offset = [o - k for o, k in zip(offset, cq)]
            elif op == "Add":
                offset = [o + k for o, k in zip(offset, cq)]
            elif op == "Mul":
                gain = [a * k for a, k in zip(gain, cq)]
                offset = [o * k for o, k in zip(offset, cq)]
            else:
                if any(k == 0 for k in cq):
                    raise BinaryImportError(f"{where(n)}: division by zero")
                gain = [a / k for a, k in zip(gain, cq)]
                offset = [o / k for o, k in zip(offset, cq)]
        elif op == "BatchNormalization" and not layers and pending is None:
            a = attrs(n)
            if a.get("training_mode", 0):
                raise BinaryImportError(f"{where(n)}: training_mode BatchNormalization is not inference")
            sc, bb, mu, var = (np.asarray(const(n, k, w), np.float64).reshape(-1)
                               for k, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
            eps = float(a.get("epsilon", 1e-5))
            d = len(sc)
            gk = sc / np.sqrt(var + np.float64(np.float32(eps)))
            if gain is None:
                gain, offset = [Fraction(1)] * d, [Fraction(0)] * d
            gq = [Fraction(float(v)) for v in gk]
            oq = [Fraction(float(v)) for v in bb - mu * gk]
            offset = [o * k + c for o, k, c in zip(offset, gq, oq)]
            gain = [x * k for x, k in zip(gain, gq)]
            notices.append(f"{_nodename(n)}: the input BatchNormalization's gains and offsets are taken as "
                           f"float64 (exact in the codes' domain up to that rounding)")
        elif op in ("Gemm", "MatMul"):
            if pending is not None:
                layers.append(pending)
                raise BinaryImportError(f"{where(n)}: the layer before it has no step (Greater/Where); only the "
                                        f"last layer may end without one")
            if op == "Gemm":
                a = attrs(n)
                if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                    raise BinaryImportError(f"{where(n)}: Gemm with transA or alpha/beta other than 1 is not a Linear")
                w = np.asarray(const(n, 1, "the weight"), np.float64)
                w = w if a.get("transB", 0) else w.T
                b = (np.asarray(const(n, 2, "the bias"), np.float64).reshape(-1) if len(n.input) > 2 and n.input[2]
                     else np.zeros(w.shape[0]))
                out = n.output[0]
            else:
                w = np.asarray(const(n, 1, "the weight"), np.float64).T
                out = n.output[0]
                nxt = consumers.get(out, [])
                b = np.zeros(w.shape[0])
                if len(nxt) == 1 and nxt[0].op_type == "Add":
                    add = nxt[0]
                    other = add.input[1] if add.input[0] == out else add.input[0]
                    if other in consts:
                        b = np.asarray(consts[other], np.float64).reshape(-1)
                        out = add.output[0]
            if w.ndim != 2:
                raise BinaryImportError(f"{where(n)}: weight of shape {w.shape} is not a matrix")
            n_in = w.shape[1]
            want = layers[-1].weight.shape[0] if layers else d
            if want is not None and n_in != want:
                raise BinaryImportError(f"{where(n)}: takes {n_in} inputs, the tensor before it has {want}")
            d = d if d is not None else n_in
            if not np.all(np.abs(w) == 1.0):
                bad = w[np.abs(w) != 1.0].ravel()[0]
                raise BinaryImportError(f"{where(n)}: weights must all be exactly -1 or +1 (found {bad!r}); "
                                        f"export the binarized weights (sign of the latent weights)")
            if b.size not in (1, w.shape[0]) or not np.all(np.isfinite(b)):
                raise BinaryImportError(f"{where(n)}: bias of shape {b.shape} (or not finite)")
            b = np.broadcast_to(b, (w.shape[0],))
            pending = DenseStep(weight=w.astype(np.int64), bias=[binary._q(v) for v in b], bn=None, step=False,
                                name=n.name)
            cur = out
            continue
        elif op == "BatchNormalization" and pending is not None and pending.bn is None:
            a = attrs(n)
            if a.get("training_mode", 0):
                raise BinaryImportError(f"{where(n)}: training_mode BatchNormalization is not inference")
            sc, bb, mu, var = (np.asarray(const(n, k, w), np.float64).reshape(-1)
                               for k, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
            eps = np.float32(a.get("epsilon", 1e-5))
            m = pending.weight.shape[0]
            if not all(len(v) == m for v in (sc, bb, mu, var)):
                raise BinaryImportError(f"{where(n)}: parameters are not of length {m}")
            try:
                pending.bn = [binary.BatchNorm.of(sc[k], bb[k], mu[k], var[k], eps) for k in range(m)]
            except ValueError as e:
                raise BinaryImportError(f"{where(n)}: {e}") from None
        elif op == "Greater" and pending is not None:
            zero = const(n, 1, "the step's threshold")
            if zero.size != 1 or float(zero.reshape(-1)[0]) != 0.0:
                raise BinaryImportError(f"{where(n)}: the step compares against {zero.reshape(-1)[:4].tolist()}, "
                                        f"not 0 (torch.where(x > 0, 1, -1) is the step pwlnet takes)")
            nxt = consumers.get(n.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type != "Where" or nxt[0].input[0] != n.output[0]:
                raise BinaryImportError(f"{where(n)}: its result must feed exactly one Where as the condition "
                                        f"(found {', '.join(_nodename(c) for c in nxt) or 'nothing'})")
            wh = nxt[0]
            hi, lo = const(wh, 1, "the value where x > 0"), const(wh, 2, "the value elsewhere")
            for v, want in ((hi, 1.0), (lo, -1.0)):
                if not np.issubdtype(v.dtype, np.floating) or v.size < 1 or not np.all(v == want):
                    raise BinaryImportError(f"{where(wh)}: the step must give +1 where x > 0 and -1 elsewhere; "
                                            f"found {hi.reshape(-1)[:4].tolist()} / {lo.reshape(-1)[:4].tolist()} "
                                            f"({hi.dtype}/{lo.dtype})")
                if v.size != 1 and v.shape[-1] != pending.weight.shape[0]:
                    raise BinaryImportError(f"{where(wh)}: constant of shape {v.shape} broadcasts the step's output")
            pending.step = True
            layers.append(pending)
            pending = None
            cur = wh.output[0]
            continue
        elif op in ("LogSoftmax", "Softmax") and pending is not None:
            axis = attrs(n).get("axis", -1)
            if axis not in (1, -1):
                raise BinaryImportError(f"{where(n)}: {op} over axis {axis}, not the classes")
            layers.append(pending)
            pending = None
            done = True
        else:
            hint = ""
            if op in ("GreaterOrEqual", "Less", "LessOrEqual", "Sign", "Where", "Greater", "Equal"):
                hint = (" (the step must be exactly Greater(x, 0) -> Where(., +1, -1): "
                        "torch.where(x > 0, 1., -1.) after the layer and its BatchNorm)")
            raise BinaryImportError(f"{where(n)}: not part of a binarized MLP here{hint}")
        cur = n.output[0]
    if pending is not None:
        layers.append(pending)
    if cur not in outputs:
        raise BinaryImportError(f"{path}: the chain ends at {cur!r}, which is not a graph output")
    if not layers:
        raise BinaryImportError(f"{path}: no Gemm/MatMul layer found")
    for l in layers[:-1]:
        if not l.step:
            raise BinaryImportError(f"{path}: layer {l.name!r} has no step; only the last may end without one")
    if layers[-1].step:
        raise BinaryImportError(f"{path}: the last layer {layers[-1].name!r} ends in a step; its scores would be "
                                f"+-1 ties (leave the step off the output layer)")
    if len(layers) < 2:
        raise BinaryImportError(f"{path}: a single layer has no binary layer to score; pwlnet needs at least a "
                                f"hidden layer")
    if gain is None:
        gain, offset = [Fraction(1)] * d, [Fraction(0)] * d
    if any(a == 0 for a in gain):
        raise BinaryImportError(f"{path}: the input normalization multiplies a feature by 0")
    return BinaryNet(input_name=inp.name, input_shape=(d,), output_name=cur, gain=gain, offset=offset,
                     layers=layers, metadata=meta, notices=notices)


def default_headroom(input_bits):
    """Codes span ``headroom`` times the calibration range: 1 at 8 bits or fewer (every
    code counts), 2 above (test inputs beyond the training range saturate less)."""
    return 1.0 if input_bits <= 8 else 2.0


def calibrate(net: BinaryNet, x, input_bits=8, headroom=None):
    """The input quantizer from calibration inputs: ``(code_scale, input_scale, zero_point)``.

    One code step moves every normalized feature ``x~ = gain * x + offset`` by the same
    ``code_scale`` (the first layer's weights are +-1, so its inputs must share a scale):
    ``code_scale`` spans ``headroom`` times the widest normalized range over
    ``2**input_bits - 1`` codes (:func:`default_headroom`),
    ``input_scale[i] = code_scale / |gain[i]|`` and each zero point centres its feature.

    Integer inputs under one common gain ``G`` (e.g. pixel intensities, no per-feature
    standardization) get ``code_scale = G / 2**k`` with the largest ``k >= 0`` that still
    spans the range: every integer input is then a code exactly, and the input coding
    flips nothing.
    """
    if headroom is None:
        headroom = default_headroom(input_bits)
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    gain = np.array([float(a) for a in net.gain])
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = float(np.max((hi - lo) * np.abs(gain))) * float(headroom)
    if not np.isfinite(span) or span <= 0:
        span = 1.0
    codes = (1 << input_bits) - 1
    code_scale = span / codes
    common = np.all(np.abs(gain) == np.abs(gain[0]))
    if common and np.all(x == np.round(x)):
        raw_span = span / abs(gain[0])
        if raw_span <= codes:
            k = int(np.floor(np.log2(codes / raw_span))) if raw_span > 0 else 0
            code_scale = abs(gain[0]) / 2.0 ** k
    scale = code_scale / np.abs(gain)
    zp = -np.floor((lo + hi) / 2 / scale + 0.5).astype(np.int64)
    return code_scale, scale, zp


def to_model(net: BinaryNet, code_scale, input_scale, zero_point, *, input_bits=8, class_names=None,
             source=None) -> binary.BinaryModel:
    """Fold the imported float network into a :class:`~pwlnet.binary.BinaryModel`.

    First layer, in the codes' domain: ``x~_i = sign(gain_i) * s * (q_i - zp_i) + offset_i``
    (``s = code_scale``), so ``z_o = s * v_o + K_o`` with ``v_o = sum_i W'_oi q_i``,
    ``W' = W * sign(gain)`` and ``K_o = b_o + sum_i W_oi offset_i - s * sum_i W'_oi zp_i``.
    Hidden layers: ``z = 2 v - n + b`` with ``v`` the popcount.  Each becomes
    :func:`~pwlnet.binary.fold_step`'s integer threshold and direction; the last layer
    :func:`~pwlnet.binary.score_table`.
    """
    s = binary._q(code_scale)
    sg = np.array([1 if a > 0 else -1 for a in net.gain], np.int64)
    zp = [int(z) for z in zero_point]
    layers = []
    for k, l in enumerate(net.layers):
        last = k == len(net.layers) - 1
        w = l.weight.astype(np.int64)
        if k == 0:
            w = w * sg[None, :]
        n_out, n_in = w.shape
        bl = binary.BinaryLayer(weight=w, threshold=None, direction=None, table=None, first=k == 0,
                                in_bits=input_bits if k == 0 else 1, name=l.name)
        if last:
            bl.table = binary.score_table(n_out, n_in, l.bias, l.bn)
        else:
            lo, hi = bl.v_range
            th, dr = np.zeros(n_out, np.int64), np.zeros(n_out, np.int64)
            for o in range(n_out):
                if k == 0:
                    orig = l.weight[o]
                    kk = (l.bias[o] + sum(int(orig[i]) * net.offset[i] for i in range(n_in))
                          - s * sum(int(w[o, i]) * zp[i] for i in range(n_in)))
                    alpha, beta = s, kk
                else:
                    alpha, beta = Fraction(2), l.bias[o] - n_in
                th[o], dr[o] = binary.fold_step(alpha, beta, None if l.bn is None else l.bn[o], lo, hi)
            bl.threshold, bl.direction = th, dr
        layers.append(bl)
    model = binary.BinaryModel(input_shape=tuple(net.input_shape), input_bits=input_bits,
                               input_scale=np.asarray(input_scale, np.float64),
                               input_zero_point=np.asarray(zero_point, np.int64), layers=layers,
                               code_scale=float(code_scale), class_names=class_names, source=source or {})
    return model.validate()


def onnxruntime_scores(onnx_path, net: BinaryNet, x):
    """The ONNX graph's output on float inputs ``x`` (onnxruntime, CPU)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    xs = np.asarray(x, np.float32).reshape((len(x),) + tuple(net.input_shape))
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else max(len(xs), 1)
    outs = []
    for i in range(0, len(xs), batch):
        chunk = xs[i:i + batch]
        pad = np.zeros((batch - len(chunk),) + chunk.shape[1:], chunk.dtype)
        outs.append(sess.run([net.output_name], {inp.name: np.concatenate([chunk, pad])})[0][:len(chunk)])
    return np.concatenate(outs)


def compile_binary(onnx_path, net, out_dir, calibration, *, input_bits=8, headroom=None):
    """Fold, evaluate against onnxruntime and write a compiled binary model.

    ``net`` is :func:`load_binary_onnx`'s import of ``onnx_path`` and ``calibration``
    :func:`pwlnet.compile.load_calibration`'s answer for it: ``pwlnet compile``
    (:func:`pwlnet.compile.compile_onnx`) calls this for a binarized graph.  The summary
    records the golden model's accuracy, its argmax agreement with onnxruntime on the
    float test inputs (``argmax_agreement``, ``flips``) and on the inputs the codes stand
    for (``codes_agreement``)."""
    onnx_path = Path(onnx_path)
    cx, ex, ey, names, what = calibration
    s, scale, zp = calibrate(net, cx, input_bits, headroom)
    model = to_model(net, s, scale, zp, input_bits=input_bits, class_names=names,
                     source={"onnx": onnx_path.name, "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
                             "metadata": net.metadata, "calibration": what, "kind": "binary",
                             "headroom": headroom if headroom is not None else default_headroom(input_bits)})
    summary = evaluate(onnx_path, net, model, ex, ey)
    summary["evaluated_on"] = (f"{what['dataset']} test split" if "dataset" in what
                               else f"{what['data_file']} test split" if "data_file" in what
                               else f"calibration inputs {what['npy']}")
    summary["notices"] = list(net.notices)
    model.summary = summary
    binary.save(model, out_dir)
    return model


def evaluate(onnx_path, net, model, x, y=None):
    """Golden model against onnxruntime on float inputs and on the inputs the codes stand for."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        onnxruntime = None
    codes = golden.quantize_inputs(model, x)
    ga = np.argmax(binary.forward(model, codes), axis=1)
    res = {"samples": int(len(x)), "float_reference": "onnxruntime" if onnxruntime else "none"}
    if y is not None:
        res["quantized_accuracy"] = float(np.mean(ga == y))
    if onnxruntime is None:
        return res
    fa = np.argmax(onnxruntime_scores(onnx_path, net, x), axis=1)
    ca = np.argmax(onnxruntime_scores(onnx_path, net, golden.dequantize_inputs(model, codes)), axis=1)
    res["argmax_agreement"] = float(np.mean(fa == ga))
    res["flips"] = int(np.sum(fa != ga))
    res["codes_agreement"] = float(np.mean(ca == ga))
    res["codes_flips"] = int(np.sum(ca != ga))
    if y is not None:
        res["float_accuracy"] = float(np.mean(fa == y))
    return res
