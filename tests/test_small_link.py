# amaranth: UnusedElaboratable=no
"""The small link (:class:`pwlnet.hw.link.SmallLink`, the iCEstick's): the iCEstick top with a
stored binarized model in Amaranth's simulator, driven by the host driver, and a slice of
the link fuzzer on its ``small`` build under Verilator."""

from pathlib import Path

import numpy as np
import pytest

from pwlnet import artifact, golden
from pwlnet.host import Device, SimTransport
from pwlnet.protocol import ErrorCode
from pwlnet.sim import link_fuzz as lf

REG = Path(__file__).resolve().parent / "regression" / "basicmotions_b64x64"


def test_icestick_top_answers_the_host_driver():
    """INFO, INFER (INFER_BATCH is refused and the driver falls back to INFER), COUNTERS and
    CLEAR_COUNTERS on the iCEstick's top with basicmotions_b64x64 at its one lane; every
    output equals the stored golden codes."""
    model = artifact.load(REG / "compiled")
    codes = np.load(REG / "codes_in.npy")[:3]
    want = np.load(REG / "codes_out.npy")[:3]
    assert np.array_equal(golden.forward(model, codes), want)
    with SimTransport(model, lanes=1, divisor=4, board="icestick") as tr:
        assert type(tr.top.link).__name__ == "SmallLink"
        dev = Device(tr, model=model)
        info = dev.info()
        assert (info.lanes, info.weight_words) == (1, 0)
        cpi = tr.top.engine.cycles_per_inference
        assert info.cycles_per_inference == cpi
        outputs, argmax, cycles = dev.infer_batch(codes)
        assert np.array_equal(outputs, want) and np.array_equal(argmax, np.argmax(want, axis=1))
        assert len(set(cycles)) == 1 and 0 < cycles[0] <= cpi       # the engine never waits on this link
        c = dev.counters()
        # INFO, the refused INFER_BATCH (an error, not a frame), three INFERs, this COUNTERS;
        # busy cycles are the replies' cycles
        assert c == {"frames": 5, "inferences": 3, "errors": 1, "busy_cycles": int(sum(cycles)), "uart_errors": 0}
        dev.clear_counters()
        assert dev.counters() == {"frames": 1, "inferences": 0, "errors": 0, "busy_cycles": 0, "uart_errors": 0}
    # the full link counts the same cycles for the same engine
    with SimTransport(model, lanes=1, divisor=4, board="icebreaker") as tr:
        assert type(tr.top.link).__name__ == "Link"
        assert Device(tr, model=model).infer(codes[0])[2] == cycles[0]


def test_the_small_build_survives_a_fuzzing_slice(tmp_path):
    """300 fuzzed frames (random, truncated, corrupted, oversized, back to back, line errors)
    on the small link's build: every reply byte equals the reference's, no hang."""
    r = lf.campaign(300, seed=1, builds=("small",), workdir=tmp_path, log=lambda *a: None)
    report = lf.format_result(r, 300, 1)
    assert r.ok and r.steps == 300, report
    assert r.counter_checks >= 2 and r.unchecked == 0, report
    for code in (ErrorCode.BAD_CRC, ErrorCode.BAD_LENGTH, ErrorCode.UNKNOWN_COMMAND, ErrorCode.TIMEOUT,
                 ErrorCode.UNSUPPORTED):
        assert r.answers[code.name] > 0, report
    for reply in ("INFO reply", "INFER reply", "COUNTERS reply", "CLEAR_COUNTERS reply"):
        assert r.answers[reply] > 0, report


def test_the_small_link_refuses_what_it_cannot_do():
    from pwlnet.boards.top import BoardTop
    from pwlnet.hw.engine import MLPEngine
    from pwlnet.synth import random_model
    model = random_model(3, [4, 8, 3])
    ram = lambda m, p, target: MLPEngine(m, p, target=target, weight_memory="ram")  # noqa: E731
    with pytest.raises(ValueError, match="^the small link cannot load weights at run time"):
        BoardTop(model, lanes=2, clk_freq=48e6, board="icestick", engine=ram)
    with pytest.raises(ValueError, match="^link must be 'full' or 'small', not 'tiny'"):
        BoardTop(model, lanes=2, clk_freq=48e6, link="tiny")
