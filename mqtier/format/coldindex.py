"""mqtier's cold index objects: hash slots whose items are contiguous, newest first.

An index object answers "which messages may carry this key?" for the messages of the data
objects it names. Every KEYS token, every UNIQ_KEY and every offsetMsgId's commit-log offset of
those messages gets one *item*; items are grouped by hash *slot* and each slot's items are
contiguous, so a lookup is one ranged read of one slot's items once the *directory* (where each
slot starts) is known. Layout (big-endian)::

    header     72 B   magic "MQTINDX1", version, hash id, item size, slot bits, page size,
                      item count, min/max store ms, created ms, run id, CRC32
    item pages        items (48 B each) as one stream cut into pages of 4096 bytes, each page
                      a CRC32 of its data then up to 4092 bytes of the stream
    directory         (slots + 1) u32: item number where each slot starts, then the item count
    tables            zstd JSON: the data objects and the (topic, queue)s items point into
    footer     56 B   where directory and tables are, geometry, CRC32 of directory + tables,
                      CRC32 of the footer, magic "MQTIEND1"

Directory, tables and footer are the object's *tail*: one ranged read, immutable, small (about
0.5 % of the object), and what a reader caches locally. Geometry (hash, slot count, item size,
page size) is read from the object, never from configuration. Every byte read is covered by a
CRC32: the tail by its two, items by their pages'.

An item carries what a read of its message needs without another request: the data object,
the block's position, length and CRC32, and the queue and queue offset (the record in the
block is found by its QUEUEOFFSET), plus the store time in ms for exact time windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import mmh3
import numpy as np
import numpy.typing as npt
import orjson
import zstandard

from mqtier.errors import CorruptionError, UnsupportedFormatError
from mqtier.format import layout as L
from mqtier.format.coldobject import Block
from mqtier.format.crc import crc32

HEADER: Final = L.COLD_INDEX_HEADER
FOOTER: Final = L.COLD_INDEX_FOOTER
PAGE: Final = L.COLD_INDEX_PAGE
PAGE_DATA: Final = PAGE - 4
ITEM_DTYPE: Final = np.dtype(
    [
        ("hash", ">u8"),
        ("store_ms", ">i8"),
        ("queue_offset", ">i8"),
        ("block_pos", ">u8"),
        ("block_len", ">u4"),
        ("block_crc", ">u4"),
        ("object", ">u4"),
        ("queue", ">u4"),
    ]
)
ITEM_BYTES: Final = ITEM_DTYPE.itemsize
# Slots hold 12-24 items on average: the directory (4 bytes a slot) stays under 0.7 % of the
# items it describes, and a slot's items (0.6-1.2 KB) are one small ranged read.
ITEMS_PER_SLOT: Final = 12
MAX_SLOT_BITS: Final = 31

Items = npt.NDArray[Any]  # a structured array of ITEM_DTYPE


def key_hash(key: str) -> int:
    """The hash of a KEYS token or a UNIQ_KEY (hash id 1). Keys are hashed without their topic:
    items name their queue, so a key query filters topics before fetching anything."""
    return int(
        mmh3.hash64(key.encode("utf-8", "surrogatepass"), seed=0, x64arch=True, signed=False)[0]
    )


def offset_hash(phy: int) -> int:
    """The hash an offsetMsgId is indexed under: its commit-log offset (hash id 1)."""
    return int(mmh3.hash64(b"\x00" + phy.to_bytes(8, "big"), seed=0, x64arch=True, signed=False)[0])


def slot_bits_for(items: int) -> int:
    """The slot count's log2 for ``items`` items: the largest with ITEMS_PER_SLOT or more each."""
    bits = 0
    while bits < MAX_SLOT_BITS and (2 << bits) * ITEMS_PER_SLOT <= items:
        bits += 1
    return bits


def slots_of(hashes: npt.NDArray[np.uint64], bits: int) -> npt.NDArray[np.int64]:
    """A hash's slot is its top ``bits`` bits: items sorted by slot are sorted by hash prefix,
    which lets a merge re-slot by shifting."""
    if bits == 0:
        return np.zeros(len(hashes), dtype=np.int64)
    return (hashes.astype(np.uint64) >> np.uint64(64 - bits)).astype(np.int64)


def slot_of(h: int, bits: int) -> int:
    return h >> (64 - bits) if bits else 0


@dataclass(frozen=True, slots=True)
class IndexGeometry:
    """What a catalog entry repeats of an index object (its tail is found from it)."""

    items: int
    size: int
    tail_pos: int
    tail_crc: int
    min_ts: int
    max_ts: int


def item_order(
    items: Items, hashes: npt.NDArray[np.uint64], slots: npt.NDArray[np.int64], bits: int
) -> npt.NDArray[np.intp]:
    """The order of ``items`` in an index object: slot ascending, then newest first; ties by
    queue and offset, newest first, so the bytes do not depend on the order items came in
    (then by hash: a message's KEYS, UNIQ_KEY and offset items tie on all the rest when they
    land in one slot). Stable: items equal in all of these keep their order.

    That is a 5-key ``np.lexsort`` (half of a 20M-item merge's time); here slot and store time
    are one 64-bit key sorted once, and only the few runs of items tied on both go through the
    lexsort of the rest.
    """
    ms = items["store_ms"].astype(np.int64)
    if len(ms) == 0:
        return np.zeros(0, dtype=np.intp)
    span = int(ms.max()) - int(ms.min())
    queue = -items["queue"].astype(np.int64)
    offset = -items["queue_offset"].astype(np.int64)
    if bits + span.bit_length() > 64:  # a time range too wide to share 64 bits with the slot
        return np.lexsort((hashes, offset, queue, -ms, slots))
    key = (slots.astype(np.uint64) << np.uint64(span.bit_length())) | (int(ms.max()) - ms).astype(
        np.uint64
    )
    order = np.argsort(key, kind="stable")
    tied = key[order[1:]] == key[order[:-1]]  # with its predecessor, in sorted order
    if not tied.any():
        return order
    in_run = np.zeros(len(order), dtype=bool)
    in_run[1:] |= tied
    in_run[:-1] |= tied
    at = np.nonzero(in_run)[0]  # positions in the sorted order; each run is contiguous
    run = np.cumsum(np.concatenate(([True], ~tied)))[at]  # which run each position is in
    members = order[at]
    order[at] = members[np.lexsort((hashes[members], offset[members], queue[members], run))]
    return order


def build_index_object(
    items: Items,
    objects: list[str],
    queues: list[tuple[str, int]],
    *,
    run_id: bytes,
    created_ms: int,
) -> tuple[bytes, IndexGeometry]:
    """The bytes of an index object holding ``items`` (any order; sorted here).

    ``items["object"]`` and ``items["queue"]`` number into ``objects`` and ``queues``.
    """
    n = len(items)
    bits = slot_bits_for(n)
    hashes = items["hash"].astype(np.uint64)
    slots = slots_of(hashes, bits)
    order = item_order(items, hashes, slots, bits)
    ordered = np.ascontiguousarray(items[order], dtype=ITEM_DTYPE)
    directory = np.zeros((1 << bits) + 1, dtype=">u4")
    directory[1:] = np.cumsum(np.bincount(slots, minlength=1 << bits))
    stream = ordered.tobytes()
    min_ts = int(items["store_ms"].min()) if n else 0
    max_ts = int(items["store_ms"].max()) if n else 0
    parts = [
        _header(bits, n, min_ts, max_ts, created_ms, run_id),
    ]
    for at in range(0, len(stream), PAGE_DATA):
        data = stream[at : at + PAGE_DATA]
        parts.append(L.UINT32.pack(crc32(data)) + data)
    dir_pos = sum(len(p) for p in parts)
    dir_bytes = directory.tobytes()
    tables = zstandard.ZstdCompressor(level=3).compress(
        orjson.dumps({"objects": objects, "queues": [[t, q] for t, q in queues]})
    )
    tail = dir_bytes + tables
    tail_crc = crc32(tail)
    head = FOOTER.pack(
        dir_pos,
        dir_pos + len(dir_bytes),
        len(tables),
        n,
        bits,
        L.COLD_INDEX_HASH_MMH3_64,
        ITEM_BYTES,
        PAGE,
        tail_crc,
        0,
        L.COLD_INDEX_END_MAGIC,
    )
    footer = _with_crc(head)
    data = b"".join([*parts, tail, footer])
    return data, IndexGeometry(n, len(data), dir_pos, tail_crc, min_ts, max_ts)


def _header(bits: int, n: int, min_ts: int, max_ts: int, created_ms: int, run_id: bytes) -> bytes:
    fields = (
        L.COLD_INDEX_MAGIC,
        L.COLD_INDEX_VERSION,
        L.COLD_INDEX_HASH_MMH3_64,
        ITEM_BYTES,
        bits,
        PAGE,
        n,
        min_ts,
        max_ts,
        created_ms,
        run_id,
        0,
    )
    head = HEADER.pack(*fields)
    return head[:-4] + L.UINT32.pack(crc32(head[:-4]))


def _with_crc(footer: bytes) -> bytes:
    """The footer with its own CRC32 (over the bytes before that field) filled in."""
    at = FOOTER.size - 12
    return footer[:at] + L.UINT32.pack(crc32(footer[:at])) + footer[at + 4 :]


def parse_header(data: bytes, key: str) -> dict[str, Any]:
    """The header of an index object (for inspection and verification)."""
    if len(data) < HEADER.size:
        raise CorruptionError(f"{key} @ 0: index header truncated ({len(data)} bytes)")
    fields = HEADER.unpack_from(data)
    if fields[0] != L.COLD_INDEX_MAGIC:
        raise CorruptionError(f"{key} @ 0: not an mqtier index object (magic {fields[0]!r})")
    if crc32(data[: HEADER.size - 4]) != fields[-1]:
        raise CorruptionError(f"{key} @ 0: index header fails its CRC32")
    if fields[1] != L.COLD_INDEX_VERSION:
        raise UnsupportedFormatError(f"{key} @ 8: index format version {fields[1]}")
    # a tool reading the object on its own takes the geometry from here: refuse what this
    # reader does not know, as parse_tail does for the footer's copy
    if fields[2] != L.COLD_INDEX_HASH_MMH3_64 or fields[3] != ITEM_BYTES or fields[5] != PAGE:
        raise UnsupportedFormatError(
            f"{key} @ 10: index hash {fields[2]}, item size {fields[3]}, page size {fields[5]}"
        )
    names = ("version", "hash", "item_bytes", "slot_bits", "page_bytes", "items", "min_ts")
    doc = dict(zip(names, fields[1:8], strict=True))
    doc.update(max_ts=fields[8], created_ms=fields[9], run_id=fields[10].hex())
    return doc


@dataclass(frozen=True, slots=True)
class IndexTail:
    """An index object's directory and tables, checked: what a lookup needs before the items."""

    object: str
    dir_pos: int
    slot_bits: int
    items: int
    directory: npt.NDArray[np.uint32]
    objects: list[str]
    queues: list[tuple[str, int]]

    def slot_items(self, h: int) -> tuple[int, int]:
        """Item numbers ``[first, end)`` of the slot of hash ``h``."""
        s = slot_of(h, self.slot_bits)
        return int(self.directory[s]), int(self.directory[s + 1])

    def byte_span(self, first: int, end: int) -> tuple[int, int]:
        """The object's byte range holding the whole pages of items ``[first, end)``."""
        p0 = first * ITEM_BYTES // PAGE_DATA
        p1 = ((end * ITEM_BYTES - 1) // PAGE_DATA) + 1
        return HEADER.size + p0 * PAGE, min(HEADER.size + p1 * PAGE, self.dir_pos)

    def decode_items(self, data: bytes, start: int, first: int, end: int) -> Items:
        """Items ``[first, end)`` from the pages read at byte ``start``, every page checked."""
        stream = bytearray()
        for at in range(0, len(data), PAGE):
            page = data[at : at + PAGE]
            if len(page) < 4 or crc32(page[4:]) != L.UINT32.unpack_from(page)[0]:
                raise CorruptionError(f"{self.object} @ {start + at}: index page fails its CRC32")
            stream += page[4:]
        p0 = (start - HEADER.size) // PAGE
        lo = first * ITEM_BYTES - p0 * PAGE_DATA
        hi = end * ITEM_BYTES - p0 * PAGE_DATA
        if lo < 0 or hi > len(stream):
            raise CorruptionError(
                f"{self.object} @ {start}: index pages end before item {end} "
                f"({len(stream)} bytes read)"
            )
        return np.frombuffer(bytes(stream[lo:hi]), dtype=ITEM_DTYPE)

    @property
    def tail_bytes_estimate(self) -> int:
        return self.directory.nbytes


def parse_tail(data: bytes, key: str, size: int, tail_pos: int, tail_crc: int) -> IndexTail:
    """Check and decode an index object's tail: ``data`` is its bytes ``[tail_pos, size)``.

    ``tail_crc`` is what the catalog recorded: a tail that checks out on its own but differs
    (an object replaced under the same name) is refused too.

    Raises:
        CorruptionError: a CRC, the magic or the geometry is wrong (object and byte named).
        UnsupportedFormatError: a hash function or item size this reader does not know.
    """
    if len(data) != size - tail_pos or len(data) < FOOTER.size:
        raise CorruptionError(
            f"{key} @ {tail_pos}: index tail is {len(data)} bytes, expected {size - tail_pos}"
        )
    foot_at = len(data) - FOOTER.size
    footer = data[foot_at:]
    (dir_pos, tables_pos, tables_len, items, bits, hash_id, item_bytes, page, crc, own_crc,
     magic) = FOOTER.unpack(footer)  # fmt: skip
    where = f"{key} @ {tail_pos + foot_at}"
    if magic != L.COLD_INDEX_END_MAGIC:
        raise CorruptionError(f"{where}: index footer has magic {magic!r}")
    if crc32(footer[: FOOTER.size - 12]) != own_crc:
        raise CorruptionError(f"{where}: index footer fails its CRC32")
    if hash_id != L.COLD_INDEX_HASH_MMH3_64 or item_bytes != ITEM_BYTES or page != PAGE:
        raise UnsupportedFormatError(
            f"{where}: index hash {hash_id}, item size {item_bytes}, page size {page}"
        )
    body = data[:foot_at]
    if crc32(body) != crc:
        raise CorruptionError(f"{key} @ {tail_pos}: index directory and tables fail their CRC32")
    if dir_pos != tail_pos or crc != tail_crc:
        # sound on its own, but not the object the catalog committed: replaced under its name
        raise CorruptionError(
            f"{where}: index tail (directory at {dir_pos}, CRC32 {crc:08x}) is not the one the "
            f"catalog recorded (at {tail_pos}, CRC32 {tail_crc:08x}); the object was replaced"
        )
    n_slots = 1 << bits
    dir_len = tables_pos - dir_pos
    if (
        bits > MAX_SLOT_BITS
        or dir_len != (n_slots + 1) * 4
        or tables_pos + tables_len != (tail_pos + foot_at)
    ):
        raise CorruptionError(f"{where}: index geometry does not add up")
    directory = np.frombuffer(body[:dir_len], dtype=">u4").astype(np.uint32)
    if (
        directory[0] != 0
        or directory[-1] != items
        or np.any(np.diff(directory.astype(np.int64)) < 0)
    ):
        raise CorruptionError(f"{key} @ {tail_pos}: index directory is not a running count")
    if HEADER.size + -(-items * ITEM_BYTES // PAGE_DATA) * 4 + items * ITEM_BYTES != dir_pos:
        raise CorruptionError(f"{where}: {items} items do not end at byte {dir_pos}")
    try:
        tables = orjson.loads(zstandard.ZstdDecompressor().decompress(body[dir_len:]))
        objects = [str(o) for o in tables["objects"]]
        queues = [(str(t), int(q)) for t, q in tables["queues"]]
    except (zstandard.ZstdError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptionError(f"{key} @ {tables_pos}: index tables unreadable ({exc})") from None
    return IndexTail(key, dir_pos, bits, items, directory, objects, queues)


Cover = tuple[str, int, int, int]  # topic, queue, first offset, one past the last


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """The catalog's entry for one index object: where its tail is, and what it indexes.

    ``covers`` are the queue-offset ranges whose messages it has items for (merged per queue);
    ``level`` is 0 for a tiering run's own object and one more per merge.
    """

    object: str
    level: int
    items: int
    size: int
    tail_pos: int
    tail_crc: int
    min_ts: int
    max_ts: int
    cl_min: int
    cl_max: int
    covers: tuple[Cover, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "level": self.level,
            "items": self.items,
            "size": self.size,
            "tail_pos": self.tail_pos,
            "tail_crc": self.tail_crc,
            "min_ts": self.min_ts,
            "max_ts": self.max_ts,
            "cl_min": self.cl_min,
            "cl_max": self.cl_max,
            "covers": [list(c) for c in self.covers],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> IndexEntry:
        """The entry a catalog document describes.

        Raises:
            TypeError, ValueError: a field is missing, unknown or of the wrong type.
        """
        if not isinstance(doc, dict):
            raise TypeError(f"an index entry is {doc!r}")
        fields = {k: v for k, v in doc.items() if k != "covers"}
        covers = doc.get("covers")
        if not isinstance(covers, list):
            raise TypeError(f"index covers is {covers!r}")
        parsed: list[Cover] = []
        for c in covers:
            if (
                not isinstance(c, list)
                or len(c) != 4
                or type(c[0]) is not str
                or any(type(v) is not int for v in c[1:])
                or not 0 <= c[2] < c[3]
            ):
                raise ValueError(f"index cover {c!r} is not [topic, queue, first, end]")
            parsed.append((c[0], c[1], c[2], c[3]))
        entry = cls(**fields, covers=tuple(parsed))
        for name in cls.__slots__:
            value = getattr(entry, name)
            if name == "covers":
                continue
            want = str if name == "object" else int
            if type(value) is not want:
                raise TypeError(f"index field {name!r} is {value!r}, not {want.__name__}")
        return entry

    @classmethod
    def of(
        cls,
        key: str,
        geo: IndexGeometry,
        *,
        level: int,
        cl_range: tuple[int, int],
        covers: tuple[Cover, ...],
    ) -> IndexEntry:
        """The catalog entry of the object just built at ``key`` (``geo``)."""
        return cls(
            object=key,
            level=level,
            items=geo.items,
            size=geo.size,
            tail_pos=geo.tail_pos,
            tail_crc=geo.tail_crc,
            min_ts=geo.min_ts,
            max_ts=geo.max_ts,
            cl_min=cl_range[0],
            cl_max=cl_range[1],
            covers=covers,
        )

    def covers_queue(self, topic: str | None) -> bool:
        return topic is None or any(c[0] == topic for c in self.covers)


def merge_covers(covers: list[Cover]) -> tuple[Cover, ...]:
    """Ranges sorted per queue, adjacent and overlapping ones joined."""
    out: list[list[Any]] = []
    for t, q, a, b in sorted(covers):
        if out and out[-1][0] == t and out[-1][1] == q and a <= out[-1][3]:
            out[-1][3] = max(out[-1][3], b)
        else:
            out.append([t, q, a, b])
    return tuple((t, q, a, b) for t, q, a, b in out)


def point_at_blocks(items: Items, rows: npt.NDArray[np.int64], blocks: Sequence[Block]) -> None:
    """Point ``items[rows]`` at the blocks (of one segment, in offset order) holding their
    queue offsets: position, length and CRC32, what one ranged read of the block needs."""
    firsts = np.asarray([b.first for b in blocks], dtype=np.int64)
    at = np.searchsorted(firsts, items["queue_offset"][rows].astype(np.int64), side="right") - 1
    items["block_pos"][rows] = np.asarray([b.offset for b in blocks], dtype=np.uint64)[at]
    items["block_len"][rows] = np.asarray([b.clen for b in blocks], dtype=np.uint32)[at]
    items["block_crc"][rows] = np.asarray([b.crc for b in blocks], dtype=np.uint32)[at]
