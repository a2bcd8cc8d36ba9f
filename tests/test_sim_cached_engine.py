"""The engine with the hypersphere cache (RTL) against the golden cache model, on Icarus and Verilator.

A small random ReLU MLP (3 inputs, hidden 12 and 10, 5 outputs) is written as ONNX and
compiled twice, once per requantization mode; the cached engine has N = 4 slots and
P = 4 lanes (two passes for the 5 outputs, so a slot's program is more than one word
per input).  The ``multiply`` model runs with the ``linf`` bank and the LRU host, the
``shift`` model with the ``l2`` bank and the round-robin host.  Every answer (cached
flag, slot, output codes, argmax) and every counter read must equal the golden model
(:class:`pwlnet.code_cache.HwCache`) in lockstep, and the whole stream must equal the
independent golden loop :func:`pwlnet.cache_host.run_stream`.

Covered: hits and misses from a host that fills the cache, more misses than slots (the
policy overwrites slots), random input gaps and output back-pressure, entry writes
between inferences (including an overwrite), an entry write that meets inferences in
flight, ``clear``, ``clear_stats``, counter reads, preloaded entries, a write to a slot
past the last (N = 3), the ``ice40`` target with run-time loaded weights, random mixes
of all operations, the ``pwlnet cache --simulator`` command, and a bench that is made to
see a golden model with other entries than the RTL's, which it must report.

Builds are cached by :mod:`pwlnet.sim.runner` (four per simulator: ``linf`` and ``l2``
at N = 4, N = 3 with preloaded entries, and the ``ice40`` target), so reruns only
simulate.  The tests are not grouped by simulator: a group is scheduled as one unit, and
with a whole simulator's tests in one unit the two workers finished far apart.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil

import numpy as np
import onnx.helper as oh
import pytest

from pwlnet import cache_host, code_cache, golden
from pwlnet.hw.slot_format import SlotFormat
from pwlnet.compile import compile_onnx
from pwlnet.onnx_import import load_onnx
from pwlnet.sim.cached_engine_sim import Clear, ClearStats, Infer, ReadCounters, Stream, Write, simulate_cache

from helpers import graph_model, random_blocks, simulator_param

ENTRIES = 4
LANES = 4
D, HIDDEN, N_OUT = 3, (12, 10), 5
#: (metric, host policy, requantization) of the two builds per simulator
CONFIGS = {"linf": ("lru", "multiply"), "l2": ("round_robin", "shift")}
CACHED = importlib.util.find_spec("pwlnet.hw.cached_engine") is not None


SIMS = [simulator_param("icarus"), simulator_param("verilator")]

pytestmark = [pytest.mark.skipif(not CACHED, reason="pwlnet.hw.cached_engine is not there yet")]


@dataclasses.dataclass
class Case:
    onnx: object
    model_dir: object
    model: object
    net: object
    blocks: list
    metric: str
    policy: str


def _write_onnx(path, seed):
    """A random float ReLU MLP as an ONNX graph of Gemm and Relu nodes."""
    nodes, inits, x = [], {}, "x"
    blocks = random_blocks(seed, D, list(HIDDEN), N_OUT)
    for k, (w, b, act) in enumerate(blocks):
        inits[f"w{k}"], inits[f"b{k}"] = w.astype(np.float32), b.astype(np.float32)
        y = "y" if k == len(blocks) - 1 else f"h{k}"
        nodes.append(oh.make_node("Gemm", [x, f"w{k}", f"b{k}"], [y if act == "none" else f"z{k}"], transB=1))
        if act == "relu":
            nodes.append(oh.make_node("Relu", [f"z{k}"], [y]))
        x = y
    import onnx
    onnx.save(graph_model(nodes, inits, in_shape=("N", D), out_shape=("N", N_OUT)), str(path))
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """The test network as ONNX, compiled once per requantization mode."""
    root = tmp_path_factory.mktemp("cached_engine")
    onnx_path = _write_onnx(root / "mlp.onnx", seed=11)
    np.save(root / "calib.npy", np.random.default_rng(12).normal(size=(256, D)).astype(np.float32))
    net = load_onnx(onnx_path)
    out = {}
    for metric, (policy, requant) in CONFIGS.items():
        model_dir = root / f"model_{requant}"
        model = compile_onnx(onnx_path, model_dir, calib=str(root / "calib.npy"), requant=requant,
                             log=lambda *_: None)
        out[metric] = Case(onnx_path, model_dir, model, net, code_cache.code_blocks(model, net), metric, policy)
    return out


def walk(model, n, seed):
    """A slow random walk in input codes: a stream with repeats, near misses and new regions."""
    rng = np.random.default_rng(seed)
    start = rng.integers(-40, 41, size=model.input_dim)
    steps = rng.choice([-3, -1, 0, 0, 0, 1, 3], size=(n, model.input_dim))
    lo, hi = -(1 << (model.input_bits - 1)), (1 << (model.input_bits - 1)) - 1
    return np.clip(start + np.cumsum(steps, axis=0), lo, hi)


def far_apart(case, n, seed):
    """``n`` entries that fit the slots, none of whose balls holds another's center."""
    rng = np.random.default_rng(seed)
    fmt = SlotFormat(case.model, LANES, case.metric)
    chosen = []
    for _ in range(1000):
        try:
            e = code_cache.make_entry(case.model, case.blocks, rng.integers(-100, 101, size=D), case.metric)
        except code_cache.EntryError:
            continue
        if fmt.fits(e) and all(not a.hits(e.center) and not e.hits(a.center) for a in chosen):
            chosen.append(e)
            if len(chosen) == n:
                return chosen
    raise AssertionError(f"could not find {n} separate entries")


def near(entry):
    """A code vector inside ``entry``'s ball but not its center when the ball allows it."""
    q = entry.center.copy()
    step = 1 if entry.bound >= 1 else 0
    q[0] = q[0] + step if q[0] < 127 else q[0] - step
    return q


@pytest.mark.parametrize("simulator", SIMS)
@pytest.mark.parametrize("metric", list(CONFIGS))
def test_stream_matches_golden(cases, simulator, metric):
    """A host-filled stream: hits, misses, slots overwritten (N = 4), 0 mismatches, measured cycles."""
    case = cases[metric]
    codes = walk(case.model, 60, seed=3)
    r = simulate_cache(case.model, case.net, codes, ENTRIES, metric, case.policy, simulator=simulator, lanes=LANES)
    assert r.mismatches == 0, "\n".join(r.details)

    # the independent golden loop: same hits, slots, outputs and writes
    fmt = SlotFormat(case.model, LANES, metric)
    ref = cache_host.run_stream(case.model, case.blocks, codes, ENTRIES, metric, case.policy, slot_format=fmt)
    np.testing.assert_array_equal(r.hit, ref.hit)
    np.testing.assert_array_equal(r.slot, ref.slot)
    np.testing.assert_array_equal(r.outputs, ref.outputs)
    np.testing.assert_array_equal(r.written, ref.written)
    np.testing.assert_array_equal(r.argmax, golden.argmax(ref.outputs))
    assert (r.hits, r.misses) == (int(ref.hit.sum()), int((~ref.hit).sum())) == (ref.hits, ref.misses)

    # the stream exercises what it is meant to: hits, and more entries written than slots
    assert r.hit.sum() >= 5 and (r.written >= 0).sum() > ENTRIES, (r.hit.sum(), r.written)
    assert len(set(r.written[r.written >= 0].tolist())) == ENTRIES

    # measured cycles: every hit alike and shorter than every miss, which are alike too
    assert len(set(r.cycles[r.hit].tolist())) == 1 and len(set(r.cycles[~r.hit].tolist())) == 1
    assert r.cycles[r.hit].max() < r.cycles[~r.hit].min()
    assert r.cycles[~r.hit].min() > r.engine_cycles and r.cycles[r.hit].min() > r.hit_cycles
    assert r.mean_cycles == pytest.approx(r.cycles.mean())

    # the same stream with random input gaps and output back-pressure
    g = simulate_cache(case.model, case.net, codes[:30], ENTRIES, metric, case.policy, simulator=simulator,
                       lanes=LANES, gap_prob=0.3, stall_prob=0.3, seed=5)
    assert g.mismatches == 0, "\n".join(g.details)
    np.testing.assert_array_equal(g.outputs, ref.outputs[:30])
    np.testing.assert_array_equal(g.hit, ref.hit[:30])


@pytest.mark.parametrize("simulator", SIMS)
def test_writes_clear_and_counters(cases, simulator):
    """Entries written between inferences, an overwrite, clear_stats, clear, then the host refills."""
    case = cases["linf"]
    a, b, c = far_apart(case, 3, seed=7)
    script = [
        Infer([a.center, b.center], fill=False),                   # 0-1: empty cache
        Write(2, a), Write(0, b),
        Infer([a.center, b.center, near(a), c.center], fill=False),  # 2-5
        ReadCounters(),
        Write(2, c),                                                # overwrite a
        Infer([a.center, c.center], fill=False),                    # 6-7
        ClearStats(), ReadCounters(),
        Infer([b.center], fill=False),                              # 8
        ReadCounters(),
        Clear(),
        Infer([b.center, c.center], fill=False),                    # 9-10: cleared
        Infer(walk(case.model, 24, seed=9)),                        # 11-34: the host fills again
        ReadCounters(),
    ]
    r = simulate_cache(case.model, case.net, script, ENTRIES, "linf", case.policy, simulator=simulator,
                       lanes=LANES)
    assert r.mismatches == 0, "\n".join(r.details)
    # what the script implies, independent of the golden model
    assert r.slot[:11].tolist() == [-1, -1, 2, 0, 2, -1, -1, 2, 0, -1, -1]
    assert [(k["hits"], k["misses"]) for k in r.counters[:3]] == [(3, 3), (0, 0), (1, 0)]
    assert r.counters[3]["after"] == 35 and len(r.counters) == 5     # the bench's final read too
    assert r.hit[11:].any() and (r.written[11:] >= 0).any() and (r.written[:11] < 0).all()
    # outputs: an entry's affine map on hits, the full network on misses
    for t, q in {2: a.center, 3: b.center, 4: near(a)}.items():
        entry = {2: a, 0: b}[int(r.slot[t])]
        np.testing.assert_array_equal(r.outputs[t], entry.evaluate(q)[0])
    np.testing.assert_array_equal(r.outputs[7], c.evaluate(c.center)[0])
    full = golden.forward(case.model, np.stack([a.center, b.center, c.center]))
    np.testing.assert_array_equal(r.outputs[[0, 1, 5, 6, 9, 10]], full[[0, 1, 2, 0, 1, 2]])


@pytest.mark.parametrize("simulator", SIMS)
def test_write_meets_inferences_in_flight(cases, simulator):
    """Inputs streamed back to back while an entry write is offered: the inferences whose first
    code was taken before the write's first byte see the old slot, the later ones the new."""
    case = cases["l2"]
    a, b = far_apart(case, 2, seed=13)
    script = [
        Write(0, b),
        Stream([a.center] * 8, write=Write(1, a), after=2),        # 0-7
        ReadCounters(),
        Stream(np.concatenate([[b.center], walk(case.model, 10, seed=14), [a.center]])),   # 8-19
    ]
    r = simulate_cache(case.model, case.net, script, ENTRIES, "l2", case.policy, simulator=simulator,
                       lanes=LANES)
    assert r.mismatches == 0, "\n".join(r.details)
    # offered once inference 2 had started: 0-2 were in flight and missed, the last one hit
    assert not r.hit[:3].any() and r.hit[7] and r.slot[7] == 1
    k = int(np.argmax(r.hit[:8]))
    assert r.hit[k:8].all() and not r.hit[:k].any()
    assert r.slot[8] == 0 and r.slot[19] == 1
    assert (r.written < 0).all()


def random_script(case, seed, length=14):
    """Random operations: host-filled and plain inferences, streams with and without a write
    in flight, writes of entries made along the stream, clears, counter resets and reads."""
    rng = np.random.default_rng(seed)
    path = walk(case.model, 80, seed=seed)
    fmt = SlotFormat(case.model, LANES, case.metric)
    pool = [e for e in (code_cache.make_entry(case.model, case.blocks, c, case.metric) for c in path[::8])
            if fmt.fits(e)]
    pos = 0

    def queries(k):
        nonlocal pos
        q = path[pos:pos + k].copy()
        pos = (pos + k) % (len(path) - 8)
        swap = rng.random(k) < 0.3                    # some exact repeats of stored centers
        for j in np.flatnonzero(swap):
            q[j] = pool[int(rng.integers(len(pool)))].center
        return q

    def write():
        return Write(int(rng.integers(ENTRIES)), pool[int(rng.integers(len(pool)))])

    ops = []
    for _ in range(length):
        r = rng.random()
        if r < 0.3:
            ops.append(Infer(queries(int(rng.integers(2, 6))), fill=bool(rng.random() < 0.7)))
        elif r < 0.45:
            k = int(rng.integers(2, 6))
            ops.append(Stream(queries(k), write=write() if rng.random() < 0.6 else None,
                              after=int(rng.integers(k))))
        elif r < 0.7:
            ops.append(write())
        elif r < 0.8:
            ops.append(Clear())
        elif r < 0.9:
            ops.append(ClearStats())
        else:
            ops.append(ReadCounters())
    return ops + [Infer(queries(3))]


@pytest.mark.parametrize("simulator", SIMS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_scripts(cases, simulator, seed):
    """Random mixes of every operation, on the l2 build: 0 mismatches."""
    case = cases["l2"]
    r = simulate_cache(case.model, case.net, random_script(case, seed), ENTRIES, "l2", case.policy,
                       simulator=simulator, lanes=LANES, seed=seed)
    assert r.mismatches == 0, "\n".join(r.details)
    assert r.hit.any() and (~r.hit).any()


@pytest.mark.parametrize("simulator", SIMS)
def test_bench_reports_a_golden_model_that_differs(cases, simulator):
    """The golden side gets other entries than the RTL: every affected answer and the counters are reported."""
    case = cases["linf"]
    a, b, far = far_apart(case, 3, seed=8)
    # slot 1: same ball, other bias (other outputs); slot 3: the golden entry sits elsewhere
    bad_a = dataclasses.replace(a, layer=dataclasses.replace(a.layer, bias=a.layer.bias + 40 * a.layer.multiplier))
    moved_b = dataclasses.replace(b, center=far.center.copy())
    queries = [a.center, b.center]
    assert not np.array_equal(a.evaluate(a.center), bad_a.evaluate(a.center))    # the precondition
    assert not moved_b.hits(b.center) and not a.hits(b.center)
    script = [Write(1, a, golden=bad_a), Write(3, b, golden=moved_b), Infer(queries, fill=False)]
    r = simulate_cache(case.model, case.net, script, ENTRIES, "linf", case.policy, simulator=simulator,
                       lanes=LANES)
    # inference 0: outputs differ; inference 1: RTL hit slot 3, golden a miss; the final
    # counter read: RTL hits 2, golden 1
    assert r.bad.tolist() == [True, True]
    assert r.mismatches == 3
    assert (r.hits, r.misses, r.expected_hits, r.expected_misses) == (2, 0, 1, 1)
    text = "\n".join(r.details)
    assert "inference 0" in text and "outputs" in text
    assert "inference 1" in text and "cached is 1, expected 0" in text and "counters" in text
    assert r.run_dir is not None          # a run with mismatches is kept for debugging
    shutil.rmtree(r.run_dir, ignore_errors=True)


@pytest.mark.parametrize("simulator", SIMS)
def test_cli_cache_simulator(cases, simulator, tmp_path, capsys):
    """``pwlnet cache DIR --inputs X.npy --onnx M.onnx ... --simulator S --out R.npz``."""
    from pwlnet.cli import main

    case = cases["linf"]
    codes = walk(case.model, 40, seed=4)
    x = golden.dequantize_inputs(case.model, codes)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.npz"
    rc = main(["cache", str(case.model_dir), "--inputs", str(tmp_path / "x.npy"), "--onnx", str(case.onnx),
               "--entries", str(ENTRIES), "--metric", "linf", "--policy", case.policy, "--lanes", str(LANES),
               "--simulator", simulator, "--out", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert f"measured on {simulator}" in text.out and "hit rate" in text.out
    ref = cache_host.run_stream(case.model, case.blocks, golden.quantize_inputs(case.model, x), ENTRIES, "linf",
                                case.policy, slot_format=SlotFormat(case.model, LANES, "linf"))
    assert f"{100 * ref.hit_rate:.2f} %" in text.out
    with np.load(out) as f:
        assert sorted(f.files) == ["hit", "hit_center", "inputs", "outputs"]
        np.testing.assert_array_equal(f["hit"], ref.hit)
        np.testing.assert_array_equal(f["outputs"], ref.outputs * case.model.output_scale)
        np.testing.assert_array_equal(np.isnan(f["hit_center"]).all(axis=1), ~ref.hit)
        np.testing.assert_array_equal(f["hit_center"][ref.hit],
                                      golden.dequantize_inputs(case.model, ref.center[ref.hit]))


@pytest.mark.parametrize("simulator", SIMS)
def test_preload_and_a_slot_past_the_last(cases, simulator):
    """N = 3 (not a power of two) with two preloaded entries: they hit from the start, a write to
    slot 3 is consumed and changes nothing, clear empties the preloaded slots too."""
    case = cases["linf"]
    a, b, c = far_apart(case, 3, seed=10)
    script = [
        Infer([a.center, b.center, c.center], fill=False),   # 0-2: preloaded slots 0 and 1
        Write(3, c),                                         # no slot 3: ignored
        Infer([c.center], fill=False),                       # 3
        ReadCounters(),
        Clear(),
        Infer([a.center], fill=False),                       # 4
        Infer(walk(case.model, 20, seed=12)),                # 5-24: round robin over 3 slots
    ]
    r = simulate_cache(case.model, case.net, script, 3, "linf", "round_robin", simulator=simulator,
                       lanes=LANES, preload=(a, b))
    assert r.mismatches == 0, "\n".join(r.details)
    assert r.slot[:5].tolist() == [0, 1, -1, -1, -1]
    assert set(r.written[5:][r.written[5:] >= 0].tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(r.outputs[0], a.evaluate(a.center)[0])


@pytest.mark.parametrize("simulator", SIMS)
def test_ice40_target_with_run_time_loaded_weights(cases, simulator):
    """SB_MAC16 lanes and SB_SPRAM256KA weights (yosys' cells_sim.v), loaded through ``w_wr``
    before the first input; the slots' programs share that memory with the network."""
    case = cases["linf"]
    codes = walk(case.model, 30, seed=15)
    r = simulate_cache(case.model, case.net, codes, ENTRIES, "linf", case.policy, simulator=simulator,
                       lanes=LANES, target="ice40", weight_memory="ram")
    assert r.mismatches == 0, "\n".join(r.details)
    ref = cache_host.run_stream(case.model, case.blocks, codes, ENTRIES, "linf", case.policy,
                                slot_format=SlotFormat(case.model, LANES, "linf"))
    np.testing.assert_array_equal(r.outputs, ref.outputs)
    assert r.hit.any() and (r.written >= 0).sum() > ENTRIES


def test_arguments_checked(cases):
    """Bad scripts and entries are refused by name before anything is built."""
    case = cases["linf"]
    a, = far_apart(case, 1, seed=1)
    codes = walk(case.model, 4, seed=1)
    with pytest.raises(ValueError, match="entries must be a positive integer, not 0"):
        simulate_cache(case.model, case.net, codes, 0, "linf", simulator="icarus")
    with pytest.raises(ValueError, match="policy must be one of"):
        simulate_cache(case.model, case.net, codes, 4, "linf", "fifo", simulator="icarus")
    with pytest.raises(golden.InputError, match="no input vectors"):
        simulate_cache(case.model, case.net, [Write(0, a)], 4, "linf", simulator="icarus")
    with pytest.raises(ValueError, match="operation 0: slot 4 does not fit"):
        simulate_cache(case.model, case.net, [Write(4, a), Infer(codes)], 4, "linf", simulator="icarus")
    with pytest.raises(TypeError, match="only Infer, Stream, Write"):
        simulate_cache(case.model, case.net, [Infer(codes), "clear"], 4, "linf", simulator="icarus")
    with pytest.raises(ValueError, match="operation 0: after=4 names no inference of the 4 streamed"):
        simulate_cache(case.model, case.net, [Stream(codes, write=Write(0, a), after=4)], 4, "linf",
                       simulator="icarus")
    l2 = code_cache.make_entry(case.model, case.blocks, a.center, "l2")
    with pytest.raises(code_cache.EntryError, match=r"operation 1 \(write to slot 2\): entry metric 'l2'"):
        simulate_cache(case.model, case.net, [Infer(codes), Write(2, l2)], 4, "linf", simulator="icarus")
    with pytest.raises(code_cache.EntryError, match="preloaded entry 0: entry metric 'l2'"):
        simulate_cache(case.model, case.net, codes, 4, "linf", simulator="icarus", preload=(l2,))
    with pytest.raises(golden.InputError, match=r"operation 0: input codes have shape \(6, 2\); expected \(N, 3\)"):
        simulate_cache(case.model, case.net, walk(case.model, 6, seed=2)[:, :2], 4, "linf", simulator="icarus")
    with pytest.raises(golden.InputError, match="outside the 8-bit range"):
        simulate_cache(case.model, case.net, codes + 300, 4, "linf", simulator="icarus")
