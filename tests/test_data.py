"""Tests of :mod:`pwlnet.data`: shapes, splits, features, streams, and no network."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pwlnet import data

# name: (input_dim, n_classes, n_train, n_test, stream length)
EXPECTED = {
    "iris": (4, 3, 105, 45, 45),
    "digits": (64, 10, 1257, 540, 540),
    # hop 1: a window per sample (basicmotions 100-sample cases, 50-sample windows;
    # daphnet 2112 test samples per sensor, 128-sample windows)
    "basicmotions": (24, 4, 40 * 11, 40 * 11, 40 * 51),
    "daphnet": (12, 3, 3 * 301, 3 * 125, 3 * 1985),
}


def test_names():
    assert data.DATASETS == tuple(EXPECTED)


@pytest.mark.parametrize("name", data.DATASETS)
def test_shapes_and_types(name):
    ds = data.load(name)
    dim, n_classes, n_train, n_test, _ = EXPECTED[name]
    assert ds.name == name
    assert (ds.input_dim, ds.n_classes) == (dim, n_classes)
    assert ds.x_train.shape == (n_train, dim) and ds.x_test.shape == (n_test, dim)
    assert ds.y_train.shape == (n_train,) and ds.y_test.shape == (n_test,)
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert np.all(np.isfinite(ds.x_train)) and np.all(np.isfinite(ds.x_test))
    assert len(ds.feature_names) == dim and len(set(ds.feature_names)) == dim
    # Every class present on both sides of the split.
    assert set(ds.y_train) == set(ds.y_test) == set(range(n_classes))
    assert str(n_train) in ds.description and str(n_test) in ds.description
    assert repr(ds) == (f"Dataset({name!r}, input_dim={dim}, n_classes={n_classes}, "
                        f"train={n_train}, test={n_test})")


@pytest.mark.parametrize("name", data.DATASETS)
def test_cached_and_read_only(name):
    ds = data.load(name)
    assert data.load(name) is ds
    x, y = data.stream(name)
    for arr in (ds.x_train, ds.y_train, ds.x_test, ds.y_test, x, y):
        assert not arr.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        ds.x_train[0, 0] = 1.0


@pytest.mark.parametrize("name", ["iris", "digits"])
def test_stratified_split(name):
    ds = data.load(name)
    counts = np.bincount(ds.y_test)
    total = counts + np.bincount(ds.y_train)
    # Each class keeps its share of the test set to within one sample.
    assert np.all(np.abs(counts - total * data.TEST_FRACTION) <= 1)


def test_class_names():
    assert data.load("iris").class_names == ("setosa", "versicolor", "virginica")
    assert data.load("digits").class_names == tuple("0123456789")
    assert data.load("basicmotions").class_names == ("standing", "walking", "running", "badminton")
    assert data.load("daphnet").class_names == ("ankle", "thigh", "trunk")
    assert data.load("daphnet").feature_names[:4] == (
        "horiz_fwd_mean", "horiz_fwd_std", "horiz_fwd_min", "horiz_fwd_max")


@pytest.mark.parametrize("name", data.DATASETS)
def test_stream(name):
    x, y = data.stream(name)
    ds = data.load(name)
    assert x.shape == (EXPECTED[name][4], ds.input_dim) and x.dtype == np.float32
    assert y.shape == (len(x),) and y.dtype == np.int64
    assert set(y) == set(range(ds.n_classes))
    assert data.stream(name, "test") is data.stream(name)


@pytest.mark.parametrize("name", ["iris", "digits"])
def test_stream_of_tabular_set_is_the_split(name):
    ds = data.load(name)
    x, y = data.stream(name, "test")
    assert np.array_equal(x, ds.x_test) and np.array_equal(y, ds.y_test)
    x, y = data.stream(name, "train")
    assert np.array_equal(x, ds.x_train) and np.array_equal(y, ds.y_train)


@pytest.mark.parametrize("name", ["basicmotions", "daphnet"])
def test_stream_is_smooth(name):
    x, _ = data.stream(name)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    step = np.median(np.linalg.norm(np.diff(x, axis=0), axis=1))
    rng = np.random.default_rng(0)
    spread = np.median(np.linalg.norm(x[rng.permutation(len(x))] - x, axis=1))
    assert step < 0.1 * spread


def test_daphnet_test_windows_are_a_subsequence_of_the_stream():
    # load() hops 16 samples, stream() 1, both starting at the train/test cut.
    ds = data.load("daphnet")
    x, y = data.stream("daphnet")
    for k in range(3):
        sx = x[y == k]
        assert np.array_equal(sx[::16], ds.x_test[ds.y_test == k])


def test_daphnet_train_stream_covers_train_part():
    ds = data.load("daphnet")
    x, y = data.stream("daphnet", "train")
    for k in range(3):
        assert np.array_equal(x[y == k][::16], ds.x_train[ds.y_train == k])


def test_basicmotions_windows_per_case():
    ds = data.load("basicmotions")
    # Eleven consecutive windows per case share a label; cases in file order.
    assert np.all(ds.y_test.reshape(40, 11) == ds.y_test.reshape(40, 11)[:, :1])
    assert list(ds.y_test[::110]) == [0, 2, 1, 3]  # file order: standing, running, walking, badminton


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown data set 'mnist'; choose one of iris, digits, "
                                         r"basicmotions, daphnet"):
        data.load("mnist")
    with pytest.raises(ValueError, match="unknown data set 'Iris'"):
        data.stream("Iris")


def test_unknown_split():
    with pytest.raises(ValueError, match=r"unknown split 'valid'; choose one of train, test"):
        data.stream("iris", "valid")


def test_sliding_windows():
    s = np.arange(20).reshape(2, 10)
    w = data.sliding_windows(s, 4, 3)
    assert w.shape == (3, 2, 4)
    assert np.array_equal(w[1], [[3, 4, 5, 6], [13, 14, 15, 16]])
    assert data.sliding_windows(s, 11, 1).shape == (0, 2, 11)
    with pytest.raises(ValueError, match="must be 2-D"):
        data.sliding_windows(np.arange(5), 2, 1)
    with pytest.raises(ValueError, match="must be positive, not 0 and 1"):
        data.sliding_windows(s, 0, 1)


def test_window_features():
    w = np.array([[[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 0.0]]])
    f = data.window_features(w)
    assert f.dtype == np.float32 and f.shape == (1, 8)
    assert np.allclose(f[0], [3.0, np.sqrt(3.5), 1.0, 6.0, 0, 0, 0, 0])
    assert data.FEATURES == ("mean", "std", "min", "max")


def test_loads_offline_and_quickly():
    # A fresh interpreter, so that nothing is cached, with an audit hook that fails
    # any attempt to resolve a name or open a connection.
    code = textwrap.dedent("""
        import sys, time
        def guard(event, args):
            if event.startswith(("socket.", "urllib.")):
                raise RuntimeError(f"network access attempted: {event} {args}")
        sys.addaudithook(guard)
        t = time.perf_counter()
        from pwlnet import data
        for name in data.DATASETS:
            data.load(name)
            data.stream(name)
        print(time.perf_counter() - t)
    """)
    run = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) < 30  # a few seconds on an idle machine


@pytest.mark.parametrize("name, hop, n", [("basicmotions", 2, 40 * 26), ("daphnet", 4, 3 * 497),
                                          ("daphnet", 128, 3 * 16)])
def test_stream_hop(name, hop, n):
    x, y = data.stream(name, hop=hop)
    assert x.shape == (n, data.load(name).input_dim)
    fine, fine_y = data.stream(name)
    assert data.stream(name, hop=data.STREAM_HOP)[0] is fine
    # A coarser hop takes every hop-th window of each case / sensor of the hop-1 stream.
    per_fine = len(fine) // (40 if name == "basicmotions" else 3)
    per = n // (40 if name == "basicmotions" else 3)
    for part in range(len(fine) // per_fine):
        sub = fine[part * per_fine:(part + 1) * per_fine:hop][:per]
        assert np.array_equal(x[part * per:(part + 1) * per], sub)
        assert np.array_equal(y[part * per:(part + 1) * per], fine_y[part * per_fine:(part + 1) * per_fine:hop][:per])


@pytest.mark.parametrize("name, hop, msg", [
    ("daphnet", 0, "hop must be a positive integer (samples between windows), not 0"),
    ("daphnet", 1.5, "hop must be a positive integer (samples between windows), not 1.5"),
    ("daphnet", True, "hop must be a positive integer (samples between windows), not True"),
    ("basicmotions", 51, "hop must be at most the window length (50 samples for basicmotions), not 51"),
    ("iris", 1, "iris is not a time series: its stream has no hop (got hop=1)"),
])
def test_stream_hop_rejected(name, hop, msg):
    with pytest.raises(ValueError) as e:
        data.stream(name, hop=hop)
    assert str(e.value) == msg


# --- data files -----------------------------------------------------------------------

def _arrays(rng, n=30, d=3, c=3):
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = np.arange(n) % c
    return dict(x_train=x, y_train=y, x_test=x[:10] + 1, y_test=y[:10])


def test_load_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _arrays(rng)
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays, class_names=np.array(["a", "b", "c"]))
    ds = data.load_file(path)
    assert (ds.name, ds.path, ds.input_dim, ds.n_classes) == ("mine", str(path), 3, 3)
    assert ds.class_names == ("a", "b", "c") and ds.feature_names == ("x0", "x1", "x2")
    assert np.array_equal(ds.x_train, arrays["x_train"]) and ds.y_test.dtype == np.int64
    assert not ds.x_train.flags.writeable


@pytest.mark.parametrize("change, msg", [
    (dict(y_test=None), "no array 'y_test' (a data file holds x_train, y_train, x_test, y_test; "
                        "it has x_train, y_train, x_test)"),
    (dict(x_train=np.zeros(5)), "x_train must be a 2-D array of real numbers (n, features), not float64 of shape (5,)"),
    (dict(x_test=np.zeros((10, 4), np.float32)), "x_test has 4 features, x_train 3"),
    (dict(y_train=np.zeros(30)), "y_train must be a 1-D array of integer class indices, not float64 of shape (30,)"),
    (dict(y_train=np.zeros(29, np.int64)), "y_train has 29 labels for 30 rows of x_train"),
    (dict(y_test=-np.ones(10, np.int64)), "y_test holds -1; class indices start at 0"),
    (dict(x_test=np.full((10, 3), np.nan, np.float32)), "x_test[0, 0] is nan; features must be finite"),
    (dict(x_train=np.zeros((0, 3), np.float32), y_train=np.zeros(0, np.int64)), "x_train holds no rows"),
    (dict(class_names=np.array(["a"])), "class_names must be 3 strings, not <U1 of shape (1,)"),
])
def test_load_file_rejects(tmp_path, change, msg):
    arrays = _arrays(np.random.default_rng(0))
    arrays.update(change)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(data.DataFileError) as e:
        data.load_file(path)
    assert str(e.value) == f"{path}: {msg}"


def test_load_file_not_npz(tmp_path):
    with pytest.raises(data.DataFileError, match="no such data file"):
        data.load_file(tmp_path / "missing.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(data.DataFileError, match="must be an .npz archive"):
        data.load_file(tmp_path / "one.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(data.DataFileError, match="not a readable .npz data file"):
        data.load_file(tmp_path / "junk.npz")
