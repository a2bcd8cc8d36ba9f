"""The importer fuzzer (:mod:`pwlnet.fuzz`): a slice of the campaign, the harness's own
checks, and regressions for what the fuzzer found outside the importer proper."""

import time

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import pytest

from pwlnet import fuzz, onnx_import
from pwlnet.compile import compile_onnx

from helpers import REGRESSION, graph_model

#: The make-test slice: the built-in base models and two shipped models (one with LERP
#: activations), mutated.  `make fuzz` runs 10 000 cases over all regression models.
SLICE_CASES = 800
SLICE_CORPUS = [REGRESSION / "iris_h10" / "model.onnx", REGRESSION / "basicmotions_lerp_h16x16" / "model.onnx"]


def test_campaign_slice_has_no_crash_hang_wrong_result_or_leftover():
    t0 = time.monotonic()
    counts, findings = fuzz.campaign(SLICE_CASES, seed=0, corpus=SLICE_CORPUS, timeout=30)
    seconds = time.monotonic() - t0
    report = fuzz.format_counts(counts, SLICE_CASES, 0, seconds)
    # No finding at all: no crash (in the importer, the quantizer or the golden model),
    # no hang, no wrong result, no file left behind.
    assert findings == [], report + "\n" + "\n".join(f"case {i}: {o}: {d}" for i, o, d in findings[:5])
    assert sum(counts.values()) == SLICE_CASES
    # Both outcomes are exercised: mutants that still import (and match onnxruntime) and refusals.
    assert counts["accepted"] >= SLICE_CASES // 20, report
    assert counts["refused OnnxImportError"] >= SLICE_CASES // 2, report


def test_cases_are_a_function_of_seed_and_index():
    bases = fuzz.base_models()
    a, b, c = (fuzz.make_case(bases, 5, 17), fuzz.make_case(bases, 5, 17), fuzz.make_case(bases, 5, 18))
    assert a.data == b.data and a.recipe == b.recipe and np.array_equal(a.calib, b.calib)
    assert (a.data, a.recipe) != (c.data, c.recipe)


def test_every_base_model_is_accepted_and_matches_onnxruntime(tmp_path):
    for name, (model, shape) in fuzz.base_models().items():
        calib = np.random.default_rng(0).normal(size=(32, *shape)).astype(np.float32)
        folder = tmp_path / name
        folder.mkdir()
        case = fuzz.Case(0, model.SerializeToString(), calib, [name])
        assert fuzz.run_case(case, folder) == ("accepted", ""), name


# ----------------------------------------------------------------------------- the harness catches


def _one_case_campaign(**kwargs):
    return fuzz.campaign(3, seed=0, **kwargs)


def test_an_exception_of_another_type_is_a_crash(monkeypatch):
    def broken(path, **kwargs):
        raise KeyError("w1")

    monkeypatch.setattr(onnx_import, "load_onnx", broken)
    counts, findings = _one_case_campaign()
    assert counts == {"crash": 3}
    assert "KeyError: 'w1'" in findings[0][2]


def test_an_own_error_that_does_not_name_the_file_is_a_crash(monkeypatch):
    def vague(path, **kwargs):
        raise onnx_import.OnnxImportError("something is wrong")

    monkeypatch.setattr(onnx_import, "load_onnx", vague)
    counts, findings = _one_case_campaign()
    assert counts == {"crash": 3}
    assert "without the file or node" in findings[0][2]


def test_a_case_over_the_time_limit_is_a_hang_and_the_next_case_still_runs(monkeypatch):
    real = onnx_import.load_onnx

    def slow_once(path, **kwargs):
        if "case0" in str(path):   # each case runs in its folder caseN
            time.sleep(60)
        return real(path, **kwargs)

    monkeypatch.setattr(onnx_import, "load_onnx", slow_once)
    counts, findings = fuzz.campaign(2, seed=0, timeout=2)
    assert counts.get("hang") == 1 and sum(counts.values()) == 2
    assert findings[0][:2] == (0, "hang")


@pytest.mark.parametrize("where", ("case folder", "TMPDIR"))
def test_a_file_left_behind_is_a_leftover(monkeypatch, where):
    import pathlib
    import tempfile
    real = onnx_import.load_onnx

    def littering(path, **kwargs):
        folder = pathlib.Path(path).parent if where == "case folder" else pathlib.Path(tempfile.gettempdir())
        (folder / "half-written.tmp").write_bytes(b"x")
        return real(path, **kwargs)

    monkeypatch.setattr(onnx_import, "load_onnx", littering)
    counts, findings = _one_case_campaign()
    assert counts == {"leftover": 3}
    assert "half-written.tmp" in findings[0][2]


def test_command_line_prints_counts_and_exit_status(capsys):
    assert fuzz.main(["import", "--cases", "30", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("importer fuzzing: 30 cases, seed 0, ")
    for label in ("accepted", "refused", "crashes", "wrong results", "hangs", "leftovers"):
        assert f"  {label} " in out
    assert fuzz.main(["import", "--case", "3", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("case 3 of seed 0: ")


def test_command_line_fails_on_a_finding(monkeypatch, capsys):
    monkeypatch.setattr(onnx_import, "load_onnx", lambda path, **kwargs: 1 / 0)
    assert fuzz.main(["import", "--cases", "2", "--seed", "4"]) == 1
    out = capsys.readouterr().out
    assert "crash in case 0: python -m pwlnet.fuzz import --seed 4 --case 0" in out
    assert "ZeroDivisionError" in out


# ----------------------------------------------------------------------------- found by the fuzzer


def test_compile_with_a_batch_axis_fixed_at_export(tmp_path):
    # The float reference ran onnxruntime on all calibration inputs at once, which a
    # graph input of fixed batch size refuses (found by pwlnet.fuzz, seed 1, case 268).
    model = graph_model([oh.make_node("Gemm", ["x", "w"], ["h"], name="g"),
                         oh.make_node("Relu", ["h"], ["y"], name="r")],
                        {"w": np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)},
                        in_shape=(5, 4), out_shape=(5, 3))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(1).normal(size=(48, 4)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    compiled = compile_onnx(path, tmp_path / "out", calib=str(tmp_path / "calib.npy"), log=lambda line: None)
    assert compiled.summary["float_reference"] == "onnxruntime"
    assert compiled.summary["samples"] == 48


# Found by pwlnet.fuzz: a LERP layer whose calibration pre-activations are all equal and
# larger than 2**53 in magnitude kept lo == hi after a widening by 1.0 (1e30 + 1.0 ==
# 1e30), and lerp.interpolate divided by zero (IndexError).  The widening is now relative.
def test_quantizer_lerp_channel_of_constant_huge_pre_activations(tmp_path):
    model, shape = fuzz.base_models()["tanh"]
    b1 = next(t for t in model.graph.initializer if t.name == "b1")
    b1.CopyFrom(onnx.numpy_helper.from_array(np.full(6, 1e30, np.float32), name="b1"))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(32, *shape)))
    compiled = compile_onnx(path, tmp_path / "out", calib=str(tmp_path / "calib.npy"), log=lambda line: None)
    lerp_range = compiled.layers[0].lerp_range
    assert np.all(lerp_range[:, 1] > lerp_range[:, 0])


# Found by pwlnet.fuzz: _calibrated_range cut both flat tails of a Sigmoid channel whose
# whole change is under twice the tolerance, leaving lo > hi, and quantize_dense took the
# log of a negative scale ("math domain error").  Such a channel now keeps its range.
def test_quantizer_sigmoid_after_a_dense_layer(tmp_path):
    model = onnx.load(REGRESSION / "iris_h10" / "model.onnx")
    first = model.graph.node[0].output[0]
    for node in model.graph.node[1:]:
        for k, name in enumerate(node.input):
            if name == first:
                node.input[k] = "sig"
    model.graph.node.insert(1, oh.make_node("Sigmoid", [first], ["sig"], name="sigmoid"))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32))
    compiled = compile_onnx(path, tmp_path / "out", calib=str(tmp_path / "calib.npy"), log=lambda line: None)
    assert compiled.summary["float_reference"] == "onnxruntime" and compiled.summary["argmax_agreement"] >= 0.9
    lerp_range = compiled.layers[0].lerp_range
    assert np.all(lerp_range[:, 1] > lerp_range[:, 0])
