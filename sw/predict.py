"""``pwlnet predict``: the golden model on float inputs from a .npy file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from . import artifact, golden

__all__ = ["load_inputs", "load_input_codes", "save_npy", "cli_predict"]


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


def load_input_codes(model, path):
    """Float inputs from a .npy and their input codes for ``model``: ``(x, codes)``, with
    every refusal (unreadable, not numbers, wrong shape, NaN/Inf) naming the file."""
    x = load_inputs(path)
    try:
        return x, golden.quantize_inputs(model, x)
    except golden.InputError as e:
        raise golden.InputError(f"{path}: {e}") from None


def save_npy(path, array):
    """Write a .npy via a temporary file, so a failure or an interrupt leaves no
    half-written output (and an existing file at ``path`` untouched)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # Through a file object, so that numpy does not append ".npy" to the name.
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cli_predict(args):
    from .cli_args import check_output_file
    for option, path in (("--outputs", args.outputs), ("--codes", args.codes)):
        if path:
            check_output_file(path, option)
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
