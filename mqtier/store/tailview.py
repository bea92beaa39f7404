"""A read-only open's view past what the store's owner dispatched: the consume-queue units and
index keys of durable records the queues do not hold yet, kept in memory (a read-only open
writes nothing), and :meth:`refresh` to extend the view as the owner appends."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, Literal

from mqtier.errors import CorruptRecordError, ReadOnlyStoreError
from mqtier.format import layout as L
from mqtier.format.javahash import tags_code
from mqtier.format.message import check_record_header, dispatch_fields, record_queue
from mqtier.store.consumequeue import ConsumeQueue
from mqtier.store.state import StoreState, queue_dir_name

log = logging.getLogger("mqtier.store.store")

# Most records a read-only open dispatches in memory (those durable past the consume queues).
MEMORY_TAIL_MAX: Final = 2_000_000


@dataclass(slots=True)
class _Tally:
    """What the read-only tail has done so far."""

    index_end: int  # where the IndexFiles on disk end: records past it have their keys kept
    kept: int = 0
    missing: int = 0
    read: int = 0


class ReadOnlyTail(StoreState):
    """The in-memory tail of a read-only view (mixed into Store)."""

    def _reput_tail_in_memory(self, start: int, end: int) -> tuple[int, int]:
        """What a read-only open cannot write: the consume-queue units and index keys of the
        records durable past what the owner dispatched, kept in memory so that reads, queries
        and offsets see every durable message (at most MEMORY_TAIL_MAX records kept).

        Returns how many records it found missing from the consume queues or the index, and
        how many it read."""
        for loaded in self._cqs.values():
            # The owner may have dispatched (and checkpointed) since the queues were loaded:
            # pick up those units, or the tail would start past a gap.
            loaded.reload_end()
        tally = _Tally(self.index.end_phy if self.index.files else 0)
        # A long tail (a crashed broker's last file) comes in windows checked as arrays: the
        # records plainly in their queue and IndexFile are passed over a window at a time.
        windows = self.commitlog.scan_windows(start, verify_crc=False, end=end, arrays=None)
        try:
            for w in windows:
                there = None
                if w.fields is not None:
                    from mqtier.store.tailbatch import already_there  # numpy: long tails only

                    there = already_there(w, w.fields, self._cqs, tally.index_end).tolist()
                for i, at in enumerate(w.starts):
                    tally.read += 1
                    if there is not None and there[i]:
                        continue
                    if not self._tail_record(w.buf, at, w.origin + at, w.sizes[i], tally):
                        return tally.missing, tally.read
        finally:
            windows.close()
        return tally.missing, tally.read

    def _tail_record(self, mm: Any, pos: int, phy: int, size: int, tally: _Tally) -> bool:
        """The read-only tail's work for one record; False when the tail ends at it."""
        index_end = tally.index_end
        topic, qid, qoff = record_queue(mm, pos)
        cq = self._cqs.get((topic, qid))
        queued = cq is not None and qoff < cq.max_offset
        if queued and cq is not None and _torn(cq, qoff, phy, size, mm, pos):
            cq.hide_torn(qoff)  # a unit a crash tore: the view takes the log's instead
            queued = False
        if queued and phy < index_end:
            return True  # in the queue and the index on disk already: nothing to add
        damage = self._tail_record_damage(mm, pos, phy, topic, qid, qoff, cq, queued)
        if damage is not None:
            # No CRC covers the header: a record whose header fails would make a phantom
            # queue or hide a queue's later records. Show nothing from here on, and say so.
            self.tail_damage = damage
            return False
        _, _, _, sysflag, _, _, props = dispatch_fields(mm, pos)
        tx = sysflag & L.SYSFLAG_TRANSACTION_MASK
        added = False
        if tx in (0, L.SYSFLAG_TRANSACTION_COMMIT) and not queued:
            if cq is None:
                if not queue_dir_name(topic):
                    return True  # not a name a queue directory can have: never dispatched
                cq = self._cqs[(topic, qid)] = self._read_only_queue(topic, qid)
            added = cq.add_in_memory(qoff, phy, size, tags_code(props.get(L.PROP_TAGS)))
        if tx != L.SYSFLAG_TRANSACTION_ROLLBACK and phy >= index_end:
            keys = {k for k in props.get(L.PROP_KEYS, "").split(" ") if k}
            uniq = props.get(L.PROP_UNIQ_KEY)
            if uniq:
                keys.add(uniq)
            for k in keys:
                self._memory_keys.setdefault(f"{topic}#{k}", []).append(phy)
            added = added or bool(keys)
        tally.kept += added
        # The record at the index's end is indexed again by design (IndexService.put): its
        # keys were kept, yet it is no more missing than the records before it.
        tally.missing += added and not (queued and phy == index_end and bool(self.index.files))
        if tally.kept >= MEMORY_TAIL_MAX:
            log.warning(
                "%s: over %d records are durable but not dispatched; a read-only open "
                "shows those before commit-log offset %d",
                self.root, MEMORY_TAIL_MAX, phy + size,
            )  # fmt: skip
            return False
        return True

    def _tail_record_damage(
        self,
        mm: Any,
        pos: int,
        phy: int,
        topic: str,
        qid: int,
        qoff: int,
        cq: ConsumeQueue | None,
        queued: bool,
    ) -> CorruptRecordError | None:
        """Why a record of the read-only tail cannot be shown, if it cannot."""
        detail = None
        try:
            check_record_header(mm, pos, expect_phy=phy)
        except CorruptRecordError as exc:
            detail = exc.detail
        if detail is None and cq is not None and not queued and qoff != cq.max_offset:
            detail = (
                f"header field QUEUEOFFSET: expected {cq.max_offset} (the next offset of "
                f"{topic}/{qid}), found {qoff}"
            )
        if (
            detail is None
            and cq is None
            and qoff > 0
            and self._queues_on_disk
            and (topic, qid) not in self._lost
        ):
            # A queue first seen here would start at 0: one whose head was cleaned keeps its
            # directory. So a damaged TOPIC or QUEUEID (a phantom queue) is caught here.
            detail = (
                f"header fields TOPIC/QUEUEID/QUEUEOFFSET: {topic}/{qid} has no consume "
                f"queue, yet this record would be its offset {qoff} (a new queue starts at 0)"
            )
        if detail is None:
            return None
        return CorruptRecordError(self.commitlog.file_for(phy).path, phy, detail)

    def refresh(self) -> Literal["same", "grew", "stale"]:
        """Read-only: extend this view by the records the store's owner made durable since.

        Cheap when nothing is new (a listing of ``commitlog/`` and a look at the view's end),
        so a follower (``read --follow``) can poll it; the queues the new records belong to
        grow by their units, from the owner's consume-queue files or, until the owner writes
        them, from memory. It writes nothing. It never extends into the records of an
        unfinished ingest (they may still roll back) nor past a damaged record, and new
        records' keys are not added to key queries.

        Returns "grew" when the view's end moved, "same" when nothing new is durable, and
        "stale" when this view cannot be extended (records it shows may have been rolled
        back, or a file it reads was replaced): then open the store again.
        """
        if not self.read_only:
            raise ReadOnlyStoreError("refresh is for read-only views; a writer sees its own")
        cl = self.commitlog
        old = cl.durable_end
        fence = self.unfinished_ingest_from
        # The open may have shown the records of an ingest that was running: once its fence
        # moves, they were either made final or rolled back, and only a new open can tell.
        if any(f is not None and f < old for f in self._view_fences) and (
            len(self._view_fences) > 1 or fence not in self._view_fences
        ):
            return "stale"
        if not cl.refresh_files(old):
            return "stale"
        if self.tail_damage is not None:
            return "same"  # the view ends before a damaged record; reads past it would fail
        end = cl.find_end(old, verify_crc=True).offset
        if fence is not None:
            end = min(end, max(fence, old))
        if end <= old:
            return "same"
        cl.set_end(end)
        self._extend_queues(old, end)
        return "grew" if cl.durable_end > old else "same"

    def _extend_queues(self, start: int, end: int) -> None:
        """The queue units of the records in ``[start, end)``, for :meth:`refresh`."""
        looked: set[tuple[str, int]] = set()  # queues whose files were looked at this time
        records = self.commitlog.scan(start, verify_crc=False, end=end)
        for phy, size, mm, pos in records:
            topic, qid, qoff = record_queue(mm, pos)
            key = (topic, qid)
            cq = self._cqs.get(key)
            if key not in looked:
                looked.add(key)
                new = cq is None
                # A queue the owner created since: load its files (the name is checked first,
                # as it comes from a record's header and becomes a path).
                if new and queue_dir_name(topic) and self._queue_dir(topic, qid).is_dir():
                    cq = self._cqs[key] = self._read_only_queue(topic, qid)
                if cq is not None:
                    cq.refresh_view(end, new=new)
            queued = cq is not None and qoff < cq.max_offset
            if queued and cq is not None and _torn(cq, qoff, phy, size, mm, pos):
                cq.hide_torn(qoff)  # the owner may be copying it now: take the log's
                queued = False
            if queued:
                continue  # the owner has written its unit
            damage = self._tail_record_damage(mm, pos, phy, topic, qid, qoff, cq, queued)
            if damage is not None:
                self.tail_damage = damage
                records.close()
                self.commitlog.set_end(phy)
                for q in self._cqs.values():
                    q.hide_past_phy(phy)
                return
            _, _, _, sysflag, _, _, props = dispatch_fields(mm, pos)
            if sysflag & L.SYSFLAG_TRANSACTION_MASK not in (0, L.SYSFLAG_TRANSACTION_COMMIT):
                continue  # prepared or rolled back: no queue unit
            if cq is None:
                if not queue_dir_name(topic):
                    continue  # not a name a queue directory can have: never dispatched
                cq = self._cqs[key] = self._read_only_queue(topic, qid)
            cq.add_in_memory(qoff, phy, size, tags_code(props.get(L.PROP_TAGS)))


def _torn(cq: ConsumeQueue, qoff: int, phy: int, size: int, buf: Any, pos: int) -> bool:
    """Whether ``cq``'s unit for the record at ``phy`` (queue offset ``qoff``) says otherwise:
    a unit the reput was copying when it died (or is copying now). Only a record the reput
    puts in a queue has one: a prepared or rolled-back transaction's record carries a queue
    offset (0, from RocketMQ) that is another record's."""
    tx = L.INT32.unpack_from(buf, pos + L.POS_SYSFLAG)[0] & L.SYSFLAG_TRANSACTION_MASK
    if tx not in (0, L.SYSFLAG_TRANSACTION_COMMIT):
        return False
    return qoff >= cq.first_offset and cq.unit(qoff)[:2] != (phy, size)
