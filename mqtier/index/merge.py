"""Index compaction: merge small index objects into larger ones, level by level.

Every tiering commit adds one index object (level 0), so a query over a long range would
consult one object per run. A merge takes the ``fanout`` oldest objects of one level and
writes one object of the next level holding their items, re-slotted for the new item count,
so the objects a query consults grow with the logarithm of the runs: at most ``fanout - 1``
per level. A merge is one commit (the new object added, the merged ones removed, together),
so it is atomic, and a rerun after a kill starts over from what is committed (its orphan is
deleted by the next garbage collection); two merges racing on one prefix cannot both commit.

On the way, items whose message expired are dropped, and items whose message segment
compaction moved to another data object are pointed at the new block (one block-index GET per
moved segment), so queries on merged objects read each hit with one GET again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mqtier.backend.base import ColdStore
from mqtier.errors import (
    ColdObjectNotFoundError,
    CommitConflictError,
    MissingCommittedObjectError,
)
from mqtier.format.coldindex import (
    HEADER,
    ITEM_DTYPE,
    IndexEntry,
    Items,
    build_index_object,
    merge_covers,
    parse_tail,
    point_at_blocks,
)
from mqtier.format.coldobject import Segment, parse_block_index
from mqtier.tier.catalog import CatalogState, check_history, commit, index_prefix, load_catalog
from mqtier.tier.dispatch import collect_garbage

FANOUT = 8  # objects of one level merged into one of the next
# An object this big is not merged further: a merge holds its inputs' items in memory (48 B
# each, twice while sorting), and a query reads one slot of it either way.
MAX_MERGED_ITEMS = 1 << 25


@dataclass(frozen=True, slots=True)
class MergeOptions:
    fanout: int = FANOUT
    max_items: int = MAX_MERGED_ITEMS
    dry_run: bool = False
    # Merge every index object, whatever its level, into as few as ``max_items`` allows: a
    # query then reads one slot per ``max_items`` entries (a major compaction; it rewrites
    # the whole index, so it is for when queries matter more than the bytes moved).
    full: bool = False
    # Collect garbage even when no merge is due (see merge_indexes); off for a caller that
    # has just collected it on the same state.
    collect_when_idle: bool = True


@dataclass
class MergeReport:
    """What ``merge_indexes`` merged (or would merge): one entry per merge."""

    merges: list[list[IndexEntry]] = field(default_factory=list)
    written: list[IndexEntry] = field(default_factory=list)
    items_read: int = 0
    items_written: int = 0
    items_dropped: int = 0  # expired
    items_repointed: int = 0  # moved by segment compaction
    bytes_read: int = 0
    bytes_written: int = 0
    objects_deleted: int = 0  # replaced index objects and orphans of killed or raced jobs
    seconds: float = 0.0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "merges": [
                {
                    "level": group[0].level,
                    "objects": len(group),
                    "items": sum(e.items for e in group),
                    "bytes": sum(e.size for e in group),
                }
                for group in self.merges
            ],
            "objects_merged": sum(len(g) for g in self.merges),
            "objects_written": len(self.written),
            "items_read": self.items_read,
            "items_written": self.items_written,
            "items_dropped": self.items_dropped,
            "items_repointed": self.items_repointed,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "objects_deleted": self.objects_deleted,
            "seconds": round(self.seconds, 3),
        }


def plan_merges(state: CatalogState, opts: MergeOptions) -> list[list[IndexEntry]]:
    """The merges due now, lowest level first: per level, each group of ``fanout`` of its
    oldest objects. A merge adds an object to the next level, which can make that level due:
    :func:`merge_indexes` plans again after each one."""
    if opts.full:
        return _full_merges(state, opts)
    by_level: dict[int, list[IndexEntry]] = {}
    for e in state.indexes.values():  # committed order: oldest first
        if e.items < opts.max_items:
            by_level.setdefault(e.level, []).append(e)
    plans: list[list[IndexEntry]] = []
    for level in sorted(by_level):
        entries, n = by_level[level], opts.fanout
        plans += [entries[g * n : (g + 1) * n] for g in range(len(entries) // n)]
    return plans


def _full_merges(state: CatalogState, opts: MergeOptions) -> list[list[IndexEntry]]:
    """Every object not full yet, oldest first, in groups of at most ``max_items`` entries."""
    groups: list[list[IndexEntry]] = [[]]
    for e in state.indexes.values():
        if e.items >= opts.max_items:
            continue
        if groups[-1] and sum(x.items for x in groups[-1]) + e.items > opts.max_items:
            groups.append([])
        groups[-1].append(e)
    return [g for g in groups if len(g) >= 2]


def merge_indexes(
    cold: ColdStore,
    state: CatalogState,
    opts: MergeOptions | None = None,
    *,
    on_progress: Callable[[MergeReport], None] | None = None,
) -> MergeReport:
    """Merge what :func:`plan_merges` plans, one commit per merge, until nothing is due.

    Raises:
        CommitConflictError: another job committed first; the merge in progress is not.
        CorruptionError: an index object to merge fails its checks (nothing is committed).
    """
    opts = opts or MergeOptions()
    t0 = time.perf_counter()
    report = MergeReport(dry_run=opts.dry_run)
    plans = plan_merges(state, opts)
    if opts.dry_run:
        report.merges = plans
        report.seconds = time.perf_counter() - t0
        return report
    if plans:
        check_history(cold, state)
    while plans:
        group = plans[0]
        entry = _merge_one(cold, state, group, report)
        report.merges.append(group)
        if entry is not None:
            report.written.append(entry)
        if on_progress is not None:
            on_progress(report)
        # a merge can make the next level due; a full merge planned everything at once
        plans = plans[1:] if opts.full else plan_merges(state, opts)
    # Also with nothing to merge: a merge killed between its commit and this deletion left
    # the objects it replaced, and the rerun is what finishes its work.
    if report.merges or opts.collect_when_idle:
        report.objects_deleted = collect_garbage(cold, state)
    report.seconds = time.perf_counter() - t0
    return report


def read_items(
    cold: ColdStore, entry: IndexEntry
) -> tuple[Items, list[str], list[tuple[str, int]]]:
    """Every item of an index object, each page and the tail checked (one GET)."""
    try:
        data = cold.get(entry.object)
    except ColdObjectNotFoundError as exc:
        raise MissingCommittedObjectError(
            f"{exc}: the cold tier lost an index object its catalog commits to"
        ) from exc
    tail = parse_tail(
        data[entry.tail_pos :], entry.object, entry.size, entry.tail_pos, entry.tail_crc
    )
    if len(data) != entry.size:
        raise MissingCommittedObjectError(
            f"{entry.object}: {len(data)} bytes, the catalog says {entry.size}"
        )
    if tail.items == 0:
        return np.zeros(0, dtype=ITEM_DTYPE), tail.objects, tail.queues
    items = tail.decode_items(data[HEADER.size : entry.tail_pos], HEADER.size, 0, tail.items)
    return items, tail.objects, tail.queues


def _merge_one(
    cold: ColdStore, state: CatalogState, group: list[IndexEntry], report: MergeReport
) -> IndexEntry | None:
    parts: list[Items] = []
    objects: dict[str, int] = {}
    queues: dict[tuple[str, int], int] = {}
    for entry in group:
        try:
            items, objs, qs = read_items(cold, entry)
        except MissingCommittedObjectError:
            if entry.object in load_catalog(cold, state.broker).indexes:
                raise  # the latest catalog still names it: lost, not merged by another job
            raise CommitConflictError(
                f"{entry.object}: another compaction merged this index object first; "
                "nothing of this merge was committed"
            ) from None
        report.items_read += len(items)
        report.bytes_read += entry.size
        obj_map = np.asarray([objects.setdefault(o, len(objects)) for o in objs], dtype=np.uint32)
        q_map = np.asarray([queues.setdefault(q, len(queues)) for q in qs], dtype=np.uint32)
        items = items.astype(ITEM_DTYPE, copy=True)
        if len(items):
            items["object"] = obj_map[items["object"].astype(np.int64)]
            items["queue"] = q_map[items["queue"].astype(np.int64)]
        parts.append(items)
    merged = np.concatenate(parts) if parts else np.zeros(0, dtype=ITEM_DTYPE)
    object_names = list(objects)
    queue_names = list(queues)
    merged, dropped, moved = _keep_live(cold, state, merged, object_names, queue_names)
    report.items_dropped += dropped
    report.items_repointed += moved
    covers = _live_covers(state, group)
    run_id = uuid.uuid4().hex
    level = max(e.level for e in group) + 1
    added: list[IndexEntry] = []
    if len(merged) and covers:
        data, geo = build_index_object(
            merged,
            object_names,
            queue_names,
            run_id=bytes.fromhex(run_id),
            created_ms=int(time.time() * 1000),
        )
        key = f"{index_prefix(state.broker)}{state.seq + 1:020d}/{run_id}-L{level}.mqi"
        cold.put(key, data)
        report.bytes_written += len(data)
        report.items_written += geo.items
        added.append(
            IndexEntry.of(
                key,
                geo,
                level=level,
                cl_range=(min(e.cl_min for e in group), max(e.cl_max for e in group)),
                covers=covers,
            )
        )
    commit(
        cold,
        state,
        added=[],
        index_added=added,
        index_removed=[e.object for e in group],
        run_id=run_id,
        operation="compact",
        warnings=report.warnings,
    )
    return added[0] if added else None


def _live_covers(state: CatalogState, group: list[IndexEntry]) -> tuple[Any, ...]:
    """The merged objects' covers, cut to what is still committed."""
    out = []
    for e in group:
        for t, q, a, b in e.covers:
            segs = state.queues.get((t, q))
            if not segs:
                continue
            lo, hi = max(a, segs[0].first), min(b, segs[-1].end)
            if lo < hi:
                out.append((t, q, lo, hi))
    return merge_covers(out)


def _keep_live(
    cold: ColdStore,
    state: CatalogState,
    items: Items,
    objects: list[str],
    queues: list[tuple[str, int]],
) -> tuple[Items, int, int]:
    """Items of messages still committed, each pointing at the block that now holds it.

    Returns the items kept, how many were dropped (expired) and how many re-pointed.
    """
    if not len(items):
        return items, 0, 0
    keep = np.zeros(len(items), dtype=bool)
    moved_total = 0
    qcol = items["queue"].astype(np.int64)
    for qn, key in enumerate(queues):
        mine = np.flatnonzero(qcol == qn)
        segs = state.queues.get(key)
        if not len(mine) or not segs:
            continue
        offsets = items["queue_offset"][mine].astype(np.int64)
        live = (offsets >= segs[0].first) & (offsets < segs[-1].end)
        keep[mine[live]] = True
        mine, offsets = mine[live], offsets[live]
        firsts = np.asarray([s.first for s in segs], dtype=np.int64)
        at = np.searchsorted(firsts, offsets, side="right") - 1
        for si in np.unique(at):
            seg = segs[int(si)]
            here = mine[at == si]
            if seg.object not in objects:
                objects.append(seg.object)
            want = objects.index(seg.object)
            stale = here[items["object"][here].astype(np.int64) != want]
            if not len(stale):
                continue
            _repoint(cold, seg, items, stale, want)
            moved_total += len(stale)
    return items[keep], int(len(items) - keep.sum()), moved_total


def _repoint(cold: ColdStore, seg: Segment, items: Items, rows: Any, object_no: int) -> None:
    """Point ``items[rows]`` at the blocks of ``seg`` holding their offsets (one GET)."""
    blocks = parse_block_index(
        cold.get(seg.object, seg.index_pos, seg.index_pos + seg.index_len), seg
    )
    point_at_blocks(items, rows, blocks)
    items["object"][rows] = object_no
