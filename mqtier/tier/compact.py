"""Compaction: merge a queue's runs of small cold segments into few large ones.

Tiering by batch policy leaves a quiet queue with one small segment per run, each in a shared
object; reading the queue back then costs a block-index GET and a block GET per segment.
Compaction reads such runs (one ranged GET for a segment's blocks and one for its index), checks
every block, packs the records again, unchanged, into new objects (each queue one contiguous
segment per object) and commits the swap in one record: the new segments are added and the old
ones removed together, so a reader sees either the old segments or the new ones, never both and
never a gap. Objects no committed segment names any more are deleted afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mqtier.backend.base import ColdStore
from mqtier.format import layout as L
from mqtier.format.coldobject import (
    Block,
    Segment,
    SourceRecord,
    decode_block,
    parse_block_index,
    record_starts,
)
from mqtier.format.message import record_store_ts
from mqtier.tier.catalog import CatalogState, check_history, commit, data_prefix
from mqtier.tier.dispatch import collect_garbage
from mqtier.tier.packer import OBJECT_BYTES, ObjectPacker, PackOptions


@dataclass(frozen=True, slots=True)
class CompactOptions:
    small_bytes: int = OBJECT_BYTES // 4  # a segment under this many stored bytes is small
    min_run: int = 2  # merge runs of at least this many consecutive small segments
    pack: PackOptions = field(default_factory=PackOptions)
    dry_run: bool = False


@dataclass
class CompactReport:
    runs: list[list[Segment]] = field(default_factory=list)
    added: list[Segment] = field(default_factory=list)
    objects: int = 0
    committed_seq: int = 0
    objects_deleted: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)  # what failed without failing the run
    # progress while the runs are read and rewritten (for a progress bar; not in to_json)
    runs_done: int = 0
    messages_done: int = 0
    stored_bytes_done: int = 0

    @property
    def stored_bytes_to_merge(self) -> int:
        return sum(s.stored_bytes for r in self.runs for s in r)

    def to_json(self) -> dict[str, Any]:
        queues: dict[tuple[str, int], dict[str, Any]] = {}
        for run in self.runs:
            topic, queue = run[0].topic, run[0].queue
            q = queues.setdefault(
                (topic, queue),
                {"topic": topic, "queue": queue, "segments_before": 0, "messages": 0,
                 "segments_after": 0},
            )  # fmt: skip
            q["segments_before"] += len(run)
            q["messages"] += sum(s.count for s in run)
        for seg in self.added:
            queues[(seg.topic, seg.queue)]["segments_after"] += 1
        return {
            "dry_run": self.dry_run,
            "segments_merged": sum(len(r) for r in self.runs),
            "segments_written": len(self.added),
            "messages": sum(s.count for r in self.runs for s in r),
            "stored_bytes_before": self.stored_bytes_to_merge,
            "stored_bytes_after": sum(s.stored_bytes for s in self.added),
            "objects": self.objects,
            "objects_deleted": self.objects_deleted,
            "committed_seq": self.committed_seq,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),  # durations: seconds, to the millisecond
            "queues": [queues[key] for key in sorted(queues)],
        }


def small_runs(state: CatalogState, opts: CompactOptions) -> list[list[Segment]]:
    """Per queue, each run of at least ``min_run`` consecutive small segments, oldest first."""
    out: list[list[Segment]] = []
    for _key, segs in sorted(state.queues.items()):
        run: list[Segment] = []
        for seg in [*segs, None]:
            if seg is not None and seg.stored_bytes < opts.small_bytes:
                run.append(seg)
                continue
            if len(run) >= opts.min_run:
                out.append(run)
            run = []
    return out


def segment_records(cold: ColdStore, seg: Segment) -> list[SourceRecord]:
    """Every record of a segment, each block checked (two ranged GETs)."""
    return segment_blocks_and_records(cold, seg)[1]


def segment_blocks_and_records(
    cold: ColdStore, seg: Segment
) -> tuple[list[Block], list[SourceRecord]]:
    """A segment's blocks and every record in them, each block checked (two ranged GETs)."""
    blocks = parse_block_index(
        cold.get(seg.object, seg.index_pos, seg.index_pos + seg.index_len), seg
    )
    start = blocks[0].offset
    data = cold.get(seg.object, start, blocks[-1].offset + blocks[-1].clen)
    out: list[SourceRecord] = []
    for b in blocks:
        raw = decode_block(data[b.offset - start : b.offset - start + b.clen], b, seg.object)
        starts = record_starts(raw, b, seg.object)
        for i in range(b.count):
            record = raw[starts[i] : starts[i + 1]]
            phy = L.INT64.unpack_from(record, L.POS_PHYSICAL_OFFSET)[0]
            out.append(SourceRecord(b.first + i, record_store_ts(record), phy, record))
    return blocks, out


def compact(
    cold: ColdStore,
    state: CatalogState,
    opts: CompactOptions | None = None,
    *,
    on_progress: Callable[[CompactReport], None] | None = None,
) -> CompactReport:
    """Merge the small runs of ``state``'s queues and commit the swap.

    ``on_progress`` gets the report after each segment is read and handed to the packer
    (``runs_done``, ``messages_done``, ``stored_bytes_done`` of ``runs``).

    Raises:
        CommitConflictError: another job committed first; nothing of this run was committed.
        CorruptionError: a block of a segment to merge fails its checks (nothing is committed).
    """
    opts = opts or CompactOptions()
    t0 = time.perf_counter()
    runs = small_runs(state, opts)
    report = CompactReport(runs, committed_seq=state.seq, dry_run=opts.dry_run)
    if opts.dry_run or not runs:
        report.seconds = time.perf_counter() - t0
        return report
    check_history(cold, state)  # before any upload: a damaged history is never written to
    run_id = uuid.uuid4().hex
    prefix = f"{data_prefix(state.broker)}{state.seq + 1:020d}/{run_id}"
    # every record's CRCs are checked again on the way: what is rewritten must be what was tiered
    packer = ObjectPacker(
        cold, run_id, lambda n: f"{prefix}-{n:06d}.mqd", opts.pack, verify_from=cold.url
    )
    try:
        for run in runs:
            for seg in run:
                records = segment_records(cold, seg)
                for piece in range(0, len(records), 256):  # lets the packer cut objects in time
                    packer.add(seg.topic, seg.queue, records[piece : piece + 256])
                report.messages_done += seg.count
                report.stored_bytes_done += seg.stored_bytes
                if on_progress is not None:
                    on_progress(report)
            report.runs_done += 1
        report.added = packer.drain()
    finally:
        packer.close()
    report.objects = packer.objects
    commit(
        cold,
        state,
        added=report.added,
        removed=[s for r in runs for s in r],
        run_id=run_id,
        warnings=report.warnings,
    )
    report.committed_seq = state.seq
    report.objects_deleted = collect_garbage(cold, state)
    report.seconds = time.perf_counter() - t0
    return report
