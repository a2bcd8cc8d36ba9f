"""One real ECP5 build: a small model on the OrangeCrab 25F (yosys ``synth_ecp5``,
nextpnr-ecp5 and ecppack from YoWASP), the report in the iCEBreaker's format with the
ECP5's resources.  About a minute on this machine, so it is the one board build beside
the iCEBreaker's that ``make test`` runs."""

import json

import pytest

from pwlnet import artifact
from pwlnet.boards.registry import board
from pwlnet.cli import main
from pwlnet.synth import random_model

#: The keys of an iCEBreaker report (tests/test_boards_build.py), which every board's has.
REPORT_KEYS = {"model", "board", "device", "target_mhz", "requested_mhz", "pll", "fmax_mhz", "timing_met",
               "resources", "lanes", "lanes_why", "dsps", "macs_per_second", "cycles_per_inference",
               "ideal_cycles", "inferences_per_second", "baud", "baud_nominal", "baud_error",
               "link_inferences_per_second", "bitstream", "gateware", "cache", "netlist_check", "seed", "tried"}


@pytest.mark.slow
@pytest.mark.board_extra
def test_orangecrab_build(tmp_path, capsys):
    model_dir = artifact.save(random_model(3, [6, 20, 4]), tmp_path / "mlp20")
    assert main(["bitstream", str(model_dir), "--board", "orangecrab", "--target-mhz", "48",
                 "--out", str(tmp_path / "build")]) == 0
    out = tmp_path / "build" / "orangecrab" / "mlp20"
    report = json.loads((out / "report.json").read_text())
    assert capsys.readouterr().out == (out / "report.txt").read_text()
    assert set(report) == REPORT_KEYS
    assert report["board"] == "orangecrab" and report["device"] == "LFE5U-25F-MG285"
    assert report["pll"].startswith("48 MHz -> 48.0000 MHz (CLKI_DIV=")
    # --lanes auto: one MULT18X18D per lane, one lane per output of the widest layer
    assert (report["lanes"], report["dsps"]) == (20, 20)
    assert report["timing_met"] and report["fmax_mhz"] >= report["target_mhz"] == 48.0
    assert set(report["resources"]) == {"LUT", "DSP", "EBR", "IO"}
    assert report["resources"]["DSP"] == {"used": 20, "available": 28}
    assert report["resources"]["LUT"]["available"] == board("orangecrab").count("LUT")
    assert 0 < report["resources"]["EBR"]["used"] <= 56
    assert report["baud_nominal"] == 115_200
    assert report["cycles_per_inference"] >= report["ideal_cycles"] == 6 + 20
    assert (out / "mlp20.bit").stat().st_size > 100_000
