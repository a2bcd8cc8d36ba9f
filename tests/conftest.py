"""Fixtures shared by several test files (plain helpers are in helpers.py)."""

import pytest

from pwlnet import artifact

from helpers import REGRESSION, compiled


@pytest.fixture(scope="session")
def cache_net():
    """The cache tests' network: a random 4-8-3 ReLU MLP, compiled, with its code-space blocks.

    ``(net, model, blocks)`` as :func:`helpers.compiled` returns them.
    """
    return compiled(21, 4, [8], n_out=3)


@pytest.fixture(scope="session")
def regression_model():
    """Load a reference model of tests/regression by name (compiled once per session)."""
    loaded = {}

    def load(name):
        if name not in loaded:
            loaded[name] = artifact.load(REGRESSION / name / "compiled")
        return loaded[name]
    return load
