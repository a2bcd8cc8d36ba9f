"""One real iCEBreaker bitstream build (yosys + nextpnr + icepack from YoWASP)."""

import json

import pytest

from pwlnet import artifact
from pwlnet.boards.build import DEVICE_LIMITS, FitError, ProgramError, program
from pwlnet.cli import main
from pwlnet.synth import random_model


@pytest.mark.slow
def test_icebreaker_build(tmp_path, capsys):
    """Through the command line that `make bitstream` runs."""
    model_dir = artifact.save(random_model(3, [16, 32, 10]), tmp_path / "mlp16")
    assert main(["bitstream", str(model_dir), "--board", "icebreaker", "--lanes", "8",
                 "--target-mhz", "48", "40", "--out", str(tmp_path / "build")]) == 0
    out = tmp_path / "build" / "icebreaker" / "mlp16"
    report = json.loads((out / "report.json").read_text())
    assert capsys.readouterr().out == (out / "report.txt").read_text()
    for key in ("board", "device", "target_mhz", "fmax_mhz", "resources", "lanes",
                "cycles_per_inference", "inferences_per_second"):
        assert key in report, key
    assert report["board"] == "icebreaker" and report["device"] == "iCE40UP5K-SG48"
    assert report["lanes"] == 8
    assert report["fmax_mhz"] >= report["target_mhz"] >= 39.0
    assert set(report["resources"]) == set(DEVICE_LIMITS)
    for key, (_cell, _what, count) in DEVICE_LIMITS.items():
        r = report["resources"][key]
        assert r["available"] == count and 0 <= r["used"] <= count
    assert report["resources"]["DSP"]["used"] == 8        # one SB_MAC16 per lane
    assert report["cycles_per_inference"] >= 16 * 4 + 32 * 2
    assert report["inferences_per_second"] == pytest.approx(
        report["target_mhz"] * 1e6 / report["cycles_per_inference"])
    assert (out / report["bitstream"]).stat().st_size > 100_000
    assert "fmax" in (out / "report.txt").read_text()


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
