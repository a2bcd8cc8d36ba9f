"""``pwlnet predict``: the golden model on float inputs from a .npy file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import artifact, golden

__all__ = ["load_inputs", "save_npy", "cli_predict"]


def load_inputs(path):
    """Read float inputs from a .npy, with an error naming the file on any fault."""
    path = Path(path)
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise golden.InputError(f"{path}: cannot read inputs: {e}") from None
    if not np.issubdtype(x.dtype, np.number):
        raise golden.InputError(f"{path}: inputs must be numbers, not {x.dtype}")
    return x


def save_npy(path, array):
    """Write a .npy via a temporary file, so a failure leaves no half-written output."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def cli_predict(args):
    model = artifact.load(args.model_dir)
    x = load_inputs(args.inputs)
    try:
        y, codes = golden.predict(model, x)
    except golden.InputError as e:
        raise golden.InputError(f"{args.inputs}: {e}") from None
    if args.outputs:
        save_npy(args.outputs, y)
    if args.codes:
        save_npy(args.codes, codes)
    counts = np.bincount(golden.argmax(codes), minlength=model.output_dim)
    names = model.class_names or [str(i) for i in range(model.output_dim)]
    print(f"{len(x)} inputs; predicted classes: " + ", ".join(f"{n}: {c}" for n, c in zip(names, counts)))
    return 0
