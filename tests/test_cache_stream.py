"""The shipped region-trained Daphnet model: the sensor-rate stream through the RTL cache.

The model (boards/models/daphnet_margin32_h64x64.onnx) was trained with
``pwlnet train --dataset daphnet --hidden 64,64 --epochs 150 --region-margin 32``.  Its
test stream at hop 1 runs through ``pwlnet cache --simulator`` (the cached engine's RTL,
filled by the host on misses, checked against the golden cache in lockstep): the first
1 000 inputs on Verilator, a shorter prefix on Icarus.
"""

import re
from pathlib import Path

import numpy as np
import pytest

from pwlnet import data
from pwlnet.cache_run import run_cache
from pwlnet.cli import main
from pwlnet.compile import compile_onnx

MODEL = Path(__file__).resolve().parents[1] / "boards" / "models" / "daphnet_margin32_h64x64.onnx"
PREFIX = {"verilator": 1000, "icarus": 200}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("daphnet-margin") / "compiled"
    compile_onnx(MODEL, out, log=lambda *_: None)
    return out


def test_shipped_model_records_its_training():
    import json
    import onnx
    meta = {p.key: p.value for p in onnx.load(MODEL).metadata_props}
    assert meta["pwlnet.dataset"] == "daphnet"
    assert json.loads(meta["pwlnet.region_margin"])["gamma"] == 32.0
    assert json.loads(meta["pwlnet.train"])["epochs"] == 150


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_sensor_stream_on_rtl(compiled, tmp_path, capsys, simulator):
    n = PREFIX[simulator]
    x = data.stream("daphnet")[0][:n]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.npz"
    assert main(["cache", str(compiled), "--inputs", str(tmp_path / "x.npy"), "--onnx", str(MODEL),
                 "--entries", "16", "--metric", "linf", "--simulator", simulator, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"RTL and golden model agree on all {n} inferences and the counters" in text
    # the golden cache on the same inputs: the RTL's file holds the same answers
    gold = run_cache(compiled, x, 16, "linf", net=MODEL)
    got = np.load(out)
    np.testing.assert_array_equal(got["hit"], gold.hit)
    np.testing.assert_array_equal(got["outputs"], gold.outputs)
    assert gold.n_argmax_disagree == 0 and gold.n_false_hits == 0
    assert gold.hit_rate > 0.8           # the margin pays on this stream
    measured = re.search(r"measured on \w+ .*?: ([\d.]+) \(hits ([\d.]+), misses ([\d.]+)\)", text)
    assert measured and float(measured[2]) < float(measured[3])
    assert f"engine occupancy: hit {gold.cycles_hit}, network {gold.cycles_full} cycles" in text
