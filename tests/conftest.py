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


#: Test files with the longest tests (RTL simulation, bitstream builds, the simulated
#: board), run first: xdist hands tests out in collection order, and with these at the
#: end one worker ran alone for minutes while the other had finished.
SLOW_FIRST = ("test_sim_engine.py", "test_boards_build.py", "test_sim_netlist.py", "test_binary_hw.py",
              "test_sim_cached_engine.py", "test_boards_orangecrab.py", "test_host.py", "test_cli.py",
              "test_fuzz_link.py", "test_host_run_cache.py", "test_fuzz_import.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Start the slow test files first (:data:`SLOW_FIRST`; the order within a file is
    kept), and keep ``xdist_group`` working under ``--dist loadgroup`` with pytest 9.

    pytest-xdist (3.8) marks a grouped test by appending ``@group`` to ``item._nodeid``;
    pytest 9 keeps a node's id in ``item._id`` instead, so the suffix was lost and every
    group was split over the workers (each of them synthesizing the netlist fixtures of
    tests/test_sim_netlist.py once).  This hook, run after xdist's, adds the suffix where
    it is missing; with a pytest that still honours ``_nodeid`` it finds it there and does
    nothing.
    """
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))
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
