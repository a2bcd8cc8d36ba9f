"""``pwlnet compile``: ONNX file to compiled-model directory, with an accuracy summary."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from . import golden
from .artifact import save
from .quantize import quantize

__all__ = ["CalibrationError", "load_calibration", "compile_onnx", "evaluate", "cli_compile"]


class CalibrationError(ValueError):
    """A calibration source that names no data set and no readable .npy file."""


def load_calibration(spec, metadata):
    """Return ``(calib_inputs, eval_inputs, eval_labels_or_None, class_names, provenance)``.

    ``spec`` is a data set name, a path to a ``.npy`` of float inputs, a data file
    (``.npz``, :func:`pwlnet.data.load_file`: calibrated on its ``x_train``, evaluated
    on its test split), or ``None`` to use the data the model was trained on (ONNX
    metadata ``pwlnet.data_file``, else ``pwlnet.dataset``).
    """
    from . import data as datasets  # sklearn/aeon only when a data set is named
    if spec is None:
        spec = metadata.get("pwlnet.data_file") or metadata.get("pwlnet.dataset")
        if spec is None:
            raise CalibrationError("the model records no training data set; give calibration inputs "
                                   "with --calib DATASET_NAME, --calib data.npz or --calib inputs.npy")
    if str(spec).endswith(".npz"):
        try:
            ds = datasets.load_file(spec)
        except datasets.DataFileError as e:
            raise CalibrationError(str(e)) from None
        return ds.x_train, ds.x_test, ds.y_test, list(ds.class_names), {"data_file": str(spec), "split": "train"}
    if str(spec).endswith(".npy") or Path(spec).is_file():
        path = Path(spec)
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CalibrationError(f"{path}: cannot read calibration inputs: {e}") from None
        if not np.issubdtype(x.dtype, np.number):
            raise CalibrationError(f"{path}: calibration inputs must be numbers, not {x.dtype}")
        finite = np.isfinite(x)
        if not finite.all():
            bad = np.argwhere(~finite)[0].tolist()
            raise CalibrationError(f"{path}: calibration inputs hold a non-finite value {x[tuple(bad)]} at "
                                   f"index {bad}; they must be finite")
        return x, x, None, None, {"npy": str(path)}
    if spec not in datasets.DATASETS:
        raise CalibrationError(f"--calib {spec!r} is neither a .npy file nor a data set "
                               f"(data sets: {', '.join(datasets.DATASETS)})")
    ds = datasets.load(spec)
    return ds.x_train, ds.x_test, ds.y_test, list(ds.class_names), {"dataset": spec, "split": "train"}


def _float_reference(onnx_path, net, x):
    """Float outputs from onnxruntime when it is installed, else from the imported IR."""
    try:
        import onnxruntime as ort
    except ImportError:
        return net(x), "pwlnet IR (float64)"
    if net.reference_output is None:
        # e.g. skl2onnx's label and ZipMap outputs: neither holds the scores
        return net(x), "pwlnet IR (float64; no graph output holds the scores or probabilities)"
    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - e.g. a custom-domain node without its function body
        return net(x), "pwlnet IR (float64; onnxruntime cannot run the model)"
    inp = sess.get_inputs()[0]
    xs = np.asarray(x, np.float32).reshape((len(x),) + tuple(net.input_shape))
    # A batch axis fixed at export time (torch.onnx.export without dynamic_axes) takes
    # exactly that many samples: run in chunks of it, the last one padded.
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else max(len(xs), 1)
    try:
        outs = []
        for i in range(0, len(xs), batch):
            chunk = xs[i:i + batch]
            pad = np.zeros((batch - len(chunk),) + chunk.shape[1:], chunk.dtype)
            outs.append(sess.run([net.reference_output], {inp.name: np.concatenate([chunk, pad])})[0][:len(chunk)])
        return np.concatenate(outs), "onnxruntime"
    except Exception:  # noqa: BLE001 - onnxruntime refusing these inputs is no reason to fail the compile
        return net(x), "pwlnet IR (float64; onnxruntime cannot run the model on these inputs)"


def evaluate(model, x, y=None, float_out=None):
    """Quantized accuracy and argmax agreement with the float outputs, as a dict."""
    _, codes = golden.predict(model, x)
    qa = golden.argmax(codes)
    res = {"samples": int(len(x))}
    if float_out is not None:
        fa = np.argmax(float_out, axis=1)
        res["argmax_agreement"] = float(np.mean(fa == qa))
        if y is not None:
            res["float_accuracy"] = float(np.mean(fa == y))
    if y is not None:
        res["quantized_accuracy"] = float(np.mean(qa == y))
    return res


def compile_onnx(onnx_path, out_dir, *, weight_bits=8, act_bits=8, calib=None, requant="multiply",
                 multiplier_bits=8, lerp_grid=None, lerp_range=None, output=None, log=print):
    """Import, quantize, evaluate and write; nothing is written if any step fails.

    ``lerp_grid`` and ``lerp_range`` say how imported element-wise functions (Tanh,
    GELU, ...) become LERP tables (see :func:`pwlnet.onnx_import.import_model`); by
    default 64 segments on the calibrated pre-activation range of each channel.
    ``output`` names the graph output to import when the graph has several.

    A binarized MLP (a graph with the ``Greater``/``Where`` step) goes to
    :func:`pwlnet.binary_onnx.compile_binary` instead; ``act_bits`` is then the width of
    its input codes and the other quantizer settings do not apply.
    """
    from . import lerp
    from .files import check_output_dir
    from .binary_onnx import compile_binary, is_binarized, load_binary_onnx
    from .onnx_import import load_onnx
    onnx_path = Path(onnx_path)
    # The output replaces a compiled-model directory as a whole: refuse anything else (a
    # file, a folder of the user's) and an unwritable place before the work.
    check_output_dir(out_dir, marker="model.json", what="compiled-model directory", replaced=True)
    if onnx_path.is_file() and is_binarized(onnx_path):
        bnet = load_binary_onnx(onnx_path)
        for n in bnet.notices:
            log(f"notice: {n}")
        return compile_binary(onnx_path, bnet, out_dir, load_calibration(calib, bnet.metadata),
                              input_bits=act_bits)
    net = load_onnx(onnx_path, lerp_grid=lerp.DEFAULT_GRID if lerp_grid is None else lerp_grid,
                    lerp_range=lerp_range, output=output)
    for n in net.notices:
        log(f"notice: {n}")
    cx, ex, ey, names, what = load_calibration(calib, net.metadata)
    model = quantize(net, cx, weight_bits=weight_bits, act_bits=act_bits, requant=requant,
                     multiplier_bits=multiplier_bits, class_names=names,
                     calib_name=what.get("npy") or what.get("data_file") or what.get("dataset"),
                     source={"onnx": onnx_path.name,
                             "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
                             "metadata": net.metadata, "calibration": what})
    for n in model.summary.get("notices", []):
        log(f"notice: {n}")
    fout, ref = _float_reference(onnx_path, net, ex)
    summary = evaluate(model, ex, ey, fout)
    summary["float_reference"] = ref
    summary["evaluated_on"] = (f"{what['dataset']} test split" if "dataset" in what
                               else f"{what['data_file']} test split" if "data_file" in what
                               else f"calibration inputs {what['npy']}")
    summary["notices"] = list(net.notices) + list(model.summary.get("notices", []))
    model.summary = summary
    save(model, out_dir)
    return model


def _pct(v):
    return f"{100 * v:.2f} %"


def cli_compile(args):
    from .lerp import parse_range
    # --lerp-grid / --lerp-range are optional in the parser: absent means the defaults.
    lerp_range = getattr(args, "lerp_range", None)
    model = compile_onnx(args.model, args.out, weight_bits=args.weight_bits, act_bits=args.act_bits,
                         calib=args.calib, requant=args.requant, multiplier_bits=args.multiplier_bits,
                         lerp_grid=getattr(args, "lerp_grid", None),
                         lerp_range=None if lerp_range is None else parse_range(lerp_range),
                         output=getattr(args, "output", None))
    s = model.summary
    dims = [model.input_dim] + [l.n_out for l in model.layers]
    if getattr(model, "kind", "mlp") == "binary":
        print(f"compiled {args.model} -> {args.out}: binarized {'-'.join(map(str, dims))}, "
              f"{model.input_bits}-bit input codes, first-layer sums {model.layers[0].acc_bits} bits, "
              f"scores {model.layers[-1].out_bits} bits")
        if "float_accuracy" in s:
            print(f"accuracy on {s['evaluated_on']} ({s['samples']} samples): float {_pct(s['float_accuracy'])}, "
                  f"golden {_pct(s['quantized_accuracy'])}")
        if "argmax_agreement" in s:
            print(f"argmax agreement with onnxruntime: {_pct(s['argmax_agreement'])} ({s['flips']} flips from "
                  f"the input quantization); on the inputs the codes stand for: {_pct(s['codes_agreement'])}")
        return 0
    print(f"compiled {args.model} -> {args.out}: layers {'-'.join(map(str, dims))}, "
          f"{model.weight_bits}-bit weights, {model.act_bits}-bit activations, "
          f"accumulators {', '.join(str(l.acc_bits) for l in model.layers)} bits")
    if "float_accuracy" in s:
        print(f"accuracy on {s['evaluated_on']} ({s['samples']} samples): float {_pct(s['float_accuracy'])}, "
              f"quantized {_pct(s['quantized_accuracy'])}")
    if "argmax_agreement" in s:
        print(f"argmax agreement with {s['float_reference']}: {_pct(s['argmax_agreement'])}")
    return 0
