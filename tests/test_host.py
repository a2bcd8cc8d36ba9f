"""End to end: host driver -> simulated UART pins -> board top level (link + real engine)."""

import argparse

import numpy as np
import pytest

from pwlnet import artifact, cache_host, code_cache, golden
from pwlnet.host import (CacheStats, Device, DeviceError, LinkError, SimTransport, add_run_arguments, cli_run)
from pwlnet.hw.slot_format import SlotFormat
from pwlnet.protocol import CacheInfo, Command, ErrorCode, encode_frame
from pwlnet.synth import random_model


@pytest.fixture(scope="module")
def model():
    return random_model(11, [4, 8, 3])


@pytest.fixture(scope="module")
def device(model):
    transport = SimTransport(model, lanes=8, divisor=6)
    yield Device(transport, model=model)
    transport.close()


def test_info(device, model):
    info = device.info()
    assert (info.input_dim, info.output_dim, info.lanes, info.input_bits) == (4, 3, 8, 8)
    assert info.clk_hz == 1_000_000 and info.baud == round(1e6 / 6)
    assert info.cycles_per_inference > 0


def test_infer_matches_golden(device, model):
    rng = np.random.default_rng(3)
    codes = rng.integers(-128, 128, size=(3, model.input_dim))
    codes[0] = 127    # extremes saturate somewhere
    outs, amax, cycles = device.infer_batch(codes)
    expect = golden.forward(model, codes)
    np.testing.assert_array_equal(outs, expect)
    np.testing.assert_array_equal(amax, golden.argmax(expect))
    assert len(set(cycles.tolist())) == 1 and cycles[0] > 0


def _error_reply(device):
    cmd, payload = device.receive()
    assert cmd == 0xFF, f"expected an error reply, got 0x{cmd:02x}"
    return ErrorCode(payload[0]), payload[1]


def test_bad_frames_then_good(device, model):
    x = np.array([1, -2, 3, -4])
    expect = golden.forward(model, x[None])[0]
    good = encode_frame(Command.INFER, x.astype(np.int8).tobytes())

    bad = bytearray(good)
    bad[-1] ^= 0x80
    device.transport.write(bytes(bad))
    assert _error_reply(device) == (ErrorCode.BAD_CRC, Command.INFER)
    np.testing.assert_array_equal(device.infer(x)[0], expect)

    with pytest.raises(DeviceError, match="BAD_LENGTH") as e:
        device.request(Command.INFER, b"\x01\x02")
    assert e.value.code == ErrorCode.BAD_LENGTH
    np.testing.assert_array_equal(device.infer(x)[0], expect)

    with pytest.raises(DeviceError, match="UNKNOWN_COMMAND"):
        device.request(0x66)
    with pytest.raises(DeviceError, match="UNSUPPORTED"):
        device.request(Command.CACHE_CLEAR)
    np.testing.assert_array_equal(device.infer(x)[0], expect)


def test_garbage_and_timeout(device, model):
    x = np.array([5, 6, 7, 8])
    expect = golden.forward(model, x[None])[0]
    device.transport.write(b"\x00\x11\x22noise\xff")
    np.testing.assert_array_equal(device.infer(x)[0], expect)
    # Half a frame, then silence: the device gives up and says so.
    device.transport.write(encode_frame(Command.INFER, bytes(4))[:5])
    assert _error_reply(device) == (ErrorCode.TIMEOUT, Command.INFER)
    np.testing.assert_array_equal(device.infer(x)[0], expect)


def test_counters(device):
    # infer() asks the board for its INFO once, on first use; do that before clearing so
    # the count below holds whichever test ran first on this device.
    device.info()
    device.clear_counters()
    device.infer([0, 0, 0, 0])
    with pytest.raises(DeviceError):
        device.request(0x70)
    c = device.counters()
    assert (c["inferences"], c["errors"], c["uart_errors"]) == (1, 1, 0)
    assert c["frames"] == 2 and c["busy_cycles"] > 0


def test_wrong_model_detected(device):
    other = random_model(12, [4, 8, 3])
    with pytest.raises(LinkError, match="another model"):
        Device(device.transport, model=other).info()


def test_no_reply_is_a_link_error(model):
    class Dead:
        def write(self, data):
            pass

        def read(self, n, timeout):
            return b""

    with pytest.raises(LinkError, match="timed out"):
        Device(Dead(), timeout=0.01).info()


def test_cli_run_sim(tmp_path, model, capsys):
    artifact.save(model, tmp_path / "m")
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, model.input_dim))
    np.save(tmp_path / "x.npy", x)
    parser = add_run_arguments(argparse.ArgumentParser())
    args = parser.parse_args([str(tmp_path / "m"), "--inputs", str(tmp_path / "x.npy"), "--sim",
                              "--outputs", str(tmp_path / "y.npy")])
    assert cli_run(args) == 0
    out = capsys.readouterr().out
    assert "2 inferences, 2 match the golden model, 0 differ" in out
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y, golden.predict(model, x)[0])


def test_cli_run_bad_inputs(tmp_path, model, capsys):
    artifact.save(model, tmp_path / "m")
    np.save(tmp_path / "x.npy", np.zeros((2, 7)))
    args = add_run_arguments(argparse.ArgumentParser()).parse_args(
        [str(tmp_path / "m"), "--inputs", str(tmp_path / "x.npy"), "--sim"])
    assert cli_run(args) == 2
    assert "expected (N, 4)" in capsys.readouterr().err


def test_spram_weights_loaded_over_the_link():
    # Weights held in (simulated) SPRAM arrive with LOAD_WEIGHTS before the first inference.
    from pwlnet.host import weight_image
    from pwlnet.hw.engine import MLPEngine

    m = random_model(13, [4, 12, 3])
    ram_engine = lambda model, lanes, target: MLPEngine(model, lanes, target=target, weight_memory="ram")  # noqa: E731
    with SimTransport(m, lanes=8, divisor=6, engine=ram_engine) as transport:
        dev = Device(transport, model=m)
        info = dev.info()
        words = weight_image(m, 8)
        assert info.weight_words == len(words) and info.weight_word_bytes == 8
        # A payload that is not whole words is refused, and nothing is written.
        with pytest.raises(DeviceError, match="BAD_LENGTH"):
            dev.request(Command.LOAD_WEIGHTS, b"\0\0" + bytes(11))
        dev.load_weights(words)
        # A corrupted LOAD_WEIGHTS frame is refused before anything reaches the engine.
        bad = bytearray(encode_frame(Command.LOAD_WEIGHTS, b"\0\0" + b"\xff" * 64))
        bad[-1] ^= 1
        transport.write(bytes(bad))
        assert _error_reply(dev) == (ErrorCode.BAD_CRC, Command.LOAD_WEIGHTS)
        x = np.array([[100, -100, 50, -7], [-128, 127, 0, 1]])
        outs, amax, _ = dev.infer_batch(x)
        expect = golden.forward(m, x)
        np.testing.assert_array_equal(outs, expect)
        np.testing.assert_array_equal(amax, golden.argmax(expect))
        with pytest.raises(ValueError, match="outside the board's"):
            dev.load_weights(words, start=1)


def test_load_weights_unsupported_when_built_in(device):
    with pytest.raises(DeviceError, match="UNSUPPORTED"):
        device.request(Command.LOAD_WEIGHTS, b"\0\0" + bytes(8))
    with pytest.raises(LinkError, match="nothing to load"):
        device.load_weights([0])


def test_serial_transport_through_a_pty(model):
    # pyserial on one end of a pseudo-terminal, the simulated board on the other: the
    # SerialTransport code path (open, write, timed reads) without hardware.
    import os
    import select
    import threading

    from pwlnet.host import SerialTransport

    master, slave = os.openpty()
    sim = SimTransport(model, lanes=8, divisor=6)
    stop = threading.Event()

    def bridge():
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.005)
            if ready:
                sim.write(os.read(master, 4096))
            out = sim.poll(4)
            if out:
                os.write(master, out)

    thread = threading.Thread(target=bridge, daemon=True)
    thread.start()
    try:
        with SerialTransport(os.ttyname(slave), 115200) as transport:
            dev = Device(transport, model=model, timeout=20)
            assert dev.info().input_dim == model.input_dim
            x = np.array([9, -9, 90, -90])
            out, amax, _ = dev.infer(x)
            np.testing.assert_array_equal(out, golden.forward(model, x[None])[0])
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)


# --- the hypersphere cache ---------------------------------------------------------------




@pytest.fixture(scope="module")
def cached_case(cache_net):
    """A compiled model with its float blocks and a stream of inputs that repeat nearby."""
    net, model, blocks = cache_net
    rng = np.random.default_rng(8)
    base = rng.integers(-90, 90, size=(4, model.input_dim))
    stream = base[rng.integers(0, 4, size=14)] + rng.integers(-2, 3, size=(14, model.input_dim))
    return net, model, blocks, stream


def cached_device(model, metric="linf", entries=3):
    return Device(SimTransport(model, lanes=4, divisor=6, cache_entries=entries, cache_metric=metric),
                  model=model)


@pytest.fixture(scope="module")
def cdev(cached_case):
    dev = cached_device(cached_case[1])
    yield dev
    dev.transport.close()


def test_uncached_board_has_no_cache(device, model):
    assert device.cache_info() is None
    r = device.infer([1, 2, 3, 4])
    assert r.cached is None and r.slot is None
    np.testing.assert_array_equal(r.outputs, golden.forward(model, np.array([[1, 2, 3, 4]]))[0])
    with pytest.raises(LinkError, match="no hypersphere cache"):
        device.cache_stats()
    with pytest.raises(LinkError, match="no hypersphere cache"):
        device.cache_clear()


def test_cache_write_hit_stats_clear(cdev, cached_case):
    _net, model, blocks, stream = cached_case
    info = cdev.cache_info()
    fmt = SlotFormat(model, 4, "linf")
    assert info == CacheInfo(3, "linf", fmt.image_bytes, info.hit_cycles) and info.hit_cycles > 0
    cdev.cache_clear()
    cdev.cache_stats(reset=True)
    gold = code_cache.HwCache(model, 3, "linf")
    x = stream[0]
    e = code_cache.make_entry(model, blocks, x, "linf")
    assert fmt.fits(e)

    def check(codes):
        r = cdev.infer(codes)
        look = gold.lookup(np.asarray(codes)[None])
        np.testing.assert_array_equal(r.outputs, look.outputs[0])
        assert r.argmax == golden.argmax(look.outputs[0])
        assert (r.cached, r.slot) == (bool(look.hit[0]), max(0, int(look.slot[0])))
        return r

    miss = check(x)
    assert not miss.cached
    cdev.cache_write(2, e)
    gold.write_entry(2, e)
    hit = check(x)
    assert hit.cached and hit.slot == 2 and hit.cycles < miss.cycles
    # A corrupted write is refused and leaves the slots as they were.
    y = stream[1] if not e.hits(stream[1]) else -stream[1]
    ey = code_cache.make_entry(model, blocks, y, "linf")
    bad = bytearray(encode_frame(Command.CACHE_WRITE, bytes([0]) + fmt.image(ey)))
    bad[-2] ^= 0x01
    cdev.transport.write(bytes(bad))
    assert _error_reply(cdev) == (ErrorCode.BAD_CRC, Command.CACHE_WRITE)
    check(y)
    check(x)
    assert cdev.cache_stats(reset=True) == CacheStats(gold.hits, gold.misses)
    assert cdev.cache_stats() == CacheStats(0, 0)
    gold.reset_counters()
    cdev.cache_clear()
    gold.clear()
    assert not check(x).cached
    assert cdev.cache_stats() == CacheStats(0, 1)


def test_cache_write_checked_on_the_host(cdev, cached_case):
    _net, model, blocks, stream = cached_case
    e = code_cache.make_entry(model, blocks, stream[0], "linf")
    # The driver asks INFO and CACHE_INFO once, on first use: do that before counting,
    # so the count does not depend on which test used the shared board first.
    cdev.slot_format()
    frames = cdev.counters()["frames"]
    with pytest.raises(ValueError, match=r"slot must be an integer in 0..2, not 3"):
        cdev.cache_write(3, e)
    with pytest.raises(ValueError, match=r"slot must be an integer in 0..2, not -1"):
        cdev.cache_write(-1, e)
    with pytest.raises(TypeError, match="must be a pwlnet.code_cache.HwEntry"):
        cdev.cache_write(0, e.layer)
    with pytest.raises(code_cache.EntryError, match="entry metric 'l2' differs"):
        cdev.cache_write(0, code_cache.make_entry(model, blocks, stream[0], "l2"))
    import dataclasses
    big = dataclasses.replace(e, layer=dataclasses.replace(e.layer, shift=e.layer.shift + 200))
    with pytest.raises(code_cache.EntryError, match="shift .* is outside"):
        cdev.cache_write(0, big)
    # Nothing reached the board: only the COUNTERS request itself was counted.
    assert cdev.counters()["frames"] == frames + 1


@pytest.mark.parametrize("policy", ["round_robin", "lru"])
def test_run_cached_matches_golden_loop(cdev, cached_case, policy):
    net, model, _blocks, stream = cached_case
    cdev.cache_stats(reset=True)
    run = cdev.run_cached(stream, net, policy)
    gold = cache_host.run_stream(model, net, stream, 3, "linf", policy, slot_format=cdev.slot_format())
    np.testing.assert_array_equal(run.hit, gold.hit)
    assert run.hit.any() and not run.hit.all()
    np.testing.assert_array_equal(run.slot, gold.slot)
    np.testing.assert_array_equal(run.written, gold.written)
    np.testing.assert_array_equal(run.outputs, gold.outputs)
    np.testing.assert_array_equal(run.argmax, golden.argmax(gold.outputs))
    assert run.uncacheable == gold.uncacheable
    assert cdev.cache_stats() == CacheStats(gold.hits, gold.misses)
    # Static latency per kind: every hit takes one figure, every miss another.
    assert len(set(run.cycles[run.hit].tolist())) == 1 and len(set(run.cycles[~run.hit].tolist())) == 1
    assert run.cycles[run.hit][0] < run.cycles[~run.hit][0]


def test_run_cached_l2(cached_case):
    net, model, _blocks, stream = cached_case
    dev = cached_device(model, "l2", entries=2)
    with dev.transport:
        assert dev.cache_info().metric == "l2"
        run = dev.run_cached(stream[:8], net)
        gold = cache_host.run_stream(model, net, stream[:8], 2, "l2", slot_format=dev.slot_format())
        np.testing.assert_array_equal(run.hit, gold.hit)
        np.testing.assert_array_equal(run.outputs, gold.outputs)
        assert dev.cache_stats() == CacheStats(gold.hits, gold.misses)


def test_cache_with_spram_weights(cached_case):
    # Weights loaded over the link and slot images share the staging buffer.
    from pwlnet.host import weight_image
    from pwlnet.hw.cached_engine import CachedEngine

    net, model, blocks, stream = cached_case
    ram = lambda model, lanes, entries, metric, target, preload: CachedEngine(  # noqa: E731
        model, lanes, entries, metric, target=target, weight_memory="ram", preload=preload)
    with SimTransport(model, lanes=4, divisor=6, engine=ram, cache_entries=2) as transport:
        dev = Device(transport, model=model)
        info, cache = dev.info(), dev.cache_info()
        words = weight_image(model, 4, cache)
        assert info.weight_words == len(words) > 0
        assert info.max_payload >= 1 + cache.image_bytes
        assert (info.max_payload - 2) % info.weight_word_bytes == 0
        dev.load_weights(words)
        run = dev.run_cached(stream[:6], net)
        gold = cache_host.run_stream(model, net, stream[:6], 2, "linf", slot_format=dev.slot_format())
        np.testing.assert_array_equal(run.hit, gold.hit)
        np.testing.assert_array_equal(run.outputs, gold.outputs)


def test_cache_preload(cached_case):
    _net, model, blocks, stream = cached_case
    e = code_cache.make_entry(model, blocks, stream[3], "linf")
    with pytest.raises(ValueError, match="cache_preload needs a cache"):
        SimTransport(model, lanes=4, cache_preload=[e])
    gold = code_cache.HwCache(model, 2, "linf")
    gold.write_entry(0, e)
    with SimTransport(model, lanes=4, divisor=6, cache_entries=2, cache_preload=[e]) as transport:
        dev = Device(transport, model=model)
        for q in stream[:5]:
            r = dev.infer(q)
            look = gold.lookup(q[None])
            np.testing.assert_array_equal(r.outputs, look.outputs[0])
            assert (r.cached, r.slot) == (bool(look.hit[0]), max(0, int(look.slot[0])))
        assert gold.hits > 0
        assert dev.cache_stats() == CacheStats(gold.hits, gold.misses)


def test_infer_batch_same_answers_as_single(device, model):
    # The many-input path goes in INFER_BATCH frames by itself; the answers are the same
    # as with one INFER per input, and the golden model's.
    codes = np.random.default_rng(21).integers(-128, 128, size=(5, model.input_dim))
    expect = golden.forward(model, codes)
    assert device.batch_limit() == 16      # max_payload 64 holds 16 inputs of 4 codes
    device.clear_counters()
    device.batch_limit()
    events = []

    class Watch:     # when frames go out and replies come in
        def write(self, data):
            events.append("w")
            device.transport.write(data)

        def read(self, n, timeout):
            data = device.transport.read(n, timeout)
            if data and data[0] == 0x5A and n == 1:
                events.append("r")
            return data

    watched = Device(Watch(), model=model)
    outs, amax, cycles = watched.infer_batch(codes, max_batch=2)     # frames of 2, 2 and 1
    # INFO, then the first batch alone (does the board have batches?), then two in flight.
    assert "".join(events) == "wr" + "wr" + "wwrr"
    assert device.counters()["frames"] == 1 + 3 + 1     # INFO and COUNTERS are counted too
    one_outs, one_amax, one_cycles = device.infer_batch(codes, max_batch=1)
    np.testing.assert_array_equal(outs, expect)
    np.testing.assert_array_equal(one_outs, expect)
    np.testing.assert_array_equal(amax, golden.argmax(expect))
    np.testing.assert_array_equal(one_amax, amax)
    # Two inputs back to back take less than twice one inference; the last frame holds one.
    assert cycles[0] == cycles[1] < one_cycles[0] == cycles[4]
    with pytest.raises(ValueError, match="input codes must be in"):
        device.infer_batch(np.full((2, model.input_dim), 200))


def test_infer_batch_falls_back_on_a_cached_board(cdev, cached_case):
    # A cached build answers INFER_BATCH with UNSUPPORTED: single INFERs, remembered.
    _net, model, _blocks, stream = cached_case
    cdev.cache_clear()
    outs, amax, _ = cdev.infer_batch(stream[:2])
    np.testing.assert_array_equal(outs, golden.forward(model, stream[:2]))
    assert cdev.batch_limit() == 0


class _OldBoard:
    """A board from before INFER_BATCH, in Python: INFO and INFER (from the golden model), and
    UNKNOWN_COMMAND to anything else."""

    def __init__(self, model):
        from pwlnet.protocol import ERROR_REPLY, REP_SYNC, REPLY_FLAG, LinkInfo, model_fingerprint
        self.model, self.out, self.commands = model, bytearray(), []
        self.info = LinkInfo(1, (0, 1, 0), model.input_dim, model.input_bits, model.output_dim,
                             model.layers[-1].out_bits, len(model.layers), 8, 1_000_000, 115200, 10,
                             model_fingerprint(model), 64)
        self.reply = lambda cmd, payload: self.out.extend(encode_frame(cmd | REPLY_FLAG, payload, sync=REP_SYNC))
        self.error = lambda cmd: self.out.extend(encode_frame(ERROR_REPLY, bytes([ErrorCode.UNKNOWN_COMMAND, cmd]),
                                                              sync=REP_SYNC))

    def write(self, frame):
        cmd, payload = frame[1], frame[4:-2]
        self.commands.append(cmd)
        if cmd == Command.INFO:
            self.reply(cmd, self.info.pack())
        elif cmd == Command.INFER:
            y = golden.forward(self.model, np.frombuffer(payload, dtype=np.int8)[None].astype(np.int64))[0]
            self.reply(cmd, y.astype(np.int8).tobytes() + bytes([golden.argmax(y), 0, 7, 0, 0, 0]))
        else:
            self.error(cmd)

    def read(self, n, timeout):
        data = bytes(self.out[:n])
        del self.out[:n]
        return data


def test_infer_batch_falls_back_on_an_older_bitstream(model):
    board = _OldBoard(model)
    dev = Device(board, model=model)
    codes = np.random.default_rng(5).integers(-128, 128, size=(3, model.input_dim))
    outs, amax, cycles = dev.infer_batch(codes)
    np.testing.assert_array_equal(outs, golden.forward(model, codes))
    assert dev.batch_limit() == 0 and list(cycles) == [7, 7, 7]
    # One INFER_BATCH tried, then one INFER per input; the next run does not try again.
    assert board.commands == [Command.INFO, Command.INFER_BATCH] + 3 * [Command.INFER]
    dev.infer_batch(codes[:1])
    assert board.commands[-1] == Command.INFER and Command.INFER_BATCH not in board.commands[2:]


def test_two_batches_in_flight_only_where_the_fifo_holds_them():
    # What may arrive while the board runs a batch and replies must fit its receive FIFO.
    from pwlnet.protocol import LinkInfo
    default = LinkInfo(1, (0, 2, 0), 24, 8, 4, 8, 3, 8, 48_000_000, 3_000_000, 771, 0, 384)
    assert Device._can_pipeline(default, 16)       # about 96 bytes' time of engine, 106 of reply
    slow = LinkInfo(1, (0, 2, 0), 24, 8, 4, 8, 3, 8, 48_000_000, 3_000_000, 3000, 0, 384)
    assert not Device._can_pipeline(slow, 16) and Device._can_pipeline(slow, 4)
    assert not Device._can_pipeline(LinkInfo(1, (0, 2, 0), 24, 8, 4, 8, 3, 8, 0, 0, 0, 0, 384), 1)
