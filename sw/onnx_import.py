"""Import piecewise-linear MLPs from ONNX files into the :mod:`pwlnet.ir`.

:func:`load_onnx` reads a file written by an exporter (``torch.onnx.export`` with
``dynamo=False`` at opsets 11 to 17 is what the tests pin) and returns a
:class:`pwlnet.ir.Network`.  :func:`import_model` does the same for an
``onnx.ModelProto`` already in memory.

How the import works
--------------------
The graph must be a *chain*: one graph input (the sample, with a batch axis first),
one graph output, and every intermediate value on the way from one to the other used
by exactly one node.  Walking the nodes in topological order, every value is one of

* a **constant**: an initializer, the output of a ``Constant`` node, or anything a
  small evaluator (:data:`FOLDABLE_OPS`) computes from constants and from the *shape*
  of the data (the ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chain that
  torch emits for ``x.view(x.size(0), -1)``).  The batch size is kept symbolic in
  shape values, so a Reshape target is checked exactly, never guessed;
* the **data** value, which each node on the chain transforms through its handler in
  :data:`_HANDLERS`.  A handler does not emit IR layers directly; it appends *steps*:
  a dense layer, an element-wise affine map (BatchNormalization, Add/Sub/Mul/Div by a
  constant), an activation, or a trailing Softmax.

The steps are then lowered into IR layers.  An element-wise affine map is folded
backwards into the dense layer right before it or, failing that, forwards into the
dense layer right after it; it is never moved across an activation, because
``relu(s * z + t)`` is not ``s * relu(z) + t`` for negative ``s`` or non-zero ``t``.
Dense layers with no activation between them are kept apart (a narrow bottleneck is
cheaper in hardware than the merged product).

Anything the importer cannot translate exactly is refused with
:class:`OnnxImportError`, naming the file, the node, its op type and what was wrong.

LERP activations
----------------
A ``Lerp`` node of domain ``"pwlnet"`` (what :class:`pwlnet.models.Lerp` exports, see
:mod:`pwlnet.lerp`) becomes an ``Activation("lerp")`` with its table and range as they
are.  Non-linear element-wise functions (:data:`FUNCTION_OPS`: Tanh, Sigmoid, GELU, ...)
become *function steps*, evaluated in float64 numpy (``_FUNCTIONS``).  When the data
value feeds several nodes, :meth:`_Importer.match_region` tries to read the nodes from
there on as one element-wise subgraph of that single variable whose branches join
again -- GELU's ``x * Phi(x)`` at opset < 20, SiLU, Mish -- and makes it one function
step; anything else that branches is refused as before.  Lowering merges neighbouring
function steps (and a ReLU or element-wise scale between them) into one function and
tabulates it as a :class:`pwlnet.lerp.FunctionActivation` on ``lerp_range`` with
``lerp_grid`` segments, noting the approximation error in ``Network.notices``; the
compiler may tabulate it again on the calibrated range.

Adding an op
------------
Write ``_handle_<op>(imp, node)`` returning the per-sample shape of the node's
output after appending its steps to ``imp.steps``, list its accepted attributes in
``_ATTRIBUTES`` and register it in ``_HANDLERS``.  A new element-wise function needs
only an entry in ``_FUNCTIONS`` (and in :data:`FUNCTION_OPS` to accept it on its own).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
from fractions import Fraction

import numpy as np
import onnx
import onnx.checker
import onnx.defs
import onnx.helper
import onnx.numpy_helper
import onnx.version_converter

from . import lerp
from .ir import Activation, Dense, IRError, Network

__all__ = [
    "OnnxImportError",
    "load_onnx",
    "import_model",
    "SUPPORTED_OPS",
    "FOLDABLE_OPS",
    "FUNCTION_OPS",
    "MIN_OPSET",
    "DEFAULT_LERP_RANGE",
]

#: Input range of the LERP tables that imported functions (Tanh, GELU, ...) become unless
#: the caller gives one.  ``pwlnet compile`` replaces it by the pre-activation range it
#: measures on calibration data; it matters for the float network the importer returns.
DEFAULT_LERP_RANGE = (-8.0, 8.0)

#: Oldest default-domain opset the importer reads.  Older opsets spell several of the ops
#: below with different attributes (BatchNormalization ``spatial``, Dropout ``is_test``),
#: so a model below it is first lifted to it with onnx's own version converter
#: (:func:`onnx.version_converter.convert_version`), with a notice; one the converter
#: cannot lift is refused.
MIN_OPSET = 11


class OnnxImportError(ValueError):
    """An ONNX file pwlnet cannot import exactly.

    Parameters
    ----------
    message : str
        The full, human-readable explanation (it names the file and, where there is
        one, the node).
    source : str, optional
        The file or model the error is about.
    node : str, optional
        The name of the offending node (``""`` for an unnamed one), if any.
    op_type : str, optional
        The offending node's op type, if any.
    nodes : list of (str, str), optional
        Every offending node as ``(name, op_type)`` when the error is about several (a
        model with several unsupported ops is refused once, naming all of them);
        ``node`` and ``op_type`` are then the first of them.  By default the one
        ``(node, op_type)``, or empty.
    """

    def __init__(self, message, *, source=None, node=None, op_type=None, nodes=None):
        super().__init__(message)
        self.source = source
        self.node = node
        self.op_type = op_type
        if nodes is None:
            nodes = [] if node is None and op_type is None else [(node, op_type)]
        self.nodes = list(nodes)


# --------------------------------------------------------------------------- symbols


class _BatchSize:
    """The symbolic batch size inside shape values (``Shape(x)[0]``)."""

    _instance = None

    def __new__(cls):
        # One instance, so that identity comparison says "this is the batch axis".
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "N"


BATCH = _BatchSize()


def _has_batch(value):
    if value is BATCH:
        return True
    return isinstance(value, np.ndarray) and value.dtype == object and any(v is BATCH for v in value.flat)


# --------------------------------------------------------------------------- steps


@dataclasses.dataclass
class _DenseStep:
    weight: np.ndarray  # (n_out, n_in)
    bias: np.ndarray  # (n_out,)
    name: str
    where: str
    split: bool = False  # a PeLU split: each input's weights are >= 0 and sum to 1


@dataclasses.dataclass
class _ScaleStep:
    # Element-wise y = x * scale + shift over the flattened per-sample vector.
    scale: np.ndarray
    shift: np.ndarray
    name: str
    where: str


@dataclasses.dataclass
class _ActivationStep:
    kind: str
    name: str
    where: str


@dataclasses.dataclass
class _FunctionStep:
    # A 1-D element-wise function (Tanh, a GELU subgraph, ...) on flattened samples:
    # ``function`` maps float64 (M, features) to (M, features).
    function: object
    description: str
    name: str
    where: str


@dataclasses.dataclass
class _LerpStep:
    # A pwlnet.Lerp node: the table (features, G+1) over [lo, hi].
    table: np.ndarray
    lo: float
    hi: float
    name: str
    where: str


@dataclasses.dataclass
class _FinalStep:
    # A trailing Softmax / LogSoftmax: dropped, it does not change the argmax.
    op_type: str
    name: str
    where: str


# --------------------------------------------------------------------------- importer


class _Importer:
    """State of one import: constants, the data chain and the steps produced so far."""

    def __init__(self, model: onnx.ModelProto, source: str, lerp_grid=lerp.DEFAULT_GRID, lerp_range=None,
                 output=None):
        self.model = model
        self.lerp_grid = lerp_grid
        self.lerp_range = lerp_range
        self.source = source
        self.graph = model.graph
        self.opset = _default_opset(model, source)
        self.consts: dict[str, np.ndarray] = {}
        self.data_shapes: dict[str, tuple] = {}  # data value name -> per-sample shape
        self.data: str | None = None  # the current end of the chain
        self.steps: list = []
        self.graph_inputs = {i.name for i in self.graph.input}
        self.producer = {name: idx for idx, node in enumerate(self.graph.node) for name in node.output if name}
        self.output_notices: list[str] = []
        self.two_class = None  # where the two-class probabilities were, when they become two scores
        self.label_classes = []  # (output, ArrayFeatureExtractor description, class list) of label outputs
        self.reference_output = None
        # The value the layer chain must end at, and the nodes that only compute other
        # outputs from it (a label, a ZipMap) or outputs the caller did not pick.
        self.graph_outputs, self.ignored = self.select_output(output)
        self.consumers: dict[str, list[int]] = {}
        self.all_readers: dict[str, set[int]] = {}
        for idx, node in enumerate(self.graph.node):
            for name in node.input:
                if name:
                    self.all_readers.setdefault(name, set()).add(idx)
                    if idx not in self.ignored:
                        self.consumers.setdefault(name, []).append(idx)
        self.fixed_batch: int | None = None
        self.done: set[int] = set()  # nodes already handled out of order (regions, constants)
        self.live: set[int] = set()

    # --- naming -------------------------------------------------------------------

    @staticmethod
    def layer_name(node):
        """The IR name of the layer a node becomes: its name, else its output's."""
        return node.name or node.output[0]

    def where(self, node, idx=None):
        """Describe ``node`` for a message, even when the exporter left it unnamed."""
        if node.name:
            return f"node {node.name!r} ({node.op_type})"
        if idx is None:
            idx = list(self.graph.node).index(node)
        out = node.output[0] if node.output else "?"
        return f"unnamed node #{idx} ({node.op_type}, output {out!r})"

    def fail(self, message, node=None, idx=None):
        if node is None:
            raise OnnxImportError(f"{self.source}: {message}", source=self.source)
        raise OnnxImportError(f"{self.source}: {self.where(node, idx)}: {message}",
                              source=self.source, node=node.name, op_type=node.op_type)

    # --- operands -----------------------------------------------------------------

    def operand(self, node, slot):
        """The value name in input ``slot`` of ``node``, or ``None`` if omitted."""
        if slot < len(node.input) and node.input[slot]:
            return node.input[slot]
        return None

    def const(self, node, slot, what, *, required=True, finite=True):
        """The constant in input ``slot`` of ``node`` as float64 (``None`` if absent)."""
        name = self.operand(node, slot)
        if name is None:
            if required:
                self.fail(f"its {what} (input {slot}) is missing", node)
            return None
        if name not in self.consts:
            self.fail(f"its {what} {name!r} (input {slot}) is not a constant: "
                      f"{self.describe_nonconst(name)}; weights and parameters must be "
                      f"initializers or Constant nodes", node)
        value = self.consts[name]
        if _has_batch(value):
            self.fail(f"its {what} {name!r} (input {slot}) depends on the batch size", node)
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            self.fail(f"its {what} {name!r} (input {slot}) is not numeric "
                      f"(dtype {np.asarray(self.consts[name]).dtype})", node)
        if finite and not np.all(np.isfinite(value)):
            bad = np.argwhere(~np.isfinite(value))[0]
            self.fail(f"its {what} {name!r} (input {slot}) holds {float(value[tuple(bad)])!r} at index "
                      f"{bad.tolist()}; weights must be finite", node)
        return value

    def describe_nonconst(self, name):
        if name in self.graph_inputs:
            return "it is a graph input"
        if name in self.data_shapes:
            return "it is computed from the network input"
        return "it is neither an initializer nor computed from constants"

    def attrs(self, node):
        """The node's attributes as a dict, refusing any the handler does not know."""
        known = _ATTRIBUTES.get(node.op_type, ())
        out = {}
        for a in node.attribute:
            if a.name not in known:
                allowed = ", ".join(known) if known else "none"
                self.fail(f"attribute {a.name!r} is not supported (supported attributes: {allowed})", node)
            out[a.name] = onnx.helper.get_attribute_value(a)
        return out

    # --- the walk -----------------------------------------------------------------

    def run(self) -> Network:
        live = self.live = self.live_nodes()
        self.check_ops()
        sample_shape = self.start()
        for idx, node in enumerate(self.graph.node):
            if idx not in live or idx in self.done:
                continue
            inputs = [n for n in node.input if n]
            if node.op_type == "Shape" and inputs and inputs[0] in self.data_shapes:
                # Reading the data's shape is not a use of its values: no branching.
                self.consts[node.output[0]] = _shape_of(self, node, self.data_shapes[inputs[0]])
            elif self.data in inputs:
                self.advance(node, idx)
            elif all(n in self.consts for n in inputs):
                self.fold(node, idx)
            else:
                bad = next(n for n in inputs if n not in self.consts)
                self.fail(f"input {bad!r} is not a constant ({self.describe_nonconst(bad)}) and not "
                          f"the value flowing through the network; pwlnet imports a single chain "
                          f"of layers from one graph input", node, idx)
        out = self.graph_outputs[0]
        if out != self.data:
            if out in self.consts:
                self.fail(f"the graph output {out!r} does not depend on the graph input")
            self.fail(f"the graph output {out!r} is not the end of the layer chain "
                      f"(which ends at {self.data!r})")
        self.check_output_shape()
        try:
            layers, notices = _lower(self)
            if self.two_class is not None:
                layers = self.two_scores(layers, notices)
            n_out = [l for l in layers if isinstance(l, Dense)][-1].n_out if layers else 0
            for name, where, classes in self.label_classes:
                if np.asarray(classes).size != n_out:
                    self.fail(f"{where}: graph output {name!r} looks the argmax up in a class list of "
                              f"{np.asarray(classes).size} entries, but the network has {n_out} outputs")
            return Network(layers=layers, input_shape=sample_shape,
                           metadata={p.key: p.value for p in self.model.metadata_props},
                           notices=self.output_notices + notices, source=self.source,
                           reference_output=self.reference_output)
        except IRError as e:
            # The IR's own checks, as a last line: name the file once.
            msg = str(e) if str(e).startswith(f"{self.source}:") else f"{self.source}: {e}"
            raise OnnxImportError(msg, source=self.source) from e

    def two_scores(self, layers, notices):
        """Make the one-score network ``z`` of two-class probabilities the two scores ``(-z, z)``."""
        last = layers[-1]
        if not isinstance(last, Dense) or last.n_out != 1:
            self.fail(f"{self.two_class}: two-class probabilities need one score before the Sigmoid, "
                      f"from a dense layer; the network ends in "
                      f"{'a dense layer of ' + str(last.n_out) + ' outputs' if isinstance(last, Dense) else 'an activation'}")
        notices.append(f"the two-class probabilities [1 - sigmoid(z), sigmoid(z)] ({self.two_class}) "
                       f"are imported as the two scores (-z, z): the same argmax (class 1 exactly where "
                       f"z > 0), not probabilities")
        return layers[:-1] + [Dense(np.vstack([-last.weight, last.weight]),
                                    np.concatenate([-last.bias, last.bias]), name=last.name)]

    def start(self):
        """Check the graph's interface; set up the data value; return the sample shape."""
        inits = {t.name for t in self.graph.initializer}
        for t in self.graph.initializer:
            readers = self.all_readers.get(t.name, set())
            if readers and readers <= self.ignored:
                continue  # read only by nodes of outputs not imported (a label's class list)
            self.consts[t.name] = _tensor(self, t, f"initializer {t.name!r}")
        if self.graph.sparse_initializer:
            self.fail("sparse initializers are not supported")
        # Old exporters list initializers among the graph inputs as overridable defaults.
        inputs = [i for i in self.graph.input if i.name not in inits]
        if not inputs:
            self.fail("the graph has no input")
        if len(inputs) > 1:
            names = [i.name for i in inputs]
            for idx, node in enumerate(self.graph.node):
                for slot, name in enumerate(node.input):
                    if name in names[1:]:
                        self.fail(f"its input {slot} {name!r} is a graph input, not a constant "
                                  f"(the graph has {len(inputs)} inputs: {names}); pwlnet takes one "
                                  f"input, the sample, and needs weights stored as initializers or "
                                  f"Constant nodes (torch.onnx.export(..., export_params=True))",
                                  node, idx)
            self.fail(f"the graph has {len(inputs)} inputs {names}; pwlnet imports models "
                      f"with exactly one input, the sample")
        if not self.graph.output:
            self.fail("the graph has 0 outputs; pwlnet imports the one that holds the network's scores")
        inp = inputs[0]
        ttype = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        if ttype is None:
            self.fail(f"graph input {inp.name!r} is not a tensor")
        if ttype.elem_type not in _FLOAT_TYPES:
            self.fail(f"graph input {inp.name!r} has element type "
                      f"{_dtype_name(ttype.elem_type)}; a floating-point input is needed")
        if not ttype.HasField("shape"):
            self.fail(f"graph input {inp.name!r} has no shape; its per-sample shape must be known")
        dims = list(ttype.shape.dim)
        if len(dims) < 2:
            self.fail(f"graph input {inp.name!r} has rank {len(dims)}; pwlnet needs a batch axis "
                      f"followed by the per-sample axes, e.g. (N, features)")
        if dims[0].HasField("dim_value"):
            # A batch axis fixed at export time is still the batch axis.
            self.fixed_batch = dims[0].dim_value
        sample = []
        for axis, d in enumerate(dims[1:], start=1):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                shown = d.dim_param if d.HasField("dim_param") else "unknown"
                self.fail(f"graph input {inp.name!r}: axis {axis} has size {shown!r}; only the batch "
                          f"axis (axis 0) may be dynamic, the per-sample shape must be fixed")
            sample.append(d.dim_value)
        self.data = inp.name
        self.data_shapes[inp.name] = tuple(sample)
        return tuple(sample)

    def live_nodes(self):
        """Indices of the nodes the graph output depends on.

        Nodes nothing depends on are skipped, so a stray constant computation cannot
        make a good model fail; a stray node reading the *data* still counts as a second
        use of that value and is refused as branching.
        """
        return self.ancestors(self.graph_outputs)

    def ancestors(self, values):
        """Indices of the nodes that the values ``values`` depend on (their producers included)."""
        live, todo = set(), list(values)
        while todo:
            idx = self.producer.get(todo.pop())
            if idx is not None and idx not in live:
                live.add(idx)
                todo.extend(n for n in self.graph.node[idx].input if n)
        return live

    # --- several outputs ----------------------------------------------------------

    def select_output(self, output):
        """Pick the value the layer chain ends at; return ``([value], ignored node indices)``.

        Exporters of classifiers write several views of the same scores: scikit-learn's
        (skl2onnx) a *label* -- ``ArgMax`` over the probabilities, mapped through the class
        list by ``ArrayFeatureExtractor`` and ``Reshape``/``Cast`` -- and the
        *probabilities*, a Softmax (or, with two classes, ``[1 - sigmoid(z), sigmoid(z)]``),
        possibly as a ``ZipMap`` of dictionaries.  Every output is traced back to the
        scores it shows (:meth:`trace_output`); when all of them show the same scores the
        network is those scores (the engine produces the argmax, i.e. the label, itself),
        and the nodes that only compute the other views are ignored.  Otherwise
        ``output`` must name the one to import; the nodes only other outputs need are
        then ignored too.
        """
        names = [o.name for o in self.graph.output]
        if not names:
            return [], set()
        if output is not None and output not in names:
            self.fail(f"the graph has no output {output!r}; its outputs are {names}")
        traced = {name: self.trace_output(name) for name in names}
        chosen = [output] if output is not None else names
        roots = list(dict.fromkeys(traced[name][0] for name in chosen))
        if len(roots) > 1:
            self.fail(f"the graph has {len(names)} outputs {names}, and they are not views of the same "
                      f"scores; pwlnet imports one: name it with --output NAME (pwlnet compile) or "
                      f"output=NAME (load_onnx)")
        root = roots[0]
        chosen_classes = []
        for name in chosen:
            _, kind, problem, note = traced[name]
            if problem:
                self.fail(problem)
            if note:
                self.output_notices.append(note)
            chosen_classes += [c for c in self.label_classes if c[0] == name]
        self.label_classes = chosen_classes
        # The output an ONNX runtime gives with the network's argmax, for comparisons.
        declared = {o.name: o for o in self.graph.output}
        for name in names:
            t = declared[name].type
            if traced[name][:2] == (root, "scores") and t.HasField("tensor_type")                     and t.tensor_type.elem_type in _FLOAT_TYPES:
                self.reference_output = name
                break
        root = self.match_two_class(root)
        ignored = self.ancestors(names + [root] + [traced[n][0] for n in names]) - self.ancestors([root])
        return [root], ignored

    def trace_output(self, name):
        """What graph output ``name`` shows: ``(scores value, kind, problem or None, notice or None)``.

        ``kind`` is ``"label"`` (an ArgMax over the scores, see :meth:`select_output`),
        ``"zipmap"`` (the scores as a list of dictionaries) or ``"scores"`` (the value itself).
        """
        nodes = self.graph.node
        idx = self.producer.get(name)
        if idx is not None and (nodes[idx].domain, nodes[idx].op_type) == ("ai.onnx.ml", "ZipMap"):
            node = nodes[idx]
            src = node.input[0] if node.input else name
            return (src, "zipmap", None, f"graph output {name!r} ({self.where(node, idx)} of {src!r} into "
                                         f"one dictionary per sample) is not imported: the network outputs "
                                         f"the scores it is computed from")
        value, classes, path = name, None, []
        while idx is not None and idx not in path:
            node = nodes[idx]
            op = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
            if op in (("", "Cast"), ("", "Identity"), ("", "Reshape"), ("", "Squeeze"), ("", "Flatten")):
                value = node.input[0] if node.input else ""
            elif op == ("ai.onnx.ml", "ArrayFeatureExtractor") and len(node.input) == 2:
                classes = self.static_value(node.input[0])
                if classes is None:
                    return name, "label", (f"{self.where(node, idx)}: graph output {name!r} maps the "
                                           f"argmax through {node.input[0]!r}, which is not a constant "
                                           f"class list"), None
                classes = (self.where(node, idx), classes)
                value = node.input[1]
            elif op == ("", "ArgMax"):
                return self.label_output(name, node, idx, classes)
            else:
                break
            path.append(idx)
            idx = self.producer.get(value)
        return name, "scores", None, None

    def label_output(self, name, node, idx, classes):
        """A label output: the ArgMax ``node`` (at ``idx``) over the scores, maybe mapped through ``classes``."""
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        src = node.input[0] if node.input else name
        where = self.where(node, idx)
        problem = None
        if attrs.get("axis", 0) not in (1, -1):
            problem = (f"{where}: graph output {name!r} is an ArgMax over axis "
                       f"{attrs.get('axis', 0)}, across the batch; only the argmax over the classes "
                       f"(axis 1) is the engine's")
        elif attrs.get("select_last_index", 0):
            problem = (f"{where}: graph output {name!r} is an ArgMax with "
                       f"select_last_index=1; the engine's argmax picks the first maximum")
        mapped = ""
        if classes is not None:
            self.label_classes.append((name, *classes))
            flat = np.asarray(classes[1]).reshape(-1)
            if not (flat.dtype.kind in "iu" and np.array_equal(flat, np.arange(flat.size))):
                shown = [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v
                         for v in flat[:12]]
                mapped = (f"; the label is the class list {shown}{' ...' if flat.size > 12 else ''} at "
                          f"that index (ArrayFeatureExtractor)")
        return src, "label", problem, (f"graph output {name!r} is the class label, {where} over "
                                       f"{src!r}: the engine's argmax (the index of the largest "
                                       f"output) gives it{mapped}")

    def static_value(self, name):
        """An initializer's or Constant node's value, read without checks (``None`` if neither)."""
        for t in self.graph.initializer:
            if t.name == name:
                try:
                    return onnx.numpy_helper.to_array(t)
                except Exception:  # noqa: BLE001 - an unreadable tensor is refused when it is used
                    return None
        idx = self.producer.get(name)
        if idx is not None and self.graph.node[idx].op_type == "Constant":
            for a in self.graph.node[idx].attribute:
                if a.name == "value":
                    try:
                        return onnx.numpy_helper.to_array(a.t)
                    except Exception:  # noqa: BLE001 - as above
                        return None
        return None

    def match_two_class(self, root):
        """``z`` if ``root`` is ``Concat([1 - Sigmoid(z), Sigmoid(z)], axis=1)``, else ``root``.

        That is how skl2onnx writes a binary classifier's probabilities.  Its argmax is
        1 exactly where ``z > 0`` (ties go to class 0), which is the argmax of the two
        scores ``(-z, z)``: the network becomes ``z`` and :meth:`run` turns its last dense
        layer into those two scores.
        """
        nodes = self.graph.node
        idx = self.producer.get(root)
        if idx is None or nodes[idx].op_type != "Concat" or nodes[idx].domain not in ("", "ai.onnx") \
                or len(nodes[idx].input) != 2:
            return root
        concat = nodes[idx]
        axis = next((onnx.helper.get_attribute_value(a) for a in concat.attribute if a.name == "axis"), None)
        neg, pos = concat.input
        i_sig, i_sub = self.producer.get(pos), self.producer.get(neg)
        if axis not in (1, -1) or i_sig is None or i_sub is None:
            return root
        sig, sub = nodes[i_sig], nodes[i_sub]
        if sig.op_type != "Sigmoid" or sub.op_type != "Sub" or list(sub.input[1:]) != [pos] \
                or sig.domain not in ("", "ai.onnx") or sub.domain not in ("", "ai.onnx") or not sig.input:
            return root
        one = self.static_value(sub.input[0])
        if one is None or one.size != 1 or float(np.asarray(one, dtype=np.float64).reshape(())) != 1.0:
            return root
        self.two_class = f"{self.where(sig, i_sig)} .. {self.where(concat, idx)}"
        return sig.input[0]

    def advance(self, node, idx):
        """Translate the node that consumes the current data value."""
        data = self.data
        users = [i for i in dict.fromkeys(self.consumers.get(data, []))
                 if self.graph.node[i].op_type != "Shape"]
        uses = sum(1 for i in users for n in self.graph.node[i].input if n == data)
        if uses > 1 and data not in self.graph_outputs and self.match_region(idx):
            return  # an element-wise function of the data, such as GELU's x * Phi(x)
        if uses > 1 or data in self.graph_outputs:
            described = [self.where(self.graph.node[i], i) for i in users]
            if data in self.graph_outputs:
                described.append("the graph output")
            self.fail(f"value {data!r} is used {uses + (data in self.graph_outputs)} times "
                      f"(by {', '.join(described)}); pwlnet imports a plain chain of layers, "
                      f"not branching graphs (residual connections, several heads)", node, idx)
        handler = _HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else _handle_lerp
        if handler is None:
            self.unsupported(node, idx, f"op type {node.op_type!r} is not supported")
        for extra in node.output[1:]:
            if extra and (extra in self.consumers or extra in self.graph_outputs):
                self.fail(f"its extra output {extra!r} is used; only the first output of a "
                          f"{node.op_type} node can be imported (is the model in training mode?)",
                          node, idx)
        shape = handler(self, node)
        self.data = node.output[0]
        self.data_shapes[self.data] = tuple(shape)

    def uses(self, name):
        """How many input slots of live nodes (other than Shape) read ``name``, plus 1 for a graph output."""
        n = sum(1 for i in self.consumers.get(name, []) if i in self.live and self.graph.node[i].op_type != "Shape")
        return n + (name in self.graph_outputs)

    def ensure_const(self, name):
        """Fold the constant computation behind ``name`` now if it has not been yet.

        Returns whether ``name`` is a constant.  Exporters interleave ``Constant`` nodes
        with the nodes that use them, so a region matched at its first node may need
        constants the walk has not reached.
        """
        if name in self.consts:
            return True
        idx = next((i for i, node in enumerate(self.graph.node) if name in node.output), None)
        if idx is None or idx in self.done:
            return False
        node = self.graph.node[idx]
        inputs = [n for n in node.input if n]
        if node.op_type == "Shape" and inputs and inputs[0] in self.data_shapes:
            self.consts[node.output[0]] = _shape_of(self, node, self.data_shapes[inputs[0]])
        elif node.op_type in _FOLDERS and all(self.ensure_const(n) for n in inputs):
            self.fold(node, idx)
        else:
            return False
        self.done.add(idx)
        return name in self.consts

    def match_region(self, first):
        """Import the element-wise subgraph of one variable that starts at the data value.

        From node ``first`` on, collect every node reading a value computed from the
        data; each must be an element-wise op of :data:`_FUNCTIONS` whose other inputs
        are constants.  The region ends where all its branches have joined into a single
        value.  It becomes one function step (a LERP table) if it holds a non-affine op.
        Returns whether it matched; on ``False`` nothing has changed but folded constants.
        """
        start = self.data
        open_uses = {start: self.uses(start)}
        region, nonlinear = [], False
        for idx in range(first, len(self.graph.node)):
            if idx not in self.live or idx in self.done:
                continue
            node = self.graph.node[idx]
            inside = [n for n in node.input if n in open_uses]
            if not inside:
                continue
            if node.domain not in ("", "ai.onnx") or node.op_type not in _FUNCTIONS:
                return False
            if not all(n in open_uses or self.ensure_const(n) for n in node.input if n):
                return False
            if any(o and self.uses(o) for o in node.output[1:]):
                return False
            region.append(idx)
            for n in inside:
                open_uses[n] -= 1
            open_uses = {n: k for n, k in open_uses.items() if k > 0}
            nonlinear |= _is_nonlinear(node, open_uses.keys() | set(inside))
            out = node.output[0]
            open_uses[out] = self.uses(out)
            if list(open_uses) == [out]:
                if not nonlinear:
                    return False
                shape = self.data_shapes[start]
                nodes = [self.graph.node[i] for i in region]
                function = _program(self, start, nodes, out)
                self.steps.append(_FunctionStep(function, ", ".join(n.op_type for n in nodes),
                                                self.layer_name(nodes[-1]),
                                                f"{self.where(nodes[0], region[0])} .. "
                                                f"{self.where(nodes[-1], region[-1])}"))
                self.done.update(region)
                self.data = out
                self.data_shapes[out] = shape
                return True
        return False

    def fold(self, node, idx):
        """Evaluate a node whose inputs are all constants."""
        folder = _FOLDERS.get(node.op_type)
        if folder is None:
            self.unsupported(node, idx, f"op type {node.op_type!r} cannot be evaluated on constants")
        values = [self.consts[n] if n else None for n in node.input]
        try:
            outs = folder(self, node, values)
        except OnnxImportError:
            raise
        except (ValueError, TypeError, IndexError, np.exceptions.AxisError) as e:
            self.fail(f"cannot evaluate it on its constant inputs: {e}", node, idx)
        for name, value in zip(node.output, outs):
            if name:
                # Indexing a shape can give a bare element (even BATCH): keep arrays only.
                self.consts[name] = value if isinstance(value, np.ndarray) else np.asarray(value)

    def check_ops(self):
        """Refuse the model once, naming every node whose op pwlnet cannot translate at all.

        Runs before the walk, so that the error names what the user wrote -- the Conv,
        the MaxPool -- rather than whichever supported op happened to stand in front of
        the first of them (the Unsqueeze torch puts before a Conv1d on a vector, say).
        Ops pwlnet knows only in some roles (Unsqueeze on shapes, Neg inside an
        element-wise function) pass here; the walk judges their use.
        """
        bad = []
        for idx in sorted(self.live):
            node = self.graph.node[idx]
            if (node.domain, node.op_type) == (lerp.ONNX_DOMAIN, lerp.ONNX_OP):
                continue
            if node.domain not in ("", "ai.onnx"):
                bad.append((idx, node, f"op type {node.op_type!r} of domain {node.domain!r}"))
            elif node.op_type not in _HANDLERS and node.op_type not in _FOLDERS \
                    and node.op_type not in _FUNCTIONS:
                bad.append((idx, node, f"op type {node.op_type!r}"))
        if len(bad) == 1:
            idx, node, what = bad[0]
            self.unsupported(node, idx, f"{what} is not supported")
        if bad:
            listed = "; ".join(f"{self.where(node, idx)}"
                               + (f" of domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else "")
                               for idx, node, _ in bad)
            raise OnnxImportError(
                f"{self.source}: {len(bad)} nodes use ops pwlnet does not support: {listed}. "
                f"{self.supported_list()}", source=self.source, node=bad[0][1].name,
                op_type=bad[0][1].op_type, nodes=[(node.name, node.op_type) for _, node, _ in bad])

    @staticmethod
    def supported_list():
        return (f"Supported ops: {', '.join(SUPPORTED_OPS)} "
                f"(on constants and shapes also: {', '.join(FOLDABLE_OPS)})")

    def unsupported(self, node, idx, what):
        self.fail(f"{what}. {self.supported_list()}", node, idx)

    def check_output_shape(self):
        shape = self.data_shapes[self.data]
        if len(shape) != 1:
            self.fail(f"the network's output has per-sample shape {shape}; a (batch, features) "
                      f"output is needed")
        out = next((o for o in self.graph.output if o.name == self.data), None)
        if out is None:
            return  # the scores behind a label or ZipMap output: declared nowhere
        if out.type.HasField("tensor_type") and out.type.tensor_type.HasField("shape"):
            dims = out.type.tensor_type.shape.dim
            declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
            if len(declared) != 2 or declared[1] not in (None, shape[0]):
                shown = ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                                  for d in dims)
                self.fail(f"graph output {out.name!r} is declared with shape ({shown}) but the "
                          f"layers compute (N, {shape[0]})")


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def _default_opset(model, source):
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise OnnxImportError(f"{source}: the model imports no version of the default ONNX "
                              f"operator set", source=source)
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= versions[0] <= newest:
        raise OnnxImportError(f"{source}: opset {versions[0]} is not supported; pwlnet imports "
                              f"opsets {MIN_OPSET} to {newest} (re-export with "
                              f"torch.onnx.export(..., opset_version=17))", source=source)
    return versions[0]


def _lift_opset(model, source):
    """Convert a model below :data:`MIN_OPSET` up to it; return ``(model, notice or None)``.

    onnx's version converter rewrites each node into its spelling at the newer opset
    (BatchNormalization loses ``spatial``, Dropout ``is_test``, Reshape's shape becomes an
    input, ...), so the importer only ever reads the opsets it is written for.  When the
    converter cannot lift a node, or its result is not a valid model, the refusal says
    which opset the model has and what the converter reported.
    """
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if len(versions) != 1 or not 1 <= versions[0] < MIN_OPSET:
        return model, None
    old = versions[0]
    try:
        lifted = onnx.version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(lifted)
    except Exception as e:  # noqa: BLE001 - the converter raises RuntimeError, the checker ValidationError
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        why = re.sub(r"^.*Assertion `.*` failed: ", "", why)  # the C++ location is no help to a user
        raise OnnxImportError(f"{source}: opset {old} is older than the opsets pwlnet imports "
                              f"({MIN_OPSET} to {onnx.defs.onnx_opset_version()}) and onnx's version "
                              f"converter could not lift it to opset {MIN_OPSET}: {why} (re-export with "
                              f"torch.onnx.export(..., opset_version=17))", source=source) from e
    return lifted, (f"the model's opset {old} was lifted to opset {MIN_OPSET} with onnx's version "
                    f"converter before import")


def _dtype_name(code):
    """The name of an ONNX element type, also for a code no version of ONNX defines."""
    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return f"{code} (not an ONNX data type)"


def _tensor(imp, tensor, what):
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        imp.fail(f"{what} has data type {_dtype_name(tensor.data_type)}")
    try:
        return onnx.numpy_helper.to_array(tensor)
    except Exception as e:  # noqa: BLE001 - any decoding failure means a broken tensor
        imp.fail(f"{what} cannot be read: {e}")


# --------------------------------------------------------------------------- handlers
#
# A handler gets the node consuming the data value (already checked for branching and
# for used extra outputs), appends steps and returns the per-sample output shape.


def _data_slot(imp, node, slots=(0,)):
    for slot in range(len(node.input)):
        if node.input[slot] == imp.data:
            if slot not in slots:
                return slot, False
            return slot, True
    raise AssertionError("handler called for a node that does not read the data")


def _vector_input(imp, node):
    shape = imp.data_shapes[imp.data]
    if len(shape) != 1:
        imp.fail(f"it needs a (batch, features) input but receives (N, "
                 f"{', '.join(map(str, shape))}); flatten the input first (nn.Flatten)", node)
    return shape[0]


def _handle_gemm(imp, node):
    a = imp.attrs(node)
    slot, ok = _data_slot(imp, node)
    if not ok:
        imp.fail(f"the network input enters as operand {'ABC'[slot]}; pwlnet needs it as operand A "
                 f"(y = x @ W + b), a weight as operand A would compute W @ x with the batch "
                 f"along the columns", node)
    if a.get("transA", 0):
        imp.fail("transA=1 on the network input would transpose the (batch, features) matrix and "
                 "mix samples; only transA=0 is supported", node)
    n_in = _vector_input(imp, node)
    w = imp.const(node, 1, "weight B")
    if w.ndim != 2:
        imp.fail(f"its weight B has shape {w.shape}; a matrix is needed", node)
    if a.get("transB", 0):
        w = w.T  # now (K, n_out) in both cases
    if w.shape[0] != n_in:
        imp.fail(f"shape mismatch: its weight B{'^T' if a.get('transB', 0) else ''} is "
                 f"{w.shape[0]}x{w.shape[1]} but the input has {n_in} features", node)
    n_out = w.shape[1]
    c = imp.const(node, 2, "bias C", required=False)
    bias = np.zeros(n_out) if c is None else _per_row(imp, node, c, n_out, "bias C")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    with np.errstate(all="ignore"):          # checked just below
        weight = alpha * w.T
        bias = beta * bias
    for what, factor, value in (("alpha", alpha, weight), ("beta", beta, bias)):
        if not np.all(np.isfinite(value)):
            imp.fail(f"its {what} = {factor!r} makes the {'weights' if what == 'alpha' else 'bias'} non-finite; "
                     f"weights must be finite", node)
    weight, split = _split(imp, node, weight)
    imp.steps.append(_DenseStep(weight, bias, imp.layer_name(node), imp.where(node), split))
    return (n_out,)


def _per_row(imp, node, c, n, what):
    """Broadcast a Gemm bias to one value per output; refuse one that varies per sample."""
    if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or (c.ndim >= 1 and c.shape[-1] not in (1, n)):
        imp.fail(f"its {what} has shape {c.shape}, which does not broadcast to one value per "
                 f"output (({n},) or (1, {n}) expected)", node)
    return np.broadcast_to(c.reshape(-1) if c.ndim else c, (n,)).copy()


def _handle_matmul(imp, node):
    imp.attrs(node)
    slot, ok = _data_slot(imp, node)
    if not ok:
        imp.fail("the network input enters as the second operand (W @ x); pwlnet needs "
                 "x @ W with the input first", node)
    n_in = _vector_input(imp, node)
    w = imp.const(node, 1, "weight")
    if w.ndim != 2:
        imp.fail(f"its weight has shape {w.shape}; a 2-D (in, out) matrix is needed", node)
    if w.shape[0] != n_in:
        imp.fail(f"shape mismatch: its weight is {w.shape[0]}x{w.shape[1]} but the input has "
                 f"{n_in} features", node)
    weight, split = _split(imp, node, w.T)
    imp.steps.append(_DenseStep(weight, np.zeros(w.shape[1]), imp.layer_name(node), imp.where(node), split))
    return (w.shape[1],)


#: How far each input's weights may sum from 1 for a dense layer to count as a PeLU split
#: (:func:`_split`): a float32 softmax sums to 1 within a few 1e-8 per output.
SPLIT_TOLERANCE = 1e-6


def _split(imp, node, weight):
    """``(weight, is_split)``: recognise the softmax-normalised weights of a PeLU layer.

    A dense layer whose weights are all non-negative and whose every input's weights
    (a column of ``weight (n_out, n_in)``) sum to 1 within :data:`SPLIT_TOLERANCE` (plus
    1e-7 per output), with at least two outputs, splits each input among the outputs,
    as ``softmax(A, dim=1)`` of :class:`pwlnet.pelu.PeLU` does.  That is how such a
    layer looks whether the exporter left the ``Softmax`` of the parameter in the graph
    (the importer evaluates it in float64, see ``_fold_softmax``) or folded it into a
    float32 constant.  Its columns are then renormalised in float64 so that each sums
    to at most 1 exactly (the largest entry nudged down by an ulp where the division
    rounded up), a change of at most about 1e-6 relative, noted in the import notices;
    the layer is marked ``keep_mass`` for the quantizer (:func:`pwlnet.quantize.keep_mass`).
    """
    n_out = weight.shape[0]
    if n_out < 2 or weight.size == 0 or np.any(weight < 0):
        return weight, False
    sums = weight.sum(axis=0)
    if np.any(np.abs(sums - 1.0) > SPLIT_TOLERANCE + 1e-7 * n_out):
        return weight, False
    w = weight / sums
    for i in range(w.shape[1]):
        while sum((Fraction(float(v)) for v in w[:, i]), Fraction(0)) > 1:
            o = int(np.argmax(w[:, i]))
            w[o, i] = np.nextafter(w[o, i], 0.0)
    imp.output_notices.append(
        f"{imp.where(node)}: its weights split each input among the {n_out} outputs (non-negative, "
        f"each input's weights sum to 1 within {float(np.abs(sums - 1.0).max()):.2g}): a PeLU split, "
        f"renormalised in float64 and quantized so that it never puts out more than it takes in")
    return w, True


def _elementwise_constant(imp, node, c, what):
    """Broadcast a constant operand over one sample; refuse one that grows the data."""
    shape = imp.data_shapes[imp.data]
    rank = len(shape) + 1
    if c.ndim > rank or (c.ndim == rank and c.shape[0] != 1):
        imp.fail(f"its {what} has shape {c.shape}, which varies along the batch axis or adds "
                 f"axes; the input is (N, {', '.join(map(str, shape))})", node)
    if c.ndim == rank:
        c = c[0]
    try:
        full = np.broadcast_shapes(c.shape, shape)
    except ValueError:
        full = None
    if full != shape:
        imp.fail(f"shape mismatch: its {what} has shape {c.shape}, which does not broadcast "
                 f"over a sample of shape {shape}", node)
    return np.broadcast_to(c, shape).reshape(-1).copy()


def _handle_arith(imp, node):
    imp.attrs(node)
    slot, _ = _data_slot(imp, node, slots=(0, 1))
    other = 1 - slot
    c = imp.const(node, other, "constant operand")
    c = _elementwise_constant(imp, node, c, "constant operand")
    op = node.op_type
    if op == "Add":
        scale, shift = np.ones_like(c), c
    elif op == "Sub":
        scale, shift = (np.ones_like(c), -c) if slot == 0 else (-np.ones_like(c), c)
    elif op == "Mul":
        scale, shift = c, np.zeros_like(c)
    else:  # Div
        if slot == 1:
            imp.fail("the network input is the divisor (c / x), which is not piecewise linear", node)
        if np.any(c == 0):
            imp.fail(f"its divisor holds a zero at index {np.argwhere(c == 0)[0].tolist()}", node)
        scale, shift = 1.0 / c, np.zeros_like(c)
    imp.steps.append(_ScaleStep(scale, shift, imp.layer_name(node), imp.where(node)))
    return imp.data_shapes[imp.data]


def _handle_batchnorm(imp, node):
    a = imp.attrs(node)
    slot, ok = _data_slot(imp, node)
    if not ok:
        imp.fail(f"the network input enters as parameter input {slot}", node)
    if a.get("training_mode", 0):
        imp.fail("training_mode=1 normalises with the batch statistics; export the model "
                 "in eval mode (model.eval())", node)
    shape = imp.data_shapes[imp.data]
    channels = shape[0]
    params = []
    for s, what in enumerate(("scale", "bias B", "running mean", "running variance"), start=1):
        p = imp.const(node, s, what)
        if p.shape != (channels,):
            imp.fail(f"shape mismatch: its {what} has shape {p.shape} but the input has "
                     f"{channels} channels (axis 1)", node)
        params.append(p)
    gamma, beta, mean, var = params
    denom = var + float(a.get("epsilon", 1e-5))
    if np.any(denom <= 0):
        imp.fail(f"running variance + epsilon is not positive at channel "
                 f"{int(np.argwhere(denom <= 0)[0][0])}", node)
    scale = gamma / np.sqrt(denom)
    shift = beta - mean * scale
    # Channels are axis 1 of the data: broadcast over any axes after it.
    tail = (1,) * (len(shape) - 1)
    scale = np.broadcast_to(scale.reshape((channels,) + tail), shape).reshape(-1).copy()
    shift = np.broadcast_to(shift.reshape((channels,) + tail), shape).reshape(-1).copy()
    imp.steps.append(_ScaleStep(scale, shift, imp.layer_name(node), imp.where(node)))
    return shape


def _handle_relu(imp, node):
    imp.attrs(node)
    imp.steps.append(_ActivationStep("relu", imp.layer_name(node), imp.where(node)))
    return imp.data_shapes[imp.data]


def _handle_identity(imp, node):
    imp.attrs(node)
    return imp.data_shapes[imp.data]


def _handle_dropout(imp, node):
    imp.attrs(node)
    slot, ok = _data_slot(imp, node)
    if not ok:
        imp.fail(f"the network input enters as input {slot}", node)
    # From opset 12 a third input switches training on; absent means inference.
    if imp.operand(node, 2) is not None:
        name = node.input[2]
        if name not in imp.consts or _has_batch(imp.consts[name]):
            imp.fail(f"its training_mode input {name!r} is not a constant", node)
        if np.any(np.asarray(imp.consts[name]).astype(bool)):
            imp.fail("training_mode is true, so it drops values at random; export the model in "
                     "eval mode (model.eval(), training=TrainingMode.EVAL)", node)
    return imp.data_shapes[imp.data]


def _handle_flatten(imp, node):
    a = imp.attrs(node)
    shape = imp.data_shapes[imp.data]
    rank = len(shape) + 1
    axis = a.get("axis", 1)
    if axis < 0:
        axis += rank
    if axis != 1:
        imp.fail(f"axis={a.get('axis')} would not give (batch, features) for an input of shape "
                 f"(N, {', '.join(map(str, shape))}); only axis=1 is supported", node)
    return (math.prod(shape),)


def _handle_reshape(imp, node):
    a = imp.attrs(node)
    slot, ok = _data_slot(imp, node)
    if not ok:
        imp.fail("the network input is used as the target shape", node)
    name = imp.operand(node, 1)
    if name is None or name not in imp.consts:
        imp.fail(f"its target shape {name!r} is not a constant or a computation on shapes", node)
    shape = imp.data_shapes[imp.data]
    features = math.prod(shape)
    target = list(np.asarray(imp.consts[name]).reshape(-1))
    allowzero = a.get("allowzero", 0)
    in_dims = [BATCH] + list(shape)
    out = []
    for i, t in enumerate(target):
        if t is not BATCH:
            t = int(t)
            if t == 0 and not allowzero:
                # 0 copies the input's size on that axis
                t = in_dims[i] if i < len(in_dims) else None
        out.append(t)
    batch_ok = lambda t: t is BATCH or (imp.fixed_batch is not None and t == imp.fixed_batch)  # noqa: E731
    good = len(out) == 2 and (
        (batch_ok(out[0]) and out[1] in (-1, features))
        or (out[0] == -1 and out[1] == features))
    if not good:
        shown = ", ".join("N" if t is BATCH else str(t) for t in target)
        imp.fail(f"reshapes (N, {', '.join(map(str, shape))}) to [{shown}]; only a reshape to "
                 f"(batch, {features}) is supported", node)
    return (features,)


def _handle_cast(imp, node):
    """A Cast of the data to a float type of at least float32's precision changes nothing here."""
    a = imp.attrs(node)
    to = a.get("to")
    if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        imp.fail(f"it casts the network's values to {_dtype_name(to)}, which rounds them; only casts "
                 f"to FLOAT or DOUBLE are supported on the data", node)
    return imp.data_shapes[imp.data]


def _handle_softmax(imp, node):
    a = imp.attrs(node)
    shape = imp.data_shapes[imp.data]
    if len(shape) != 1:
        imp.fail(f"it acts on (N, {', '.join(map(str, shape))}); only a {node.op_type} over the "
                 f"features of a (batch, features) output can be dropped", node)
    axis = a.get("axis", 1 if imp.opset < 13 else -1)
    if axis not in (1, -1):
        imp.fail(f"axis={axis} normalises across the batch, not across the classes of each "
                 f"sample; only axis=1 or -1 is supported", node)
    imp.steps.append(_FinalStep(node.op_type, imp.layer_name(node), imp.where(node)))
    return shape


def _handle_function(imp, node):
    """A non-linear element-wise op on the data alone: a function step (a LERP table)."""
    if node.op_type == "Clip":
        lo = imp.const(node, 1, "minimum", required=False)
        hi = imp.const(node, 2, "maximum", required=False)
        if hi is None and lo is not None and lo.size == 1 and float(lo) == 0.0:
            imp.steps.append(_ActivationStep("relu", imp.layer_name(node), imp.where(node)))
            return imp.data_shapes[imp.data]
    for slot, name in enumerate(node.input):
        if name and name != imp.data and not imp.ensure_const(name):
            imp.fail(f"its input {slot} {name!r} is not a constant ({imp.describe_nonconst(name)})", node)
    function = _program(imp, imp.data, [node], node.output[0])
    imp.steps.append(_FunctionStep(function, node.op_type, imp.layer_name(node), imp.where(node)))
    return imp.data_shapes[imp.data]


def _handle_lerp(imp, node):
    """A ``pwlnet.Lerp`` node (see :mod:`pwlnet.lerp`): the table and range as they are."""
    imp.attrs(node)
    slot, ok = _data_slot(imp, node)
    if not ok:
        imp.fail(f"the network input enters as input {slot}; it must be input 0 (X)", node)
    features = math.prod(imp.data_shapes[imp.data])
    table = imp.const(node, 1, "table T")
    bounds = imp.const(node, 2, "range R")
    if table.ndim != 2 or table.shape[0] != features or table.shape[1] < 2:
        imp.fail(f"its table T has shape {table.shape}; ({features}, G+1) with G >= 1 is needed "
                 f"for an input of {features} features", node)
    if bounds.shape != (2,) or not bounds[0] < bounds[1]:
        imp.fail(f"its range R is {bounds.tolist()}; [lo, hi] with lo < hi is needed", node)
    imp.steps.append(_LerpStep(table, float(bounds[0]), float(bounds[1]), imp.layer_name(node),
                               imp.where(node)))
    return imp.data_shapes[imp.data]


#: Handlers for the node that consumes the data value.  The order is the order the
#: ops are listed in messages.
_HANDLERS = {
    "Gemm": _handle_gemm,
    "MatMul": _handle_matmul,
    "Relu": _handle_relu,
    "BatchNormalization": _handle_batchnorm,
    "Add": _handle_arith,
    "Sub": _handle_arith,
    "Mul": _handle_arith,
    "Div": _handle_arith,
    "Flatten": _handle_flatten,
    "Reshape": _handle_reshape,
    "Identity": _handle_identity,
    "Cast": _handle_cast,
    "Dropout": _handle_dropout,
    "Softmax": _handle_softmax,
    "LogSoftmax": _handle_softmax,
}

#: Attributes each op may carry; any other attribute is refused rather than ignored.
_ATTRIBUTES = {
    "Gemm": ("alpha", "beta", "transA", "transB"),
    "BatchNormalization": ("epsilon", "momentum", "training_mode"),
    "Flatten": ("axis",),
    "Reshape": ("allowzero",),
    "Dropout": ("ratio", "seed"),
    "Softmax": ("axis",),
    "LogSoftmax": ("axis",),
    "Constant": ("value", "value_float", "value_floats", "value_int", "value_ints"),
    "Shape": ("start", "end"),
    "Gather": ("axis",),
    "Unsqueeze": ("axes",),
    "Squeeze": ("axes",),
    "Concat": ("axis",),
    "Cast": ("to", "saturate"),
    "Transpose": ("perm",),
}


# --------------------------------------------------------------------------- functions
#
# Element-wise ops evaluated in float64 numpy, for 1-D functions that become LERP
# tables.  Each entry takes the node's attributes and returns the op as a function of
# its input values (arrays, or None for omitted optional inputs), ONNX defaults applied.


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:  # scipy comes with scikit-learn, but the compiler does not need it
        return np.vectorize(math.erf, otypes=[np.float64])(x)
    return erf(x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def _softplus(x):
    return np.logaddexp(0.0, x)


def _gelu(approximate):
    if approximate == "tanh":
        return lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _clip(x, lo=None, hi=None):
    return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


_SELU = (1.6732632423543772, 1.0507009873554805)

#: op type -> (attributes with defaults, factory(attrs) -> function of the inputs)
_FUNCTIONS = {
    "Add": ({}, lambda a: np.add),
    "Sub": ({}, lambda a: np.subtract),
    "Mul": ({}, lambda a: np.multiply),
    "Div": ({}, lambda a: np.divide),
    "Neg": ({}, lambda a: np.negative),
    "Identity": ({}, lambda a: lambda x: x),
    "Abs": ({}, lambda a: np.abs),
    "Exp": ({}, lambda a: np.exp),
    "Log": ({}, lambda a: np.log),
    "Sqrt": ({}, lambda a: np.sqrt),
    "Reciprocal": ({}, lambda a: np.reciprocal),
    "Pow": ({}, lambda a: np.power),
    "Max": ({}, lambda a: lambda *v: np.maximum.reduce(np.broadcast_arrays(*v))),
    "Min": ({}, lambda a: lambda *v: np.minimum.reduce(np.broadcast_arrays(*v))),
    "Relu": ({}, lambda a: lambda x: np.maximum(x, 0.0)),
    "Tanh": ({}, lambda a: np.tanh),
    "Sigmoid": ({}, lambda a: _sigmoid),
    "Erf": ({}, lambda a: _erf),
    "Softplus": ({}, lambda a: _softplus),
    "Softsign": ({}, lambda a: lambda x: x / (1.0 + np.abs(x))),
    "Mish": ({}, lambda a: lambda x: x * np.tanh(_softplus(x))),
    "Gelu": ({"approximate": "none"}, lambda a: _gelu(a["approximate"])),
    "LeakyRelu": ({"alpha": 0.01}, lambda a: lambda x: np.where(x >= 0, x, a["alpha"] * x)),
    "PRelu": ({}, lambda a: lambda x, slope: np.where(x >= 0, x, slope * x)),
    "Elu": ({"alpha": 1.0}, lambda a: lambda x: np.where(x > 0, x, a["alpha"] * np.expm1(np.minimum(x, 0)))),
    "Celu": ({"alpha": 1.0}, lambda a: lambda x: np.maximum(x, 0) + np.minimum(
        0, a["alpha"] * np.expm1(np.minimum(x, 0) / a["alpha"]))),
    "Selu": ({"alpha": _SELU[0], "gamma": _SELU[1]}, lambda a: lambda x: a["gamma"] * np.where(
        x > 0, x, a["alpha"] * np.expm1(np.minimum(x, 0)))),
    "ThresholdedRelu": ({"alpha": 1.0}, lambda a: lambda x: np.where(x > a["alpha"], x, 0.0)),
    "HardSigmoid": ({"alpha": 0.2, "beta": 0.5}, lambda a: lambda x: np.clip(a["alpha"] * x + a["beta"], 0, 1)),
    "HardSwish": ({}, lambda a: lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1)),
    "Clip": ({}, lambda a: _clip),
}

#: Non-linear element-wise ops accepted on the data alone (other inputs constant); each
#: becomes a LERP table.  Add, Sub, Mul and Div by constants stay affine steps.
FUNCTION_OPS = ("Tanh", "Sigmoid", "LeakyRelu", "PRelu", "HardSigmoid", "HardSwish", "Clip", "Elu",
                "Celu", "Selu", "Softplus", "Softsign", "Gelu", "Erf", "Mish", "ThresholdedRelu",
                "Exp", "Abs", "Pow", "Max", "Min")
for _op in FUNCTION_OPS:
    _HANDLERS[_op] = _handle_function
_ATTRIBUTES.update({op: tuple(defaults) for op, (defaults, _) in _FUNCTIONS.items() if defaults})


def _is_nonlinear(node, region):
    """Whether ``node`` is not affine in the region values ``region`` it reads."""
    reads = [n in region for n in node.input]
    if node.op_type in ("Add", "Sub", "Neg", "Identity"):
        return False
    if node.op_type == "Mul":
        return sum(reads) > 1
    if node.op_type == "Div":
        return len(reads) > 1 and reads[1]  # x / c is affine, c / x and x / x are not
    return True


def _program(imp, start, nodes, out):
    """``nodes`` (element-wise, reading ``start`` and constants) as a numpy function of ``start``.

    The function maps float64 ``(M, features)`` to ``(M, features)``; constants are
    broadcast to one value per feature, so per-channel constants give per-channel
    functions.
    """
    features = math.prod(imp.data_shapes[start])
    steps = []
    computed = {start}
    for node in nodes:
        defaults, factory = _FUNCTIONS[node.op_type]
        attrs = {**defaults, **imp.attrs(node)}
        args = []
        for slot, name in enumerate(node.input):
            if not name:
                args.append(None)
            elif name in computed:
                args.append(name)
            else:
                c = imp.const(node, slot, f"constant input {slot}")
                data = imp.data
                imp.data = start  # broadcast against the sample shape of the region's input
                try:
                    args.append(_elementwise_constant(imp, node, c, f"constant input {slot}"))
                finally:
                    imp.data = data
        steps.append((factory(attrs), args, node.output[0]))
        computed.add(node.output[0])

    def function(z):
        z = np.asarray(z, dtype=np.float64)
        if z.shape[-1] != features:
            raise ValueError(f"expected (M, {features}) values, not shape {z.shape}")
        env = {start: z}
        with np.errstate(all="ignore"):  # a table samples far tails; inf/nan are caught later
            for op, args, name in steps:
                env[name] = np.asarray(op(*[env[a] if isinstance(a, str) else a for a in args]),
                                       dtype=np.float64)
        return np.broadcast_to(env[out], z.shape).copy()

    return function


# --------------------------------------------------------------------------- folding
#
# A folder gets the node and its input values (``None`` for omitted optional inputs)
# and returns the output values.  Values are numpy arrays; shape values may be object
# arrays holding the symbolic BATCH, which only the indexing ops below let through.


def _shape_of(imp, node, sample_shape):
    a = imp.attrs(node)
    full = np.array([BATCH, *sample_shape], dtype=object)
    # Shape's start/end (opset 15) slice the shape, clamped like Python slices.
    return full[a.get("start", 0):a.get("end", len(full))]


def _fold_constant(imp, node, values):
    a = imp.attrs(node)
    if "value" in a:
        return [_tensor(imp, a["value"], f"{imp.where(node)} value")]
    if "value_float" in a:
        return [np.array(a["value_float"], dtype=np.float32)]
    if "value_floats" in a:
        return [np.array(a["value_floats"], dtype=np.float32)]
    if "value_int" in a:
        return [np.array(a["value_int"], dtype=np.int64)]
    if "value_ints" in a:
        return [np.array(a["value_ints"], dtype=np.int64)]
    imp.fail("it holds no value", node)


def _ints(imp, node, value, what):
    if value is None:
        return None
    if _has_batch(value):
        imp.fail(f"its {what} depends on the batch size", node)
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _fold_shape(imp, node, values):
    a = imp.attrs(node)
    shape = np.array(np.shape(values[0]), dtype=np.int64)
    return [shape[a.get("start", 0):a.get("end", len(shape))]]


def _fold_gather(imp, node, values):
    a = imp.attrs(node)
    data, idx = values
    if _has_batch(idx):
        imp.fail("its indices depend on the batch size", node)
    return [np.take(np.asarray(data), np.asarray(idx).astype(np.int64), axis=a.get("axis", 0))]


def _fold_unsqueeze(imp, node, values):
    a = imp.attrs(node)
    axes = a.get("axes") if "axes" in a else _ints(imp, node, values[1] if len(values) > 1 else None, "axes")
    if axes is None:
        imp.fail("it has no axes", node)
    return [np.expand_dims(np.asarray(values[0]), tuple(axes))]


def _fold_squeeze(imp, node, values):
    a = imp.attrs(node)
    axes = a.get("axes") if "axes" in a else _ints(imp, node, values[1] if len(values) > 1 else None, "axes")
    return [np.squeeze(np.asarray(values[0]), axis=None if axes is None else tuple(axes))]


def _fold_concat(imp, node, values):
    a = imp.attrs(node)
    return [np.concatenate([np.asarray(v) for v in values if v is not None], axis=a["axis"])]


def _fold_slice(imp, node, values):
    imp.attrs(node)
    data = np.asarray(values[0])
    starts = _ints(imp, node, values[1], "starts")
    ends = _ints(imp, node, values[2], "ends")
    axes = _ints(imp, node, values[3] if len(values) > 3 else None, "axes") or list(range(len(starts)))
    steps = _ints(imp, node, values[4] if len(values) > 4 else None, "steps") or [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        # Python slices clamp out-of-range bounds the way ONNX Slice specifies.
        index[ax] = slice(s, e, st)
    return [data[tuple(index)]]


def _fold_cast(imp, node, values):
    a = imp.attrs(node)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(a["to"])
    value = values[0]
    if _has_batch(value):
        if not np.issubdtype(dtype, np.integer):
            imp.fail(f"it casts a shape holding the batch size to {dtype}", node)
        return [value]
    return [np.asarray(value).astype(dtype)]


def _fold_reshape(imp, node, values):
    a = imp.attrs(node)
    data = np.asarray(values[0])
    target = _ints(imp, node, values[1], "target shape")
    if not a.get("allowzero", 0):
        target = [data.shape[i] if t == 0 else t for i, t in enumerate(target)]
    return [data.reshape(target)]


def _fold_transpose(imp, node, values):
    a = imp.attrs(node)
    return [np.transpose(np.asarray(values[0]), a.get("perm"))]


def _fold_identity(imp, node, values):
    imp.attrs(node)
    return [values[0]]


def _fold_arith(imp, node, values):
    imp.attrs(node)
    x, y = values
    if _has_batch(x) or _has_batch(y):
        imp.fail("it computes with the batch size; only indexing and concatenation of shapes "
                 "holding the batch size are supported", node)
    x, y = np.asarray(x), np.asarray(y)
    if node.op_type == "Add":
        return [x + y]
    if node.op_type == "Sub":
        return [x - y]
    if node.op_type == "Mul":
        return [x * y]
    if np.issubdtype(x.dtype, np.integer):
        if np.any(y == 0):
            imp.fail("it divides by zero", node)
        return [np.trunc(x / y).astype(x.dtype)]  # ONNX integer Div truncates toward zero
    return [x / y]


def _fold_softmax(imp, node, values):
    """Softmax of a constant (a PeLU layer's ``softmax(A)`` left unfolded by the exporter), in float64."""
    a = imp.attrs(node)
    x = values[0]
    if _has_batch(x):
        imp.fail("it computes with the batch size", node)
    x = np.asarray(x, dtype=np.float64)
    axis = a.get("axis", 1 if imp.opset < 13 else -1)
    if not -x.ndim <= axis < x.ndim:
        imp.fail(f"axis={axis} is out of range for its {x.ndim}-D input", node)
    axis %= x.ndim
    if imp.opset < 13:
        # Before opset 13 Softmax flattens the axes from ``axis`` on into one.
        flat = x.reshape(math.prod(x.shape[:axis]), -1)
        e = np.exp(flat - flat.max(axis=1, keepdims=True))
        return [(e / e.sum(axis=1, keepdims=True)).reshape(x.shape)]
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


def _fold_pow(imp, node, values):
    imp.attrs(node)
    x, y = values
    if _has_batch(x) or _has_batch(y):
        imp.fail("it computes with the batch size", node)
    x, y = np.asarray(x), np.asarray(y)
    return [np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)]


#: Folders for nodes whose inputs are all constants (or shapes).
_FOLDERS = {
    "Constant": _fold_constant,
    "Identity": _fold_identity,
    "Shape": _fold_shape,
    "Gather": _fold_gather,
    "Unsqueeze": _fold_unsqueeze,
    "Squeeze": _fold_squeeze,
    "Concat": _fold_concat,
    "Slice": _fold_slice,
    "Cast": _fold_cast,
    "Reshape": _fold_reshape,
    "Transpose": _fold_transpose,
    "Add": _fold_arith,
    "Sub": _fold_arith,
    "Mul": _fold_arith,
    "Div": _fold_arith,
    "Softmax": _fold_softmax,
    "Pow": _fold_pow,
}

#: Op types accepted on the path from the graph input to the graph output.
SUPPORTED_OPS = tuple(_HANDLERS)
#: Op types additionally accepted in subgraphs that compute constants or shapes.
FOLDABLE_OPS = tuple(op for op in _FOLDERS if op not in _HANDLERS)


# --------------------------------------------------------------------------- lowering


def _lower(imp):
    """Turn the steps into IR layers, folding element-wise affine maps into dense layers."""
    layers, notices = [], []
    pending = None  # a _ScaleStep waiting for the next dense layer
    final = None
    for step in imp.steps:
        if final is not None:
            imp.fail(f"{final.where} can only be dropped as the last operation, but "
                     f"{step.where} follows it")
        if isinstance(step, _DenseStep):
            w, b = step.weight, step.bias
            if pending is not None:
                # W (s * x + t) + b = (W * s) x + (W t + b)
                w, b = w * pending.scale[None, :], w @ pending.shift + b
                pending = None
            layers.append(Dense(w, b, name=step.name, keep_mass=step.split and _conserves(w, b)))
        elif isinstance(step, _ScaleStep):
            if pending is None and layers and isinstance(layers[-1], Dense):
                # s * (W x + b) + t = (s W) x + (s b + t)
                d = layers[-1]
                w, b = step.scale[:, None] * d.weight, step.scale * d.bias + step.shift
                layers[-1] = Dense(w, b, name=d.name, keep_mass=d.keep_mass and _conserves(w, b))
            elif pending is None:
                pending = step
            else:
                pending = _ScaleStep(pending.scale * step.scale,
                                     pending.shift * step.scale + step.shift,
                                     pending.name, f"{pending.where} and {step.where}")
        elif isinstance(step, (_ActivationStep, _FunctionStep, _LerpStep)):
            prev = layers[-1] if layers and not isinstance(layers[-1], Dense) else None
            # A function next to another activation (or a scale between them) is one
            # function of one variable, and so one table; two ReLUs around a scale are not
            # merged, the hardware has no table for them.
            compose = prev is not None and (not isinstance(step, _ActivationStep)
                                             or isinstance(prev, _Function) or prev.kind == "lerp")
            if pending is not None and not layers and isinstance(step, _ActivationStep):
                # ReLU(s * x + t) on the network input, PeLU's bucket ReLU(v - h**2): a dense
                # layer of diagonal weights s and bias t, which conserves mass when s >= 0, t <= 0.
                d = Dense(np.diag(pending.scale), pending.shift, name=pending.name,
                          keep_mass=_conserves(pending.scale, pending.shift))
                layers.append(d)
                notices.append(f"{pending.where} on the network input, before {step.where}, became a dense "
                               f"layer of {d.n_out} outputs with diagonal weights"
                               + (" (a PeLU bucket: it keeps mass)" if d.keep_mass else ""))
                pending = None
            if pending is not None and not compose:
                before = "an activation" if layers else "the network input"
                imp.fail(f"{pending.where} cannot be folded into a dense layer: it sits between "
                         f"{before} and {step.where}, and an element-wise scale and shift does not "
                         f"commute with the activation; put it directly before or after a dense layer")
            if not layers:
                imp.fail(f"the network must start with a dense layer, but {step.where} comes first")
            if compose:
                inner, outer = _step_function(prev), _step_function(step)
                s, t = (1.0, 0.0) if pending is None else (pending.scale, pending.shift)
                layers[-1] = _Function(lambda z, f=inner, g=outer, s=s, t=t: g(s * f(z) + t),
                                       f"{_describe(prev)}, {_describe(step)}", prev.name,
                                       f"{_where(prev)} .. {step.where}")
                pending = None
            elif isinstance(prev, Activation) and prev.kind == step.kind == "relu":
                continue  # relu(relu(x)) == relu(x)
            elif isinstance(step, _FunctionStep):
                layers.append(_Function(step.function, step.description, step.name, step.where))
            elif isinstance(step, _LerpStep):
                layers.append(Activation("lerp", name=step.name, table=step.table, lo=step.lo, hi=step.hi))
            else:
                layers.append(Activation(step.kind, name=step.name))
        elif isinstance(step, _FinalStep):
            final = step
            notices.append(f"dropped the trailing {step.where}: the imported "
                           f"network outputs the scores before it, which have the same argmax "
                           f"(predicted class) but are not probabilities")
        else:  # pragma: no cover - a step class without a lowering rule
            raise AssertionError(f"unknown step {step!r}")
    if pending is not None:
        imp.fail(f"{pending.where} cannot be folded into a dense layer: no dense layer is next "
                 f"to it (it follows an activation and ends the network)")
    for i, layer in enumerate(layers):
        if isinstance(layer, _Function):
            # An activation always follows a dense layer, whose outputs are its channels.
            layers[i] = _tabulate(imp, layer, layers[i - 1].n_out, notices)
    return layers, notices


def _conserves(weight, bias):
    """Whether ``y = W x + b`` conserves mass for ``x >= 0``: ``W >= 0`` and ``b <= 0``."""
    return bool(np.all(np.asarray(weight) >= 0) and np.all(np.asarray(bias) <= 0))


@dataclasses.dataclass
class _Function:
    # A function activation during lowering, before it is tabulated.
    function: object
    description: str
    name: str
    where: str


def _step_function(step):
    """The numpy function of an activation step or layer."""
    if isinstance(step, (_Function, _FunctionStep)):
        return step.function
    if isinstance(step, _LerpStep):
        return lambda z, s=step: lerp.interpolate(s.table, s.lo, s.hi, z)
    if isinstance(step, Activation) and step.kind == "lerp":
        return lambda z, s=step: lerp.interpolate(s.table, s.lo, s.hi, z)
    return lambda z: np.maximum(z, 0.0)


def _describe(step):
    if isinstance(step, (_Function, _FunctionStep)):
        return step.description
    if isinstance(step, (_LerpStep, Activation)) and getattr(step, "kind", "lerp") == "lerp":
        return "Lerp"
    return "Relu"


def _where(layer):
    return layer.where if isinstance(layer, _Function) else f"activation {layer.name!r}"


def _tabulate(imp, fn, channels, notices):
    """A function activation as a LERP table on the import range, with a notice of its error."""
    lo, hi = (DEFAULT_LERP_RANGE if imp.lerp_range is None else imp.lerp_range)
    grid = imp.lerp_grid
    span = hi - lo
    z = np.repeat(np.linspace(lo - span / 2, hi + span / 2, 8193)[:, None], channels, axis=1)
    exact = fn.function(z)
    inside = (z[:, 0] >= lo) & (z[:, 0] <= hi)
    if not np.all(np.isfinite(exact[inside])):
        bad = float(z[inside][~np.all(np.isfinite(exact[inside]), axis=1)][0, 0])
        imp.fail(f"{fn.where}: the function ({fn.description}) is not finite at {bad:g}, inside "
                 f"the LERP range [{lo:g}, {hi:g}]; import with a range where it is defined")
    table = lerp.tabulate(fn.function, lo, hi, grid, channels)
    approx = lerp.interpolate(table, lo, hi, z)
    with np.errstate(invalid="ignore"):
        err = np.abs(np.where(np.isfinite(exact), exact, np.inf) - approx).max(axis=1)
    e_in, e_out = float(err[inside].max()), float(err[~inside].max())
    notices.append(f"{fn.where}: {fn.description} imported as a LERP table of {grid} segments per "
                   f"channel over [{lo:g}, {hi:g}]: max abs error {e_in:.2g} inside the range; outside "
                   f"it the table holds its end values, off by up to {e_out:.2g} within "
                   f"{span / 2:g} beyond either end"
                   + (" (pwlnet compile moves the range onto the calibration pre-activations)"
                      if imp.lerp_range is None else ""))
    return lerp.FunctionActivation("lerp", name=fn.name, table=table, lo=lo, hi=hi, function=fn.function,
                                   description=fn.description, calibrate=imp.lerp_range is None)


# --------------------------------------------------------------------------- entry points


def _check_text(model, source):
    """Refuse names and metadata that are not UTF-8.

    ONNX strings must be UTF-8, but protobuf hands invalid ones to Python as ``bytes``
    instead of refusing the file; they would reach layer names and the compiled model's
    JSON.  The checker does not look at them.
    """
    g = model.graph
    fields = [(f"metadata key {p.key!r}", p.key) for p in model.metadata_props]
    fields += [(f"metadata value of {p.key!r}", p.value) for p in model.metadata_props]
    fields += [("an opset domain", o.domain) for o in model.opset_import]
    fields += [("a graph input's name", v.name) for v in g.input]
    fields += [("a graph output's name", v.name) for v in g.output]
    fields += [("an initializer's name", t.name) for t in g.initializer]
    for idx, node in enumerate(g.node):
        what = f"node #{idx}"
        fields += [(f"{what}'s name", node.name), (f"{what}'s op type", node.op_type),
                   (f"{what}'s domain", node.domain)]
        fields += [(f"an input of {what}", n) for n in node.input]
        fields += [(f"an output of {what}", n) for n in node.output]
        fields += [(f"an attribute name of {what}", a.name) for a in node.attribute]
    for what, value in fields:
        if not isinstance(value, str):
            raise OnnxImportError(f"{source}: is not a valid ONNX model: {what} is not UTF-8 text "
                                  f"({bytes(value)[:40]!r})", source=source)


def _check_lerp_options(source, lerp_grid, lerp_range):
    if not lerp.is_power_of_two(lerp_grid) or lerp_grid < 2:
        raise ValueError(f"{source}: the LERP grid must be a power of two of at least 2, not {lerp_grid!r}")
    if lerp_range is not None:
        lo, hi = (float(v) for v in lerp_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{source}: the LERP range must be finite with lo < hi, not {lerp_range!r}")
        lerp_range = (lo, hi)
    return int(lerp_grid), lerp_range


def import_model(model: onnx.ModelProto, source: str = "<model>", *, lerp_grid=lerp.DEFAULT_GRID,
                 lerp_range=None, output=None) -> Network:
    """Translate an in-memory ONNX model into a :class:`~pwlnet.ir.Network`.

    Parameters
    ----------
    model : onnx.ModelProto
        The model, for example from ``onnx.load``.
    source : str, optional
        How messages and ``Network.source`` refer to the model.
    lerp_grid : int, optional
        Segments per channel (a power of two) of the LERP tables that non-linear
        element-wise functions (Tanh, Sigmoid, GELU, ...; :data:`FUNCTION_OPS` and
        element-wise subgraphs of one variable) are imported as.
    lerp_range : (float, float), optional
        The input range of those tables.  By default :data:`DEFAULT_LERP_RANGE`, and
        the tables remember their function so that the compiler can tabulate it again
        on the calibrated pre-activation range; a range given here is kept.
    output : str, optional
        The graph output to import, for a graph with several.  Without it a graph with
        several outputs imports only if they all show the same scores: a classifier's
        label (an ArgMax, which the engine computes) and its probabilities (a Softmax,
        dropped; a ZipMap), as scikit-learn's exporter skl2onnx writes them.

    Returns
    -------
    pwlnet.ir.Network
        The network; its float forward pass matches the model's output (before any
        dropped trailing Softmax, see ``Network.notices``).

    Raises
    ------
    OnnxImportError
        If the model is not valid ONNX or holds anything that cannot be imported exactly.

    Notes
    -----
    A model below :data:`MIN_OPSET` is lifted to it with onnx's version converter first;
    ``Network.notices`` then says so.
    """
    source = str(source)
    if not isinstance(model, onnx.ModelProto):
        raise OnnxImportError(f"{source}: expected an onnx.ModelProto, not {type(model).__name__}",
                              source=source)
    if not model.HasField("graph") or (model.ir_version == 0 and not model.graph.node):
        raise OnnxImportError(f"{source}: is not an ONNX model (it holds no graph)", source=source)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxImportError(f"{source}: is not a valid ONNX model: {first}", source=source) from e
    except UnicodeDecodeError as e:
        # The checker's message quotes a name whose bytes are not UTF-8: the model is
        # invalid either way, and the quote cannot be shown.
        raise OnnxImportError(f"{source}: is not a valid ONNX model: it holds a name or string that is "
                              f"not UTF-8 ({e.reason} at byte {e.start} of {e.object[:40]!r})",
                              source=source) from e
    _check_text(model, source)
    lerp_grid, lerp_range = _check_lerp_options(source, lerp_grid, lerp_range)
    model, lifted = _lift_opset(model, source)
    net = _Importer(model, source, lerp_grid, lerp_range, output).run()
    if lifted:
        net.notices.insert(0, lifted)
    return net


def load_onnx(path, *, lerp_grid=lerp.DEFAULT_GRID, lerp_range=None, output=None) -> Network:
    """Read an ONNX file into a :class:`~pwlnet.ir.Network`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file.  External tensor data is read from beside it.
    lerp_grid, lerp_range
        How imported functions become LERP tables, see :func:`import_model`.
    output : str, optional
        The graph output to import, see :func:`import_model`.

    Returns
    -------
    pwlnet.ir.Network
        The network, with ``source`` set to ``path``, ``metadata`` holding the model's
        ``metadata_props`` and ``input_shape`` the per-sample shape of the graph input.

    Raises
    ------
    OnnxImportError
        If the file is missing, unreadable or not ONNX, or if the model holds anything
        pwlnet cannot import exactly; the message names the file, the node and the op.

    Examples
    --------
    >>> net = load_onnx("model.onnx")  # doctest: +SKIP
    >>> net(x_batch).argmax(axis=1)     # doctest: +SKIP
    """
    source = os.fspath(path)
    p = pathlib.Path(source)
    if not p.exists():
        raise OnnxImportError(f"{source}: no such file", source=source)
    if p.is_dir():
        raise OnnxImportError(f"{source}: is a directory, not an ONNX file", source=source)
    try:
        with open(p, "rb"):
            pass
    except OSError as e:
        raise OnnxImportError(f"{source}: cannot be read: {e.strerror or e}", source=source) from e
    try:
        model = onnx.load(source)
    except OSError as e:  # the file itself was readable: external tensor data is not
        raise OnnxImportError(f"{source}: cannot be read: {e}", source=source) from e
    except Exception as e:  # noqa: BLE001 - protobuf and onnx raise many types for bad bytes
        raise OnnxImportError(f"{source}: is not an ONNX model ({type(e).__name__}: {e})",
                              source=source) from e
    return import_model(model, source, lerp_grid=lerp_grid, lerp_range=lerp_range, output=output)
