"""The board benchmark's planning, its cache of finished jobs, its CPU reference and its
arithmetic, without building anything (``make bench`` runs the builds)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pwlnet import artifact, bench_boards as bb
from pwlnet.boards.build import precheck
from pwlnet.boards.registry import board as board_named, board_names


def test_plan_covers_every_board_model_and_sweep_point():
    jobs = bb.plan_jobs()
    boards = {(j.board, j.model) for j in jobs if j.kind == "board"}
    assert boards == ({(b, m) for b in board_names() for m in bb.MODELS}
                      | {(b, m) for m, bs in bb.BINARY.items() for b in bs})
    assert ("icestick", "digits_b64x64") in boards
    # the binarized models' engine configurations are simulated too
    lat_models = {j.model for j in jobs if j.kind == "latency"}
    assert set(bb.BINARY) <= lat_models
    sweep = {(j.board, j.lanes) for j in jobs if j.kind == "sweep"}
    first = artifact.load(bb._model_dir(bb.MODELS[0]) / "compiled")
    auto = {b: precheck(b, first, "auto")[0] for b in bb.SWEEP}
    # the point at a board build's own lane count is that build, not a second place and route
    assert sweep == {(b, p) for b, ps in bb.SWEEP.items() for p in ps if p != auto[b]}
    assert all(auto[b] in ps for b, ps in bb.SWEEP.items())
    # a latency run for each configuration a board builds, none for a board that refuses the model
    lat = {(j.model, j.lanes, j.target) for j in jobs if j.kind == "latency"}
    for m in bb.MODELS:
        model = artifact.load(bb._model_dir(m) / "compiled")
        for b in board_names():
            try:
                lanes, _ = precheck(b, model, "auto")
            except ValueError:
                continue
            assert (m, lanes, board_named(b).target) in lat
    assert len({j.tag for j in jobs}) == len(jobs)


def test_a_board_build_stands_for_its_sweep_point():
    rep = {"lanes": 16, "target_mhz": 56.25, "fmax_mhz": 58.4, "cycles_per_inference": 417, "ideal_cycles": 400}
    done = {bb.Job("board", bb.MODELS[0], "icebreaker"): {"report": rep, "status": "ok", "message": "",
                                                          "seconds": 100.0},
            bb.Job("board", bb.MODELS[1], "icebreaker"): {"report": dict(rep), "status": "ok", "message": "",
                                                          "seconds": 100.0},
            bb.Job("sweep", bb.MODELS[0], "icebreaker", 8, 64): {"report": dict(rep, lanes=8), "status": "ok",
                                                                 "message": "", "seconds": 40.0}}
    rows = bb.sweep_rows(done)
    assert [(r["lanes"], r["mhz"], r["board_build"]) for r in rows] == [(8, 64, False), (16, 56.25, True)]


def test_unknown_model_is_refused_by_name():
    with pytest.raises(ValueError, match="no_such_model"):
        bb._model_dir("no_such_model")


def _record(tmp_path, monkeypatch):
    monkeypatch.setattr(bb, "ROOT", tmp_path)
    src = tmp_path / "hw" / "x.py"
    src.parent.mkdir()
    src.write_text("A = 1\n")
    job = bb.Job("board", "iris_h10", "icebreaker")
    versions = {"amaranth": "0.5.8"}
    rec = {"job": dataclasses.asdict(job), "status": "ok", "sources": {"hw/x.py": bb._hash_file(src)},
           "versions": versions, "model_hash": "m"}
    return src, rec, versions


def test_finished_job_is_reused_only_while_its_sources_model_and_tools_are_unchanged(tmp_path, monkeypatch):
    src, rec, versions = _record(tmp_path, monkeypatch)
    assert bb._still_valid(rec, versions, {"iris_h10": "m"})
    assert not bb._still_valid(rec, {"amaranth": "0.5.9"}, {"iris_h10": "m"})
    assert not bb._still_valid(rec, versions, {"iris_h10": "other"})
    assert not bb._still_valid({**rec, "status": "failed"}, versions, {"iris_h10": "m"})
    assert not bb._still_valid({**rec, "sources": {}}, versions, {"iris_h10": "m"})
    src.write_text("A = 2\n")
    assert not bb._still_valid(rec, versions, {"iris_h10": "m"})
    src.unlink()
    assert not bb._still_valid(rec, versions, {"iris_h10": "m"})


def test_results_store_round_trips_and_survives_a_broken_file(tmp_path):
    store = tmp_path / "results.json"
    bb._save_results(store, {"k": {"status": "ok"}})
    assert bb._load_results(store) == {"k": {"status": "ok"}}
    store.write_text("{ broken")
    assert bb._load_results(store) == {}


def test_torch_reference_computes_what_onnxruntime_computes():
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    d = bb._model_dir("digits_h64x32")
    x = np.load(d / "inputs.npy")[:16].astype(np.float32)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    net = bb._torch_module(d / "model.onnx")
    with torch.inference_mode():
        got = net(torch.from_numpy(x.reshape(len(x), -1))).numpy()
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-5, atol=1e-5)
    times = bb.cpu_times("digits_h64x32", runs=20)
    assert times["onnxruntime"] > 0 and times["torch"] > 0


def test_lerp_model_has_no_torch_reference():
    pytest.importorskip("torch")
    assert bb._torch_module(bb._model_dir("digits_lerp_h32x32") / "model.onnx") is None


def test_board_rows_arithmetic():
    """MAC/s, the multiplier bounds and the latency follow from the report's figures."""
    job = bb.Job("board", "iris_h10", "icebreaker")
    macs = bb._macs("iris_h10")
    report = {"target_mhz": 48.0, "fmax_mhz": 50.0, "timing_met": True, "lanes": 16, "cycles_per_inference": 18.5,
              "ideal_cycles": 14, "inferences_per_second": 48e6 / 18.5, "macs_per_second": 16 * 48e6,
              "resources": {}}
    lat = bb.Job("latency", "iris_h10", lanes=16, simulator="verilator", target="ice40", vectors=64)
    done = {job: {"status": "ok", "message": "", "seconds": 1.0, "report": report},
            lat: {"status": "ok", "message": "", "seconds": 1.0, "report": {"latency_cycles": 53}}}
    (row,) = bb.board_rows(done, ("iris_h10",))
    assert row["mac_s"] == pytest.approx(macs * 48e6 / 18.5)
    assert row["bound_used"] == pytest.approx(18.5 * 16 / macs)
    assert row["bound_device"] == pytest.approx(18.5 * 8 / macs)    # the UP5K's 8 SB_MAC16
    assert row["latency_us"] == pytest.approx(53 / 48.0)
    text = "\n".join(bb._boards_table([row]))
    assert "| iris_h10 | icebreaker | 16 | 48 (50.00) |" in text
    json.dumps(row)


def test_build_is_keyed_by_its_design(tmp_path):
    """The key is the same in another process for the same design, differs for another
    lane count, and a job whose key matches its last record is not built again."""
    import subprocess
    import sys

    job = bb.Job("board", "iris_h10", "icebreaker")
    key = bb._design_key(job, tmp_path)
    other = subprocess.run([sys.executable, "-c", "import sys; from pwlnet import bench_boards as bb; "
                            "print(bb._design_key(bb.Job('board', 'iris_h10', 'icebreaker'), sys.argv[1]))",
                            str(tmp_path / "b")], capture_output=True, text=True, check=True).stdout.strip()
    assert key == other
    assert bb._design_key(bb.Job("sweep", "iris_h10", "icebreaker", 8, 48.0), tmp_path) != key
    # the iCEstick refuses before synthesis: no design, no key
    assert bb._design_key(bb.Job("board", "iris_h10", "icestick"), tmp_path) is None
    previous = {"job": dataclasses.asdict(job), "status": "ok", "message": "", "report": {"x": 1},
                "design_key": key, "versions": bb._versions(), "seconds": 100.0}
    rec = bb.run_job(job, tmp_path, previous)
    assert rec["reused"] and rec["report"] == {"x": 1}
    assert not (tmp_path / "icebreaker").exists()      # nothing was built
