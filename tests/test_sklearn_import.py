"""scikit-learn MLPs exported by skl2onnx, imported and compiled, against onnxruntime.

skl2onnx writes a classifier with two outputs -- the label (ArgMax, ArrayFeatureExtractor
over the class list, Reshape, Cast) and the probabilities (a Softmax, or with two classes
``[1 - sigmoid(z), sigmoid(z)]``; by default as a ZipMap of dictionaries) -- around the
MatMul/Add/Relu core, and casts the input first.  Every model here is trained and exported
in the test itself.
"""

import warnings

import numpy as np
import onnx
import pytest

from pwlnet import artifact, golden
from pwlnet.cli import main
from pwlnet.onnx_import import OnnxImportError, load_onnx

sklearn = pytest.importorskip("sklearn")
skl2onnx = pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402

X = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)


def _labels(classes, seed=1):
    # Learnable labels: a random linear score per class, so the MLP fits them well.
    w = np.random.default_rng(seed).normal(size=(5, len(classes)))
    return np.asarray(classes)[np.argmax(X @ w, axis=1)]


def _export(estimator, path, *, zipmap=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X, estimator._test_targets)
    options = None if zipmap or not hasattr(estimator, "classes_") else {id(estimator): {"zipmap": False}}
    with warnings.catch_warnings():
        # skl2onnx's own use of deprecated onnx and numpy APIs, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model = skl2onnx.to_onnx(estimator, initial_types=[("input", FloatTensorType([None, 5]))],
                                 options=options, target_opset=17)
    onnx.save(model, path)
    return path


def _classifier(classes, hidden=(16,)):
    est = MLPClassifier(hidden_layer_sizes=hidden, max_iter=400, random_state=0)
    est._test_targets = _labels(classes)
    return est


def _ort(path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"input": X})))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("zipmap", (False, True))
@pytest.mark.parametrize("classes", ([0, 1, 2], [3, 5, 9], ["walk", "run", "sit", "lie"]))
def test_multiclass_label_is_the_argmax_and_softmax_is_dropped(tmp_path, classes, zipmap):
    est = _classifier(classes, hidden=(16, 8))
    path = _export(est, tmp_path / "clf.onnx", zipmap=zipmap)
    net = load_onnx(path)
    ref = _ort(path)
    label = ref["label" if not zipmap else "output_label"]
    scores = net(X)
    assert scores.shape == (len(X), len(classes))
    assert np.array_equal(np.asarray(est.classes_)[scores.argmax(axis=1)], label)
    if zipmap:
        assert net.reference_output is None
        probs = np.array([[d[c] for c in est.classes_] for d in ref["output_probability"]])
    else:
        assert net.reference_output == "probabilities"
        probs = ref["probabilities"]
    np.testing.assert_allclose(_softmax(scores), probs, rtol=1e-4, atol=1e-6)
    notices = " | ".join(net.notices)
    assert "is the class label" in notices and "dropped the trailing" in notices
    if classes != [0, 1, 2]:
        assert f"the class list {[c.item() for c in est.classes_]} at that index" in notices
    else:
        assert "the class list" not in notices


@pytest.mark.parametrize("zipmap", (False, True))
def test_two_classes_become_two_scores_with_the_same_argmax(tmp_path, zipmap):
    est = _classifier([0, 1])
    path = _export(est, tmp_path / "bin.onnx", zipmap=zipmap)
    net = load_onnx(path)
    ref = _ort(path)
    scores = net(X)
    assert scores.shape == (len(X), 2)
    np.testing.assert_allclose(scores[:, 0], -scores[:, 1])
    assert np.array_equal(scores.argmax(axis=1), ref["label" if not zipmap else "output_label"])
    p1 = ref["probabilities"][:, 1] if not zipmap else np.array([d[1] for d in ref["output_probability"]])
    np.testing.assert_allclose(1 / (1 + np.exp(-scores[:, 1])), p1, rtol=1e-4, atol=1e-6)
    assert any("imported as the two scores (-z, z)" in n for n in net.notices)


def test_regressor_matches_onnxruntime(tmp_path):
    est = MLPRegressor(hidden_layer_sizes=(12, 6), max_iter=300, random_state=0)
    est._test_targets = X @ np.arange(1, 6, dtype=np.float32)
    path = _export(est, tmp_path / "reg.onnx")
    net = load_onnx(path)
    np.testing.assert_allclose(net(X), _ort(path)["variable"], rtol=1e-4, atol=1e-4)
    assert net.reference_output == "variable"


def test_two_output_regressor_reshaped_across_the_batch_is_refused(tmp_path):
    # skl2onnx 1.20 reshapes a 2-output MLPRegressor's (N, 2) to [-1, 1], i.e. (2N, 1):
    # samples are mixed, and pwlnet says so rather than import it.
    est = MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0)
    est._test_targets = np.stack([X[:, 0], X[:, 1]], axis=1)
    path = _export(est, tmp_path / "reg2.onnx")
    if _ort(path)["variable"].shape != (2 * len(X), 1):
        pytest.skip("this skl2onnx keeps the two outputs per sample")
    with pytest.raises(OnnxImportError, match=r"node 'Reshape' \(Reshape\): reshapes \(N, 2\) to \[-1, 1\]"):
        load_onnx(path)


@pytest.mark.parametrize("output", ("label", "probabilities"))
def test_output_picks_either_view_of_the_same_scores(tmp_path, output):
    path = _export(_classifier([0, 1, 2]), tmp_path / "clf.onnx", zipmap=False)
    net = load_onnx(path, output=output)
    np.testing.assert_allclose(net(X), load_onnx(path)(X))
    assert any("is the class label" in n for n in net.notices) == (output == "label")


def test_output_that_does_not_exist(tmp_path):
    path = _export(_classifier([0, 1, 2]), tmp_path / "clf.onnx", zipmap=False)
    with pytest.raises(OnnxImportError, match=rf"^{path}: the graph has no output 'score'; its outputs are "
                                              r"\['label', 'probabilities'\]$"):
        load_onnx(path, output="score")


def test_compile_with_output_against_onnxruntime(tmp_path, capsys):
    est = _classifier([0, 1, 2], hidden=(16, 8))
    path = _export(est, tmp_path / "clf.onnx", zipmap=False)
    np.save(tmp_path / "calib.npy", X)
    out = tmp_path / "compiled"
    assert main(["compile", str(path), "--out", str(out), "--calib", str(tmp_path / "calib.npy"),
                 "--output", "label"]) == 0
    printed = capsys.readouterr().out
    assert "notice: graph output 'label' is the class label" in printed
    assert "argmax agreement with onnxruntime:" in printed
    model = artifact.load(out)
    _, codes = golden.predict(model, X)
    agreement = np.mean(golden.argmax(codes) == _ort(path)["label"])
    assert model.summary["argmax_agreement"] == pytest.approx(agreement)
    assert agreement >= 0.95


def test_compile_with_an_unknown_output_writes_nothing(tmp_path, capsys):
    path = _export(_classifier([0, 1, 2]), tmp_path / "clf.onnx", zipmap=False)
    np.save(tmp_path / "calib.npy", X)
    out = tmp_path / "compiled"
    assert main(["compile", str(path), "--out", str(out), "--calib", str(tmp_path / "calib.npy"),
                 "--output", "nope"]) == 2
    assert "the graph has no output 'nope'" in capsys.readouterr().err
    assert not out.exists()
