"""One real iCEBreaker bitstream build (yosys + nextpnr + icepack from YoWASP)."""

import json
from pathlib import Path

import pytest

from pwlnet import artifact
from pwlnet.boards.build import DEVICE_LIMITS, FitError, ProgramError, program
from pwlnet.cli import main
from pwlnet.synth import random_model

from test_sim_netlist import PLAIN_ERRORS


@pytest.mark.slow
def test_icebreaker_build(tmp_path, capsys):
    """Through the command line that `make bitstream VERIFY=16` runs: place and route,
    then the netlist check in the report."""
    model_dir = artifact.save(random_model(3, [16, 32, 10]), tmp_path / "mlp16")
    assert main(["bitstream", str(model_dir), "--board", "icebreaker",
                 "--target-mhz", "48", "40", "--out", str(tmp_path / "build"), "--verify-netlist", "16"]) == 0
    out = tmp_path / "build" / "icebreaker" / "mlp16"
    report = json.loads((out / "report.json").read_text())
    assert capsys.readouterr().out == (out / "report.txt").read_text()
    for key in ("board", "device", "target_mhz", "fmax_mhz", "resources", "lanes",
                "cycles_per_inference", "inferences_per_second"):
        assert key in report, key
    assert report["board"] == "icebreaker" and report["device"] == "iCE40UP5K-SG48"
    # --lanes auto: 8-bit operands and weights in EBR take 16 lanes, two per SB_MAC16
    assert (report["lanes"], report["dsps"]) == (16, 8)
    assert report["lanes_why"] == "two 8x8 lanes per DSP, weights in EBR"
    assert report["macs_per_second"] == pytest.approx(16 * report["target_mhz"] * 1e6)
    assert report["fmax_mhz"] >= report["target_mhz"] >= 39.0
    assert set(report["resources"]) == set(DEVICE_LIMITS)
    for key, (_cell, _what, count) in DEVICE_LIMITS.items():
        r = report["resources"][key]
        assert r["available"] == count and 0 <= r["used"] <= count
    assert report["resources"]["DSP"]["used"] == 8        # one SB_MAC16 per two lanes
    assert report["cycles_per_inference"] >= report["ideal_cycles"] == 2 * 16 + 1 * 32
    assert report["inferences_per_second"] == pytest.approx(
        report["target_mhz"] * 1e6 / report["cycles_per_inference"])
    assert (out / report["bitstream"]).stat().st_size > 100_000
    assert "fmax" in (out / "report.txt").read_text()
    # the synthesized netlist answered INFO, 16 INFERs, the refused frames and the counters
    check = report["netlist_check"]
    frames = 1 + 16 + PLAIN_ERRORS + 3
    assert check["passed"] and (check["frames"], check["inferences"], check["simulator"]) == (frames, 16, "verilator")
    assert (out / report["gateware"] / "top.netlist.v").is_file()
    assert f"  netlist    checked on verilator: {frames} frames (16 inferences)" in (out / "report.txt").read_text()


def test_fit_error_names_the_resource():
    from pwlnet.boards.build import _fit_message, _parse_utilisation
    log = "Info: Device utilisation:\nInfo: \t         ICESTORM_LC:  6001/  5280   113%\n" \
          "Info: \t        ICESTORM_DSP:     8/     8   100%\n"
    util = _parse_utilisation(log)
    assert util["ICESTORM_LC"] == (6001, 5280)
    msg = _fit_message(util, "iCE40UP5K")
    assert "LUT (ICESTORM_LC" in msg and "6001 used of 5280" in msg and "DSP" not in msg
    assert isinstance(FitError(msg), Exception)


def test_program_without_tools(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    bit = tmp_path / "x.bin"
    bit.write_bytes(b"\0")
    with pytest.raises(ProgramError, match="neither iceprog"):
        program("icebreaker", bit)
    with pytest.raises(ProgramError, match="no bitstream"):
        program("icebreaker", tmp_path / "missing.bin")


@pytest.mark.slow
@pytest.mark.board_extra
def test_icebreaker_build_with_cache(tmp_path, capsys):
    """`make bitstream CACHE=16`: the default model with 16 L-inf slots fits the UP5K and
    closes timing at 40 MHz or more; the report names the cache and its cycles."""
    from pwlnet.hw.cached_engine import cached_engine_plan
    from pwlnet.hw.slot_format import SlotFormat

    onnx = Path(__file__).resolve().parents[1] / "boards" / "models" / "basicmotions_h64x64.onnx"
    assert main(["bitstream", str(onnx), "--board", "icebreaker", "--lanes", "8", "--cache-entries", "16",
                 "--cache-metric", "linf", "--target-mhz", "45", "42", "40",
                 "--out", str(tmp_path / "build")]) == 0
    out = tmp_path / "build" / "icebreaker" / "basicmotions_h64x64-cache16-linf"
    report = json.loads((out / "report.json").read_text())
    text = (out / "report.txt").read_text()
    assert capsys.readouterr().out == text
    model = artifact.load(tmp_path / "build" / "icebreaker" / "basicmotions_h64x64" / "model")
    plan = cached_engine_plan(model, 8, 16, "linf")
    image_bytes = SlotFormat(model, 8, "linf").image_bytes
    hit_cycles = plan.program_cycles(plan.first_slot_program)
    assert report["cache"] == {"entries": 16, "metric": "linf", "image_bytes": image_bytes,
                               "hit_cycles": hit_cycles, "miss_cycles": plan.cycles_per_inference,
                               "hits_per_second": pytest.approx(report["target_mhz"] * 1e6 / hit_cycles)}
    assert report["cycles_per_inference"] == plan.cycles_per_inference > hit_cycles
    for key, r in report["resources"].items():
        assert 0 <= r["used"] <= r["available"] == DEVICE_LIMITS[key][2], (key, r)
    assert report["resources"]["DSP"]["used"] == 8 and report["resources"]["SPRAM"]["used"] == 4
    # timing met at the clock the report names, and that clock is 40 MHz or more
    assert report["timing_met"] and report["fmax_mhz"] >= report["target_mhz"] >= 40.0
    assert f"cache      16 entries, linf, {image_bytes}-byte slot images; hit {hit_cycles} cycles" in text
    assert (out / "basicmotions_h64x64-cache16-linf.bin").stat().st_size > 100_000


def test_cache_build_arguments(tmp_path, capsys):
    import argparse

    from pwlnet.boards.build import add_build_arguments, cache_suffix, cli_build
    parser = add_build_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["m", "--cache-entries", "16", "--cache-metric", "l2"])
    assert (args.cache_entries, args.cache_metric) == (16, "l2")
    assert parser.parse_args(["m"]).cache_entries == 0
    assert cache_suffix(16, "l2") == "-cache16-l2" and cache_suffix(0, "linf") == ""
    model_dir = artifact.save(random_model(3, [4, 4, 2]), tmp_path / "tiny")
    args = parser.parse_args([str(model_dir), "--cache-entries", "-1", "--out", str(tmp_path / "b")])
    assert cli_build(args) == 2     # a refusal (1 is a build that failed)
    assert "cache entries must be an integer in 0..256, not -1" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()    # refused before anything was written


def test_report_text_names_the_cache():
    from pwlnet.boards.build import _report_text
    r = {"model": "m", "board": "icebreaker", "device": "iCE40UP5K-SG48", "target_mhz": 48.0, "pll": "p",
         "fmax_mhz": 50.0, "timing_met": True, "lanes": 8, "lanes_why": "given",
         "macs_per_second": 8 * 48e6, "cycles_per_inference": 900, "ideal_cycles": 800,
         "inferences_per_second": 53333.0, "baud": 115200, "link_inferences_per_second": 300.0,
         "resources": {"LUT": {"used": 1, "available": 5280}}, "bitstream": "m.bin",
         "cache": {"entries": 16, "metric": "linf", "image_bytes": 241, "hit_cycles": 30, "miss_cycles": 900,
                   "hits_per_second": 1.6e6}}
    lines = _report_text(r).splitlines()
    assert lines[4] == ("  cache      16 entries, linf, 241-byte slot images; hit 30 cycles, miss 900 cycles "
                        "(1600000 hits/s at the clock)")
    r["cache"] = None
    assert "cache" not in _report_text(r)


def test_seeds_are_tried_until_timing_closes(monkeypatch):
    """--seeds N: at each clock the seeds 1..N in turn, stopping at the first that closes
    timing or that misses by more than 3 %; then the walk goes on as with one seed."""
    from pwlnet.boards import build

    fmax = {(64, 1): 62.5, (64, 2): 63.0, (64, 3): 61.0, (60, 1): 59.0, (60, 2): 60.5}
    calls = []

    def fake_attempt(job, mhz, seed=1):
        calls.append((mhz, seed))
        f = fmax.get((mhz, seed), 50.0)
        return {"target_mhz": float(mhz), "fmax_mhz": f, "timing_met": f >= mhz, "seed": seed}, b"bits"

    monkeypatch.setattr(build, "_attempt", fake_attempt)
    monkeypatch.setattr(build, "_finish", lambda job, result, bits, tried: dict(result, tried=tried))
    job = build._Job(model=None, model_name="m", board="icebreaker", out_dir=None, lanes=8, baud=None,
                     engine=None, name="top", cache_entries=0, cache_metric="linf", seeds=(1, 2, 3))
    result = build._walk_clocks(job, [64, 60])
    # 64: seeds 1, 2, 3 miss by under 3 %, then at 60 seed 1 misses and seed 2 closes.
    assert calls == [(64, 1), (64, 2), (64, 3), (60, 1), (60, 2)]
    assert result["target_mhz"] == 60.0 and result["seed"] == 2
    assert [t["seed"] for t in result["tried"]] == [1, 2, 3, 1, 2]
    calls.clear()
    fmax[(64, 1)] = 59.5                      # a miss by more than 3 %: no other seed there
    build._walk_clocks(job, [64, 60])
    assert calls == [(64, 1), (60, 1), (60, 2)]
