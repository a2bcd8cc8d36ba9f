"""The integer LERP rule, its place in the golden model and the artifact, and the quantizer (no torch)."""

from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pwlnet import artifact, fixedpoint as fx, golden, lerp, quantize as q, synth
from pwlnet.ir import Activation, Dense, Network


def reference_lerp(code, row, index_bits, bits):
    """The rule with Python integers and exact fractions: T[i] + round_half_up(dT * r / 2**f)."""
    f = bits - index_bits
    u = code + 2 ** (bits - 1)
    i, r = u // 2 ** f, u % 2 ** f
    exact = row[i] + Fraction((row[i + 1] - row[i]) * r, 2 ** f)
    return math.floor(exact + Fraction(1, 2))


@st.composite
def tables(draw, max_channels=4):
    bits = draw(st.integers(2, 16))
    k = draw(st.integers(0, min(bits, 7)))
    channels = draw(st.integers(1, max_channels))
    lo, hi = fx.signed_range(bits)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    table = rng.integers(lo, hi + 1, size=(channels, (1 << k) + 1))
    if draw(st.booleans()):  # extremes: the widest differences
        table = rng.choice([lo, hi], size=table.shape)
    return bits, k, table


@settings(max_examples=200, deadline=None)
@given(tables(), st.integers(0, 2**31 - 1))
def test_lerp_is_exact_interpolation_rounded_half_up(tab, seed):
    bits, k, table = tab
    lo, hi = fx.signed_range(bits)
    codes = np.random.default_rng(seed).integers(lo, hi + 1, size=(16, table.shape[0]))
    codes[0], codes[1] = lo, hi
    out = fx.lerp(codes, table, k, bits)
    expect = [[reference_lerp(int(c), [int(v) for v in table[ch]], k, bits) for ch, c in enumerate(row)]
              for row in codes]
    assert out.tolist() == expect
    assert not fx.wraps(out, bits).any()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 10), st.data())
def test_monotone_tables_give_monotone_functions_of_every_code(bits, data):
    k = data.draw(st.integers(0, bits))
    lo, hi = fx.signed_range(bits)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    table = np.sort(rng.integers(lo, hi + 1, size=(2, (1 << k) + 1)), axis=1)
    table[1] = table[1, ::-1]                     # one rising, one falling channel
    codes = np.arange(lo, hi + 1)
    out = fx.lerp(np.stack([codes, codes], axis=1), table, k, bits)
    assert np.all(np.diff(out[:, 0]) >= 0) and np.all(np.diff(out[:, 1]) <= 0)
    # every output lies between the two entries of its segment
    assert out.min() >= table.min() and out.max() <= table.max()


def _eight_bit_tables():
    z = np.linspace(-4, 4, 65)
    return {
        "relu": np.round(np.maximum(z, 0) * 127 / 4),
        "tanh": np.round(np.tanh(z) * 127),
        "extremes": np.where(np.arange(65) % 2, 127, -128),
        "random": np.random.default_rng(7).integers(-128, 128, 65),
        "constant": np.full(65, -128),
    }


@pytest.mark.parametrize("name", list(_eight_bit_tables()))
def test_exhaustive_over_all_8_bit_codes(name):
    row = _eight_bit_tables()[name].astype(np.int64)
    codes = np.arange(-128, 128)[:, None]
    out = fx.lerp(codes, row[None, :], 6, 8)[:, 0]
    assert out.tolist() == [reference_lerp(int(c), row.tolist(), 6, 8) for c in codes[:, 0]]
    # grid points (fraction 0) give the table entries themselves
    assert out[::4].tolist() == row[:64].tolist()


def test_lerp_worked_example():
    # 8 bits, 6/2 split: code -126 -> u = 2, segment 0, fraction 2/4: halfway, ties up.
    table = np.array([[0, 3] + [0] * 63])
    assert fx.lerp([[-126], [-127], [-125], [-124]], table, 6, 8)[:, 0].tolist() == [2, 1, 2, 3]
    table = np.array([[0, -3] + [0] * 63])
    assert fx.lerp([[-126], [-127], [-125]], table, 6, 8)[:, 0].tolist() == [-1, -1, -2]


@pytest.mark.parametrize("args, message", [
    (([[0]], np.zeros((1, 5)), 3, 8), r"LERP table has shape \(1, 5\); expected \(1, 9\)"),
    (([[0]], np.zeros((1, 3)), 9, 8), r"LERP index bits must be an integer in 0..8, not 9"),
    (([[200]], np.zeros((1, 3)), 1, 8), "must fit 8 bits"),
    (([[0]], np.full((1, 3), 128), 1, 8), "must fit 8 bits"),
])
def test_lerp_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        fx.lerp(*args)


# --------------------------------------------------------------------------- golden, artifact


def lerp_model(seed=0, dims=(5, 7, 3), bits=8, k=4, requant="multiply"):
    model = synth.random_model(seed, list(dims), act_bits=bits, requant=requant)
    rng = np.random.default_rng(seed)
    lo, hi = fx.signed_range(bits)
    layer = model.layers[0]
    layer.activation = "lerp"
    layer.table = np.sort(rng.integers(lo, hi + 1, size=(layer.n_out, (1 << k) + 1)), axis=1)
    layer.index_bits = k
    layer.lerp_range = np.tile([-4.0, 4.0], (layer.n_out, 1))
    return model.validate()


def test_golden_applies_the_table_after_requantization():
    model = lerp_model()
    x = np.random.default_rng(1).integers(-128, 128, size=(40, 5))
    layer = model.layers[0]
    acc, out = golden.layer_forward(layer, x)
    pre = fx.requantize(acc, layer.multiplier, layer.shift, 8)
    assert np.array_equal(out, fx.lerp(pre, layer.table, 4, 8))
    assert golden.forward(model, x).shape == (40, 3)


def test_artifact_round_trip_of_a_lerp_model(tmp_path):
    model = lerp_model(3, (6, 9, 4), bits=6, k=3)
    artifact.save(model, tmp_path / "m")
    again = artifact.load(tmp_path / "m")
    x = np.random.default_rng(1).integers(-32, 32, size=(50, 6))
    assert np.array_equal(golden.forward(model, x), golden.forward(again, x))
    l0 = again.layers[0]
    assert l0.activation == "lerp" and l0.index_bits == 3 and l0.frac_bits == 3
    assert np.array_equal(l0.table, model.layers[0].table) and l0.lerp_range.shape == (9, 2)
    assert again.layers[1].table is None
    import json
    desc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert desc["version"] == 1
    assert desc["layers"][0]["lerp"] == {"index_bits": 3, "frac_bits": 3, "table": "l0.table",
                                         "range": "l0.lerp_range"}
    assert "lerp" not in desc["layers"][1]


def test_relu_models_are_written_without_lerp_fields(tmp_path):
    artifact.save(synth.random_model(0, [3, 4, 2]), tmp_path / "m")
    text = (tmp_path / "m" / "model.json").read_text()
    assert "lerp" not in text and "table" not in text


@pytest.mark.parametrize("change, message", [
    (lambda l: setattr(l, "table", l.table[:, :-1]), r"LERP table shape \(7, 16\), expected \(7, 17\)"),
    (lambda l: setattr(l, "table", l.table + 200), r"LERP table entries outside the 8-bit range"),
    (lambda l: setattr(l, "index_bits", 9), r"LERP index_bits must be an integer in 0..8"),
    (lambda l: setattr(l, "activation", "relu"), r"a LERP table on a layer whose activation is 'relu'"),
])
def test_artifact_validation_of_lerp_fields(change, message):
    model = lerp_model()
    change(model.layers[0])
    with pytest.raises(artifact.ArtifactError, match=message):
        model.validate()


# --------------------------------------------------------------------------- quantizer


def lerp_net(seed, dims, grid=64, lo=-4.0, hi=4.0, shape=np.tanh):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layers.append(Dense(rng.normal(0, 1.5 / np.sqrt(a), (b, a)), rng.normal(0, 0.3, b), name=f"fc{i}"))
        if i < len(dims) - 2:
            table = lerp.tabulate(lambda z: shape(z) * rng.uniform(0.5, 2, b), lo, hi, grid, b)
            layers.append(Activation("lerp", table=table, lo=lo, hi=hi, name=f"act{i}"))
    return Network(layers, (dims[0],))


@pytest.mark.parametrize("mode", q.REQUANT_MODES)
def test_8_bit_lerp_network_tracks_the_float_network(mode):
    net = lerp_net(1, [6, 24, 16, 3])
    rng = np.random.default_rng(2)
    model = q.quantize(net, rng.normal(0, 1, (2000, 6)), requant=mode)
    assert [l.activation for l in model.layers] == ["lerp", "lerp", "none"]
    assert all(l.index_bits == 6 and l.frac_bits == 2 for l in model.layers[:2])
    x = rng.normal(0, 1, (500, 6))
    y, _ = golden.predict(model, x)
    ref = net(x)
    # Coarser than a ReLU network's (test_quantize): the pre-activation codes span the
    # fixed table range [-4, 4] in steps of 1/32, whatever the calibration range.
    assert np.abs(y - ref).max() / np.abs(ref).max() < 0.1
    assert np.abs(y - ref).mean() / np.abs(ref).mean() < 0.03
    assert np.mean(y.argmax(1) == ref.argmax(1)) > 0.95


def test_asymmetric_range_maps_onto_the_codes_through_the_bias():
    # y = lerp(x) with an identity table on [1, 5]: the output is clamp(x, 1, 5).
    table = lerp.grid_points(1.0, 5.0, 16)[None, :]
    net = Network([Dense([[1.0]], [0.0]), Activation("lerp", table=table, lo=1.0, hi=5.0), Dense([[1.0]], [0.0])], (1,))
    x = np.linspace(-2, 8, 401)[:, None]
    model = q.quantize(net, x)
    y, _ = golden.predict(model, x)
    assert np.abs(y[:, 0] - np.clip(x[:, 0], 1, 5)).max() < 0.1
    lay = model.layers[0]
    # range [1, 5] over 256 codes: the midpoint 3 sits on code 0
    assert np.allclose(lay.lerp_range, [[1.0, 5.0]])


def test_grid_that_is_not_a_power_of_two_is_resampled_with_a_notice():
    net = lerp_net(0, [4, 8, 2], grid=48)
    model = q.quantize(net, np.random.default_rng(0).normal(size=(200, 4)))
    assert model.layers[0].table.shape == (8, 65)
    (notice,) = model.summary["notices"]
    assert "resampled from 48 to 64 segments (max abs change" in notice


def test_grid_finer_than_the_codes_is_resampled_exactly():
    net = lerp_net(0, [4, 8, 2], grid=256)
    model = q.quantize(net, np.random.default_rng(0).normal(size=(200, 4)), act_bits=6)
    assert model.layers[0].index_bits == 6 and model.layers[0].frac_bits == 0
    assert "exact at every one of the 64 input codes" in model.summary["notices"][0]


def test_imported_function_is_tabulated_on_the_calibrated_range():
    rng = np.random.default_rng(0)
    fn = lerp.FunctionActivation("lerp", table=lerp.tabulate(np.tanh, -8, 8, 64, 5), lo=-8.0, hi=8.0,
                                 function=np.tanh, description="Tanh", name="t")
    net = Network([Dense(rng.normal(size=(5, 3)), np.zeros(5)), fn, Dense(rng.normal(size=(2, 5)), np.zeros(2))], (3,))
    calib = rng.normal(0, 0.3, (500, 3))
    model = q.quantize(net, calib)
    rng_ = model.layers[0].lerp_range
    # the quantizer sees the inputs as the input codes stand for them
    z = golden.dequantize_inputs(model, golden.quantize_inputs(model, calib)) @ net.layers[0].weight.T
    # narrower than the import range, inside the calibration extremes, one range per channel
    assert np.all(rng_[:, 0] >= z.min(0) - 1e-12) and np.all(rng_[:, 1] <= z.max(0) + 1e-12)
    assert len(set(rng_[:, 1].round(9))) == 5
    assert "Tanh tabulated with 64 segments" in model.summary["notices"][0]
    y, _ = golden.predict(model, calib)
    exact = np.tanh(z) @ net.layers[2].weight.T
    assert np.abs(y - exact).max() < 0.03 * np.abs(exact).max()


def test_saturated_tails_are_cut_from_the_calibrated_range():
    lo, hi, _ = q._calibrated_range(np.tanh, np.array([[-30.0], [30.0]]))
    assert 3 < hi[0] < 5 and -5 < lo[0] < -3


@pytest.mark.parametrize("bits, grid", [(8, 64), (8, 16), (6, 64), (10, 32)])
def test_every_code_lands_on_the_float_table(bits, grid):
    # Grid point j of a table is code u = j * 2**f: the integer LERP of every code equals
    # the float table at the value that code stands for, within one output code.
    rng = np.random.default_rng(bits * grid)
    lo, hi = -1.5, 3.0
    # monotone, so that the largest |entry| is at an end, which the calibration reaches
    table = np.abs(rng.normal(size=(3, grid + 1))).cumsum(axis=1) - rng.uniform(0, grid, (3, 1))
    net = Network([Dense(np.eye(3), np.zeros(3)), Activation("lerp", table=table, lo=lo, hi=hi)], (3,))
    calib = np.repeat(np.array([[lo - 1], [hi + 1]]), 3, axis=1)   # no table entry saturates
    model = q.quantize(net, calib, act_bits=bits, weight_bits=bits)
    layer = model.layers[0]
    codes = np.repeat(np.arange(*np.array(fx.signed_range(bits)) + [0, 1])[:, None], 3, axis=1)
    out = fx.lerp(codes, layer.table, layer.index_bits, bits)
    z = (lo + hi) / 2 + codes * (hi - lo) / 2 ** bits          # what each pre-activation code means
    expect = lerp.interpolate(table, lo, hi, z) / layer.out_scale
    assert np.abs(out - expect).max() <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 16), st.data())
def test_random_lerp_models_never_wrap(seed, bits, data):
    k = data.draw(st.integers(0, bits))
    model = lerp_model(seed, (4, 6, 2), bits=bits, k=k, requant=data.draw(st.sampled_from(["shift", "multiply"])))
    lo, hi = fx.signed_range(bits)
    x = np.random.default_rng(seed).integers(lo, hi + 1, size=(32, 4))
    (acc, out), _ = golden.trace(model, x)
    layer = model.layers[0]
    assert not fx.wraps(out, bits).any()
    assert np.all(out >= layer.table.min(axis=1)) and np.all(out <= layer.table.max(axis=1))
