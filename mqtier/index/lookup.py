"""Looking keys up in the cold index: index objects, then the blocks holding the hits.

A lookup consults, concurrently, every committed index object whose time range (and, for an
offsetMsgId, commit-log range) overlaps the question: its tail (cached locally, else one
ranged GET) says where the key's slot is, and one ranged GET reads the slot's items. Items
whose hash, topic, time or queue offset does not fit are dropped without another request;
the rest are fetched newest first, one ranged GET per distinct block, and every message is
checked against the real key before it is returned (the hash is not proof).

Items point at the data object and block their message was tiered to. Segment compaction
moves messages to new objects (the catalog then names another object for that offset); such a
hit is read through the catalog instead. Expiry removes offsets from the catalog; a hit below a
queue's first committed offset is dropped, so nothing expired is ever returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import numpy as np
import zstandard

from mqtier.backend.base import ColdStore
from mqtier.backend.open import bill_of
from mqtier.errors import ColdObjectNotFoundError, CorruptionError, MissingCommittedObjectError
from mqtier.format import layout as L
from mqtier.format.coldindex import IndexEntry, IndexTail, parse_tail
from mqtier.format.crc import crc32
from mqtier.format.message import MessageRecord, decode_checked_record
from mqtier.index.cache import ImmutableCache
from mqtier.tier.catalog import CatalogState, load_catalog
from mqtier.tier.reader import ColdReader

log = logging.getLogger(__name__)

MAX_BLOCK_BYTES = 64 << 20
_T = TypeVar("_T")
_R = TypeVar("_R")  # a block decompresses to about 256 KiB; anything huge is damage


@dataclass(frozen=True, slots=True)
class Candidate:
    """An index item that fits the question: a message that may carry the key."""

    topic: str
    queue: int
    queue_offset: int
    store_ms: int
    object: str
    block_pos: int
    block_len: int
    block_crc: int

    @property
    def newest_first(self) -> tuple[int, str, int, int]:
        return (-self.store_ms, self.topic, -self.queue, -self.queue_offset)


@dataclass(frozen=True, slots=True)
class ColdHit:
    message: MessageRecord
    object: str
    byte_range: tuple[int, int]  # the block read, [start, end) of the object


@dataclass(slots=True)
class Step:
    name: str
    seconds: float = 0.0
    requests: int = 0
    bytes: int = 0


@dataclass
class Explain:
    """What a query did, step by step (``--explain``)."""

    index_objects: int = 0  # index objects whose ranges overlap the question
    slots_read: int = 0  # of which a slot had items (an empty slot costs no read)
    candidates: int = 0
    steps: dict[str, Step] = field(default_factory=dict)

    def step(self, name: str) -> Step:
        return self.steps.setdefault(name, Step(name))

    def to_json(self) -> dict[str, Any]:
        return {
            "index_objects": self.index_objects,
            "slots_read": self.slots_read,
            "candidates": self.candidates,
            "steps": [
                {
                    "step": s.name,
                    "seconds": round(s.seconds, 3),
                    "requests": s.requests,
                    "bytes": s.bytes,
                }
                for s in self.steps.values()
            ],
        }


class _Timed:
    """Adds a step's wall time and (on a metered store) its requests and bytes received."""

    def __init__(self, cold: ColdStore, step: Step) -> None:
        self.cold, self.step = cold, step

    def __enter__(self) -> None:
        bill = bill_of(self.cold)
        self.t0 = time.perf_counter()
        self.bill0 = (bill.requests, bill.bytes_received) if bill else None

    def __exit__(self, *exc: object) -> None:
        self.step.seconds += time.perf_counter() - self.t0
        bill = bill_of(self.cold)
        if bill is not None and self.bill0 is not None:
            self.step.requests += bill.requests - self.bill0[0]
            self.step.bytes += bill.bytes_received - self.bill0[1]


class ColdIndex:
    """Key, UNIQ_KEY and offsetMsgId lookups in one broker's committed cold index."""

    def __init__(
        self,
        cold: ColdStore,
        state: CatalogState,
        *,
        cache: ImmutableCache | None = None,
        concurrency: int = 8,
        explain: Explain | None = None,
    ) -> None:
        self.cold = cold
        self.state = state
        self.cache = cache
        self.concurrency = concurrency
        self.explain = explain or Explain()
        self._tails: dict[str, IndexTail] = {}
        self._lock = threading.Lock()
        self._reader: ColdReader | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._queries = 0

    # -- which index objects ---------------------------------------------------------------------

    def entries(
        self,
        *,
        topic: str | None = None,
        begin_ms: int = 0,
        end_ms: int = 1 << 62,
        phy: int | None = None,
    ) -> list[IndexEntry]:
        """The index objects that may hold an answer: time ranges overlap to the millisecond
        (an object that began before the window counts), the topic is among those it covers,
        and for an offsetMsgId the commit-log offset is inside its range."""
        return [
            e
            for e in self.state.indexes.values()
            if e.min_ts <= end_ms
            and e.max_ts >= begin_ms
            and e.covers_queue(topic)
            and (phy is None or e.cl_min <= phy <= e.cl_max)
        ]

    def unindexed(self, topic: str | None = None) -> list[tuple[str, int, int, int]]:
        """Committed offset ranges no index object covers (tiered before the index existed).

        A query cannot find messages there; callers say so rather than answer "not found".
        """
        covered = self.state.indexed_ranges()
        out = []
        for (t, q), segs in sorted(self.state.queues.items()):
            if topic is not None and t != topic:
                continue
            pos, end = segs[0].first, segs[-1].end
            for a, b in covered.get((t, q), []):
                if a > pos:
                    out.append((t, q, pos, min(a, end)))
                pos = max(pos, b)
            if pos < end:
                out.append((t, q, pos, end))
        return [r for r in out if r[2] < r[3]]

    # -- index objects: tails and slots ----------------------------------------------------------

    def tail(self, entry: IndexEntry) -> IndexTail:
        """The checked tail of an index object: from memory, the local cache, or one GET."""
        with self._lock:
            hit = self._tails.get(entry.object)
        if hit is not None:
            return hit
        key = f"{entry.object}.tail"
        data = self.cache.get(key) if self.cache is not None else None
        tail = None
        if data is not None:
            try:
                tail = parse_tail(data, entry.object, entry.size, entry.tail_pos, entry.tail_crc)
            except CorruptionError as exc:
                log.warning("cached index tail %s is damaged (%s); fetching it again", key, exc)
                assert self.cache is not None
                self.cache.forget(key)
        if tail is None:
            data = self._get(entry.object, entry.tail_pos, entry.size)
            tail = parse_tail(data, entry.object, entry.size, entry.tail_pos, entry.tail_crc)
            if self.cache is not None:
                self.cache.put(key, data)
        with self._lock:
            self._tails[entry.object] = tail
        return tail

    def _get(self, key: str, start: int, end: int, what: str = "an index object") -> bytes:
        try:
            data = self.cold.get(key, start, end)
        except ColdObjectNotFoundError as exc:
            raise MissingCommittedObjectError(
                f"{exc}: the cold tier lost {what} its catalog (commit {self.state.seq}) commits to"
            ) from exc
        if len(data) != end - start:
            raise CorruptionError(
                f"{key} @ {start + len(data)}: object ends {end - start - len(data)} bytes "
                "early (truncated)"
            )
        return data

    def _slot_candidates(
        self,
        entry: IndexEntry,
        h: int,
        keep: Callable[[str, int], bool],
        begin_ms: int,
        end_ms: int,
    ) -> list[Candidate]:
        tail = self.tail(entry)
        first, end = tail.slot_items(h)
        if first == end:
            return []  # an empty slot: nothing to read
        start, stop = tail.byte_span(first, end)
        items = tail.decode_items(self._get(entry.object, start, stop), start, first, end)
        with self._lock:
            self.explain.slots_read += 1
        match = items[
            (items["hash"] == np.uint64(h))
            & (items["store_ms"] >= begin_ms)
            & (items["store_ms"] <= end_ms)
        ]
        out = []
        for item in match:
            qn, on = int(item["queue"]), int(item["object"])
            if qn >= len(tail.queues) or on >= len(tail.objects):
                raise CorruptionError(
                    f"{entry.object} @ {start}: an item names queue {qn} or object {on}, "
                    "past its tables"
                )
            topic, queue = tail.queues[qn]
            if not keep(topic, queue):
                continue
            out.append(
                Candidate(
                    topic,
                    queue,
                    int(item["queue_offset"]),
                    int(item["store_ms"]),
                    tail.objects[on],
                    int(item["block_pos"]),
                    int(item["block_len"]),
                    int(item["block_crc"]),
                )
            )
        return out

    def candidates(
        self,
        h: int,
        entries: list[IndexEntry],
        *,
        topic: str | None = None,
        begin_ms: int = 0,
        end_ms: int = 1 << 62,
    ) -> list[Candidate]:
        """Every committed, unexpired message whose item of hash ``h`` fits, newest first."""

        def keep(t: str, q: int) -> bool:
            return (topic is None or t == topic) and (t, q) in self.state.queues

        self.explain.index_objects += len(entries)
        with _Timed(self.cold, self.explain.step("index")):
            found = self._each(
                entries, lambda e: self._slot_candidates(e, h, keep, begin_ms, end_ms)
            )
        out: dict[tuple[str, int, int], Candidate] = {}
        for c in (c for part in found for c in part):
            segs = self.state.queues[(c.topic, c.queue)]
            if segs[0].first <= c.queue_offset < segs[-1].end:  # expired ones are gone
                out.setdefault((c.topic, c.queue, c.queue_offset), c)
        self.explain.candidates += len(out)
        return sorted(out.values(), key=lambda c: c.newest_first)

    def _each(self, items: Iterable[_T], fn: Callable[[_T], _R]) -> list[_R]:
        """``fn`` of each item, concurrently on the index's own pool (kept for its life: a
        pool per step cost a query ~25 ms of thread starts)."""
        items = list(items)
        if len(items) <= 1:
            return [fn(i) for i in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="mqtier-q")
            pool = self._pool
        return list(pool.map(fn, items))

    # -- messages ----------------------------------------------------------------------------------

    def fetch(
        self,
        candidates: list[Candidate],
        accept: Callable[[MessageRecord], bool],
        max_results: int,
    ) -> list[ColdHit]:
        """The candidates' messages that ``accept`` (newest first), at most ``max_results``.

        Blocks are fetched a batch at a time, concurrently, one GET per distinct block: a
        batch is as many candidates as results are still wanted.
        """
        hits: list[ColdHit] = []
        todo = list(candidates)
        with _Timed(self.cold, self.explain.step("blocks")):
            while todo and len(hits) < max_results:
                batch, todo = todo[: max_results - len(hits)], todo[max_results - len(hits) :]
                hits += [h for h in self._read_batch(batch) if h is not None and accept(h.message)]
        return hits[:max_results]

    def _read_batch(self, batch: list[Candidate]) -> list[ColdHit | None]:
        blocks: dict[tuple[str, int], list[Candidate]] = {}
        moved: list[Candidate] = []
        for c in batch:
            seg = self.state.segment_for((c.topic, c.queue), c.queue_offset)
            if seg is not None and seg.object == c.object:
                blocks.setdefault((c.object, c.block_pos), []).append(c)
            else:
                moved.append(c)  # compacted into another object since it was indexed
        read = dict(
            zip(
                blocks,
                self._each_block(list(blocks.values())),
                strict=True,
            )
        )
        out: dict[Candidate, ColdHit | None] = {
            c: hit for key, cands in blocks.items() for c, hit in zip(cands, read[key], strict=True)
        }
        for c in moved:
            out[c] = self._read_moved(c)
        return [out[c] for c in batch]

    def _each_block(self, groups: list[list[Candidate]]) -> list[list[ColdHit | None]]:
        return self._each(groups, self._read_block)

    def _read_block(self, cands: list[Candidate]) -> list[ColdHit | None]:
        c0 = cands[0]
        try:
            frame = self._get(c0.object, c0.block_pos, c0.block_pos + c0.block_len, "a data object")
        except MissingCommittedObjectError:
            # Compacted away since this query loaded the catalog (maintenance deletes what it
            # dereferenced right after its commit): read through the catalog, whose reader
            # loads it again once; an object the latest catalog still names is lost, exit 4.
            return [self._read_moved(c) for c in cands]
        raw = decode_frame(frame, c0.object, c0.block_pos, c0.block_crc)
        where = records_by_offset(
            raw, f"{c0.object} @ {c0.block_pos}", until=max(c.queue_offset for c in cands)
        )
        span = (c0.block_pos, c0.block_pos + c0.block_len)
        out: list[ColdHit | None] = []
        for c in cands:
            at = where.get(c.queue_offset)
            if at is None:
                raise CorruptionError(
                    f"{c.object} @ {c.block_pos}: the index points here for "
                    f"{c.topic}/{c.queue}@{c.queue_offset}, but the block does not hold it"
                )
            msg = decode_checked_record(raw, at[0], at[1])
            if (msg.topic, msg.queue_id, msg.queue_offset) != (c.topic, c.queue, c.queue_offset):
                raise CorruptionError(
                    f"{c.object} @ {c.block_pos}: a record of {msg.topic}/{msg.queue_id} where "
                    f"the index expects {c.topic}/{c.queue}"
                )
            out.append(ColdHit(msg, c.object, span))
        return out

    def _read_moved(self, c: Candidate) -> ColdHit | None:
        with self._lock:  # blocks are read on a pool (and fall back here): one reader for all
            if self._reader is None:
                self._reader = ColdReader(
                    self.cold,
                    self.state.broker,
                    state=self.state,
                    read_ahead=False,
                    cache=self.cache,
                )
        msgs = self._reader.read(c.topic, c.queue, c.queue_offset, 1)
        if not msgs or msgs[0].queue_offset != c.queue_offset:
            return None  # expired meanwhile (a read below a queue's start begins at its start)
        # the reader's state: it loads a newer catalog when an object of this one is gone
        seg = self._reader.state.segment_for((c.topic, c.queue), c.queue_offset)
        return ColdHit(msgs[0], seg.object if seg else c.object, (0, 0))

    def new_query(self) -> Explain:
        """A fresh :attr:`explain` for the next query (the first one keeps the catalog load
        that opening the index cost), so each query reports only its own steps."""
        if self._queries:
            self.explain = Explain()
        self._queries += 1
        return self.explain

    def reload(self) -> bool:
        """Load the catalog again; True when it changed. A merge or compaction that committed
        after this index was opened deletes the objects it replaced right away: a lookup
        that finds one gone asks the new catalog once before calling it lost."""
        fresh = load_catalog(self.cold, self.state.broker, cache=self.cache)
        if fresh.seq == self.state.seq:
            return False
        with self._lock:
            self.state = fresh
            self._tails.clear()
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the index's threads (it can still be used: they start again when needed)."""
        if self._reader is not None:
            self._reader.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def decode_frame(frame: bytes, object_key: str, pos: int, crc: int) -> bytes:
    """A block read through the index: its CRC32 checked, then decompressed (bounded)."""
    if crc32(frame) != crc:
        raise CorruptionError(f"{object_key} @ {pos}: block of {len(frame)} bytes fails its CRC32")
    try:
        size = zstandard.frame_content_size(frame)
        if size < 0 or size > MAX_BLOCK_BYTES:
            raise zstandard.ZstdError(f"frame content size {size}")
        return zstandard.ZstdDecompressor().decompress(frame, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"{object_key} @ {pos}: block does not decompress: {exc}") from None


def records_by_offset(
    raw: bytes, where: str, until: int | None = None
) -> dict[int, tuple[int, int]]:
    """Queue offset -> (position, size) of each record of a decoded block (consecutive), up
    to queue offset ``until`` (the rest of a block is not walked for a lookup's hits: the
    frame's CRC has covered it)."""
    out: dict[int, tuple[int, int]] = {}
    pos = 0
    prev = None
    while pos < len(raw) and (prev is None or until is None or prev < until):
        if pos + L.POS_QUEUE_OFFSET + 8 > len(raw):
            raise CorruptionError(f"{where}: a record is cut short at byte {pos} of the block")
        size = L.INT32.unpack_from(raw, pos)[0]
        qoff = L.INT64.unpack_from(raw, pos + L.POS_QUEUE_OFFSET)[0]
        if (
            size <= L.POS_QUEUE_OFFSET + 8
            or pos + size > len(raw)
            or (prev is not None and qoff != prev + 1)
        ):
            raise CorruptionError(
                f"{where}: record at byte {pos} (size {size}, queue offset {qoff}) does not fit"
            )
        out[qoff] = (pos, size)
        prev = qoff
        pos += size
    return out
