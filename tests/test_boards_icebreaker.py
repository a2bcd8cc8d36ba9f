"""The iCEBreaker top's host link rate: the fastest rate the clock makes, and a receiver at the
nominal rate reads what the UART sends at every clock the build may choose."""

import json

import numpy as np
import pytest

from pwlnet.boards.build import DEFAULT_TARGETS_MHZ
from pwlnet.boards.icebreaker import DEFAULT_BAUD, LINK_BAUDS, MAX_LANES, auto_lanes, link_baud
from pwlnet.host import link_baud_of
from pwlnet.hw.pll import pll_config
from pwlnet.hw.uart import UARTTx

from helpers import run_streams, send

#: Every clock the bitstream build may end up at (what the PLL makes of its targets).
CLOCKS = sorted({pll_config(m * 1e6).f_out for m in DEFAULT_TARGETS_MHZ})


def test_default_is_three_megabaud():
    assert DEFAULT_BAUD == LINK_BAUDS[0] == 3_000_000
    assert link_baud(48e6) == (3_000_000, 16) and link_baud(42e6) == (3_000_000, 14)


@pytest.mark.parametrize("clk", CLOCKS, ids=lambda f: f"{f / 1e6:g}MHz")
def test_fastest_rate_within_tolerance(clk):
    baud, divisor = link_baud(clk)
    assert abs(clk / divisor / baud - 1) <= 0.02
    faster = [b for b in LINK_BAUDS if b > baud]
    for b in faster:          # each faster rate is refused at this clock
        with pytest.raises(ValueError, match="off, more than"):
            link_baud(clk, b)


def test_given_rate_is_checked():
    assert link_baud(48e6, 115_200) == (115_200, 417)
    assert link_baud(39.75e6, 3_000_000) == (3_000_000, 13)      # 1.9 % off: accepted
    with pytest.raises(ValueError, match=r"baud 3000000 at 33\.750 MHz gives 3068182 baud \(2\.3% off"):
        link_baud(33.75e6, 3_000_000)
    with pytest.raises(ValueError, match="too fast"):
        link_baud(10e6, 3_000_000)
    with pytest.raises(ValueError, match="no link rate of this board fits a 0.100 MHz clock"):
        link_baud(0.1e6)


def _line(divisor, data):
    """The UART's tx line, one sample per clock cycle, while it sends ``data``."""
    dut = UARTTx(divisor)
    line = []

    async def watch(ctx):
        while len(line) < (len(data) * 10 + 4) * divisor:
            await ctx.tick()
            line.append(ctx.get(dut.tx))

    run_streams(dut, lambda ctx: send(ctx, dut.i, data), watch)
    return np.array(line)


def _receive(line, clk, baud, n):
    """An 8N1 receiver with its own clock at ``baud``: waits for a start edge, samples each
    bit at its centre by its own time base, checks the stop bit."""
    per_bit = clk / baud             # line samples per bit at the receiver's rate
    out, t = [], 0
    for _ in range(n):
        while line[t]:
            t += 1
        bits = [int(line[int(t + (k + 0.5) * per_bit)]) for k in range(10)]
        assert bits[0] == 0 and bits[9] == 1, f"framing error at sample {t}: {bits}"
        out.append(sum(b << k for k, b in enumerate(bits[1:9])))
        t = int(t + 9.5 * per_bit)   # from the stop bit's centre, look for the next start
    return out


@pytest.mark.parametrize("clk", CLOCKS, ids=lambda f: f"{f / 1e6:g}MHz")
def test_host_receiver_reads_every_byte(clk):
    """The FT2232H samples at the nominal rate; the board's divisor is off by up to 2 %.
    Ten bytes back to back (the drift adds up within a byte, not across) with every bit
    pattern that matters: alternating, all zeros, all ones."""
    baud, divisor = link_baud(clk)
    data = [0x55, 0xAA, 0x00, 0xFF, 0x01, 0x80, 0x7E, 0x81, 0x5A, 0xA5]
    line = _line(divisor, data)
    assert _receive(line, clk, baud, len(data)) == data
    # headroom: a receiver whose own clock is 1 % off in either direction still reads them
    for skew in (0.99, 1.01):
        assert _receive(line, clk, baud * skew, len(data)) == data


def test_receiver_model_can_fail():
    """The receiver above is not lenient: 10 % off, it misreads."""
    clk = 48e6
    line = _line(16, [0x55, 0x0F])
    with pytest.raises(AssertionError):
        assert _receive(line, clk, 3_000_000 * 1.10, 2) == [0x55, 0x0F]


def test_host_takes_the_rate_from_the_build_report(tmp_path):
    model_dir = tmp_path / "icebreaker" / "m" / "model"
    model_dir.mkdir(parents=True)
    assert link_baud_of(model_dir) == DEFAULT_BAUD            # no report: the board's default
    (model_dir.parent / "report.json").write_text(json.dumps({"baud": 1000000, "baud_nominal": 1000000}))
    assert link_baud_of(model_dir) == 1_000_000
    (model_dir.parent / "report.json").write_text(json.dumps({"baud": 115200}))   # an older report
    assert link_baud_of(model_dir) == 115_200


def test_report_names_the_rate_and_its_error():
    from pwlnet.boards.build import _report_text
    r = {"model": "m", "board": "icebreaker", "device": "iCE40UP5K-SG48", "target_mhz": 39.75, "pll": "p",
         "fmax_mhz": 41.0, "timing_met": True, "lanes": 8, "lanes_why": "given",
         "macs_per_second": 8 * 48e6, "cycles_per_inference": 900, "ideal_cycles": 800,
         "inferences_per_second": 44166.0, "baud": 3057692, "baud_nominal": 3000000,
         "baud_error": 39.75e6 / 13 / 3e6 - 1, "link_inferences_per_second": 6647.0,
         "resources": {"LUT": {"used": 1, "available": 5280}}, "bitstream": "m.bin", "cache": None}
    assert "  link       3057692 baud (+1.92% from 3000000), 6647.0 inferences/s over the UART" in _report_text(r)
    r.update(baud=3000000, baud_error=0.0, target_mhz=48.0)
    assert "  link       3000000 baud, 6647.0 inferences/s over the UART" in _report_text(r)


@pytest.mark.parametrize("dims,bits,cache,lanes,why", [
    ([24, 64, 64, 4], 8, 0, 16, "two 8x8 lanes per DSP, weights in EBR"),
    ([24, 64, 64, 4], 10, 0, 8, "10-bit weights and 10-bit activations do not fit the DSP's 8x8 halves"),
    ([256, 256, 64, 4], 8, 0, 8, "the weights need SPRAM, whose 64-bit word feeds 8 lanes"),
    ([24, 64, 64, 4], 8, 16, 8, "the cached top is built with one lane per DSP"),
])
def test_auto_lanes(dims, bits, cache, lanes, why):
    from pwlnet.synth import random_model
    model = random_model(1, dims, weight_bits=bits, act_bits=bits)
    assert auto_lanes(model, cache) == (lanes, why)
    assert MAX_LANES == 16


def test_given_lanes_are_checked_before_synthesis(tmp_path):
    from pwlnet import artifact
    from pwlnet.boards.build import build_bitstream
    from pwlnet.synth import random_model
    for bits, lanes, msg in [
            (8, 17, r"^17 lanes need 9 SB_MAC16 blocks and the iCE40UP5K has 8 \(two 8x8 lanes per DSP make at "
                    r"most 16\): use --lanes 16 or fewer, or --lanes auto$"),
            (12, 9, r"^9 lanes need 9 SB_MAC16 blocks and the iCE40UP5K has 8 \(12-bit weights and 12-bit "
                    r"activations take one DSP per lane\): use --lanes 8 or fewer, or --lanes auto$"),
            (8, 0, r"^lanes must be a positive integer or 'auto', not 0$")]:
        model_dir = artifact.save(random_model(2, [6, 20, 3], weight_bits=bits, act_bits=bits), tmp_path / f"m{bits}")
        with pytest.raises(ValueError, match=msg):
            build_bitstream(model_dir, lanes=lanes, out_root=tmp_path / "b")
        assert not (tmp_path / "b").exists()        # refused before anything was written
