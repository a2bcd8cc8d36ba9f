"""Argument types shared by the subcommands of ``pwlnet`` (application layer).

The subcommands live in several modules (:mod:`pwlnet.cli`, :mod:`pwlnet.cache_run`,
:mod:`pwlnet.host`, ...); the rules for their arguments live here, below all of them, so
that no subcommand imports the command line it is part of.
"""

import argparse
import os
import tempfile
from pathlib import Path

__all__ = ["positive_int", "OutputPathError", "check_output_file", "check_output_dir"]


class OutputPathError(ValueError):
    """An output path the command could not write to (checked before any work is done)."""


def positive_int(text):
    """``argparse`` type: a positive integer, or an error that shows what was given."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {v}")
    return v


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
