"""``pwlnet run --cache``: the host fills the (simulated) board's cache, checked against ``pwlnet cache``.

The simulated board runs the real gateware with its UART driven bit by bit, about a
second per inference, so the streams here are a handful of inputs.
"""

import re
from pathlib import Path

import numpy as np
import pytest

from pwlnet import artifact, golden
from pwlnet.cache_run import run_cache
from pwlnet.cli import main
from pwlnet.host import NO_CACHE, Device

REG = Path(__file__).parent / "regression" / "iris_h10"
MODEL_DIR, ONNX = REG / "compiled", REG / "model.onnx"

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")


@pytest.fixture(scope="module")
def model():
    return artifact.load(MODEL_DIR)


def stream(model, pattern, seed=0):
    """Float inputs that visit the iris rows ``pattern`` names (0, 20, 40: one per class),
    each with a jitter of at most one input code, so that revisits fall in the same entry."""
    rng = np.random.default_rng(seed)
    base = golden.quantize_inputs(model, np.load(REG / "inputs.npy")[[0, 20, 40]])
    codes = base[list(pattern)] + rng.integers(-1, 2, size=(len(pattern), model.input_dim))
    x = golden.dequantize_inputs(model, codes)
    assert (golden.quantize_inputs(model, x) == codes).all()
    return x


# A, B, A, C, A: with 2 slots round robin evicts A for C and misses the last A, lru keeps it.
PATTERN = (0, 0, 1, 0, 2, 0)


def run_argv(inputs, *extra):
    return ["run", str(MODEL_DIR), "--inputs", str(inputs), "--sim", "--cache", *extra]


def test_sim_cache_equals_pwlnet_cache(model, tmp_path, capsys):
    x = stream(model, PATTERN)
    np.save(tmp_path / "x.npy", x)
    # The policy must matter on this stream, or passing it through would go untested.
    lru = run_cache(model, x, 2, "l1", policy="lru", net=ONNX).hit
    rr = run_cache(model, x, 2, "l1", policy="round_robin", net=ONNX).hit
    assert rr.any() and not np.array_equal(lru, rr)

    out, gold = tmp_path / "board.npz", tmp_path / "golden.npz"
    assert main(run_argv(tmp_path / "x.npy", "--cache-entries", "2", "--cache-metric", "l1", "--policy",
                         "round_robin", "--onnx", str(ONNX), "--out", str(out))) == 0
    text = capsys.readouterr().out
    assert main(["cache", str(MODEL_DIR), "--inputs", str(tmp_path / "x.npy"), "--entries", "2", "--metric", "l1",
                 "--policy", "round_robin", "--onnx", str(ONNX), "--out", str(gold)]) == 0
    hits = int(rr.sum())
    assert "cache: 2 entries, l1" in text
    assert (f"6 inputs, 2 entries, l1, round_robin: hit rate {100 * hits / 6:.2f} % ({hits} hits, "
            f"{6 - hits} misses)") in text
    assert f"CACHE_STATS hits {hits}, misses {6 - hits}; frames " in text
    assert "inferences 6, errors 0" in text
    assert "inferences/s" in text
    assert "board and golden model agree on all 6 inferences" in text
    with np.load(out) as b, np.load(gold) as g:
        assert sorted(b.files) == ["hit", "hit_center", "inputs", "outputs"]
        assert b["hit"].sum() == hits > 0
        for k in g.files:
            np.testing.assert_array_equal(b[k], g[k], err_msg=k)


def test_disagreement_is_reported(model, tmp_path, capsys, monkeypatch):
    # A board that answers one inference wrongly: the lockstep check must name it.
    x = stream(model, (0, 0, 1))
    np.save(tmp_path / "x.npy", x)
    real = Device.run_cached

    def wrong_once(self, *args, **kwargs):
        run = real(self, *args, **kwargs)
        run.outputs[1, 0] += 1
        return run

    monkeypatch.setattr(Device, "run_cached", wrong_once)
    out = tmp_path / "r.npz"
    assert main(run_argv(tmp_path / "x.npy", "--cache-entries", "2", "--cache-metric", "l1", "--onnx", str(ONNX),
                         "--out", str(out))) == 1
    err = capsys.readouterr().err
    assert "the board disagrees with the golden model on 1 of 3 inferences; counters agree" in err
    assert "  input 1: board hit slot 0" in err
    with np.load(out) as f:      # the board's answers, as pwlnet cache --simulator keeps the RTL's
        assert f["hit"][1]


def test_board_without_cache(model, tmp_path, capsys):
    np.save(tmp_path / "x.npy", stream(model, (0, 0)))
    out = tmp_path / "r.npz"
    assert main(run_argv(tmp_path / "x.npy", "--onnx", str(ONNX), "--out", str(out))) == 2
    assert f"pwlnet run: {NO_CACHE}" in capsys.readouterr().err
    assert NO_CACHE == "the bitstream has no cache; build it with --cache-entries N"
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    ([], "give --onnx model.onnx"),
    (["--onnx", "{tmp}/other.onnx"], "not the network this model was compiled from"),
    (["--onnx", str(ONNX), "--out", "{tmp}/nowhere/r.npz"], "directory .*nowhere does not exist"),
    (["--onnx", str(ONNX), "--codes"], "--cache takes float inputs"),
    (["--onnx", str(ONNX), "--cache-metric", "l2"], "--cache-metric needs --cache-entries N"),
])
def test_refused_before_the_board(model, tmp_path, capsys, extra, message):
    np.save(tmp_path / "x.npy", stream(model, (0,)))
    (tmp_path / "other.onnx").write_bytes(ONNX.read_bytes() + b"\0")
    out = tmp_path / "r.npz"
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    if "--out" not in extra:
        extra += ["--out", str(out)]
    assert main(run_argv(tmp_path / "x.npy", *extra)) == 2
    err = capsys.readouterr()
    assert err.out == ""         # not even the board's INFO: nothing was opened
    assert re.search(message, err.err), err.err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--sim", "--onnx", str(ONNX)], "--onnx is an option of --cache"),
    (["--sim", "--policy", "lru"], "--policy is an option of --cache"),
    (["--sim", "--out", "{tmp}/r.npz"], "--out is an option of --cache"),
    (["--port", "/dev/null", "--cache", "--cache-entries", "4"], "--cache-entries is for --sim"),
    (["--port", "/dev/null", "--cache", "--cache-metric", "l2"], "--cache-metric is for --sim"),
])
def test_option_combinations(model, tmp_path, capsys, argv, message):
    np.save(tmp_path / "x.npy", stream(model, (0,)))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["run", str(MODEL_DIR), "--inputs", str(tmp_path / "x.npy"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.npz").exists()
