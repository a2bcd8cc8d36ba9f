# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the folded MLP engine against the golden model.

Every output code and every argmax is compared bit for bit with
:func:`pwlnet.golden.forward`; inputs arrive with random gaps and outputs are taken with
random back-pressure (a producer and a consumer testbench).  A separate run with
back-to-back inputs and an always-ready consumer measures the steady-state interval and
the latency and checks them against the bound
``1.10 * ideal + 8 * n_layers`` (and against the engine's own exact figure).
LERP layers (one shared LERP unit) are covered the same way: random LERP models with 4/4
and 6/2 index/fraction splits, LERP mixed with ReLU and plain layers, a LERP last layer
(argmax after the unit), LERP layers in extra programs, the two stored LERP reference
models, and the generated Verilog of both targets on Icarus.
Vector counts are kept small: the cocotb benches run thousands of vectors on the Verilog.
"""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from pwlnet import golden, synth
from pwlnet.synth import random_model
from pwlnet.hw.engine import ENGINE_ACTIVATIONS, MLPEngine
from pwlnet.hw.engine.plan import check_activations
from pwlnet.hw.lerp import lerp_latency
from pwlnet.sim.verilog_check import have_iverilog, run_iverilog

CASES = [
    # (seed, dims, lanes, requant, bits)
    (1, [13, 20, 7], 3, "shift", 8),
    (2, [13, 20, 7], 8, "multiply", 8),
    (3, [9, 5, 2], 8, "shift", 4),
    (4, [9, 5, 2], 1, "multiply", 12),
    (5, [64, 64, 64, 4], 8, "shift", 8),
    (6, [13, 20, 7], 1, "shift", 12),
    (7, [9, 5, 2], 3, "multiply", 4),
]


def _codes(model, n, rng):
    lo, hi = -(1 << (model.input_bits - 1)), (1 << (model.input_bits - 1)) - 1
    codes = rng.integers(lo, hi + 1, size=(n, model.input_dim))
    codes[0, :] = hi            # extremes reach saturation and the widest accumulators
    if n > 1:
        codes[1, :] = lo
    return codes


def run_engine(engine, codes, *, in_gap=0.0, out_stall=0.0, seed=0, max_cycles=200_000, progs=None):
    """Stream ``codes`` through ``engine``; return outputs, argmaxes and timing.

    Returns
    -------
    dict
        ``out`` (N, n_out) codes, ``argmax`` (N,), ``first_in`` (cycle each input's
        first beat was taken), ``last_out`` (cycle each inference's last beat was taken).
    """
    n, d = codes.shape
    n_out = engine.plan.n_out
    rng = np.random.default_rng(seed)
    res = {"out": np.zeros((n, n_out), dtype=np.int64), "argmax": np.zeros(n, dtype=np.int64),
           "first_in": [], "last_out": []}
    cycle = [0]

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def producer(ctx):
        for k in range(n):
            for j in range(d):
                while rng.random() < in_gap:
                    await ctx.tick()
                ctx.set(engine.i.valid, 1)
                ctx.set(engine.i.payload, int(codes[k, j]))
                await ctx.tick().until(engine.i.ready)
                if j == 0:
                    res["first_in"].append(cycle[0])
                ctx.set(engine.i.valid, 0)

    async def consumer(ctx):
        k = j = 0
        while k < n:
            assert cycle[0] < max_cycles, f"timeout after {k} inferences"
            ready = int(rng.random() >= out_stall)
            ctx.set(engine.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(engine.o.valid, engine.o.payload)
            if ready and valid:
                res["out"][k, j] = payload.data
                assert payload.last == (j == n_out - 1), f"last flag wrong at inference {k} beat {j}"
                if payload.last:
                    res["argmax"][k] = payload.argmax
                    res["last_out"].append(cycle[0])
                    k, j = k + 1, 0
                else:
                    j += 1

    async def selector(ctx):
        for k in progs:
            while rng.random() < in_gap:
                await ctx.tick()
            ctx.set(engine.prog.valid, 1)
            ctx.set(engine.prog.payload, int(k))
            await ctx.tick().until(engine.prog.ready)
            ctx.set(engine.prog.valid, 0)

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_process(clock)
    if progs is not None:
        sim.add_testbench(selector)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return res


def assert_steady_intervals(engine, last_out):
    """Back-to-back inputs: every interval between inferences is the engine's exact figure;
    with a pair program, the first inference runs alone (the second input is still
    loading) and then pairs do, each taking exactly ``pair_cycles``."""
    iv = list(np.diff(last_out))
    if engine.pair_cycles is None:
        assert iv == [engine.cycles_per_inference] * len(iv)
    else:
        # A's of whole pairs: 1, 3, ... (the last input may run alone)
        pairs = [int(last_out[k + 2] - last_out[k]) for k in range(1, len(last_out) - 3, 2)]
        assert pairs and pairs == [engine.pair_cycles] * len(pairs), (iv, engine.pair_cycles)


def _bound(engine, model):
    return 1.10 * engine.ideal_cycles + 8 * len(model.layers)


@pytest.mark.parametrize("seed,dims,lanes,requant,bits", CASES)
def test_bit_exact_with_gaps_and_backpressure(seed, dims, lanes, requant, bits):
    model = random_model(seed, dims, weight_bits=bits, act_bits=bits, requant=requant)
    engine = MLPEngine(model, lanes)
    rng = np.random.default_rng(seed)
    codes = _codes(model, 4, rng)
    res = run_engine(engine, codes, in_gap=0.3, out_stall=0.4, seed=seed)
    want = golden.forward(model, codes)
    np.testing.assert_array_equal(res["out"], want)
    np.testing.assert_array_equal(res["argmax"], golden.argmax(want))


@pytest.mark.parametrize("seed,dims,lanes,requant,bits", CASES)
def test_cycles_within_bound(seed, dims, lanes, requant, bits):
    model = random_model(seed, dims, weight_bits=bits, act_bits=bits, requant=requant)
    engine = MLPEngine(model, lanes)
    codes = _codes(model, 7, np.random.default_rng(seed + 100))
    res = run_engine(engine, codes)
    want = golden.forward(model, codes)
    np.testing.assert_array_equal(res["out"], want)
    # Back-to-back inputs: the intervals are exactly the engine's analytic figures ...
    assert_steady_intervals(engine, res["last_out"])
    # ... which is within the bound.
    assert engine.cycles_per_inference <= _bound(engine, model)
    # Latency (first input beat to last output beat) of the first, unqueued inference:
    # input loading (d) + compute + drain + output beats.
    latency = res["last_out"][0] - res["first_in"][0]
    assert latency <= _bound(engine, model) + model.input_dim + engine.write_delay \
        + engine.lanes + engine.plan.n_out + 4


# Fan-in below P beside a wide layer: the last layer's pass is still being shifted out of
# the hold register when the next inference's first pass ends.  Before the schedule gave
# a program's last layer the cycles to drain it, these hung with back-to-back inputs.
# The last two also take the second hold register (a pass may end while the one before
# is still being shifted out) and the pair program.
NARROW = [(31, [2, 64, 16], 16), (32, [3, 40, 12], 16), (33, [2, 20, 9], 9), (34, [4, 10, 3], 16),
          (38, [4, 10, 3], 8), (39, [12, 24, 20, 12, 3], 16)]


@pytest.mark.parametrize("seed,dims,lanes", NARROW)
def test_back_to_back_narrow_inputs(seed, dims, lanes):
    model = random_model(seed, dims)
    engine = MLPEngine(model, lanes)
    if seed >= 38:
        assert engine.plan.hold_slots == 2 and engine.pair_cycles is not None
    codes = _codes(model, 7, np.random.default_rng(seed))
    res = run_engine(engine, codes, max_cycles=20 * 7 * engine.cycles_per_inference)
    np.testing.assert_array_equal(res["out"], golden.forward(model, codes))
    assert_steady_intervals(engine, res["last_out"])


def test_back_to_back_programs_narrow_inputs():
    # Any program may follow any other: a one-output-pass affine program after the
    # network and the network after it, back to back.
    model = random_model(35, [2, 24, 8])
    affine = random_model(36, [2, 8])
    engine = MLPEngine(model, 8, programs=[affine.layers])
    codes = _codes(model, 6, np.random.default_rng(5))
    progs = [0, 1, 1, 0, 0, 1]
    res = run_engine(engine, codes, progs=progs, max_cycles=5000)
    nets = [model, affine]
    want = np.stack([golden.forward(nets[k], codes[n:n + 1])[0] for n, k in enumerate(progs)])
    np.testing.assert_array_equal(res["out"], want)


def test_extreme_weights_fully_parallel():
    # Weights at both ends of the range exercise the widest accumulators; P > n_out of
    # every layer is the fully parallel case (one pass per layer).
    model = random_model(11, [6, 5, 3], extreme=True, requant="multiply")
    engine = MLPEngine(model, 8)
    codes = _codes(model, 3, np.random.default_rng(0))
    res = run_engine(engine, codes, in_gap=0.2, out_stall=0.2, seed=1)
    np.testing.assert_array_equal(res["out"], golden.forward(model, codes))


def test_single_layer_and_single_output():
    model = random_model(12, [5, 1], requant="shift")
    engine = MLPEngine(model, 3)
    codes = _codes(model, 3, np.random.default_rng(0))
    res = run_engine(engine, codes, out_stall=0.5, seed=2)
    np.testing.assert_array_equal(res["out"], golden.forward(model, codes))
    np.testing.assert_array_equal(res["argmax"], 0)


def test_programs_select_per_inference():
    # Program 0 is the network; program 1 a one-layer affine map (what the hypersphere
    # cache stores), program 2 another two-layer net: chosen per inference by `prog`.
    model = random_model(21, [6, 10, 4], requant="multiply")
    affine = random_model(22, [6, 4], requant="shift")
    other = random_model(23, [6, 3, 4], requant="multiply")
    engine = MLPEngine(model, 3, programs=[affine.layers, other])
    codes = _codes(model, 6, np.random.default_rng(3))
    progs = [1, 0, 2, 1, 1, 0]
    res = run_engine(engine, codes, in_gap=0.2, out_stall=0.3, seed=4, progs=progs)
    nets = [model, affine, other]
    want = np.stack([golden.forward(nets[k], codes[n:n + 1])[0] for n, k in enumerate(progs)])
    np.testing.assert_array_equal(res["out"], want)
    np.testing.assert_array_equal(res["argmax"], golden.argmax(want))
    assert engine.program_cycles(1) == 2 * 6 + 1     # two passes of 6 reads, one LOAD cycle


def test_program_checked():
    model = random_model(0, [4, 3])
    with pytest.raises(ValueError, match=r"^program 1 gives 2 outputs of 8 bits; the output stream carries 3 of 8 bits$"):
        MLPEngine(model, 2, programs=[random_model(1, [4, 2]).layers])
    with pytest.raises(ValueError, match=r"^program 1: layer 0: weight shape \(3, 5\) does not take 4 inputs$"):
        MLPEngine(model, 2, programs=[random_model(1, [5, 3]).layers])
    with pytest.raises(TypeError, match=r"^program 1 must be a non-empty list of pwlnet.artifact.Layer, not \[\]$"):
        MLPEngine(model, 2, programs=[[]])


def test_ram_weights_loaded_at_run_time():
    model = random_model(13, [7, 9, 3], requant="shift")
    engine = MLPEngine(model, 3, weight_memory="ram")
    codes = _codes(model, 2, np.random.default_rng(0))
    words = engine.weight_words
    n = len(codes)
    got = np.zeros((n, 3), dtype=np.int64)

    async def tb(ctx):
        for a, w in enumerate(words):
            ctx.set(engine.w_wr.valid, 1)
            ctx.set(engine.w_wr.payload, {"addr": a, "data": w})
            await ctx.tick()
        ctx.set(engine.w_wr.valid, 0)
        ctx.set(engine.o.ready, 1)
        for k in range(n):
            for c in codes[k]:
                ctx.set(engine.i.valid, 1)
                ctx.set(engine.i.payload, int(c))
                await ctx.tick().until(engine.i.ready)
            ctx.set(engine.i.valid, 0)
            for j in range(3):
                payload, = await ctx.tick().sample(engine.o.payload).until(engine.o.valid)
                got[k, j] = payload.data

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    np.testing.assert_array_equal(got, golden.forward(model, codes))


def test_cycle_formula_and_attributes():
    model = random_model(1, [64, 64, 64, 4])
    engine = MLPEngine(model, 8)
    assert engine.ideal_cycles == 8 * 64 + 8 * 64 + 64
    assert engine.cycles_per_inference == engine.ideal_cycles + 1   # one LOAD cycle per inference
    assert engine.lanes == 8
    assert engine.weight_memory == "rom"
    assert engine.weight_word_bits == 64
    assert len(engine.weight_words) == engine.ideal_cycles


@pytest.mark.parametrize("lanes,exc,msg", [
    (0, ValueError, "lanes must be a positive integer, not 0"),
    (-3, ValueError, "lanes must be a positive integer, not -3"),
    (2.5, TypeError, "lanes must be a positive integer, not 2.5"),
    (True, TypeError, "lanes must be a positive integer, not True"),
    ("8", TypeError, "lanes must be a positive integer, not '8'"),
])
def test_lanes_checked(lanes, exc, msg):
    model = random_model(0, [4, 3])
    with pytest.raises(exc, match=f"^{msg}$"):
        MLPEngine(model, lanes)


def test_target_and_memory_checked():
    model = random_model(0, [4, 3])
    with pytest.raises(ValueError, match=r"^target must be one of \('generic', 'ice40'\), not 'xilinx'$"):
        MLPEngine(model, 2, target="xilinx")
    with pytest.raises(ValueError, match=r"^weight_memory must be one of \('auto', 'rom', 'ram'\), not 'flash'$"):
        MLPEngine(model, 2, weight_memory="flash")
    with pytest.raises(TypeError, match=r"^model must be a pwlnet.artifact.CompiledModel, not \[1, 2\]$"):
        MLPEngine([1, 2], 2)


def _random_configs(n, seed=2024):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        depth = int(rng.integers(1, 4))
        dims = [int(v) for v in rng.integers(1, 21, size=depth + 1)]
        out.append((k, dims, int(rng.integers(1, 10)), ["shift", "multiply"][k % 2],
                    int(rng.integers(2, 17)), int(rng.integers(2, 17))))
    return out


@pytest.mark.parametrize("seed,dims,lanes,requant,wbits,abits", _random_configs(8) + [
    (20, [1, 1], 1, "multiply", 2, 2),          # one input, one output, 2-bit codes
    (21, [2, 1, 1, 1], 1, "shift", 2, 2),       # 1-wide hidden layers
    (22, [4, 9], 20, "multiply", 8, 8),         # more lanes than outputs
])
def test_random_shapes_and_widths(seed, dims, lanes, requant, wbits, abits):
    # Odd shapes (1-wide layers, 1-input models), 2..16-bit weights and activations.
    model = random_model(300 + seed, dims, weight_bits=wbits, act_bits=abits, requant=requant,
                         extreme=seed % 3 == 0)
    engine = MLPEngine(model, lanes)
    codes = _codes(model, 3, np.random.default_rng(seed))
    res = run_engine(engine, codes, in_gap=0.3, out_stall=0.3, seed=seed)
    want = golden.forward(model, codes)
    np.testing.assert_array_equal(res["out"], want)
    np.testing.assert_array_equal(res["argmax"], golden.argmax(want))


def test_unsupported_activation_refused():
    # An activation the datapath does not implement must be refused, never treated as
    # "none" (the artifact validator lets nothing else through, so forge one).
    model = random_model(5, [6, 5, 3])
    model.layers[0].activation = "gelu"
    with pytest.raises(ValueError, match=r"^layer 0 \('dense0'\): activation 'gelu' is not supported "
                                         r"by MLPEngine \(supported: none, relu, lerp\)$"):
        check_activations(model.layers, "")


# ---- LERP activations ---------------------------------------------------------------------

def lerp_last(model, seed, index_bits, kind="mixed"):
    """``model`` with its last layer turned into a LERP layer (random tables)."""
    last = model.layers[-1]
    table = synth.random_tables(np.random.default_rng(seed), last.n_out, index_bits, last.out_bits, kind)
    layers = model.layers[:-1] + [dataclasses.replace(last, activation="lerp", table=table,
                                                      index_bits=index_bits)]
    return dataclasses.replace(model, layers=layers).validate()


def mixed_model(seed, dims, index_bits, pattern, **kw):
    """Per-layer activations from ``pattern`` (e.g. ``"lrn"``: LERP, ReLU, none).

    ``random_model`` draws the LERP tables from a separate stream, so the ReLU and LERP
    models of one seed share weights and layers can be mixed freely.
    """
    lerp = random_model(seed, dims, activation="lerp", index_bits=index_bits, **kw)
    relu = random_model(seed, dims, **kw)
    none = random_model(seed, dims, activation="none", **kw)
    pick = {"l": lerp, "r": relu, "n": none}
    layers = [pick[c].layers[n] for n, c in enumerate(pattern[:-1])]
    model = dataclasses.replace(relu, layers=layers + [relu.layers[-1]]).validate()
    return lerp_last(model, seed + 1000, index_bits) if pattern[-1] == "l" else model


LERP_CASES = [
    # (seed, dims, lanes, index_bits, requant, tables)
    (31, [13, 20, 7], 3, 4, "shift", "mixed"),
    (32, [13, 20, 7], 8, 6, "multiply", "arbitrary"),
    (33, [9, 5, 2], 8, 4, "multiply", "monotone"),
    (34, [10, 17, 11, 4], 4, 6, "shift", "mixed"),       # no width a multiple of P
    (35, [6, 9, 3], 1, 4, "shift", "arbitrary"),
    (36, [24, 16, 16, 4], 8, 4, "multiply", "mixed"),    # the basicmotions_lerp shape
    (37, [7, 3, 3, 2], 5, 6, "multiply", "mixed"),       # P > every width
]


#: Cases so small (one pass per layer, ideal <= 14 cycles) that the pipeline latency
#: between layers dominates: the 1.10 * ideal + 8 per layer bound does not hold for them,
#: as it does not for the ReLU engine on [7, 3, 3, 2] at P = 5 (46 cycles, bound 38.3).
_LATENCY_BOUND = {33, 37}


def _lerp_model(seed, dims, k, requant, tables):
    return random_model(seed, dims, activation="lerp", index_bits=k, requant=requant, lerp_tables=tables)


@pytest.mark.parametrize("seed,dims,lanes,k,requant,tables", LERP_CASES)
def test_lerp_bit_exact_with_gaps_and_backpressure(seed, dims, lanes, k, requant, tables):
    model = _lerp_model(seed, dims, k, requant, tables)
    engine = MLPEngine(model, lanes)
    codes = _codes(model, 5, np.random.default_rng(seed))
    res = run_engine(engine, codes, in_gap=0.3, out_stall=0.4, seed=seed)
    want = golden.forward(model, codes)
    np.testing.assert_array_equal(res["out"], want)
    np.testing.assert_array_equal(res["argmax"], golden.argmax(want))


@pytest.mark.parametrize("seed,dims,lanes,k,requant,tables", LERP_CASES)
def test_lerp_cycles_exact(seed, dims, lanes, k, requant, tables):
    model = _lerp_model(seed, dims, k, requant, tables)
    engine = MLPEngine(model, lanes)
    codes = _codes(model, 7, np.random.default_rng(seed + 100))
    res = run_engine(engine, codes)
    np.testing.assert_array_equal(res["out"], golden.forward(model, codes))
    assert_steady_intervals(engine, res["last_out"])
    # The unit only lengthens the write-back: same lanes and passes as the ReLU model of
    # the same seed, write_delay longer by exactly the unit's latency, so each layer
    # boundary costs at most that latency more.
    relu = MLPEngine(random_model(seed, dims, requant=requant), lanes)
    lat = lerp_latency(8, k)
    assert engine.ideal_cycles == relu.ideal_cycles
    assert engine.write_delay == relu.write_delay + lat
    assert relu.program_cycles(0) <= engine.program_cycles(0) <= relu.program_cycles(0) + lat * (len(dims) - 2)
    if seed not in _LATENCY_BOUND:
        assert engine.cycles_per_inference <= _bound(engine, model)
    # latency: input beats, compute, drain (now through the unit), argmax, output beats
    latency = res["last_out"][0] - res["first_in"][0]
    assert latency <= model.input_dim + engine.program_cycles(0) + engine.write_delay \
        + engine.lanes + engine.plan.n_out + 5


@pytest.mark.parametrize("pattern,lanes", [("lrn", 3), ("rll", 4), ("lnl", 8), ("rrl", 2), ("ll", 3)])
def test_lerp_mixed_with_relu_none_and_last_layer(pattern, lanes):
    # LERP, ReLU and plain layers in one model (bypassed layers must not pick up table
    # values) and a LERP last layer (argmax after the unit).
    dims = [11, 9, 13, 6][:len(pattern) + 1]
    model = mixed_model(40 + lanes, dims, 4 if lanes % 2 else 6, pattern, requant="multiply")
    assert "".join(l.activation[0] for l in model.layers) == pattern
    engine = MLPEngine(model, lanes)
    codes = _codes(model, 5, np.random.default_rng(lanes))
    res = run_engine(engine, codes, in_gap=0.2, out_stall=0.3, seed=lanes)
    want = golden.forward(model, codes)
    np.testing.assert_array_equal(res["out"], want)
    np.testing.assert_array_equal(res["argmax"], golden.argmax(want))
    res = run_engine(engine, codes)
    assert_steady_intervals(engine, res["last_out"])


def test_lerp_widths_and_index_bits():
    # 5-bit and 12-bit codes, every split from k = 0 (one segment) to k = bits (no fraction).
    for seed, bits, k, lanes in [(50, 5, 0, 3), (51, 5, 5, 2), (52, 12, 6, 4), (53, 12, 3, 8)]:
        model = random_model(seed, [7, 10, 5], activation="lerp", index_bits=k, weight_bits=bits,
                             act_bits=bits, requant="multiply")
        engine = MLPEngine(model, lanes)
        codes = _codes(model, 3, np.random.default_rng(seed))
        res = run_engine(engine, codes, in_gap=0.2, out_stall=0.2, seed=seed)
        np.testing.assert_array_equal(res["out"], golden.forward(model, codes), err_msg=f"{bits} bits, k={k}")


def test_lerp_in_extra_programs():
    # LERP layers of several programs share the unit: their tables are stacked and each
    # layer's lerp_base points at its own rows.
    model = random_model(60, [6, 10, 4], activation="lerp", index_bits=4, requant="multiply")
    affine = random_model(61, [6, 4], requant="shift")
    other = lerp_last(random_model(62, [6, 5, 4], activation="lerp", index_bits=4), 63, 4)
    engine = MLPEngine(model, 3, programs=[affine.layers, other])
    assert engine.plan.lerp_tables.shape == (10 + 5 + 4, 17)
    codes = _codes(model, 6, np.random.default_rng(5))
    progs = [2, 0, 1, 2, 0, 2]
    res = run_engine(engine, codes, in_gap=0.2, out_stall=0.3, seed=6, progs=progs)
    nets = [model, affine, other]
    want = np.stack([golden.forward(nets[k], codes[n:n + 1])[0] for n, k in enumerate(progs)])
    np.testing.assert_array_equal(res["out"], want)
    np.testing.assert_array_equal(res["argmax"], golden.argmax(want))


def test_relu_models_build_no_lerp_unit():
    # Models without a LERP layer keep their schedule and hardware exactly.
    model = random_model(1, [64, 64, 64, 4])
    engine = MLPEngine(model, 8)
    assert not engine.plan.has_lerp and engine.plan.lerp_latency == 0
    names = [name for _, name, *_ in Fragment.get(engine, None).subfragments]
    assert "lerp" not in names and "wmem" in names
    assert engine.cycles_per_inference == engine.ideal_cycles + 1


def test_lerp_split_checked():
    # One LERP unit: every LERP layer must share out_bits and index_bits.
    a = random_model(70, [6, 5, 4, 3], activation="lerp", index_bits=4)
    b = random_model(70, [6, 5, 4, 3], activation="lerp", index_bits=6)
    model = dataclasses.replace(a, layers=[a.layers[0], b.layers[1], a.layers[2]]).validate()
    with pytest.raises(ValueError, match=r"^layer 1 \('dense1'\): LERP layer with out_bits 8 and "
                                         r"index_bits 6, but layer 0 \('dense0'\) has out_bits 8 and "
                                         r"index_bits 4; MLPEngine has one LERP unit, so every LERP "
                                         r"layer must use the same out_bits and index_bits$"):
        MLPEngine(model, 2)
    other = random_model(71, [6, 7, 3], activation="lerp", index_bits=6)
    with pytest.raises(ValueError, match=r"^program 1: layer 0 \('dense0'\): LERP layer with out_bits 8 "
                                         r"and index_bits 6, but layer 0 \('dense0'\) has"):
        MLPEngine(random_model(72, [6, 5, 3], activation="lerp", index_bits=4), 2, programs=[other])


@pytest.mark.skipif(not have_iverilog(), reason="iverilog not installed")
@pytest.mark.parametrize("target", ["generic", "ice40"])
def test_lerp_verilog_both_targets(tmp_path, target):
    # The generated Verilog on Icarus (iCE40: SB_MAC16 lanes, the unit's LUT adder tree):
    # a LERP hidden layer, a ReLU layer and a LERP last layer.
    model = mixed_model(80, [9, 12, 10, 5], 4, "lrl", requant="multiply")
    engine = MLPEngine(model, 4, target=target)
    codes = _codes(model, 6, np.random.default_rng(8))
    out, am, _ = run_iverilog(engine, codes, workdir=tmp_path)
    want = golden.forward(model, codes)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(am, golden.argmax(want))


_REGRESSION = __import__("pathlib").Path(__file__).parent / "regression"


def _regression_models():
    """Stored reference models (every activation they use, LERP included, is implemented).

    The binarized ones are left out: this file tests the MLP engine; tests/test_sim_engine.py
    runs them on the binary engine."""
    from pwlnet.artifact import load
    names = []
    for d in sorted(p for p in _REGRESSION.glob("*") if (p / "compiled" / "model.json").is_file()):
        model = load(d / "compiled")
        if getattr(model, "kind", "mlp") == "binary":
            continue
        assert {l.activation for l in model.layers} <= set(ENGINE_ACTIVATIONS), d.name
        names.append(d.name)
    return names


@pytest.mark.parametrize("name", _regression_models())
def test_regression_models_first_vectors(name):
    # The stored golden output codes of the reference models, first few vectors, P = 8.
    from pwlnet.artifact import load
    d = _REGRESSION / name
    model = load(d / "compiled")
    codes = np.load(d / "codes_in.npy")[:3]
    want = np.load(d / "codes_out.npy")[:3]
    res = run_engine(MLPEngine(model, 8), codes, in_gap=0.2, out_stall=0.2, seed=1)
    np.testing.assert_array_equal(res["out"], want)
    np.testing.assert_array_equal(res["argmax"], golden.argmax(want))


@pytest.mark.parametrize("name", ["basicmotions_lerp_h16x16", "digits_lerp_h32x32"])
def test_lerp_regression_models(name):
    # The two stored LERP reference models: stored vectors with gaps and back-pressure,
    # then back-to-back for the exact interval (P = 8, and P = 3 for uneven passes).
    from pwlnet.artifact import load
    d = _REGRESSION / name
    model = load(d / "compiled")
    codes = np.load(d / "codes_in.npy")[:8]
    want = np.load(d / "codes_out.npy")[:8]
    np.testing.assert_array_equal(golden.forward(model, codes), want)
    for lanes in (8, 3):
        engine = MLPEngine(model, lanes)
        res = run_engine(engine, codes, in_gap=0.2, out_stall=0.3, seed=lanes)
        np.testing.assert_array_equal(res["out"], want)
        np.testing.assert_array_equal(res["argmax"], golden.argmax(want))
        res = run_engine(engine, codes)
        np.testing.assert_array_equal(res["out"], want)
        assert_steady_intervals(engine, res["last_out"])
        assert engine.cycles_per_inference <= _bound(engine, model)
