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

import functools
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import orjson
import zstandard

from mqtier.errors import CorruptionError, CorruptRecordError, UnsupportedFormatError
from mqtier.format import layout as L
from mqtier.format.crc import crc32
from mqtier.format.message import check_record, check_record_header

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
        """The segment a catalog entry describes.

        Raises:
            TypeError, ValueError: a field is missing, unknown or of the wrong type (a hand-edited
                or damaged catalog); the catalog's loader names the object it came from.
        """
        seg = cls(**doc)
        for name in cls.__slots__:
            value = getattr(seg, name)
            want = str if name in ("object", "topic") else int
            if type(value) is not want:  # bool is an int subclass: refuse it too
                raise TypeError(f"segment field {name!r} is {value!r}, not {want.__name__}")
        return seg


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A record to tier: its queue offset, store time, commit-log offset and bytes."""

    queue_offset: int
    store_ts: int
    phy: int
    data: bytes


class CompressionMeter:
    """Raw and compressed bytes of the blocks compressed so far (shared by a run's objects).

    Lets a builder estimate an object's compressed size before its blocks are done. Until a
    block is done the ratio is 1: an object is never cut later than its raw size says.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.raw = 0
        self.stored = 0

    def add(self, raw: int, stored: int) -> None:
        with self._lock:
            self.raw += raw
            self.stored += stored

    @property
    def ratio(self) -> float:
        return self.raw / self.stored if self.stored else 1.0


_compressors = threading.local()


def verify_source_records(
    raw: bytes,
    phys: Sequence[int],
    where: str,
    *,
    topic: str | None = None,
    queue: int | None = None,
    first_offset: int | None = None,
) -> None:
    """Check every record of a block being built (sizes, shape, body CRC, ``__CRC32#``, and
    the header fields against where it came from: ``phys[i]``, and with ``topic``, ``queue``
    and ``first_offset`` the queue and offset ``first_offset + i`` its unit gave it).

    Raises:
        CorruptRecordError: naming the commit-log offset of the first bad record.
    """
    pos = 0
    qoff = first_offset
    for phy in phys:
        try:
            size = check_record(raw, pos, len(raw), verify_crc=True, path=where)
            if size > 0:
                check_record_header(
                    raw, pos, expect_phy=phy, expect_topic=topic, expect_queue=queue,
                    expect_queue_offset=qoff, path=where,
                )  # fmt: skip
        except CorruptionError as exc:
            raise CorruptRecordError(where, phy, getattr(exc, "detail", str(exc))) from None
        if size <= 0:
            raise CorruptRecordError(where, phy, "no record where the consume queue points")
        pos += size
        if qoff is not None:
            qoff += 1
    if pos != len(raw):
        raise CorruptRecordError(where, phys[-1], "record sizes disagree with the units")


# What a block's records are checked against: (commit-log offsets, where they come from,
# topic, queue, queue offset of the first).
_Verify = tuple[Sequence[int], str, str, int, int]


def _compress(
    raw: bytes,
    level: int,
    meter: CompressionMeter | None,
    verify: _Verify | None = None,
) -> tuple[bytes, int]:
    """One block's zstd frame and its CRC32 (zstd and zlib release the GIL: runs in parallel).

    With ``verify`` (the records' commit-log offsets, where they come from, their topic, queue
    and first queue offset), the records are checked first, so the check runs in parallel too.
    """
    if verify is not None:
        phys, where, topic, queue, first = verify
        verify_source_records(raw, phys, where, topic=topic, queue=queue, first_offset=first)
    cached: dict[int, zstandard.ZstdCompressor] = getattr(_compressors, "by_level", {})
    _compressors.by_level = cached
    compressor = cached.get(level)
    if compressor is None:
        compressor = cached[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    frame = compressor.compress(raw)
    if meter is not None:
        meter.add(len(raw), len(frame))
    return frame, crc32(frame)


@dataclass(slots=True)
class _PendingBlock:
    ulen: int
    first: int
    count: int
    min_ts: int
    max_ts: int
    frame: Future[tuple[bytes, int]]


@dataclass(slots=True)
class _OpenSegment:
    topic: str
    queue: int
    first: int
    cl_min: int
    count: int = 0
    cl_max: int = 0
    blocks: list[_PendingBlock] = field(default_factory=list)


class ObjectBuilder:
    """Builds one data object in memory: records go in queue run by queue run.

    Blocks are compressed as they fill, on ``pool`` when one is given (so compression runs
    while the caller reads the next records) or right away otherwise. :meth:`finish` waits for
    them and lays the object out.
    """

    def __init__(
        self,
        key: str,
        run_id: bytes,
        created_ms: int,
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        level: int = 1,
        pool: Executor | None = None,
        meter: CompressionMeter | None = None,
        verify_from: str | None = None,
    ) -> None:
        """``verify_from`` names where the records come from and has every record checked
        (CRCs included) as its block is compressed; :meth:`finish` raises CorruptionError."""
        self.key = key
        self.block_bytes = block_bytes
        self.level = level
        self._pool = pool
        self._meter = meter
        self._verify_from = verify_from
        self._run_id = run_id
        self._created_ms = created_ms
        self._segs: list[_OpenSegment] = []
        self._partial: list[SourceRecord] = []
        self._partial_bytes = 0
        self._lock = threading.Lock()
        self._stored_done = 0  # compressed bytes of the blocks done so far
        self._raw_waiting = 0  # raw bytes of the blocks not compressed yet (and the partial one)
        self.segments: list[Segment] = []
        self.blocks: list[list[Block]] = []  # each segment's blocks, once finished
        self.raw_bytes = 0

    @property
    def stored_estimate(self) -> int:
        """The object's compressed size as far as it is known, the rest by the run's ratio."""
        ratio = self._meter.ratio if self._meter is not None else 1.0
        with self._lock:
            return self._stored_done + int(self._raw_waiting / ratio)

    def add_segment(self, topic: str, queue: int, records: Sequence[SourceRecord]) -> None:
        """Append consecutive records of one queue; continues its segment if it is the last one."""
        if not records:
            return
        seg = self._segs[-1] if self._segs else None
        if seg is None or (seg.topic, seg.queue, seg.first + seg.count) != (
            topic,
            queue,
            records[0].queue_offset,
        ):
            self._close_block()
            seg = _OpenSegment(topic, queue, records[0].queue_offset, records[0].phy)
            self._segs.append(seg)
        added = 0
        for r in records:
            if self._partial and self._partial_bytes + len(r.data) > self.block_bytes:
                self._close_block()
            self._partial.append(r)
            self._partial_bytes += len(r.data)
            added += len(r.data)
        seg.count += len(records)
        seg.cl_max = records[-1].phy
        self.raw_bytes += added
        with self._lock:
            self._raw_waiting += added

    def _close_block(self) -> None:
        if not self._partial:
            return
        run, self._partial, self._partial_bytes = self._partial, [], 0
        raw = b"".join(r.data for r in run)
        verify: _Verify | None = None
        if self._verify_from is not None:
            seg = self._segs[-1]  # a block holds consecutive records of one queue
            phys = [r.phy for r in run]
            verify = (phys, self._verify_from, seg.topic, seg.queue, run[0].queue_offset)
        if self._pool is not None:
            frame = self._pool.submit(_compress, raw, self.level, self._meter, verify)
        else:
            frame = Future()
            try:
                frame.set_result(_compress(raw, self.level, self._meter, verify))
            except CorruptionError as exc:
                frame.set_exception(exc)
        frame.add_done_callback(functools.partial(self._block_done, len(raw)))
        self._segs[-1].blocks.append(
            _PendingBlock(
                len(raw),
                run[0].queue_offset,
                len(run),
                min(r.store_ts for r in run),
                max(r.store_ts for r in run),
                frame,
            )
        )

    def _block_done(self, ulen: int, frame: Future[tuple[bytes, int]]) -> None:
        if frame.cancelled() or frame.exception() is not None:
            return
        with self._lock:
            self._raw_waiting -= ulen
            self._stored_done += len(frame.result()[0])

    def finish(self) -> bytes:
        """The object's bytes (waits for its blocks); :attr:`segments` then describes them."""
        self._close_block()
        parts = [HEADER.pack(MAGIC_HEAD, FORMAT_VERSION, 0, 0, self._created_ms, self._run_id)]
        pos = HEADER.size
        placed: list[tuple[_OpenSegment, list[Block]]] = []
        for seg in self._segs:
            blocks = []
            for pb in seg.blocks:
                frame, crc = pb.frame.result()
                blocks.append(
                    Block(pos, len(frame), pb.ulen, pb.first, pb.count, crc, pb.min_ts, pb.max_ts)
                )
                parts.append(frame)
                pos += len(frame)
            placed.append((seg, blocks))
        for seg, blocks in placed:
            index = b"".join(
                BLOCK_ENTRY.pack(
                    b.offset, b.clen, b.ulen, b.first, b.count, b.crc, b.min_ts, b.max_ts
                )
                for b in blocks
            )
            self.segments.append(
                Segment(
                    object=self.key,
                    topic=seg.topic,
                    queue=seg.queue,
                    first=seg.first,
                    count=seg.count,
                    min_ts=min(b.min_ts for b in blocks),
                    max_ts=max(b.max_ts for b in blocks),
                    cl_min=seg.cl_min,
                    cl_max=seg.cl_max,
                    raw_bytes=sum(b.ulen for b in blocks),
                    stored_bytes=sum(b.clen for b in blocks),
                    index_pos=pos,
                    index_len=len(index),
                    index_crc=crc32(index),
                )
            )
            self.blocks.append(blocks)
            parts.append(index)
            pos += len(index)
        footer = orjson.dumps(
            {
                "format": "mqtier-data",
                "version": FORMAT_VERSION,
                "object": self.key,
                "segments": [s.to_json() for s in self.segments],
            }
        )
        parts.append(footer)
        parts.append(TRAILER.pack(pos, len(footer), crc32(footer), MAGIC_TAIL))
        return b"".join(parts)


def parse_block_index(data: bytes, seg: Segment) -> list[Block]:
    where = f"{seg.object} @ {seg.index_pos}"
    if len(data) != seg.index_len or crc32(data) != seg.index_crc:
        raise CorruptionError(f"{where}: block index of {seg.topic}/{seg.queue} fails its CRC")
    blocks = [
        Block(*BLOCK_ENTRY.unpack_from(data, p)) for p in range(0, len(data), BLOCK_ENTRY.size)
    ]
    # The catalog's copy of the segment is not covered by this CRC: hold the two to each other,
    # so a reader never walks past what the object really holds.
    expected = seg.first
    for b in blocks:
        if b.first != expected or b.count <= 0:
            raise CorruptionError(
                f"{where}: block index of {seg.topic}/{seg.queue} has a block at offset "
                f"{b.first} where {expected} was expected"
            )
        expected += b.count
    if expected != seg.end:
        raise CorruptionError(
            f"{where}: block index of {seg.topic}/{seg.queue} ends at offset {expected}, "
            f"the catalog says {seg.end}"
        )
    return blocks


def decode_block(frame: bytes, block: Block, object_key: str) -> bytes:
    """Verify and decompress one block."""
    where = f"{object_key} @ {block.offset}"
    if len(frame) != block.clen or crc32(frame) != block.crc:
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


def record_starts(raw: bytes, block: Block, object_key: str) -> list[int]:
    """Where each record of a decoded block starts, then ``len(raw)``.

    Walks the records' sizes and checks each one's queue offset; no record CRCs. For a block that
    passed its own CRC32: the records in it were CRC-checked when they were tiered.
    """
    where = f"{object_key} @ {block.offset}"
    starts = []
    pos = 0
    limit = len(raw)
    for i in range(block.count):
        if pos + L.POS_QUEUE_OFFSET + 8 > limit:
            raise CorruptionError(f"{where}: record {i} of {block.count} is missing")
        size = L.INT32.unpack_from(raw, pos)[0]
        qoff = L.INT64.unpack_from(raw, pos + L.POS_QUEUE_OFFSET)[0]
        if size <= L.POS_QUEUE_OFFSET + 8 or pos + size > limit or qoff != block.first + i:
            raise CorruptionError(
                f"{where}: record {i} (size {size}, queue offset {qoff}) does not fit the block"
            )
        starts.append(pos)
        pos += size
    if pos != limit:
        raise CorruptionError(f"{where}: {limit - pos} stray bytes after the last record")
    starts.append(pos)
    return starts


def parse_trailer(tail: bytes, object_key: str) -> tuple[int, int, int]:
    """(footer position, length, CRC) from the object's last 24 bytes."""
    if len(tail) < TRAILER.size:
        raise CorruptionError(f"{object_key}: too short to be an mqtier data object")
    pos, length, crc, magic = TRAILER.unpack(tail[-TRAILER.size :])
    if magic != MAGIC_TAIL:
        raise UnsupportedFormatError(f"{object_key}: not an mqtier data object (bad trailer magic)")
    return pos, length, crc


def parse_footer(data: bytes, crc: int, object_key: str) -> list[Segment]:
    if crc32(data) != crc:
        raise CorruptionError(f"{object_key}: footer fails its CRC32")
    doc = orjson.loads(data)
    if doc.get("version") != FORMAT_VERSION:
        raise UnsupportedFormatError(f"{object_key}: data format version {doc.get('version')}")
    return [Segment.from_json(s) for s in doc["segments"]]
