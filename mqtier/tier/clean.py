"""Free hot-store space: delete commit-log files whose every message is committed cold.

A commit-log file goes only when (1) every message in it belongs to a queue offset the cold tier
has committed, and (2) its newest message is older than ``keep``. The active (last) file always
stays. Consume-queue and index files that then point only below the new minimum go too.

(1) is decided with one number: the smallest commit-log offset of any queue's first message that
is *not* committed cold (``safe_below``). A queue's messages sit in the commit log in queue
order, so everything below that offset is committed, whichever queue it belongs to. Records
the hot reput has not yet put in a consume queue belong to no queue yet, so the number
starts from the dispatched end, not the durable end. And the cold tier must hold *this*
store's messages (the history check dispatch makes): another store tiering under the same
broker name would otherwise make this store's untiered messages look committed.

A commit record is only a promise that the objects it names were uploaded. Before the last hot
copy of a record goes, every committed object holding records of the files to delete must
still be in the tier, at least as long as its segments say (one ``size`` request per object):
an object deleted or cut short by hand, a lifecycle rule or a bad restore would otherwise take
the messages with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mqtier.backend.base import ColdStore
from mqtier.errors import ColdObjectNotFoundError, CorruptionError
from mqtier.format import layout as L
from mqtier.format.coldobject import TRAILER
from mqtier.store.store import Store
from mqtier.tier.catalog import CatalogState
from mqtier.tier.dispatch import check_store_history


@dataclass
class CleanReport:
    safe_below: int
    keep_ms: int
    files: list[dict[str, Any]] = field(default_factory=list)  # commit-log files deleted
    derived_files: int = 0
    freed_bytes: int = 0
    dry_run: bool = False
    blocked_by: str | None = None  # why the oldest file had to stay

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "safe_below": self.safe_below,
            "keep_seconds": round(self.keep_ms / 1000, 3),  # durations: seconds, to the ms
            "commitlog_files": self.files,
            "derived_files": self.derived_files,
            "freed_bytes": self.freed_bytes,
            "kept_because": self.blocked_by,
        }


def safe_below(store: Store, state: CatalogState) -> int:
    """Commit-log offset below which every message is committed in the cold tier.

    Raises:
        ColdHistoryMismatchError: the cold tier holds another store's messages for a queue.
    """
    check_store_history(store, state)
    safe = store.dispatched_end
    for qo in store.offsets():
        key = (qo.topic, qo.queue_id)
        cold_next = state.next_offset(key)
        cq = store.consume_queue(qo.topic, qo.queue_id)
        assert cq is not None
        first_uncommitted = qo.min_offset if cold_next is None else max(cold_next, qo.min_offset)
        if first_uncommitted >= qo.max_offset:
            continue
        safe = min(safe, cq.unit(first_uncommitted)[0])
    return safe


def _newest_store_ts(store: Store, base: int) -> int:
    newest = 0
    end = base + store.commitlog.file_bytes
    for _off, _size, mm, pos in store.commitlog.scan(base, verify_crc=False, end=end):
        if _off >= end:
            break
        sysflag = L.INT32.unpack_from(mm, pos + L.POS_SYSFLAG)[0]
        born_len = 20 if sysflag & L.SYSFLAG_BORNHOST_V6 else 8
        newest = max(newest, L.INT64.unpack_from(mm, pos + 48 + born_len)[0])
    return newest


def check_objects(cold: ColdStore, state: CatalogState, below: int) -> None:
    """Refuse unless every committed object holding a record below ``below`` is in the tier.

    Raises:
        CorruptionError: an object is missing or shorter than its segments (exit 4, naming it).
    """
    least: dict[str, int] = {}  # object -> the size its segments need (up to the trailer)
    for segs in state.queues.values():
        for seg in segs:
            if seg.cl_min < below:
                need = seg.index_pos + seg.index_len + TRAILER.size
                least[seg.object] = max(least.get(seg.object, 0), need)
    for key, need in sorted(least.items()):
        try:
            size = cold.size(key)
        except ColdObjectNotFoundError:
            size = None
        if size is None or size < need:
            what = "is missing" if size is None else f"is {size} bytes, its segments need {need}"
            raise CorruptionError(
                f"{cold.url}/{key}: committed object {what}; clean deletes nothing, as its "
                "messages may have no other copy than the hot store's (restore the object, or "
                "re-tier them to a repaired cold tier)"
            )


def clean(
    store: Store,
    state: CatalogState,
    *,
    keep_ms: int,
    dry_run: bool = False,
    cold: ColdStore | None = None,
) -> CleanReport:
    """Delete the commit-log files (and derived files) that ``state`` has committed cold.

    With ``cold`` (the tier ``state`` was loaded from; the CLI always passes it), the objects
    holding the records to delete are checked to be there first (:func:`check_objects`).

    Raises:
        CorruptionError: a committed object the deletion relies on is missing or cut short.
    """
    cl = store.commitlog
    report = CleanReport(safe_below(store, state), keep_ms, dry_run=dry_run)
    cutoff = int(time.time() * 1000) - keep_ms
    drop_below = cl.min_offset
    for f in cl.files[:-1]:
        end = f.base + cl.file_bytes
        if end > cl.durable_end:
            report.blocked_by = f"{f.path.name} is the file being written"
            break
        if end > report.safe_below:
            report.blocked_by = f"{f.path.name} holds messages not yet committed cold"
            break
        newest = _newest_store_ts(store, f.base)
        if newest > cutoff:
            report.blocked_by = f"{f.path.name} holds messages newer than --keep"
            break
        report.files.append({"file": f.path.name, "base": f.base, "newest_store_time": newest})
        report.freed_bytes += cl.file_bytes
        drop_below = end
    if drop_below <= cl.min_offset:
        return report
    if cold is not None:
        check_objects(cold, state, drop_below)
    if dry_run:
        return report
    _, derived = store.drop_files_below(drop_below)
    report.derived_files = len(derived)
    return report
