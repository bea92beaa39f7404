"""Checks and fields of many consecutive commit-log records at once, as arrays (numpy).

Recovery reads every record it scans twice over: to find where valid data ends (size, length
formula, properties' shape, CRC) and to replay it into the consume queues and index (header
fields, queue offsets, keys). Record by record that is several microseconds of Python each, a
minute and more for a broker's log of tens of gigabytes. Here a tight loop follows the size
chain and copies each record's fixed header; the rest of a window's checks and fields are a
handful of array and bytes operations, and the body CRC stays one call per record (a hardware
CRC library does the bytes).

The batch checks are conservative, never the judge: a record they doubt is handed back to
:func:`~mqtier.format.message.check_record` (or the header check), which passes it or raises
its exact error, so a window accepts exactly what the per-record checks accept. A property test
holds the two to that, on logs with every kind of damage.
"""

from __future__ import annotations

import re
import traceback
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from mqtier.errors import CorruptRecordError
from mqtier.format import layout as L
from mqtier.format.crc import crc32
from mqtier.format.message import Buffer, _verify_crcs, _well_formed_properties

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_SIZE_MAGIC_unpack_from: Final = L.RECORD_SIZE_MAGIC.unpack_from
_V1: Final = L.MAGIC_V1
_V2: Final = L.MAGIC_V2
_HEAD: Final = L.RECORD_HEADER_V4V4.size  # 88: the header with IPv4 hosts, BODYLEN included
# That header as numpy reads it (big-endian, packed, as L.RECORD_HEADER_V4V4).
_HEAD_DTYPE: Final = np.dtype(
    [
        ("size", ">i4"), ("magic", ">u4"), ("crc", ">i4"), ("queue_id", ">i4"),
        ("flag", ">i4"), ("queue_offset", ">i8"), ("phy", ">i8"), ("sysflag", ">i4"),
        ("born_ts", ">i8"), ("born_host", "V8"), ("store_ts", ">i8"), ("store_host", "V8"),
        ("reconsume", ">i4"), ("prepared", ">i8"), ("body_len", ">i4"),
    ]
)  # fmt: skip
assert _HEAD_DTYPE.itemsize == _HEAD
# A window's records span at most about this many bytes: what its arrays and joined
# properties hold stays small however large the records are.
MAX_WINDOW_BYTES: Final = 8 << 20
_V6_HOSTS: Final = L.SYSFLAG_BORNHOST_V6 | L.SYSFLAG_STOREHOST_V6
_UNKNOWN_SYSFLAG: Final = ~L.SYSFLAG_KNOWN_BITS
_CRC32_ENTRY: Final = b"__CRC32#\x01"
_WIDEST_TOPIC_ROW: Final = 255  # topics longer than this are looked up one by one
# In properties joined by _well_formed: an entry without 0x01.
_ENTRY_WITHOUT_NAME_SEP: Final = re.compile(rb"\x02[^\x01\x02]+\x02")


class Fields(NamedTuple):
    """One entry per record; positions are in the buffer the records are in."""

    starts: Ints
    sizes: Ints
    stored_crc: Ints
    queue_id: Ints
    queue_offset: Ints
    phy: Ints  # PHYSICALOFFSET as written
    sysflag: Ints
    store_ts: Ints
    body_at: Ints
    body_end: Ints
    topic_at: Ints
    topic_len: Ints
    props_at: Ints
    props_len: Ints
    shape_ok: Bools  # what check_record checks but the CRC: lengths, properties, topic bytes
    header_ok: Bools  # what check_record_header checks given only where the record is
    # Every record's properties that passed, joined with 0x02 before each; props_joined_at:
    # where each record's begin in it (or the next record's, for one without), and one more
    # entry: one past where the last record's 0x02 0x02 would end.
    props_joined: bytes
    props_joined_at: Ints

    def head(self, n: int) -> Fields:
        """The first ``n`` records' fields (the joined properties stay whole)."""
        cut: list[object] = [a[:n] for a in self[:-2]]
        return Fields._make([*cut, self.props_joined, self.props_joined_at[: n + 1]])

    def tail(self, n: int) -> Fields:
        """The fields of the records from the ``n``-th on."""
        cut: list[object] = [a[n:] for a in self[:-2]]
        return Fields._make([*cut, self.props_joined, self.props_joined_at[n:]])

    def properties_of(self, lo: int, hi: int) -> bytes:
        """Properties of records ``lo`` to ``hi`` (each ends in 0x02, and 0x02 is between two)."""
        at = self.props_joined_at
        return self.props_joined[at[lo] : at[hi] - 1]


def follow_sizes(
    buf: Buffer, pos: int, limit: int, stop: int, most: int
) -> tuple[list[int], list[int], bytes]:
    """The records from ``pos`` whose magic is a record's and whose size fits before ``limit``,
    up to ``most`` of them, none starting at or past ``stop``: their starts, sizes and fixed
    headers (88 bytes each). The first record that does not fit ends the walk, and the caller
    checks that one on its own."""
    starts: list[int] = []
    sizes: list[int] = []
    heads: list[Buffer] = []
    add_start, add_size, add_head = starts.append, sizes.append, heads.append
    end = min(limit - _HEAD, stop - 1)  # a record of the walk starts at pos <= end
    cap = pos + MAX_WINDOW_BYTES  # (at least one record: a window may hold one large one)
    for _ in range(most):
        if pos > end or (starts and pos >= cap):
            break
        head = buf[pos : pos + _HEAD]
        size, magic = _SIZE_MAGIC_unpack_from(head)
        if (magic != _V1 and magic != _V2) or size < _HEAD or size > limit - pos:
            break
        add_start(pos)
        add_size(size)
        add_head(head)
        pos += size
    return starts, sizes, b"".join(heads)


def spans(starts: Ints, lengths: Ints) -> Ints:
    """The positions of every span ``[starts[i], starts[i] + lengths[i])``, concatenated."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    out: Ints = np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, lengths)
    return out


def fields(buf: Buffer, starts_list: list[int], sizes_list: list[int], heads: bytes) -> Fields:
    """The fields of the records :func:`follow_sizes` found (``heads``: their fixed headers),
    and which of them pass the shape and header checks."""
    u8 = np.frombuffer(buf, dtype=np.uint8)
    try:
        return _fields(
            buf,
            u8,
            np.array(starts_list, dtype=np.int64),
            np.array(sizes_list, dtype=np.int64),
            np.frombuffer(heads, dtype=_HEAD_DTYPE),
        )
    except BaseException as exc:
        # The frames of a traceback keep their views of the map (a KeyboardInterrupt in a
        # long scan): closing the map would fail with BufferError, hiding this exception.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        del u8  # a live view of a map would keep it from closing


def fields_of_one(buf: Buffer, pos: int, size: int) -> Fields:
    """:func:`fields` of one record (of at least 88 bytes) at ``buf[pos:]``."""
    return fields(buf, [pos], [size], bytes(buf[pos : pos + _HEAD]))


def _be(u8: npt.NDArray[np.uint8], at: Ints, dtype: str) -> Ints:
    """The big-endian integer of type ``dtype`` (``>i2``, ``>i4``, ...) at each position."""
    width = np.dtype(dtype).itemsize
    cells = np.ascontiguousarray(u8[at[:, None] + np.arange(width)])
    return cells.view(dtype).reshape(len(at)).astype(np.int64)


def _fields(
    buf: Buffer, u8: npt.NDArray[np.uint8], s: Ints, z: Ints, h: npt.NDArray[np.void]
) -> Fields:
    sysflag = h["sysflag"].astype(np.int64)
    store_ts = h["store_ts"].astype(np.int64)
    body_len = h["body_len"].astype(np.int64)
    body_len_at = np.full(len(s), _HEAD - 4, dtype=np.int64)
    v6 = np.flatnonzero(sysflag & _V6_HOSTS)
    if len(v6):  # IPv6 hosts are 12 bytes longer each: the later fields move
        born = np.where(sysflag[v6] & L.SYSFLAG_BORNHOST_V6, 20, 8)
        stored = np.where(sysflag[v6] & L.SYSFLAG_STOREHOST_V6, 20, 8)
        body_len_at[v6] = 68 + born + stored
        short = body_len_at[v6] + 4 > z[v6]
        store_ts[v6] = _be(u8, s[v6] + np.where(short, 0, 48 + born), ">i8")
        body_len[v6] = _be(u8, s[v6] + np.where(short, 0, body_len_at[v6]), ">i4")
    ok = body_len_at + 4 <= z
    v2 = h["magic"] == _V2
    width = np.where(v2, 2, 1)
    topic_len_at = body_len_at + 4 + body_len
    ok &= (body_len >= 0) & (topic_len_at + width <= z)
    tl_at = np.where(ok, s + topic_len_at, s)
    topic_len = np.where(
        v2, _be(u8, np.where(v2, tl_at, s), ">i2"), u8[tl_at].astype(np.int8).astype(np.int64)
    )
    props_len_at = topic_len_at + width + topic_len
    ok &= (topic_len >= 0) & (props_len_at + 2 <= z)
    props_len = _be(u8, np.where(ok, s + props_len_at, s), ">i2")
    ok &= (props_len >= 0) & (props_len_at + 2 + props_len == z)
    # No NUL at either end of the topic (a torn write leaves zeros); read inside the record.
    has_topic = ok & (topic_len > 0)
    first_t = u8[np.where(has_topic, s + topic_len_at + width, s)]
    last_t = u8[np.where(has_topic, s + props_len_at - 1, s)]
    ok &= ~has_topic | ((first_t != 0) & (last_t != 0))
    props_at = s + props_len_at + 2
    has_props = ok & (props_len > 0)
    ok &= ~has_props | (u8[np.where(has_props, s + z - 1, s)] == 2)
    well_formed, joined, joined_at = _well_formed(buf, props_at, np.where(ok, props_len, 0))
    ok &= well_formed
    header_ok = (
        ok
        & (h["queue_id"] >= 0)
        & (h["queue_offset"] >= 0)
        & ((sysflag & _UNKNOWN_SYSFLAG) == 0)
        & (((sysflag >> L.SYSFLAG_COMPRESSION_SHIFT) & 7) <= L.SYSFLAG_COMPRESSION_MAX)
        & (store_ts >= L.STORE_TS_MIN_MS)
        & (store_ts < L.STORE_TS_MAX_MS)
        & (h["born_ts"] >= 0)
        & (h["born_ts"] < L.STORE_TS_MAX_MS)
        & (topic_len > 0)
    )
    return Fields(
        s, z, h["crc"].astype(np.int64), h["queue_id"].astype(np.int64),
        h["queue_offset"].astype(np.int64), h["phy"].astype(np.int64), sysflag, store_ts,
        s + body_len_at + 4, s + topic_len_at, s + topic_len_at + width, topic_len,
        props_at, props_len, ok, header_ok, joined, joined_at,
    )  # fmt: skip


def _well_formed(buf: Buffer, props_at: Ints, props_len: Ints) -> tuple[Bools, bytes, Ints]:
    """Per record: properties of UTF-8 ``name 0x01 value 0x02`` entries, as
    :func:`~mqtier.format.message._well_formed_properties` requires (a record without
    properties passes; the caller has checked that each ends in 0x02); and the properties
    joined, 0x02 before each record's, with where each record's begin."""
    out: Bools = np.ones(len(props_at), dtype=bool)
    joined_at = 1 + np.concatenate(([0], np.cumsum(np.where(props_len > 0, props_len + 1, 0))))
    parts = [
        buf[a : a + n] for a, n in zip(props_at.tolist(), props_len.tolist(), strict=True) if n
    ]
    joined = b"\x02" + b"\x02".join(parts)
    # Each record's properties end in 0x02 and one more 0x02 stands between two records', so
    # 0x02 0x02 appears once per pair of records and never three times in a row unless an
    # entry is empty; 0x02 0x01 is an entry without a name, the pattern one without 0x01.
    # ASCII separators keep UTF-8 validity per record.
    if (
        joined.count(b"\x02\x02") == max(len(parts) - 1, 0)
        and b"\x02\x02\x02" not in joined
        and b"\x02\x01" not in joined
        and _ENTRY_WITHOUT_NAME_SEP.search(joined) is None
        and _is_utf8(joined)
    ):
        return out, joined, joined_at
    # Damage (rare): find which records, one by one.
    for i, (a, n) in enumerate(zip(props_at.tolist(), props_len.tolist(), strict=True)):
        if n and not _well_formed_properties(bytes(buf[a : a + n])):
            out[i] = False
    return out, joined, joined_at


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def first_doubtful(buf: Buffer, f: Fields, *, verify_crc: bool) -> int:
    """How many leading records pass: the shape checks and, with ``verify_crc``, the body CRC
    and, where a record carries one, its whole-record ``__CRC32#`` (as check_record checks)."""
    bad = np.flatnonzero(~f.shape_ok)
    n = int(bad[0]) if len(bad) else len(f.starts)
    if not verify_crc or n == 0:
        return n
    tails = (f.starts[:n] + f.sizes[:n] - L.CRC32_RESERVED_LEN).tolist()
    reserved = (f.props_len[:n] >= L.CRC32_RESERVED_LEN).tolist()
    stored = f.stored_crc.tolist()
    with memoryview(buf) as mv:
        for i, (a, b) in enumerate(
            zip(f.body_at[:n].tolist(), f.body_end[:n].tolist(), strict=True)
        ):
            if crc32(mv[a:b]) & 0x7FFFFFFF != stored[i]:
                return i
            if reserved[i] and mv[tails[i] : tails[i] + 9].tobytes() == _CRC32_ENTRY:
                try:
                    _verify_crcs(
                        buf, int(f.starts[i]), int(f.sizes[i]), a, b, int(f.props_len[i]), ""
                    )
                except CorruptRecordError:
                    return i
    return n


class Topics(NamedTuple):
    """The records' topics: each one's code, an index into the distinct names."""

    codes: Ints
    names: list[str]


def topics_of(buf: Buffer, at: Ints, lengths: Ints) -> Topics:
    """The topics of the records whose topic bytes are at ``at`` (``lengths`` long), found
    with one gather and one sort per window rather than a slice and a lookup per record."""
    width = int(lengths.max()) if len(lengths) else 0
    if width > _WIDEST_TOPIC_ROW:
        return _topics_one_by_one(buf, at, lengths)
    u8 = np.frombuffer(buf, dtype=np.uint8)
    try:
        cols = np.arange(width)
        # Each topic's bytes in a row, zeros past its length, after 2 bytes of that length
        # (topics of different lengths then never share a row).
        rows = np.zeros((len(at), width + 2), dtype=np.uint8)
        rows[:, 0], rows[:, 1] = lengths >> 8, lengths & 0xFF
        inside = cols < lengths[:, None]
        rows[:, 2:][inside] = u8[(at[:, None] + cols)[inside]]
    finally:
        del u8  # a live view of a map would keep it from closing
    if (rows == rows[0]).all():  # (the usual window: one topic)
        return Topics(np.zeros(len(at), dtype=np.int64), [_topic_name(rows[0])])
    distinct, codes = np.unique(rows.view(np.dtype((np.void, width + 2))), return_inverse=True)
    names = [_topic_name(np.frombuffer(row.tobytes(), dtype=np.uint8)) for row in distinct]
    return Topics(codes.reshape(len(at)).astype(np.int64), names)


def _topic_name(row: npt.NDArray[np.uint8]) -> str:
    n = (int(row[0]) << 8) | int(row[1])
    return str(row[2 : 2 + n].tobytes(), "utf-8", "replace")


def _topics_one_by_one(buf: Buffer, at: Ints, lengths: Ints) -> Topics:
    """:func:`topics_of` for a window with a long topic name (its rows would be wide)."""
    number: dict[bytes, int] = {}
    codes = [
        number.setdefault(bytes(buf[a : a + n]), len(number))
        for a, n in zip(at.tolist(), lengths.tolist(), strict=True)
    ]
    names = [str(raw, "utf-8", "replace") for raw in number]
    return Topics(np.array(codes, dtype=np.int64), names)
