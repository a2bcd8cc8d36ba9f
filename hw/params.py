"""Generator parameters shared by the hardware blocks: the targets and the argument checks."""

import numpy as np

__all__ = ["TARGETS", "check_target", "check_int"]

#: What the generators build for: ``"generic"`` (behavioural Verilog for any tool or
#: simulator) or ``"ice40"`` (iCE40 primitives such as SB_MAC16 where they matter).
TARGETS = ("generic", "ice40")


def check_target(target):
    """Return ``target`` if it is one of :data:`TARGETS`, else raise ``ValueError``."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    return target


def check_int(value, what, lo, hi=None):
    """Return ``value`` as an int if it is an integer in ``lo..hi`` (``hi=None``: no upper bound).

    Raises ``TypeError`` for a non-integer (``bool`` included) and ``ValueError`` for one out
    of range, naming the parameter and showing the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"at least {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{what} must be {rng}, not {value!r}")
    return int(value)
