"""Seeded fuzzing of the ONNX importer: every bad file a clear error, never a crash.

pwlnet promises no silent wrong result.  This module measures that promise for the path
from an ONNX file to a compiled model: it mutates valid models, runs each mutant through
:func:`pwlnet.onnx_import.load_onnx`, :func:`pwlnet.compile.compile_onnx` (quantization
on calibration inputs) and the golden model, and sorts every case into one outcome:

``accepted``
    Import, compile and predict succeeded, and the imported network's float outputs agree
    with onnxruntime's on the calibration inputs (when onnxruntime is installed and can
    run the model; a dropped trailing Softmax is compared by argmax, imported LERP tables
    not at all, they approximate by design).
``refused``
    One of pwlnet's own error types (:data:`OWN_ERRORS`) whose message names the file,
    and the node where the error has one.  Counted per error type.
``crash``
    Any other exception, a pwlnet error that names neither the file nor its node, or
    the worker process dying (a segmentation fault in a C extension).  The detail starts
    with the stage it happened in: ``[import]``, ``[compile]`` or ``[predict]``.
``wrong``
    Accepted, but the network computes something else than onnxruntime does.
``hang``
    The case did not finish within the time limit; the worker is killed and restarted.
``leftover``
    A file was left behind: each case runs in a fresh directory (also the current
    directory and ``TMPDIR`` of the worker) holding only the model and the calibration
    inputs; afterwards it must hold exactly those, unchanged, plus the compiled model
    directory if the case was accepted.

A case is a pure function of ``(seed, index)`` and the base models, so any finding is
reproduced with ``python -m pwlnet.fuzz import --seed S --case K`` (which prints the
traceback).

Mutations (:data:`MUTATIONS`) act on the model proto -- removed, duplicated, reordered or
renamed nodes, values and initializers, wrong shapes and dtypes, NaN/Inf, huge and tiny
weights, bad, unknown and mistyped attributes, unknown ops and domains, cycles, changed
graph inputs and outputs, opsets and IR versions, inserted ops -- and a few act on the
serialized bytes (truncation, flipped bytes, random bytes).  The base models are small
MLPs built here in every spelling the importer reads (Gemm, MatMul + Add, BatchNorm,
Flatten, torch's ``Shape ... Reshape`` chain, Constant weights, a Tanh, a Softmax, and
skl2onnx's classifiers with label and probabilities outputs), plus any ``.onnx`` files
given with ``--corpus``.

Command line: ``python -m pwlnet.fuzz import --cases N --seed S`` prints the outcome counts
and exits with status 1 if there was any crash, wrong result, hang or leftover.

``python -m pwlnet.fuzz link --frames N --seed S`` fuzzes the host link instead: random,
truncated, corrupted and oversized frames mixed with valid ones on the simulated board
under Verilator (:mod:`pwlnet.sim.link_fuzz`); it prints the counts and exits with status
1 on any hang or any reply that differs from the protocol's reference.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import pathlib
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh

from . import artifact, golden, onnx_import
from .artifact import ArtifactError
from .compile import CalibrationError
from .golden import InputError
from .ir import IRError
from .onnx_import import OnnxImportError
from .quantize import QuantizeError

__all__ = ["OWN_ERRORS", "FAILURES", "MUTATIONS", "Case", "base_models", "load_corpus", "make_case",
           "run_case", "campaign", "format_counts", "main"]

#: pwlnet's own error types: a refusal with one of these (naming the file) is a good outcome.
OWN_ERRORS = (OnnxImportError, IRError, QuantizeError, CalibrationError, ArtifactError, InputError)

#: Outcomes that make a campaign fail.
FAILURES = ("crash", "wrong", "hang", "leftover")

#: IR version written into the base models: one that onnxruntime reads.
_IR_VERSION = 8
_CALIB_SAMPLES = 48


class Case:
    """One fuzz case: the file's bytes, the calibration inputs and what was done to make it.

    Parameters
    ----------
    index : int
        The case's number in its campaign.
    data : bytes
        The ONNX file's content.
    calib : numpy.ndarray
        Float calibration inputs ``(N, *input_shape)`` of the base model.
    recipe : list of str
        The base model's name, then one entry per mutation applied.
    """

    def __init__(self, index, data, calib, recipe):
        self.index = index
        self.data = data
        self.calib = calib
        self.recipe = recipe


# --------------------------------------------------------------------------- base models


def _vi(name, dims, elem=onnx.TensorProto.FLOAT):
    return oh.make_tensor_value_info(name, elem, list(dims))


def _model(name, nodes, inits, in_shape, n_out, opset=13):
    graph = oh.make_graph(nodes, name, [_vi("x", ("N", *in_shape))], [_vi("y", ("N", n_out))],
                          [onh.from_array(np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f"
                                          else np.asarray(v), name=k) for k, v in inits.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = _IR_VERSION
    return model


def base_models(seed=0):
    """Small valid MLPs in the spellings the importer reads: ``{name: (model, input shape)}``."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.normal(size=shape) / math.sqrt(shape[0])

    out = {}
    out["gemm"] = (_model("gemm", [
        oh.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        oh.make_node("Relu", ["h"], ["r"], name="relu1"),
        oh.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1, alpha=0.5, beta=2.0)],
        {"w1": w(8, 4), "b1": w(8), "w2": w(3, 8), "b2": w(3)}, (4,), 3), (4,))
    out["matmul_add"] = (_model("matmul_add", [
        oh.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        oh.make_node("Add", ["m1", "b1"], ["h"], name="add1"),
        oh.make_node("Relu", ["h"], ["r"], name="relu1"),
        oh.make_node("MatMul", ["r", "w2"], ["m2"], name="mm2"),
        oh.make_node("Add", ["b2", "m2"], ["y"], name="add2")],
        {"w1": w(5, 6), "b1": w(6), "w2": w(6, 2), "b2": w(2)}, (5,), 2, opset=17), (5,))
    out["batchnorm"] = (_model("batchnorm", [
        oh.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        oh.make_node("BatchNormalization", ["h", "g", "be", "mu", "var"], ["n"], name="bn", epsilon=1e-5),
        oh.make_node("Relu", ["n"], ["r"], name="relu1"),
        oh.make_node("Dropout", ["r"], ["d"], name="drop"),
        oh.make_node("Gemm", ["d", "w2"], ["y"], name="fc2")],
        {"w1": w(4, 6), "b1": w(6), "g": rng.uniform(0.5, 2, 6), "be": w(6), "mu": w(6),
         "var": rng.uniform(0.5, 2, 6), "w2": w(6, 3)}, (4,), 3, opset=11), (4,))
    out["flatten"] = (_model("flatten", [
        oh.make_node("Flatten", ["x"], ["f"], name="flat", axis=1),
        oh.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1"),
        oh.make_node("Relu", ["h"], ["r"], name="relu1"),
        oh.make_node("Mul", ["r", "s"], ["sc"], name="scale"),
        oh.make_node("Gemm", ["sc", "w2", "b2"], ["y"], name="fc2")],
        {"w1": w(6, 5), "b1": w(5), "s": rng.uniform(0.5, 2, 5), "w2": w(5, 4), "b2": w(4)}, (2, 3), 4), (2, 3))
    out["view"] = (_model("view", [   # torch's x.view(x.size(0), -1)
        oh.make_node("Shape", ["x"], ["shp"], name="shape"),
        oh.make_node("Gather", ["shp", "zero"], ["n"], name="gather", axis=0),
        oh.make_node("Unsqueeze", ["n", "axes"], ["nv"], name="unsq"),
        oh.make_node("Concat", ["nv", "minus1"], ["target"], name="concat", axis=0),
        oh.make_node("Reshape", ["x", "target"], ["f"], name="reshape"),
        oh.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1"),
        oh.make_node("Relu", ["h"], ["y"], name="relu_out")],
        {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
         "w1": w(6, 3), "b1": w(3)}, (3, 2), 3), (3, 2))
    out["constants"] = (_model("constants", [
        oh.make_node("Constant", [], ["w1"], name="c_w1", value=onh.from_array(w(4, 5).astype(np.float32))),
        oh.make_node("Constant", [], ["b1"], name="c_b1", value_floats=[float(v) for v in w(5)]),
        oh.make_node("MatMul", ["x", "w1"], ["m"], name="mm1"),
        oh.make_node("Sub", ["m", "b1"], ["h"], name="sub1"),
        oh.make_node("Relu", ["h"], ["r"], name="relu1"),
        oh.make_node("Transpose", ["w2t"], ["w2"], name="tr", perm=[1, 0]),
        oh.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")],
        {"w2t": w(3, 5)}, (4,), 3), (4,))
    out["tanh"] = (_model("tanh", [
        oh.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        oh.make_node("Tanh", ["h"], ["t"], name="tanh1"),
        oh.make_node("Gemm", ["t", "w2"], ["y"], name="fc2")],
        {"w1": w(3, 6), "b1": w(6), "w2": w(6, 2)}, (3,), 2), (3,))
    out["softmax"] = (_model("softmax", [
        oh.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        oh.make_node("Relu", ["h"], ["r"], name="relu1"),
        oh.make_node("Gemm", ["r", "w2", "b2"], ["z"], name="fc2"),
        oh.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1)],
        {"w1": w(4, 7), "b1": w(7), "w2": w(7, 3), "b2": w(3)}, (4,), 3), (4,))
    out["sklearn"] = (_sklearn_like(rng, two_class=False), (4,))
    out["sklearn_binary"] = (_sklearn_like(rng, two_class=True), (4,))
    for m, _ in out.values():
        onnx.checker.check_model(m)
    return out


def _sklearn_like(rng, two_class):
    """A classifier as skl2onnx writes one (zipmap off): label and probabilities outputs."""
    n_out = 1 if two_class else 3
    nodes = [oh.make_node("Cast", ["x"], ["xc"], name="Cast", to=onnx.TensorProto.FLOAT),
             oh.make_node("MatMul", ["xc", "coefficient"], ["m0"], name="MatMul"),
             oh.make_node("Add", ["m0", "intercepts"], ["a0"], name="Add"),
             oh.make_node("Relu", ["a0"], ["r0"], name="Relu"),
             oh.make_node("MatMul", ["r0", "coefficient1"], ["m1"], name="MatMul1"),
             oh.make_node("Add", ["m1", "intercepts1"], ["a1"], name="Add1")]
    if two_class:
        nodes += [oh.make_node("Sigmoid", ["a1"], ["p1"], name="Sigmoid"),
                  oh.make_node("Sub", ["unity", "p1"], ["p0"], name="Sub"),
                  oh.make_node("Concat", ["p0", "p1"], ["probabilities"], name="Concat", axis=1)]
    else:
        nodes += [oh.make_node("Softmax", ["a1"], ["sm"], name="Softmax", axis=1),
                  oh.make_node("Identity", ["sm"], ["probabilities"], name="Identity")]
    nodes += [oh.make_node("ArgMax", ["probabilities"], ["am"], name="ArgMax", axis=1),
              oh.make_node("ArrayFeatureExtractor", ["classes", "am"], ["afe"], name="ArrayFeatureExtractor",
                           domain="ai.onnx.ml"),
              oh.make_node("Reshape", ["afe", "shape_tensor"], ["rs"], name="Reshape"),
              oh.make_node("Cast", ["rs"], ["label"], name="Cast1", to=onnx.TensorProto.INT64)]
    classes = 2 if two_class else 3
    inits = [onh.from_array((rng.normal(size=(4, 8)) / 2).astype(np.float32), "coefficient"),
             onh.from_array(rng.normal(size=(1, 8)).astype(np.float32), "intercepts"),
             onh.from_array((rng.normal(size=(8, n_out)) / 3).astype(np.float32), "coefficient1"),
             onh.from_array(rng.normal(size=(1, n_out)).astype(np.float32), "intercepts1"),
             onh.from_array(np.arange(classes, dtype=np.int64) * 2 + 1, "classes"),
             onh.from_array(np.array([-1], np.int64), "shape_tensor")]
    if two_class:
        inits.append(onh.from_array(np.array(1.0, np.float32), "unity"))
    graph = oh.make_graph(nodes, "sklearn", [_vi("x", ("N", 4))],
                          [_vi("label", ("N",), onnx.TensorProto.INT64), _vi("probabilities", ("N", classes))],
                          inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13), oh.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = _IR_VERSION
    return model


def load_corpus(paths):
    """Valid ONNX models from files or folders (``*.onnx`` found recursively): ``{name: (model, shape)}``.

    Files that do not load, or whose graph input has no fixed per-sample shape, are
    skipped: they cannot serve as a base for mutations.
    """
    out = {}
    for p in paths:
        p = pathlib.Path(p)
        files = sorted(p.rglob("*.onnx")) if p.is_dir() else [p]
        for f in files:
            try:
                model = onnx.load(str(f))
                dims = model.graph.input[0].type.tensor_type.shape.dim
                shape = tuple(int(d.dim_value) for d in dims[1:])
            except Exception:  # noqa: BLE001 - a corpus file that is no base is skipped
                continue
            if shape and all(s > 0 for s in shape):
                out[str(f)] = (model, shape)
    return out


# --------------------------------------------------------------------------- mutations
#
# Each mutation takes a numpy Generator and a ModelProto (a copy it may change in place)
# and returns a short description of what it did, or None if it could not apply.

_FLOAT_DTYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
_ODD_OPS = ("Conv", "Sign", "Floor", "LSTM", "MaxPool", "Unsqueeze", "Gather", "Shape", "Concat", "Neg",
            "Sqrt", "Log", "Softmax", "ArgMax", "Cast", "Reshape", "Transpose", "Squeeze", "Frobnicate", "Lerp")
_INSERT_OPS = ("Identity", "Relu", "Neg", "Tanh", "Sigmoid", "Abs", "Softmax", "LogSoftmax", "Dropout",
               "Flatten", "Exp", "Sqrt", "Sign", "Transpose", "Squeeze", "Unsqueeze", "Cast", "Clip",
               "LeakyRelu", "HardSigmoid", "Gelu", "Erf", "Reciprocal")
_ATTR_VALUES = (-1, 0, 1, 2, 3, 7, -2, 2 ** 40, 0.0, -1.0, 1e30, float("nan"), float("inf"), "none",
                "tanh", "", [0], [1, 0], [0, 0], [2, 1, 0], [], [1.5])


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))] if len(seq) else None


def _values(model):
    names = [i.name for i in model.graph.input] + [t.name for t in model.graph.initializer]
    for n in model.graph.node:
        names += [o for o in n.output if o]
    return names


def _m_remove_node(rng, m):
    if not m.graph.node:
        return None
    i = int(rng.integers(len(m.graph.node)))
    name = m.graph.node[i].name
    del m.graph.node[i]
    return f"remove node {name!r}"


def _m_duplicate_node(rng, m):
    if not m.graph.node:
        return None
    i = int(rng.integers(len(m.graph.node)))
    node = onnx.NodeProto()
    node.CopyFrom(m.graph.node[i])
    if rng.random() < 0.5:   # a second reader of the same values, with fresh outputs
        for k in range(len(node.output)):
            node.output[k] = f"{node.output[k]}_dup"
    m.graph.node.insert(int(rng.integers(len(m.graph.node) + 1)), node)
    return f"duplicate node {node.name!r}"


def _m_swap_nodes(rng, m):
    if len(m.graph.node) < 2:
        return None
    i, j = rng.choice(len(m.graph.node), 2, replace=False)
    a, b = onnx.NodeProto(), onnx.NodeProto()
    a.CopyFrom(m.graph.node[i])
    b.CopyFrom(m.graph.node[j])
    m.graph.node[i].CopyFrom(b)
    m.graph.node[j].CopyFrom(a)
    return f"swap nodes {int(i)} and {int(j)}"


def _m_rename_value(rng, m):
    if not m.graph.node:
        return None
    node = _pick(rng, m.graph.node)
    slots = [("input", k) for k in range(len(node.input))] + [("output", k) for k in range(len(node.output))]
    if not slots:
        return None
    where, k = _pick(rng, slots)
    new = _pick(rng, [*_values(m), "fresh_value", "", "y", "x"])
    getattr(node, where)[k] = new
    return f"{node.name!r} {where} {k} -> {new!r}"


def _m_rename_node(rng, m):
    if not m.graph.node:
        return None
    node = _pick(rng, m.graph.node)
    new = _pick(rng, ["", node.name + "'", "fc1", "x", "\u00e9t\u00e9 node", "a" * 300])
    node.name = new
    return f"rename node to {new[:20]!r}"


def _m_cycle(rng, m):
    nodes = m.graph.node
    if len(nodes) < 1:
        return None
    i = int(rng.integers(len(nodes)))
    j = int(rng.integers(i, len(nodes)))
    if not nodes[i].input or not nodes[j].output:
        return None
    k = int(rng.integers(len(nodes[i].input)))
    nodes[i].input[k] = nodes[j].output[0]
    return f"cycle: node {i} input {k} <- node {j}"


def _m_remove_initializer(rng, m):
    if not m.graph.initializer:
        return None
    i = int(rng.integers(len(m.graph.initializer)))
    name = m.graph.initializer[i].name
    del m.graph.initializer[i]
    return f"remove initializer {name!r}"


def _m_duplicate_initializer(rng, m):
    if not m.graph.initializer:
        return None
    t = onnx.TensorProto()
    t.CopyFrom(_pick(rng, m.graph.initializer))
    m.graph.initializer.append(t)
    return f"duplicate initializer {t.name!r}"


def _m_rename_initializer(rng, m):
    if not m.graph.initializer:
        return None
    t = _pick(rng, m.graph.initializer)
    old, t.name = t.name, _pick(rng, [t.name + "_renamed", "x", "y", "", *_values(m)])
    return f"rename initializer {old!r} -> {t.name!r}"


def _float_initializers(m):
    out = []
    for t in m.graph.initializer:
        if t.data_type in _FLOAT_DTYPES:
            out.append(t)
    return out


def _replace(t, array):
    name = t.name
    t.CopyFrom(onh.from_array(np.asarray(array), name=name))


def _m_reshape_initializer(rng, m):
    if not m.graph.initializer:
        return None
    t = _pick(rng, m.graph.initializer)
    a = onh.to_array(t)
    choice = int(rng.integers(5))
    if choice == 0 and a.ndim == 2:
        a = a.T.copy()
    elif choice == 1 and a.size > 1:
        a = a.reshape(-1)[:-1].copy()
    elif choice == 2:
        a = a[None, ...].copy()
    elif choice == 3 and a.size:
        a = np.asarray(a.reshape(-1)[0])
    else:
        a = np.concatenate([a.reshape(-1), a.reshape(-1)])
    _replace(t, a)
    return f"reshape initializer {t.name!r} to {a.shape}"


def _m_dtype_initializer(rng, m):
    if not m.graph.initializer:
        return None
    t = _pick(rng, m.graph.initializer)
    a = onh.to_array(t)
    dtype = _pick(rng, [np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.int8])
    with np.errstate(all="ignore"):
        _replace(t, np.nan_to_num(a).astype(dtype))
    return f"initializer {t.name!r} as {np.dtype(dtype).name}"


def _m_nonfinite(rng, m):
    ts = _float_initializers(m)
    if not ts:
        return None
    t = _pick(rng, ts)
    a = onh.to_array(t).copy()
    if not a.size:
        return None
    v = _pick(rng, [np.nan, np.inf, -np.inf])
    a.reshape(-1)[int(rng.integers(a.size))] = v
    _replace(t, a)
    return f"{v} in {t.name!r}"


def _m_magnitude(rng, m):
    ts = _float_initializers(m)
    if not ts:
        return None
    t = _pick(rng, ts)
    a = onh.to_array(t).astype(np.float64)
    factor = _pick(rng, [1e30, 1e38, 3e38, 1e-30, 1e-45, 0.0, -1.0, 1e6, 1e-6])
    with np.errstate(all="ignore"):
        a = (a * factor).astype(onh.to_array(t).dtype)
    _replace(t, a)
    return f"{t.name!r} times {factor:g}"


def _m_attribute(rng, m):
    if not m.graph.node:
        return None
    node = _pick(rng, m.graph.node)
    value = _pick(rng, _ATTR_VALUES)
    if node.attribute and rng.random() < 0.7:
        i = int(rng.integers(len(node.attribute)))
        name = node.attribute[i].name
        del node.attribute[i]
        if rng.random() < 0.2:
            return f"remove attribute {name!r} of {node.name!r}"
    else:
        name = _pick(rng, ["axis", "transB", "alpha", "perm", "epsilon", "to", "training_mode", "allowzero",
                           "value", "bogus", "axes", "keepdims", "approximate", "start", "end"])
    try:
        node.attribute.append(oh.make_attribute(name, value))
    except (TypeError, ValueError):
        return None
    return f"attribute {name}={value!r} on {node.name!r}"


def _m_op(rng, m):
    if not m.graph.node:
        return None
    node = _pick(rng, m.graph.node)
    old = node.op_type
    if rng.random() < 0.25:
        node.domain = _pick(rng, ["com.example", "ai.onnx.ml", "pwlnet", "ai.onnx"])
        return f"{node.name!r} domain {node.domain!r}"
    node.op_type = _pick(rng, _ODD_OPS)
    return f"{node.name!r} op {old} -> {node.op_type}"


def _m_insert_op(rng, m):
    values = [i.name for i in m.graph.input] + [o for n in m.graph.node for o in n.output if o]
    if not values:
        return None
    src = _pick(rng, values)
    op = _pick(rng, _INSERT_OPS)
    new = f"{src}_{op.lower()}"
    attrs = {}
    if op == "Cast":
        attrs["to"] = int(_pick(rng, [onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64]))
    if op in ("Softmax", "LogSoftmax", "Flatten") and rng.random() < 0.5:
        attrs["axis"] = int(_pick(rng, [-1, 0, 1, 2]))
    for n in m.graph.node:   # every reader of src now reads the new value
        for k, name in enumerate(n.input):
            if name == src:
                n.input[k] = new
    for o in m.graph.output:
        if o.name == src:
            o.name = new
    pos = next((i + 1 for i, n in enumerate(m.graph.node) if src in n.output), 0)
    m.graph.node.insert(pos, oh.make_node(op, [src], [new], name=f"inserted_{op}", **attrs))
    return f"insert {op} after {src!r}"


def _m_constant_node(rng, m):
    if not m.graph.initializer:
        return None
    i = int(rng.integers(len(m.graph.initializer)))
    t = onnx.TensorProto()
    t.CopyFrom(m.graph.initializer[i])
    del m.graph.initializer[i]
    m.graph.node.insert(int(rng.integers(len(m.graph.node) + 1)),
                        oh.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t))
    return f"initializer {t.name!r} as a Constant node"


def _m_graph_input(rng, m):
    if not m.graph.input:
        return None
    inp = _pick(rng, m.graph.input)
    choice = int(rng.integers(6))
    tt = inp.type.tensor_type
    if choice == 0:
        tt.elem_type = int(_pick(rng, [onnx.TensorProto.INT32, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                                       onnx.TensorProto.STRING, onnx.TensorProto.BOOL]))
        return f"input elem type {tt.elem_type}"
    if choice == 1 and tt.shape.dim:
        d = _pick(rng, tt.shape.dim)
        v = _pick(rng, [0, 1, 2, 7, 1000, -1, "F"])
        if isinstance(v, str):
            d.dim_param = v
        else:
            d.dim_value = v
        return f"input dim {v!r}"
    if choice == 2 and tt.shape.dim:
        del tt.shape.dim[-1]
        return "input rank - 1"
    if choice == 3:
        m.graph.input.append(_vi("extra", ("N", 4)))
        return "extra graph input"
    if choice == 4:
        tt.ClearField("shape")
        return "input without shape"
    del m.graph.input[:]
    return "no graph input"


def _m_graph_output(rng, m):
    choice = int(rng.integers(5))
    if choice == 0 and m.graph.output:
        tt = m.graph.output[0].type.tensor_type
        if tt.shape.dim:
            v = _pick(rng, [1, 2, 5, 100])
            _pick(rng, tt.shape.dim).dim_value = v
            return f"output dim {v}"
        return None
    if choice == 1:
        name = _pick(rng, _values(m))
        m.graph.output.append(_vi(name or "z", ("N", 3)))
        return f"extra graph output {name!r}"
    if choice == 2:
        del m.graph.output[:]
        return "no graph output"
    if choice == 3 and m.graph.output:
        m.graph.output[0].name = _pick(rng, _values(m)) or "y"
        return f"output is {m.graph.output[0].name!r}"
    if m.graph.output:
        m.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
        return "output elem type INT64"
    return None


def _m_opset(rng, m):
    choice = int(rng.integers(4))
    if choice == 0 and m.opset_import:
        v = int(_pick(rng, [1, 6, 7, 8, 9, 10, 11, 12, 16, 18, 21, onnx.defs.onnx_opset_version(),
                            onnx.defs.onnx_opset_version() + 1, 0, 1000]))
        m.opset_import[0].version = v
        return f"opset {v}"
    if choice == 1:
        m.opset_import.append(oh.make_opsetid(_pick(rng, ["com.example", "ai.onnx.ml", "pwlnet", ""]), 1))
        return "extra opset import"
    if choice == 2:
        del m.opset_import[:]
        return "no opset import"
    m.ir_version = int(_pick(rng, [0, 1, 3, 7, 10, 99]))
    return f"ir_version {m.ir_version}"


#: Mutations of the model proto.
MUTATIONS = {
    "remove_node": _m_remove_node, "duplicate_node": _m_duplicate_node, "swap_nodes": _m_swap_nodes,
    "rename_value": _m_rename_value, "rename_node": _m_rename_node, "cycle": _m_cycle,
    "remove_initializer": _m_remove_initializer, "duplicate_initializer": _m_duplicate_initializer,
    "rename_initializer": _m_rename_initializer, "reshape_initializer": _m_reshape_initializer,
    "dtype_initializer": _m_dtype_initializer, "nonfinite": _m_nonfinite, "magnitude": _m_magnitude,
    "attribute": _m_attribute, "op": _m_op, "insert_op": _m_insert_op, "constant_node": _m_constant_node,
    "graph_input": _m_graph_input, "graph_output": _m_graph_output, "opset": _m_opset,
}


def _mutate_bytes(rng, data):
    choice = int(rng.integers(4))
    if choice == 0:
        n = int(rng.integers(len(data) + 1))
        return data[:n], f"truncate to {n} bytes"
    if choice == 1:
        b = bytearray(data)
        k = int(rng.integers(1, 9))
        for i in rng.integers(len(b), size=k):
            b[int(i)] = int(rng.integers(256))
        return bytes(b), f"{k} random bytes changed"
    if choice == 2:
        n = int(rng.integers(0, 2000))
        return rng.bytes(n), f"{n} random bytes"
    cut = int(rng.integers(len(data) + 1))
    return data[:cut] + rng.bytes(int(rng.integers(1, 64))) + data[cut:], "random bytes inserted"


def make_case(bases, seed, index):
    """Case ``index`` of the campaign with ``seed``: a base model, 0-3 mutations, maybe mangled bytes."""
    rng = np.random.default_rng([int(seed), int(index)])
    names = sorted(bases)
    name = names[int(rng.integers(len(names)))]
    base, shape = bases[name]
    model = onnx.ModelProto()
    model.CopyFrom(base)
    recipe = [name]
    # One case in ten is a base model unchanged or only with ops inserted and weights
    # moved into Constant nodes: the accepted path must be exercised and checked too.
    n_mut = 0 if rng.random() < 0.08 else int(rng.integers(1, 4))
    keys = sorted(MUTATIONS)
    for _ in range(n_mut):
        key = keys[int(rng.integers(len(keys)))]
        done = MUTATIONS[key](rng, model)
        if done is not None:
            recipe.append(done)
    data = model.SerializeToString()
    if rng.random() < 0.1:
        data, done = _mutate_bytes(rng, data)
        recipe.append(done)
    calib = np.random.default_rng([int(seed), int(index), 1]).normal(size=(_CALIB_SAMPLES, *shape))
    return Case(index, data, calib.astype(np.float32), recipe)


# --------------------------------------------------------------------------- running a case


def _names_what(err, path):
    """Whether a pwlnet error names the file and, when it is about a node, that node."""
    msg = str(err)
    if path not in msg and os.path.basename(path) not in msg:
        return False
    node = getattr(err, "node", None)
    if node:
        return repr(node) in msg or node in msg
    return True


def _check_against_ort(net, path, x):
    """``None`` if the network matches onnxruntime on ``x`` (or cannot be compared), else why not."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if any("LERP table" in n for n in net.notices):
        return None   # imported functions are approximated on purpose
    if net.reference_output is None:
        return None   # no graph output holds the scores (a label and a ZipMap only)
    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        ref = sess.run([net.reference_output], {inp.name: x.astype(np.float32)})[0]
    except Exception:  # noqa: BLE001 - a model onnxruntime refuses cannot be compared
        return None
    with np.errstate(all="ignore"):
        ours = net(x)
    ref = np.asarray(ref, dtype=np.float64)
    if ref.shape != ours.shape:
        return f"output shape {ours.shape}, onnxruntime {ref.shape}"
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(ours))):
        return None   # float32 overflow in onnxruntime against float64 here: not comparable
    if any("dropped the trailing" in n or "as the two scores" in n for n in net.notices):
        top = np.sort(ref, axis=1)
        clear = top[:, -1] - top[:, -2] > 1e-4 if ref.shape[1] > 1 else np.ones(len(ref), bool)
        if np.any(ours.argmax(axis=1)[clear] != ref.argmax(axis=1)[clear]):
            return "argmax differs from onnxruntime's"
        return None
    scale = max(1.0, float(np.abs(ref).max()))
    if not np.allclose(ours, ref, rtol=1e-3, atol=1e-4 * scale):
        return f"outputs differ from onnxruntime's by up to {float(np.abs(ours - ref).max()):.3g}"
    return None


def _snapshot(folder):
    out = {}
    for p in sorted(pathlib.Path(folder).rglob("*")):
        out[str(p.relative_to(folder))] = p.read_bytes() if p.is_file() else None
    return out


def run_case(case, folder):
    """Run one case in the empty directory ``folder``; return ``(outcome, detail)``.

    ``outcome`` is ``"accepted"``, ``"refused <ErrorType>"`` or one of :data:`FAILURES`
    (``"hang"`` only comes from :func:`campaign`'s watchdog).
    """
    from .compile import compile_onnx
    folder = pathlib.Path(folder)
    path = folder / "model.onnx"
    calib_path = folder / "calib.npy"
    path.write_bytes(case.data)
    np.save(calib_path, case.calib)
    before = _snapshot(folder)
    out_dir = folder / "compiled"
    accepted = False
    stage = "import"
    try:
        net = onnx_import.load_onnx(path)
        stage = "compile"
        model = compile_onnx(path, out_dir, calib=str(calib_path), log=lambda line: None)
        stage = "predict"
        loaded = artifact.load(out_dir)
        y, codes = golden.predict(loaded, case.calib)
        accepted = True
    except OWN_ERRORS as e:
        if not _names_what(e, str(path)):
            outcome = ("crash", f"[{stage}] {type(e).__name__} without the file or node: {e}")
        else:
            outcome = (f"refused {type(e).__name__}", str(e))
    except Exception as e:  # noqa: BLE001 - any other exception is what the fuzzer looks for
        outcome = ("crash", f"[{stage}] " + "".join(traceback.format_exception(e)).rstrip())
    if accepted:
        limit = 1 << (loaded.layers[-1].out_bits - 1)
        if codes.shape != (len(case.calib), loaded.output_dim) or codes.min() < -limit or codes.max() >= limit:
            outcome = ("wrong", f"golden codes of shape {codes.shape} in [{codes.min()}, {codes.max()}]")
        elif not np.all(np.isfinite(y)):
            outcome = ("wrong", "the golden model's dequantized outputs are not finite")
        elif model.output_dim != loaded.output_dim:
            outcome = ("wrong", "the saved model differs from the compiled one")
        else:
            why = _check_against_ort(net, str(path), case.calib)
            outcome = ("accepted", "") if why is None else ("wrong", why)
    after = _snapshot(folder)
    if accepted:
        after = {k: v for k, v in after.items() if k != "compiled" and not k.startswith("compiled/")}
    if after != before:
        changed = sorted(set(after) ^ set(before) | {k for k in before if after.get(k) != before[k]})
        outcome = ("leftover", f"{outcome[0]}, and the case folder changed: {changed}")
    return outcome


# --------------------------------------------------------------------------- campaigns


def _warm_up(bases):
    """Open one onnxruntime session, so files it keeps per machine exist before the first case.

    onnxruntime writes a session id file (``$TMPDIR/.ses``) the first time it runs and
    reuses it afterwards; it belongs to onnxruntime, not to any case.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return
    ort.set_default_logger_severity(4)   # its messages about mutated models would drown the counts
    model, _ = bases[sorted(bases)[0]]
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _worker(conn, bases, seed, root):
    tmp = pathlib.Path(root) / "tmp"
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    _warm_up(bases)
    baseline = _snapshot(tmp)
    while True:
        index = conn.recv()
        if index is None:
            return
        folder = pathlib.Path(root) / f"case{index}"
        folder.mkdir()
        os.chdir(folder)   # anything written to a relative path lands in the case folder
        try:
            outcome = run_case(make_case(bases, seed, index), folder)
        except Exception as e:  # noqa: BLE001 - a failure of the harness itself is reported
            outcome = ("crash", "".join(traceback.format_exception(e)).rstrip())
        os.chdir(root)
        left = _snapshot(tmp)
        if outcome[0] != "leftover" and left != baseline:
            outcome = ("leftover", f"files left in TMPDIR: {sorted(set(left) - set(baseline))}")
        shutil.rmtree(folder, ignore_errors=True)
        for p in tmp.iterdir():
            if str(p.relative_to(tmp)) not in baseline:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
        conn.send((index, *outcome))


def campaign(cases, seed=0, *, corpus=(), timeout=30.0, first=0, progress=None):
    """Run cases ``first .. first + cases - 1`` of the campaign ``seed``.

    Each case runs in a worker process (restarted after a hang or a death) in its own
    directory under a private temporary root, which is removed at the end.

    Parameters
    ----------
    cases : int
        Number of cases.
    seed : int
        The campaign's seed; with the corpus it fixes every case.
    corpus : sequence of path-like
        ONNX files or folders whose models join the built-in base models.
    timeout : float
        Seconds a case may take before it counts as a hang.
    first : int
        Index of the first case (``--case K`` runs ``first=K, cases=1``).
    progress : callable, optional
        Called with the number of cases done after each case.

    Returns
    -------
    counts : dict
        Outcome -> number of cases.
    findings : list of (int, str, str)
        ``(case index, outcome, detail)`` for every case in :data:`FAILURES`.
    """
    bases = {**base_models(), **load_corpus(corpus)}
    ctx = multiprocessing.get_context("fork")
    root = pathlib.Path(tempfile.mkdtemp(prefix="pwlnet-fuzz-"))
    (root / "tmp").mkdir()
    counts, findings = {}, []
    conn = proc = None

    def start():
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child, bases, seed, str(root)), daemon=True)
        p.start()
        child.close()
        return parent, p

    try:
        for done, index in enumerate(range(first, first + cases), start=1):
            if proc is None or not proc.is_alive():
                conn, proc = start()
            conn.send(index)
            if conn.poll(timeout):
                try:
                    _, outcome, detail = conn.recv()
                except EOFError:
                    outcome, detail = "crash", f"the worker died (exit code {proc.join(5) or proc.exitcode})"
                    proc = None
            else:
                outcome, detail = ("hang", f"no result within {timeout:g} s") if proc.is_alive() else \
                    ("crash", f"the worker died (exit code {proc.exitcode})")
                proc.kill()
                proc.join()
                proc = None
                shutil.rmtree(root / f"case{index}", ignore_errors=True)
                for q in (root / "tmp").iterdir():   # what the killed case had open
                    if q.name != ".ses":
                        shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink()
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in FAILURES:
                findings.append((index, outcome, detail))
            if progress is not None:
                progress(done)
        if proc is not None:
            conn.send(None)
            proc.join(10)
        leftovers = [p.name for p in root.iterdir() if p.name != "tmp"] + \
            [p.name for p in (root / "tmp").iterdir() if p.name != ".ses"]
        if leftovers:
            counts["leftover"] = counts.get("leftover", 0) + 1
            findings.append((-1, "leftover", f"left in the fuzz root: {sorted(leftovers)}"))
    finally:
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join()
        shutil.rmtree(root, ignore_errors=True)
    return counts, findings


def format_counts(counts, cases, seed, seconds):
    """The outcome table ``make fuzz`` prints: accepted, refused per error type, failures."""
    lines = [f"importer fuzzing: {cases} cases, seed {seed}, {seconds:.1f} s"]
    lines.append(f"  {'accepted':<34}{counts.get('accepted', 0):>7}")
    refused = sorted(k for k in counts if k.startswith("refused "))
    lines.append(f"  {'refused':<34}{sum(counts[k] for k in refused):>7}")
    for k in refused:
        lines.append(f"    {k[len('refused '):]:<32}{counts[k]:>7}")
    for k, label in (("crash", "crashes"), ("wrong", "wrong results"), ("hang", "hangs"), ("leftover", "leftovers")):
        lines.append(f"  {label:<34}{counts.get(k, 0):>7}")
    return "\n".join(lines)


def main(argv=None):
    """``python -m pwlnet.fuzz import --cases N --seed S``: run a campaign and print the counts.

    Exits with status 1 if any case crashed, computed a wrong result, hung or left a
    file behind (each finding is printed with the command that reproduces it), else 0.
    """
    p = argparse.ArgumentParser(prog="python -m pwlnet.fuzz", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    s = sub.add_parser("import", help="fuzz the ONNX importer, the compiler and the golden model")
    s.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    s.add_argument("--case", type=int, default=None, metavar="K",
                   help="run only case K of the campaign, in this process, and show its outcome in full")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it is a hang (default 30)")
    s.add_argument("--corpus", action="append", default=[], metavar="PATH",
                   help="ONNX file or folder of base models to mutate besides the built-in ones (repeatable)")
    s = sub.add_parser("link", help="fuzz the host link on the simulated board (Verilator)")
    s.add_argument("--frames", type=int, default=1000, help="number of frames (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    s.add_argument("--workdir", default=None, metavar="DIR",
                   help="keep the benches' input and output files here (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.target == "link":
        return _link_main(p, args)
    if args.cases < 1:
        p.error(f"--cases must be at least 1, not {args.cases}")
    if args.case is not None:
        bases = {**base_models(), **load_corpus(args.corpus)}
        case = make_case(bases, args.seed, args.case)
        print(f"case {args.case} of seed {args.seed}: {'; '.join(case.recipe)}")
        with tempfile.TemporaryDirectory(prefix="pwlnet-fuzz-case-") as folder:
            outcome, detail = run_case(case, folder)
        print(f"{outcome}: {detail}")
        return 1 if outcome in FAILURES else 0
    t0 = time.monotonic()
    counts, findings = campaign(args.cases, args.seed, corpus=args.corpus, timeout=args.timeout)
    print(format_counts(counts, args.cases, args.seed, time.monotonic() - t0))
    corpus = "".join(f" --corpus {c}" for c in args.corpus)
    for index, outcome, detail in findings[:20]:
        print(f"\n{outcome} in case {index}: python -m pwlnet.fuzz import --seed {args.seed} --case {index}{corpus}")
        print("  " + detail.replace("\n", "\n  "))
    if len(findings) > 20:
        print(f"\n... and {len(findings) - 20} more findings")
    return 1 if findings else 0


def _link_main(parser, args):
    from .sim import link_fuzz

    if args.frames < 1:
        parser.error(f"--frames must be at least 1, not {args.frames}")
    result = link_fuzz.campaign(args.frames, args.seed, workdir=args.workdir)
    print(link_fuzz.format_result(result, args.frames, args.seed))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
