"""Cold-tier TTL: drop the oldest segments whose every message is older than its topic's TTL.

Only a queue's leading segments go (dropping one in the middle would open a gap in the queue).
Index objects that indexed nothing but what goes are removed in the same commit; the others
keep the expired items until their next merge, and queries skip them (docs/FORMAT.md 15.6).
The catalog entries go first, in one commit record; the objects follow once no committed segment
names them (an object shared with a younger segment waits for that one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mqtier.backend.base import ColdStore
from mqtier.format.coldobject import Segment
from mqtier.tier.catalog import CatalogState, commit
from mqtier.tier.dispatch import collect_garbage


@dataclass
class ExpireReport:
    segments: list[Segment] = field(default_factory=list)
    messages: int = 0
    stored_bytes: int = 0
    objects_deleted: int = 0
    committed_seq: int = 0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)  # what failed without failing the run

    def to_json(self) -> dict[str, Any]:
        # Per queue: the range [from, to) of queue offsets expired (a queue loses only its
        # leading segments, so it is one range), as dispatch gives the range it tiers.
        queues: dict[tuple[str, int], dict[str, Any]] = {}
        for s in self.segments:
            q = queues.setdefault(
                (s.topic, s.queue),
                {"topic": s.topic, "queue": s.queue, "segments": 0, "messages": 0,
                 "from": s.first, "to": s.end},
            )  # fmt: skip
            q["segments"] += 1
            q["messages"] += s.count
            q["from"] = min(q["from"], s.first)
            q["to"] = max(q["to"], s.end)
        return {
            "dry_run": self.dry_run,
            "segments": len(self.segments),
            "messages": self.messages,
            "stored_bytes": self.stored_bytes,
            "objects_deleted": self.objects_deleted,
            "committed_seq": self.committed_seq,
            "warnings": list(self.warnings),
            "queues": [queues[key] for key in sorted(queues)],
        }


def expired_segments(
    state: CatalogState, default_ttl_ms: int | None, topic_ttl_ms: dict[str, int], now_ms: int
) -> list[Segment]:
    out: list[Segment] = []
    for (topic, _queue), segs in sorted(state.queues.items()):
        ttl = topic_ttl_ms.get(topic, default_ttl_ms)
        if ttl is None:
            continue
        for seg in segs:  # oldest first; stop at the first one still alive
            if seg.max_ts >= now_ms - ttl:
                break
            out.append(seg)
    return out


def dead_indexes(state: CatalogState, removed: list[Segment]) -> list[str]:
    """The index objects whose every covered offset goes with ``removed``: they go too (the
    next merge would drop their items anyway, and queries need not consult them)."""
    gone = {(s.object, s.topic, s.queue, s.first) for s in removed}
    live: dict[tuple[str, int], tuple[int, int]] = {}
    for key, segs in state.queues.items():
        kept = [s for s in segs if (s.object, s.topic, s.queue, s.first) not in gone]
        if kept:
            live[key] = (kept[0].first, kept[-1].end)
    dead = []
    for entry in state.indexes.values():
        alive = False
        for t, q, a, b in entry.covers:
            lo, hi = live.get((t, q), (0, 0))
            alive = alive or max(a, lo) < min(b, hi)
        if not alive:
            dead.append(entry.object)
    return dead


def expire(
    cold: ColdStore,
    state: CatalogState,
    *,
    default_ttl_ms: int | None,
    topic_ttl_ms: dict[str, int] | None = None,
    dry_run: bool = False,
    run_id: str = "expire",
) -> ExpireReport:
    now = int(time.time() * 1000)
    segs = expired_segments(state, default_ttl_ms, topic_ttl_ms or {}, now)
    report = ExpireReport(
        segs,
        sum(s.count for s in segs),
        sum(s.stored_bytes for s in segs),
        dry_run=dry_run,
        committed_seq=state.seq,
    )
    if dry_run or not segs:
        return report
    commit(
        cold,
        state,
        added=[],
        removed=segs,
        index_removed=dead_indexes(state, segs),
        run_id=run_id,
        warnings=report.warnings,
    )
    report.committed_seq = state.seq
    report.objects_deleted = collect_garbage(cold, state)
    return report
