"""Reading messages from the cold tier alone, through the catalog.

A read finds the segment holding the queue offset in the catalog, that segment's block index
(one ranged GET, then cached), and the block (one ranged GET). Every block is checked against
its CRC32 before anything in it is returned; the records in it were CRC-checked when they were
tiered, so a read only walks their sizes and queue offsets.

Read-ahead: a reader that consumes a queue in order gets the blocks ahead of it fetched in the
background. The window (in messages) starts at the reader's batch size, grows by one batch each
time prefetched data is consumed, and halves when prefetched data is evicted unread; it never
holds more than half the block cache. A new window is fetched when less than half of the current
one is left ahead of the reader, so GETs grow with the window; a window spanning many blocks is
fetched as up to ``fetch_concurrency`` concurrent ranged GETs of adjacent blocks, and no round
asks for less than MIN_FETCH_BYTES of compressed blocks. Blocks are decompressed and checked in
the fetching threads; the block index of the next segment is loaded before the reader gets there.
"""

from __future__ import annotations

import bisect
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from mqtier.backend.base import ColdStore
from mqtier.errors import (
    ColdObjectNotFoundError,
    CorruptionError,
    MissingCommittedObjectError,
    MqtierError,
    NotFoundError,
)
from mqtier.format.coldobject import Block, Segment, decode_block, parse_block_index, record_starts
from mqtier.format.message import MessageRecord, decode_checked_record, record_store_ts
from mqtier.tier.catalog import CatalogState, ObjectCache, QueueKey, load_catalog

log = logging.getLogger(__name__)

# A ranged GET costs about as much as moving a few MiB (several ms of request handling at
# 150-500 MB/s), so read-ahead never asks for less than this much compressed data at once.
# Measured on moto with s3fs (benchmarks/cold_read.py, 4 fetch threads): ranged GETs of 2 MiB
# moved ~200 MB/s and 4 MiB ~330-400 MB/s, whatever the concurrency; a whole-queue read ran at
# 0.67-0.72x of sequential 8 MiB GETs with a 2 MiB floor and 0.80-0.82x with 4 MiB. 8 MiB did
# better still on moto but leaves a window of ~15 MiB compressed one or two GETs per round,
# which gives up the concurrency a real object store's per-request latency needs.
MIN_FETCH_BYTES = 4 << 20
# How long a read waits for a read-ahead planner that may be about to fetch its block before it
# fetches the block itself (planning takes one block-index GET; this only bounds a stall).
PLAN_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class ColdQueueRange:
    topic: str
    queue_id: int
    first: int
    next: int  # one past the last committed offset
    segments: int
    stored_bytes: int
    raw_bytes: int


BlockKey = tuple[str, int]  # (object, block offset)
_T = TypeVar("_T")


@dataclass(slots=True)
class _Decoded:
    raw: bytes
    starts: list[int]  # where each record starts, then len(raw)
    unread: bool  # prefetched and not read yet


class ColdReader:
    def __init__(
        self,
        cold: ColdStore,
        broker: str,
        *,
        state: CatalogState | None = None,
        cache_bytes: int = 128 << 20,
        read_ahead: bool = True,
        fetch_concurrency: int = 4,
        max_fetch_bytes: int = 8 << 20,
        min_fetch_bytes: int = MIN_FETCH_BYTES,
        max_window: int = 1 << 16,
        cache: ObjectCache | None = None,
    ) -> None:
        """``cache`` keeps segments' block indexes (immutable) across processes."""
        self.cold = cold
        self._cache = cache
        self.state = state or load_catalog(cold, broker)
        self._indexes: dict[tuple[str, int], list[Block]] = {}
        self._blocks: OrderedDict[BlockKey, _Decoded] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0
        self._lock = threading.Lock()
        # notified when a block is cached or a fetch ends: a read waits for its block alone,
        # not for the whole run of blocks its prefetch is fetching and decoding
        self._arrived = threading.Condition(self._lock)
        self._inflight: dict[BlockKey, Future[None]] = {}
        self._read_ahead = read_ahead
        self._pool: ThreadPoolExecutor | None = None
        self._fetch_concurrency = fetch_concurrency
        self._max_fetch_bytes = max_fetch_bytes
        self._min_fetch_bytes = min_fetch_bytes
        self._max_window = max_window
        self._window: dict[QueueKey, int] = {}
        self._next: dict[QueueKey, int] = {}  # where a sequential reader reads next
        self._ahead: dict[QueueKey, int] = {}  # read-ahead has been asked for up to here
        self._planning: set[QueueKey] = set()  # a planner is choosing blocks for these
        self._index_loads: dict[tuple[str, int], Future[None]] = {}
        self._closed = False
        self._thrashed = False  # prefetched data was evicted unread since the last look ahead
        self.stats = {
            "gets": 0,
            "prefetched_blocks": 0,
            "prefetch_hits": 0,
            "expired_unread": 0,
            "prefetch_errors": 0,
            "catalog_reloads": 0,
        }

    @property
    def window_stats(self) -> dict[str, Any]:
        windows = {f"{topic}/{queue}": w for (topic, queue), w in self._window.items()}
        return {"windows": windows, **self.stats}

    def close(self) -> None:
        """Stop read-ahead and wait for its fetches; reads still work, without read-ahead."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ranges(self) -> list[ColdQueueRange]:
        out = []
        for (topic, queue), segs in sorted(self.state.queues.items()):
            out.append(
                ColdQueueRange(
                    topic,
                    queue,
                    segs[0].first,
                    segs[-1].end,
                    len(segs),
                    sum(s.stored_bytes for s in segs),
                    sum(s.raw_bytes for s in segs),
                )
            )
        return out

    # -- blocks ----------------------------------------------------------------------------------

    def _index(self, seg: Segment) -> list[Block]:
        key = (seg.object, seg.index_pos)
        blocks = self._indexes.get(key)
        if blocks is not None:
            return blocks
        with self._lock:
            loading = self._index_loads.get(key)
        # a load still queued is cancelled and done here: a planner on a pool thread waiting for
        # a job queued behind it (every thread a planner) would wait forever
        if loading is not None and not loading.cancel():
            try:
                loading.result()  # read-ahead is loading it
            except Exception:  # noqa: BLE001, S110 - loaded again below; its error is the one
                pass
            blocks = self._indexes.get(key)
            if blocks is not None:
                return blocks
        return self._load_index(seg)

    def _load_index(self, seg: Segment) -> list[Block]:
        # a segment's block index never changes under its object's key: a cached copy that
        # passes the CRC the catalog holds for it is as good as a fetched one
        ckey = f"{seg.object}.blocks-{seg.index_pos}"
        data = self._cache.get(ckey) if self._cache is not None else None
        blocks = None
        if data is not None:
            try:
                blocks = parse_block_index(data, seg)
            except CorruptionError:
                assert self._cache is not None
                self._cache.forget(ckey)
        if blocks is None:
            data = self.cold.get(seg.object, seg.index_pos, seg.index_pos + seg.index_len)
            blocks = parse_block_index(data, seg)
            if self._cache is not None:
                self._cache.put(ckey, data)
        self._indexes[(seg.object, seg.index_pos)] = blocks
        return blocks

    def _warm_index(self, seg: Segment) -> None:
        """Load a segment's block index in the background, before a read reaches it."""
        key = (seg.object, seg.index_pos)
        with self._lock:
            if key in self._indexes or key in self._index_loads:
                return
        fut = self._pool_submit(self._index_quietly, seg)
        with self._lock:
            if not fut.done():
                self._index_loads[key] = fut
        fut.add_done_callback(lambda _f: self._index_loads.pop(key, None))

    def _index_quietly(self, seg: Segment) -> None:
        try:
            self._load_index(seg)
        except MqtierError:
            self._count("prefetch_errors")  # a read of that segment will report it

    def _store(self, key: BlockKey, block: _Decoded) -> None:
        with self._lock:
            if key in self._blocks:
                return
            self._blocks[key] = block
            self._cached += len(block.raw)
            self._arrived.notify_all()
            while self._cached > self._cache_bytes and len(self._blocks) > 1:
                _, old = self._blocks.popitem(last=False)
                self._cached -= len(old.raw)
                if old.unread:
                    self.stats["expired_unread"] += 1
                    self._thrashed = True

    def _decode(self, frame: bytes, block: Block, obj: str, *, prefetched: bool) -> _Decoded:
        raw = decode_block(frame, block, obj)
        return _Decoded(raw, record_starts(raw, block, obj), prefetched)

    def _block(self, seg: Segment, block: Block) -> tuple[_Decoded, bool]:
        """The decoded block, and whether it came from read-ahead (first use)."""
        key = (seg.object, block.offset)
        plan_deadline = 0.0
        with self._lock:
            while True:
                hit = self._blocks.get(key)
                if hit is not None:
                    unread, hit.unread = hit.unread, False
                    self._blocks.move_to_end(key)
                    if unread:
                        self.stats["prefetch_hits"] += 1
                    return hit, unread
                if key not in self._inflight:
                    if (seg.topic, seg.queue) not in self._planning:
                        break  # not on its way, nor about to be (or its prefetch failed)
                    # a planner may be about to fetch it: wait for its plan, within bounds
                    now = time.monotonic()
                    plan_deadline = plan_deadline or now + PLAN_WAIT_S
                    if now >= plan_deadline:
                        break
                # the timeout only bounds the cost of a missed notification
                self._arrived.wait(timeout=1.0)
            # fetched here, marked as on its way so that read-ahead does not fetch it too
            mine: Future[None] = Future()
            self._inflight[key] = mine
        try:
            frame = self.cold.get(seg.object, block.offset, block.offset + block.clen)
            self._count("gets")
            decoded = self._decode(frame, block, seg.object, prefetched=False)
            self._store(key, decoded)
        finally:
            self._done([key], mine)
        return decoded, False

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    # -- read-ahead ------------------------------------------------------------------------------

    def _fetch_run(self, seg: Segment, run: list[Block]) -> None:
        """Pool thread: one ranged GET for adjacent blocks, each verified, decoded and cached."""
        start = run[0].offset
        data = self.cold.get(seg.object, start, run[-1].offset + run[-1].clen)
        self._count("gets")
        with memoryview(data) as view:
            for b in run:
                frame = bytes(view[b.offset - start : b.offset - start + b.clen])
                self._store(
                    (seg.object, b.offset), self._decode(frame, b, seg.object, prefetched=True)
                )
        self._count("prefetched_blocks", len(run))

    def _prefetch(
        self, key: QueueKey, start: int, end: int, *, may_load_index: bool
    ) -> tuple[int, bool]:
        """Fetch the blocks holding offsets [start, end) that are neither cached nor on their way.

        Extends the range to at least MIN_FETCH_BYTES of compressed blocks, and stops at half
        the cache. Returns where the planned range really ends, and False when it stopped at a
        segment whose block index is not loaded (``may_load_index`` False). Read-ahead is a
        guess: a failure here (an unreachable or damaged segment the caller has not asked for)
        is counted and left for a real read of that data to report.
        """
        try:
            return self._plan(key, start, end, may_load_index)
        except MqtierError as exc:
            log.debug("read-ahead of %s/%s from %d failed: %s", key[0], key[1], start, exc)
            self._count("prefetch_errors")
            return end, True

    def _plan(self, key: QueueKey, start: int, end: int, may_load_index: bool) -> tuple[int, bool]:
        budget = self._cache_bytes // 2  # decoded bytes: never evict what was just fetched
        fetched = 0
        off = start
        while budget > 0 and (off < end or fetched < self._min_fetch_bytes):
            seg = self.state.segment_for(key, off)
            if seg is None:
                break  # the end of what is committed
            if not may_load_index and (seg.object, seg.index_pos) not in self._indexes:
                return off, False
            blocks = self._index(seg)
            wanted: list[Block] = []
            for b in blocks[bisect.bisect_right([b.first for b in blocks], off) - 1 :]:
                if budget <= 0 or (b.first >= end and fetched >= self._min_fetch_bytes):
                    break
                budget -= b.ulen
                fetched += b.clen
                off = b.first + b.count
                bkey = (seg.object, b.offset)
                with self._lock:
                    busy = bkey in self._blocks or bkey in self._inflight
                if not busy:
                    wanted.append(b)
            self._submit_runs(seg, wanted)
            if off < seg.end:
                # stopped inside this segment by the rules above; the next one comes soon
                following = self.state.segment_for(key, seg.end)
                if following is not None:
                    self._warm_index(following)
                break
        return off, True

    def _submit_runs(self, seg: Segment, wanted: list[Block]) -> None:
        """Cut the wanted blocks into adjacent runs, about one per fetch thread."""
        if not wanted:
            return
        total = sum(b.clen for b in wanted)
        limit = min(
            self._max_fetch_bytes,
            max(self._min_fetch_bytes, -(-total // self._fetch_concurrency)),
        )
        run: list[Block] = []
        run_bytes = 0
        for b in wanted:
            adjacent = bool(run) and run[-1].offset + run[-1].clen == b.offset
            if run and (not adjacent or run_bytes + b.clen > limit):
                self._submit(seg, run)
                run, run_bytes = [], 0
            run.append(b)
            run_bytes += b.clen
        self._submit(seg, run)

    def _pool_submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        with self._lock:
            if self._closed:  # a planner still running while the reader closes: do nothing
                skipped: Future[None] = Future()
                skipped.set_result(None)
                return skipped
            if self._pool is None:
                # one more thread than fetches: a planner never waits for a fetch to finish
                self._pool = ThreadPoolExecutor(self._fetch_concurrency + 1, "mqtier-readahead")
            return self._pool.submit(fn, *args)

    def _submit(self, seg: Segment, run: list[Block]) -> None:
        keys = [(seg.object, b.offset) for b in run]
        marker: Future[None] = Future()
        with self._lock:  # on its way from now: a read of these blocks waits, not fetches
            for k in keys:
                self._inflight[k] = marker
        fut = self._pool_submit(self._fetch_run, seg, run)
        fut.add_done_callback(functools.partial(self._fetched, keys, marker))

    def _fetched(self, keys: list[BlockKey], marker: Future[None], fut: Future[None]) -> None:
        self._done(keys, marker)
        if not fut.cancelled() and fut.exception() is not None:
            self._count("prefetch_errors")

    def _done(self, keys: list[BlockKey], marker: Future[None]) -> None:
        """The fetch that marked ``keys`` as on their way ended (cached, failed or cancelled)."""
        with self._lock:
            for k in keys:
                if self._inflight.get(k) is marker:
                    del self._inflight[k]
            self._arrived.notify_all()

    def _look_ahead(self, key: QueueKey, offset: int, count: int) -> None:
        """Before a read: if the reader goes on where it stopped, fetch what it will want next."""
        end = offset + count
        sequential = self._next.get(key) == offset
        self._next[key] = end
        if not sequential:
            self._ahead.pop(key, None)
            return
        window = self._window.setdefault(key, count)
        if self._thrashed:  # the window outran the cache: halve it, once per read
            self._thrashed = False
            window = self._window[key] = max(1, window // 2)
        with self._lock:
            ahead = max(self._ahead.get(key, end), end)
            if key in self._planning or ahead - end >= window // 2:
                return  # enough is on its way
        planned, done = self._prefetch(key, ahead, end + window, may_load_index=False)
        with self._lock:
            self._ahead[key] = max(planned, end + window) if not done else planned
            if not done:
                self._planning.add(key)
        if not done:
            # the rest needs a segment's block index: load it off the reader's path
            fut = self._pool_submit(self._plan_in_background, key, planned, end + window)
            # also when the job is cancelled by close(): a read may be waiting for the plan
            fut.add_done_callback(lambda _f: self._planned(key))

    def _plan_in_background(self, key: QueueKey, start: int, end: int) -> None:
        planned, _ = self._prefetch(key, start, end, may_load_index=True)
        with self._lock:
            self._ahead[key] = max(self._ahead.get(key, planned), planned)

    def _planned(self, key: QueueKey) -> None:
        with self._lock:
            self._planning.discard(key)
            self._arrived.notify_all()

    # -- reads -----------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the catalog again; True when it changed (a later commit exists).

        A reader keeps the catalog it loaded. Compaction and expiry commit a new state and then
        delete the objects only the old state names, so a long-lived reader can find an object
        of its catalog gone: reads and offset lookups then reload once and try again.
        """
        fresh = load_catalog(self.cold, self.state.broker)
        if fresh.seq == self.state.seq:
            return False
        with self._lock:
            self.state = fresh
            self._ahead.clear()  # planned against the old segments: plan again
        self._count("catalog_reloads")
        return True

    def _on_current_catalog(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except ColdObjectNotFoundError as exc:
            if not self.reload():
                # The latest catalog names it and nothing replaced it: committed data is gone,
                # which is damage to the tier (exit 4), not a message that never existed (3).
                raise MissingCommittedObjectError(
                    f"{exc}: the cold tier lost an object its catalog (commit {self.state.seq}) "
                    "commits to"
                ) from exc
            return fn()

    def offset_by_time(self, topic: str, queue_id: int, ts_ms: int) -> int:
        """The first committed offset of a queue stored at or after ``ts_ms``.

        One past the last committed offset when every cold message is older. Costs at most one
        block-index GET and one block GET: segments and blocks carry their time ranges.

        Raises:
            NotFoundError: the queue has nothing in the cold tier.
        """
        return self._on_current_catalog(lambda: self._offset_by_time(topic, queue_id, ts_ms))

    def _offset_by_time(self, topic: str, queue_id: int, ts_ms: int) -> int:
        key = (topic, queue_id)
        segs = self.state.queues.get(key)
        if not segs:
            raise NotFoundError(f"{topic}/{queue_id} has nothing in the cold tier")
        seg = next((s for s in segs if s.max_ts >= ts_ms), None)
        if seg is None:
            return segs[-1].end
        blocks = self._index(seg)
        block = next(b for b in blocks if b.max_ts >= ts_ms)  # the segment's max is a block's
        decoded, _ = self._block(seg, block)
        for i in range(block.count):
            pos = decoded.starts[i]
            if record_store_ts(decoded.raw, pos) >= ts_ms:
                return block.first + i
        raise CorruptionError(
            f"{seg.object} @ {block.offset}: no record reaches the block's max store time"
        )

    def read(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        count: int,
        *,
        tags: Iterable[str] | None = None,
    ) -> list[MessageRecord]:
        """Up to ``count`` committed messages of one queue from ``offset``, in order.

        Raises:
            NotFoundError: the queue has nothing in the cold tier.
            CorruptionError: a block fails its checksum or does not hold what the catalog
                says (object and offset named).
            MissingCommittedObjectError: an object the latest catalog names is missing.
        """
        return self._on_current_catalog(lambda: self._read(topic, queue_id, offset, count, tags))

    def _read(
        self, topic: str, queue_id: int, offset: int, count: int, tags: Iterable[str] | None
    ) -> list[MessageRecord]:
        key = (topic, queue_id)
        if key not in self.state.queues:
            raise NotFoundError(f"{topic}/{queue_id} has nothing in the cold tier")
        wanted = set(tags) if tags else None
        out: list[MessageRecord] = []
        off = max(offset, self.state.queues[key][0].first)
        end = offset + count
        if self._read_ahead and not self._closed:
            self._look_ahead(key, offset, count)
        while off < end:
            seg = self.state.segment_for(key, off)
            if seg is None:
                break
            blocks = self._index(seg)
            block = blocks[bisect.bisect_right([b.first for b in blocks], off) - 1]
            if not block.first <= off < block.first + block.count:
                # parse_block_index holds the index to the catalog, so this is a bug, not data
                raise CorruptionError(
                    f"{seg.object}: no block of {topic}/{queue_id} holds offset {off}"
                )
            decoded, from_read_ahead = self._block(seg, block)
            if from_read_ahead:  # it paid off: grow, up to what half the cache holds
                fits = int(self._cache_bytes // 2 * seg.count / max(1, seg.raw_bytes))
                w = self._window.get(key, count) + count
                self._window[key] = max(1, min(w, self._max_window, fits))
            starts = decoded.starts
            stop = min(end, block.first + block.count)
            for i in range(off - block.first, stop - block.first):
                msg = decode_checked_record(decoded.raw, starts[i], starts[i + 1] - starts[i])
                if wanted is None or msg.tags in wanted:
                    out.append(msg)
            off = stop
        return out
