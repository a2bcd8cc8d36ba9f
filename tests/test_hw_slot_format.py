"""The cache slot format (pwlnet.hw.slot_format): image layout, fit checks, and the engine's own storage."""

import dataclasses

import numpy as np
import pytest

from pwlnet import code_cache
from pwlnet.hw.engine.plan import EnginePlan, pack_weight_words, requant_offset
from pwlnet.hw.slot_format import SlotFormat
from pwlnet.protocol import code_bytes, field_bytes

from helpers import compiled, fitting_entries


def _entries(model, blocks, metric, n, seed):
    """``n`` entries at random codes that fit the slots at 4 lanes."""
    return fitting_entries(model, blocks, SlotFormat(model, 4, metric), n, np.random.default_rng(seed), 60)


def _le(buf, pos, n, signed=False):
    return int.from_bytes(buf[pos:pos + n], "little", signed=signed), pos + n


@pytest.mark.parametrize("metric, requant", [("linf", "shift"), ("l2", "multiply"), ("l1", "multiply")])
def test_image_decodes_to_the_entry(metric, requant):
    net, model, blocks = compiled(3, 5, [12, 8], n_out=6, requant=requant)
    fmt = SlotFormat(model, 4, metric)
    for e in _entries(model, blocks, metric, 3, seed=1):
        img = fmt.image(e)
        assert len(img) == fmt.image_bytes
        l, pos = e.layer, 0
        words = []
        for _ in range(fmt.weight_words):
            w, pos = _le(img, pos, fmt.word_bytes)
            words.append(w)
        assert words == fmt.words(l) == pack_weight_words(l.weight, 4, fmt.weight_bits)
        for o in range(fmt.n_out):
            off, pos = _le(img, pos, fmt.off_bytes, signed=True)
            assert off == requant_offset(l.bias[o], l.multiplier[o], l.shift[o]) == fmt.offsets(l)[o]
            if fmt.mult_bytes:
                mult, pos = _le(img, pos, fmt.mult_bytes)
                assert mult == l.multiplier[o]
            shift, pos = _le(img, pos, 1)
            assert shift == l.shift[o]
        bound, pos = _le(img, pos, fmt.bound_bytes)
        assert bound == e.bound
        center = []
        for _ in range(fmt.dim):
            c, pos = _le(img, pos, fmt.code_bytes, signed=True)
            center.append(c)
        assert center == e.center.tolist() and pos == len(img)


def test_field_widths_follow_the_protocol():
    net, model, blocks = compiled(3, 5, [12, 8], n_out=6, requant="multiply")
    fmt = SlotFormat(model, 4, "l2")
    assert fmt.code_bytes == code_bytes(model.input_bits)
    assert fmt.word_bytes == field_bytes(fmt.word_bits)
    assert fmt.off_bytes == field_bytes(fmt.off_bits)
    assert fmt.mult_bytes == field_bytes(fmt.mult_bits) > 0
    assert fmt.bound_bytes == field_bytes(fmt.distance_bits)
    assert fmt.image_bytes == (fmt.weight_words * fmt.word_bytes + fmt.n_out * fmt.param_bytes
                               + fmt.bound_bytes + fmt.dim * fmt.code_bytes)
    assert SlotFormat(model, 4, "linf").mult_bits == fmt.mult_bits


def test_slot_is_stored_as_the_engine_stores_a_program():
    """The slot's words and parameters are exactly what the engine plan holds for that slot."""
    net, model, blocks = compiled(7, 4, [10], n_out=5, requant="multiply")
    fmt = SlotFormat(model, 4, "linf")
    e, f = _entries(model, blocks, "linf", 2, seed=2)
    plan = EnginePlan(model, 4, cache_slots=3, slot_format=fmt, slot_layers=[None, e.layer, f.layer])
    for s, entry in ((1, e), (2, f)):
        w0, c0 = plan.slot_word_base(s), plan.slot_chan_base(s)
        assert plan.words[w0:w0 + fmt.weight_words] == fmt.words(entry.layer)
        assert [p[0] for p in plan.params[c0:c0 + fmt.n_out]] == fmt.offsets(entry.layer)


def test_check_names_what_does_not_fit():
    net, model, blocks = compiled(7, 4, [10], n_out=5, requant="shift")
    fmt = SlotFormat(model, 4, "linf")
    (e,) = _entries(model, blocks, "linf", 1, seed=3)
    fmt.check(e)
    with pytest.raises(code_cache.EntryError, match="entry metric 'l2' differs from the slots' 'linf'"):
        fmt.check(dataclasses.replace(e, metric="l2", bound=0))
    bad = dataclasses.replace(e.layer, shift=np.full_like(e.layer.shift, fmt.max_shift + 1))
    with pytest.raises(code_cache.EntryError, match=r"channel 0: shift \d+ is outside"):
        fmt.check(dataclasses.replace(e, layer=bad))
    assert not fmt.fits(dataclasses.replace(e, layer=bad))
    with pytest.raises(code_cache.EntryError, match="bias too large"):
        fmt.check(dataclasses.replace(e, layer=dataclasses.replace(
            e.layer, bias=np.full_like(e.layer.bias, 1 << fmt.off_bits), acc_bits=fmt.off_bits + 4)))
    with pytest.raises(ValueError, match="lanes must be a positive integer, not 0"):
        SlotFormat(model, 0, "linf")
    with pytest.raises(ValueError, match="metric must be one of l2, linf, l1, not 'cosine'"):
        SlotFormat(model, 4, "cosine")
