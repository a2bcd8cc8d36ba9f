"""Every subcommand of ``pwlnet`` with bad arguments (issue 15): a one-line message naming
what is wrong, exit status 2, no traceback, and nothing written or overwritten.

Each row runs ``pwlnet.cli.main`` in this process from a workspace folder holding good and
bad inputs, and compares a snapshot of the workspace (names, sizes, contents, times)
before and after.  Rows must fail before any training, simulation or bitstream build: the
functions that would start one are replaced by ones that fail the test.
(``pwlnet regions`` has its own tests.)
"""

import hashlib
import json
import os
import shutil
import struct
import zipfile

import numpy as np
import pytest

from pwlnet import artifact
from pwlnet.cli import main
from pwlnet.synth import random_model

from helpers import REGRESSION

#: A directory no process can create files in, root included (these tests run as root in
#: CI, where a directory's mode bits do not stop a write): the top of procfs.
UNWRITABLE = "/proc"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("cli-errors")
    m = random_model(11, [4, 8, 3])
    artifact.save(m, ws / "m")
    shutil.copy(REGRESSION / "iris_h10" / "model.onnx", ws / "iris.onnx")
    shutil.copytree(REGRESSION / "iris_h10" / "compiled", ws / "iris")
    shutil.copy(REGRESSION / "basicmotions_h64x64" / "model.onnx", ws / "other.onnx")
    rng = np.random.default_rng(0)
    np.save(ws / "x.npy", rng.normal(size=(6, 4)))
    np.save(ws / "nan.npy", np.array([[1.0, np.nan, 0.0, 0.0]]))
    np.save(ws / "inf.npy", np.array([[1.0, 0.0, -np.inf, 0.0]]))
    np.save(ws / "wide.npy", np.zeros((2, 5)))
    np.save(ws / "str.npy", np.array([["a", "b", "c", "d"]]))
    np.save(ws / "bool.npy", np.ones((2, 4), dtype=bool))
    np.save(ws / "codes_float.npy", np.zeros((2, 4)))
    np.save(ws / "codes_big.npy", np.full((2, 4), 300))
    (ws / "garbage.npy").write_bytes(rng.integers(0, 256, size=300, dtype=np.uint8).tobytes())
    (ws / "garbage.onnx").write_bytes(rng.integers(0, 256, size=300, dtype=np.uint8).tobytes())
    (ws / "afile.txt").write_text("a file where a directory belongs\n")
    (ws / "adir").mkdir()
    (ws / "adir" / "notes.txt").write_text("a folder of the user's\n")
    (ws / "keep.npy").write_bytes(b"an existing output that must survive\n")
    # compiled models that are damaged or from elsewhere
    for name in ("future", "corrupt_npz", "garbage_npz", "no_npz", "bad_json", "list_json", "empty_json",
                 "bad_field"):
        shutil.copytree(ws / "m", ws / name)
    desc = json.loads((ws / "m" / "model.json").read_text())
    (ws / "future" / "model.json").write_text(json.dumps({**desc, "version": artifact.VERSION + 1}))
    npz = (ws / "m" / "arrays.npz").read_bytes()
    (ws / "corrupt_npz" / "arrays.npz").write_bytes(npz[:len(npz) // 2])
    (ws / "garbage_npz" / "arrays.npz").write_bytes(rng.integers(0, 256, size=len(npz), dtype=np.uint8).tobytes())
    (ws / "no_npz" / "arrays.npz").unlink()
    (ws / "bad_json" / "model.json").write_text('{"format": "pwlnet-compiled-model", "vers')
    (ws / "list_json" / "model.json").write_text("[1, 2]")
    (ws / "empty_json" / "model.json").write_text("")
    (ws / "bad_field" / "model.json").write_text(json.dumps({**desc, "input": {**desc["input"], "bits": "eight"}}))
    # a zip whose member is damaged (bit flips inside the compressed data, the CRC then fails)
    shutil.copytree(ws / "m", ws / "flipped_npz")
    with zipfile.ZipFile(ws / "m" / "arrays.npz") as z:
        info = z.getinfo("l0.weight.npy")
    raw = bytearray(npz)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    data = info.header_offset + 30 + name_len + extra_len
    raw[data + info.compress_size - 3] ^= 0x01        # one bit of the last weights
    (ws / "flipped_npz" / "arrays.npz").write_bytes(bytes(raw))
    # data files for `pwlnet train --data`
    good = {"x_train": rng.normal(size=(20, 4)), "y_train": rng.integers(0, 3, 20),
            "x_test": rng.normal(size=(10, 4)), "y_test": rng.integers(0, 3, 10)}
    np.savez(ws / "data_nan.npz", **{**good, "x_train": np.where(np.eye(20, 4) > 0, np.nan, good["x_train"])})
    np.savez(ws / "data_shape.npz", **{**good, "y_train": good["y_train"][:7]})
    np.savez(ws / "data_missing.npz", **{k: v for k, v in good.items() if k != "y_test"})
    np.savez(ws / "data_dtype.npz", **{**good, "x_test": np.array([["a"] * 4] * 10)})
    return ws


def snapshot(root):
    """Every path under ``root`` with its kind, size, content hash and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = None
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def no_long_runs(monkeypatch):
    """Training, simulation and bitstream builds fail the test if a row reaches them."""
    def refuse(what):
        def f(*a, **k):
            raise AssertionError(f"a bad-argument row reached {what}")
        return f
    import pwlnet.boards.build as build
    import pwlnet.cache_run as cache_run
    import pwlnet.host as host
    import pwlnet.sim.engine_sim as engine_sim
    import pwlnet.train as train
    monkeypatch.setattr(train, "train", refuse("training"))
    monkeypatch.setattr(engine_sim, "simulate", refuse("the RTL simulation"))
    monkeypatch.setattr(build, "build_bitstream", refuse("the bitstream build"))
    monkeypatch.setattr(host, "SimTransport", refuse("the simulated board"))
    monkeypatch.setattr(host, "SerialTransport", refuse("the serial port"))
    monkeypatch.setattr(cache_run, "run_cache", refuse("the cache run"))


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:       # argparse refuses before any handler runs
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# (id, arguments, words the message must contain).  "{ws}" is the workspace.
ROWS = [
    # --- train: every bad argument is refused before any training
    ("train-unknown-dataset", "train --dataset nosuch --out t.onnx", ["nosuch", "data set"]),
    ("train-missing-data", "train --data missing.npz --out t.onnx", ["missing.npz", "no such data file"]),
    ("train-data-is-dir", "train --data adir --out t.onnx", ["adir", "directory"]),
    ("train-data-garbage", "train --data garbage.npy --out t.onnx", ["garbage.npy"]),
    ("train-data-nan", "train --data data_nan.npz --out t.onnx", ["data_nan.npz", "x_train", "finite"]),
    ("train-data-shape", "train --data data_shape.npz --out t.onnx", ["data_shape.npz", "y_train"]),
    ("train-data-missing-array", "train --data data_missing.npz --out t.onnx", ["data_missing.npz", "y_test"]),
    ("train-data-dtype", "train --data data_dtype.npz --out t.onnx", ["data_dtype.npz", "x_test"]),
    ("train-out-no-dir", "train --dataset iris --out nodir/t.onnx", ["nodir", "does not exist"]),
    ("train-out-is-dir", "train --dataset iris --out adir", ["adir", "directory"]),
    ("train-out-unwritable", f"train --dataset iris --out {UNWRITABLE}/t.onnx", [UNWRITABLE, "cannot write"]),
    ("train-bad-hidden", "train --dataset iris --hidden a,b --out t.onnx", ["a,b"]),
    ("train-zero-epochs", "train --dataset iris --epochs 0 --out t.onnx", ["--epochs", "positive integer"]),
    ("train-bad-lerp-range", "train --dataset iris --activation lerp --lerp-range=4,-4 --out t.onnx", ["4,-4"]),
    ("train-keeps-existing-out", "train --dataset nosuch --out keep.npy", ["nosuch"]),
    # --- compile
    ("compile-missing-onnx", "compile missing.onnx --out o", ["missing.onnx"]),
    ("compile-onnx-is-dir", "compile adir --out o", ["adir"]),
    ("compile-garbage-onnx", "compile garbage.onnx --out o", ["garbage.onnx"]),
    ("compile-calib-missing", "compile iris.onnx --out o --calib missing.npy", ["missing.npy"]),
    ("compile-calib-nan", "compile iris.onnx --out o --calib nan.npy", ["nan.npy", "finite"]),
    ("compile-calib-inf", "compile iris.onnx --out o --calib inf.npy", ["inf.npy", "finite"]),
    ("compile-calib-shape", "compile iris.onnx --out o --calib wide.npy", ["wide.npy", "(N, 4)"]),
    ("compile-calib-str", "compile iris.onnx --out o --calib str.npy", ["str.npy"]),
    ("compile-calib-garbage", "compile iris.onnx --out o --calib garbage.npy", ["garbage.npy"]),
    ("compile-calib-dir", "compile iris.onnx --out o --calib adir", ["adir"]),
    ("compile-weight-bits", "compile iris.onnx --out o --weight-bits 1", ["between 2 and 16 bits, not 1"]),
    ("compile-out-is-file", "compile iris.onnx --out afile.txt", ["afile.txt", "not a compiled-model directory"]),
    ("compile-out-foreign-dir", "compile iris.onnx --out adir", ["adir", "not a compiled-model directory"]),
    ("compile-out-unwritable", f"compile iris.onnx --out {UNWRITABLE}/o", [UNWRITABLE, "cannot write"]),
    ("compile-keeps-existing-model", "compile iris.onnx --out iris --calib nan.npy", ["nan.npy"]),
    # --- predict
    ("predict-no-model", "predict nodir --inputs x.npy", ["nodir", "not a compiled model directory"]),
    ("predict-model-is-file", "predict afile.txt --inputs x.npy", ["afile.txt"]),
    ("predict-future-version", "predict future --inputs x.npy", ["future", "version 2", "reads version 1"]),
    ("predict-truncated-npz", "predict corrupt_npz --inputs x.npy", ["arrays.npz"]),
    ("predict-garbage-npz", "predict garbage_npz --inputs x.npy", ["arrays.npz"]),
    ("predict-flipped-npz", "predict flipped_npz --inputs x.npy", ["arrays.npz"]),
    ("predict-no-npz", "predict no_npz --inputs x.npy", ["arrays.npz"]),
    ("predict-bad-json", "predict bad_json --inputs x.npy", ["model.json"]),
    ("predict-list-json", "predict list_json --inputs x.npy", ["model.json"]),
    ("predict-empty-json", "predict empty_json --inputs x.npy", ["model.json"]),
    ("predict-bad-field", "predict bad_field --inputs x.npy", ["model.json"]),
    ("predict-inputs-missing", "predict m --inputs missing.npy", ["missing.npy"]),
    ("predict-inputs-dir", "predict m --inputs adir", ["adir"]),
    ("predict-inputs-nan", "predict m --inputs nan.npy", ["nan.npy", "non-finite"]),
    ("predict-inputs-shape", "predict m --inputs wide.npy", ["wide.npy", "expected (N, 4)"]),
    ("predict-inputs-str", "predict m --inputs str.npy", ["str.npy", "numbers"]),
    ("predict-inputs-bool", "predict m --inputs bool.npy", ["bool.npy", "numbers"]),
    ("predict-inputs-garbage", "predict m --inputs garbage.npy", ["garbage.npy"]),
    ("predict-outputs-no-dir", "predict m --inputs x.npy --outputs nodir/y.npy", ["nodir", "does not exist"]),
    ("predict-outputs-is-dir", "predict m --inputs x.npy --codes adir", ["adir", "directory"]),
    ("predict-outputs-unwritable", f"predict m --inputs x.npy --outputs {UNWRITABLE}/y.npy", [UNWRITABLE, "cannot write"]),
    ("predict-outputs-bad-inputs", "predict m --inputs nan.npy --outputs keep.npy", ["nan.npy"]),
    # --- simulate (refused before any Verilator build)
    ("simulate-no-model", "simulate nodir --inputs x.npy", ["nodir"]),
    ("simulate-future-version", "simulate future --inputs x.npy", ["version 2"]),
    ("simulate-truncated-npz", "simulate corrupt_npz --inputs x.npy", ["arrays.npz"]),
    ("simulate-inputs-nan", "simulate m --inputs nan.npy", ["nan.npy", "non-finite"]),
    ("simulate-inputs-shape", "simulate m --inputs wide.npy", ["wide.npy", "(N, 4)"]),
    ("simulate-inputs-str", "simulate m --inputs str.npy", ["str.npy"]),
    ("simulate-inputs-dir", "simulate m --inputs adir", ["adir"]),
    ("simulate-lanes", "simulate m --inputs x.npy --lanes 0", ["lanes", "0"]),
    ("simulate-outputs-no-dir", "simulate m --inputs x.npy --outputs nodir/y.npy", ["nodir", "does not exist"]),
    ("simulate-codes-is-dir", "simulate m --inputs x.npy --codes adir", ["adir", "directory"]),
    ("simulate-outputs-unwritable", f"simulate m --inputs x.npy --outputs {UNWRITABLE}/y.npy", [UNWRITABLE, "cannot write"]),
    # --- cache
    ("cache-no-model", "cache nodir --inputs x.npy --entries 4 --metric linf --out r.npz", ["nodir"]),
    ("cache-future-version", "cache future --inputs x.npy --entries 4 --metric linf --out r.npz", ["version 2"]),
    ("cache-no-onnx", "cache iris --inputs x.npy --entries 4 --metric linf --out r.npz", ["--onnx"]),
    ("cache-onnx-missing", "cache iris --onnx missing.onnx --inputs x.npy --entries 4 --metric linf --out r.npz",
     ["missing.onnx"]),
    ("cache-onnx-other", "cache iris --onnx other.onnx --inputs x.npy --entries 4 --metric linf --out r.npz",
     ["other.onnx", "SHA-256"]),
    ("cache-inputs-nan", "cache iris --onnx iris.onnx --inputs nan.npy --entries 4 --metric linf --out r.npz",
     ["nan.npy", "non-finite"]),
    ("cache-inputs-shape", "cache iris --onnx iris.onnx --inputs wide.npy --entries 4 --metric linf --out r.npz",
     ["wide.npy", "(N, 4)"]),
    ("cache-inputs-str", "cache iris --onnx iris.onnx --inputs str.npy --entries 4 --metric linf --out r.npz",
     ["str.npy"]),
    ("cache-entries-zero", "cache iris --onnx iris.onnx --inputs x.npy --entries 0 --metric linf --out r.npz",
     ["--entries", "positive integer"]),
    ("cache-out-no-dir", "cache iris --onnx iris.onnx --inputs x.npy --entries 4 --metric linf --out nodir/r.npz",
     ["nodir", "does not exist"]),
    ("cache-out-is-dir", "cache iris --onnx iris.onnx --inputs x.npy --entries 4 --metric linf --out adir",
     ["adir", "directory"]),
    ("cache-out-unwritable", f"cache iris --onnx iris.onnx --inputs x.npy --entries 4 --metric linf "
     f"--out {UNWRITABLE}/r.npz", [UNWRITABLE, "cannot write"]),
    # --- run (refused before the board or the simulated board is opened)
    ("run-no-model", "run nodir --inputs x.npy --sim", ["nodir"]),
    ("run-future-version", "run future --inputs x.npy --sim", ["version 2"]),
    ("run-garbage-npz", "run garbage_npz --inputs x.npy --sim", ["arrays.npz"]),
    ("run-inputs-nan", "run m --inputs nan.npy --sim", ["nan.npy", "non-finite"]),
    ("run-inputs-shape", "run m --inputs wide.npy --sim", ["wide.npy", "(N, 4)"]),
    ("run-inputs-str", "run m --inputs str.npy --sim", ["str.npy"]),
    ("run-inputs-missing", "run m --inputs missing.npy --sim", ["missing.npy"]),
    ("run-codes-float", "run m --inputs codes_float.npy --codes --sim", ["codes_float.npy", "integers"]),
    ("run-codes-range", "run m --inputs codes_big.npy --codes --sim", ["codes_big.npy", "8-bit"]),
    ("run-cache-codes", "run m --inputs x.npy --cache --codes --sim", ["--cache", "--codes"]),
    ("run-lanes", "run m --inputs x.npy --sim --lanes 0", ["lanes", "0"]),
    ("run-limit", "run m --inputs x.npy --sim --limit -1", ["limit", "-1"]),
    ("run-outputs-no-dir", "run m --inputs x.npy --sim --outputs nodir/y.npy", ["nodir", "does not exist"]),
    ("run-outputs-is-dir", "run m --inputs x.npy --sim --outputs adir", ["adir", "directory"]),
    ("run-outputs-unwritable", f"run m --inputs x.npy --sim --outputs {UNWRITABLE}/y.npy", [UNWRITABLE, "cannot write"]),
    # --- boards
    ("boards-unknown", "boards nope", ["nope", "unknown board"]),
    # --- bitstream (refused before synthesis)
    ("bitstream-no-model", "bitstream nodir --out b", ["nodir"]),
    ("bitstream-model-is-file", "bitstream afile.txt --out b", ["afile.txt"]),
    ("bitstream-future-version", "bitstream future --out b", ["version 2"]),
    ("bitstream-garbage-npz", "bitstream garbage_npz --out b", ["arrays.npz"]),
    ("bitstream-unknown-board", "bitstream m --board nope --out b", ["--board", "nope"]),
    ("bitstream-lanes", "bitstream m --lanes 0 --out b", ["lanes", "0"]),
    ("bitstream-cache-entries", "bitstream m --cache-entries 999 --out b", ["cache entries", "999"]),
    ("bitstream-too-big", "bitstream other.onnx --board icestick --out b", ["icestick"]),
    ("bitstream-target-mhz", "bitstream m --target-mhz -5 --out b", ["-5"]),
    ("bitstream-batch", "bitstream m --batch -1 --out b", ["batch", "-1"]),
    ("bitstream-seeds", "bitstream m --seeds 0 --out b", ["seeds", "0"]),
    ("bitstream-calib-nan", "bitstream iris.onnx --calib nan.npy --out b", ["nan.npy", "finite"]),
    ("bitstream-out-is-file", "bitstream m --out afile.txt", ["afile.txt"]),
    ("bitstream-out-unwritable", f"bitstream m --out {UNWRITABLE}/b", [UNWRITABLE, "cannot write"]),
]


def _row(r):
    """``(id, args, words, marks)`` of a row of :data:`ROWS` (a tuple or a ``pytest.param``)."""
    if hasattr(r, "marks"):      # a pytest.param (itself a tuple)
        return (*r.values, r.marks)
    return (*r, ())


@pytest.mark.parametrize("args, words", [pytest.param(a, w, id=i, marks=m) for i, a, w, m in map(_row, ROWS)])
def test_bad_arguments(workspace, no_long_runs, args, words, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    code, out, err = run_cli(args.split(), capsys)
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert lines, f"no message on stderr (exit {code}); stdout: {out!r}"
    # argparse's own refusals come after its usage lines; everything else is one line
    usage = lines[0].startswith("usage:")
    assert usage or len(lines) == 1, err
    message = lines[-1]
    assert message.startswith(f"pwlnet {args.split()[0]}: ") or message.startswith("pwlnet "), message
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    assert code == 2, f"exit status {code}: {message}"
    assert snapshot(workspace) == before, "the workspace changed"


def test_every_subcommand_has_rows():
    from pwlnet.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    covered = {_row(r)[1].split()[0] for r in ROWS}
    assert covered == set(sub.choices) - {"regions"}


# --- interrupted writes -------------------------------------------------------------------

def _interrupting_savez(exc):
    """An ``np.save``/``np.savez`` that writes part of the file, then raises ``exc``."""
    def f(file, *args, **kwargs):
        if hasattr(file, "write"):
            file.write(b"PK\x03\x04 half a file")
        else:
            with open(file, "wb") as fh:
                fh.write(b"\x93NUMPY half a file")
        raise exc
    return f


@pytest.mark.parametrize("exc, code", [(KeyboardInterrupt(), 130), (OSError(28, "No space left on device"), 2)],
                         ids=["interrupt", "disk-full"])
@pytest.mark.parametrize("args, patch", [
    ("predict m --inputs x.npy --outputs keep.npy", "save"),
    ("predict m --inputs x.npy --codes new.npy", "save"),
    ("compile iris.onnx --out iris", "savez"),
    ("compile iris.onnx --out fresh", "savez"),
], ids=["predict-overwrite", "predict-new", "compile-overwrite", "compile-new"])
def test_interrupted_write_leaves_nothing(workspace, args, patch, exc, code, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    monkeypatch.setattr(np, patch, _interrupting_savez(exc))
    got, out, err = run_cli(args.split(), capsys)
    assert got == code and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pwlnet {args.split()[0]}: "), err
    assert ("interrupted" in lines[0]) if code == 130 else ("No space left on device" in lines[0])
    assert snapshot(workspace) == before, "the workspace changed"


def test_future_version_message_says_newer(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    code, out, err = run_cli(["predict", "future", "--inputs", "x.npy"], capsys)
    assert code == 2 and "newer pwlnet" in err


def test_a_good_run_still_writes(workspace, tmp_path, capsys):
    # The checks above refuse bad arguments, not good ones.
    assert main(["predict", str(workspace / "m"), "--inputs", str(workspace / "x.npy"),
                 "--outputs", str(tmp_path / "y.npy")]) == 0
    assert np.load(tmp_path / "y.npy").shape == (6, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npy"]


def test_run_on_a_port_that_is_not_there(workspace, capsys, monkeypatch):
    # the real serial transport (the table replaces it): refused with the port named
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    code, out, err = run_cli(["run", "m", "--inputs", "x.npy", "--port", "/nonexistent/ttyUSB9"], capsys)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "cannot open /nonexistent/ttyUSB9" in err
    assert snapshot(workspace) == before
