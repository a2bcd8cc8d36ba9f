"""``pwlnet predict``: the golden model on float inputs from a .npy file."""

from __future__ import annotations

import numpy as np

from . import artifact, golden
from .files import check_output_file, load_input_codes, load_inputs, save_npy

__all__ = ["load_inputs", "load_input_codes", "save_npy", "cli_predict"]


def cli_predict(args):
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
