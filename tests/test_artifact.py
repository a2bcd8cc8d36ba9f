"""The compiled-model artifact refuses damaged or foreign directories with a named cause."""

import json

import numpy as np
import pytest

from pwlnet import artifact, synth


@pytest.fixture
def saved(tmp_path):
    return artifact.save(synth.random_model(1, [5, 4, 3]), tmp_path / "m")


def _edit_json(path, fn):
    desc = json.loads((path / "model.json").read_text())
    fn(desc)
    (path / "model.json").write_text(json.dumps(desc))


def test_missing_directory(tmp_path):
    with pytest.raises(artifact.ArtifactError, match="not a compiled model directory"):
        artifact.load(tmp_path / "nothing")


def test_wrong_version(saved):
    _edit_json(saved, lambda d: d.update(version=99))
    with pytest.raises(artifact.ArtifactError, match=r"version 99 was written by a newer pwlnet \(this pwlnet reads "
                                                     r"version 1\); update pwlnet"):
        artifact.load(saved)
    _edit_json(saved, lambda d: d.update(version=0))
    with pytest.raises(artifact.ArtifactError, match="version 0 is not supported"):
        artifact.load(saved)


def test_damaged_files(saved):
    # Found by tests/test_cli_errors.py: these raised zipfile's, numpy's or Python's own errors.
    (saved / "model.json").write_text("[1, 2]")
    with pytest.raises(artifact.ArtifactError, match="not a compiled-model description"):
        artifact.load(saved)


def test_damaged_arrays(saved):
    npz = saved / "arrays.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[:len(good) // 2])                 # truncated: zipfile.BadZipFile
    with pytest.raises(artifact.ArtifactError, match="arrays.npz: unreadable: File is not a zip file"):
        artifact.load(saved)
    np.save(saved / "one.npy", np.zeros(3))                # a single array, not an archive
    (saved / "one.npy").replace(npz)
    with pytest.raises(artifact.ArtifactError, match="not an .npz archive"):
        artifact.load(saved)


def test_missing_array(saved):
    _edit_json(saved, lambda d: d["layers"][1].update(bias="nope"))
    with pytest.raises(artifact.ArtifactError, match="array 'nope' named by layers\\[1\\].bias is missing"):
        artifact.load(saved)


def test_too_narrow_accumulator(saved):
    _edit_json(saved, lambda d: d["layers"][0].update(acc_bits=4))
    with pytest.raises(artifact.ArtifactError, match="layer 0: acc_bits 4 cannot hold the worst case"):
        artifact.load(saved)


def test_weight_out_of_range(saved):
    with np.load(saved / "arrays.npz") as z:
        arrays = dict(z)
    arrays["l0.weight"][0, 0] = 300
    np.savez(saved / "arrays.npz", **arrays)
    with pytest.raises(artifact.ArtifactError, match=r"layer 0: weights outside the 8-bit range \[-128, 127\]"):
        artifact.load(saved)


def test_save_replaces_whole_directory(saved):
    (saved / "stale.txt").write_text("x")
    artifact.save(synth.random_model(2, [5, 2]), saved)
    assert not (saved / "stale.txt").exists()
    assert artifact.load(saved).output_dim == 2
