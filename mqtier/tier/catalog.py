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

A damaged catalog is never trusted (docs/FORMAT.md §15.1.1): records, snapshots and ``LATEST``
carry a ``sha256`` over their canonical JSON (documents without one are legacy and checked for
shape only); every record is checked to keep each queue contiguous; a snapshot is cross-checked
against the record it summarises; and a hole (a missing record followed by a later one) fails
the load, found by probing ``PROBE_PAST`` records past the first missing one. Writers also LIST,
boundedly, before their first upload (:func:`check_history`). Each failure is a
:class:`CorruptionError` naming the key, so nothing reads garbage and nothing commits over it.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson
import zstandard

from mqtier.backend.base import ColdStore
from mqtier.backend.open import bill_of
from mqtier.errors import (
    ColdObjectNotFoundError,
    ColdStoreError,
    CommitConflictError,
    ConfigError,
    CorruptionError,
    UnsupportedFormatError,
)
from mqtier.format.coldindex import IndexEntry, merge_covers
from mqtier.format.coldobject import Segment

log = logging.getLogger(__name__)

CATALOG_VERSION: Final = 1
SNAPSHOT_EVERY: Final = 16  # commits between snapshots: bounds a reader's tail of GETs
# Readers look this many records past the first missing one: a later record that exists means
# a hole (lost records), which must fail rather than hide the commits after it.
PROBE_PAST: Final = 2
CHECKSUM_FIELD: Final = "sha256"  # over the document's canonical JSON without this field
# operation, seconds and requests: recorded since `mqtier log`; records before lack them.
_COMMIT_FIELDS: Final = frozenset(
    {
        "format",
        "version",
        "seq",
        "run_id",
        "time_ms",
        "host",
        "operation",
        "seconds",
        "requests",
        "added",
        "removed",
        "index_added",
        "index_removed",
        "prev",
        CHECKSUM_FIELD,
    }
)
_COST_FIELDS: Final = ("requests", "bytes_sent", "bytes_received")  # a commit's `requests`
# What a removed entry repeats of its segment (since `mqtier log`): the offsets and bytes a
# commit dropped can then be told from the record alone, without replaying the history.
_REMOVED_EXTRAS: Final = ("count", "stored_bytes", "raw_bytes")
_SNAPSHOT_FIELDS: Final = frozenset(
    {"format", "version", "broker", "seq", "queues", "floors", "indexes", CHECKSUM_FIELD}
)
_LATEST_FIELDS: Final = frozenset(
    {"version", "snapshot_seq", "snapshot_bytes", "head_seq", "head_sha256", CHECKSUM_FIELD}
)
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


def index_prefix(broker: str) -> str:
    return f"{broker}/index/"


@dataclass
class CatalogState:
    """What is committed: per (topic, queue), its segments in queue-offset order."""

    broker: str
    seq: int = 0
    queues: dict[QueueKey, list[Segment]] = field(default_factory=dict)
    # Where a queue's committed offsets end after expiry removed all its segments: the next
    # segment must still start there, or expired data would be tiered again.
    floors: dict[QueueKey, int] = field(default_factory=dict)
    # The committed index objects, by object key, oldest first (docs/FORMAT.md section 15.5)
    indexes: dict[str, IndexEntry] = field(default_factory=dict)
    loaded_requests: int = 0  # GETs it took to load (snapshot + tail)
    # The commit of the newest snapshot this state was loaded from or wrote (0: none). A
    # commit snapshots once the tail after it is SNAPSHOT_EVERY long, so a snapshot that
    # failed is tried again by the next commit (of this run or of any later one).
    snapshot_seq: int = 0
    snapshot_bytes: int | None = None  # that snapshot's size, as LATEST records it
    # The sha256 of commit record ``seq`` when known (records since the hash chain carry it;
    # the next record names it as its ``prev``, which ties cached records to the tier's).
    head_sha: str | None = None
    shas: dict[int, str] = field(default_factory=dict)  # records' sha256 seen by the load
    # Whether check_history ran for the run that holds this state (once, before its first write)
    history_checked: bool = False
    # Where this run's work for its next commit began: when the state was loaded or last
    # committed (monotonic seconds, and the request bill's totals then). A commit records the
    # time and requests since, so `mqtier log` shows what each commit cost.
    work_since: float | None = None
    bill_since: tuple[int, int, int] | None = None

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

    def indexed_ranges(self) -> dict[QueueKey, list[tuple[int, int]]]:
        """Per queue, the offset ranges the index objects cover: their union, sorted and
        joined (a compacted segment may span two objects' covers)."""
        return ranges_by_queue(self.indexes.values())

    def referenced_objects(self) -> set[str]:
        """The data objects the committed segments name (index objects: :attr:`indexes`)."""
        return {s.object for segs in self.queues.values() for s in segs}

    def apply(
        self,
        record: dict[str, Any],
        added: list[Segment] | None = None,
        indexes: list[IndexEntry] | None = None,
    ) -> None:
        """Add one commit record's changes (they were checked when it was created).

        ``added`` and ``indexes`` are its added segments and index objects, when the caller
        parsed them already.
        """
        for doc in record.get("removed", []):
            key = (doc["topic"], int(doc["queue"]))
            segs = self.queues.get(key, [])
            gone = [s for s in segs if s.object == doc["object"] and s.first == doc["first"]]
            self.queues[key] = [s for s in segs if s not in gone]
            for s in gone:
                self.floors[key] = max(self.floors.get(key, 0), s.end)
            if not self.queues[key]:
                del self.queues[key]
        for seg in added if added is not None else map(Segment.from_json, record["added"]):
            segs = self.queues.setdefault((seg.topic, seg.queue), [])
            segs.append(seg)
            if len(segs) > 1 and segs[-2].first > seg.first:  # compaction adds in the middle
                segs.sort(key=lambda s: s.first)
        for obj in record.get("index_removed", []):
            self.indexes.pop(obj, None)
        if indexes is None:
            indexes = [IndexEntry.from_json(doc) for doc in record.get("index_added", [])]
        for entry in indexes:
            self.indexes[entry.object] = entry
        self.seq = int(record["seq"])
        self.head_sha = record.get(CHECKSUM_FIELD)

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
            **({"indexes": [e.to_json() for e in self.indexes.values()]} if self.indexes else {}),
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


def _digest(doc: dict[str, Any]) -> str:
    """SHA-256 of a catalog document's canonical JSON (sorted keys, without its checksum)."""
    body = {k: v for k, v in doc.items() if k != CHECKSUM_FIELD}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _sealed(doc: dict[str, Any]) -> bytes:
    return orjson.dumps({**doc, CHECKSUM_FIELD: _digest(doc)})


def _repair_hint(broker: str) -> str:
    # No mqtier command rewrites a catalog (it is append-only by design), so the hint says
    # what an operator can do by hand.
    return (
        "try: restore it from a backup or replica of the cold tier; mqtier has no repair "
        f"command yet, and it neither reads nor writes {broker}'s cold tier until it is repaired"
    )


def _damaged(key: str, what: str, hint: str) -> CorruptionError:
    return CorruptionError(f"{key}: {what}; {hint}")


def _check_sealed(doc: dict[str, Any], key: str, kind: str, fields: frozenset[str]) -> None:
    """Refuse a document whose checksum or field names are wrong.

    A document without a checksum was written before checksums existed (legacy): it is read,
    checked only for its structure. A byte flip cannot make a sealed document look legacy: it
    would turn the checksum's name into an unknown field, which is refused too.
    """
    unknown = sorted(set(doc) - fields)
    if unknown:
        raise CorruptionError(f"{key}: {kind} has unknown fields {unknown}")
    if CHECKSUM_FIELD in doc and doc[CHECKSUM_FIELD] != _digest(doc):
        raise CorruptionError(f"{key}: {kind} fails its {CHECKSUM_FIELD} checksum")


class ObjectCache(Protocol):
    """A local copy of immutable cold objects (``mqtier.index.cache.ImmutableCache``)."""

    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, data: bytes) -> None: ...
    def forget(self, key: str) -> None: ...
    def clear(self) -> None: ...


def load_catalog(cold: ColdStore, broker: str, *, cache: ObjectCache | None = None) -> CatalogState:
    """The latest committed state of ``broker``'s cold tier (empty when it has none).

    With ``cache``, commit records and snapshots (never changed once written) are read from
    it when there and kept in it when fetched. Cached copies are checked as fetched ones are,
    and tied to the tier's history: each record names its predecessor's checksum (``prev``)
    and ``LATEST`` the newest record's (``head_sha256``), so a cache left from another
    history (a tier wiped and rebuilt, or restored from a backup) is noticed, emptied and not
    used. ``LATEST`` and the first missing record, which can change, are always asked of the
    cold tier; a tier whose ``LATEST`` predates ``head_sha256`` reads no record from the cache.

    Raises:
        CorruptionError: the catalog is damaged (a record or snapshot fails its checksum or
            its cross-checks, or a commit record is missing while a later one exists); the
            message names the key and what to do about it.
    """
    check_broker(broker)
    started, bill_then = time.monotonic(), _bill_totals(cold)
    pointer = _read_latest(cold, broker)
    trusted = cache if cache is not None and pointer.head_sha is not None else None
    if trusted is not None:
        try:
            state = _load(cold, broker, pointer, trusted, may_read_cache=True)
            if _agrees_with_latest(state, pointer):
                state.work_since, state.bill_since = started, bill_then
                return state
            log.warning("the local cache of %s's catalog is from another history", broker)
        except CorruptionError as exc:
            # Damage in the tier is found again below, without the cache, and reported then.
            log.warning("the local cache of %s's catalog disagrees (%s); not using it", broker, exc)
        trusted.clear()
    state = _load(cold, broker, pointer, trusted, may_read_cache=False)
    state.work_since, state.bill_since = started, bill_then
    return state


def _agrees_with_latest(state: CatalogState, pointer: _Latest) -> bool:
    """Whether the state loaded (partly from a cache) holds the record ``LATEST`` names.

    ``LATEST`` may lag (a writer's put of it failed, or a slower one overwrote a newer one):
    any record up to the state's end will do, as each record is chained to the one before.
    """
    if pointer.head_seq is None or pointer.head_seq > state.seq:
        return False
    return state.shas.get(pointer.head_seq) == pointer.head_sha


def _load(
    cold: ColdStore,
    broker: str,
    pointer: _Latest,
    cache: ObjectCache | None,
    *,
    may_read_cache: bool,
) -> CatalogState:
    """The state from ``LATEST``'s snapshot and the records after it (see load_catalog)."""
    reading = cache if may_read_cache else None
    state = CatalogState(broker)
    requests = 1  # LATEST
    if pointer.snap_seq > 0:
        requests += 2  # the snapshot and the commit record it summarises
        loaded = _load_snapshot(cold, broker, pointer.snap_seq, pointer.snap_bytes, reading)
        state = loaded or CatalogState(broker)
        state.snapshot_bytes = pointer.snap_bytes if loaded else None
    speculate = True
    while True:
        key = commit_key(broker, state.seq + 1)
        cached = reading.get(key) if reading is not None else None
        if cached is not None:
            _apply_checked(state, cached, key)
            _remember_sha(state)
            continue
        requests += 1
        if speculate and pointer.head_seq is not None and state.seq >= pointer.head_seq:
            # At (or past) the record LATEST names, the next one is most likely missing: its
            # probes go out with its GET, so the end of the history costs one round trip.
            found, probed = _get_and_probe(cold, broker, state.seq + 1)
            requests += len(probed)
            if found is None:
                requests += any(probed)  # the missing record asked again
                if _judge_probes(cold, broker, state.seq + 1, probed):
                    continue  # a writer committed it meanwhile: read on
                break
            data = found
            speculate = False  # LATEST lags: read on one record at a time
        else:
            try:
                data = cold.get(key)
            except ColdObjectNotFoundError:
                probes, landed = _probe_past(cold, broker, state.seq + 1)
                requests += probes
                if landed:
                    continue  # a writer committed it meanwhile: read on
                break
        _apply_checked(state, data, key)
        _remember_sha(state)
        if cache is not None:
            cache.put(key, data)
    state.loaded_requests = requests
    return state


def _remember_sha(state: CatalogState) -> None:
    if state.head_sha is not None:
        state.shas[state.seq] = state.head_sha


def _bill_totals(cold: ColdStore) -> tuple[int, int, int] | None:
    """(requests, bytes sent, bytes received) so far, when ``cold`` is metered."""
    bill = bill_of(cold)
    if bill is None:
        return None
    doc = bill.to_json()
    return doc["requests"], doc["bytes_sent"], doc["bytes_received"]


def _get_and_probe(cold: ColdStore, broker: str, seq: int) -> tuple[bytes | None, list[bool]]:
    """Record ``seq`` (None when missing) and whether each of the ``PROBE_PAST`` records
    after it exists, asked at the same time."""
    with ThreadPoolExecutor(PROBE_PAST + 1, thread_name_prefix="mqtier-probe") as pool:
        probes = [
            pool.submit(cold.exists, commit_key(broker, seq + ahead))
            for ahead in range(1, PROBE_PAST + 1)
        ]
        got = pool.submit(cold.get, commit_key(broker, seq))
        try:
            data: bytes | None = got.result()
        except ColdObjectNotFoundError:
            data = None
        return data, [p.result() for p in probes]


def _judge_probes(cold: ColdStore, broker: str, missing: int, probed: list[bool]) -> bool:
    """After ``missing`` was not found: True when it has appeared meanwhile (a commit raced
    the load); raises the hole when a later record exists and it still does not."""
    if not any(probed):
        return False
    if cold.exists(commit_key(broker, missing)):
        return True
    ahead = probed.index(True) + 1
    raise _hole(broker, missing, f"commit record {missing + ahead} exists")


def _probe_past(cold: ColdStore, broker: str, missing: int) -> tuple[int, bool]:
    """Look for a hole: is a record after the first missing one there? (``PROBE_PAST`` GETs)

    A writer creates record N+1 only after reading N, and records are never deleted, so a
    later record that exists while ``missing`` does not (checked again after it) means
    ``missing`` was lost. Returns the requests made and whether ``missing`` appeared meanwhile
    (a commit that raced this load).
    """
    probed: list[bool] = []
    for ahead in range(1, PROBE_PAST + 1):
        probed.append(cold.exists(commit_key(broker, missing + ahead)))
        if probed[-1]:
            break
    return len(probed) + any(probed), _judge_probes(cold, broker, missing, probed)


def _hole(broker: str, missing: int, evidence: str) -> CorruptionError:
    return _damaged(
        commit_key(broker, missing),
        f"commit record {missing} is missing but {evidence}: the catalog has a hole that hides "
        "the later commits, and a new commit there would overlap them",
        _repair_hint(broker),
    )


@dataclass(frozen=True, slots=True)
class _Latest:
    """What ``LATEST`` says: the newest snapshot and (since the hash chain) the newest record."""

    snap_seq: int = 0
    snap_bytes: int | None = None
    head_seq: int | None = None
    head_sha: str | None = None


def _read_latest(cold: ColdStore, broker: str) -> _Latest:
    """What ``LATEST`` says; all unknown without one (or with one half-written)."""
    key = latest_key(broker)
    try:
        pointer = _decode(cold.get(key), key, "LATEST pointer")
        snap_seq = int(pointer["snapshot_seq"])
    except ColdObjectNotFoundError:
        return _Latest()
    except (CorruptionError, KeyError, TypeError, ValueError) as exc:
        # A put that landed half-written leaves no valid JSON. LATEST and snapshots only save
        # reading: every commit record is kept, so the state can be rebuilt from commit 1.
        log.warning("%s: unreadable (%s); reading every commit record", key, exc)
        return _Latest()
    try:
        # A pointer that parses but fails its checksum was damaged after it was written
        _check_sealed(pointer, key, "LATEST pointer", _LATEST_FIELDS)
    except CorruptionError as exc:
        raise _damaged(
            key,
            str(exc).removeprefix(f"{key}: "),
            f"try: delete {key}: it is only a hint, and readers then rebuild the state "
            "from the commit records",
        ) from None
    size = pointer.get("snapshot_bytes")
    head_seq, head_sha = pointer.get("head_seq"), pointer.get("head_sha256")
    if type(head_seq) is not int or type(head_sha) is not str:
        head_seq, head_sha = None, None
    return _Latest(snap_seq, size if type(size) is int else None, head_seq, head_sha)


def _load_snapshot(
    cold: ColdStore, broker: str, seq: int, size: int | None, cache: ObjectCache | None = None
) -> CatalogState | None:
    """The state snapshot ``seq`` holds, cross-checked; None when it is only a lost hint.

    A snapshot shorter than LATEST says (a put that landed half-written), or one an old LATEST
    without a size names that does not decode, is a lost hint: the commit records replace it.
    Anything else that fails is damage.
    """
    key = snapshot_key(broker, seq)
    hint = (
        f"try: delete {latest_key(broker)} and move {key} aside: readers then rebuild the "
        "state from the commit records"
    )
    try:
        raw = _cached_get(cold, cache, key, size)
    except ColdObjectNotFoundError:
        if size is None:
            log.warning("snapshot %d is missing; reading every commit record", seq)
            return None
        raise _damaged(key, "the snapshot LATEST names is missing", hint) from None
    if size is not None and len(raw) < size:
        log.warning(
            "%s: half-written (%d of %d bytes); reading every commit record", key, len(raw), size
        )
        return None
    try:
        if size is not None and len(raw) != size:
            raise CorruptionError(f"{key}: snapshot is {len(raw)} bytes, LATEST says {size}")
        try:
            data = zstandard.ZstdDecompressor().decompress(raw)
        except zstandard.ZstdError as exc:
            raise CorruptionError(f"{key}: snapshot does not decompress: {exc}") from None
        snap = _decode(data, key, "snapshot")
    except CorruptionError as exc:
        if size is None:
            log.warning("snapshot %d unreadable (%s); reading every commit record", seq, exc)
            return None
        raise _damaged(key, str(exc).removeprefix(f"{key}: "), hint) from None
    try:
        _check_sealed(snap, key, "snapshot", _SNAPSHOT_FIELDS)
        state = _snapshot_state(snap, key, broker, seq)
        _cross_check(cold, state, key, cache)
    except CorruptionError as exc:
        raise _damaged(key, str(exc).removeprefix(f"{key}: "), hint) from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _damaged(key, f"snapshot is malformed ({type(exc).__name__}: {exc})", hint) from None
    return state


def _snapshot_state(snap: dict[str, Any], key: str, broker: str, seq: int) -> CatalogState:
    """The state a decoded snapshot describes, each queue checked to be contiguous."""
    if snap.get("format") != "mqtier-catalog-snapshot" or snap.get("broker") != broker:
        raise CorruptionError(f"{key}: not a snapshot of broker {broker}'s catalog")
    if type(snap["seq"]) is not int or snap["seq"] != seq:
        raise CorruptionError(f"{key}: holds the state of commit {snap['seq']}")
    state = CatalogState(broker, seq=seq, snapshot_seq=seq)
    for q in snap["queues"]:
        qkey = (str(q["topic"]), int(q["queue"]))
        segs = [_segment(s, broker, seq, exact=False) for s in q["segments"]]
        if qkey in state.queues or not segs:
            raise CorruptionError(f"{key}: queue {qkey[0]}/{qkey[1]} is listed twice or empty")
        for before, after in itertools.pairwise(segs):
            if after.first != before.end:
                raise CorruptionError(
                    f"{key}: {qkey[0]}/{qkey[1]} has a segment at {after.first} after one "
                    f"that ends at {before.end}"
                )
        state.queues[qkey] = segs
    for f in snap.get("floors", []):
        state.floors[(str(f["topic"]), int(f["queue"]))] = int(f["next"])
    for doc in snap.get("indexes", []):
        entry = _index_entry(doc, broker, seq, exact=False)
        state.indexes[entry.object] = entry
    return state


def _cached_get(cold: ColdStore, cache: ObjectCache | None, key: str, size: int | None) -> bytes:
    """An immutable object from ``cache`` when there (and of ``size``, when known), else
    fetched and kept; the caller checks it either way (and drops a copy that fails)."""
    if cache is not None:
        data = cache.get(key)
        if data is not None and (size is None or len(data) == size):
            return data
    data = cold.get(key)
    if cache is not None and (size is None or len(data) == size):
        cache.put(key, data)
    return data


def _cross_check(
    cold: ColdStore, state: CatalogState, key: str, cache: ObjectCache | None = None
) -> None:
    """A snapshot must agree with the commit record it summarises (one GET).

    Every segment that record added is in the snapshot, field for field, and none it removed
    is; the records after the snapshot are then checked against it as they are applied.
    """
    rkey = commit_key(state.broker, state.seq)
    try:
        record = _decode(_cached_get(cold, cache, rkey, None), rkey, "commit record")
    except ColdObjectNotFoundError:
        raise CorruptionError(
            f"{key}: summarises commit {state.seq}, whose record is missing"
        ) from None
    _check_sealed(record, rkey, "commit record", _COMMIT_FIELDS)
    if record.get("seq") != state.seq:
        raise CorruptionError(f"{rkey}: holds commit {record.get('seq')}, not {state.seq}")
    state.head_sha = record.get(CHECKSUM_FIELD)
    if state.head_sha is not None:
        state.shas[state.seq] = state.head_sha
    for doc in record["added"]:
        seg = Segment.from_json(doc)
        if seg not in state.queues.get((seg.topic, seg.queue), []):
            raise CorruptionError(
                f"{key}: lacks the segment {seg.topic}/{seg.queue}@{seg.first} of {seg.object} "
                f"that commit {state.seq} added"
            )
    for doc in record["removed"]:
        segs = state.queues.get((doc["topic"], int(doc["queue"])), [])
        if any(s.object == doc["object"] and s.first == doc["first"] for s in segs):
            raise CorruptionError(
                f"{key}: holds a segment of {doc['object']} that commit {state.seq} removed"
            )
    for doc in record.get("index_added", []):
        if state.indexes.get(doc.get("object")) != IndexEntry.from_json(doc):
            raise CorruptionError(
                f"{key}: lacks the index object {doc.get('object')} that commit {state.seq} added"
            )
    for obj in record.get("index_removed", []):
        if obj in state.indexes:
            raise CorruptionError(
                f"{key}: holds the index object {obj} that commit {state.seq} removed"
            )


def _segment(doc: Any, broker: str, seq: int, *, exact: bool) -> Segment:
    """A catalog entry's segment; its object must be one made for commit ``seq`` (or before)."""
    seg = Segment.from_json(doc)
    prefix = data_prefix(broker)
    made_for = seg.object[len(prefix) :].split("/", 1)[0]
    if (
        not seg.object.startswith(prefix)
        or not made_for.isdigit()
        or (int(made_for) != seq if exact else int(made_for) > seq)
    ):
        raise ValueError(f"segment object {seg.object!r} was not made for commit {seq}")
    if seg.count < 1 or seg.first < 0:
        raise ValueError(f"segment {seg.object!r} holds {seg.count} messages from {seg.first}")
    return seg


def _index_entry(doc: Any, broker: str, seq: int, *, exact: bool) -> IndexEntry:
    """A catalog entry's index object; it must be one made for commit ``seq`` (or before)."""
    entry = IndexEntry.from_json(doc)
    prefix = index_prefix(broker)
    made_for = entry.object[len(prefix) :].split("/", 1)[0]
    if (
        not entry.object.startswith(prefix)
        or not made_for.isdigit()
        or (int(made_for) != seq if exact else int(made_for) > seq)
    ):
        raise ValueError(f"index object {entry.object!r} was not made for commit {seq}")
    if entry.items < 0 or not 0 < entry.tail_pos < entry.size or entry.level < 0:
        raise ValueError(f"index object {entry.object!r} has impossible geometry")
    return entry


def _apply_checked(state: CatalogState, data: bytes, key: str) -> None:
    """Check commit record ``state.seq + 1`` (checksum, shape, contiguity) and apply it."""
    seq = state.seq + 1
    hint = _repair_hint(state.broker)
    try:
        record, added, index_added = _checked_record(data, key, state.broker, seq)
        removed = [_removed_segment(state, doc) for doc in record["removed"]]
        check_contiguous(state, added, removed)
        check_index_change(state, added, removed, index_added, record.get("index_removed", []))
        prev = record.get("prev")
        if prev is not None and state.head_sha is not None and prev != state.head_sha:
            raise CorruptionError(
                f"does not follow commit {seq - 1}: its prev checksum is not that record's"
            )
        state.apply(record, added, index_added)
    except CorruptionError as exc:
        raise _damaged(key, str(exc).removeprefix(f"{key}: "), hint) from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        # Valid JSON of the wrong shape (edited by hand, or written by a newer format)
        raise _damaged(
            key, f"commit record is malformed ({type(exc).__name__}: {exc})", hint
        ) from None


def _checked_record(
    data: bytes, key: str, broker: str, seq: int
) -> tuple[dict[str, Any], list[Segment], list[IndexEntry]]:
    """Commit record ``seq`` checked on its own (checksum, fields, shape) and what it adds.

    Raises CorruptionError, or KeyError/TypeError/ValueError for a wrong shape; the callers
    name the key and add what to do.
    """
    record = _decode(data, key, "commit record")
    _check_sealed(record, key, "commit record", _COMMIT_FIELDS)
    if record.get("format") != "mqtier-commit":
        raise CorruptionError(f"{key}: is not a commit record")
    if type(record["seq"]) is not int:
        raise TypeError(f"seq is {record['seq']!r}")
    if record["seq"] != seq:
        raise CorruptionError(f"{key}: holds commit {record['seq']}, not {seq}")
    added = [_segment(doc, broker, seq, exact=True) for doc in record["added"]]
    for doc in record["removed"]:
        _check_removed_shape(doc)
    indexes = [_index_entry(doc, broker, seq, exact=True) for doc in record.get("index_added", [])]
    gone = record.get("index_removed", [])
    if not isinstance(gone, list) or any(type(obj) is not str for obj in gone):
        raise TypeError(f"index_removed is {gone!r}")
    _check_work_fields(record)
    return record, added, indexes


def _check_removed_shape(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise TypeError(f"a removed entry is {doc!r}")
    want = {"object": str, "topic": str, "queue": int, "first": int}
    want.update(dict.fromkeys(_REMOVED_EXTRAS, int))
    for name, kind in want.items():
        if (name in doc or name not in _REMOVED_EXTRAS) and type(doc[name]) is not kind:
            raise TypeError(f"removed field {name!r} is {doc[name]!r}, not {kind.__name__}")


def _check_work_fields(record: dict[str, Any]) -> None:
    """The optional fields newer records carry (operation, seconds, requests) are well typed."""
    if "operation" in record and type(record["operation"]) is not str:
        raise TypeError(f"operation is {record['operation']!r}")
    if "seconds" in record and type(record["seconds"]) not in (int, float):
        raise TypeError(f"seconds is {record['seconds']!r}")
    if "requests" in record:
        cost = record["requests"]
        if not isinstance(cost, dict) or any(type(cost.get(k)) is not int for k in _COST_FIELDS):
            raise TypeError(f"requests is {cost!r}")


def read_commit_record(data: bytes, key: str, broker: str, seq: int) -> dict[str, Any]:
    """Commit record ``seq`` of ``broker`` checked on its own, for listings (``mqtier log``).

    Everything :func:`load_catalog` checks that needs no state: checksum, field names,
    ``format``, ``seq``, the segments it adds and the shape of those it removes. Contiguity
    against the state before it is not checked here (that needs the whole history).

    Raises:
        CorruptionError: the record is damaged; the message names ``key`` and what to try.
    """
    hint = _repair_hint(broker)
    try:
        record = _checked_record(data, key, broker, seq)[0]
        # What a listing shows of every record (the loader itself never needs them)
        for name, kind in (("time_ms", int), ("host", str), ("run_id", str)):
            if type(record[name]) is not kind:
                raise TypeError(f"{name} is {record[name]!r}")
        return record
    except CorruptionError as exc:
        raise _damaged(key, str(exc).removeprefix(f"{key}: "), hint) from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _damaged(
            key, f"commit record is malformed ({type(exc).__name__}: {exc})", hint
        ) from None


def _removed_segment(state: CatalogState, doc: dict[str, Any]) -> Segment:
    topic, queue, obj, first = doc["topic"], int(doc["queue"]), doc["object"], doc["first"]
    for seg in state.queues.get((topic, queue), []):
        if seg.object == obj and seg.first == first:
            # A record that says what it removed (newer ones do) must say it right
            for name in _REMOVED_EXTRAS:
                if name in doc and doc[name] != getattr(seg, name):
                    raise CorruptionError(
                        f"removes {topic}/{queue}@{first} of {obj} with {name} {doc[name]}, "
                        f"but that segment has {getattr(seg, name)}"
                    )
            return seg
    raise CorruptionError(f"removes a segment {topic}/{queue}@{first} of {obj} it does not have")


def check_history(cold: ColdStore, state: CatalogState) -> None:
    """Before a run writes: refuse a history with a hole that the loader's probes missed.

    Listing is fine here (writers already list, to collect garbage), but it stays bounded:
    commit records in the blocks of 1000 numbers at and after ``state.seq + 1`` (a longer run
    of missing records than ``PROBE_PAST``), and the data objects made for ``state.seq + 2``
    (the tail's records deleted, their objects left). Evidence found is confirmed by GETting
    record ``state.seq + 1``: a writer that raced this run created it, and then this run's
    create simply conflicts.

    Raises:
        CorruptionError: record ``state.seq + 1`` is missing while later commits' records or
            objects exist.
    """
    nxt = state.seq + 1
    commits = commit_key(state.broker, 0)[: -len("00000000000000000000.json")]
    later: list[str] = []
    for block in sorted({f"{nxt:020d}"[:17], f"{nxt + 1000:020d}"[:17]}):
        later += [
            i.key
            for i in cold.list(commits + block)
            if i.key.endswith(".json") and i.key > commit_key(state.broker, nxt)
        ]
    if later and not cold.exists(commit_key(state.broker, nxt)):
        raise _hole(state.broker, nxt, f"{later[0]} exists")
    objects = cold.list(f"{data_prefix(state.broker)}{nxt + 1:020d}/")
    if objects and not cold.exists(commit_key(state.broker, nxt)):
        raise _hole(state.broker, nxt, f"{objects[0].key}, an object of commit {nxt + 1}, exists")
    state.history_checked = True


def check_contiguous(
    state: CatalogState, added: Iterable[Segment], removed: Iterable[Segment] = ()
) -> None:
    """Refuse a change that would leave a gap or overlap in a queue's committed offsets.

    Segments may be added at a queue's end (tiering), removed from its start (expiry), or a run
    of them replaced by segments holding the same offsets (compaction); a queue's end never
    moves back.
    """
    adds: dict[QueueKey, list[Segment]] = {}
    drops: dict[QueueKey, set[tuple[str, int]]] = {}
    for seg in added:
        adds.setdefault((seg.topic, seg.queue), []).append(seg)
    for seg in removed:
        drops.setdefault((seg.topic, seg.queue), set()).add((seg.object, seg.first))
    for key in sorted({*adds, *drops}):  # grouped first: a change of n queues costs O(n)
        before = state.queues.get(key, [])
        gone = drops.get(key, set())
        if not gone:
            _check_appended(state, key, before, adds[key])
            continue
        if len(gone) != sum(1 for s in before if (s.object, s.first) in gone):
            raise CorruptionError(f"{key[0]}/{key[1]}: removes a segment it does not have")
        after = [s for s in before if (s.object, s.first) not in gone]
        after += adds.get(key, [])
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


def _check_appended(
    state: CatalogState, key: QueueKey, before: list[Segment], new: list[Segment]
) -> None:
    """``new`` segments go after the queue's last one (or its floor): no gap, no overlap.
    Only the queue's end is looked at, so a load costs the same however long its history."""
    expected = before[-1].end if before else state.next_offset(key)
    first_new = min(s.first for s in new)
    if before and first_new < before[-1].end:
        # not an append: inserted among the committed segments (compaction adds the same
        # offsets it removes, so a segment here without a removal overlaps)
        raise CorruptionError(
            f"{key[0]}/{key[1]}: segment starts at {first_new}, but the committed offsets "
            f"end at {expected}"
        )
    for seg in sorted(new, key=lambda s: s.first):
        if expected is not None and seg.first != expected:
            raise CorruptionError(
                f"{seg.topic}/{seg.queue}: segment starts at {seg.first}, "
                f"but the committed offsets end at {expected}"
            )
        expected = seg.end


def check_index_change(
    state: CatalogState,
    added: Iterable[Segment],
    removed: Iterable[Segment],
    index_added: Iterable[IndexEntry],
    index_removed: Iterable[str],
) -> None:
    """Refuse a change that would leave a committed message out of the index.

    Index objects are added with the segments they index (tiering: every added segment's
    offsets must be covered by the index objects of the same commit), or in place of index
    objects they merge (whatever the merged ones covered that is still committed must be
    covered by the new ones). No index object may cover offsets past its queue's end.
    """
    index_added, index_removed = list(index_added), list(index_removed)
    for obj in index_removed:
        if obj not in state.indexes:
            raise CorruptionError(f"removes an index object {obj} it does not have")
    if not index_added and not index_removed:
        return
    added_by_queue: dict[QueueKey, list[Segment]] = {}
    for seg in added:
        added_by_queue.setdefault((seg.topic, seg.queue), []).append(seg)
    gone = {(s.object, s.topic, s.queue, s.first) for s in removed}
    new_covers = ranges_by_queue(index_added)
    old_covers = [c for obj in index_removed for c in state.indexes[obj].covers]
    # Only the queues the change touches are looked at: a record's check stays small however
    # many queues the tier holds (a load checks every record it reads).
    touched = {*added_by_queue, *new_covers, *((t, q) for t, q, _a, _b in old_covers)}
    live: dict[QueueKey, tuple[int, int]] = {}
    gone_queues = {(t, q) for _o, t, q, _f in gone}
    for key in touched:
        segs = state.queues.get(key, [])
        if key in gone_queues:
            segs = [s for s in segs if (s.object, s.topic, s.queue, s.first) not in gone]
        else:
            segs = segs[:1] + segs[-1:]  # in offset order: the ends are the range
        segs = segs + added_by_queue.get(key, [])
        if segs:
            live[key] = (min(s.first for s in segs), max(s.end for s in segs))
    for (t, q), ranges in new_covers.items():
        end = max(b for _a, b in ranges)
        if end > live.get((t, q), (0, 0))[1] and end > state.floors.get((t, q), 0):
            raise CorruptionError(f"{t}/{q}: an index object covers offsets up to {end - 1}, past "
                                  "the committed ones")  # fmt: skip
    if not index_removed:
        for key, segs in added_by_queue.items():
            for seg in segs:
                _require_covered(new_covers, key, seg.first, seg.end, "tiered")
        return
    for t, q, a, b in old_covers:
        lo, hi = live.get((t, q), (b, b))
        if max(a, lo) < min(b, hi):
            _require_covered(new_covers, (t, q), max(a, lo), min(b, hi), "indexed")


def ranges_by_queue(entries: Iterable[IndexEntry]) -> dict[QueueKey, list[tuple[int, int]]]:
    """The union of the entries' covers, per queue: sorted, disjoint offset ranges."""
    out: dict[QueueKey, list[tuple[int, int]]] = {}
    for t, q, a, b in merge_covers([c for e in entries for c in e.covers]):
        out.setdefault((t, q), []).append((a, b))
    return out


def _require_covered(
    covers: dict[QueueKey, list[tuple[int, int]]], key: QueueKey, a: int, b: int, what: str
) -> None:
    if not any(ca <= a and b <= cb for ca, cb in covers.get(key, [])):
        raise CorruptionError(
            f"{key[0]}/{key[1]}: offsets {a}..{b - 1} are {what} but no index object of the "
            "commit covers them"
        )


def commit(
    cold: ColdStore,
    state: CatalogState,
    *,
    added: list[Segment],
    removed: list[Segment] | None = None,
    index_added: list[IndexEntry] | None = None,
    index_removed: list[str] | None = None,
    run_id: str,
    operation: str | None = None,
    snapshot_every: int = SNAPSHOT_EVERY,
    warnings: list[str] | None = None,
) -> int:
    """Create commit record ``state.seq + 1``; on success apply it to ``state``.

    ``operation`` names the work (``dispatch``, ``compact``, ``expire``); by default it is
    told from the change: only added is a dispatch, only removed an expiry, both compaction.
    The record also says what the work cost since the state was loaded or last committed:
    ``seconds`` and, on a metered store, ``requests`` (this create included).

    Then, when the tail of commit records after the newest snapshot has grown to
    ``snapshot_every``, write a new snapshot. A snapshot only shortens what readers load, so
    one that fails does not fail the commit, which is durable by then: it is logged, noted in
    ``warnings`` (when given), and tried again by the next commit.

    Raises:
        CommitConflictError: another job created that record first; nothing was committed.
    """
    check_contiguous(state, added, removed or ())
    check_index_change(state, added, removed or (), index_added or (), index_removed or ())
    if not state.history_checked:  # the writers call it before uploading; this is the backstop
        check_history(cold, state)
    seq = state.seq + 1
    record = {
        "format": "mqtier-commit",
        "version": CATALOG_VERSION,
        "seq": seq,
        "run_id": run_id,
        "time_ms": int(time.time() * 1000),
        "host": os.uname().nodename,
        "operation": operation or operation_of(added, removed or []),
        **_work_since(cold, state),
        # the previous record's checksum: a hash chain from record to record
        **({"prev": state.head_sha} if state.head_sha is not None else {}),
        "added": [s.to_json() for s in added],
        "removed": [
            {
                "object": s.object,
                "topic": s.topic,
                "queue": s.queue,
                "first": s.first,
                **{name: getattr(s, name) for name in _REMOVED_EXTRAS},
            }
            for s in removed or []
        ],
        # only when there are any: a record without them reads as it did before the index
        **({"index_added": [e.to_json() for e in index_added]} if index_added else {}),
        **({"index_removed": list(index_removed)} if index_removed else {}),
    }
    key = commit_key(state.broker, seq)
    sealed = _sealed(record)
    if not cold.create(key, sealed):
        raise CommitConflictError(
            f"{cold.url}/{key}: another tiering job created this commit first; what this run "
            "uploaded since its last commit stays uncommitted (a later run deletes it)"
        )
    state.apply(record)
    state.head_sha = orjson.loads(sealed)[CHECKSUM_FIELD]
    state.shas[seq] = state.head_sha
    state.work_since, state.bill_since = time.monotonic(), _bill_totals(cold)
    try:
        if seq - state.snapshot_seq >= snapshot_every:
            write_snapshot(cold, state)
        else:
            write_latest(cold, state)
    except (ColdStoreError, OSError) as exc:
        # Readers still find the latest state: every commit record is kept, and they read
        # the tail after whichever snapshot LATEST names (a lagging LATEST only costs reads).
        msg = (
            f"commit {seq} is durable, but its catalog snapshot or LATEST pointer failed "
            f"(retried by the next commit): {exc}"
        )
        log.warning("%s", msg)
        if warnings is not None:
            warnings.append(msg)
    return seq


def operation_of(added: Sized, removed: Sized) -> str:
    """What the three writers do: dispatch only adds, expire only removes, compact swaps.

    Also how ``mqtier log`` names the operation of a record older than its ``operation``.
    """
    if added and removed:
        return "compact"
    return "expire" if removed else "dispatch"


def _work_since(cold: ColdStore, state: CatalogState) -> dict[str, Any]:
    """``seconds`` and ``requests`` of the work since ``state`` was loaded or last committed."""
    out: dict[str, Any] = {}
    if state.work_since is not None:
        out["seconds"] = round(time.monotonic() - state.work_since, 3)
    now = _bill_totals(cold)
    if now is not None and state.bill_since is not None:
        sent = [a - b for a, b in zip(now, state.bill_since, strict=True)]
        sent[0] += 1  # the create of this record, about to be sent (its bytes not counted)
        out["requests"] = dict(zip(_COST_FIELDS, sent, strict=True))
    return out


def write_snapshot(cold: ColdStore, state: CatalogState) -> None:
    """Write the state as snapshot ``state.seq``, then ``LATEST`` naming it."""
    data = zstandard.ZstdCompressor(level=3).compress(_sealed(state.to_snapshot()))
    cold.put(snapshot_key(state.broker, state.seq), data)
    state.snapshot_seq, state.snapshot_bytes = state.seq, len(data)
    write_latest(cold, state)


def write_latest(cold: ColdStore, state: CatalogState) -> None:
    """Overwrite ``LATEST``: the newest snapshot (with its size, which tells a half-written
    snapshot, a lost hint, from a damaged one) and the newest record with its checksum."""
    pointer: dict[str, Any] = {"version": CATALOG_VERSION, "snapshot_seq": state.snapshot_seq}
    if state.snapshot_bytes is not None:
        pointer["snapshot_bytes"] = state.snapshot_bytes
    if state.head_sha is not None:
        pointer.update(head_seq=state.seq, head_sha256=state.head_sha)
    cold.put(latest_key(state.broker), _sealed(pointer))
