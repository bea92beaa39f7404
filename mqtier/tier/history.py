"""The cold tier's recent commits, newest first, read without replaying the history.

``mqtier log`` lists what the last runs did. It reads what a catalog load reads to find the
newest commit (``LATEST``, then the commit records after the snapshot it names, until one is
missing, then the ``PROBE_PAST`` records after that one), then older records one by one, down
to the limit. A ``--limit 5`` of a long history thus costs about 5 GETs plus the tail after the
newest snapshot (at most ``SNAPSHOT_EVERY`` records while snapshots succeed), never a replay.
When ``LATEST`` is unusable, one LIST of the commit records finds the newest instead.

Each record is checked on its own (:func:`read_commit_record`); a damaged or missing one is
listed as such, with the message a load would give, and the listing goes on past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mqtier.backend.base import ColdStore
from mqtier.errors import ColdObjectNotFoundError, CorruptionError
from mqtier.tier.catalog import (
    _LATEST_FIELDS,
    _check_sealed,
    _decode,
    _probe_past,
    check_broker,
    commit_key,
    latest_key,
    read_commit_record,
)


@dataclass
class CommitEntry:
    """One commit record as read: its checked contents, or why it could not be read."""

    seq: int
    record: dict[str, Any] | None = None
    damage: str | None = None  # the CorruptionError's message: damaged, or missing (a hole)


@dataclass
class History:
    broker: str
    newest: int = 0  # the newest commit seq found (0: no commit)
    entries: list[CommitEntry] = field(default_factory=list)  # newest first
    more: bool = False  # older commits exist that the limit (or since) left out
    warnings: list[str] = field(default_factory=list)  # lost hints, said and worked around
    latest_damage: str | None = None  # LATEST fails its checksum (the listing came from a LIST)

    @property
    def damage(self) -> list[str]:
        """What is damaged, as a load would say it: LATEST, then the listed records."""
        shown = [e.damage for e in self.entries if e.damage is not None]
        return ([self.latest_damage] if self.latest_damage else []) + shown


def recent_commits(
    cold: ColdStore, broker: str, *, limit: int | None = None, since_ms: int | None = None
) -> History:
    """The newest ``limit`` commits of ``broker`` (all with None), newest first.

    With ``since_ms``, only commits made at or after it: the walk back stops at the first
    intact record older than that (records are created in order). Damage is reported in the
    result (``History.damage``), never raised: a listing shows what it can read.
    """
    check_broker(broker)
    history = History(broker)
    found: dict[int, CommitEntry] = {}
    try:
        snap = _latest_seq(cold, broker, history)
    except CorruptionError as exc:
        history.latest_damage, snap = str(exc), None
    if snap is None:
        history.newest = _newest_listed(cold, broker)
    else:
        history.newest = _walk_tail(cold, broker, snap, found)
    for seq in range(history.newest, 0, -1):
        if limit is not None and len(history.entries) >= limit:
            history.more = True  # records are never deleted: commit `seq` exists
            break
        entry = found.get(seq) or _older(cold, broker, seq, history.newest)
        rec = entry.record
        if since_ms is not None and rec is not None and rec["time_ms"] < since_ms:
            history.more = True
            break
        history.entries.append(entry)
    return history


def _latest_seq(cold: ColdStore, broker: str, history: History) -> int | None:
    """The snapshot seq ``LATEST`` names (0 without one); None when it is unreadable.

    Raises:
        CorruptionError: ``LATEST`` parses but fails its checksum (damage, as for a load).
    """
    key = latest_key(broker)
    try:
        raw = cold.get(key)
    except ColdObjectNotFoundError:
        return 0
    try:
        pointer = _decode(raw, key, "LATEST pointer")
        seq = pointer["snapshot_seq"]
        if type(seq) is not int or seq < 0:
            raise ValueError(f"snapshot_seq is {seq!r}")
    except (CorruptionError, KeyError, TypeError, ValueError) as exc:
        # A half-written put: only a hint is lost (as for a load), so list instead.
        history.warnings.append(f"{key}: unreadable ({exc}); listing the commit records")
        return None
    try:
        _check_sealed(pointer, key, "LATEST pointer", _LATEST_FIELDS)
    except CorruptionError as exc:
        raise CorruptionError(
            f"{exc}; try: delete {key}: it is only a hint, and readers then rebuild the state "
            "from the commit records"
        ) from None
    return seq


def _newest_listed(cold: ColdStore, broker: str) -> int:
    """The newest commit seq by one LIST of the commit records (0 when there is none)."""
    prefix = commit_key(broker, 0)[: -len("00000000000000000000.json")]
    seqs = [
        int(name[:-5])
        for info in cold.list(prefix)
        if (name := info.key[len(prefix) :]).endswith(".json")
        and len(name) == 25
        and name[:20].isdigit()
    ]
    return max(seqs, default=0)


def _walk_tail(cold: ColdStore, broker: str, snap: int, found: dict[int, CommitEntry]) -> int:
    """Read the records after snapshot ``snap`` as a load does; the newest seq found.

    A missing record followed by a later one (a hole) is kept as a damaged entry, and the walk
    goes on past it, so the commits the hole would hide are listed too.
    """
    seq, newest = snap + 1, snap
    while True:
        key = commit_key(broker, seq)
        try:
            data = cold.get(key)
        except ColdObjectNotFoundError:
            try:
                _probes, landed = _probe_past(cold, broker, seq)
            except CorruptionError as exc:
                found[seq] = CommitEntry(seq, damage=str(exc))
                seq += 1
                continue
            if landed:
                continue  # a writer committed it meanwhile: read it
            return newest
        found[seq] = _entry(data, key, broker, seq)
        newest = seq
        seq += 1


def _older(cold: ColdStore, broker: str, seq: int, newest: int) -> CommitEntry:
    """Commit ``seq``, older than those the tail walk read: one GET."""
    key = commit_key(broker, seq)
    try:
        return _entry(cold.get(key), key, broker, seq)
    except ColdObjectNotFoundError:
        # Only the newest can be ``seq`` itself: when LATEST names a snapshot of a lost record
        evidence = f"commit {newest} exists" if seq < newest else "LATEST names its snapshot"
        return CommitEntry(
            seq,
            damage=f"{key}: commit record {seq} is missing but {evidence}: the catalog has a "
            "hole (records are never deleted); try: restore it from a backup or replica of "
            "the cold tier",
        )


def _entry(data: bytes, key: str, broker: str, seq: int) -> CommitEntry:
    try:
        return CommitEntry(seq, record=read_commit_record(data, key, broker, seq))
    except CorruptionError as exc:
        return CommitEntry(seq, damage=str(exc))
