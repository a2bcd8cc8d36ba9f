"""Checks of generator parameters, shared by the hardware blocks."""

import numpy as np

__all__ = ["check_int"]


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
