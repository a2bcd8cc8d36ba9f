# amaranth: UnusedElaboratable=no
"""The engine plan (pure Python): its packing, offsets and cycle formulas, without hardware."""

import numpy as np
import pytest

from pwlnet import fixedpoint as fx
from pwlnet.hw.engine import MLPEngine
from pwlnet.hw.engine.plan import (EBR_WEIGHT_BUDGET, ICE40_DSPS, EnginePlan, ideal_cycles,
                                   pack_weight_words, requant_offset)
from pwlnet.synth import random_model


def test_pack_weight_words_lane_bits():
    w = np.array([[1, -1, 3], [-2, 0, 7], [5, 6, -8]])
    words = pack_weight_words(w, 2, 4)
    assert len(words) == 2 * 3                  # ceil(3 / 2) passes of 3 inputs
    for g in range(2):
        for i in range(3):
            for p in range(2):
                o = g * 2 + p
                got = (words[g * 3 + i] >> (4 * p)) & 0xF
                want = (int(w[o, i]) & 0xF) if o < 3 else 0
                assert got == want


@pytest.mark.parametrize("shift", [0, 1, 5, 17])
def test_requant_offset_matches_requantize(shift):
    rng = np.random.default_rng(shift)
    for _ in range(200):
        acc, bias = (int(v) for v in rng.integers(-(1 << 20), 1 << 20, size=2))
        mult = int(rng.integers(1, 1 << 10))
        off = requant_offset(bias, mult, shift)
        # the requantizer's (acc * m + off) >> s, before saturation
        assert (acc * mult + off) >> shift == fx.round_shift((acc + bias) * mult, shift)


@pytest.mark.parametrize("lanes", [1, 3, 8])
def test_plan_cycles(lanes):
    model = random_model(1, [13, 20, 7])
    plan = EnginePlan(model, lanes)
    assert plan.ideal_cycles == ideal_cycles(model.layers, lanes) == sum(
        -(-l.n_out // lanes) * l.n_in for l in model.layers)
    # one LOAD cycle, then every layer's passes and gap
    assert plan.pair is None and plan.cycles_per_inference == plan.program_cycles(0) == 1 + sum(
        x["G"] * x["L"] + x["gap"] for x in plan.layers)
    engine = MLPEngine(model, lanes)
    assert isinstance(engine.plan, EnginePlan) and engine.plan.lanes == lanes
    assert (engine.ideal_cycles, engine.cycles_per_inference) == (plan.ideal_cycles, plan.cycles_per_inference)
    assert engine.weight_words == plan.weight_words
    assert plan.weight_words == [w for l in model.layers for w in pack_weight_words(l.weight, lanes, plan.weight_bits)]


def test_plan_programs_and_params():
    model = random_model(2, [13, 20, 7], requant="multiply")
    extra = random_model(3, [13, 7]).layers
    plan = EnginePlan(model, 3, programs=[extra])
    assert len(plan.programs) == 2
    assert plan.program_cycles(1) == 1 + sum(x["G"] * x["L"] + x["gap"] for x in plan.layers[-1:])
    layers = list(model.layers) + list(extra)
    want = [(requant_offset(l.bias[o], l.multiplier[o], l.shift[o]), int(l.multiplier[o]), int(l.shift[o]))
            for l in layers for o in range(l.n_out)]
    assert plan.params == want


def test_plan_weight_memory_choice():
    model = random_model(5, [64, 64, 64, 4])
    plan = EnginePlan(model, 8)
    assert plan.weight_word_bits * len(plan.words) <= EBR_WEIGHT_BUDGET
    assert plan.weight_memory_for("ice40") == "rom"
    assert plan.weight_memory_for("generic", "ram") == "ram"
    with pytest.raises(ValueError, match=r"^weight_memory must be one of \('auto', 'rom', 'ram'\), not 'flash'$"):
        plan.weight_memory_for("generic", "flash")


@pytest.mark.parametrize("lanes,bits,pairs,dsps", [
    (8, 8, False, 8),        # one lane per SB_MAC16 up to the UP5K's eight
    (16, 8, True, 8),        # two 8x8 lanes per SB_MAC16 beyond
    (11, 8, True, 6),        # an odd count: the last DSP carries one lane
    (16, 9, False, 16),      # 9-bit operands do not fit the 8x8 halves
])
def test_plan_mac_pairs_and_dsps(lanes, bits, pairs, dsps):
    plan = EnginePlan(random_model(4, [13, 20, 7], weight_bits=bits, act_bits=bits), lanes)
    assert plan.mac_pairs("ice40") is pairs
    assert plan.dsps("ice40") == dsps
    assert not plan.mac_pairs("generic") and plan.dsps("generic") == 0
    assert ICE40_DSPS == 8


def test_plan_spram_word_limit():
    """Weights over the EBR budget go to SPRAM, whose word is 64 bits: 16 lanes of int8
    cannot read it, and the message says how many lanes can."""
    model = random_model(5, [256, 256, 64, 4])
    plan8, plan16 = EnginePlan(model, 8), EnginePlan(model, 16)
    assert plan8.weight_memory_for("ice40") == "ram"
    with pytest.raises(ValueError, match=r"^the weights need SPRAM \(\d+ bits, over the EBR budget of 90112\) "
                                         r"but a word of 16 lanes x 8 bits is 128 bits and SPRAM gives 64: "
                                         r"use at most 8 lanes$"):
        plan16.weight_memory_for("ice40")
    assert plan16.weight_memory_for("generic") == "rom"
    with pytest.raises(ValueError, match=r"^the weights need SPRAM \(asked for\) but a word of 16 lanes"):
        EnginePlan(random_model(5, [13, 20, 7]), 16).weight_memory_for("ice40", "ram")


def test_plan_checks_like_engine():
    with pytest.raises(TypeError, match=r"^model must be a pwlnet.artifact.CompiledModel, not \[1, 2\]$"):
        EnginePlan([1, 2], 2)
    with pytest.raises(ValueError, match=r"^lanes must be a positive integer, not 0$"):
        EnginePlan(random_model(0, [4, 3]), 0)


_REGRESSION = __import__("pathlib").Path(__file__).parent / "regression"

#: Reference models too small for the target, with their pinned cycles per inference at
#: P = 8 and 16: the PeLU model's layers read 4, 4 and 3 inputs while a result takes
#: ``write_delay`` (16) cycles to come back through the lanes, so each layer waits for
#: the one before and even the pair program (48 cycles for two) stays latency-bound.
LATENCY_BOUND = {"iris_pelu_h3": 24.0}


@pytest.mark.parametrize("lanes", [8, 16])
def test_regression_models_within_the_cycle_target(lanes):
    # The performance target: steady-state cycles per inference within 1.05 x the
    # lanes' ideal plus 2 per layer (the engine tests and the cocotb benches check that
    # the hardware takes exactly the plan's figure).  Big models build neither a pair
    # program nor a second hold register (nothing to gain): their hardware stays plain.
    from pwlnet.artifact import load
    for d in sorted(p for p in _REGRESSION.iterdir() if (p / "compiled").is_dir()):
        model = load(d / "compiled")
        if getattr(model, "kind", "mlp") == "binary":
            continue            # the MLP engine's plan; binarized models have BinaryPlan
        plan = EnginePlan(model, lanes)
        n = len(model.layers)
        if d.name in LATENCY_BOUND:
            assert plan.cycles_per_inference == LATENCY_BOUND[d.name], (d.name, plan.cycles_per_inference)
            assert plan.ideal_cycles < plan.write_delay, d.name
            continue
        assert plan.cycles_per_inference <= 1.05 * plan.ideal_cycles + 2 * n, (d.name, plan.cycles_per_inference)
        if plan.ideal_cycles >= 400:
            assert plan.pair is None and plan.hold_slots == 1, d.name
            assert plan.cycles_per_inference == plan.ideal_cycles + 1, d.name


def test_pair_program_and_hold_registers_only_where_they_pay():
    # iris-shaped 4-10-3 at 8 lanes: the second layer waits for the first's results
    # (the requantizer's pipeline); two inferences interleaved hide the wait, and the
    # second hold register lets the first layer's two 4-cycle passes end 4 cycles apart.
    model = random_model(38, [4, 10, 3])
    plan = EnginePlan(model, 8)
    alone = EnginePlan(model, 8, interleave=False)
    assert plan.pair is not None and plan.hold_slots == 2
    assert plan.cycles_per_inference == plan.pair_cycles / 2 <= 0.98 * alone.cycles_per_inference
    assert plan.program_cycles(0) == 1 + sum(x["G"] * x["L"] + x["gap"] for x in plan.layers[:2])
    # the pair's entries: A and B of each layer, in turn, each on its own buffers
    f, n = plan.pair
    pair = plan.layers[f:f + n]
    assert [x["ctx"] for x in pair] == [0, 1, 0, 1] and [x["endc"] for x in pair] == [0, 0, 1, 1]
    assert [x["last"] for x in pair] == [0, 0, 0, 1]
    assert pair[0]["dst_base"] != pair[1]["dst_base"] and pair[2]["src_base"] == pair[0]["dst_base"]
    assert pair[3]["src_base"] == pair[1]["dst_base"]
    assert (plan.act_regions, plan.out_banks) == (4, 4)
    # a network with extra programs (the cache's) never gets one
    extra = random_model(39, [4, 3]).layers
    assert EnginePlan(model, 8, programs=[extra]).pair is None
