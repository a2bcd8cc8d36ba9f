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
from pwlnet.hw.slot_format import SlotFormat
from pwlnet.protocol import CacheInfo, Command, LinkInfo, encode_frame
from pwlnet.sim.netlist import NetlistMismatch, netlist_sources, verify_netlist, verify_top
from pwlnet.sim.verilog_check import have_iverilog
from pwlnet.synth import random_model

ONNX = Path(__file__).resolve().parents[1] / "boards" / "models" / "basicmotions_h64x64.onnx"
#: Verilator: it compiles the netlist in ~15 s and runs an inference in ~0.08 s, where
#: Icarus needs ~4 s per inference (see the README, "What is verified where").
SIMULATOR = "verilator"
INFERENCES = 40

# One worker synthesizes once for every test that needs the netlist.
synth_group = pytest.mark.xdist_group("sim-netlist")


# Session scope: a worker that runs other modules' tests between these keeps the netlist.
@pytest.fixture(scope="session")
def synthesized(tmp_path_factory):
    """The default model's board top at 48 MHz with the build's default lanes (16: two 8x8
    lanes per SB_MAC16), synthesized as the bitstream build does."""
    from pwlnet.boards.icebreaker import auto_lanes

    root = tmp_path_factory.mktemp("netlist")
    model = compile_onnx(ONNX, root / "model", log=lambda *a, **k: None)
    top, netlist = synthesize_netlist(model, root / "gateware", lanes=auto_lanes(model)[0])
    return model, top, netlist


def _verify(model, top, netlist, workdir, frames=INFERENCES, simulator=SIMULATOR):
    return verify_top(netlist, top, frames=frames, simulator=simulator, workdir=workdir)


#: Frames of the plain top's script besides INFO and the INFERs: the refused ones (INFER_BATCH
#: without batches, a bad CRC, an unknown command, a short INFER, the reserved 0x14,
#: LOAD_WEIGHTS with the weights built in, CACHE_INFO without a cache), then COUNTERS,
#: CLEAR_COUNTERS and COUNTERS.
PLAIN_ERRORS = 7


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
    assert (check["simulator"], check["top"]) == (SIMULATOR, "plain")
    assert (check["frames"], check["inferences"]) == (1 + INFERENCES + PLAIN_ERRORS + 3, INFERENCES)
    assert check["kinds"] == {"INFO": 1, "INFER": INFERENCES, "ERROR": PLAIN_ERRORS, "COUNTERS": 2,
                              "CLEAR_COUNTERS": 1}


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
    # Icarus is ~50 times slower on this netlist: INFO and two inferences show it runs the
    # same bench (the whole script runs on Icarus in `make verify-netlist SIM=icarus`).
    from pwlnet.sim.netlist import run_plan
    from pwlnet.sim.netlist_plan import Plan

    model, top, netlist = synthesized
    plan = Plan(model, top.link.info)
    plan.info_frame()
    for row in np.random.default_rng(2).integers(-128, 128, size=(2, model.input_dim)):
        plan.infer(row)
    run_plan(plan, netlist, divisor=top.divisor, clk_freq=top.clk_freq, simulator="icarus", workdir=tmp_path)
    assert plan.kinds == {"INFO": 1, "INFER": 2}


# ---- the iCEstick: SB_PLL40_CORE, the small link, a binarized model -----------------------

STICK_MODEL = Path(__file__).resolve().parent / "regression" / "digits_b64x64" / "compiled"
STICK_INFERENCES = 8


@pytest.fixture(scope="session")
def synthesized_stick(tmp_path_factory):
    """The stored binarized digits model (64-64-64-10) on the iCEstick's top at one lane and
    48 MHz (``SB_PLL40_CORE``, :class:`pwlnet.hw.link.SmallLink`), synthesized as the build does."""
    model = artifact.load(STICK_MODEL)
    top, netlist = synthesize_netlist(model, tmp_path_factory.mktemp("netlist_stick") / "gateware", lanes=1,
                                      mhz=48, board="icestick")
    return model, top, netlist


@pytest.mark.xdist_group("sim-netlist-stick")      # its own synthesis: free to run beside the others
def test_icestick_netlist_answers_as_golden(synthesized_stick, tmp_path):
    """The small link's build (no INFER_BATCH, no cache) is taken as it is: the same script
    as the iCEBreaker's plain top, INFER_BATCH among the refused frames."""
    model, top, netlist = synthesized_stick
    assert model.kind == "binary" and (top.link.batch, top.link.cache_info) == (0, None)
    text = netlist.read_text()
    for cell in ("SB_PLL40_CORE", "SB_RAM40_4K", "SB_IO", "SB_LUT4"):
        assert re.search(rf"^\s*{cell} ", text, re.M), cell
    assert not re.search(r"^\s*(SB_PLL40_PAD|SB_MAC16) ", text, re.M)
    check = _verify(model, top, netlist, tmp_path, frames=STICK_INFERENCES)
    assert (check["simulator"], check["top"]) == (SIMULATOR, "plain")
    assert check["kinds"] == {"INFO": 1, "INFER": STICK_INFERENCES, "ERROR": PLAIN_ERRORS, "COUNTERS": 2,
                              "CLEAR_COUNTERS": 1}
    # the same compiled bench: an INFO record of other RTL fails on frame 0
    info = dataclasses.replace(top.link.info, model_crc=top.link.info.model_crc ^ 1)
    with pytest.raises(NetlistMismatch, match=r"frame 0 \(INFO\): INFO is .*model_crc"):
        verify_netlist(netlist, model, info, divisor=top.divisor, clk_freq=top.clk_freq, frames=1,
                       simulator=SIMULATOR, workdir=tmp_path / "other")


# ---- the cached board top -----------------------------------------------------------------

#: Slots of the cached top under test, and its INFER frames per check.
CACHE_SLOTS, CACHED_INFERENCES = 4, 16
cached_group = pytest.mark.xdist_group("sim-netlist-cached")


@pytest.fixture(scope="session")
def synthesized_cached(tmp_path_factory, cache_net):
    """The cache tests' 4-8-3 network (conftest's ``cache_net``) on the cached board top with
    4 ``linf`` slots, synthesized as the bitstream build does.  Its weights are put in SPRAM
    (``weight_memory="ram"``: loaded over the link with LOAD_WEIGHTS, as the default model's
    cached build does; this small model would otherwise fit block RAM)."""
    import functools

    from pwlnet.hw.cached_engine import CachedEngine

    _net, model, blocks = cache_net
    top, netlist = synthesize_netlist(model, tmp_path_factory.mktemp("netlist_cached") / "gateware",
                                      cache_entries=CACHE_SLOTS, cache_metric="linf",
                                      engine=functools.partial(CachedEngine, weight_memory="ram"))
    assert top.link.info.weight_words > 0
    return model, blocks, top, netlist


@cached_group
def test_cached_netlist_answers_as_golden(synthesized_cached, tmp_path):
    """The cached top through the flow's check (:func:`pwlnet.boards.build._check_netlist`, as
    ``--verify-netlist`` runs it): LOAD_WEIGHTS, the host's cache writes, hits and misses, the
    cache commands and the refused frames, all as the golden cache says, and the report
    records the frames of each kind and the cache's writes, hits and misses (entries made
    from the model itself, as a build without the float network makes them)."""
    import json

    from pwlnet.boards.build import _check_netlist

    model, _blocks, top, netlist = synthesized_cached
    assert len(re.findall(r"^\s*SB_SPRAM256KA ", netlist.read_text(), re.M)) == 4
    job, result = _build_job(model, top, tmp_path, netlist.read_text(), cache_entries=CACHE_SLOTS)
    _check_netlist(job, result, CACHED_INFERENCES, SIMULATOR)
    check = json.loads((tmp_path / "report.json").read_text())["netlist_check"]
    assert (check["passed"], check["top"], check["inferences"]) == (True, "cached", CACHED_INFERENCES)
    kinds = check["kinds"]
    assert kinds["LOAD_WEIGHTS"] >= 1 and kinds["CACHE_WRITE"] >= 2 and kinds["INFER"] == CACHED_INFERENCES
    assert (kinds["CACHE_INFO"], kinds["CACHE_STATS"], kinds["CACHE_CLEAR"], kinds["ERROR"]) == (1, 2, 1, 7)
    assert check["frames"] == sum(kinds.values())
    cache = check["cache"]
    assert cache["hits"] >= 3 and cache["misses"] >= 3 and cache["hits"] + cache["misses"] == CACHED_INFERENCES
    assert (tmp_path / "m.bin").exists()


@cached_group
def test_host_driver_fills_and_reads_the_cached_netlist(synthesized_cached, tmp_path):
    """pwlnet.host.Device on the cached netlist: the weight image (LOAD_WEIGHTS), entries that
    fit the slots (CACHE_WRITE) and inputs in and out of their balls, each answer equal to the
    golden cache's (hit and slot, output codes from the entry or the network)."""
    from pwlnet.code_cache import HwCache
    from pwlnet.host import Device, weight_image
    from pwlnet.sim.netlist import run_frames
    from pwlnet.sim.netlist_plan import Plan

    from helpers import ball_points, fitting_entries

    model, blocks, top, netlist = synthesized_cached
    info, cinfo = top.link.info, top.link.cache_info
    rng = np.random.default_rng(5)
    words = weight_image(model, info.lanes, cinfo)
    entries = fitting_entries(model, blocks, SlotFormat(model, info.lanes, "linf"), 3, rng, span=60)
    inside = [q for e in entries for q in ball_points(rng, e.center, e.bound, "linf", n=2)]
    queries = np.array(inside + list(rng.integers(-128, 128, size=(4, model.input_dim))))
    # The frames Device sends, made (and answered) once in the netlist simulation.
    plan = Plan(model, info, cinfo)
    plan.info_frame()
    plan.cache_info_frame()
    plan.load_weights(words)
    for slot, e in enumerate(entries):
        plan.cache_write(slot, e)
    for q in queries:
        plan.infer(q)
    replies, _ = run_frames(netlist, [(s.request, s.reply_len, 200_000) for s in plan.steps], divisor=top.divisor,
                            startup_cycles=4096, workdir=tmp_path)
    dev = Device(_Replay([s.request for s in plan.steps], replies), model=model)
    assert (dev.info(), dev.cache_info()) == (info, cinfo)
    dev.load_weights(words)
    gold = HwCache(model, cinfo.entries, "linf")
    for slot, e in enumerate(entries):
        dev.cache_write(slot, e)
        gold.write_entry(slot, e)
    want = gold.lookup(queries)
    assert want.hit.sum() >= len(inside) and (~want.hit).sum() >= 1
    for k, q in enumerate(queries):
        r = dev.infer(q)
        assert (r.cached, r.slot if r.cached else -1) == (bool(want.hit[k]), int(want.slot[k])), k
        assert r.outputs.tolist() == want.outputs[k].tolist() and r.argmax == golden.argmax(want.outputs[k]), k


@cached_group
def test_cached_netlist_with_other_weights_is_caught(synthesized_cached, tmp_path):
    """One LOAD_WEIGHTS word off by one bit: the first INFER the network answers differs."""
    from pwlnet.host import weight_image

    model, blocks, top, netlist = synthesized_cached
    info = top.link.info
    words = list(weight_image(model, info.lanes, top.link.cache_info))
    assert words == list(top.engine.weight_words)       # what verify_top loads is the host's image
    words[0] ^= 1 << 3
    with pytest.raises(NetlistMismatch, match=r"frame \d+ \(INFER #\d+ \(miss\)\): inputs .* the golden cache gives"):
        verify_netlist(netlist, model, info, divisor=top.divisor, clk_freq=top.clk_freq, frames=CACHED_INFERENCES,
                       cache_info=top.link.cache_info, weight_words=words, net=blocks, simulator=SIMULATOR,
                       workdir=tmp_path)


def test_pll_standin_replaces_the_black_box(tmp_path):
    cells, pll = netlist_sources(tmp_path, "verilator")
    text = cells.read_text()
    assert "module SB_PLL40_PAD" not in text and "module SB_PLL40_CORE" not in text
    assert "module SB_PLL40_2F_PAD" in text
    standin = pll.read_text()
    assert "module SB_PLL40_PAD (\n  input PACKAGEPIN," in standin
    assert "module SB_PLL40_CORE (\n  input REFERENCECLK," in standin
    assert "assign PLLOUTGLOBAL = REFERENCECLK;" in standin
    assert "wire clken_pulled = CLOCK_ENABLE;" in text
    (tmp_path / "icarus").mkdir()
    assert "CLOCK_ENABLE === 1'bz" in netlist_sources(tmp_path / "icarus", "icarus")[0].read_text()


def test_black_box_cell_is_refused():
    """A cell the models only declare (here the UP5K's oscillator) would simulate as an
    empty module; the check refuses the netlist instead."""
    from pwlnet.sim.netlist import _check_modelled

    _check_modelled("  SB_PLL40_CORE #(\n    .DIVR(4'h0)\n  ) pll (\n    .REFERENCECLK(clk)\n  );\n")
    with pytest.raises(RuntimeError, match=r"the netlist uses SB_HFOSC, which yosys' cell models declare as black"):
        _check_modelled("  SB_HFOSC #(\n    .CLKHF_DIV(\"0b00\")\n  ) osc (\n    .CLKHFPU(1'h1)\n  );\n")


def test_boards_the_check_covers(tmp_path):
    """Every iCE40 board (pad or core PLL) is checked; the ECP5 and Gowin boards are refused
    before anything is built, with the cells yosys has no model of named."""
    from pwlnet.boards.registry import board, board_names
    from pwlnet.sim.netlist import check_board

    for name in board_names():
        b = board(name)
        if b.family == "ice40":
            check_board(b)
    for name, cells in (("ulx3s", "DP16KD"), ("orangecrab", "MULT18X18D"), ("tang_nano_9k", "DPX9B, SDPX9B")):
        with pytest.raises(ValueError, match=rf"the {name}'s clock is .*cannot be simulated: yosys ships no "
                                             rf"simulation model of .*{cells}.*build without --verify-netlist"):
            check_board(board(name))
    model_dir = artifact.save(random_model(1, [4, 10, 3]), tmp_path / "m")
    with pytest.raises(ValueError, match=r"tang_nano_9k's clock is 27 MHz clk27, Gowin PLL \(rPLL\)"):
        build_bitstream(model_dir, board="tang_nano_9k", verify_netlist=16, out_root=tmp_path / "b")
    assert not (tmp_path / "b").exists()


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
    with pytest.raises(ValueError, match=r"netlist check of a cached build needs at least 12 INFER frames "
                                         r"\(cache writes, hits and misses\), not verify_netlist=8"):
        build_bitstream(model_dir, out_root=tmp_path / "b", cache_entries=4, verify_netlist=8)
    with pytest.raises(ValueError, match="verify_netlist must be a non-negative integer, not -1"):
        build_bitstream(model_dir, out_root=tmp_path / "b", verify_netlist=-1)
    model = artifact.load(model_dir)
    with pytest.raises(TypeError, match="info must be a LinkInfo, not None"):
        verify_netlist(tmp_path / "x.v", model, None, divisor=16, clk_freq=48e6)
    info = LinkInfo(1, (0, 2, 0), 4, 8, 2, 8, 2, 8, 48_000_000, 3_000_000, 100, 0, 64)
    cache = CacheInfo(4, "linf", 40, 9)
    loads = dataclasses.replace(info, weight_words=20, weight_word_bytes=8)
    bad = [(dict(info=info, frames=0), ValueError, "frames must be a positive integer, not 0"),
           (dict(info=info, cache_info="linf"), TypeError, "cache_info must be a CacheInfo or None, not 'linf'"),
           (dict(info=info, batch=-1), ValueError, "batch must be a non-negative integer, not -1"),
           (dict(info=info, cache_info=cache, batch=4), ValueError,
            "a cached top answers INFER_BATCH with UNSUPPORTED; batch must be 0, not 4"),
           (dict(info=loads, cache_info=cache, frames=12), ValueError,
            r"loads its 20 weight words over the link \(LOAD_WEIGHTS\); weight_words must hold them, got none"),
           (dict(info=loads, weight_words=[0] * 20), ValueError,
            "covers the plain top with its weights in the bitstream; this one loads 20 weight words"),
           (dict(info=info, cache_info=cache, frames=11), ValueError,
            "frames must be an integer of at least 12 on the cached top, not 11")]
    for kw, error, message in bad:
        with pytest.raises(error, match=message):
            verify_netlist(tmp_path / "x.v", model, divisor=16, clk_freq=48e6, **kw)


def test_plan_checks_refuse_wrong_replies():
    """Each reply check of a plan takes the right reply and refuses one with a field changed:
    INFER's codes, cached flag and slot, an error reply's code, the counters."""
    from pwlnet.code_cache import HwCache
    from pwlnet.protocol import ERROR_REPLY
    from pwlnet.sim.netlist_plan import Plan, _error_frames

    model = random_model(3, [4, 4, 2])
    info = LinkInfo(1, (0, 2, 0), 4, 8, 2, 8, 2, 8, 48_000_000, 3_000_000, 100, 0, 64)
    codes = np.array([5, -7, 100, 0])
    plain = Plan(model, info)
    plain.infer(codes)
    out = golden.forward(model, codes[None])[0]
    reply = bytes(out.astype("<i1").tobytes()) + struct.pack("<HI", int(golden.argmax(out)), 80)
    plain.steps[0].verify(0x82, reply)
    for wrong in (bytes([reply[0] ^ 1]) + reply[1:], reply[:2] + struct.pack("<HI", 1 - golden.argmax(out), 80)):
        with pytest.raises(NetlistMismatch, match=r"INFER #0: inputs \[5, -7, 100, 0\] gave outputs"):
            plain.steps[0].verify(0x82, wrong)
    with pytest.raises(NetlistMismatch, match=r"INFER #0: reply command 0xff \(error BAD_CRC for command 0x02\)"):
        plain.steps[0].verify(ERROR_REPLY, b"\x01\x02")
    _error_frames(plain)
    crc_step = next(s for s in plain.steps if "CRC" in s.name)
    crc_step.verify(ERROR_REPLY, b"\x01\x02")
    with pytest.raises(NetlistMismatch, match="error reply 0302, expected 0102"):
        crc_step.verify(ERROR_REPLY, b"\x03\x02")
    plain.counters()
    # one frame (the INFER; the refused ones are errors) plus COUNTERS itself
    want = {"frames": 2, "inferences": 1, "errors": len(plain.steps) - 2, "busy_cycles": 80, "uart_errors": 0}
    plain.steps[-1].verify(0x83, struct.pack("<5I", *want.values()))
    with pytest.raises(NetlistMismatch, match="COUNTERS #0: counters"):
        plain.steps[-1].verify(0x83, struct.pack("<5I", *dict(want, errors=0).values()))

    cached = Plan(model, info, CacheInfo(2, "linf", 40, 9))
    assert cached.infer(codes) == (False, -1)
    miss = HwCache(model, 2, "linf").lookup(codes[None]).outputs[0]
    reply = bytes(miss.astype("<i1").tobytes()) + struct.pack("<HI", int(golden.argmax(miss)), 80)
    cached.steps[0].verify(0x82, reply + b"\x00\x00")
    with pytest.raises(NetlistMismatch, match=r"INFER #0 \(miss\): .* answered with cached=1 slot=0"):
        cached.steps[0].verify(0x82, reply + b"\x01\x00")


def test_report_text_names_the_netlist_check():
    r = {"model": "m", "board": "icebreaker", "device": "iCE40UP5K-SG48", "target_mhz": 48.0, "pll": "p",
         "fmax_mhz": 50.0, "timing_met": True, "lanes": 8, "lanes_why": "given", "macs_per_second": 384e6,
         "cycles_per_inference": 900, "ideal_cycles": 800,
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


def _build_job(model, top, out, netlist_text, cache_entries=0):
    """A build's job and report for :func:`pwlnet.boards.build._check_netlist`: ``top`` kept at
    48 MHz, ``netlist_text`` as its netlist, a stand-in bitstream ``m.bin``."""
    from pwlnet.boards.build import _Job

    gw = out / "gateware-48MHz"
    gw.mkdir()
    (gw / "top.netlist.v").write_text(netlist_text)
    (out / "m.bin").write_bytes(b"\0")
    job = _Job(model=model, model_name="m", board="icebreaker", out_dir=out, lanes=8, baud=None, engine=None,
               name="top", cache_entries=cache_entries, cache_metric="linf", tops={48.0: top})
    result = {"model": "m", "board": "icebreaker", "device": "iCE40UP5K-SG48", "target_mhz": 48.0,
              "requested_mhz": 48.0, "pll": "p", "fmax_mhz": 50.0, "timing_met": True, "lanes": 8,
              "lanes_why": "given", "macs_per_second": 384e6, "cycles_per_inference": 771, "ideal_cycles": 768,
              "inferences_per_second": 1.0, "baud": 3000000, "link_inferences_per_second": 1.0, "resources": {},
              "bitstream": "m.bin", "gateware": gw.name, "cache": None, "netlist_check": None}
    return job, result


@synth_group
def test_build_fails_on_a_broken_netlist(synthesized, tmp_path):
    """The flow's side of --verify-netlist: a mismatch fails the build with the first
    mismatching frame named, removes the bitstream and records the failure in the report."""
    import json

    from pwlnet.boards.build import _check_netlist

    model, top, netlist = synthesized
    job, result = _build_job(model, top, tmp_path, _drop_memory_init(netlist.read_text())[0])
    with pytest.raises(NetlistError, match=r"does not answer as the golden model: frame \d+ \(INFER #\d+\)"):
        _check_netlist(job, result, 8, SIMULATOR)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["netlist_check"]["passed"] is False and "INFER #" in report["netlist_check"]["error"]
    assert "  netlist    FAILED on verilator: frame" in (tmp_path / "report.txt").read_text()
    assert not (tmp_path / "m.bin").exists()
