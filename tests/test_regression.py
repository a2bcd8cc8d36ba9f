"""Golden regression vectors: any change to a stored bit fails here.

The vectors were made by tests/regression/generate.py; see its docstring for how and
when to regenerate them (a deliberate change of the arithmetic, explained in the commit).
"""

from pathlib import Path

import numpy as np
import pytest

from pwlnet import artifact, compile as pcompile, golden

ROOT = Path(__file__).parent / "regression"
NAMES = sorted(p.name for p in ROOT.iterdir() if (p / "compiled" / "model.json").exists())


def test_there_are_reference_models():
    assert len(NAMES) >= 3
    widths = {l.n_out for n in NAMES for l in artifact.load(ROOT / n / "compiled").layers}
    assert any(w % 8 for w in widths), "one layer width must not be a multiple of 8"


@pytest.mark.parametrize("name", NAMES)
def test_golden_outputs_unchanged(name):
    model = artifact.load(ROOT / name / "compiled")
    x = np.load(ROOT / name / "inputs.npy")
    codes_in = golden.quantize_inputs(model, x)
    assert np.array_equal(codes_in, np.load(ROOT / name / "codes_in.npy"))
    assert np.array_equal(golden.forward(model, codes_in), np.load(ROOT / name / "codes_out.npy"))


@pytest.mark.parametrize("name", NAMES)
def test_compiler_output_unchanged(name, tmp_path):
    stored = artifact.load(ROOT / name / "compiled")
    dataset = stored.source["calibration"]["dataset"]
    again = pcompile.compile_onnx(ROOT / name / "model.onnx", tmp_path / "c", calib=dataset,
                                  requant=stored.layers[0].requant, log=lambda *_: None)
    assert np.array_equal(again.input_zero_point, stored.input_zero_point)
    assert np.array_equal(again.input_scale, stored.input_scale)
    for a, b in zip(again.layers, stored.layers, strict=True):
        for f in ("weight", "bias", "multiplier", "shift"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f"{name}: {a.name}.{f} changed"
        assert (a.acc_bits, a.out_scale, a.activation) == (b.acc_bits, b.out_scale, b.activation)
        assert (a.table is None) == (b.table is None)
        if a.table is not None:
            assert a.index_bits == b.index_bits and np.array_equal(a.table, b.table), f"{name}: {a.name} table changed"
