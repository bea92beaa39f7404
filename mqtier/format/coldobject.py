"""mqtier's cold data objects: queue runs of original RocketMQ records in zstd blocks.

One object holds one or more *segments*; a segment is a run of consecutive queue offsets of one
(topic, queue), stored as the records' original commit-log bytes (unchanged, so record CRCs,
``__CRC32#`` and offsetMsgIds still hold). A segment is cut into blocks of about
``block_bytes``; each block is an independent zstd frame, so reading one message costs one
ranged read of one block. Layout (all integers big-endian)::

    header   40 B   magic "MQTDATA1", version u16, flags u16, reserved u32, created ms i64,
                    run id (16 bytes)
    blocks          zstd frames, segment after segment
    indexes         per segment: one 48-byte entry per block (BLOCK_ENTRY below)
    footer          JSON: format version and every segment's metadata (topic, queue, offsets,
                    times, commit-log range, where its block index is and its CRC)
    trailer  24 B   footer position u64, footer length u32, footer CRC32 u32, magic "MQTFOOT1"

The object describes itself (footer), so the cold tier can be verified and rebuilt from its
objects alone; the catalog repeats each segment's metadata so readers need no extra request.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson
import zstandard

from mqtier.errors import CorruptionError, UnsupportedFormatError
from mqtier.format import layout as L
from mqtier.format.message import check_record

MAGIC_HEAD: Final = L.COLD_DATA_MAGIC
MAGIC_TAIL: Final = L.COLD_FOOTER_MAGIC
FORMAT_VERSION: Final = L.COLD_DATA_VERSION
HEADER: Final = L.COLD_HEADER
BLOCK_ENTRY: Final = L.COLD_BLOCK_ENTRY
TRAILER: Final = L.COLD_TRAILER
DEFAULT_BLOCK_BYTES: Final = 256 << 10


@dataclass(frozen=True, slots=True)
class Block:
    offset: int
    clen: int
    ulen: int
    first: int
    count: int
    crc: int
    min_ts: int
    max_ts: int


@dataclass(frozen=True, slots=True)
class Segment:
    """One queue run inside an object (also the catalog's per-segment entry)."""

    object: str
    topic: str
    queue: int
    first: int  # first queue offset
    count: int
    min_ts: int
    max_ts: int
    cl_min: int  # commit-log offset of the first record
    cl_max: int  # commit-log offset of the last record
    raw_bytes: int  # records' bytes before compression
    stored_bytes: int  # compressed bytes of its blocks
    index_pos: int
    index_len: int
    index_crc: int

    @property
    def end(self) -> int:
        return self.first + self.count

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Segment:
        return cls(**doc)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A record to tier: its queue offset, store time, commit-log offset and bytes."""

    queue_offset: int
    store_ts: int
    phy: int
    data: bytes


class ObjectBuilder:
    """Builds one data object in memory, segment by segment."""

    def __init__(
        self,
        key: str,
        run_id: bytes,
        created_ms: int,
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        level: int = 1,
    ) -> None:
        self.key = key
        self.block_bytes = block_bytes
        self._compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._parts: list[bytes] = [
            HEADER.pack(MAGIC_HEAD, FORMAT_VERSION, 0, 0, created_ms, run_id)
        ]
        self._pos = HEADER.size
        self._pending: list[tuple[str, int, list[Block], dict[str, int]]] = []
        self.segments: list[Segment] = []
        self.raw_bytes = 0

    @property
    def size(self) -> int:
        return self._pos

    def add_segment(self, topic: str, queue: int, records: Sequence[SourceRecord]) -> None:
        """Append a run of consecutive queue offsets of one queue."""
        if not records:
            return
        blocks: list[Block] = []
        i = 0
        while i < len(records):
            j, size = i, 0
            while j < len(records) and (j == i or size + len(records[j].data) <= self.block_bytes):
                size += len(records[j].data)
                j += 1
            run = records[i:j]
            raw = b"".join(r.data for r in run)
            frame = self._compressor.compress(raw)
            blocks.append(
                Block(
                    self._pos,
                    len(frame),
                    len(raw),
                    run[0].queue_offset,
                    len(run),
                    zlib.crc32(frame),
                    min(r.store_ts for r in run),
                    max(r.store_ts for r in run),
                )
            )
            self._parts.append(frame)
            self._pos += len(frame)
            self.raw_bytes += len(raw)
            i = j
        stats = {
            "first": records[0].queue_offset,
            "count": len(records),
            "min_ts": min(b.min_ts for b in blocks),
            "max_ts": max(b.max_ts for b in blocks),
            "cl_min": records[0].phy,
            "cl_max": records[-1].phy,
            "raw_bytes": sum(b.ulen for b in blocks),
            "stored_bytes": sum(b.clen for b in blocks),
        }
        self._pending.append((topic, queue, blocks, stats))

    def finish(self) -> bytes:
        """The object's bytes; :attr:`segments` then describes each segment."""
        for topic, queue, blocks, stats in self._pending:
            index = b"".join(
                BLOCK_ENTRY.pack(
                    b.offset, b.clen, b.ulen, b.first, b.count, b.crc, b.min_ts, b.max_ts
                )
                for b in blocks
            )
            self.segments.append(
                Segment(
                    object=self.key,
                    topic=topic,
                    queue=queue,
                    index_pos=self._pos,
                    index_len=len(index),
                    index_crc=zlib.crc32(index),
                    **stats,
                )
            )
            self._parts.append(index)
            self._pos += len(index)
        footer = orjson.dumps(
            {
                "format": "mqtier-data",
                "version": FORMAT_VERSION,
                "object": self.key,
                "segments": [s.to_json() for s in self.segments],
            }
        )
        self._parts.append(footer)
        self._parts.append(TRAILER.pack(self._pos, len(footer), zlib.crc32(footer), MAGIC_TAIL))
        self._pos += len(footer) + TRAILER.size
        return b"".join(self._parts)


def parse_block_index(data: bytes, seg: Segment) -> list[Block]:
    where = f"{seg.object} @ {seg.index_pos}"
    if len(data) != seg.index_len or zlib.crc32(data) != seg.index_crc:
        raise CorruptionError(f"{where}: block index of {seg.topic}/{seg.queue} fails its CRC")
    return [Block(*BLOCK_ENTRY.unpack_from(data, p)) for p in range(0, len(data), BLOCK_ENTRY.size)]


def decode_block(frame: bytes, block: Block, object_key: str) -> bytes:
    """Verify and decompress one block."""
    where = f"{object_key} @ {block.offset}"
    if len(frame) != block.clen or zlib.crc32(frame) != block.crc:
        raise CorruptionError(f"{where}: block of {block.clen} bytes fails its CRC32")
    try:
        raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=block.ulen)
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"{where}: block does not decompress: {exc}") from None
    if len(raw) != block.ulen:
        raise CorruptionError(f"{where}: block decompresses to {len(raw)} bytes, not {block.ulen}")
    return raw


def block_records(raw: bytes, block: Block, object_key: str) -> Iterator[tuple[int, int, bytes]]:
    """(queue offset, position in block, record bytes) of each record, each one verified."""
    pos = 0
    where = f"{object_key} @ {block.offset}"
    for i in range(block.count):
        size = check_record(raw, pos, len(raw), verify_crc=True, path=where)
        if size <= 0:
            raise CorruptionError(f"{where}: record {i} of {block.count} is missing")
        record = raw[pos : pos + size]
        qoff = L.INT64.unpack_from(record, L.POS_QUEUE_OFFSET)[0]
        if qoff != block.first + i:
            raise CorruptionError(
                f"{where}: record {i} has queue offset {qoff}, expected {block.first + i}"
            )
        yield qoff, pos, record
        pos += size
    if pos != len(raw):
        raise CorruptionError(f"{where}: {len(raw) - pos} stray bytes after the last record")


def parse_trailer(tail: bytes, object_key: str) -> tuple[int, int, int]:
    """(footer position, length, CRC) from the object's last 24 bytes."""
    if len(tail) < TRAILER.size:
        raise CorruptionError(f"{object_key}: too short to be an mqtier data object")
    pos, length, crc, magic = TRAILER.unpack(tail[-TRAILER.size :])
    if magic != MAGIC_TAIL:
        raise UnsupportedFormatError(f"{object_key}: not an mqtier data object (bad trailer magic)")
    return pos, length, crc


def parse_footer(data: bytes, crc: int, object_key: str) -> list[Segment]:
    if zlib.crc32(data) != crc:
        raise CorruptionError(f"{object_key}: footer fails its CRC32")
    doc = orjson.loads(data)
    if doc.get("version") != FORMAT_VERSION:
        raise UnsupportedFormatError(f"{object_key}: data format version {doc.get('version')}")
    return [Segment.from_json(s) for s in doc["segments"]]
