"""The 4 KiB ``checkpoint`` file and mqtier's dispatch checkpoint."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtier.format import layout as L
from mqtier.format.checkpoint import Checkpoint, pack_dispatch_offset, unpack_dispatch_offset

I64 = st.integers(-(2**63), 2**63 - 1)


@given(I64, I64, I64, I64, I64)
def test_round_trip(physic, logics, index, master, confirm):
    cp = Checkpoint(physic, logics, index, master, confirm)
    raw = cp.to_bytes()
    assert len(raw) == 4096 == L.CHECKPOINT_FILE_BYTES
    assert raw[:40] == struct.pack(">5q", physic, logics, index, master, confirm)
    assert raw[40:] == bytes(4096 - 40)
    assert Checkpoint.from_bytes(raw) == cp
    assert Checkpoint.from_bytes(raw[:40]) == cp


def test_field_order():
    raw = Checkpoint(1, 2, 3, 4, 5).to_bytes()
    assert struct.unpack_from(">5q", raw) == (1, 2, 3, 4, 5)
    cp = Checkpoint.from_bytes(struct.pack(">5q", 10, 20, 30, 40, 50))
    assert cp.physic_msg_timestamp == 10
    assert cp.logics_msg_timestamp == 20
    assert cp.index_msg_timestamp == 30
    assert cp.master_flushed_offset == 40
    assert cp.confirm_phy_offset == 50


def test_short_files_are_zero_padded():
    assert Checkpoint.from_bytes(b"") == Checkpoint()
    # older brokers wrote only the three timestamps
    assert Checkpoint.from_bytes(struct.pack(">3q", 7, 8, 9)) == Checkpoint(7, 8, 9, 0, 0)
    assert Checkpoint.from_bytes(bytes(4096)) == Checkpoint()


@pytest.mark.parametrize(
    ("physic", "logics", "expected"),
    [
        (10_000, 5_000, 2_000),
        (5_000, 10_000, 2_000),
        (3_000, 9_000, 0),
        (2_999, 9_000, 0),
        (0, 0, 0),
        (1551626238066, 1551626238066, 1551626235066),
    ],
)
def test_min_timestamp(physic, logics, expected):
    # getMinTimestamp = max(0, min(physic, logics) - 3000); the index timestamp plays no part.
    assert Checkpoint(physic, logics, index_msg_timestamp=1).min_timestamp == expected


@pytest.mark.fixtures
def test_real_store_c_checkpoint(fixture_store_c_src):
    raw = (fixture_store_c_src / "checkpoint").read_bytes()
    assert len(raw) == 4096
    assert raw[:16] == bytes.fromhex("0000016944217872" * 2)
    cp = Checkpoint.from_bytes(raw)
    # 0x0000016944217872 is 1551626238066 (2019-03-03 15:17:18.066 UTC).
    assert cp.physic_msg_timestamp == int.from_bytes(raw[:8], "big") == 1551626238066
    assert cp.logics_msg_timestamp == 1551626238066
    assert cp.index_msg_timestamp == 0
    assert cp.master_flushed_offset == cp.confirm_phy_offset == 0
    assert cp.min_timestamp == 1551626238066 - 3000
    assert cp.to_bytes() == raw


@pytest.mark.fixtures
def test_real_store_b_checkpoint_is_zeros(fixture_store_b_src):
    raw = (fixture_store_b_src / "checkpoint").read_bytes()
    cp = Checkpoint.from_bytes(raw)
    assert cp == Checkpoint()
    assert cp.min_timestamp == 0
    assert cp.to_bytes() == raw


@given(st.integers(0, 2**63 - 1))
def test_dispatch_offset_round_trip(offset):
    raw = pack_dispatch_offset(offset)
    assert len(raw) == L.DISPATCH_CHECKPOINT.size == 12
    assert raw[:8] == offset.to_bytes(8, "big")
    assert unpack_dispatch_offset(raw) == offset
    assert unpack_dispatch_offset(raw + b"trailing") == offset


@given(st.integers(0, 2**63 - 1), st.integers(0, 11), st.integers(1, 255))
def test_dispatch_offset_corrupted_byte(offset, index, xor):
    raw = bytearray(pack_dispatch_offset(offset))
    raw[index] ^= xor
    assert unpack_dispatch_offset(bytes(raw)) is None


def test_dispatch_offset_every_single_bit_flip():
    raw = pack_dispatch_offset(123456789)
    for i in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            assert unpack_dispatch_offset(bytes(bad)) is None, (i, bit)


@pytest.mark.parametrize("length", [0, 1, 8, 11])
def test_dispatch_offset_short_data(length):
    assert unpack_dispatch_offset(pack_dispatch_offset(42)[:length]) is None


def test_dispatch_offset_negative_is_rejected():
    assert unpack_dispatch_offset(pack_dispatch_offset(-1)) is None
    assert unpack_dispatch_offset(bytes(12)) is None  # zeros: the CRC of offset 0 is not 0
