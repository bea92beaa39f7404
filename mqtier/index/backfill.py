"""Index what was tiered before the cold tier had an index.

A tier written by an mqtier from before index objects holds segments no index object covers;
queries cannot find their messages and say so. Backfilling reads those segments (their block
index, then their blocks, each checked), builds one index object per commit of them from the
records, and commits it: afterwards every committed message is findable again. It is as safe
to kill or race as a merge (one commit; a loser exits with a conflict).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from mqtier.backend.base import ColdStore
from mqtier.format.coldobject import (
    Block,
    Segment,
)
from mqtier.tier.catalog import CatalogState, check_history, commit, index_prefix
from mqtier.tier.compact import segment_blocks_and_records
from mqtier.tier.indexing import IndexCollector

BACKFILL_ITEMS = 1 << 22  # about this many entries per index object written


@dataclass
class BackfillReport:
    segments: int = 0
    messages: int = 0
    objects_written: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "segments": self.segments,
            "messages": self.messages,
            "objects_written": self.objects_written,
            "seconds": round(self.seconds, 3),
        }


def unindexed_segments(state: CatalogState) -> list[Segment]:
    """The committed segments with an offset no index object covers, oldest first per queue."""
    covered = state.indexed_ranges()
    out: list[Segment] = []
    for key, segs in sorted(state.queues.items()):
        ranges = covered.get(key, [])
        out += [s for s in segs if not any(a <= s.first and s.end <= b for a, b in ranges)]
    return out


def backfill(cold: ColdStore, state: CatalogState, *, dry_run: bool = False) -> BackfillReport:
    """Index every committed segment no index object covers (docs/FORMAT.md 15.6).

    Raises:
        CommitConflictError: another job committed first; nothing of this run was committed.
        CorruptionError: a block of a segment fails its checks (nothing is committed).
    """
    t0 = time.perf_counter()
    segs = unindexed_segments(state)
    report = BackfillReport(len(segs), sum(s.count for s in segs), dry_run=dry_run)
    if dry_run or not segs:
        report.seconds = time.perf_counter() - t0
        return report
    check_history(cold, state)
    run_id = uuid.uuid4().hex
    collector = IndexCollector()
    batch: list[Segment] = []
    items = 0
    blocks_of: dict[tuple[str, str, int, int], list[Block]] = {}
    for seg in segs:
        blocks, records = segment_blocks_and_records(cold, seg)
        collector.add(seg.topic, seg.queue, records)
        blocks_of[(seg.object, seg.topic, seg.queue, seg.first)] = blocks
        batch.append(seg)
        items += seg.count * 3
        if items >= BACKFILL_ITEMS:
            _commit(cold, state, collector, batch, blocks_of, run_id)
            report.objects_written += 1
            batch, items = [], 0
    if batch:
        _commit(cold, state, collector, batch, blocks_of, run_id)
        report.objects_written += 1
    report.seconds = time.perf_counter() - t0
    return report


def _commit(
    cold: ColdStore,
    state: CatalogState,
    collector: IndexCollector,
    batch: list[Segment],
    blocks_of: dict[tuple[str, str, int, int], list[Block]],
    run_id: str,
) -> None:
    """Upload the index object of ``batch``, then commit it (the collector starts afresh)."""
    key = f"{index_prefix(state.broker)}{state.seq + 1:020d}/{run_id}-L0.mqi"
    data, entry = collector.build(
        batch, lambda s: blocks_of[(s.object, s.topic, s.queue, s.first)], key=key, run_id=run_id
    )
    cold.put(key, data)
    commit(cold, state, added=[], index_added=[entry], run_id=run_id, operation="compact")
