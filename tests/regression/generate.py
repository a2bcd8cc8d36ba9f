"""Regenerate the golden regression vectors in tests/regression/<name>/.

Run by hand, never by the test suite:

    .venv/bin/python tests/regression/generate.py [--retrain] [NAME ...]

Each reference model directory holds

``model.onnx``      the trained float model (trained once, with ``--retrain``);
``compiled/``       ``pwlnet compile model.onnx`` with the data set's training split;
``inputs.npy``      float inputs (the first test-split samples, in order);
``codes_in.npy``    their input codes (``golden.quantize_inputs``);
``codes_out.npy``   the golden model's output codes.

A ``{"binary": True}`` entry is a binarized MLP (docs/binary.md): trained with
:func:`pwlnet.binary_train.train_binary` and exported with
:func:`pwlnet.binary_train.export_binary_onnx`, as ``pwlnet train --binary`` does (its
epochs when none are given; the requantization mode does not apply), and compiled by
``compile_onnx`` into a binary model directory.

``tests/test_regression.py`` recompiles, requantizes and reruns all of it and fails on
any changed bit; the RTL benches check the same vectors.  A change to the arithmetic is
therefore a deliberate act: rerun this script, and say why in the commit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

#: name -> (data set, hidden widths, training epochs, requantization mode, stored vectors[, train kwargs])
#: (epochs None: the trainer's default; requantization None for binarized models)
REFERENCE_MODELS = {
    # one hidden layer whose width (10) is not a multiple of 8 lanes; shift-only requant
    "iris_h10": ("iris", (10,), 1000, "shift", 45),
    # deeper and wider: 64 inputs, two hidden layers
    "digits_h64x32": ("digits", (64, 32), None, "multiply", 300),
    # the default iCEBreaker model: a sensor classifier
    "basicmotions_h64x64": ("basicmotions", (64, 64), None, "multiply", 200),
    # three hidden layers of odd widths on the Daphnet recording (sensor placement)
    "daphnet_h24x20x12": ("daphnet", (24, 20, 12), None, "shift", 300),
    # learnable LERP activations: 64-entry tables (6/2 index/fraction split) ...
    "digits_lerp_h32x32": ("digits", (32, 32), None, "multiply", 300, {"activation": "lerp", "grid": 64}),
    # ... and 16-entry tables (4/4 split) with shift-only requantization
    "basicmotions_lerp_h16x16": ("basicmotions", (16, 16), None, "shift", 200, {"activation": "lerp", "grid": 16}),
    # PeLU (mass-conserving buckets and pipes, pwlnet.pelu): 4 -> 3 -> 3 on raw iris x 10
    "iris_pelu_h3": ("iris", (3,), None, "multiply", 45, {"model": "pelu"}),
    # binarized MLPs (XNOR-popcount engine): 64 inputs with integer pixels (exact codes) ...
    "digits_b64x64": ("digits", (64, 64), None, None, 100, {"binary": True}),
    # ... and the sensor classifier, 24 real-valued features
    "basicmotions_b64x64": ("basicmotions", (64, 64), None, None, 100, {"binary": True}),
}


def generate(name, retrain=False):
    from pwlnet import compile as pcompile, data, golden

    dataset, hidden, epochs, requant, count, *kw = REFERENCE_MODELS[name]
    kw = kw[0] if kw else {}
    out = HERE / name
    out.mkdir(exist_ok=True)
    onnx_path = out / "model.onnx"
    binary = kw.get("binary", False)
    if retrain or not onnx_path.exists():
        if binary:
            from pwlnet import binary_train
            opts = {} if epochs is None else {"epochs": epochs}
            result = binary_train.train_binary(dataset, hidden, seed=0, **opts)
            binary_train.export_binary_onnx(result, onnx_path)
        else:
            from pwlnet import train
            result = train.train(dataset, hidden, epochs=epochs, seed=0, verbose=False, **kw)
            train.export_onnx(result, onnx_path)
    opts = {} if binary else {"requant": requant}
    model = pcompile.compile_onnx(onnx_path, out / "compiled", calib=dataset, log=lambda *_: None, **opts)
    x = data.load(dataset).x_test[:count].astype(np.float32)
    codes_in = golden.quantize_inputs(model, x)
    codes_out = golden.forward(model, codes_in)
    np.save(out / "inputs.npy", x)
    np.save(out / "codes_in.npy", codes_in)
    np.save(out / "codes_out.npy", codes_out)
    s = model.summary
    flips = f" ({s['flips']} flips, codes agreement {s['codes_agreement']:.4f})" if "flips" in s else ""
    print(f"{name}: dims {[model.input_dim] + [l.n_out for l in model.layers]}, "
          f"float {s.get('float_accuracy', float('nan')):.4f}, quantized {s.get('quantized_accuracy', float('nan')):.4f}, "
          f"agreement {s.get('argmax_agreement', float('nan')):.4f}{flips}, {len(x)} vectors")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=list(REFERENCE_MODELS))
    p.add_argument("--retrain", action="store_true", help="train the float models again")
    args = p.parse_args(argv)
    for n in args.names:
        if n not in REFERENCE_MODELS:
            sys.exit(f"unknown reference model {n!r}; known: {', '.join(REFERENCE_MODELS)}")
        generate(n, args.retrain)


if __name__ == "__main__":
    main()
