"""The generated engine Verilog against the golden model, in cocotb on Icarus and Verilator.

Every regression model (``tests/regression/<name>/``; three synthetic models of
different depths and widths if those are missing) runs its stored inputs plus 2 000
random input vectors at P = 8 on both simulators; one model also runs at P = 3, the
smallest on the ``ice40`` target (SB_MAC16 lanes, SB_SPRAM256KA weights, through yosys'
``cells_sim.v``) and the default board model on the ``ice40`` target at P = 16 (two 8x8
lanes per SB_MAC16); on Icarus the ``ice40`` ones get as many random vectors as fit
``ICARUS_ICE40_CYCLES`` engine cycles (at least 100).  Every
output code and argmax must match the golden model, and the stored outputs of the
regression vectors.  The binarized regression models run on the binary engine
(:class:`pwlnet.hw.binary.BinaryEngine`, chosen by the model's kind) at P = 8 only, with
``BINARY_VECTORS`` stored and random vectors (tests/test_binary_hw.py covers that engine
in depth); the other configurations are the MLP engine's.  Builds are cached by
:mod:`pwlnet.sim.runner` (keyed by model and parameters), so reruns only simulate.
``PWLNET_SIM_VECTORS`` overrides the vector count for quick local runs.

The bench itself is proved on the stand-in component of :mod:`pwlnet.sim.toy`: it must
pass against its own reference and must report mismatches against the golden model.

Run in parallel with ``pytest -n 2 tests/test_sim_engine.py``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import numpy as np
import pytest

from pwlnet import artifact, golden
from pwlnet.hw.engine.plan import EnginePlan, ideal_cycles
from pwlnet.sim import regress, runner
from pwlnet.sim.engine_sim import main as simulate_main, simulate
from pwlnet.sim.toy import toy_forward

from helpers import simulator_param

#: Random vectors per model and simulator (the issue asks for at least 2 000 in ``make test``).
VECTORS = int(os.environ.get("PWLNET_SIM_VECTORS", "2000"))
#: The other lane count: not a power of two and not a divisor of most layer widths.
OTHER_LANES = 3
#: Random vectors of the generic configurations on Icarus, about 20 times slower than
#: Verilator (which runs VECTORS of them): make test's 15-minute budget.  The stored vectors
#: run on both in full; PWLNET_SIM_ICARUS_VECTORS=2000 runs as many as on Verilator.
ICARUS_VECTORS = int(os.environ.get("PWLNET_SIM_ICARUS_VECTORS", "500"))
#: Engine cycles of random vectors for the iCE40 configurations on Icarus (at least 100 vectors).
ICARUS_ICE40_CYCLES = 50_000
#: The model `make bitstream BOARD=icebreaker` builds.
DEFAULT_MODEL = "basicmotions_h64x64"
#: (stored, random) vectors of a binarized model: 300 to 700 engine cycles an inference,
#: and tests/test_binary_hw.py runs the binary engine at more sizes and lane counts.
BINARY_VECTORS = (32, 8)


SIMS = [simulator_param("verilator"), simulator_param("icarus")]
CASES = regress.find_cases()
ENGINE = importlib.util.find_spec("pwlnet.hw.engine") is not None


def _binary(case):
    return getattr(case.model, "kind", "mlp") == "binary"


def _configs():
    """(case index, lanes, target, weight memory): every model at P = 8, the second
    smallest also at the other P, the smallest on the ice40 target with SB_MAC16 lanes
    and run-time loaded SB_SPRAM256KA weights, and the board's default model as the
    default build makes it: ice40 at P = 16, two 8x8 lanes per SB_MAC16.  (Every model at
    P = 16 on ice40: ``make sim LANES=16 TARGET=ice40``, too long for ``make test``.)
    The extra configurations are the MLP engine's: binarized models run at P = 8 only."""
    mlp = [i for i, c in enumerate(CASES) if not _binary(c)]
    by_size = sorted(mlp, key=lambda i: ideal_cycles(CASES[i].model.layers, 8))
    out = [(i, 8, "generic", "auto") for i in range(len(CASES))]
    default = [i for i, c in enumerate(CASES) if c.name == DEFAULT_MODEL]
    out += [(i, 16, "ice40", "auto") for i in default]
    out.append((by_size[min(1, len(by_size) - 1)], OTHER_LANES, "generic", "auto"))
    out.append((by_size[0], 8, "ice40", "ram"))
    return [pytest.param(i, p, t, w, id=f"{CASES[i].name}-p{p}-{t}" + ("" if w == "auto" else f"-{w}"))
            for i, p, t, w in out]


def _codes(case, seed, simulator, lanes, target="generic"):
    """The stored inputs, then ``VECTORS`` random ones.  Icarus runs yosys' SB_MAC16 models
    at about 1 000 engine cycles per second here, so the iCE40 configurations get as many
    vectors there as fit ``ICARUS_ICE40_CYCLES`` engine cycles (at least 100), half of
    them stored ones (every model at P = 16 with more: `make sim SIM=icarus LANES=16
    TARGET=ice40`).  Returns the codes and how many of them are stored ones."""
    stored = np.zeros((0, case.model.input_dim), dtype=np.int64) if case.codes is None else case.codes
    n = VECTORS
    if _binary(case):
        stored, n = stored[:BINARY_VECTORS[0]], min(n, BINARY_VECTORS[1])
    elif simulator == "icarus" and target != "ice40":
        n = min(n, ICARUS_VECTORS)
    elif (simulator, target) == ("icarus", "ice40"):
        total = max(100, ICARUS_ICE40_CYCLES // EnginePlan(case.model, lanes).cycles_per_inference)
        if total < len(stored) + n:
            stored = stored[:total // 2]
            n = total - len(stored)
    return np.concatenate([stored, regress.random_codes(case.model, n, seed)]), len(stored)


@pytest.mark.skipif(not ENGINE, reason="pwlnet.hw.engine is not there yet")
@pytest.mark.parametrize("simulator", SIMS)
@pytest.mark.parametrize("case_index,lanes,target,weight_memory", _configs())
def test_engine_matches_golden(simulator, case_index, lanes, target, weight_memory):
    case = CASES[case_index]
    codes, n_stored = _codes(case, case_index, simulator, lanes, target)
    res = simulate(case.model, codes, simulator=simulator, lanes=lanes, target=target,
                   weight_memory=weight_memory, seed=case_index)
    assert len(res.outputs) == len(codes)
    assert res.mismatches == 0, (f"{case.name} ({case.source}) on {simulator}, P={lanes}, {target}: "
                                 f"{res.mismatches} of {len(codes)} inferences differ:\n"
                                 + "\n".join(res.details))
    np.testing.assert_array_equal(res.outputs, golden.forward(case.model, codes))
    if case.expected is not None:
        # the stored golden vectors: a change of the golden model fails here too
        k = min(len(case.expected), n_stored)
        np.testing.assert_array_equal(res.outputs[:k], case.expected[:k])
    np.testing.assert_array_equal(res.argmax, golden.argmax(res.outputs))
    # no faster than the multiply-accumulate work allows, and as fast as the engine claims
    assert res.cycles_per_inference >= res.ideal_cycles
    assert res.cycles_per_inference == res.engine_cycles


def test_every_stored_model_is_either_run_or_left_out_with_a_reason():
    """Stored models the engine cannot run yet are named, never dropped silently."""
    names = {c.name for c in CASES}
    for name, why in regress.left_out():
        assert name not in names and "activation" in why
    stored = [p.name for p in regress.regression_dir().iterdir() if (p / "compiled" / "model.json").exists()]
    assert names | {n for n, _ in regress.left_out()} == set(stored)


def _bench_sim():
    return "icarus" if shutil.which("iverilog") else "verilator"


def test_bench_passes_on_toy():
    """The stand-in component with random gaps and back-pressure: no false alarms."""
    case = CASES[-1]
    codes = regress.random_codes(case.model, 300, seed=5)
    res = simulate(case.model, codes, simulator=_bench_sim(), lanes=4, dut="toy", seed=5)
    assert res.mismatches == 0, "\n".join(res.details)
    np.testing.assert_array_equal(res.outputs, res.expected)
    # the toy's timing is exactly known: d input beats, ideal_cycles busy, n_out output beats
    assert res.cycles_per_inference == res.engine_cycles
    assert res.latency_cycles == res.engine_cycles


def test_bench_detects_mismatches():
    """The toy checked against the golden model must be reported, inference by inference."""
    case = CASES[-1]
    codes = regress.random_codes(case.model, 40, seed=6)
    b = runner.build(case.model, lanes=4, simulator=_bench_sim(), dut="toy")
    r = runner.run(b, codes, seed=6, reference="golden")
    want = (toy_forward(case.model, codes) != golden.forward(case.model, codes)).any(axis=1)
    assert r["mismatches"] == int(want.sum()) > 0
    assert r["mismatch_details"]
    # runs with mismatches are kept for debugging; this one was meant to fail
    shutil.rmtree(r["run_dir"], ignore_errors=True)


@pytest.mark.skipif(not ENGINE, reason="pwlnet.hw.engine is not there yet")
def test_cli_simulate(tmp_path, capsys):
    """``pwlnet simulate DIR --inputs X.npy --outputs Y.npy --codes C.npy`` on a stored model."""
    case = min(CASES, key=lambda c: ideal_cycles(c.model.layers, 8))
    x = golden.dequantize_inputs(case.model, regress.random_codes(case.model, 30, seed=9))
    model_dir = tmp_path / "model"
    artifact.save(case.model, model_dir)
    np.save(tmp_path / "x.npy", x)
    rc = simulate_main([str(model_dir), "--inputs", str(tmp_path / "x.npy"), "--simulator", _bench_sim(),
               "--outputs", str(tmp_path / "y.npy"), "--codes", str(tmp_path / "c.npy")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "0 mismatches" in out and "cycles per inference" in out
    y_ref, c_ref = golden.predict(case.model, x)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), c_ref)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), y_ref)
    assert np.load(tmp_path / "y.npy").shape == (30, case.model.output_dim)


@pytest.fixture(scope="module")
def imported_tanh_sigmoid(tmp_path_factory):
    """A torch model with Tanh and Sigmoid activations, exported, imported as LERP tables, compiled."""
    import torch
    from pwlnet import compile as pcompile

    tmp = tmp_path_factory.mktemp("tanh")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.Tanh(), torch.nn.Linear(20, 12),
                              torch.nn.Sigmoid(), torch.nn.Linear(12, 3)).eval()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 6),), str(tmp / "m.onnx"), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "n"}})
    np.save(tmp / "calib.npy", np.random.default_rng(0).normal(0, 1.5, (500, 6)).astype(np.float32))
    model = pcompile.compile_onnx(tmp / "m.onnx", tmp / "compiled", calib=str(tmp / "calib.npy"),
                                  log=lambda *_: None)
    assert [l.activation for l in model.layers] == ["lerp", "lerp", "none"]
    return model


@pytest.mark.parametrize("simulator", SIMS)
def test_imported_tanh_sigmoid_network_matches_golden(imported_tanh_sigmoid, simulator):
    model = imported_tanh_sigmoid
    codes = regress.random_codes(model, VECTORS, seed=11)
    res = simulate(model, codes, simulator=simulator, lanes=8, seed=11)
    assert res.mismatches == 0, "\n".join(res.details)
    np.testing.assert_array_equal(res.outputs, golden.forward(model, codes))
    assert res.cycles_per_inference == res.engine_cycles


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # torch's legacy-exporter notice
@pytest.mark.parametrize("simulator", SIMS)
@pytest.mark.parametrize("name", ["log_softmax", "matmul_add"])
def test_cli_simulate_on_unseen_imported_models(name, simulator, tmp_path, capsys):
    """``pwlnet simulate`` on models it has never seen: Flatten + BatchNorm + LogSoftmax,
    and MatMul + Add, with layer widths 5 and 3 at P = 3 (no width a multiple of P)."""
    from helpers import export_torch, torch_models
    from pwlnet import compile as pcompile

    factory, shape = torch_models()[name]
    import torch
    torch.manual_seed(1)
    export_torch(factory(), tmp_path / "m.onnx", shape, 13)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "calib.npy", rng.normal(0, 1, (400, *shape)).astype(np.float32))
    model = pcompile.compile_onnx(tmp_path / "m.onnx", tmp_path / "model", calib=str(tmp_path / "calib.npy"),
                                  log=lambda *_: None)
    x = rng.normal(0, 1, (300, *shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc = simulate_main([str(tmp_path / "model"), "--inputs", str(tmp_path / "x.npy"), "--simulator", simulator,
                        "--lanes", "3", "--outputs", str(tmp_path / "y.npy"), "--codes", str(tmp_path / "c.npy")])
    assert rc == 0, capsys.readouterr()
    y_gold, c_gold = golden.predict(model, x)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), c_gold)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), y_gold)
    assert "0 mismatches" in capsys.readouterr().out
