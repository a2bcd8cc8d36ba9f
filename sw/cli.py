"""The ``pwlnet`` command line.

Each subcommand's work lives in its own module and is imported only when that
subcommand runs, so ``pwlnet compile`` never pays for torch and ``pwlnet --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .cli_args import positive_int

__all__ = ["main", "build_parser", "one_line"]


def build_parser():
    p = argparse.ArgumentParser(
        prog="pwlnet",
        description="Compile piecewise-linear neural networks (ReLU MLPs) into bit-exact FPGA datapaths.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"pwlnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("train", help="train a model on a built-in data set or your own data and export ONNX (needs torch)")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="iris, digits, basicmotions or daphnet")
    source.add_argument("--data", metavar="FILE.npz",
                        help="your own data: an .npz with x_train, y_train, x_test, y_test (see pwlnet.data.load_file)")
    s.add_argument("--hidden", default="64,64", help="hidden layer widths, comma-separated (default 64,64)")
    s.add_argument("--out", required=True, help="output ONNX file")
    s.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: per data set)")
    s.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--batch-size", type=positive_int, default=None, help="mini-batch size")
    s.add_argument("--model", choices=("mlp", "pelu"), default="mlp", help="mlp (default) or pelu: mass-conserving PeLU layers on raw non-negative inputs x 10, hidden widths 3 (iris: 4 -> 3 -> 3) unless --hidden names others (docs/pelu.md)")
    s.add_argument("--binary", action="store_true",
                   help="a binarized MLP (weights and activations +-1, BatchNorm and a sign step, docs/binary.md), "
                        "trained with a straight-through estimator; a built-in --dataset only")
    s.add_argument("--code-noise", type=float, default=None, metavar="STEPS",
                   help="--binary: train with uniform noise of this many 8-bit input-code steps on the inputs")
    s.add_argument("--standardize", action="store_true",
                   help="--binary: scale each feature by its own std (default: one gain for all features)")
    s.add_argument("--activation", choices=("relu", "lerp"), default="relu",
                   help="hidden-layer activation: ReLU (default) or a learnable per-channel LERP table")
    s.add_argument("--grid", type=positive_int, default=None,
                   help="LERP: segments per table, a power of two (default 64)")
    s.add_argument("--lerp-range", default=None, metavar="LO,HI",
                   help="LERP: the tables' input range, written --lerp-range=LO,HI (default -4,4)")
    s.add_argument("--smoothness", type=float, default=None,
                   help="LERP: weight of the tables' roughness penalty in the loss (default 0.1; 0 for none)")
    s.add_argument("--region-margin", type=float, default=None, metavar="GAMMA",
                   help="region-aware training for the hypersphere cache: push every hidden neuron's hyperplane "
                        "and the decision boundaries GAMMA input codes (of the compiled 8-bit model) away from "
                        "the training inputs (docs/cache.md)")
    s.add_argument("--region-weight", type=float, default=None, metavar="LAMBDA",
                   help="weight of the region margin penalty in the loss (default 1)")
    s.add_argument("--region-metric", choices=("linf", "l2"), default=None,
                   help="ball metric of the cache the model is trained for (default linf)")
    s.set_defaults(handler="pwlnet.train:cli_train")

    s = sub.add_parser("compile", help="quantize an ONNX model into a compiled-model directory")
    s.add_argument("model", help="ONNX file")
    s.add_argument("--out", required=True, help="output directory (replaced as a whole)")
    s.add_argument("--weight-bits", type=int, default=8, help="weight width, 2..16 (default 8)")
    s.add_argument("--act-bits", type=int, default=8, help="activation width, 2..16 (default 8)")
    s.add_argument("--calib", default=None,
                   help="calibration data: a data set name, a data file (.npz, as pwlnet train --data) or a "
                        ".npy of float inputs (default: the data recorded in the model by 'pwlnet train')")
    s.add_argument("--requant", choices=("shift", "multiply"), default="multiply",
                   help="requantization per output channel: integer multiplier and rounding shift "
                        "(default; one shared multiplier in hardware) or a rounding shift alone "
                        "(no multiplier; costs up to one bit of weight precision)")
    s.add_argument("--multiplier-bits", type=int, default=8, help="multiplier width for --requant multiply (default 8)")
    s.add_argument("--lerp-grid", type=positive_int, default=None,
                   help="segments per LERP table for imported 1-D functions (Tanh, GELU, ...), "
                        "a power of two (default 64)")
    s.add_argument("--lerp-range", default=None, metavar="LO,HI",
                   help="fixed input range of those tables, written --lerp-range=LO,HI "
                        "(default: each channel's calibrated range)")
    s.add_argument("--output", default=None, metavar="NAME",
                   help="the graph output to compile, for a model with several (default: the only one, or a "
                        "classifier's scores behind its label and probabilities outputs)")
    s.set_defaults(handler="pwlnet.compile:cli_compile")

    s = sub.add_parser("predict", help="run the golden model (integer reference) on float inputs")
    s.add_argument("model_dir", metavar="DIR", help="compiled-model directory")
    s.add_argument("--inputs", required=True, help=".npy of float inputs, (N, *input_shape)")
    s.add_argument("--outputs", help="write dequantized outputs (N, n_out) to this .npy")
    s.add_argument("--codes", help="write integer output codes (N, n_out) to this .npy")
    s.set_defaults(handler="pwlnet.predict:cli_predict")

    s = sub.add_parser("simulate", help="run a compiled model in RTL simulation and compare with the golden model")
    from pwlnet.sim.engine_sim import add_arguments as simulate_arguments   # light: no cocotb import
    simulate_arguments(s)
    s.set_defaults(handler="pwlnet.sim.engine_sim:cli_simulate")

    s = sub.add_parser("cache", help="run an input stream through the hypersphere cache (golden model, or RTL with --simulator)")
    from .cache_run import add_cache_arguments
    add_cache_arguments(s)
    s.set_defaults(handler="pwlnet.cache_run:cli_cache")

    s = sub.add_parser("regions", help="linear regions of a 2-D/3-D ReLU MLP (vertices, edges, regions, Betti numbers); patterns and safe radii over inputs")
    from .polycomplex import add_regions_arguments
    add_regions_arguments(s)
    s.set_defaults(handler="pwlnet.polycomplex:cli_regions")

    s = sub.add_parser("run", help="run inputs on a board over UART (or on the simulated board)")
    from .host import add_run_arguments
    add_run_arguments(s)
    s.set_defaults(handler="pwlnet.host:cli_run")

    s = sub.add_parser("boards", help="list the boards pwlnet builds for: device, resources, clock, host link")
    from pwlnet.boards.listing import add_boards_arguments
    add_boards_arguments(s)
    s.set_defaults(handler="pwlnet.boards.listing:cli_boards")

    s = sub.add_parser("bitstream", help="build a bitstream and report for a board (or program it)")
    from pwlnet.boards.build import add_build_arguments
    add_build_arguments(s)
    s.set_defaults(handler="pwlnet.boards.build:cli_build")
    return p


def main(argv=None):
    """Run the command line; returns the exit status.

    0: done.  1: the command ran and a check it makes failed (the RTL or the board
    disagreed with the golden model, the toolchain could not build the bitstream).
    2: refused: a bad argument or input file, an output that cannot be written (argparse
    exits with 2 too); the message is one line, and nothing has been written.
    130: interrupted (Ctrl-C); no output is left half-written.
    """
    args = build_parser().parse_args(argv)
    mod, func = args.handler.split(":")
    try:
        handler = getattr(importlib.import_module(mod), func)
    except ImportError as e:
        print(f"pwlnet {args.command}: cannot load {mod}: {e}", file=sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print(f"pwlnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:   # every user-facing error of pwlnet is a ValueError subclass
        print(f"pwlnet {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2


def one_line(error):
    """An exception's message on one line (a message that spans lines is joined with "; ")."""
    text = str(error) or type(error).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


if __name__ == "__main__":
    sys.exit(main())
