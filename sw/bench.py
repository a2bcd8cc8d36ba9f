"""Reproducible measurements behind the tables in README.md.

``python -m pwlnet.bench accuracy`` trains a 64,64 ReLU MLP on every data set (seed 0,
default epochs), compiles it at 8 bits with both requantization modes, and prints a
Markdown table of float and quantized test accuracy and argmax agreement with
onnxruntime's float outputs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["accuracy_table", "main"]


def accuracy_table(datasets=None, hidden="64,64", bits=8, seed=0, out=sys.stdout):
    from . import compile as pcompile, data, golden, train
    import onnxruntime as ort

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets or data.DATASETS:
            ds = data.load(name)
            res = train.train(name, hidden, seed=seed, verbose=False)
            onnx_path = Path(tmp) / f"{name}.onnx"
            train.export_onnx(res, onnx_path)
            sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            ref = sess.run(None, {"input": ds.x_test.astype(np.float32)})[0].argmax(1)
            row = {"dataset": name, "dims": f"{ds.input_dim}-{hidden.replace(',', '-')}-{ds.n_classes}",
                   "test": len(ds.y_test), "float": float(np.mean(ref == ds.y_test))}
            for mode in ("multiply", "shift"):
                m = pcompile.compile_onnx(onnx_path, Path(tmp) / f"{name}-{mode}", weight_bits=bits,
                                          act_bits=bits, calib=name, requant=mode, log=lambda *_: None)
                _, codes = golden.predict(m, ds.x_test)
                q = golden.argmax(codes)
                row[mode] = (float(np.mean(q == ds.y_test)), float(np.mean(q == ref)))
            rows.append(row)
    print(f"| data set | layers | test samples | float | {bits}-bit, multiply (agreement) "
          f"| {bits}-bit, shift (agreement) |", file=out)
    print("|---|---|---|---|---|---|", file=out)
    for r in rows:
        cells = [f"{100 * r[m][0]:.2f} % ({100 * r[m][1]:.2f} %)" for m in ("multiply", "shift")]
        print(f"| {r['dataset']} | {r['dims']} | {r['test']} | {100 * r['float']:.2f} % | {cells[0]} | {cells[1]} |",
              file=out)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pwlnet.bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accuracy", help="float versus quantized accuracy on every data set")
    a.add_argument("--hidden", default="64,64")
    a.add_argument("--bits", type=int, default=8)
    a.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.what == "accuracy":
        accuracy_table(hidden=args.hidden, bits=args.bits, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
