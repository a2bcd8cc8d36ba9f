"""Reproducible measurements behind the tables in README.md.

``python -m pwlnet.bench accuracy`` trains a 64,64 ReLU MLP on every data set (seed 0,
default epochs), compiles it at 8 bits with both requantization modes, and prints a
Markdown table of float and quantized test accuracy and argmax agreement with
onnxruntime's float outputs.

``python -m pwlnet.bench compression`` measures the LERP compression claim: ReLU MLPs at
hidden width h and h/2 against LERP MLPs at h/2 and h/4 (two hidden layers each), float
and 8-bit test accuracy (mean and spread over seeds), weights, LERP table bits, cycles
per inference of the P = 8 engine and its iCE40UP5K resources after yosys synthesis
(the engine alone, without the board's UART link).

``python -m pwlnet.bench cache`` runs the hypersphere cache's golden model on the sensor
streams and synthesises the comparator bank (see :mod:`pwlnet.bench_cache`).

``python -m pwlnet.bench boards`` builds the regression models for every board, sweeps
the lane count, times the CPU and the simulators (see :mod:`pwlnet.bench_boards`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["accuracy_table", "compression_table", "main"]


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


def _mean_std(values):
    v = 100 * np.asarray(values)
    return f"{v.mean():.2f} ± {v.std():.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def compression_table(datasets=("digits", "basicmotions"), h=64, seeds=(0,), grid=64, lanes=8,
                      synth=True, out=sys.stdout):
    from . import compile as pcompile, data, golden, train
    from .hw.engine import MLPEngine

    configs = [("ReLU", h), ("ReLU", h // 2), ("LERP", h // 2), ("LERP", h // 4)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            ds = data.load(name)
            for kind, width in configs:
                fl, q8, model = [], [], None
                for seed in seeds:
                    kw = {"activation": "lerp", "grid": grid} if kind == "LERP" else {}
                    res = train.train(name, (width, width), seed=seed, verbose=False, **kw)
                    path = Path(tmp) / f"{name}-{kind}-{width}-{seed}.onnx"
                    train.export_onnx(res, path)
                    m = pcompile.compile_onnx(path, Path(tmp) / path.stem, calib=name, log=lambda *_: None)
                    fl.append(m.summary["float_accuracy"])
                    q8.append(m.summary["quantized_accuracy"])
                    model = model or m
                engine = MLPEngine(model, lanes, target="ice40")
                row = {"dataset": name, "model": f"{kind} {width},{width}", "float": _mean_std(fl),
                       "q8": _mean_std(q8), "weights": sum(l.weight.size for l in model.layers),
                       "table_bits": sum(l.table.size * l.out_bits for l in model.layers
                                         if getattr(l, "table", None) is not None),
                       "cycles": engine.cycles_per_inference}
                if synth:
                    from .hw.synth_report import synth_ice40
                    r = synth_ice40(engine)
                    row.update(lut=r["lut"], dsp=r["dsp"], ebr=r["ebr"], spram=r["spram"])
                rows.append(row)
                print(f"measured {row['dataset']} {row['model']}", file=sys.stderr)
    cols = ["data set", "model", "float %", "8-bit %", "weights", "LERP table bits", f"cycles (P={lanes})"]
    if synth:
        cols += ["LUT", "DSP", "EBR", "SPRAM"]
    print("| " + " | ".join(cols) + " |", file=out)
    print("|" + "---|" * len(cols), file=out)
    for r in rows:
        cells = [r["dataset"], r["model"], r["float"], r["q8"], r["weights"], r["table_bits"], r["cycles"]]
        if synth:
            cells += [r["lut"], r["dsp"], r["ebr"], r["spram"]]
        print("| " + " | ".join(map(str, cells)) + " |", file=out)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pwlnet.bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accuracy", help="float versus quantized accuracy on every data set")
    a.add_argument("--hidden", default="64,64")
    a.add_argument("--bits", type=int, default=8)
    a.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compression", help="ReLU at h and h/2 against LERP at h/2 and h/4")
    c.add_argument("--h", type=int, default=64, help="the ReLU reference width (default 64)")
    c.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2)")
    c.add_argument("--grid", type=int, default=64, help="LERP table segments (default 64)")
    c.add_argument("--no-synth", action="store_true", help="skip the yosys resource counts")
    k = sub.add_parser("cache", help="hypersphere cache on sensor streams, comparator bank cost, 2-D figure")
    from .bench_cache import add_bench_arguments
    add_bench_arguments(k)
    b = sub.add_parser("boards", help="every board, a lane sweep, the CPU and the simulators: docs/bench.md")
    from .bench_boards import add_bench_arguments as add_boards_arguments
    add_boards_arguments(b)
    args = p.parse_args(argv)
    if args.what == "boards":
        from .bench_boards import cli_bench_boards
        return cli_bench_boards(args)
    if args.what == "cache":
        from .bench_cache import cli_bench_cache
        return cli_bench_cache(args)
    if args.what == "accuracy":
        accuracy_table(hidden=args.hidden, bits=args.bits, seed=args.seed)
    else:
        compression_table(h=args.h, seeds=[int(s) for s in args.seeds.split(",")], grid=args.grid,
                          synth=not args.no_synth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
