"""Map an Amaranth component's signature to cocotb handles, once.

Amaranth's Verilog backend flattens interface members by joining their path with
``__`` (``i.payload`` becomes the port ``i__payload``); a payload with a
``lib.data`` layout stays one packed port whose fields are bit slices.  The pytest side
describes the ports with :func:`describe_ports` (a JSON-friendly dict, stored next to the
build) and the cocotb side turns that description into handles with :class:`PortMap`,
so neither side spells port names or field offsets by hand.
"""

from __future__ import annotations

from amaranth.hdl import Shape
from amaranth.lib import data, wiring

__all__ = ["describe_ports", "PortMap", "StreamPorts", "Field"]


def _shape_desc(shape):
    """``{"width", "signed"}`` of a plain shape, or ``{"width", "fields"}`` of a layout."""
    if isinstance(shape, data.Layout):
        fields = {}
        for name, field in shape:
            inner = _shape_desc(field.shape)
            inner["offset"] = field.offset
            fields[name] = inner
        return {"width": shape.size, "signed": False, "fields": fields}
    s = Shape.cast(shape)
    return {"width": s.width, "signed": s.signed}


def describe_ports(component: wiring.Component) -> dict:
    """Describe every port of ``component`` by its Verilog name.

    Returns
    -------
    dict
        ``{verilog_name: {"path": [...], "flow": "in"|"out", "width": w,
        "signed": bool, "fields": {...}}}``, where ``fields`` (only for layouts) maps a
        field name to its own description plus its bit ``offset``.
    """
    ports = {}
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        desc = _shape_desc(member.shape)
        desc["path"] = [str(p) for p in path]
        desc["flow"] = "in" if member.flow == wiring.In else "out"
        ports[name] = desc
    return ports


class Field:
    """Decoder of one field (or a whole port) from the port's unsigned integer value."""

    def __init__(self, offset, width, signed):
        self.offset, self.width, self.signed = offset, width, signed
        self._mask = (1 << width) - 1

    def decode(self, raw: int) -> int:
        v = (raw >> self.offset) & self._mask
        if self.signed and v >> (self.width - 1):
            v -= 1 << self.width
        return v


class StreamPorts:
    """Handles and payload codec of one ``lib.stream`` interface of the DUT.

    Attributes
    ----------
    valid, ready, payload :
        cocotb handles.
    width : int
        Payload width in bits.
    fields : dict of str to Field
        Field decoders when the payload has a layout, else ``{"": Field}``.
    """

    def __init__(self, dut, name, ports):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        desc = ports[f"{name}__payload"]
        self.width = desc["width"]
        self.signed = desc["signed"]
        if "fields" in desc:
            self.fields = {k: Field(f["offset"], f["width"], f["signed"])
                           for k, f in desc["fields"].items()}
        else:
            self.fields = {"": Field(0, desc["width"], desc["signed"])}
        self._mask = (1 << self.width) - 1

    def encode(self, value: int) -> int:
        """A plain (signed or unsigned) integer payload as the port's unsigned bits."""
        return int(value) & self._mask

    def pack(self, **values) -> int:
        """Fields of a layout payload (``addr=..., data=...``) as the port's unsigned bits."""
        raw = 0
        for k, v in values.items():
            f = self.fields[k]
            raw |= (int(v) & f._mask) << f.offset
        return raw

    def decode(self, raw: int) -> dict:
        """The port's unsigned bits to ``{field: int}`` (``{"": int}`` without a layout)."""
        return {k: f.decode(raw) for k, f in self.fields.items()}


class PortMap:
    """All ports of a DUT, resolved once from :func:`describe_ports`' description.

    Parameters
    ----------
    dut :
        The cocotb top-level handle.
    ports : dict
        The output of :func:`describe_ports` for the component the Verilog came from.

    Attributes
    ----------
    clk, rst :
        Clock and reset handles (Amaranth's ``sync`` domain ports).
    """

    def __init__(self, dut, ports):
        self.dut = dut
        self.ports = ports
        self.clk = dut.clk
        self.rst = dut.rst
        self._streams = {}

    def stream(self, name) -> StreamPorts:
        """The :class:`StreamPorts` of interface member ``name`` (e.g. ``"i"``)."""
        if name not in self._streams:
            if f"{name}__payload" not in self.ports:
                raise KeyError(f"the DUT has no stream {name!r}; ports: {sorted(self.ports)}")
            self._streams[name] = StreamPorts(self.dut, name, self.ports)
        return self._streams[name]
