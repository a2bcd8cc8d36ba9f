"""``pwlnet cache`` and :func:`pwlnet.cache_run.run_cache`: hits exact, misses the full network, files."""

import argparse

import numpy as np
import pytest

from pwlnet import cache_host, code_cache, golden, regions, train
from pwlnet.cache_run import CacheRunError, add_cache_arguments, cli_cache, run_cache
from pwlnet.compile import compile_onnx
from pwlnet.hw.comparator_bank import LOOKUP_LATENCY
from pwlnet.hw.engine.plan import EnginePlan
from pwlnet.hw.slot_format import SlotFormat
from pwlnet.onnx_import import load_onnx

pytestmark = [pytest.mark.filterwarnings(
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small ReLU MLP on iris, exported and compiled as the CLI would."""
    root = tmp_path_factory.mktemp("cache_run")
    res = train.train("iris", (16, 16), epochs=60, verbose=False)
    onnx_path = train.export_onnx(res, root / "iris.onnx")
    model_dir = root / "iris"
    model = compile_onnx(onnx_path, model_dir, calib="iris", log=lambda *_: None)
    return onnx_path, model_dir, model, load_onnx(onnx_path)


def walk(model, n=300, seed=0):
    """A slow random walk in input codes, dequantized: a stream with repeats and near misses."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([-1, 0, 0, 0, 1], size=(n, model.input_dim))
    codes = np.clip(np.cumsum(steps, axis=0), -100, 100)
    return golden.dequantize_inputs(model, codes)


@pytest.mark.parametrize("metric", code_cache.METRICS)
@pytest.mark.parametrize("policy", cache_host.POLICIES)
def test_hits_exact_misses_full_network(trained, metric, policy):
    _, _, model, net = trained
    x = walk(model)
    run = run_cache(model, x, 4, metric, policy=policy, net=net)
    hit = run.hit
    assert hit.any() and (~hit).any()
    assert run.n_false_hits == 0

    q = golden.quantize_inputs(model, x)
    np.testing.assert_array_equal(run.inputs, golden.dequantize_inputs(model, q))
    # NaN rows exactly on the misses, finite centers on the hits.
    np.testing.assert_array_equal(np.isnan(run.hit_center).all(axis=1), ~hit)
    assert np.isfinite(run.hit_center[hit]).all()

    # Every hit: the float pattern at the query equals the one at its center (checked here
    # independently of run_stream), and the output is the center's entry's affine piece.
    blocks = code_cache.code_blocks(model, net)
    centers = golden.quantize_inputs(model, run.hit_center[hit])
    for c, qi, out in zip(centers, q[hit], run.codes[hit]):
        lin = regions.linearize(blocks, c.astype(np.float64))
        assert regions.same_pattern(blocks, qi[None].astype(np.float64), lin.pattern)[0]
        entry = code_cache.make_entry(model, blocks, c, metric)
        assert entry.hits(qi)
        np.testing.assert_array_equal(out, entry.evaluate(qi)[0])
    np.testing.assert_array_equal(run.codes[~hit], golden.forward(model, q[~hit]))
    np.testing.assert_array_equal(run.full_codes, golden.forward(model, q))
    np.testing.assert_array_equal(run.outputs, run.codes * model.output_scale)
    assert run.n_argmax_disagree == int((golden.argmax(run.codes) != golden.argmax(run.full_codes)).sum())


def test_cycle_figures_are_the_engines(trained):
    _, _, model, net = trained
    run = run_cache(model, walk(model), 8, "linf", net=net, lanes=4)
    eng = EnginePlan(model, 4)
    assert run.cycles_full == eng.program_cycles(0) == run.mean_cycles_without
    assert run.lookup_latency == LOOKUP_LATENCY
    assert 0 < run.cycles_hit < run.cycles_full
    h = int(run.hit.sum())
    want = (h * (run.cycles_hit + LOOKUP_LATENCY) + (run.n - h) * (run.cycles_full + LOOKUP_LATENCY)) / run.n
    assert run.mean_cycles_with == pytest.approx(want)


def parse(argv):
    return add_cache_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_cli_writes_the_result(trained, tmp_path, capsys):
    onnx_path, model_dir, model, _ = trained
    x = walk(model, 120)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "result.npz"
    args = parse([str(model_dir), "--inputs", str(tmp_path / "x.npy"), "--entries", "8", "--metric", "l2",
                  "--onnx", str(onnx_path), "--out", str(out)])
    assert cli_cache(args) == 0
    text = capsys.readouterr().out
    assert "hit rate" in text and "mean cycles per inference" in text
    with np.load(out) as f:
        assert sorted(f.files) == ["hit", "hit_center", "inputs", "outputs"]
        assert f["hit"].shape == (120,) and f["hit"].dtype == bool
        assert f["hit_center"].shape == f["inputs"].shape == (120, model.input_dim)
        assert f["outputs"].shape == (120, model.output_dim)
        np.testing.assert_array_equal(np.isnan(f["hit_center"]).all(axis=1), ~f["hit"])
        # Same format as `pwlnet predict` on the inputs the cache saw, wherever it missed.
        miss = ~f["hit"]
        np.testing.assert_array_equal(f["outputs"][miss], golden.predict(model, f["inputs"][miss])[0])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary left


def _fake_rtl(monkeypatch, corrupt=None, fail=None):
    """Stand in for the RTL run: the golden loop's answers (or a build failure), optionally
    with one output code changed and reported, as the bench reports a mismatch.  The RTL
    itself runs in tests/test_sim_cached_engine.py; here only the command's handling is tested."""
    from pwlnet.sim import cached_engine_sim, runner

    def fake(model, blocks, q, entries, metric, policy, *, simulator, lanes, target, margin, verbose):
        if fail:
            raise runner.SimError(fail)
        fmt = SlotFormat(model, lanes, metric)
        ref = cache_host.run_stream(model, blocks, q, entries, metric, policy, margin=margin, slot_format=fmt)
        out = ref.outputs.copy()
        bad = np.zeros(len(q), dtype=bool)
        details = []
        if corrupt is not None:
            out[corrupt, 0] += 1
            bad[corrupt] = True
            details = [f"inference {corrupt}: outputs {out[corrupt].tolist()}, "
                       f"expected {ref.outputs[corrupt].tolist()}"]
        n = len(q)
        return cached_engine_sim.CacheSimResult(
            hit=ref.hit, slot=ref.slot, outputs=out, argmax=golden.argmax(out), cycles=np.where(ref.hit, 30, 120),
            expected_hit=ref.hit, expected_slot=ref.slot, expected_outputs=ref.outputs, written=ref.written,
            bad=bad, mismatches=int(bad.sum()), details=details, hits=ref.hits, misses=ref.misses,
            expected_hits=ref.hits, expected_misses=ref.misses, counters=[], uncacheable=0, hit_cycles=5,
            engine_cycles=99, image_bytes=40, total_cycles=int(n * 120), build_s=0.0, run_s=0.1,
            simulator=simulator, target=target, lanes=lanes, entries=entries, metric=metric, policy=policy,
            run_dir="/nowhere/run" if corrupt is not None else None)

    monkeypatch.setattr(cached_engine_sim, "simulate_cache", fake)


def test_cli_simulator_reports_measured_cycles_and_rtl_answers(trained, tmp_path, capsys, monkeypatch):
    onnx_path, model_dir, model, _ = trained
    x = walk(model, 40)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "result.npz"
    _fake_rtl(monkeypatch)
    args = parse([str(model_dir), "--inputs", str(tmp_path / "x.npy"), "--entries", "4", "--metric", "linf",
                  "--onnx", str(onnx_path), "--simulator", "icarus", "--lanes", "4", "--out", str(out)])
    assert cli_cache(args) == 0
    text = capsys.readouterr().out
    assert "measured on icarus" in text and "hit rate" in text and "agree" in text
    with np.load(out) as f:
        assert sorted(f.files) == ["hit", "hit_center", "inputs", "outputs"]
        assert f["hit"].any() and (~f["hit"]).any()


def test_cli_simulator_mismatch_exits_1(trained, tmp_path, capsys, monkeypatch):
    onnx_path, model_dir, model, _ = trained
    np.save(tmp_path / "x.npy", walk(model, 20))
    out = tmp_path / "result.npz"
    argv = [str(model_dir), "--inputs", str(tmp_path / "x.npy"), "--entries", "4", "--metric", "l2",
            "--onnx", str(onnx_path), "--simulator", "verilator", "--out", str(out)]
    _fake_rtl(monkeypatch, corrupt=3)
    assert cli_cache(parse(argv)) == 1
    err = capsys.readouterr().err
    assert "the RTL disagrees with the golden model: 1 mismatches" in err and "inference 3" in err
    assert "run directory: /nowhere/run" in err
    out.unlink()
    _fake_rtl(monkeypatch, fail="verilator build of X failed")
    assert cli_cache(parse(argv)) == 2
    assert "verilator simulation failed: verilator build of X failed" in capsys.readouterr().err
    assert not out.exists()


def test_named_errors(trained, tmp_path):
    onnx_path, model_dir, model, net = trained
    x = walk(model, 20)
    np.save(tmp_path / "x.npy", x)
    base = [str(model_dir), "--inputs", str(tmp_path / "x.npy"), "--entries", "4", "--metric", "linf"]
    out = tmp_path / "r.npz"
    with pytest.raises(CacheRunError, match="--onnx iris.onnx"):
        cli_cache(parse(base + ["--out", str(out)]))
    other = tmp_path / "other.onnx"
    other.write_bytes(onnx_path.read_bytes() + b"\0")
    with pytest.raises(CacheRunError, match="not the network this model was compiled from"):
        cli_cache(parse(base + ["--onnx", str(other), "--out", str(out)]))
    np.save(tmp_path / "bad.npy", x[:, :2])
    with pytest.raises(golden.InputError, match=r"bad\.npy: inputs have shape \(20, 2\)"):
        cli_cache(parse([str(model_dir), "--inputs", str(tmp_path / "bad.npy"), "--entries", "4", "--metric",
                         "linf", "--onnx", str(onnx_path), "--out", str(out)]))
    with pytest.raises(CacheRunError, match="directory .*nowhere does not exist"):
        cli_cache(parse(base + ["--onnx", str(onnx_path), "--out", str(tmp_path / "nowhere" / "r.npz")]))
    assert not out.exists()

    with pytest.raises(CacheRunError, match="entries must be a positive integer, not 0"):
        run_cache(model, x, 0, "l2", net=net)
    with pytest.raises(CacheRunError, match="metric must be one of l2, linf, l1, not 'l3'"):
        run_cache(model, x, 4, "l3", net=net)
    with pytest.raises(CacheRunError, match="policy must be one of"):
        run_cache(model, x, 4, "l2", net=net, policy="random")
    with pytest.raises(CacheRunError, match="needs the float network"):
        run_cache(model, x, 4, "l2")
    with pytest.raises(CacheRunError, match="simulator must be one of verilator, icarus, not 'modelsim'"):
        run_cache(model, x, 4, "l2", net=net, simulator="modelsim")
    with pytest.raises(CacheRunError, match="holds no rows"):
        run_cache(model, x[:0], 4, "l2", net=net)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(golden.InputError, match=r"non-finite value nan at index \[3, 1\]"):
        run_cache(model, bad, 4, "l2", net=net)
    with pytest.raises(SystemExit):
        parse(base + ["--entries", "0", "--out", str(out)])
