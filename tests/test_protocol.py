"""The wire protocol's Python side: CRC-16, frames, the INFO and CACHE_INFO replies, limits."""

import struct

import pytest

from pwlnet.protocol import (MAX_CACHE_ENTRIES, REQ_SYNC, CacheInfo, Command, LinkInfo, batch_limit, batch_reply_len,
                             check_cache_entries, code_bytes, crc16, encode_frame, field_bytes)


def test_crc16_check_value():
    # The catalogue check value of CRC-16/CCITT-FALSE.
    assert crc16(b"123456789") == 0x29B1


def test_encode_frame():
    f = encode_frame(Command.INFO)
    assert f[0] == REQ_SYNC and f[1] == Command.INFO and f[2:4] == b"\0\0"
    assert struct.unpack("<H", f[4:])[0] == crc16(f[1:4])
    with pytest.raises(ValueError, match="command must be a byte"):
        encode_frame(256)


def test_info_roundtrip():
    info = LinkInfo(1, (0, 1, 0), 16, 8, 10, 8, 2, 8, 48_000_000, 115200, 123, 0xDEADBEEF, 64)
    assert LinkInfo.unpack(info.pack()) == info
    with pytest.raises(ValueError, match="INFO payload has 3 bytes"):
        LinkInfo.unpack(b"abc")


def test_cache_info_roundtrip():
    info = CacheInfo(16, "l2", 250, 33)
    assert len(info.pack()) == 9 and CacheInfo.unpack(info.pack()) == info
    with pytest.raises(ValueError, match="metric code 7"):
        CacheInfo.unpack(struct.pack("<HBHI", 1, 7, 2, 3))
    with pytest.raises(ValueError, match="CACHE_INFO payload has 2 bytes"):
        CacheInfo.unpack(b"ab")


def test_cache_entries_checked():
    assert check_cache_entries(0) == 0 and check_cache_entries(MAX_CACHE_ENTRIES) == MAX_CACHE_ENTRIES
    for bad in (-1, MAX_CACHE_ENTRIES + 1, True, 2.0, "4"):
        with pytest.raises(ValueError, match=f"slots must be an integer in 0..256, not {bad!r}"):
            check_cache_entries(bad, "slots")


def test_code_bytes():
    assert [code_bytes(b) for b in (2, 8, 9, 16)] == [1, 1, 2, 2]


def test_field_bytes():
    assert [field_bytes(b) for b in (0, 1, 8, 9, 16, 17, 32)] == [1, 1, 1, 2, 2, 3, 4]


def test_batch_limit_and_reply_len():
    # As many whole inputs as max_payload holds; two-byte codes count twice.
    info = LinkInfo(1, (0, 1, 0), 24, 8, 4, 8, 3, 8, 48_000_000, 3_000_000, 771, 0, 384)
    assert batch_limit(info) == 16
    assert batch_limit(LinkInfo(1, (0, 1, 0), 24, 12, 4, 8, 3, 8, 1, 1, 1, 0, 384)) == 8
    assert batch_limit(LinkInfo(1, (0, 1, 0), 24, 8, 4, 8, 3, 8, 1, 1, 1, 0, 383)) == 15
    # Per input its 4 output codes and a u16 argmax, then one u32 of cycles.
    assert batch_reply_len(info, 1) == 4 + 2 + 4
    assert batch_reply_len(info, 16) == 16 * 6 + 4
    wide = LinkInfo(1, (0, 1, 0), 24, 8, 4, 16, 3, 8, 1, 1, 1, 0, 384)
    assert batch_reply_len(wide, 3) == 3 * (8 + 2) + 4
    assert Command.INFER_BATCH == 0x06
