"""Offline data sets with fixed splits, as small feature vectors for pwlnet models.

Four data sets, all read from files that ship inside installed packages, so nothing
is ever downloaded:

``"iris"``
    Fisher's iris from scikit-learn: 4 features, 3 classes, 150 samples.
``"digits"``
    scikit-learn's 8x8 handwritten digits: 64 pixel intensities (0..16), 10 classes,
    1797 samples.
``"basicmotions"``
    aeon's BasicMotions: a smart watch's 3-axis accelerometer and 3-axis gyroscope at
    10 Hz, 10 s per case, 4 activities, official TRAIN/TEST split of 40/40 cases.
``"daphnet"``
    aeon's excerpt S06R02E0 of the Daphnet freezing-of-gait recording: three 3-axis
    accelerometers (ankle, thigh, trunk) at 64 Hz for 110 s.  The excerpt holds no
    freeze-of-gait episode (its label column is all zero), so the task here is
    *sensor placement*: tell from one accelerometer's window whether it is worn at the
    ankle, the thigh or the trunk.

iris and digits are split 70/30, stratified by class, with seed :data:`SEED`.
The two time series sets are cut into windows and each window becomes the
per-channel statistics :data:`FEATURES` (see :func:`window_features`), which keeps
inputs low-dimensional (24 and 12 features) for the hypersphere cache.

:func:`stream` gives the test (or training) split in time order with a small hop
between windows, so that consecutive vectors are close: this is the input sequence on
which a cache's hit rate is measured.

Results are cached in memory; the arrays handed out are read-only so that one
caller cannot corrupt another's copy.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import numbers

import numpy as np

__all__ = [
    "DATASETS",
    "SEED",
    "TEST_FRACTION",
    "STREAM_HOP",
    "FEATURES",
    "Dataset",
    "load",
    "load_file",
    "FILE_ARRAYS",
    "DataFileError",
    "stream",
    "sliding_windows",
    "window_features",
]

#: Names accepted by :func:`load` and :func:`stream`.
DATASETS = ("iris", "digits", "basicmotions", "daphnet")

#: Seed of the stratified iris/digits split.
SEED = 0

#: Fraction held out for testing: stratified for iris/digits, the last part of the
#: recording for daphnet.  basicmotions keeps its official split.
TEST_FRACTION = 0.3

#: Statistics computed per channel and window, in this order (``std`` is the
#: population standard deviation, ``ddof=0``).
FEATURES = ("mean", "std", "min", "max")

_SPLITS = ("train", "test")

#: Default hop of :func:`stream` for the time series sets: one new window per sample.
STREAM_HOP = 1

# BasicMotions: 10 Hz, 100 samples per case.  5 s windows catch several strides or
# badminton swings; a hop of 5 gives 11 windows per case for train and test.
_BM_WINDOW, _BM_HOP = 50, 5
_BM_CLASSES = ("standing", "walking", "running", "badminton")
_BM_CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")

# Daphnet: 64 Hz.  2 s windows span about two strides; train/test windows overlap by
# 7/8 (hop 0.25 s).
_DAPHNET_RATE_HZ = 64
_DP_WINDOW, _DP_HOP = 128, 16
_DP_FILE = ("datasets", "data", "Daphnet_S06R02E0", "S06R02E0.csv")
_DP_LOCATIONS = ("ankle", "thigh", "trunk")
# The CSV calls the thigh sensor "leg"; Daphnet's documentation places it on the thigh.
_DP_COLUMN_PREFIX = {"ankle": "ankle", "thigh": "leg", "trunk": "trunk"}
_DP_AXES = ("horiz_fwd", "vert", "horiz_lateral")


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Dataset:
    """A classification data set with a fixed train/test split.

    Attributes
    ----------
    name : str
        One of :data:`DATASETS`.
    x_train, x_test : numpy.ndarray
        ``float32`` feature vectors, shape ``(n, input_dim)``, in raw units (no
        standardisation; :mod:`pwlnet.train` folds that into the model).
    y_train, y_test : numpy.ndarray
        ``int64`` class indices into :attr:`class_names`, shape ``(n,)``.
    class_names : tuple of str
    feature_names : tuple of str
        One name per input column.
    description : str
        Source, units, windowing, features and split, in words.
    path : str or None
        The file a data set of one's own was read from (:func:`load_file`).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    feature_names: tuple
    description: str
    path: str | None = None

    @property
    def input_dim(self) -> int:
        """Number of features per sample."""
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def __repr__(self):
        return (f"Dataset({self.name!r}, input_dim={self.input_dim}, n_classes={self.n_classes}, "
                f"train={len(self.y_train)}, test={len(self.y_test)})")


def sliding_windows(series, length: int, hop: int) -> np.ndarray:
    """Cut a multichannel series into windows.

    Parameters
    ----------
    series : array_like, shape (channels, T)
    length : int
        Window length in samples.
    hop : int
        Distance between window starts.  Windows start at ``0, hop, 2*hop, ...`` and
        only whole windows are kept, so a tail shorter than ``length`` is dropped.

    Returns
    -------
    numpy.ndarray, shape (n_windows, channels, length)
    """
    series = np.asarray(series)
    if series.ndim != 2:
        raise ValueError(f"series must be 2-D (channels, time), not shape {series.shape}")
    if length < 1 or hop < 1:
        raise ValueError(f"window length and hop must be positive, not {length} and {hop}")
    if series.shape[1] < length:
        return np.empty((0, series.shape[0], length), dtype=series.dtype)
    views = np.lib.stride_tricks.sliding_window_view(series, length, axis=1)
    return views[:, ::hop].transpose(1, 0, 2)


def window_features(windows) -> np.ndarray:
    """Per-channel statistics :data:`FEATURES` of each window.

    Parameters
    ----------
    windows : array_like, shape (n, channels, length)

    Returns
    -------
    numpy.ndarray, float32, shape (n, channels * len(FEATURES))
        Channel-major: ``[c0_mean, c0_std, c0_min, c0_max, c1_mean, ...]``.
        Computed in float64, rounded once to float32.
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"windows must be 3-D (n, channels, length), not shape {w.shape}")
    stats = np.stack([w.mean(axis=2), w.std(axis=2), w.min(axis=2), w.max(axis=2)], axis=2)
    return stats.reshape(len(w), -1).astype(np.float32)


def _feature_names(channels) -> tuple:
    return tuple(f"{c}_{s}" for c in channels for s in FEATURES)


def _frozen(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def _check_split(split):
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(_SPLITS)}")


# --- iris, digits ------------------------------------------------------------------

def _sklearn_raw(name):
    from sklearn import datasets as skd

    bunch = skd.load_iris() if name == "iris" else skd.load_digits()
    class_names = tuple(str(c) for c in bunch.target_names)
    return bunch.data, bunch.target.astype(np.int64), class_names, tuple(bunch.feature_names)


def _load_sklearn(name) -> Dataset:
    from sklearn.model_selection import train_test_split

    x, y, class_names, feature_names = _sklearn_raw(name)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x.astype(np.float32), y, test_size=TEST_FRACTION, stratify=y, random_state=SEED)
    if name == "iris":
        what = ("Fisher's iris (scikit-learn load_iris): sepal and petal length and width in cm, "
                "3 species, 150 samples.")
    else:
        what = ("Handwritten digits (scikit-learn load_digits): 8x8 images flattened row by row, "
                "pixel intensities 0..16, 10 classes, 1797 samples.")
    desc = (f"{what} Split: stratified by class, {TEST_FRACTION:.0%} test, random_state={SEED}: "
            f"{len(y_tr)} train / {len(y_te)} test, {x.shape[1]} features. "
            f"The stream is the test set in its stored order.")
    return Dataset(name, *_frozen(x_tr, y_tr, x_te, y_te), class_names, feature_names, desc)


# --- basicmotions ------------------------------------------------------------------

@functools.cache
def _basicmotions_cases(split):
    """Raw cases of one official split: ``(x (n, 6, 100) float64, y (n,) int64)``."""
    # aeon reads its own shipped .ts files here (aeon/datasets/data/BasicMotions);
    # this loader has no download path.  Imported lazily: aeon.datasets is slow to import.
    from aeon.datasets import load_basic_motions

    x, labels = load_basic_motions(split=split.upper(), return_type="numpy3D")
    unknown = sorted(set(labels) - set(_BM_CLASSES))
    if unknown:
        raise ValueError(f"BasicMotions {split} split holds unexpected labels {unknown}")
    y = np.array([_BM_CLASSES.index(label) for label in labels], dtype=np.int64)
    return np.asarray(x, dtype=np.float64), y


def _windowed_cases(split, hop):
    x, y = _basicmotions_cases(split)
    feats = [window_features(sliding_windows(case, _BM_WINDOW, hop)) for case in x]
    per_case = len(feats[0])
    return np.concatenate(feats), np.repeat(y, per_case)


def _load_basicmotions() -> Dataset:
    x_tr, y_tr = _windowed_cases("train", _BM_HOP)
    x_te, y_te = _windowed_cases("test", _BM_HOP)
    desc = (f"BasicMotions (aeon, UEA archive): smart watch 3-axis accelerometer (acc_*) and "
            f"3-axis gyroscope (gyro_*) at 10 Hz, 10 s (100 samples) per case, 4 activities "
            f"({', '.join(_BM_CLASSES)}). Official TRAIN/TEST split of 40/40 cases. "
            f"Each case is cut into windows of {_BM_WINDOW} samples with hop {_BM_HOP} "
            f"({(100 - _BM_WINDOW) // _BM_HOP + 1} per case), every window labelled with its "
            f"case's activity: {len(y_tr)} train / {len(y_te)} test windows. Features per "
            f"channel and window: {', '.join(FEATURES)} (population std) -> "
            f"{len(_BM_CHANNELS) * len(FEATURES)} features. The stream walks the test cases in "
            f"file order, by default with hop {STREAM_HOP} (a window per sample).")
    return Dataset("basicmotions", *_frozen(x_tr, y_tr, x_te, y_te), _BM_CLASSES,
                   _feature_names(_BM_CHANNELS), desc)


# --- daphnet -----------------------------------------------------------------------

@functools.cache
def _daphnet_recording():
    """The recording as float64 ``(9, T)`` in mg, rows ordered location-major."""
    path = importlib.resources.files("aeon").joinpath(*_DP_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the installed aeon no longer ships the Daphnet S06R02E0 "
            f"excerpt (deprecated in aeon 1.6, removal announced for 1.7); install aeon<1.7")
    with path.open() as f:
        header = f.readline().strip().split(",")
        wanted = [f"{_DP_COLUMN_PREFIX[loc]}_{axis}" for loc in _DP_LOCATIONS for axis in _DP_AXES]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise ValueError(f"{path}: expected columns {missing} in header {header}")
        # Read with numpy rather than aeon's loader: that loader is deprecated (it would
        # raise a FutureWarning) and parses the timestamps, which we do not need.
        cols = [header.index(c) for c in wanted]
        data = np.loadtxt(f, delimiter=",", usecols=cols, dtype=np.float64, ndmin=2)
    return data.T


def _daphnet_parts(split):
    rec = _daphnet_recording()
    # Time-contiguous split: overlapping windows of one recording are near-duplicates,
    # so a random split would leak; the boundary is cut before windowing.
    cut = int(round(rec.shape[1] * (1 - TEST_FRACTION)))
    return rec[:, :cut] if split == "train" else rec[:, cut:]


def _daphnet_windows(split, hop):
    part = _daphnet_parts(split)
    xs, ys = [], []
    for k, _ in enumerate(_DP_LOCATIONS):
        feats = window_features(sliding_windows(part[3 * k:3 * k + 3], _DP_WINDOW, hop))
        xs.append(feats)
        ys.append(np.full(len(feats), k, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _load_daphnet() -> Dataset:
    x_tr, y_tr = _daphnet_windows("train", _DP_HOP)
    x_te, y_te = _daphnet_windows("test", _DP_HOP)
    n = _daphnet_recording().shape[1]
    cut = int(round(n * (1 - TEST_FRACTION)))
    desc = (f"Daphnet freezing of gait, excerpt S06R02E0 shipped with aeon: three 3-axis "
            f"accelerometers (ankle, thigh, trunk; axes {', '.join(_DP_AXES)}; mg) at "
            f"{_DAPHNET_RATE_HZ} Hz, {n} samples ({n / _DAPHNET_RATE_HZ:.0f} s: standing, then "
            f"walking with turns). The excerpt has no freeze-of-gait episode (its label column "
            f"is all zero) and no out-of-experiment samples, so the task is sensor placement: "
            f"classify one accelerometer's window as {', '.join(_DP_LOCATIONS)}. Time-contiguous "
            f"split cut before windowing: samples [0, {cut}) train, [{cut}, {n}) test. Windows of "
            f"{_DP_WINDOW} samples (2 s) with hop {_DP_HOP}, one per sensor: {len(y_tr)} train / "
            f"{len(y_te)} test. Features per axis and window: {', '.join(FEATURES)} "
            f"(population std) -> {len(_DP_AXES) * len(FEATURES)} features. The stream is each "
            f"sensor's part in time order, by default with hop {STREAM_HOP} (a window per sample), "
            f"ankle then thigh then trunk.")
    return Dataset("daphnet", *_frozen(x_tr, y_tr, x_te, y_te), _DP_LOCATIONS,
                   _feature_names(_DP_AXES), desc)


# --- a data set of one's own ---------------------------------------------------------

#: Arrays :func:`load_file` requires in the ``.npz``.
FILE_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class DataFileError(ValueError):
    """A data file that is missing, unreadable, or holds missing or malformed arrays."""


def _file_array(path, z, key):
    if key not in z.files:
        raise DataFileError(f"{path}: no array {key!r} (a data file holds {', '.join(FILE_ARRAYS)}; "
                            f"it has {', '.join(z.files) or 'none'})")
    try:
        return z[key]
    except ValueError as e:     # an object array (pickle) or a damaged member
        raise DataFileError(f"{path}: array {key!r} cannot be read: {e}") from None


def load_file(path) -> Dataset:
    """A data set of one's own from an ``.npz`` holding :data:`FILE_ARRAYS`.

    ``x_train`` and ``x_test`` are float feature vectors ``(n, d)`` (the same ``d``,
    finite); ``y_train`` and ``y_test`` integer class indices ``0 .. C-1`` (``(n,)``, as
    many as rows of the matching ``x``).  Optional ``class_names`` and
    ``feature_names`` (string arrays of length ``C`` and ``d``) name them; otherwise
    they are ``class0, ...`` and ``x0, ...``.  The test split is also the data set's
    stream, in stored order.

    Raises
    ------
    DataFileError
        Naming the file and the array that is missing or malformed, and what was
        expected.
    """
    from pathlib import Path
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory, not a data file")
    if not path.is_file():
        raise DataFileError(f"{path}: no such data file")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataFileError(f"{path}: not a readable .npz data file: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataFileError(f"{path}: a data file must be an .npz archive of {', '.join(FILE_ARRAYS)}, "
                            f"not a single array")
    with z:
        arrays = {k: _file_array(path, z, k) for k in FILE_ARRAYS}
        names = {k: _file_array(path, z, k) if k in z.files else None for k in ("class_names", "feature_names")}
    dim = None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise DataFileError(f"{path}: x_{split} must be a 2-D array of real numbers (n, features), "
                                f"not {x.dtype} of shape {x.shape}")
        if len(x) == 0:
            raise DataFileError(f"{path}: x_{split} holds no rows")
        if not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))[0]
            raise DataFileError(f"{path}: x_{split}[{bad[0]}, {bad[1]}] is {x[tuple(bad)]}; features must be finite")
        if dim is not None and x.shape[1] != dim:
            raise DataFileError(f"{path}: x_test has {x.shape[1]} features, x_train {dim}")
        dim = x.shape[1]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataFileError(f"{path}: y_{split} must be a 1-D array of integer class indices, "
                                f"not {y.dtype} of shape {y.shape}")
        if len(y) != len(x):
            raise DataFileError(f"{path}: y_{split} has {len(y)} labels for {len(x)} rows of x_{split}")
        if y.min() < 0:
            raise DataFileError(f"{path}: y_{split} holds {int(y.min())}; class indices start at 0")
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    if n_classes < 2:
        raise DataFileError(f"{path}: the labels name only one class")
    for key, n, default in (("class_names", n_classes, "class"), ("feature_names", dim, "x")):
        v = names[key]
        if v is None:
            names[key] = tuple(f"{default}{i}" for i in range(n))
        elif v.ndim != 1 or len(v) != n or v.dtype.kind not in "US":
            raise DataFileError(f"{path}: {key} must be {n} strings, not {v.dtype} of shape {v.shape}")
        else:
            names[key] = tuple(str(s) for s in v)
    x_tr, x_te = (arrays[k].astype(np.float32) for k in ("x_train", "x_test"))
    y_tr, y_te = (arrays[k].astype(np.int64) for k in ("y_train", "y_test"))
    desc = (f"Data from {path}: {len(y_tr)} train / {len(y_te)} test rows, {dim} features, "
            f"{n_classes} classes. The stream is the test split in stored order.")
    return Dataset(path.stem, *_frozen(x_tr, y_tr, x_te, y_te), names["class_names"], names["feature_names"],
                   desc, path=str(path))


# --- public ------------------------------------------------------------------------

def load(name: str) -> Dataset:
    """Load a data set by name, with its fixed train/test split.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.

    Returns
    -------
    Dataset
        Cached: repeated calls return the same object, whose arrays are read-only.

    Raises
    ------
    ValueError
        For a name not in :data:`DATASETS`.
    """
    _check_name(name)
    return _load(name)


def stream(name: str, split: str = "test", hop: int | None = None) -> tuple:
    """One split's feature vectors in arrival order, for measuring a cache.

    For the time series sets the window slides by ``hop`` samples, by default 1: a new
    feature vector at every new sensor sample, the rate at which a sensor node
    re-classifies (basicmotions 10 Hz, daphnet 64 Hz), so consecutive vectors are
    close.  Each case (basicmotions) or sensor (daphnet) is streamed whole before the
    next.  For iris and digits the stream is the split itself in stored order (no hop).

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    split : {"test", "train"}
    hop : int, optional
        Samples between window starts (time series sets only; default
        :data:`STREAM_HOP`, 1).

    Returns
    -------
    x : numpy.ndarray, float32, shape (n, input_dim)
    y : numpy.ndarray, int64, shape (n,)
        Read-only; cached, so repeated calls return the same arrays.
    """
    _check_name(name)
    _check_split(split)
    if name in ("iris", "digits"):
        if hop is not None:
            raise ValueError(f"{name} is not a time series: its stream has no hop (got hop={hop!r})")
    else:
        if hop is None:
            hop = STREAM_HOP
        if isinstance(hop, bool) or not isinstance(hop, numbers.Integral) or hop < 1:
            raise ValueError(f"hop must be a positive integer (samples between windows), not {hop!r}")
        window = _BM_WINDOW if name == "basicmotions" else _DP_WINDOW
        if hop > window:
            raise ValueError(f"hop must be at most the window length ({window} samples for {name}), not {hop}")
        hop = int(hop)
    return _stream(name, split, hop)


# The caches sit behind the public functions so that every spelling of a call
# (positional, keyword, defaulted) reaches the same entry.

@functools.cache
def _load(name):
    if name in ("iris", "digits"):
        return _load_sklearn(name)
    if name == "basicmotions":
        return _load_basicmotions()
    return _load_daphnet()


@functools.cache
def _stream(name, split, hop):
    if name in ("iris", "digits"):
        ds = _load(name)
        return (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    if name == "basicmotions":
        x, y = _windowed_cases(split, hop)
    else:
        x, y = _daphnet_windows(split, hop)
    return _frozen(x, y)
