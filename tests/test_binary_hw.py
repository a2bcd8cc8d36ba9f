# amaranth: UnusedElaboratable=no
"""The binary engine: popcount tree and plan alone, then the RTL against pwlnet.binary.forward
on Icarus and Verilator for three binarized models trained here at small size."""

import json
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet import artifact, binary, data, golden
from pwlnet.compile import compile_onnx
from pwlnet.hw.binary import BinaryPlan, PopcountTree

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("width", [2, 5, 16, 33])
def test_popcount_tree(width):
    dut = PopcountTree(width)
    rng = random.Random(width)
    vals = [rng.getrandbits(width) for _ in range(40)] + [0, (1 << width) - 1]
    got = []

    async def tb(ctx):
        for v in vals + [0] * (dut.latency + 1):
            ctx.set(dut.i, v)
            got.append(ctx.get(dut.o))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    # the count of the bits sampled `latency` ticks earlier
    assert got[dut.latency:dut.latency + len(vals)] == [bin(v).count("1") for v in vals]


def test_popcount_tree_refuses_bad_width():
    with pytest.raises(ValueError, match="width must be a positive integer, not 0"):
        PopcountTree(0)


# name -> (data set, hidden, last BatchNorm, input bits, lanes)
MODELS = {
    "iris_b16x8": ("iris", (16, 8), True, 8, 8),          # two hidden binary layers, two lane groups
    "digits_b32": ("digits", (32,), False, 12, 8),        # integer scores, 12-bit codes, four groups
    "basicmotions_b96": ("basicmotions", (96,), True, 8, 16),   # a 96-bit fan-in: two XNOR chunks, padding
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from pwlnet import binary_train
    root = tmp_path_factory.mktemp("binhw")
    out = {}
    for name, (ds, hidden, last_bn, bits, lanes) in MODELS.items():
        res = binary_train.train_binary(ds, hidden, epochs=8, seed=1, last_bn=last_bn)
        onnx_path = root / f"{name}.onnx"
        binary_train.export_binary_onnx(res, onnx_path)
        model = compile_onnx(onnx_path, root / name, calib=ds, act_bits=bits, log=lambda s: None)
        out[name] = (model, root / name)
    return out


def _vectors(model, ds, n_test=24, n_random=8, seed=0):
    test = golden.quantize_inputs(model, data.load(ds).x_test)[:n_test]
    lo, hi = -(1 << (model.input_bits - 1)), (1 << (model.input_bits - 1)) - 1
    rnd = np.random.default_rng(seed).integers(lo, hi + 1, size=(n_random, model.input_dim))
    rnd[0], rnd[1] = lo, hi                                  # the extremes of the first layer's sums
    return np.concatenate([test, rnd])


def test_plan_refuses_bad_lanes(compiled):
    model = compiled["iris_b16x8"][0]
    with pytest.raises(ValueError, match="lanes must be a positive integer, not 0"):
        BinaryPlan(model, 0)


def test_plan_refuses_an_mlp(compiled):
    from pwlnet.synth import random_model
    with pytest.raises(TypeError, match="takes a compiled binary model, not CompiledModel"):
        BinaryPlan(random_model(1, (4, 5, 3)), 8)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("name", list(MODELS))
def test_rtl_equals_golden(compiled, name, simulator):
    from pwlnet.sim import engine_sim
    model, _ = compiled[name]
    ds, _, _, _, lanes = MODELS[name]
    codes = _vectors(model, ds)
    res = engine_sim.simulate(model, codes, simulator=simulator, lanes=lanes)
    assert np.array_equal(res.expected, binary.forward(model, codes))
    assert res.mismatches == 0, res.details
    assert np.array_equal(res.outputs, res.expected)
    assert np.array_equal(res.argmax, np.argmax(res.expected, axis=1))
    assert res.cycles_per_inference == BinaryPlan(model, lanes).cycles_per_inference


def test_bench_sees_a_wrong_threshold(compiled, tmp_path):
    """The RTL built from one model, checked against a model with one threshold moved: the
    bench must report the inferences that neuron changes (so the comparison can fail)."""
    from pwlnet.sim import runner
    model, _ = compiled["iris_b16x8"]
    codes = _vectors(model, "iris")
    b = runner.build(model, lanes=8, simulator="icarus", root=tmp_path)       # a build of its own
    wrong = artifact.load(b.model_dir)
    l1 = wrong.layers[1]
    v = binary.trace(model, codes)[1][0][:, 0]                     # neuron 0's popcounts
    l1.threshold[0] = int(np.median(v)) + (1 if l1.threshold[0] <= np.median(v) else 0)
    changed = int(np.sum(np.any(binary.forward(wrong, codes) != binary.forward(model, codes), axis=1)))
    assert changed > 0
    binary.save(wrong, b.model_dir)
    r = runner.run(b, codes)
    assert r["mismatches"] == changed


def test_simulate_cli_on_a_binary_model(compiled, tmp_path, capsys):
    from pwlnet.sim import engine_sim
    model, mdir = compiled["iris_b16x8"]
    np.save(tmp_path / "x.npy", data.load("iris").x_test[:10])
    rc = engine_sim.main([str(mdir), "--inputs", str(tmp_path / "x.npy"), "--simulator", "icarus"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "10 inferences, 0 mismatches" in out
    assert json.loads((mdir / "model.json").read_text())["kind"] == "binary"


def test_board_top_over_uart(compiled):
    """The board top (UART, framed link, binary engine) in Amaranth's simulator, driven by
    the host driver: every reply equals the golden model."""
    from pwlnet.host import Device, SimTransport
    model, _ = compiled["iris_b16x8"]
    codes = _vectors(model, "iris", n_test=4, n_random=2)
    with SimTransport(model, lanes=8) as tr:
        dev = Device(tr, model=model)
        assert dev.info().output_bits == model.layers[-1].out_bits
        for c in codes:
            outputs, am = dev.infer(c)[:2]
            want = binary.forward(model, c[None])[0]
            assert list(outputs) == want.tolist() and am == int(np.argmax(want))


def test_board_precheck_picks_adder_lanes(compiled):
    from pwlnet.boards.build import precheck
    from pwlnet.boards.fit import BASE_LUTS, check_fit
    from pwlnet.boards.top import BoardTop
    from pwlnet.hw.binary import BinaryEngine
    model, _ = compiled["basicmotions_b96"]
    lanes, why = precheck("icebreaker", model, "auto")
    assert lanes == 16 and "adder lanes" in why
    assert precheck("icebreaker", model, 40) == (40, "given")       # no multiplier limits a binary model
    assert check_fit("icebreaker", model, 16)["LUT"] == BASE_LUTS
    with pytest.raises(ValueError, match="a binarized model has none"):
        precheck("icebreaker", model, "auto", cache_entries=4)
    top = BoardTop(model, lanes=16, target="generic")
    assert isinstance(top.engine, BinaryEngine)
    # elaborated, so that the engine and link it made are used (else amaranth warns when
    # they are collected, in whichever test runs then)
    from amaranth.hdl import Fragment
    Fragment.get(top, None)
