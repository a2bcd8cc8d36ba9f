# amaranth: UnusedElaboratable=no
"""The binary engine: popcount tree and plan alone, then the RTL against pwlnet.binary.forward
on Icarus and Verilator for four binarized models trained here at small size, each at its
board lane count and at one lane (the small-device build: an 8-bit XNOR chunk); odd lane
counts and chunks in Amaranth's simulator."""

import json
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from pwlnet import artifact, binary, data, golden
from pwlnet.compile import compile_onnx
from pwlnet.hw.binary import BinaryEngine, BinaryPlan, PopcountTree
from pwlnet.hw.binary.plan import positions

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
    "digits_b64x64": ("digits", (64, 64), True, 8, 16),  # the iCEstick's model: 64-64-64-10
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


def test_plan_refuses_bad_chunk(compiled):
    model = compiled["iris_b16x8"][0]
    with pytest.raises(ValueError, match="chunk must be a positive integer, not 0"):
        BinaryPlan(model, 1, 0)


def test_plan_chunk_follows_the_lanes(compiled):
    model = compiled["digits_b64x64"][0]
    assert [BinaryPlan(model, p).chunk for p in (1, 2, 4, 8, 16)] == [8, 8, 16, 32, 64]
    assert BinaryPlan(model, 16, 200).chunk == 64                 # capped at the widest fan-in
    assert BinaryPlan(model, 8, 12).chunk == 16                   # a multiple of the lanes
    assert BinaryPlan(model, 16, 8).chunk == 16


def test_positions():
    # one lane: bit i of word i // 4, the short last word's bits at its top
    assert positions(6, 4) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    # two lanes, two shifts a word: lane 0 in the upper half, lane 1 in the lower
    assert positions(6, 4, 2) == [(0, 2), (0, 0), (0, 3), (0, 1), (1, 3), (1, 1)]


def _pysim(model, lanes, chunk, codes):
    """Outputs, argmaxes and the spacing of the last outputs in Amaranth's simulator."""
    dut = BinaryEngine(model, lanes, chunk=chunk)
    outs, ams, ends = [], [], []

    async def producer(ctx):
        for row in codes:
            for v in row:
                ctx.set(dut.i.payload, int(v))
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        row, cycle = [], 0
        async for _, _, valid, value, last, am in ctx.tick().sample(
                dut.o.valid, dut.o.payload.data, dut.o.payload.last, dut.o.payload.argmax):
            cycle += 1
            if valid:
                row.append(value)
                if last:
                    outs.append(row)
                    ams.append(am)
                    ends.append(cycle)
                    row = []
                    if len(outs) == len(codes):
                        return

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return dut, np.array(outs), ams, np.diff(ends)


@pytest.mark.parametrize("lanes, chunk", [(3, None), (5, 1), (1, 2), (16, 3), (2, 64)])
def test_odd_lanes_and_chunks(compiled, lanes, chunk):
    """Lanes past the first layer's width, one-bit and odd chunks, a chunk wider than the
    fan-in: the RTL equals the golden model and the plan's cycle count."""
    model, _ = compiled["iris_b16x8"]
    codes = _vectors(model, "iris", n_test=3, n_random=3)
    dut, outs, ams, spacing = _pysim(model, lanes, chunk, codes)
    want = binary.forward(model, codes)
    assert np.array_equal(outs, want)
    assert ams == list(np.argmax(want, axis=1))
    assert set(spacing) == {dut.cycles_per_inference}


def test_plan_refuses_an_mlp(compiled):
    from pwlnet.synth import random_model
    with pytest.raises(TypeError, match="takes a compiled binary model, not CompiledModel"):
        BinaryPlan(random_model(1, (4, 5, 3)), 8)


# Every model at its board lane count and at one lane (the iCEstick's configuration) on
# Icarus; on Verilator the two largest, the digits 64-64 model at both lane counts and the
# 96-input BasicMotions model at its board's (a Verilator build is about 15 s of make
# test's budget; the stored binarized regression models run on both in test_sim_engine).
_VERILATOR = {("digits_b64x64", False), ("digits_b64x64", True), ("basicmotions_b96", False)}
_RTL_CASES = [pytest.param(name, one_lane, sim, id=f"{name}-{'one_lane' if one_lane else 'board_lanes'}-{sim}")
              for name in MODELS for one_lane in (False, True) for sim in ("icarus", "verilator")
              if sim == "icarus" or (name, one_lane) in _VERILATOR]


@pytest.mark.parametrize("name, one_lane, simulator", _RTL_CASES)
def test_rtl_equals_golden(compiled, name, one_lane, simulator):
    from pwlnet.sim import engine_sim
    model, _ = compiled[name]
    ds, _, _, _, lanes = MODELS[name]
    lanes = 1 if one_lane else lanes
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
    from pwlnet.boards.fit import BINARY_BASE_LUTS, check_fit
    from pwlnet.boards.top import BoardTop
    from pwlnet.hw.binary import BinaryEngine
    model, _ = compiled["basicmotions_b96"]
    lanes, why = precheck("icebreaker", model, "auto")
    assert lanes == 16 and "adder lanes" in why
    assert precheck("icebreaker", model, 40) == (40, "given")       # no multiplier limits a binary model
    assert check_fit("icebreaker", model, 16)["LUT"] == BINARY_BASE_LUTS["full"]
    with pytest.raises(ValueError, match="a binarized model has none"):
        precheck("icebreaker", model, "auto", cache_entries=4)
    top = BoardTop(model, lanes=16, target="generic")
    assert isinstance(top.engine, BinaryEngine)
    # elaborated, so that the engine and link it made are used (else amaranth warns when
    # they are collected, in whichever test runs then)
    from amaranth.hdl import Fragment
    Fragment.get(top, None)
