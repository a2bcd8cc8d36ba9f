"""pwlnet.sim.netlist: the synthesized board top of the default model, simulated as a
netlist from power-up, answers INFO, INFER and COUNTERS through its UART pads as the RTL
and the golden model say; a netlist with one block RAM's initialisation dropped does not."""

import argparse
import dataclasses
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from pwlnet import artifact, golden
from pwlnet.boards.build import (BuildError, NetlistError, _report_text, add_build_arguments, build_bitstream,
                                 synthesize_netlist)
from pwlnet.compile import compile_onnx
from pwlnet.protocol import Command, LinkInfo, encode_frame
from pwlnet.sim.netlist import NetlistMismatch, netlist_sources, verify_netlist
from pwlnet.sim.verilog_check import have_iverilog
from pwlnet.synth import random_model

ONNX = Path(__file__).resolve().parents[1] / "boards" / "models" / "basicmotions_h64x64.onnx"
#: Verilator: it compiles the netlist in ~15 s and runs an inference in ~0.08 s, where
#: Icarus needs ~4 s per inference (see the README, "What is verified where").
SIMULATOR = "verilator"
INFERENCES = 40

# One worker synthesizes once for every test that needs the netlist.
synth_group = pytest.mark.xdist_group("sim-netlist")


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """The default model's board top at 48 MHz, synthesized as the bitstream build does."""
    root = tmp_path_factory.mktemp("netlist")
    model = compile_onnx(ONNX, root / "model", log=lambda *a, **k: None)
    top, netlist = synthesize_netlist(model, root / "gateware")
    return model, top, netlist


def _verify(model, top, netlist, workdir, frames=INFERENCES, simulator=SIMULATOR):
    return verify_netlist(netlist, model, top.link.info, divisor=top.divisor, clk_freq=top.clk_freq,
                          frames=frames, simulator=simulator, workdir=workdir)


@synth_group
def test_netlist_is_the_build_scripts(synthesized):
    _model, _top, netlist = synthesized
    script = (netlist.parent / "top.ys").read_text()
    # written right after synth_ice40, with the build's (empty) options, before nextpnr's JSON
    assert re.search(r"synth_ice40\s+-top top\s+write_verilog -noattr top.netlist.v\s+write_json top.json",
                     script), script
    text = netlist.read_text()
    for cell in ("SB_MAC16", "SB_RAM40_4K", "SB_PLL40_PAD", "SB_IO", "SB_LUT4"):
        assert re.search(rf"^\s*{cell} ", text, re.M), cell


@synth_group
def test_netlist_answers_as_golden(synthesized, tmp_path):
    model, top, netlist = synthesized
    check = _verify(model, top, netlist, tmp_path)
    assert check["simulator"] == SIMULATOR
    assert (check["frames"], check["inferences"]) == (INFERENCES + 2, INFERENCES)


class _Replay:
    """A transport whose device is a finished netlist simulation: every write must be the
    next request frame that was simulated, and reads return that frame's recorded reply."""

    def __init__(self, requests, replies):
        self._pending = list(zip(requests, replies))
        self._buf = bytearray()

    def write(self, data):
        request, reply = self._pending.pop(0)
        assert bytes(data) == request, "the driver sent another frame than the netlist answered"
        self._buf += reply

    def read(self, n, timeout):
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def close(self):
        pass


@synth_group
def test_host_driver_reads_the_netlists_replies(synthesized, tmp_path):
    """pwlnet.host.Device decodes what the netlist sent for the frames Device itself sends."""
    from pwlnet.host import Device
    from pwlnet.sim.netlist import run_frames

    model, top, netlist = synthesized
    info = top.link.info
    assert model.input_bits == model.layers[-1].out_bits == 8      # one byte per code on the wire
    codes = np.random.default_rng(11).integers(-128, 128, size=(6, model.input_dim))
    requests = [encode_frame(Command.INFO)] + [encode_frame(Command.INFER, row.astype("<i1").tobytes())
                                               for row in codes]
    reply_lens = [6 + struct.calcsize(LinkInfo._FORMAT)] + [6 + model.output_dim + 6] * len(codes)
    bound = 200 * 10 * top.divisor + 4 * info.cycles_per_inference
    replies, _ = run_frames(netlist, [(r, n, bound) for r, n in zip(requests, reply_lens)],
                            divisor=top.divisor, startup_cycles=4096, workdir=tmp_path)
    dev = Device(_Replay(requests, replies), model=model)
    assert dev.info() == info
    expect = golden.forward(model, codes)
    for row, want in zip(codes, expect):
        outputs, argmax, cycles = dev.infer(row)
        assert outputs.tolist() == want.tolist() and argmax == golden.argmax(want[None])[0] and cycles > 0


def _drop_memory_init(text):
    """``text`` with every INIT_* of the first block RAM that holds a nonzero bit set to zero,
    and that RAM's name."""
    for cell in re.finditer(r"SB_RAM40_4K #\((.*?)\) (\S+)", text, re.S):
        if re.search(r"\.INIT_[0-9A-F]\(256'h[0-9a-fx]*[1-9a-f]", cell[1]):
            params = re.sub(r"(\.INIT_[0-9A-F]\(256'h)[0-9a-fx]+\)", lambda m: m[1] + "0" * 64 + ")", cell[1])
            return text[:cell.start(1)] + params + text[cell.end(1):], cell[2]
    raise AssertionError("no block RAM with an initialisation in the netlist")


@synth_group
def test_dropped_memory_init_is_caught(synthesized, tmp_path):
    model, top, netlist = synthesized
    broken, ram = _drop_memory_init(netlist.read_text())
    assert broken != netlist.read_text()
    (tmp_path / "broken.v").write_text(broken)
    with pytest.raises(NetlistMismatch, match=r"frame \d+ \(INFER #\d+\): inputs .* the golden model gives"):
        _verify(model, top, tmp_path / "broken.v", tmp_path / "sim")


@synth_group
def test_info_of_other_rtl_is_caught(synthesized, tmp_path):
    """The INFO reply is compared with the RTL's record field by field: a netlist of other
    RTL (here: a record whose fingerprint differs by one bit) fails on frame 0."""
    model, top, netlist = synthesized
    info = dataclasses.replace(top.link.info, model_crc=top.link.info.model_crc ^ 1)
    with pytest.raises(NetlistMismatch, match=r"frame 0 \(INFO\): INFO is .*model_crc"):
        verify_netlist(netlist, model, info, divisor=top.divisor, clk_freq=top.clk_freq, frames=1,
                       simulator=SIMULATOR, workdir=tmp_path)


@pytest.mark.skipif(not have_iverilog(), reason="iverilog not installed")
@synth_group
def test_netlist_on_icarus(synthesized, tmp_path):
    # Icarus is ~50 times slower on this netlist: two inferences show it runs the same bench.
    model, top, netlist = synthesized
    check = _verify(model, top, netlist, tmp_path, frames=2, simulator="icarus")
    assert (check["frames"], check["inferences"]) == (4, 2)


def test_pll_standin_replaces_the_black_box(tmp_path):
    cells, pll = netlist_sources(tmp_path, "verilator")
    text = cells.read_text()
    assert "module SB_PLL40_PAD" not in text and "module SB_PLL40_2F_PAD" in text
    assert "module SB_PLL40_PAD" in pll.read_text()
    assert "wire clken_pulled = CLOCK_ENABLE;" in text
    (tmp_path / "icarus").mkdir()
    assert "CLOCK_ENABLE === 1'bz" in netlist_sources(tmp_path / "icarus", "icarus")[0].read_text()


def test_unconnected_defaulted_port_is_refused():
    from pwlnet.sim.netlist import _check_defaults_connected

    ram = ("  SB_RAM40_4K #(\n    .READ_MODE(2'h1)\n  ) \\m.0  (\n    .RCLK(clk),\n{}    .RE(1'h1),\n"
           "    .WCLKE(1'h1),\n    .WE(1'h1),\n    .MASK(16'h0000)\n  );\n")
    _check_defaults_connected(ram.format("    .RCLKE(1'h1),\n"))
    with pytest.raises(RuntimeError, match=r"leaves 1 defaulted cell inputs unconnected.*SB_RAM40_4K \\m.0 .RCLKE"):
        _check_defaults_connected(ram.format(""))


def test_verify_arguments(tmp_path):
    parser = add_build_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["m", "--verify-netlist", "24"])
    assert (args.verify_netlist, args.verify_simulator) == (24, "verilator")
    assert parser.parse_args(["m"]).verify_netlist == 0
    model_dir = artifact.save(random_model(3, [4, 4, 2]), tmp_path / "tiny")
    with pytest.raises(ValueError, match="netlist check covers builds without the cache"):
        build_bitstream(model_dir, out_root=tmp_path / "b", cache_entries=4, verify_netlist=8)
    with pytest.raises(ValueError, match="verify_netlist must be a non-negative integer, not -1"):
        build_bitstream(model_dir, out_root=tmp_path / "b", verify_netlist=-1)
    with pytest.raises(TypeError, match="info must be a LinkInfo, not None"):
        verify_netlist(tmp_path / "x.v", artifact.load(model_dir), None, divisor=16, clk_freq=48e6)


def test_report_text_names_the_netlist_check():
    r = {"model": "m", "board": "icebreaker", "device": "iCE40UP5K-SG48", "target_mhz": 48.0, "pll": "p",
         "fmax_mhz": 50.0, "timing_met": True, "lanes": 8, "cycles_per_inference": 900, "ideal_cycles": 800,
         "inferences_per_second": 53333.0, "baud": 3000000, "link_inferences_per_second": 300.0,
         "resources": {"LUT": {"used": 1, "available": 5280}}, "bitstream": "m.bin", "cache": None,
         "netlist_check": {"passed": True, "simulator": "verilator", "frames": 34, "inferences": 32,
                           "seconds": 20.0}}
    assert ("  netlist    checked on verilator: 34 frames (32 inferences) answered as the golden model, 20 s"
            in _report_text(r).splitlines())
    r["netlist_check"] = {"passed": False, "simulator": "icarus", "error": "frame 3 (INFER #2): ..."}
    assert "  netlist    FAILED on icarus: frame 3 (INFER #2): ..." in _report_text(r).splitlines()
    r["netlist_check"] = None
    assert "netlist" not in _report_text(r)


def test_netlist_error_is_a_build_error():
    # cli_build turns a BuildError into "pwlnet bitstream: error: ..." and exit status 1
    assert issubclass(NetlistError, BuildError)


@synth_group
def test_build_fails_on_a_broken_netlist(synthesized, tmp_path):
    """The flow's side of --verify-netlist: a mismatch fails the build with the first
    mismatching frame named, removes the bitstream and records the failure in the report."""
    import json

    from pwlnet.boards.build import _check_netlist, _Job

    model, top, netlist = synthesized
    gw = tmp_path / "gateware-48MHz"
    gw.mkdir()
    (gw / "top.netlist.v").write_text(_drop_memory_init(netlist.read_text())[0])
    (tmp_path / "m.bin").write_bytes(b"\0")
    job = _Job(model=model, model_name="m", board="icebreaker", out_dir=tmp_path, lanes=8, baud=None,
               engine=None, name="top", cache_entries=0, cache_metric="linf", tops={48.0: top})
    result = {"model": "m", "board": "icebreaker", "device": "iCE40UP5K-SG48", "target_mhz": 48.0,
              "requested_mhz": 48.0, "pll": "p", "fmax_mhz": 50.0, "timing_met": True, "lanes": 8,
              "cycles_per_inference": 771, "ideal_cycles": 768, "inferences_per_second": 1.0, "baud": 3000000,
              "link_inferences_per_second": 1.0, "resources": {}, "bitstream": "m.bin",
              "gateware": gw.name, "cache": None, "netlist_check": None}
    with pytest.raises(NetlistError, match=r"does not answer as the golden model: frame \d+ \(INFER #\d+\)"):
        _check_netlist(job, result, 8, SIMULATOR)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["netlist_check"]["passed"] is False and "INFER #" in report["netlist_check"]["error"]
    assert "  netlist    FAILED on verilator: frame" in (tmp_path / "report.txt").read_text()
    assert not (tmp_path / "m.bin").exists()


@pytest.mark.slow
def test_bitstream_with_netlist_check(tmp_path, capsys):
    """`make bitstream VERIFY=16`: place and route, then the netlist check in the report."""
    import json

    from pwlnet.cli import main

    model_dir = artifact.save(random_model(3, [16, 32, 10]), tmp_path / "mlp16")
    assert main(["bitstream", str(model_dir), "--target-mhz", "40", "36", "--out", str(tmp_path / "build"),
                 "--verify-netlist", "16"]) == 0
    out = tmp_path / "build" / "icebreaker" / "mlp16"
    report = json.loads((out / "report.json").read_text())
    check = report["netlist_check"]
    assert check["passed"] and (check["frames"], check["inferences"], check["simulator"]) == (18, 16, "verilator")
    assert (out / report["gateware"] / "top.netlist.v").is_file()
    assert "  netlist    checked on verilator: 18 frames (16 inferences)" in capsys.readouterr().out
