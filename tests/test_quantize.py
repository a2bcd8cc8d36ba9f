"""The quantizer on small float networks (no torch needed)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pwlnet import fixedpoint as fx, golden, quantize as q
from pwlnet.ir import Activation, Dense, Network


def _net(seed, dims, scale=1.0):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layers.append(Dense(rng.normal(0, scale / np.sqrt(a), (b, a)), rng.normal(0, 0.1, b), name=f"fc{i}"))
        if i < len(dims) - 2:
            layers.append(Activation("relu"))
    return Network(layers, (dims[0],))


def test_input_quantizer_maps_calibration_range_onto_codes():
    calib = np.array([[-1.0, 10.0, 5.0], [3.0, 20.0, 5.0]])
    scale, zero = q.input_quantizer(calib, 8)
    codes = fx.saturate(fx.round_half_up(calib / scale) + zero, 8)
    assert codes[:, 0].tolist() == [-128, 127] and codes[:, 1].tolist() == [-128, 127]
    # a constant feature sits on code 0 and dequantizes to itself
    assert codes[:, 2].tolist() == [0, 0] and scale[2] * (0 - zero[2]) == 5.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.lists(st.integers(1, 24), min_size=2, max_size=4),
       st.integers(2, 16), st.integers(2, 16), st.sampled_from(q.REQUANT_MODES))
def test_any_width_compiles_to_a_valid_model_that_never_overflows(seed, dims, wb, ab, mode):
    net = _net(seed, dims)
    calib = np.random.default_rng(seed).normal(0, 1, (64, dims[0]))
    try:
        model = q.quantize(net, calib, weight_bits=wb, act_bits=ab, requant=mode)
    except q.QuantizeError as e:
        # At tiny widths a channel can need a gain above 1; only multiply mode gives that,
        # and the error must say so.  Multiply mode must then succeed.
        assert mode == "shift" and "compile with --requant multiply" in str(e)
        model = q.quantize(net, calib, weight_bits=wb, act_bits=ab, requant="multiply")
    for layer, (acc, out) in zip(model.layers, golden.trace(model, golden.quantize_inputs(model, calib))):
        assert not fx.wraps(acc, layer.acc_bits).any()
        assert not fx.wraps(layer.weight, wb).any()
    for layer in model.layers:
        assert layer.requant != "shift" or (layer.multiplier == 1).all()


@pytest.mark.parametrize("mode", q.REQUANT_MODES)
def test_8_bit_outputs_track_the_float_network(mode):
    net = _net(1, [6, 32, 32, 3])
    rng = np.random.default_rng(2)
    calib = rng.normal(0, 1, (2000, 6))
    model = q.quantize(net, calib, requant=mode)
    x = rng.normal(0, 1, (500, 6))
    y, _ = golden.predict(model, x)
    ref = net(x)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert err < 0.05, err
    assert np.mean(y.argmax(1) == ref.argmax(1)) > 0.95


def test_linear_layers_in_a_row_are_folded():
    rng = np.random.default_rng(0)
    net = Network([Dense(rng.normal(size=(5, 4)), rng.normal(size=5)),
                   Dense(rng.normal(size=(3, 5)), rng.normal(size=3))], (4,))
    model = q.quantize(net, rng.normal(size=(100, 4)))
    assert len(model.layers) == 1 and model.layers[0].weight.shape == (3, 4)


def test_gain_above_one_is_refused_with_the_channel_named():
    # Channel 0 cancels on perfectly correlated inputs: large weights, tiny outputs, so the
    # per-tensor output scale is set by channel 1 and channel 0 would need a gain above 1.
    net = Network([Dense(np.array([[1e3, -1e3], [1.0, 0.0]]), np.zeros(2), name="fc0")], (2,))
    x = np.random.default_rng(0).uniform(-1, 1, size=(100, 1))
    calib = np.hstack([x, x])
    with pytest.raises(q.QuantizeError, match=r"layer 0, output channel 0: weights up to .* "
                                              r"compile with --requant multiply"):
        q.quantize(net, calib, requant="shift")
    assert q.quantize(net, calib, requant="multiply").layers[0].multiplier[0] > 1


@pytest.mark.parametrize("kwargs, error, message", [
    ({"weight_bits": 1}, ValueError, "weight bits must be between 2 and 16 bits, not 1"),
    ({"act_bits": 20}, ValueError, "activation bits must be between 2 and 16 bits, not 20"),
    ({"requant": "floor"}, ValueError, "requant must be one of .*, not 'floor'"),
])
def test_bad_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        q.quantize(_net(0, [3, 2]), np.zeros((4, 3)), **kwargs)


@pytest.mark.parametrize("calib, message", [
    (np.zeros((4, 5)), r"calibration inputs have shape \(4, 5\)"),
    (np.zeros((0, 3)), "the calibration set is empty"),
    (np.array([[0.0, np.inf, 1.0]]), "NaN or Inf"),
])
def test_bad_calibration(calib, message):
    with pytest.raises(q.QuantizeError, match=message):
        q.quantize(_net(0, [3, 2]), calib)


@pytest.mark.parametrize("mode", q.REQUANT_MODES)
def test_dead_neuron_with_vanishing_weights_keeps_its_bias(mode):
    # Weight decay can leave a neuron with weights around 1e-200 and an ordinary bias;
    # it must quantize as a constant output, not overflow the bias.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4))
    w[1] = 1e-200
    net = Network([Dense(w, np.array([0.1, 0.7, -0.2]))], (4,))
    x = rng.normal(size=(200, 4))
    model = q.quantize(net, x, requant=mode)
    layer = model.layers[0]
    assert (layer.weight[1] == 0).all()
    y, _ = golden.predict(model, x)
    assert np.allclose(y[:, 1], 0.7, atol=model.output_scale)
    assert np.abs(y - net(x)).max() < 4 * model.output_scale
