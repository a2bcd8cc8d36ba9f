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
    kinds = [getattr(artifact.load(ROOT / n / "compiled"), "kind", "mlp") for n in NAMES]
    assert kinds.count("binary") >= 2, "two binarized reference models (digits_b64x64, basicmotions_b64x64)"


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
    binary = getattr(stored, "kind", "mlp") == "binary"
    # a binarized model has no requantization; its input codes are act_bits wide
    opts = {"act_bits": stored.input_bits} if binary else {"requant": stored.layers[0].requant}
    again = pcompile.compile_onnx(ROOT / name / "model.onnx", tmp_path / "c", calib=dataset,
                                  log=lambda *_: None, **opts)
    assert getattr(again, "kind", "mlp") == getattr(stored, "kind", "mlp")
    assert np.array_equal(again.input_zero_point, stored.input_zero_point)
    assert np.array_equal(again.input_scale, stored.input_scale)
    if binary:
        assert (again.input_bits, again.code_scale) == (stored.input_bits, stored.code_scale)
        for a, b in zip(again.layers, stored.layers, strict=True):
            assert (a.first, a.in_bits, a.n_in, a.n_out) == (b.first, b.in_bits, b.n_in, b.n_out), name
            for f in ("weight", "threshold", "direction", "table"):
                x, y = getattr(a, f), getattr(b, f)
                assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), \
                    f"{name}: {a.name}.{f} changed"
        return
    for a, b in zip(again.layers, stored.layers, strict=True):
        for f in ("weight", "bias", "multiplier", "shift"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f"{name}: {a.name}.{f} changed"
        assert (a.acc_bits, a.out_scale, a.activation) == (b.acc_bits, b.out_scale, b.activation)
        assert (a.table is None) == (b.table is None)
        if a.table is not None:
            assert a.index_bits == b.index_bits and np.array_equal(a.table, b.table), f"{name}: {a.name} table changed"
