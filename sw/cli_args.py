"""Argument types shared by the subcommands of ``pwlnet`` (application layer).

The subcommands live in several modules (:mod:`pwlnet.cli`, :mod:`pwlnet.cache_run`,
:mod:`pwlnet.host`, ...); the rules for their arguments live here, below all of them, so
that no subcommand imports the command line it is part of.
"""

import argparse

__all__ = ["positive_int"]


def positive_int(text):
    """``argparse`` type: a positive integer, or an error that shows what was given."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {v}")
    return v
