"""Golden model: properties over random compiled models and the input quantizer."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pwlnet import artifact, fixedpoint as fx, golden, synth


models = st.builds(
    lambda seed, dims, wb, ab, requant, extreme: synth.random_model(
        seed, dims, weight_bits=wb, act_bits=ab, requant=requant, extreme=extreme),
    st.integers(0, 2**31 - 1),
    st.lists(st.integers(1, 40), min_size=2, max_size=5),
    st.integers(2, 16), st.integers(2, 16),
    st.sampled_from(["shift", "multiply"]), st.booleans())


@settings(max_examples=60, deadline=None)
@given(models, st.integers(0, 2**31 - 1))
def test_no_accumulator_overflow_and_no_wrap(model, seed):
    rng = np.random.default_rng(seed)
    lo, hi = fx.signed_range(model.input_bits)
    # random codes plus the two corners, which drive accumulators to their extremes
    x = np.concatenate([rng.integers(lo, hi + 1, size=(64, model.input_dim)),
                        np.full((1, model.input_dim), lo), np.full((1, model.input_dim), hi)])
    for layer, (acc, out) in zip(model.layers, golden.trace(model, x)):
        assert not fx.wraps(acc, layer.acc_bits).any()
        assert not fx.wraps(out, layer.out_bits).any()
        # requantization saturates: recompute with Python ints (unbounded) and clamp
        exact = [[min(max((int(a) * int(m) + ((1 << int(s)) >> 1)) >> int(s), fx.signed_range(layer.out_bits)[0]),
                      fx.signed_range(layer.out_bits)[1]) for a, m, s in zip(row, layer.multiplier, layer.shift)]
                 for row in acc[:4]]
        if layer.activation == "relu":
            exact = np.maximum(exact, 0)
        assert np.array_equal(out[:4], np.asarray(exact))
        x = out


def test_layer_forward_matches_python_integers():
    model = synth.random_model(3, [7, 5, 3], requant="multiply")
    x = np.random.default_rng(0).integers(-128, 128, size=(10, 7))
    acc, _ = golden.layer_forward(model.layers[0], x)
    w, b = model.layers[0].weight.tolist(), model.layers[0].bias.tolist()
    expect = [[sum(wi * xi for wi, xi in zip(w[o], row)) + b[o] for o in range(5)] for row in x.tolist()]
    assert acc.tolist() == expect


def test_quantize_inputs_rounds_half_up_and_saturates():
    model = synth.random_model(0, [3, 2])
    model.input_scale = np.array([0.5, 1.0, 2.0])
    model.input_zero_point = np.array([0, 3, -1])
    q = golden.quantize_inputs(model, [[0.25, -0.5, 1e9], [-0.25, 124.0, -1e9]])
    assert q.tolist() == [[1, 3, 127], [0, 127, -128]]
    assert np.allclose(golden.dequantize_inputs(model, [[1, 3, 0]]), [[0.5, 0.0, 2.0]])


def test_argmax_picks_the_first_maximum():
    assert golden.argmax(np.array([[1, 5, 5, 2], [-3, -3, -3, -3]])).tolist() == [1, 0]


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 4)), r"inputs have shape \(2, 4\); expected \(N, 3\)"),
    (np.array([[0.0, np.nan, 1.0]]), r"non-finite value nan at index \[0, 1\]"),
])
def test_bad_inputs_are_named(x, message):
    model = synth.random_model(0, [3, 2])
    with pytest.raises(golden.InputError, match=message):
        golden.quantize_inputs(model, x)


def test_out_of_range_codes_are_refused():
    model = synth.random_model(0, [3, 2], act_bits=4)
    with pytest.raises(golden.InputError, match=r"input codes hold 8, outside the 4-bit range \[-8, 7\]"):
        golden.forward(model, [[0, 8, 0]])


def test_artifact_round_trip_keeps_every_bit(tmp_path):
    model = synth.random_model(5, [11, 9, 4], requant="multiply", weight_bits=12, act_bits=6)
    artifact.save(model, tmp_path / "m")
    again = artifact.load(tmp_path / "m")
    x = np.random.default_rng(1).integers(-32, 32, size=(50, 11))
    assert np.array_equal(golden.forward(model, x), golden.forward(again, x))
    assert again.layers[0].requant == "multiply" and again.weight_bits == 12
