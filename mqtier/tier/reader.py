"""Reading messages from the cold tier alone, through the catalog.

A read finds the segment holding the queue offset in the catalog, that segment's block index
(one ranged GET, then cached), and the block (one ranged GET). Every block is checked against
its CRC32 and every record against its own CRC before anything is returned.

Read-ahead: a reader that consumes a queue in order gets the blocks ahead of it fetched in the
background. The window (in messages) starts at the reader's batch size, grows by one batch each
time prefetched data is consumed, and halves when prefetched data is evicted unread. A window
spanning many blocks is fetched as several concurrent ranged GETs of adjacent blocks.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

from mqtier.backend.base import ColdStore
from mqtier.errors import NotFoundError
from mqtier.format.coldobject import Block, Segment, block_records, decode_block, parse_block_index
from mqtier.format.message import MessageRecord, decode_record
from mqtier.tier.catalog import CatalogState, load_catalog


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


class ColdReader:
    def __init__(
        self,
        cold: ColdStore,
        broker: str,
        *,
        state: CatalogState | None = None,
        cache_bytes: int = 64 << 20,
        read_ahead: bool = True,
        fetch_concurrency: int = 4,
        max_fetch_bytes: int = 4 << 20,
        max_window: int = 1 << 16,
    ) -> None:
        self.cold = cold
        self.state = state or load_catalog(cold, broker)
        self._indexes: dict[tuple[str, int], list[Block]] = {}
        # Decoded blocks; the flag says "prefetched and not read yet".
        self._blocks: OrderedDict[BlockKey, tuple[bytes, bool]] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0
        self._lock = threading.Lock()
        self._inflight: dict[BlockKey, Future[None]] = {}
        self._read_ahead = read_ahead
        self._pool: ThreadPoolExecutor | None = None
        self._fetch_concurrency = fetch_concurrency
        self._max_fetch_bytes = max_fetch_bytes
        self._max_window = max_window
        self._window: dict[tuple[str, int], int] = {}
        self._next: dict[tuple[str, int], int] = {}
        self.stats = {"gets": 0, "prefetched_blocks": 0, "prefetch_hits": 0, "expired_unread": 0}

    @property
    def window_stats(self) -> dict[str, Any]:
        return {"windows": dict(self._window_by_name()), **self.stats}

    def _window_by_name(self) -> Iterable[tuple[str, int]]:
        for (topic, queue), w in self._window.items():
            yield f"{topic}/{queue}", w

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

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

    def _index(self, seg: Segment) -> list[Block]:
        key = (seg.object, seg.index_pos)
        blocks = self._indexes.get(key)
        if blocks is None:
            data = self.cold.get(seg.object, seg.index_pos, seg.index_pos + seg.index_len)
            blocks = parse_block_index(data, seg)
            self._indexes[key] = blocks
        return blocks

    def _store(self, key: BlockKey, raw: bytes, *, prefetched: bool) -> None:
        with self._lock:
            if key in self._blocks:
                return
            self._blocks[key] = (raw, prefetched)
            self._cached += len(raw)
            while self._cached > self._cache_bytes and len(self._blocks) > 1:
                _, (old, unread) = self._blocks.popitem(last=False)
                self._cached -= len(old)
                if unread:
                    self.stats["expired_unread"] += 1
                    self._shrink_windows()

    def _shrink_windows(self) -> None:
        for k, w in self._window.items():
            self._window[k] = max(1, w // 2)

    def _block(self, seg: Segment, block: Block) -> tuple[bytes, bool]:
        """The decoded block, and whether it came from read-ahead (first use)."""
        key = (seg.object, block.offset)
        with self._lock:
            fut = self._inflight.get(key)
        if fut is not None:
            try:
                fut.result()  # a prefetch of this block is on its way
            except Exception:  # noqa: BLE001, S110 - fetched again below; its error is the one
                pass
        with self._lock:
            hit = self._blocks.get(key)
            if hit is not None:
                raw, unread = hit
                self._blocks[key] = (raw, False)
                self._blocks.move_to_end(key)
                if unread:
                    self.stats["prefetch_hits"] += 1
                return raw, unread
        frame = self.cold.get(seg.object, block.offset, block.offset + block.clen)
        self._count("gets")
        raw = decode_block(frame, block, seg.object)
        self._store(key, raw, prefetched=False)
        return raw, False

    def _fetch_run(self, seg: Segment, run: list[Block]) -> None:
        """Pool thread: one ranged GET for adjacent blocks, each verified and cached."""
        start = run[0].offset
        data = self.cold.get(seg.object, start, run[-1].offset + run[-1].clen)
        self._count("gets")
        for b in run:
            frame = data[b.offset - start : b.offset - start + b.clen]
            self._store((seg.object, b.offset), decode_block(frame, b, seg.object), prefetched=True)
            self._count("prefetched_blocks")

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _prefetch(self, key: tuple[str, int], start: int, window: int) -> None:
        """Fetch the blocks holding offsets [start, start + window) that are not cached."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._fetch_concurrency, "mqtier-readahead")
        off, end = start, start + window
        while off < end:
            seg = self.state.segment_for(key, off)
            if seg is None:
                return
            blocks = self._index(seg)
            i = bisect.bisect_right([b.first for b in blocks], off) - 1
            run: list[Block] = []
            run_bytes = 0
            for b in blocks[i:]:
                if b.first >= end:
                    break
                bkey = (seg.object, b.offset)
                with self._lock:
                    cached = bkey in self._blocks or bkey in self._inflight
                if cached or (run and run_bytes + b.clen > self._max_fetch_bytes):
                    self._submit(seg, run)
                    run, run_bytes = [], 0
                if not cached:
                    run.append(b)
                    run_bytes += b.clen
            self._submit(seg, run)
            off = seg.end

    def _submit(self, seg: Segment, run: list[Block]) -> None:
        if not run:
            return
        assert self._pool is not None
        keys = [(seg.object, b.offset) for b in run]
        fut = self._pool.submit(self._fetch_run, seg, list(run))
        with self._lock:
            for k in keys:
                if not fut.done():
                    self._inflight[k] = fut
        fut.add_done_callback(functools.partial(self._done, keys))

    def _done(self, keys: list[BlockKey], _fut: Future[None]) -> None:
        with self._lock:
            for k in keys:
                self._inflight.pop(k, None)

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
            CorruptionError: a block or record fails its checksum (object and offset named).
        """
        key = (topic, queue_id)
        if key not in self.state.queues:
            raise NotFoundError(f"{topic}/{queue_id} has nothing in the cold tier")
        wanted = set(tags) if tags else None
        out: list[MessageRecord] = []
        off = max(offset, self.state.queues[key][0].first)
        end = offset + count
        while off < end:
            seg = self.state.segment_for(key, off)
            if seg is None:
                break
            blocks = self._index(seg)
            i = bisect.bisect_right([b.first for b in blocks], off) - 1
            block = blocks[i]
            raw, from_read_ahead = self._block(seg, block)
            if from_read_ahead:
                w = self._window.get(key, count)
                self._window[key] = min(self._max_window, w + count)  # it paid off: grow
            for qoff, _pos, rec in block_records(raw, block, seg.object):
                if qoff < off:
                    continue
                if qoff >= end:
                    break
                msg = decode_record(rec, 0, verify_crc=False, path=seg.object)
                if wanted is None or msg.tags in wanted:
                    out.append(msg)
            off = block.first + block.count
        if self._read_ahead and out:
            sequential = self._next.get(key) == offset
            self._next[key] = end
            if sequential:
                self._prefetch(key, end, self._window.setdefault(key, count))
        return out
