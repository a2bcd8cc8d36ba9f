"""Input files in, output files out, for the command line: every input refused with its
file's name, every output checked before the work and written atomically.

The subcommands run long jobs (a simulation, a board, a bitstream build) between reading
their inputs and writing their outputs; the checks here run first, so a job never ends in
"cannot write", and a write never leaves half a file: it goes to a temporary file beside
the output that then replaces it, and is removed on any error or interrupt.  Layer 0, so
that the simulation and board layers use the same rules as the application.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from . import golden

__all__ = ["OutputPathError", "check_output_file", "check_output_dir", "load_inputs", "load_input_codes",
           "save_npy"]


class OutputPathError(ValueError):
    """An output path the command could not write to (checked before any work is done)."""


def _nearest_existing(path):
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def _probe(directory, name):
    """Create and remove a file in ``directory``: the one test of writability that also
    holds for root and for read-only or special file systems."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".pwlnet-probe.", dir=directory)
    except OSError as e:
        raise OutputPathError(f"{name}: cannot write in {directory}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path, option=None):
    """Refuse an output file that could not be written, before the work that produces it.

    ``path`` must not be a directory, its directory must exist, and a file must be
    creatable there.  Raises :class:`OutputPathError` naming ``option`` (``"--outputs"``)
    and the path; returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    name = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise OutputPathError(f"{name}: is a directory, not a file name")
    parent = path.parent
    if not parent.exists():
        raise OutputPathError(f"{name}: directory {parent} does not exist")
    if not parent.is_dir():
        raise OutputPathError(f"{name}: {parent} is not a directory")
    _probe(parent, name)
    return path


def check_output_dir(path, option=None, *, marker=None, what="directory", replaced=False):
    """Refuse an output directory that could not be written or must not be replaced.

    ``path`` may be absent (its parents are created later) or a directory; an existing
    file is refused.  With ``marker`` (a file name such as ``"model.json"``) the directory
    is replaced as a whole by the command, so an existing one must hold ``marker`` or be
    empty: a folder of the user's is never deleted.  The nearest existing folder must be
    writable: ``path`` itself when the command writes into it, its parent when the command
    ``replaced`` it as a whole (a new directory beside it, then a rename), so that an
    existing directory is not touched by the check.  Raises :class:`OutputPathError`;
    returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    name = f"{option} {path}" if option else str(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{name}: is a file, not a {what}")
    if marker and path.is_dir() and not (path / marker).is_file() and any(path.iterdir()):
        raise OutputPathError(f"{name}: exists and is not a {what} (no {marker}); pwlnet replaces only a "
                              f"{what} as a whole, never another folder: give a new or empty folder")
    _probe(_nearest_existing(path.parent if replaced else path), name)
    return path


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
