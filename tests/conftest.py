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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keep ``xdist_group`` working under ``--dist loadgroup`` with pytest 9.

    pytest-xdist (3.8) marks a grouped test by appending ``@group`` to ``item._nodeid``;
    pytest 9 keeps a node's id in ``item._id`` instead, so the suffix was lost and every
    group was split over the workers (each of them synthesizing the netlist fixtures of
    tests/test_sim_netlist.py once).  This hook, run after xdist's, adds the suffix where
    it is missing; with a pytest that still honours ``_nodeid`` it finds it there and does
    nothing.
    """
    if not getattr(config.option, "loadgroup", False) and getattr(config.option, "dist", "no") != "loadgroup":
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:          # pytest < 9: xdist's own suffix works
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")
