"""The commit-log record: encode, decode, verify. See docs/FORMAT.md, "Commit-log record".

Hot paths (``encode_record`` for appends, ``check_record`` for recovery scans) work on bytes and
precompiled structs only; the friendly ``MessageRecord`` is built when a caller asks for one.
"""

from __future__ import annotations

import base64
import ipaddress
import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from mqtier.errors import (
    CorruptRecordError,
    InvalidTopicError,
    MessageTooLargeError,
    PropertiesTooLongError,
)
from mqtier.format import layout as L
from mqtier.format.crc import crc32

_HEADER_V4V4: Final = L.RECORD_HEADER_V4V4
_V4V4_SIZE: Final = _HEADER_V4V4.size
_V4V4_unpack_from: Final = _HEADER_V4V4.unpack_from
_SIZE_MAGIC: Final = L.RECORD_SIZE_MAGIC
_V1: Final = L.MAGIC_V1
_V2: Final = L.MAGIC_V2
_BLANK: Final = L.BLANK_MAGIC

# Anything struct.unpack_from and slicing accept: bytes, a memoryview, a mapped file.
Buffer = bytes | bytearray | memoryview | mmap.mmap


def body_crc(body: bytes) -> int:
    """RocketMQ's body CRC: Java ``CRC32`` masked to a non-negative int."""
    return crc32(body) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Message:
    """A message to append. ``queue_id=None`` lets the store choose (key hash or round robin).

    Attributes:
        topic: the topic name (UTF-8 on disk; at most 127 bytes, or 32767 with ``version=2``).
        body: opaque bytes.
        queue_id: the queue within the topic, or None to let the store pick one.
        keys: business keys; each is indexed and searchable with ``query key``.
        tags: the tag used for consumer-side filtering.
        properties: extra user properties (names and values may not contain 0x01 or 0x02).
        flag: the client's user flag, stored verbatim.
    """

    topic: str
    body: bytes
    queue_id: int | None = None
    keys: tuple[str, ...] = ()
    tags: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    flag: int = 0


def encode_properties(props: Mapping[str, str]) -> str:
    """``name 0x01 value 0x02`` for each entry; entries with an empty value are skipped."""
    return "".join(f"{k}\x01{v}\x02" for k, v in props.items() if v)


def decode_properties(text: str) -> dict[str, str]:
    """Inverse of :func:`encode_properties`, with RocketMQ's leniency for odd segments."""
    out: dict[str, str] = {}
    for seg in text.split(L.PROPERTY_SEP):
        if len(seg) < 3:
            continue
        name, sep, value = seg.partition(L.NAME_VALUE_SEP)
        if sep and name and value:
            out[name] = value
    return out


def validate_topic(topic: str, *, allow_v2: bool = False) -> bytes:
    """Check a topic name and return its UTF-8 bytes.

    Raises:
        InvalidTopicError: empty, too long (127 bytes for a v1 record; with ``allow_v2``, 255,
            the most a directory name holds), or unsafe as a directory name.
    """
    try:
        raw = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTopicError(f"topic {topic!r} is not valid Unicode text") from None
    if not raw:
        raise InvalidTopicError("topic is empty")
    if topic in (".", "..") or any(c in topic for c in "/\\\x00") or ":" in topic:
        raise InvalidTopicError(
            f"topic {topic!r} contains a character that could escape a directory"
        )
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in topic):
        # A newline or escape in a directory name, a log line or a terminal misleads whoever
        # reads it; RocketMQ's own TopicValidator allows only [%|a-zA-Z0-9_-].
        raise InvalidTopicError(f"topic {topic!r} contains a control character")
    # A v2 record may name a longer topic, but no queue directory can have that name.
    limit = L.MAX_TOPIC_DIR_BYTES if allow_v2 else L.MAX_TOPIC_BYTES_V1
    if len(raw) > limit:
        raise InvalidTopicError(
            f"topic {topic[:40]!r}... is {len(raw)} bytes; the limit is {limit}"
        )
    return raw


def crc32_property_digits(crc: int) -> bytes:
    """The 10 ASCII digits of a ``__CRC32#`` entry, least significant digit first (as written)."""
    return bytes(48 + (crc // 10**i) % 10 for i in range(10))


def encode_record(
    *,
    topic: bytes,
    queue_id: int,
    flag: int,
    queue_offset: int,
    phy_offset: int,
    sysflag: int,
    born_ts: int,
    born_host: tuple[bytes, int],
    store_ts: int,
    store_host: tuple[bytes, int],
    body: bytes,
    properties: bytes,
    reconsume_times: int = 0,
    prepared_tx_offset: int = 0,
    crc: int | None = None,
    append_prop_crc: bool = False,
) -> bytes:
    """Build one record exactly as ``MessageExtEncoder`` + ``doAppend`` do.

    ``born_host``/``store_host`` are (packed IP, port); a 16-byte IP sets the v6 SYSFLAG bits.
    With ``append_prop_crc`` the properties end with a ``__CRC32#`` entry over the whole record.
    """
    born_v6 = len(born_host[0]) == 16
    store_v6 = len(store_host[0]) == 16
    if born_v6:
        sysflag |= L.SYSFLAG_BORNHOST_V6
    if store_v6:
        sysflag |= L.SYSFLAG_STOREHOST_V6
    if append_prop_crc:
        if properties and not properties.endswith(b"\x02"):
            properties += b"\x02"
        properties += b"__CRC32#\x01" + b"0" * 10 + b"\x02"
    if len(properties) > L.MAX_PROPERTIES_BYTES:
        raise PropertiesTooLongError(
            f"properties are {len(properties)} bytes; the limit is {L.MAX_PROPERTIES_BYTES}"
        )
    v2 = len(topic) > L.MAX_TOPIC_BYTES_V1
    header = L.record_header_struct(born_v6, store_v6)
    total = header.size + len(body) + (2 if v2 else 1) + len(topic) + 2 + len(properties)
    head = header.pack(
        total,
        _V2 if v2 else _V1,
        body_crc(body) if crc is None else crc,
        queue_id,
        flag,
        queue_offset,
        phy_offset,
        sysflag,
        born_ts,
        born_host[0],
        born_host[1],
        store_ts,
        store_host[0],
        store_host[1],
        reconsume_times,
        prepared_tx_offset,
        len(body),
    )
    tlen = L.TOPIC_LEN_V2.pack(len(topic)) if v2 else L.TOPIC_LEN_V1.pack(len(topic))
    rec = b"".join((head, body, tlen, topic, L.PROPS_LEN.pack(len(properties)), properties))
    if append_prop_crc:
        whole = crc32(memoryview(rec)[: total - L.CRC32_RESERVED_LEN]) & 0x7FFFFFFF
        rec = rec[: total - 11] + crc32_property_digits(whole) + b"\x02"
    return rec


def check_max_size(body_len: int, max_bytes: int, where: str) -> None:
    """Raise :class:`MessageTooLargeError` for a body over the store's limit."""
    if body_len > max_bytes:
        raise MessageTooLargeError(
            f"{where}: body is {body_len} bytes; the maximum message size is {max_bytes}"
        )


# check_record() results besides a positive record size.
END_OF_DATA: Final = 0  # zero size or unknown magic: nothing more was ever written here
END_OF_FILE: Final = -1  # BLANK filler: continue with the next file


def check_record(buf: Buffer, pos: int, limit: int, *, verify_crc: bool, path: str = "") -> int:
    """Validate the record at ``buf[pos:]`` and return its size.

    Returns END_OF_FILE for a BLANK record and END_OF_DATA where no record starts (zeros or an
    unknown magic, the normal end of a store). Raises CorruptRecordError for a record whose magic
    is right but whose size, length formula or CRC is wrong.
    """
    remaining = limit - pos
    if remaining < 8:
        return END_OF_DATA
    size, magic = _SIZE_MAGIC.unpack_from(buf, pos)
    if magic == _BLANK:
        return END_OF_FILE
    if magic != _V1 and magic != _V2:
        return END_OF_DATA
    if size <= 0 or size > remaining:
        raise CorruptRecordError(
            path, pos, f"record size {size} exceeds the {remaining} bytes left"
        )
    sysflag = L.INT32.unpack_from(buf, pos + L.POS_SYSFLAG)[0]
    born_len = 20 if sysflag & L.SYSFLAG_BORNHOST_V6 else 8
    store_len = 20 if sysflag & L.SYSFLAG_STOREHOST_V6 else 8
    body_len_pos = pos + 68 + born_len + store_len  # 84 with IPv4 hosts
    if body_len_pos + 4 > pos + size:
        raise CorruptRecordError(path, pos, f"record size {size} is too small for its header")
    body_len = L.INT32.unpack_from(buf, body_len_pos)[0]
    topic_len_pos = body_len_pos + 4 + body_len
    v2 = magic == _V2
    if body_len < 0 or topic_len_pos + (2 if v2 else 1) > pos + size:
        raise CorruptRecordError(path, pos, f"body length {body_len} does not fit in size {size}")
    if v2:
        topic_len = L.TOPIC_LEN_V2.unpack_from(buf, topic_len_pos)[0]
        props_len_pos = topic_len_pos + 2 + topic_len
    else:
        topic_len = L.TOPIC_LEN_V1.unpack_from(buf, topic_len_pos)[0]
        props_len_pos = topic_len_pos + 1 + topic_len
    if topic_len < 0 or props_len_pos + 2 > pos + size:
        raise CorruptRecordError(path, pos, f"topic length {topic_len} does not fit in size {size}")
    props_len = L.PROPS_LEN.unpack_from(buf, props_len_pos)[0]
    if props_len < 0 or props_len_pos + 2 + props_len != pos + size:
        raise CorruptRecordError(
            path, pos, f"size {size} does not match the length formula (half-written record?)"
        )
    # A torn write leaves zeros or stale bytes where the topic or properties should be; the body
    # CRC does not cover them, so check their shape: properties are UTF-8 entries of
    # name 0x01 value 0x02, and topics hold no NUL.
    if props_len and not _well_formed_properties(bytes(buf[props_len_pos + 2 : pos + size])):
        raise CorruptRecordError(
            path, pos, "properties are not name/value entries (half-written record?)"
        )
    if topic_len and (buf[props_len_pos - 1] == 0 or buf[topic_len_pos + (2 if v2 else 1)] == 0):
        raise CorruptRecordError(path, pos, "topic contains NUL bytes (half-written record?)")
    if verify_crc:
        _verify_crcs(buf, pos, size, body_len_pos + 4, topic_len_pos, props_len, path)
    return int(size)


def _well_formed_properties(props: bytes) -> bool:
    """``name 0x01 value 0x02`` entries in UTF-8, as every RocketMQ writer produces them.

    Torn or stale bytes almost never pass: they must end in 0x02, split into entries that each
    have a non-empty name before a 0x01, and decode as UTF-8.
    """
    if props[-1] != 2:
        return False
    for entry in props[:-1].split(b"\x02"):
        if entry.find(b"\x01") < 1:
            return False
    try:
        props.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _verify_crcs(
    buf: Buffer, pos: int, size: int, body_at: int, body_end: int, props_len: int, path: str
) -> None:
    """Body CRC, and the whole-record ``__CRC32#`` when the record carries one."""
    stored = L.INT32.unpack_from(buf, pos + 8)[0]
    # Released by the with-block even when raising: a live export of a mapped file would make
    # closing the map fail while the exception's traceback is still around.
    with memoryview(buf) as mv:
        actual = crc32(mv[body_at:body_end]) & 0x7FFFFFFF
        whole = None
        if props_len >= L.CRC32_RESERVED_LEN:
            tail = bytes(mv[pos + size - L.CRC32_RESERVED_LEN : pos + size])
            if tail.startswith(b"__CRC32#\x01") and tail.endswith(b"\x02"):
                want = sum((d - 48) * 10**i for i, d in enumerate(tail[9:19]))
                whole = (want, crc32(mv[pos : pos + size - L.CRC32_RESERVED_LEN]) & 0x7FFFFFFF)
    if stored != actual:
        raise CorruptRecordError(
            path, pos, f"body CRC {actual:#010x} does not match stored {stored & 0xFFFFFFFF:#010x}"
        )
    if whole is not None and whole[0] != whole[1]:
        raise CorruptRecordError(
            path, pos, f"record CRC {whole[1]} does not match __CRC32# {whole[0]}"
        )


def check_record_header(
    buf: Buffer,
    pos: int,
    *,
    expect_phy: int | None,
    expect_topic: str | None = None,
    expect_queue: int | None = None,
    expect_queue_offset: int | None = None,
    expect_size: int | None = None,
    path: str = "",
) -> None:
    """Check the header fields of the record at ``buf[pos:]`` that no CRC covers.

    RocketMQ's body CRC covers the body only, so without this a flipped header byte is read,
    tiered and served as data. The record must have passed :func:`check_record` (its lengths
    fit in it). Checked against what the caller knows: ``expect_phy``, the commit-log offset it
    found the record at (PHYSICALOFFSET) and, for a record reached through a consume-queue unit,
    that unit's size, topic, queue and queue offset; such a record must also be a normal or
    committed transactional message, the only kinds a consume queue holds. Always checked: a
    non-negative queue id and queue offset, only SYSFLAG bits RocketMQ defines, a store time
    in 2000..2099, a born time that is not negative or past 2099, a non-empty topic.

    Raises:
        CorruptRecordError: ``path @ expect_phy`` (``pos`` when it is None), naming the field,
            what was expected and what was found.
    """
    problem = _header_problem(
        buf, pos, expect_phy, expect_topic, expect_queue, expect_queue_offset, expect_size
    )
    if problem is not None:
        name, expected, found = problem
        raise CorruptRecordError(
            path,
            pos if expect_phy is None else expect_phy,
            f"header field {name}: expected {expected}, found {found}",
        )


def _header_problem(
    buf: Buffer,
    pos: int,
    phy: int | None,
    topic: str | None,
    queue: int | None,
    queue_offset: int | None,
    size: int | None,
) -> tuple[str, object, object] | None:
    """(field, expected, found) of the first header field that fails, or None.

    One unpack of the fields checked (the hosts skipped, so no bytes objects are made), then
    comparisons: this runs for every record read and every record tiered.
    """
    head = _CHECKED_BY_HOST_BITS[_INT32_unpack_from(buf, pos + _POS_SYSFLAG)[0] & _HOST_V6_BITS]
    total, magic, queue_id, qoff, at, sysflag, born_ts, store_ts, body_len = head.unpack_from(
        buf, pos
    )
    if size is not None and total != size:
        return "TOTALSIZE", f"{size} (the consume-queue unit's size)", total
    if phy is not None and at != phy:
        return "PHYSICALOFFSET", f"{phy} (where the record is)", at
    if queue is None:
        if queue_id < 0:
            return "QUEUEID", "a queue id >= 0", queue_id
    elif queue_id != queue:
        return "QUEUEID", f"{queue} (its consume queue)", queue_id
    if queue_offset is None:
        if qoff < 0:
            return "QUEUEOFFSET", "an offset >= 0", qoff
    elif qoff != queue_offset:
        return "QUEUEOFFSET", f"{queue_offset} (its consume-queue unit)", qoff
    if sysflag & _UNKNOWN_SYSFLAG or (sysflag >> _COMPRESSION_SHIFT) & 7 > _COMPRESSION_MAX:
        return "SYSFLAG", f"only the bits RocketMQ defines ({L.SYSFLAG_KNOWN_BITS:#x})", sysflag
    if queue_offset is not None and sysflag & _TX_MASK not in QUEUED_TX_KINDS:
        return "SYSFLAG", "a normal or committed message (it is in a consume queue)", sysflag
    if not _TS_MIN <= store_ts < _TS_MAX:
        return "STORETIMESTAMP", "a time in 2000..2099", store_ts
    if not 0 <= born_ts < _TS_MAX:
        return "BORNTIMESTAMP", "a time before 2100 (or 0)", born_ts
    t = pos + head.size + body_len
    if magic == _V2:
        tlen, t = _TOPIC_LEN_V2_unpack_from(buf, t)[0], t + 2
    else:
        tlen, t = _TOPIC_LEN_V1_unpack_from(buf, t)[0], t + 1
    if tlen <= 0:
        return "TOPICLEN", "at least 1", tlen
    if topic is not None and buf[t : t + tlen] != topic.encode("utf-8"):
        found = str(buf[t : t + tlen], "utf-8", "replace")
        return "TOPIC", f"{topic!r} (its consume queue)", repr(found)
    return None


def header_plausible(
    msg: MessageRecord, phy: int, unit: tuple[str, int, int] | None, size: int | None = None
) -> bool:
    """What :func:`check_record_header` checks, on a record already decoded; True only where
    it would pass (False: call it for the error). Cheaper on a read's hot path than another
    unpack of the header."""
    sysflag = msg.sysflag
    if (
        msg.phy_offset != phy
        or (size is not None and msg.size != size)
        or msg.queue_id < 0
        or msg.queue_offset < 0
        or sysflag & _UNKNOWN_SYSFLAG
        or (sysflag >> _COMPRESSION_SHIFT) & 7 > _COMPRESSION_MAX
        or not _TS_MIN <= msg.store_ts < _TS_MAX
        or not 0 <= msg.born_ts < _TS_MAX
        or not msg.topic
    ):
        return False
    return unit is None or unit_plausible(msg, unit)


def unit_plausible(msg: MessageRecord, unit: tuple[str, int, int]) -> bool:
    """The part of :func:`header_plausible` that compares the header with ``unit``, the
    (topic, queue id, queue offset) of the consume-queue unit that gave the record."""
    # A topic that did not decode cleanly is compared byte for byte by the full check.
    return (
        msg.topic == unit[0]
        and "\ufffd" not in msg.topic
        and msg.queue_id == unit[1]
        and msg.queue_offset == unit[2]
        and msg.sysflag & _TX_MASK in QUEUED_TX_KINDS
    )


def format_host(ip: bytes, port: int) -> str:
    """``127.0.0.1:8123`` or ``[::1]:8123``."""
    addr = ipaddress.ip_address(ip)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def parse_host(text: str) -> tuple[bytes, int]:
    """Inverse of :func:`format_host`; a missing port is 0."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "0"
    return ipaddress.ip_address(host).packed, int(port or 0)


def make_msg_id(store_ip: bytes, store_port: int, phy_offset: int) -> str:
    """offsetMsgId: uppercase hex of store IP, port (i32) and commit-log offset (i64)."""
    return (store_ip + L.INT32.pack(store_port) + L.INT64.pack(phy_offset)).hex().upper()


def parse_msg_id(msg_id: str) -> tuple[bytes, int, int]:
    """Decode an offsetMsgId into (store IP, port, commit-log offset).

    Raises:
        ValueError: not 32 (IPv4) or 56 (IPv6) hex characters.
    """
    expected = "an offsetMsgId is 32 hex chars (IPv4 store host) or 56 (IPv6)"
    shown = repr(msg_id if len(msg_id) <= 80 else msg_id[:77] + "...")
    try:
        raw = bytes.fromhex(msg_id)
    except ValueError:  # Python's own text ("non-hexadecimal number found in fromhex()")
        raise ValueError(f"message id {shown} is not hexadecimal; {expected}") from None
    if len(raw) == 16:
        ip_len = 4
    elif len(raw) == 28:
        ip_len = 16
    else:
        raise ValueError(f"message id {shown} is {len(msg_id)} chars; {expected}")
    port = L.INT32.unpack_from(raw, ip_len)[0]
    phy: int = L.INT64.unpack_from(raw, ip_len + 4)[0]
    return raw[:ip_len], port, phy


class MessageRecord(NamedTuple):
    """One decoded commit-log record, with every field RocketMQ stores. Immutable.

    A named tuple rather than a frozen dataclass because building one is on every read's hot
    path: ``tuple.__new__`` costs ~0.2 µs where a frozen dataclass's ``__init__`` costs ~3 µs
    (one ``object.__setattr__`` per field), which was a third of a cold read's CPU per message.
    """

    size: int
    magic: int
    body_crc: int
    queue_id: int
    flag: int
    queue_offset: int
    phy_offset: int
    sysflag: int
    born_ts: int
    born_host: tuple[bytes, int]
    store_ts: int
    store_host: tuple[bytes, int]
    reconsume_times: int
    prepared_tx_offset: int
    body: bytes
    topic: str
    properties: dict[str, str]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.properties.get(L.PROP_KEYS, "").split(" ") if k)

    def carries_key(self, key: str) -> bool:
        """Whether ``key`` is this record's UNIQ_KEY or one of its KEYS tokens (a key query's
        re-check of each candidate: no tuple of tokens is built)."""
        props = self.properties
        return props.get(L.PROP_UNIQ_KEY) == key or (
            bool(key) and key in props.get(L.PROP_KEYS, "").split(" ")
        )

    @property
    def tags(self) -> str | None:
        return self.properties.get(L.PROP_TAGS)

    @property
    def uniq_key(self) -> str | None:
        return self.properties.get(L.PROP_UNIQ_KEY)

    @property
    def msg_id(self) -> str:
        return make_msg_id(self.store_host[0], self.store_host[1], self.phy_offset)

    @property
    def version(self) -> int:
        return 2 if self.magic == _V2 else 1

    def to_json(self, *, b64: bool = False) -> dict[str, Any]:
        """The ``--json`` shape documented in docs/cli-json.md (``read`` and ``query``)."""
        out: dict[str, Any] = {
            "topic": self.topic,
            "queue": self.queue_id,
            "queue_offset": self.queue_offset,
            "commitlog_offset": self.phy_offset,
            "size": self.size,
            "msg_id": self.msg_id,
            "uniq_key": self.uniq_key,
            "keys": list(self.keys),
            "tags": self.tags,
            "properties": self.properties,
            "born_time": self.born_ts,
            "store_time": self.store_ts,
            "born_host": format_host(*self.born_host),
            "store_host": format_host(*self.store_host),
            "sysflag": self.sysflag,
            "flag": self.flag,
            "reconsume_times": self.reconsume_times,
        }
        if not b64:
            try:
                out["body"] = self.body.decode("utf-8")
            except UnicodeDecodeError:
                b64 = True
        if b64:
            out["body_b64"] = base64.b64encode(self.body).decode("ascii")
        return out


def decode_record(
    buf: Buffer, pos: int = 0, *, verify_crc: bool = True, path: str = ""
) -> MessageRecord:
    """Decode the record at ``buf[pos:]``.

    Raises:
        CorruptRecordError: no valid record starts at ``pos`` (with the reason).
    """
    rec = decode_sound_record(buf, pos, len(buf), verify_crc)
    if rec is not None:
        return rec
    size = check_record(buf, pos, len(buf), verify_crc=verify_crc, path=path)
    if size <= 0:
        what = (
            "a BLANK end-of-file record"
            if size == END_OF_FILE
            else "no record (zeros or bad magic)"
        )
        raise CorruptRecordError(path, pos, f"expected a message, found {what}")
    return decode_checked_record(buf, pos, size)


def decode_sound_record(
    buf: Buffer, pos: int, limit: int, verify_crc: bool, expect_phy: int = -1, expect_size: int = -1
) -> MessageRecord | None:
    """:func:`decode_record` of a sound record in one pass, or None for anything unusual.

    Every check of :func:`check_record` is made here on one unpack of the header (a key query
    reads, checks and decodes each candidate, and the two passes cost twice what this does).
    It never accepts what :func:`check_record` refuses; where it declines, the caller runs the
    full checks, which name the problem (or accept an odd but valid record). With
    ``expect_phy`` (0 or more: the commit-log offset the record was read at) and
    ``expect_size``, it also declines what :func:`header_plausible` refuses, checked on the
    unpack that decodes the fields (a read's hot path, where the two cost more).
    """
    body_at = pos + _V4V4_SIZE
    if body_at > limit:
        return None
    f = _V4V4_unpack_from(buf, pos)  # IPv4 hosts, as nearly every record has
    if f[7] & _HOST_V6_BITS:
        header = _HEADER_BY_HOST_BITS[f[7] & _HOST_V6_BITS]
        body_at = pos + header.size
        if body_at > limit:
            return None
        f = header.unpack_from(buf, pos)
    (
        size, magic, crc, queue_id, flag, queue_offset, phy, sysflag, born_ts, born_ip,
        born_port, store_ts, store_ip, store_port, reconsume, prepared_tx, body_len,
    ) = f  # fmt: skip
    end = pos + size
    if (magic != _V1 and magic != _V2) or body_at > end or end > limit or body_len < 0:
        return None
    if expect_phy >= 0 and (
        phy != expect_phy
        or (expect_size >= 0 and size != expect_size)
        or queue_id < 0
        or queue_offset < 0
        or sysflag & _UNKNOWN_SYSFLAG
        or (sysflag >> _COMPRESSION_SHIFT) & 7 > _COMPRESSION_MAX
        or not _TS_MIN <= store_ts < _TS_MAX
        or not 0 <= born_ts < _TS_MAX
    ):
        return None
    body_end = body_at + body_len
    if magic == _V2:
        if body_end + 2 > end:
            return None
        tlen = _TOPIC_LEN_V2_unpack_from(buf, body_end)[0]
        topic_at = body_end + 2
    else:
        if body_end + 1 > end:
            return None
        tlen = buf[body_end]
        topic_at = body_end + 1
    plen_at = topic_at + tlen
    if tlen < 0 or plen_at + 2 > end or (expect_phy >= 0 and not tlen):
        return None
    if tlen and (buf[topic_at] == 0 or buf[plen_at - 1] == 0):
        return None  # a torn write's zeros, as check_record says
    plen = _PROPS_LEN_unpack_from(buf, plen_at)[0]
    if plen < 0 or plen_at + 2 + plen != end:
        return None
    props: dict[str, str] = {}
    if plen:
        # The shape check_record demands (name 0x01 value 0x02 entries, UTF-8) and the dict
        # decode_properties builds, in one loop: UTF-8 never encodes 0x01 or 0x02 inside a
        # character, so splitting the text splits the bytes the same way.
        try:
            entries = str(buf[plen_at + 2 : end], "utf-8").split("\x02")
        except UnicodeDecodeError:
            return None
        if entries[-1]:
            return None
        for i in range(len(entries) - 1):
            name, sep, value = entries[i].partition("\x01")
            if not sep or not name:
                return None
            if value:
                props[name] = value
    body = bytes(buf[body_at:body_end])
    if verify_crc:
        if crc32(body) & 0x7FFFFFFF != crc:
            return None
        crc_at = end - L.CRC32_RESERVED_LEN
        if plen >= L.CRC32_RESERVED_LEN and buf[crc_at : crc_at + 9] == _CRC32_ENTRY:
            # the whole-record CRC some brokers append, as _verify_crcs reads it
            digits = bytes(buf[crc_at + 9 : crc_at + 19])
            want = sum((d - 48) * 10**i for i, d in enumerate(digits))
            if want != crc32(buf[pos:crc_at]) & 0x7FFFFFFF:
                return None
    return _new_record(
        MessageRecord,
        (
            size, magic, crc, queue_id, flag, queue_offset, phy, sysflag, born_ts,
            (born_ip, born_port), store_ts, (store_ip, store_port), reconsume, prepared_tx,
            body, str(buf[topic_at:plen_at], "utf-8", "replace"), props,
        ),
    )  # fmt: skip


def decode_checked_record(buf: Buffer, pos: int, size: int) -> MessageRecord:
    """Decode a record of ``size`` bytes at ``buf[pos:]`` that was already checked.

    For bytes whose integrity is established otherwise (a cold block that passed its CRC32 and
    whose records were verified when they were tiered): skips the shape and CRC checks.
    """
    sysflag = _INT32_unpack_from(buf, pos + _POS_SYSFLAG)[0]
    header = _HEADER_BY_HOST_BITS[sysflag & _HOST_V6_BITS]
    fields = header.unpack_from(buf, pos)
    p = pos + header.size
    body_end = p + fields[16]
    magic = fields[1]
    if magic == _V2:
        tlen = _TOPIC_LEN_V2_unpack_from(buf, body_end)[0]
        t = body_end + 2
    else:
        tlen = _TOPIC_LEN_V1_unpack_from(buf, body_end)[0]
        t = body_end + 1
    plen = _PROPS_LEN_unpack_from(buf, t + tlen)[0]
    props_at = t + tlen + 2
    # Positional, in field order: this is the read path's per-message cost (see MessageRecord).
    return _new_record(
        MessageRecord,
        (
            size,
            magic,
            fields[2],  # body CRC
            fields[3],  # queue id
            fields[4],  # flag
            fields[5],  # queue offset
            fields[6],  # physical offset
            fields[7],  # sysflag
            fields[8],  # born timestamp
            (fields[9], fields[10]),  # born host
            fields[11],  # store timestamp
            (fields[12], fields[13]),  # store host
            fields[14],  # reconsume times
            fields[15],  # prepared transaction offset
            bytes(buf[p:body_end]),
            str(buf[t : t + tlen], "utf-8", "replace"),
            decode_properties(str(buf[props_at : props_at + plen], "utf-8", "replace")),
        ),
    )


_new_record: Final = tuple.__new__
_CRC32_ENTRY: Final = b"__CRC32#\x01"
# The transaction types a consume queue holds (prepared and rolled-back messages are not queued).
QUEUED_TX_KINDS: Final = (0, L.SYSFLAG_TRANSACTION_COMMIT)
_TX_MASK: Final = L.SYSFLAG_TRANSACTION_MASK
_UNKNOWN_SYSFLAG: Final = ~L.SYSFLAG_KNOWN_BITS
_COMPRESSION_SHIFT: Final = L.SYSFLAG_COMPRESSION_SHIFT
_COMPRESSION_MAX: Final = L.SYSFLAG_COMPRESSION_MAX
_TS_MIN: Final = L.STORE_TS_MIN_MS
_TS_MAX: Final = L.STORE_TS_MAX_MS
_INT32_unpack_from: Final = L.INT32.unpack_from
_TOPIC_LEN_V1_unpack_from: Final = L.TOPIC_LEN_V1.unpack_from
_TOPIC_LEN_V2_unpack_from: Final = L.TOPIC_LEN_V2.unpack_from
_PROPS_LEN_unpack_from: Final = L.PROPS_LEN.unpack_from
_POS_SYSFLAG: Final = L.POS_SYSFLAG
_HOST_V6_BITS: Final = L.SYSFLAG_BORNHOST_V6 | L.SYSFLAG_STOREHOST_V6
# Indexed by ``sysflag & _HOST_V6_BITS``: the header struct for those host widths.
_HEADER_BY_HOST_BITS: Final = {
    bits: L.record_header_struct(
        bool(bits & L.SYSFLAG_BORNHOST_V6), bool(bits & L.SYSFLAG_STOREHOST_V6)
    )
    for bits in (
        0,
        L.SYSFLAG_BORNHOST_V6,
        L.SYSFLAG_STOREHOST_V6,
        L.SYSFLAG_BORNHOST_V6 | L.SYSFLAG_STOREHOST_V6,
    )
}


# The header fields check_record_header reads, by host widths as _HEADER_BY_HOST_BITS (same
# size): TOTALSIZE, MAGIC, QUEUEID, QUEUEOFFSET, PHYSICALOFFSET, SYSFLAG, BORNTIMESTAMP,
# STORETIMESTAMP, BODYLEN; the CRC, FLAG, hosts, RECONSUMETIMES and PREPAREDTXOFFSET skipped.
_CHECKED_BY_HOST_BITS: Final = {
    bits: struct.Struct(
        f">iI4xi4xqqiq{16 if bits & L.SYSFLAG_BORNHOST_V6 else 4}x4x"
        f"q{16 if bits & L.SYSFLAG_STOREHOST_V6 else 4}x4x4x8xi"
    )
    for bits in _HEADER_BY_HOST_BITS
}


def record_size(
    topic_len: int, body_len: int, props_len: int, *, born_v6: bool = False, store_v6: bool = False
) -> int:
    """``MessageExtEncoder.calMsgLength``: the TOTALSIZE of a record with these parts."""
    header = L.record_header_struct(born_v6, store_v6).size
    topic_len_size = 2 if topic_len > L.MAX_TOPIC_BYTES_V1 else 1
    return header + body_len + topic_len_size + topic_len + 2 + props_len


def record_store_ts(buf: Buffer, pos: int = 0) -> int:
    """STORETIMESTAMP of the record at ``buf[pos:]`` (after the born host, v4 or v6)."""
    sysflag = L.INT32.unpack_from(buf, pos + L.POS_SYSFLAG)[0]
    born_len = 20 if sysflag & L.SYSFLAG_BORNHOST_V6 else 8
    ts: int = L.INT64.unpack_from(buf, pos + 48 + born_len)[0]
    return ts


def dispatch_fields(buf: Buffer, pos: int) -> tuple[str, int, int, int, int, int, dict[str, str]]:
    """What the reput needs from a validated record, without copying the body.

    Returns (topic, queue id, queue offset, sysflag, store timestamp, size, properties).
    """
    size, magic = _SIZE_MAGIC.unpack_from(buf, pos)
    sysflag = L.INT32.unpack_from(buf, pos + L.POS_SYSFLAG)[0]
    queue_id = L.INT32.unpack_from(buf, pos + 12)[0]
    queue_offset = L.INT64.unpack_from(buf, pos + L.POS_QUEUE_OFFSET)[0]
    born_len = 20 if sysflag & L.SYSFLAG_BORNHOST_V6 else 8
    store_len = 20 if sysflag & L.SYSFLAG_STOREHOST_V6 else 8
    store_ts = L.INT64.unpack_from(buf, pos + 48 + born_len)[0]
    p = pos + 68 + born_len + store_len
    body_len = L.INT32.unpack_from(buf, p)[0]
    topic, props = _topic_and_properties(buf, p + 4 + body_len, magic)
    return topic, queue_id, queue_offset, sysflag, store_ts, size, props


def record_queue(buf: Buffer, pos: int) -> tuple[str, int, int]:
    """(topic, queue id, queue offset) of a validated record, without decoding its properties."""
    magic = _SIZE_MAGIC.unpack_from(buf, pos)[1]
    sysflag = L.INT32.unpack_from(buf, pos + L.POS_SYSFLAG)[0]
    queue_id = L.INT32.unpack_from(buf, pos + 12)[0]
    queue_offset = L.INT64.unpack_from(buf, pos + L.POS_QUEUE_OFFSET)[0]
    born_len = 20 if sysflag & L.SYSFLAG_BORNHOST_V6 else 8
    store_len = 20 if sysflag & L.SYSFLAG_STOREHOST_V6 else 8
    p = pos + 68 + born_len + store_len
    p += 4 + L.INT32.unpack_from(buf, p)[0]
    if magic == _V2:
        tlen, p = L.TOPIC_LEN_V2.unpack_from(buf, p)[0], p + 2
    else:
        tlen, p = L.TOPIC_LEN_V1.unpack_from(buf, p)[0], p + 1
    return str(buf[p : p + tlen], "utf-8", "replace"), queue_id, queue_offset


def _topic_and_properties(buf: Buffer, p: int, magic: int) -> tuple[str, dict[str, str]]:
    """Decode TOPICLEN+TOPIC and PROPLEN+PROPERTIES starting at ``p`` (right after the body)."""
    if magic == _V2:
        tlen = L.TOPIC_LEN_V2.unpack_from(buf, p)[0]
        p += 2
    else:
        tlen = L.TOPIC_LEN_V1.unpack_from(buf, p)[0]
        p += 1
    topic = str(buf[p : p + tlen], "utf-8", "replace")
    p += tlen
    plen = L.PROPS_LEN.unpack_from(buf, p)[0]
    props = decode_properties(str(buf[p + 2 : p + 2 + plen], "utf-8", "replace"))
    return topic, props


def record_index_keys(buf: Buffer, pos: int = 0) -> list[str]:
    """The keys a validated record is found by: its KEYS tokens, then its UNIQ_KEY, each once.

    Reads only the two properties (a record without either costs a substring search), with
    :func:`decode_properties`'s rules: an entry needs a name, 0x01 and a non-empty value.
    """
    magic = _SIZE_MAGIC.unpack_from(buf, pos)[1]
    sysflag = L.INT32.unpack_from(buf, pos + L.POS_SYSFLAG)[0]
    p = pos + 68 + (20 if sysflag & L.SYSFLAG_BORNHOST_V6 else 8)
    p += 20 if sysflag & L.SYSFLAG_STOREHOST_V6 else 8
    p += 4 + L.INT32.unpack_from(buf, p)[0]  # past the body
    if magic == _V2:
        p += 2 + L.TOPIC_LEN_V2.unpack_from(buf, p)[0]
    else:
        p += 1 + L.TOPIC_LEN_V1.unpack_from(buf, p)[0]
    plen = L.PROPS_LEN.unpack_from(buf, p)[0]
    props = bytes(buf[p + 2 : p + 2 + plen])
    if _KEYS_NAME not in props and _UNIQ_NAME not in props:
        return []
    keys: dict[str, None] = {}
    uniq = None
    for entry in props.split(_PROP_SEP):
        name, sep, value = entry.partition(_NAME_SEP)
        if not (sep and value):
            continue
        if name == b"KEYS":
            text = value.decode("utf-8", "replace")
            keys = dict.fromkeys(k for k in text.split(L.KEY_SEPARATOR) if k)  # the last wins
        elif name == b"UNIQ_KEY":
            uniq = value.decode("utf-8", "replace")
    if uniq:
        keys[uniq] = None
    return list(keys)


_KEYS_NAME: Final = b"KEYS\x01"
_UNIQ_NAME: Final = b"UNIQ_KEY\x01"
_PROP_SEP: Final = L.PROPERTY_SEP.encode()
_NAME_SEP: Final = L.NAME_VALUE_SEP.encode()
