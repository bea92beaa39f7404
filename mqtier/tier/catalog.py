"""The catalog: the cold tier's own commit log, and the state it adds up to.

Per broker, under ``{broker}/catalog/``::

    commits/{seq:020d}.json        commit record ``seq``: the segments it adds (and removes)
    snapshots/{seq:020d}.json.zst  the whole state as of commit ``seq``
    LATEST                         which snapshot is newest (overwritten; only a hint)

A tiering run uploads its data objects first and then *creates* the next commit record with a
conditional create. Of two runs that read the same state, only one can create ``seq + 1``; the
other fails with :class:`CommitConflictError` and its objects are never referenced. A crash
before the create leaves the previous state, after it the new one: nothing in between exists.

Readers never list: they read ``LATEST``, that snapshot, then commit records ``seq+1, seq+2, ...``
until one is missing. A stale ``LATEST`` (a crash between snapshot and pointer) only makes that
tail longer.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import zstandard

from mqtier.backend.base import ColdStore
from mqtier.errors import (
    ColdObjectNotFoundError,
    ColdStoreError,
    CommitConflictError,
    ConfigError,
    CorruptionError,
    UnsupportedFormatError,
)
from mqtier.format.coldobject import Segment

log = logging.getLogger(__name__)

CATALOG_VERSION: Final = 1
SNAPSHOT_EVERY: Final = 16  # commits between snapshots: bounds a reader's tail of GETs
_BROKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%-]{0,126}$")

QueueKey = tuple[str, int]


def check_broker(name: str) -> str:
    if not _BROKER_RE.match(name) or ".." in name:
        raise ConfigError(
            f"broker name {name!r}: use 1-127 letters, digits, '.', '_', '-' or '%', "
            "not starting with a punctuation mark"
        )
    return name


def commit_key(broker: str, seq: int) -> str:
    return f"{broker}/catalog/commits/{seq:020d}.json"


def snapshot_key(broker: str, seq: int) -> str:
    return f"{broker}/catalog/snapshots/{seq:020d}.json.zst"


def latest_key(broker: str) -> str:
    return f"{broker}/catalog/LATEST"


def data_prefix(broker: str) -> str:
    return f"{broker}/data/"


@dataclass
class CatalogState:
    """What is committed: per (topic, queue), its segments in queue-offset order."""

    broker: str
    seq: int = 0
    queues: dict[QueueKey, list[Segment]] = field(default_factory=dict)
    # Where a queue's committed offsets end after expiry removed all its segments: the next
    # segment must still start there, or expired data would be tiered again.
    floors: dict[QueueKey, int] = field(default_factory=dict)
    loaded_requests: int = 0  # GETs it took to load (snapshot + tail)
    # The commit of the newest snapshot this state was loaded from or wrote (0: none). A
    # commit snapshots once the tail after it is SNAPSHOT_EVERY long, so a snapshot that
    # failed is tried again by the next commit (of this run or of any later one).
    snapshot_seq: int = 0

    def next_offset(self, key: QueueKey) -> int | None:
        segs = self.queues.get(key)
        return segs[-1].end if segs else self.floors.get(key)

    def first_offset(self, key: QueueKey) -> int | None:
        segs = self.queues.get(key)
        return segs[0].first if segs else None

    def segment_for(self, key: QueueKey, offset: int) -> Segment | None:
        segs = self.queues.get(key)
        if not segs:
            return None
        i = bisect.bisect_right([s.first for s in segs], offset) - 1
        if i >= 0 and segs[i].first <= offset < segs[i].end:
            return segs[i]
        return None

    def referenced_objects(self) -> set[str]:
        return {s.object for segs in self.queues.values() for s in segs}

    def apply(self, record: dict[str, Any]) -> None:
        """Add one commit record's changes (they were checked when it was created)."""
        for doc in record.get("removed", []):
            key = (doc["topic"], int(doc["queue"]))
            segs = self.queues.get(key, [])
            gone = [s for s in segs if s.object == doc["object"] and s.first == doc["first"]]
            self.queues[key] = [s for s in segs if s not in gone]
            for s in gone:
                self.floors[key] = max(self.floors.get(key, 0), s.end)
            if not self.queues[key]:
                del self.queues[key]
        for doc in record.get("added", []):
            seg = Segment.from_json(doc)
            segs = self.queues.setdefault((seg.topic, seg.queue), [])
            segs.append(seg)
            segs.sort(key=lambda s: s.first)
        self.seq = int(record["seq"])

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "format": "mqtier-catalog-snapshot",
            "version": CATALOG_VERSION,
            "broker": self.broker,
            "seq": self.seq,
            "queues": [
                {"topic": t, "queue": q, "segments": [s.to_json() for s in segs]}
                for (t, q), segs in sorted(self.queues.items())
            ],
            "floors": [{"topic": t, "queue": q, "next": n} for (t, q), n in self.floors.items()],
        }


def _decode(data: bytes, key: str, kind: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptionError(f"{key}: {kind} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptionError(f"{key}: {kind} is not a JSON object")
    if doc.get("version") != CATALOG_VERSION:
        raise UnsupportedFormatError(f"{key}: {kind} version {doc.get('version')!r}")
    return doc


def load_catalog(cold: ColdStore, broker: str) -> CatalogState:
    """The latest committed state of ``broker``'s cold tier (empty when it has none)."""
    check_broker(broker)
    state = CatalogState(broker)
    requests = 1
    try:
        pointer = _decode(cold.get(latest_key(broker)), latest_key(broker), "LATEST pointer")
        snap_seq = int(pointer["snapshot_seq"])
    except ColdObjectNotFoundError:
        snap_seq = 0
    except (CorruptionError, KeyError, TypeError, ValueError) as exc:
        # LATEST and snapshots only save reading: every commit record is kept, so the state
        # can always be rebuilt from commit 1.
        log.warning("%s: unreadable (%s); reading every commit record", latest_key(broker), exc)
        snap_seq = 0
    if snap_seq > 0:
        requests += 1
        try:
            _load_snapshot(cold, state, snap_seq)
        except (CorruptionError, ColdObjectNotFoundError, KeyError, TypeError, ValueError) as exc:
            log.warning("snapshot %d unreadable (%s); reading every commit record", snap_seq, exc)
            state = CatalogState(broker)
    while True:
        key = commit_key(broker, state.seq + 1)
        requests += 1
        try:
            data = cold.get(key)
        except ColdObjectNotFoundError:
            break
        record = _decode(data, key, "commit record")
        try:
            if int(record.get("seq", -1)) != state.seq + 1:
                raise CorruptionError(
                    f"{key}: holds commit {record.get('seq')}, not {state.seq + 1}"
                )
            state.apply(record)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            # Valid JSON of the wrong shape (edited by hand, or written by a newer format)
            raise CorruptionError(
                f"{key}: commit record is malformed ({type(exc).__name__}: {exc})"
            ) from None
    state.loaded_requests = requests
    return state


def _load_snapshot(cold: ColdStore, state: CatalogState, seq: int) -> None:
    key = snapshot_key(state.broker, seq)
    raw = cold.get(key)
    try:
        data = zstandard.ZstdDecompressor().decompress(raw)
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"{key}: snapshot does not decompress: {exc}") from None
    snap = _decode(data, key, "snapshot")
    if int(snap["seq"]) != seq:
        raise CorruptionError(f"{key}: holds the state of commit {snap['seq']}")
    state.seq = seq
    state.snapshot_seq = seq
    for q in snap["queues"]:
        state.queues[(q["topic"], int(q["queue"]))] = [Segment.from_json(s) for s in q["segments"]]
    for f in snap.get("floors", []):
        state.floors[(f["topic"], int(f["queue"]))] = int(f["next"])


def check_contiguous(
    state: CatalogState, added: Iterable[Segment], removed: Iterable[Segment] = ()
) -> None:
    """Refuse a change that would leave a gap or overlap in a queue's committed offsets.

    Segments may be added at a queue's end (tiering), removed from its start (expiry), or a run
    of them replaced by segments holding the same offsets (compaction); a queue's end never
    moves back.
    """
    added, removed = list(added), list(removed)
    for key in sorted({(s.topic, s.queue) for s in [*added, *removed]}):
        before = state.queues.get(key, [])
        gone = {(s.object, s.first) for s in removed if (s.topic, s.queue) == key}
        if len(gone) != sum(1 for s in before if (s.object, s.first) in gone):
            raise CorruptionError(f"{key[0]}/{key[1]}: removes a segment it does not have")
        after = [s for s in before if (s.object, s.first) not in gone]
        after += [s for s in added if (s.topic, s.queue) == key]
        after.sort(key=lambda s: s.first)
        expected = state.next_offset(key) if not before else None
        for seg in after:
            if expected is not None and seg.first != expected:
                raise CorruptionError(
                    f"{seg.topic}/{seg.queue}: segment starts at {seg.first}, "
                    f"but the committed offsets end at {expected}"
                )
            expected = seg.end
        old_end = state.next_offset(key)
        if after and old_end is not None and after[-1].end < old_end:
            raise CorruptionError(
                f"{key[0]}/{key[1]}: the committed offsets would end at {after[-1].end}, "
                f"before {old_end}"
            )


def commit(
    cold: ColdStore,
    state: CatalogState,
    *,
    added: list[Segment],
    removed: list[Segment] | None = None,
    run_id: str,
    snapshot_every: int = SNAPSHOT_EVERY,
    warnings: list[str] | None = None,
) -> int:
    """Create commit record ``state.seq + 1``; on success apply it to ``state``.

    Then, when the tail of commit records after the newest snapshot has grown to
    ``snapshot_every``, write a new snapshot. A snapshot only shortens what readers load, so
    one that fails does not fail the commit, which is durable by then: it is logged, noted in
    ``warnings`` (when given), and tried again by the next commit.

    Raises:
        CommitConflictError: another job created that record first; nothing was committed.
    """
    check_contiguous(state, added, removed or ())
    seq = state.seq + 1
    record = {
        "format": "mqtier-commit",
        "version": CATALOG_VERSION,
        "seq": seq,
        "run_id": run_id,
        "time_ms": int(time.time() * 1000),
        "host": os.uname().nodename,
        "added": [s.to_json() for s in added],
        "removed": [
            {"object": s.object, "topic": s.topic, "queue": s.queue, "first": s.first}
            for s in removed or []
        ],
    }
    key = commit_key(state.broker, seq)
    if not cold.create(key, orjson.dumps(record)):
        raise CommitConflictError(
            f"{cold.url}/{key}: another tiering job created this commit first; what this run "
            "uploaded since its last commit stays uncommitted (a later run deletes it)"
        )
    state.apply(record)
    if seq - state.snapshot_seq >= snapshot_every:
        try:
            write_snapshot(cold, state)
        except (ColdStoreError, OSError) as exc:
            # Readers still find the latest state: every commit record is kept, and they
            # read the tail after whichever snapshot LATEST names.
            msg = f"commit {seq} is durable, but its catalog snapshot failed (retried later): {exc}"
            log.warning("%s", msg)
            if warnings is not None:
                warnings.append(msg)
    return seq


def write_snapshot(cold: ColdStore, state: CatalogState) -> None:
    data = zstandard.ZstdCompressor(level=3).compress(orjson.dumps(state.to_snapshot()))
    cold.put(snapshot_key(state.broker, state.seq), data)
    cold.put(
        latest_key(state.broker),
        orjson.dumps({"version": CATALOG_VERSION, "snapshot_seq": state.seq}),
    )
    state.snapshot_seq = state.seq
