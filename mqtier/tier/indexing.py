"""The index entries of a tiering run: built from the records it tiers, committed with them.

Each record the run packs gives one item per KEYS token, one for its UNIQ_KEY and one for its
commit-log offset (its offsetMsgId). At each commit, the items of the records in that commit's
segments become one index object, uploaded before the commit record that names it, so a crash
leaves both or neither (docs/FORMAT.md section 15.5). Nothing here reads the hot store's
IndexFiles: a broker whose index is disabled, or written by Java, is indexed all the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mqtier.format.coldindex import (
    ITEM_DTYPE,
    IndexEntry,
    build_index_object,
    key_hash,
    merge_covers,
    offset_hash,
    point_at_blocks,
)
from mqtier.format.coldobject import Block, Segment, SourceRecord
from mqtier.format.message import record_index_keys
from mqtier.tier.catalog import QueueKey


@dataclass(slots=True)
class _QueueKeys:
    hashes: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)


class IndexCollector:
    """The keys of the records packed since the last commit, per queue."""

    def __init__(self) -> None:
        self._queues: dict[QueueKey, _QueueKeys] = {}

    def add(self, topic: str, queue: int, records: Sequence[SourceRecord]) -> None:
        q = self._queues.setdefault((topic, queue), _QueueKeys())
        for r in records:
            hashes = [key_hash(k) for k in record_index_keys(r.data)]
            hashes.append(offset_hash(r.phy))
            q.hashes += hashes
            q.offsets += [r.queue_offset] * len(hashes)
            q.stamps += [r.store_ts] * len(hashes)

    def clear(self) -> None:
        self._queues.clear()

    def build(
        self,
        segments: Sequence[Segment],
        blocks_of: Callable[[Segment], list[Block]],
        *,
        key: str,
        run_id: str,
    ) -> tuple[bytes, IndexEntry]:
        """The index object (bytes, catalog entry) of ``segments``, from the keys collected.

        Every segment's records must have been added; the collected keys are then cleared.
        """
        objects = sorted({s.object for s in segments})
        queues = sorted({(s.topic, s.queue) for s in segments})
        object_no = {o: i for i, o in enumerate(objects)}
        queue_no = {q: i for i, q in enumerate(queues)}
        parts = []
        for seg in segments:
            q = self._queues[(seg.topic, seg.queue)]
            offsets = np.asarray(q.offsets, dtype=np.int64)
            mine = (offsets >= seg.first) & (offsets < seg.end)
            items = np.zeros(int(mine.sum()), dtype=ITEM_DTYPE)
            items["hash"] = np.asarray(q.hashes, dtype=np.uint64)[mine]
            items["store_ms"] = np.asarray(q.stamps, dtype=np.int64)[mine]
            items["queue_offset"] = offsets[mine]
            point_at_blocks(items, np.arange(len(items)), blocks_of(seg))
            items["object"] = object_no[seg.object]
            items["queue"] = queue_no[(seg.topic, seg.queue)]
            parts.append(items)
        all_items = np.concatenate(parts) if parts else np.zeros(0, dtype=ITEM_DTYPE)
        data, geo = build_index_object(
            all_items,
            objects,
            queues,
            run_id=bytes.fromhex(run_id),
            created_ms=int(time.time() * 1000),
        )
        entry = IndexEntry.of(
            key,
            geo,
            level=0,
            cl_range=(min(s.cl_min for s in segments), max(s.cl_max for s in segments)),
            covers=merge_covers([(s.topic, s.queue, s.first, s.end) for s in segments]),
        )
        self.clear()
        return data, entry
