"""The compiled-model artifact: a versioned JSON description plus an npz of arrays.

A compiled model directory holds

``model.json``
    format name and version, widths, the input quantizer, one entry per layer
    (shapes, widths, requantization mode, activation, output scale), the output scale,
    provenance and a summary (accuracies, notices).
``arrays.npz``
    the integer arrays named in ``model.json``: per-feature input scale and zero
    point, and for each layer ``l<i>.weight`` ``(n_out, n_in)``, ``l<i>.bias``,
    ``l<i>.multiplier`` and ``l<i>.shift`` (per output channel); a LERP layer adds
    ``l<i>.table`` ``(n_out, 2**index_bits + 1)`` (int64 output codes) and
    ``l<i>.lerp_range`` ``(n_out, 2)`` (float64, informational: the float pre-activation
    range each table spans).

A layer's ``activation`` is ``"none"``, ``"relu"`` or ``"lerp"``; only LERP layers carry
the ``lerp`` entry (``index_bits``, ``frac_bits`` and the two array names), so a model
without LERP layers is written exactly as before.  Readers that predate LERP refuse a
LERP model by its activation name rather than misreading it.

The arithmetic these numbers drive is :mod:`pwlnet.golden`.  :func:`load` validates
everything it reads, so a damaged or foreign directory gives an error naming the file
and the field instead of a silently wrong design.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import fixedpoint as fx
from .modeldir import write_model_dir

__all__ = ["FORMAT", "VERSION", "ArtifactError", "Layer", "CompiledModel", "load", "save"]

FORMAT = "pwlnet-compiled-model"
VERSION = 1
ACTIVATIONS = ("none", "relu", "lerp")


from .errors import ArtifactError  # noqa: E402  (defined below the compiled model, re-exported)


@dataclasses.dataclass
class Layer:
    """One dense layer followed by requantization and an activation.

    ``acc = weight @ x + bias`` (int64, fits ``acc_bits``);
    ``y = saturate(round_shift(acc * multiplier, shift), out_bits)``;
    ``relu``: ``y = max(y, 0)``; ``lerp``:
    ``y = fixedpoint.lerp(y, table, index_bits, out_bits)`` with ``table`` of shape
    ``(n_out, 2**index_bits + 1)``.  ``out_scale`` is the float value of one output code.
    ``lerp_range`` (``(n_out, 2)``, float) records the pre-activation range of each
    table; the arithmetic does not use it.
    """

    weight: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    weight_bits: int
    in_bits: int
    out_bits: int
    acc_bits: int
    activation: str
    out_scale: float
    requant: str = "shift"
    name: str = ""
    table: np.ndarray | None = None
    index_bits: int | None = None
    lerp_range: np.ndarray | None = None

    @property
    def frac_bits(self) -> int | None:
        """Fraction width of a LERP layer's input code split (``out_bits - index_bits``)."""
        return None if self.index_bits is None else self.out_bits - self.index_bits

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])


@dataclasses.dataclass
class CompiledModel:
    """A quantized network: the input quantizer and a list of :class:`Layer`."""

    input_shape: tuple
    input_bits: int
    input_scale: np.ndarray
    input_zero_point: np.ndarray
    layers: list
    class_names: list | None = None
    source: dict = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)

    #: What the model is; a binarized network is a :class:`pwlnet.binary.BinaryModel` (``"binary"``).
    kind = "mlp"

    @property
    def input_dim(self) -> int:
        return int(self.input_scale.shape[0])

    @property
    def output_dim(self) -> int:
        return self.layers[-1].n_out

    @property
    def output_scale(self) -> float:
        return self.layers[-1].out_scale

    @property
    def act_bits(self) -> int:
        return self.input_bits

    @property
    def weight_bits(self) -> int:
        return max(l.weight_bits for l in self.layers)

    def validate(self, where="compiled model"):
        """Check every shape, width and range; raise :class:`ArtifactError` on the first fault."""
        def fail(msg):
            raise ArtifactError(f"{where}: {msg}")
        if self.input_scale.shape != self.input_zero_point.shape or self.input_scale.ndim != 1:
            fail(f"input scale {self.input_scale.shape} and zero point {self.input_zero_point.shape} "
                 f"must be vectors of the same length")
        if not np.all(np.isfinite(self.input_scale)) or np.any(self.input_scale <= 0):
            fail("input scale must be finite and positive")
        n = self.input_dim
        bits = self.input_bits
        for i, l in enumerate(self.layers):
            name = f"layer {i}"
            if l.weight.ndim != 2 or l.n_in != n:
                fail(f"{name}: weight shape {l.weight.shape} does not take {n} inputs")
            for f in ("bias", "multiplier", "shift"):
                if getattr(l, f).shape != (l.n_out,):
                    fail(f"{name}: {f} shape {getattr(l, f).shape}, expected ({l.n_out},)")
            if l.in_bits != bits:
                fail(f"{name}: in_bits {l.in_bits} differs from the previous layer's {bits}")
            for f in ("weight_bits", "in_bits", "out_bits"):
                try:
                    fx.check_bits(getattr(l, f), f"{name}: {f}")
                except (TypeError, ValueError) as e:
                    fail(str(e))
            wlo, whi = fx.signed_range(l.weight_bits)
            if l.weight.min(initial=0) < wlo or l.weight.max(initial=0) > whi:
                fail(f"{name}: weights outside the {l.weight_bits}-bit range [{wlo}, {whi}]")
            need = fx.accumulator_bits(l.weight, l.bias, l.in_bits)
            if l.acc_bits < need:
                fail(f"{name}: acc_bits {l.acc_bits} cannot hold the worst case ({need} bits needed)")
            if np.any(l.multiplier < 1) or np.any(l.shift < 0) or np.any(l.shift > fx.GOLDEN_MAX_BITS):
                fail(f"{name}: multipliers must be >= 1 and shifts in 0..{fx.GOLDEN_MAX_BITS}")
            if l.acc_bits + int(l.multiplier.max()).bit_length() > fx.GOLDEN_MAX_BITS:
                fail(f"{name}: acc_bits {l.acc_bits} times the multiplier exceeds {fx.GOLDEN_MAX_BITS} bits")
            if l.requant == "shift" and np.any(l.multiplier != 1):
                fail(f"{name}: requant 'shift' needs every multiplier to be 1")
            if l.activation not in ACTIVATIONS:
                fail(f"{name}: activation {l.activation!r} is not one of {ACTIVATIONS}")
            if not (np.isfinite(l.out_scale) and l.out_scale > 0):
                fail(f"{name}: out_scale must be finite and positive, not {l.out_scale}")
            if l.activation == "lerp":
                self._validate_lerp(l, name, fail)
            elif l.table is not None or l.index_bits is not None:
                fail(f"{name}: a LERP table on a layer whose activation is {l.activation!r}")
            n, bits = l.n_out, l.out_bits
        if not self.layers:
            fail("holds no layer")
        return self

    @staticmethod
    def _validate_lerp(l, name, fail):
        k = l.index_bits
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= l.out_bits:
            fail(f"{name}: LERP index_bits must be an integer in 0..{l.out_bits} (out_bits), not {k!r}")
        if l.table is None or l.table.shape != (l.n_out, (1 << k) + 1):
            fail(f"{name}: LERP table shape {None if l.table is None else l.table.shape}, expected "
                 f"({l.n_out}, {(1 << k) + 1})")
        lo, hi = fx.signed_range(l.out_bits)
        if l.table.min(initial=0) < lo or l.table.max(initial=0) > hi:
            fail(f"{name}: LERP table entries outside the {l.out_bits}-bit range [{lo}, {hi}]")
        if l.lerp_range is not None and l.lerp_range.shape != (l.n_out, 2):
            fail(f"{name}: LERP range shape {l.lerp_range.shape}, expected ({l.n_out}, 2)")


_INT_ARRAYS = ("weight", "bias", "multiplier", "shift")


def save(model: CompiledModel, out_dir) -> Path:
    """Write ``model`` to ``out_dir`` (created or replaced as a whole; never half-written).

    A binarized model (:class:`pwlnet.binary.BinaryModel`) is written in its own format
    by :func:`pwlnet.binary.save`."""
    if getattr(model, "kind", "mlp") == "binary":
        from . import binary
        return binary.save(model, out_dir)
    model.validate()
    out_dir = Path(out_dir)
    desc = {
        "format": FORMAT,
        "version": VERSION,
        "input": {"shape": list(model.input_shape), "dim": model.input_dim, "bits": model.input_bits,
                  "scale": "input.scale", "zero_point": "input.zero_point"},
        "layers": [],
        "output": {"dim": model.output_dim, "scale": model.output_scale, "class_names": model.class_names},
        "source": model.source,
        "summary": model.summary,
    }
    arrays = {"input.scale": model.input_scale.astype(np.float64),
              "input.zero_point": model.input_zero_point.astype(np.int64)}
    for i, l in enumerate(model.layers):
        entry = {"name": l.name, "n_in": l.n_in, "n_out": l.n_out, "weight_bits": l.weight_bits,
                 "in_bits": l.in_bits, "out_bits": l.out_bits, "acc_bits": l.acc_bits,
                 "requant": l.requant, "activation": l.activation, "out_scale": l.out_scale}
        for f in _INT_ARRAYS:
            entry[f] = f"l{i}.{f}"
            arrays[f"l{i}.{f}"] = np.asarray(getattr(l, f), dtype=np.int64)
        if l.activation == "lerp":
            entry["lerp"] = {"index_bits": int(l.index_bits), "frac_bits": int(l.frac_bits),
                             "table": f"l{i}.table"}
            arrays[f"l{i}.table"] = np.asarray(l.table, dtype=np.int64)
            if l.lerp_range is not None:
                entry["lerp"]["range"] = f"l{i}.lerp_range"
                arrays[f"l{i}.lerp_range"] = np.asarray(l.lerp_range, dtype=np.float64)
        desc["layers"].append(entry)
    return write_model_dir(out_dir, desc, arrays)


def load(path) -> CompiledModel:
    """Read and validate a compiled-model directory (or its ``model.json``).

    A binarized model's directory (format ``pwlnet-binary-model``) gives a
    :class:`pwlnet.binary.BinaryModel`; readers that predate it refuse it by its format name."""
    path = Path(path)
    if path.is_file() and path.name == "model.json":
        path = path.parent
    jpath, npath = path / "model.json", path / "arrays.npz"
    if not jpath.is_file():
        raise ArtifactError(f"{path}: not a compiled model directory (no model.json); "
                            f"make one with 'pwlnet compile MODEL.onnx --out {path}'")
    try:
        desc = json.loads(jpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{jpath}: unreadable: {e}") from None
    if not isinstance(desc, dict):
        raise ArtifactError(f"{jpath}: not a compiled-model description (a JSON object), but a "
                            f"{type(desc).__name__}")
    from . import binary
    if isinstance(desc, dict) and desc.get("format") == binary.FORMAT:
        return binary.load_dir(path, desc)
    if desc.get("format") != FORMAT:
        raise ArtifactError(f"{jpath}: format is {desc.get('format')!r}, expected {FORMAT!r}")
    version = desc.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise ArtifactError(f"{jpath}: version {version} was written by a newer pwlnet (this pwlnet reads "
                            f"version {VERSION}); update pwlnet, or compile the model again with this one")
    if version != VERSION:
        raise ArtifactError(f"{jpath}: version {desc.get('version')!r} is not supported "
                            f"(this pwlnet reads version {VERSION}); recompile the model")
    arrays = None
    try:
        with open(npath, "rb") as f:    # closed here even when the archive is refused
            z = np.load(f, allow_pickle=False)
            if isinstance(z, np.lib.npyio.NpzFile):
                with z:
                    arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        # a damaged archive: truncated, not a zip, or a member whose CRC does not match
        raise ArtifactError(f"{npath}: unreadable: {e}") from None
    if arrays is None:
        raise ArtifactError(f"{npath}: not an .npz archive of arrays but a single array")

    def arr(name, where):
        if name not in arrays:
            raise ArtifactError(f"{npath}: array {name!r} named by {where} is missing")
        return arrays[name]

    try:
        inp = desc["input"]
        layers = []
        for i, e in enumerate(desc["layers"]):
            ints = {f: arr(e[f], f"layers[{i}].{f}").astype(np.int64) for f in _INT_ARRAYS}
            lerp = e.get("lerp")
            if lerp is not None:
                ints["table"] = arr(lerp["table"], f"layers[{i}].lerp.table").astype(np.int64)
                ints["index_bits"] = int(lerp["index_bits"])
                if int(lerp["frac_bits"]) != int(e["out_bits"]) - ints["index_bits"]:
                    raise ArtifactError(f"{jpath}: layers[{i}].lerp: frac_bits {lerp['frac_bits']} + "
                                        f"index_bits {lerp['index_bits']} must equal out_bits {e['out_bits']}")
                if "range" in lerp:
                    ints["lerp_range"] = arr(lerp["range"], f"layers[{i}].lerp.range").astype(np.float64)
            layers.append(Layer(**ints, weight_bits=int(e["weight_bits"]), in_bits=int(e["in_bits"]),
                                out_bits=int(e["out_bits"]), acc_bits=int(e["acc_bits"]),
                                activation=e["activation"], out_scale=float(e["out_scale"]),
                                requant=e.get("requant", "shift"), name=e.get("name", "")))
        model = CompiledModel(
            input_shape=tuple(inp["shape"]), input_bits=int(inp["bits"]),
            input_scale=arr(inp["scale"], "input.scale").astype(np.float64),
            input_zero_point=arr(inp["zero_point"], "input.zero_point").astype(np.int64),
            layers=layers, class_names=desc["output"].get("class_names"),
            source=desc.get("source", {}), summary=desc.get("summary", {}))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, ArtifactError):
            raise
        raise ArtifactError(f"{jpath}: missing or malformed field: {e}") from None
    return model.validate(where=str(path))
