"""The layers of the code: every import of every module points down, and none closes a cycle.

docs/architecture.md describes the layers; :data:`LAYERS` is their one definition.  The
imports are read from the source (with :mod:`ast`, so imports inside functions count too),
not from what happens to be loaded.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder of each top-level package.
PACKAGES = {"pwlnet": "sw", "pwlnet.hw": "hw", "pwlnet.sim": "sim", "pwlnet.boards": "boards"}

#: Layer of each module, bottom first.  A module may import only from its own layer or
#: below, and no set of modules may import each other in a cycle.
LAYERS = {
    # 0 -- arithmetic rules, the compiled model and the contracts every layer shares
    "pwlnet": 0, "pwlnet.fixedpoint": 0, "pwlnet.ir": 0, "pwlnet.artifact": 0,
    "pwlnet.golden": 0, "pwlnet.quantize": 0, "pwlnet.lerp": 0, "pwlnet.onnx_import": 0,
    "pwlnet.regions": 0, "pwlnet.data": 0, "pwlnet.compile": 0, "pwlnet.synth": 0,
    "pwlnet.protocol": 0, "pwlnet.float_cache": 0, "pwlnet.code_cache": 0,
    "pwlnet.cache_host": 0,
    "pwlnet.tie_guard": 0, "pwlnet.polycomplex": 0, "pwlnet.files": 0, "pwlnet.errors": 0, "pwlnet.modeldir": 0,
    "pwlnet.binary": 0, "pwlnet.binary_onnx": 0,
    # 1 -- hardware generators
    "pwlnet.hw": 1,
    # 2 -- simulation and board builds
    "pwlnet.sim": 2, "pwlnet.boards": 2,
    "pwlnet.sim.netlist_plan": 2, "pwlnet.sim.netlist_bench": 2,
    # 3 -- the application: command line, host driver, training, benchmarks
    "pwlnet.cli": 3, "pwlnet.cli_args": 3, "pwlnet.host": 3, "pwlnet.cache_run": 3,
    "pwlnet.predict": 3, "pwlnet.models": 3, "pwlnet.train": 3, "pwlnet.margin": 3,
    "pwlnet.bench": 3, "pwlnet.bench_cache": 3, "pwlnet.bench_boards": 3, "pwlnet.fuzz": 3, "pwlnet.pictures": 3,
    "pwlnet.pelu": 3, "pwlnet.binary_train": 3,
}
LAYER_NAMES = ("rules and compiled model", "hardware", "simulation and boards", "application")

#: Third-party packages a layer may not import: the rules run without any hardware
#: library, and nothing below the application needs torch.
FORBIDDEN = {0: ("amaranth", "cocotb", "cocotb_tools", "torch"), 1: ("cocotb", "cocotb_tools", "torch"),
             2: ("torch",)}


def _modules():
    """``{module name: path}`` of every module of the four packages."""
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def layer_of(module):
    """The layer of ``module``: its own entry in :data:`LAYERS`, or its nearest package's."""
    name = module
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    raise KeyError(module)


def _is_package(module):
    return MODULES[module].name == "__init__.py"


def imports_of(module):
    """``(pwlnet modules, third-party top-level names)`` that ``module`` imports, anywhere in it."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    base = module if _is_package(module) else module.rpartition(".")[0]
    ours, theirs = set(), set()

    def target(name):
        # the longest known module that `name` is or lies in
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "pwlnet":
                    ours.add(target(a.name))
                else:
                    theirs.add(a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                src = f"{pkg}.{node.module}" if node.module else pkg
            else:
                src = node.module
            if src.split(".")[0] != "pwlnet":
                theirs.add(src.split(".")[0])
                continue
            for a in node.names:
                sub = f"{src}.{a.name}"
                ours.add(sub if sub in MODULES else target(src))
    ours.discard(module)
    return ours, theirs


GRAPH = {m: imports_of(m)[0] for m in MODULES}


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if not any(m == k or m.startswith(k + ".") for k in LAYERS)]
    assert not missing, f"give these modules a layer in tests/test_layers.py LAYERS: {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    up = [f"{dep} ({LAYER_NAMES[layer_of(dep)]})" for dep in sorted(GRAPH[module])
          if layer_of(dep) > layer_of(module)]
    assert not up, f"{module} ({LAYER_NAMES[layer_of(module)]}) imports from a higher layer: {up}"
    _, theirs = imports_of(module)
    bad = sorted(theirs & set(FORBIDDEN.get(layer_of(module), ())))
    assert not bad, f"{module} ({LAYER_NAMES[layer_of(module)]}) imports {bad}"


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_checker_sees_upward_edges_and_cycles():
    """The checks above can fail: a made-up graph with a cycle and an upward edge."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("pwlnet.hw.engine") == 1 > layer_of("pwlnet.golden")
    assert layer_of("pwlnet.cli") == 3
    # a relative import inside a function is found and resolved
    assert "pwlnet.sim.runner" in GRAPH["pwlnet.sim.verilog_check"]
