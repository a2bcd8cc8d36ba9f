# amaranth: UnusedElaboratable=no
"""The cached engine's entry writer (pwlnet.hw.entry_writer) alone, in Amaranth's simulator.

A slot image (:meth:`pwlnet.hw.slot_format.SlotFormat.image`) goes in byte by byte; out
must come the slot's weight words and channel parameters at the engine's addresses of that
slot, and its center codes with the bound for the comparator bank, the last one committing.
(The engine and the bank are built only for their write-port layouts and slot addresses.)
"""

import numpy as np
import pytest

from pwlnet.hw.comparator_bank import ComparatorBank
from pwlnet.hw.engine import MLPEngine
from pwlnet.hw.entry_writer import EntryWriter
from pwlnet.hw.slot_format import SlotFormat

from helpers import compiled, fitting_entries, run_streams

LANES, ENTRIES = 4, 3          # a non-power-of-two N: slot 3 has no program


def _setup(metric, requant):
    net, model, blocks = compiled(5, 4, [10], n_out=5, requant=requant)
    fmt = SlotFormat(model, LANES, metric)
    eng = MLPEngine(model, LANES, cache_slots=ENTRIES, slot_format=fmt)
    bank = ComparatorBank(ENTRIES, model.input_dim, model.input_bits, metric)
    writer = EntryWriter(fmt, ENTRIES, word_base=[eng.slot_word_base(s) for s in range(ENTRIES)],
                         chan_base=[eng.slot_chan_base(s) for s in range(ENTRIES)],
                         weight_words=len(eng.weight_words), engine_layout=eng.slot_write_layout,
                         bank_layout=bank.w.payload.shape())
    entries = fitting_entries(model, blocks, fmt, 2, np.random.default_rng(1), 50)
    return fmt, eng, writer, entries


def _expected(fmt, eng, slot, e):
    """The engine beats and bank beats a write of ``e`` to ``slot`` must produce."""
    l = e.layer
    w0, c0 = eng.slot_word_base(slot), eng.slot_chan_base(slot)
    engine = [(0, w0 + k, w) for k, w in enumerate(fmt.words(l))]
    engine += [(1, c0 + o, off, int(l.multiplier[o]) if fmt.mult_bits else None, int(l.shift[o]))
               for o, off in enumerate(fmt.offsets(l))]
    bank = [(slot, i, int(c), e.bound, int(i == fmt.dim - 1)) for i, c in enumerate(e.center)]
    return engine, bank


@pytest.mark.parametrize("metric, requant", [("linf", "shift"), ("l2", "multiply")])
def test_image_becomes_engine_and_bank_writes(metric, requant):
    fmt, eng, dut, (a, b) = _setup(metric, requant)
    writes = [(2, a), (3, b), (0, b)]          # slot 3: consumed, writes nothing
    got_engine, got_bank = [], []
    log = {"held_while_busy": None, "clears": 0, "done": False}
    rng = np.random.default_rng(7)

    async def host(ctx):
        ctx.set(dut.quiet, 0)
        # the writer waits for `quiet`, and says so with `hold`
        ctx.set(dut.cw.valid, 1)
        ctx.set(dut.cw.payload.slot, writes[0][0])
        ctx.set(dut.cw.payload.data, fmt.image(writes[0][1])[0])
        for _ in range(6):
            _, _, ready, hold = await ctx.tick().sample(dut.cw.ready, dut.hold)
            assert not ready
        log["held_while_busy"] = bool(hold)
        ctx.set(dut.quiet, 1)
        for slot, e in writes:
            for byte in fmt.image(e):
                ctx.set(dut.cw.valid, 1)
                ctx.set(dut.cw.payload.slot, slot)
                ctx.set(dut.cw.payload.data, byte)
                await ctx.tick().until(dut.cw.ready)
                ctx.set(dut.cw.valid, 0)
                while rng.random() < 0.3:
                    await ctx.tick()
        # a clear strobe reaches the bank once
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for _ in range(6):
            _, _, bank_clear = await ctx.tick().sample(dut.bank_clear)
            log["clears"] += bank_clear
        await ctx.tick().repeat(4)
        assert ctx.get(dut.idle) and not ctx.get(dut.hold)
        log["done"] = True

    async def sinks(ctx):
        while not log["done"]:
            er, br = int(rng.random() >= 0.3), int(rng.random() >= 0.3)
            ctx.set(dut.engine.ready, er)
            ctx.set(dut.bank.ready, br)
            _, _, ev, ep, bv, bp = await ctx.tick().sample(dut.engine.valid, dut.engine.payload,
                                                           dut.bank.valid, dut.bank.payload)
            if er and ev:
                if ep.kind:
                    got_engine.append((1, int(ep.addr), int(ep.off), int(ep.mult) if fmt.mult_bits else None,
                                       int(ep.shift)))
                else:
                    got_engine.append((0, int(ep.addr), int(ep.word)))
            if br and bv:
                assert bp.valid
                got_bank.append((int(bp.slot), int(bp.index), int(bp.codes[0]), int(bp.bound), int(bp.commit)))

    run_streams(dut, host, sinks)
    want_engine, want_bank = [], []
    for slot, e in writes:
        if slot < ENTRIES:
            en, bk = _expected(fmt, eng, slot, e)
            want_engine += en
            want_bank += bk
    assert log["held_while_busy"] is True
    assert got_engine == want_engine
    assert got_bank == want_bank
    assert log["clears"] == 1


def test_slot_bases_must_match_the_slots():
    fmt, eng, _, _ = _setup("linf", "shift")
    with pytest.raises(ValueError, match="word_base and chan_base must give 3 slots, not 2 and 3"):
        EntryWriter(fmt, 3, word_base=[0, 1], chan_base=[0, 1, 2], weight_words=4,
                    engine_layout=eng.slot_write_layout, bank_layout=eng.slot_write_layout)
