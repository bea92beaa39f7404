"""Constants and fixed structures of ``mqtier.format.layout`` against the format doc (sections 2-6)."""

from __future__ import annotations

import struct

import pytest

from mqtier.format import layout as L


def _signed32(value: int) -> int:
    return struct.unpack(">i", struct.pack(">I", value))[0]


def test_struct_sizes():
    assert L.RECORD_SIZE_MAGIC.size == 8
    assert L.RECORD_HEADER_V4V4.size == 88
    assert L.CQ_UNIT.size == 20 == L.CQ_UNIT_BYTES
    assert L.CQ_EXT_UNIT_HEAD.size == 20
    assert L.INDEX_HEADER.size == 40
    assert L.INDEX_SLOT.size == 4 == L.INDEX_SLOT_BYTES
    assert L.INDEX_ITEM.size == 20 == L.INDEX_ITEM_BYTES
    assert L.CHECKPOINT.size == 40
    assert L.DISPATCH_CHECKPOINT.size == 12
    assert L.TOPIC_LEN_V1.size == 1
    assert L.TOPIC_LEN_V2.size == 2
    assert L.PROPS_LEN.size == 2
    assert L.INT32.size == 4
    assert L.INT64.size == 8


@pytest.mark.parametrize(
    ("born_v6", "store_v6", "size"),
    [(False, False, 88), (True, False, 100), (False, True, 100), (True, True, 112)],
)
def test_record_header_sizes(born_v6, store_v6, size):
    # Each IPv6 host is 16 + 4 bytes instead of 4 + 4.
    assert L.record_header_struct(born_v6, store_v6).size == size


def test_v4v4_header_is_the_false_false_variant():
    assert L.record_header_struct(False, False).format == L.RECORD_HEADER_V4V4.format


def test_all_structs_are_big_endian():
    for s in (
        L.RECORD_SIZE_MAGIC,
        L.RECORD_HEADER_V4V4,
        L.CQ_UNIT,
        L.CQ_EXT_UNIT_HEAD,
        L.INDEX_HEADER,
        L.INDEX_SLOT,
        L.INDEX_ITEM,
        L.CHECKPOINT,
        L.DISPATCH_CHECKPOINT,
        L.TOPIC_LEN_V1,
        L.TOPIC_LEN_V2,
        L.PROPS_LEN,
        L.INT32,
        L.INT64,
        *(L.record_header_struct(b, s) for b in (False, True) for s in (False, True)),
    ):
        assert s.format.startswith(">"), s.format


def test_magic_values():
    assert L.MAGIC_V1 == 0xDAA320A7
    assert L.MAGIC_V2 == 0xDAA320AB
    assert L.BLANK_MAGIC == 0xCBD43194
    assert _signed32(L.MAGIC_V1) == -626843481
    assert _signed32(L.MAGIC_V2) == -626843477
    assert _signed32(L.BLANK_MAGIC) == -875286124
    # The tiered store spells it 0xBBCCDDEE ^ 1880681586 + 8 (Java: + binds tighter than ^).
    assert L.BLANK_MAGIC == (0xBBCCDDEE ^ (1880681586 + 8)) & 0xFFFFFFFF
    assert L.BLANK_MIN_BYTES == 8


def test_fixed_field_positions_match_the_v4v4_header():
    fields = list(range(1, 18))  # distinct values per field
    fields[9] = b"\x01\x02\x03\x04"  # born ip
    fields[12] = b"\x05\x06\x07\x08"  # store ip
    raw = L.RECORD_HEADER_V4V4.pack(*fields)
    assert L.INT64.unpack_from(raw, L.POS_QUEUE_OFFSET)[0] == 6
    assert L.INT64.unpack_from(raw, L.POS_PHYSICAL_OFFSET)[0] == 7
    assert L.INT32.unpack_from(raw, L.POS_SYSFLAG)[0] == 8
    # Doc table: BORNHOST at 48, STORETIMESTAMP at 56, STOREHOST at 64, BODYLEN at 84.
    assert raw[48:52] == b"\x01\x02\x03\x04"
    assert L.INT64.unpack_from(raw, 56)[0] == 12
    assert raw[64:68] == b"\x05\x06\x07\x08"
    assert L.INT32.unpack_from(raw, 84)[0] == 17


def test_sysflag_bits():
    assert L.SYSFLAG_COMPRESSED == 0x1
    assert L.SYSFLAG_MULTI_TAGS == 0x2
    assert L.SYSFLAG_TRANSACTION_MASK == 0xC
    assert L.SYSFLAG_TRANSACTION_PREPARED == 0x4
    assert L.SYSFLAG_TRANSACTION_COMMIT == 0x8
    assert L.SYSFLAG_TRANSACTION_ROLLBACK == 0xC
    assert L.SYSFLAG_BORNHOST_V6 == 0x10
    assert L.SYSFLAG_STOREHOST_V6 == 0x20


def test_limits_and_misc_constants():
    assert L.MAX_TOPIC_BYTES_V1 == 127
    assert L.MAX_TOPIC_BYTES_V2 == 32767
    assert L.MAX_PROPERTIES_BYTES == 32767
    assert L.CRC32_RESERVED_LEN == len("__CRC32#") + 1 + 10 + 1 == 20
    assert L.PROP_CRC32 == "__CRC32#"
    assert L.DEFAULT_COMMITLOG_FILE_BYTES == 1073741824
    assert L.DEFAULT_CQ_UNITS_PER_FILE * L.CQ_UNIT_BYTES == 6_000_000
    assert L.PRE_BLANK_UNIT == (0, 2**31 - 1, 0)
    assert L.EXT_ADDR_MAX == -(2**31) - 1
    assert L.LONG_MIN == -(2**63)
    assert L.CHECKPOINT_FILE_BYTES == 4096
    assert L.LOCK_CONTENT == b"lock"
    # Default index file: 40 + 5,000,000*4 + 20,000,000*20 bytes.
    assert (
        L.INDEX_HEADER.size
        + L.DEFAULT_INDEX_SLOTS * L.INDEX_SLOT_BYTES
        + L.DEFAULT_INDEX_ITEMS * L.INDEX_ITEM_BYTES
        == 420_000_040
    )


@pytest.mark.parametrize(
    ("offset", "name"),
    [
        (0, "00000000000000000000"),
        (1073741824, "00000000001073741824"),
        (6_000_000, "00000000000006000000"),
        (2**63 - 1, "09223372036854775807"),
    ],
)
def test_offset_file_name(offset, name):
    assert L.offset_file_name(offset) == name
    assert len(name) == 20
    assert int(name) == offset
