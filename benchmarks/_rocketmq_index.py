"""The RocketMQ tiered-store key index, simulated on a cold tier for ``query.py``'s baseline.

Layout and query follow /work/shared/docs/rocketmq-formats.md section 8.9 (RocketMQ's
``IndexStoreFile`` once compacted and uploaded): a 28-byte header, ``slots`` x 8-byte slot
entries ``(int32 start, int32 length)`` and the items of each slot contiguous, newest first,
28 bytes each (``hash, topicId, queueId int32 | offset int64 | size, timeDiff int32``),
big-endian as Java writes them. A message adds one item per KEYS token and one for its
UNIQ_KEY, each hashed as ``abs(String.hashCode(topic + "#" + key))``. A file rolls when its
item count reaches ``roll_items`` (RocketMQ: 20,000,000 with 5,000,000 slots, so the slot
count here keeps that 1:4 ratio).

A lookup, per file whose time range the query covers (all of them for a whole-range query),
concurrently as RocketMQ's ``queryAsync`` does: one ranged GET of the 8-byte slot entry, then,
when the slot is not empty, a second, dependent ranged GET of the slot's items (at most
28 x 1024 bytes, RocketMQ's cap); items whose hash and topic match are hits. Each hit (up to
``max_results``, deduplicated by queue and offset) costs one more ranged GET, of the message's
size, from the tiered commit log; here from a real data object of the same tier (the bytes are
not decoded, the request is what is measured).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

ROCKETMQ_ROLL_ITEMS = 20_000_000
ROCKETMQ_SLOTS = 5_000_000
HEADER_BYTES = 28
SLOT_BYTES = 8
ITEM_BYTES = 28
MAX_READ_BYTES = ITEM_BYTES * 1024  # RocketMQ caps a slot read at 1,024 items
TOPIC_ID = 1

ITEM_DTYPE = np.dtype(
    [
        ("hash", ">i4"),
        ("topic_id", ">i4"),
        ("queue_id", ">i4"),
        ("offset", ">i8"),
        ("size", ">i4"),
        ("time_diff", ">i4"),
    ]
)
assert ITEM_DTYPE.itemsize == ITEM_BYTES


@dataclass(frozen=True, slots=True)
class SimFile:
    key: str
    slots: int
    items: int
    size: int
    first_item: int  # arrival number of its first item
    min_time: int  # smallest and largest time_diff of its items (the run number here)
    max_time: int


@dataclass
class SimResult:
    hits: int
    files: int
    slot_gets: int
    item_gets: int
    message_gets: int
    seconds: float

    @property
    def requests(self) -> int:
        return self.slot_gets + self.item_gets + self.message_gets


def slots_for(roll_items: int) -> int:
    """RocketMQ's 5M slots per 20M items, scaled to ``roll_items``."""
    return max(1, math.ceil(roll_items * ROCKETMQ_SLOTS / ROCKETMQ_ROLL_ITEMS))


def build_file(
    hashes: np.ndarray[Any, Any],
    queue_ids: np.ndarray[Any, Any],
    offsets: np.ndarray[Any, Any],
    sizes: np.ndarray[Any, Any],
    times: np.ndarray[Any, Any],
    slots: int,
) -> bytes:
    """One compacted, uploaded index file of these items (in arrival order)."""
    n = len(hashes)
    slot = (hashes % slots).astype(np.int64)
    # newest first within a slot: sort by slot, then by arrival descending
    order = np.lexsort((-np.arange(n), slot))
    items = np.zeros(n, dtype=ITEM_DTYPE)
    items["hash"] = hashes[order]
    items["topic_id"] = TOPIC_ID
    items["queue_id"] = queue_ids[order]
    items["offset"] = offsets[order]
    items["size"] = sizes[order]
    items["time_diff"] = times[order]
    counts = np.bincount(slot, minlength=slots)
    starts = HEADER_BYTES + slots * SLOT_BYTES + (np.cumsum(counts) - counts) * ITEM_BYTES
    table = np.zeros((slots, 2), dtype=">i4")
    table[:, 0] = starts
    table[:, 1] = counts * ITEM_BYTES
    header = b"\xbc\xc5\x02\x85" + bytes(HEADER_BYTES - 4)
    return header + table.tobytes() + items.tobytes()


def upload_files(
    cold: Any,
    prefix: str,
    hashes: np.ndarray[Any, Any],
    queue_ids: np.ndarray[Any, Any],
    offsets: np.ndarray[Any, Any],
    sizes: np.ndarray[Any, Any],
    times: np.ndarray[Any, Any],
    roll_items: int,
) -> list[SimFile]:
    """Cut the items (arrival order) into files of ``roll_items`` and upload each.

    ``times`` stands for RocketMQ's timeDiff: here the tiering run of the message, so that a
    windowed query filters items as RocketMQ does (by time, without fetching the message).
    """
    slots = slots_for(roll_items)
    out = []
    for n, start in enumerate(range(0, len(hashes), roll_items)):
        end = min(start + roll_items, len(hashes))
        t = times[start:end]
        data = build_file(
            hashes[start:end], queue_ids[start:end], offsets[start:end], sizes[start:end], t, slots
        )
        key = f"{prefix}/{n:06d}"
        cold.put(key, data)
        out.append(SimFile(key, slots, end - start, len(data), start, int(t.min()), int(t.max())))
    return out


class SimIndex:
    """Lookups in the uploaded files, counting every request it sends."""

    def __init__(
        self,
        cold: Any,
        files: list[SimFile],
        data_object: str,
        data_size: int,
        concurrency: int = 8,
    ) -> None:
        self.cold = cold
        self.files = files
        self.data_object = data_object
        self.data_size = data_size
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="rmq-sim")

    def close(self) -> None:
        self.pool.shutdown()

    def _file(
        self, f: SimFile, h: int, window: int | None
    ) -> tuple[list[tuple[int, int, int]], int, int]:
        pos = HEADER_BYTES + (h % f.slots) * SLOT_BYTES
        start, length = np.frombuffer(self.cold.get(f.key, pos, pos + SLOT_BYTES), dtype=">i4")
        if length <= 0:
            return [], 1, 0
        length = min(int(length), MAX_READ_BYTES)
        raw = self.cold.get(f.key, int(start), int(start) + length)
        items = np.frombuffer(raw, dtype=ITEM_DTYPE)
        keep = (items["hash"] == h) & (items["topic_id"] == TOPIC_ID)
        if window is not None:
            keep &= items["time_diff"] == window
        match = items[keep]
        return [(int(m["queue_id"]), int(m["offset"]), int(m["size"])) for m in match], 1, 1

    def lookup(self, h: int, max_results: int = 64, window: int | None = None) -> SimResult:
        """Files overlapping the window (a run number; None: all), as if #9233 were fixed
        (RocketMQ as written also skips files that began before the window)."""
        t0 = time.perf_counter()
        files = [f for f in self.files if window is None or f.min_time <= window <= f.max_time]
        parts = list(self.pool.map(lambda f: self._file(f, h, window), files))
        seen: dict[tuple[int, int], int] = {}
        for found, _, _ in parts:
            for q, off, size in found:
                seen.setdefault((q, off), size)
        hits = list(seen.items())[:max_results]

        def read(item: tuple[tuple[int, int], int]) -> int:
            (_q, off), size = item
            at = (off * 7919) % max(1, self.data_size - size)  # somewhere in a real object
            return len(self.cold.get(self.data_object, at, at + size))

        list(self.pool.map(read, hits))
        return SimResult(
            hits=len(hits),
            files=len(files),
            slot_gets=sum(p[1] for p in parts),
            item_gets=sum(p[2] for p in parts),
            message_gets=len(hits),
            seconds=time.perf_counter() - t0,
        )
