"""Recovery: find the end of valid data, cut the torn tail, rebuild derived files.

Runs on every open. After a clean shutdown it only confirms where the data ends. After a crash
(``abort`` left behind) it scans the commit log from the dispatch checkpoint with size, magic and
CRC checks, truncates the torn tail (bytes of a batch that was never acknowledged), drops
consume-queue units and index files that reach past what is valid or was not yet checkpointed,
and replays the commit log into them. With ``dry_run`` (or a read-only store) it changes nothing
and reports what it would do.

The checkpoint is trusted only after a spot check: the last record each consume queue holds below
it, and the last byte before it, must be intact. A disk that acknowledged an fdatasync it did not
keep, or a store copied while it was written, can hold a checkpoint newer than its log; then the
scan starts at the beginning of the commit-log file holding the damage (further back while even
that file's first record is lost), as RocketMQ's abnormal recovery does.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqtier.errors import CorruptRecordError, NotFoundError
from mqtier.format import layout as L
from mqtier.format.checkpoint import Checkpoint
from mqtier.format.message import (
    check_record,
    check_record_header,
    dispatch_fields,
    record_queue,
)
from mqtier.store.lock import is_locked_elsewhere

if TYPE_CHECKING:
    from mqtier.store.consumequeue import ConsumeQueue, UnitCheck
    from mqtier.store.store import Store

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What recovery found and did (or, in a dry run, would do)."""

    clean_shutdown: bool
    dry_run: bool
    scan_from: int = 0
    end_offset: int = 0
    torn_bytes_at: int | None = None  # where an invalid record stopped the scan
    torn_reason: str | None = None
    files_removed: list[str] = field(default_factory=list)
    cq_units_dropped: int = 0
    index_files_dropped: list[str] = field(default_factory=list)
    redispatch_from: int = 0
    messages_redispatched: int = 0
    ingest_rolled_back_from: int | None = None  # an unfinished ingest's records began here
    ingest_bytes_dropped: int = 0
    seconds: float = 0.0
    # The replay as the scan went covered the whole log (nothing derived was on disk): a
    # rebuild asked for is done. (Not in --json: the rebuild's own report says it.)
    replayed_whole_log: bool = False

    @property
    def changed(self) -> bool:
        return bool(
            self.torn_bytes_at is not None
            or self.files_removed
            or self.cq_units_dropped
            or self.index_files_dropped
            or self.messages_redispatched
            or self.ingest_rolled_back_from is not None
        )

    def to_json(self) -> dict[str, Any]:
        # "torn_at", the name offsets' health gives the same offset (docs/cli-json.md, v2)
        doc = {("torn_at" if k == "torn_bytes_at" else k): v for k, v in asdict(self).items()}
        del doc["replayed_whole_log"]
        doc["seconds"] = round(self.seconds, 3)  # durations: seconds, to the millisecond
        doc["changed"] = self.changed
        return doc


def _unfinished_ingest(store: Store, abnormal: bool) -> int | None:
    """Where the records of an ingest that died unfinished begin, if one did.

    Its fence (``mqtier.ingest``) outlived it only if the process died: a finished ingest
    lifts it, a failed one rolls back and then lifts it. A fence beside a live owner is a
    running ingest, which may still finish: a read-only open leaves its records alone.
    """
    fence = store.unfinished_ingest_from
    if fence is None or not abnormal:
        return None
    if store.read_only and is_locked_elsewhere(store.root):
        return None
    return max(fence, store.commitlog.min_offset)


def _rocketmq_scan_start(store: Store, abnormal: bool, view: bool) -> int:
    """Where a store without mqtier's checkpoint is scanned from.

    For a read-only ``view`` (not a dry run, which plans what a writable open would do) of a
    store shut down cleanly or whose broker is still running, from what the consume queues
    cover (a broker's reput writes them in commit-log order), where their spot checks pass:
    only the records past them are read. Writable after a clean shutdown, from the last file
    that holds a record; after a crash, RocketMQ's own rule: the last file whose first record
    is no newer than the ``checkpoint`` timestamps.
    """
    cl = store.commitlog
    if not cl.files:
        return 0
    # After a crash the queues may lag by any amount, each its own (a broker flushes a quiet
    # queue's file least often), and a quiet queue has no later record for the gap check to
    # meet: only a clean shutdown, or a live broker (its page cache holds every unit it
    # dispatched), makes the queues' end a bound.
    if view and (not abnormal or is_locked_elsewhere(store.root)):
        covered = _covered_by_queues(store)
        if covered is not None:
            return covered
    if not abnormal:
        for f in reversed(cl.files):
            if os.pread(f.fd, 8, 0) != bytes(8):
                return f.base  # (the files after it are pre-allocated spares a broker made)
        return cl.files[0].base
    try:
        ckpt = Checkpoint.from_bytes((store.root / L.FILE_CHECKPOINT).read_bytes())
    except OSError:
        return cl.files[0].base
    limit = ckpt.min_timestamp
    for f in reversed(cl.files):
        records = cl.scan(f.base, verify_crc=False)
        try:
            first = next(records, None)
            if first is None:
                continue
            _, _, mm, pos = first
            store_ts = dispatch_fields(mm, pos)[4]  # read before the scan unmaps the file
        except CorruptRecordError:
            continue
        finally:
            records.close()
        if 0 < store_ts <= limit:
            return f.base
    return cl.files[0].base


def recover(
    store: Store,
    *,
    dry_run: bool,
    view: bool = False,
    replay: bool = True,
    rebuild_in_one_pass: bool = False,
) -> RecoveryReport:
    """Recover ``store`` (see the module's docstring); ``view``: for a read-only view, which
    dispatches what it finds in memory (implies ``dry_run``). ``replay=False``: a rebuild of
    every derived file follows, so the records are not dispatched here too, unless
    ``rebuild_in_one_pass`` and the scan starts at the log's first record with nothing derived
    on disk: then the replay as it scans is that rebuild (``redispatch_from`` says the log's
    first offset)."""
    dry_run = dry_run or view
    # Scans as arrays where one writes (numpy's import is worth it there); a read-only open
    # switches to them only if its scan turns out long (a crashed broker's last file).
    arrays = True if not store.read_only else None
    t0 = time.monotonic()
    cl = store.commitlog
    abnormal = (store.root / L.FILE_ABORT).exists()
    report = RecoveryReport(clean_shutdown=not abnormal, dry_run=dry_run)
    ckpt = store.read_dispatch_checkpoint()
    files_end = cl.files[-1].base + cl.file_bytes if cl.files else 0
    if ckpt is not None and not cl.min_offset <= ckpt <= files_end:
        ckpt = None  # files were removed or replaced behind our back: trust nothing
    scan_from = ckpt if ckpt is not None else _rocketmq_scan_start(store, abnormal, view)
    suspect = _damage_below(store, ckpt) if abnormal and ckpt is not None else None
    if suspect is not None:
        scan_from = cl.file_for(suspect).base
    as_scanned = None
    one_pass = replay or rebuild_in_one_pass
    if one_pass and not dry_run and _nothing_derived(store) and scan_from == cl.min_offset:
        # Nothing derived on disk (deleted, or a log copied on its own): the replay starts at
        # the log's first record, as this scan does, so each window of records is replayed
        # as soon as the scan has checked it: one pass over the log instead of two. What
        # the scan's end then cuts off is cut from the derived files below, as after a crash.
        from mqtier.store.replay import Replayer  # numpy: writable opens only

        # (Never the records of an ingest that died unfinished: the cut below drops them.)
        as_scanned = Replayer(store, below=_unfinished_ingest(store, abnormal))
    stop = cl.find_end(
        scan_from, verify_crc=True, arrays=arrays, each=as_scanned.window if as_scanned else None
    )
    if as_scanned is not None:
        store.index.flush()  # its stored headers count every item: a rewind keeps them all
    while suspect is not None and stop.offset == scan_from and scan_from > cl.min_offset:
        # Even the first record of that file is lost: the damage began in an earlier file.
        scan_from = cl.file_for(scan_from - 1).base
        stop = cl.find_end(scan_from, verify_crc=True, arrays=arrays)
    if suspect is not None and ckpt is not None and stop.offset < ckpt:
        intact = _intact_record_after(store, stop.offset)
        if intact is not None:
            # Not a lost tail: acknowledged records after the damage are intact. Cutting would
            # lose them, so the checkpoint is trusted as before and reads report the damage.
            log.warning(
                "commit-log offset %d below the dispatch checkpoint fails its checks, but an "
                "intact record follows at %d: keeping both; reading it will report it",
                stop.offset,
                intact,
            )
            scan_from = ckpt
            stop = cl.find_end(scan_from, verify_crc=True, arrays=arrays)
    report.scan_from = scan_from
    end = stop.offset
    if stop.reason == "corrupt" and stop.error is not None:
        intact = _intact_record_after(store, end)
        covered = _covered_by_queues(store) if view and intact is not None else None
        if covered is not None and covered > end:
            # A view of a crashed broker's store cannot frame past the damage, but the consume
            # queues reach past it: show what they cover (reading the damaged record reports
            # it) and the records after them, rather than refuse to look at all.
            log.warning(
                "%s: commit-log offset %d fails its checks (%s), with intact records after "
                "it; showing what the consume queues cover and reading on from offset %d",
                store.root, end, stop.error.detail, covered,
            )  # fmt: skip
            scan_from = report.scan_from = covered
            stop = cl.find_end(scan_from, verify_crc=True, arrays=arrays)
            end = stop.offset
            intact = _intact_record_after(store, end) if stop.reason == "corrupt" else None
        if stop.error is not None and intact is not None:
            # A record past this point was dispatched and is intact, so it was acknowledged:
            # this is damage in the middle of the log, not a torn tail. Truncating would lose
            # acknowledged data.
            raise CorruptRecordError(
                stop.error.path,
                stop.error.offset,
                f"{stop.error.detail}; acknowledged data follows (an intact record at offset "
                f"{intact}), so this is not a torn tail and nothing was changed",
            )
        if stop.error is not None:
            report.torn_bytes_at = end
            report.torn_reason = stop.error.detail
    fence = _unfinished_ingest(store, abnormal)
    if fence is not None and fence < end:
        # An ingest that died before it finished (kill -9, a full disk that also failed its
        # rollback). It is all or nothing and acknowledged nothing, so its records go; the
        # records before it are untouched.
        report.ingest_rolled_back_from = fence
        report.ingest_bytes_dropped = end - fence
        end = fence
    report.end_offset = end

    # Where to replay from: the checkpoint, or (without one) everything the scan covered.
    if ckpt is not None:
        redispatch = ckpt if abnormal else end
    elif as_scanned is not None:
        redispatch = as_scanned.end if as_scanned.end is not None else scan_from
    elif abnormal:
        redispatch = scan_from
    else:
        redispatch = min([end] + [cq.last_phy_end() for cq in store.consume_queues.values()])
        redispatch = max(redispatch, scan_from)
    redispatch = min(redispatch, end)

    if dry_run:
        cl.set_end(end)
        if store.read_only:  # what a repair would drop is not shown either
            queues = store.consume_queues.values()
            report.cq_units_dropped = sum(
                cq.hide_past_phy(end, unit_check(store, cq)) for cq in queues
            )
        else:
            report.cq_units_dropped = sum(
                _units_past(store, cq, end) for cq in store.consume_queues.values()
            )
        files = store.index.files
        report.index_files_dropped = [f.path.name for f in files if f.header.end_phy >= end]
        if abnormal and files:
            redispatch = min(redispatch, max(files[-1].header.end_phy, cl.min_offset))
        if ckpt is None:
            redispatch = _start_without_gaps(store, redispatch, end)
        report.redispatch_from = redispatch
        if not view:  # (a view dispatches them in memory next, and counts them then)
            report.messages_redispatched = sum(1 for _ in cl.scan(redispatch, end=end))
        report.seconds = time.monotonic() - t0
        return report

    dirty = store.config.max_batch_bytes + store.config.max_message_bytes + 64 * 1024
    dirty += report.ingest_bytes_dropped  # a rolled-back ingest wrote all of those bytes
    if abnormal or stop.reason == "corrupt":
        report.files_removed = [p.name for p in cl.truncate(end, dirty_bytes=dirty)]
    else:
        cl.set_end(end)
    for cq in store.consume_queues.values():
        report.cq_units_dropped += cq.truncate_phy(end, unit_check(store, cq))
    if abnormal or store.index.end_phy >= end:
        # After a crash the file being written cannot be trusted past its last flush: its slot
        # heads may point at items its stored header does not count. Rewind it to that header
        # (or rebuild it when an item never reached the disk); files indexing records past the
        # end of valid data go too.
        dropped: list[Path] = []
        dropped.extend(store.index.drop_after(end))
        # Whichever file ends up last takes the replay's items: rewind that one too when the
        # one after it was dropped (its stored header may be older than its slot heads).
        while abnormal and store.index.files and not store.index.files[-1].rewind_to_header():
            dropped.extend(store.index.drop_last())
        report.index_files_dropped = [p.name for p in dropped]
        if store.index.files:
            # Replay from the last indexed record: the items the stored header counts end there.
            redispatch = min(redispatch, max(store.index.end_phy, cl.min_offset))
        elif dropped:
            redispatch = cl.min_offset
    if ckpt is None:
        # Without mqtier's checkpoint nothing says the consume queues were flushed together
        # (a broker's store); with it they were, up to the checkpoint, before it was written.
        redispatch = _start_without_gaps(store, redispatch, end)
    report.redispatch_from = redispatch
    if as_scanned is not None:
        # The whole log was replayed during the scan, up to where it ends or an unfinished
        # ingest's records begin: the end of data (past its last record, at most a BLANK).
        report.redispatch_from = scan_from
        report.replayed_whole_log = True
        report.messages_redispatched = as_scanned.records
        replay = False
    if replay:
        from mqtier.store.replay import replay as replay_log  # numpy: writable opens only

        replayed = replay_log(store, redispatch, end)
        if as_scanned is None:
            report.messages_redispatched = replayed
    if report.messages_redispatched or report.cq_units_dropped or report.files_removed:
        store.index.flush()
        for cq in store.consume_queues.values():
            cq.flush()
    report.seconds = time.monotonic() - t0
    return report


def unit_check(store: Store, cq: ConsumeQueue) -> UnitCheck:
    """For :meth:`ConsumeQueue.end_within`: whether a unit that order cannot vouch for may
    stay. It goes only when it points at another record: an intact record starts at its
    commit-log offset, and its size or header (topic, queue, queue offset) is not the unit's,
    as with a unit a kill tore (its offset still zero: the log's first record). Where no intact
    record starts (zeros of a lost write, a damaged record) the unit stays, for reads to report
    the record's damage: dropping it would hand its queue offset to the next append."""
    return lambda off, phy, size: (
        not _points_at_another_record(store, phy, size, (cq.topic, cq.queue_id, off))
    )


def _points_at_another_record(
    store: Store, phy: int, size: int, unit: tuple[str, int, int]
) -> bool:
    cl = store.commitlog
    try:
        f = cl.file_for(phy)
    except NotFoundError:
        return False
    if phy - f.base + 8 > cl.file_bytes:
        return False
    own = L.INT32.unpack_from(os.pread(f.fd, 4, phy - f.base))[0]
    found = _intact_record_at(store, phy, own)
    if found is None:
        return False  # no intact record there: the record's damage, not the unit's
    return own != size or _header_disagrees(found, phy, size, unit) is not None


def _nothing_derived(store: Store) -> bool:
    """Whether the store holds no consume queue and no IndexFile at all."""
    return not store.consume_queues and not store.index.files


def _record_intact(
    store: Store,
    phy: int,
    size: int,
    unit: tuple[str, int, int] | None = None,
) -> bool:
    """Whether a whole, verified record of ``size`` bytes starts at ``phy`` (and, with
    ``unit``, its header agrees with that consume-queue unit: topic, queue, queue offset)."""
    found = _intact_record_at(store, phy, size)
    if found is None:
        return False
    if unit is None:
        return True
    exc = _header_disagrees(found, phy, size, unit)
    if exc is not None:
        # The scan checks shapes and CRCs only and would pass this record: say so here.
        log.warning("%s; reading it will report it", exc)
        return False
    return True


def _intact_record_at(store: Store, phy: int, size: int) -> tuple[bytes, Path] | None:
    """The bytes (and file) of the whole record of ``size`` bytes at ``phy`` if its shape
    and CRC pass, else None."""
    cl = store.commitlog
    try:
        f = cl.file_for(phy)
    except NotFoundError:
        return None
    pos = phy - f.base
    if size <= 0 or pos + size > cl.file_bytes:
        return None
    buf = os.pread(f.fd, size, pos)
    try:
        if check_record(buf, 0, len(buf), verify_crc=True) != size:
            return None
    except CorruptRecordError:
        return None
    return buf, f.path


def _header_disagrees(
    found: tuple[bytes, Path], phy: int, size: int, unit: tuple[str, int, int]
) -> CorruptRecordError | None:
    """Why the record's header is not that of ``unit`` (topic, queue, queue offset), if not."""
    buf, path = found
    try:
        check_record_header(
            buf, 0, expect_phy=phy, expect_size=size, expect_topic=unit[0],
            expect_queue=unit[1], expect_queue_offset=unit[2], path=str(path),
        )  # fmt: skip
    except CorruptRecordError as exc:
        return exc
    return None


def _covered_by_queues(store: Store) -> int | None:
    """End of the newest record the consume queues point to, if every queue's last record is
    intact (the spot checks that a lost or cut write would fail); else None.

    A broker dispatches records in commit-log order, so every record below that end has its
    units (a queue that lags, as after a power loss, is found by :func:`_start_without_gaps`).
    """
    cl = store.commitlog
    files_end = cl.files[-1].base + cl.file_bytes
    covered = None
    for (topic, qid), cq in store.consume_queues.items():
        last = _last_unit_within(store, cq, files_end)
        if last is None or last[1] < cl.min_offset:
            continue  # (a quiet queue's last record may lie in a file `clean` has deleted)
        qoff, phy, size = last
        if not _record_intact(store, phy, size, (topic, qid, qoff)):
            return None
        covered = max(covered or 0, phy + size)
    return covered


def _last_unit_within(store: Store, cq: ConsumeQueue, limit: int) -> tuple[int, int, int] | None:
    """(queue offset, commit-log offset, size) of the last record ``cq`` points to that ends
    at or below commit-log offset ``limit``."""
    off = cq.end_within(limit, unit_check(store, cq))
    if off <= cq.min_offset:
        return None
    phy, size, _ = cq.unit(off - 1)
    return off - 1, phy, size


def _damage_below(store: Store, ckpt: int) -> int | None:
    """The lowest offset below the dispatch checkpoint that fails a spot check, if any.

    Checked: each consume queue's last record below the checkpoint, and the last byte before it
    (a record ends with its properties' 0x02, or the zero high byte of an empty properties
    length; a lost record reads as zeros). A zero byte there is ambiguous, so it sends recovery
    back to the start of that file, which costs a scan but never data.
    """
    cl = store.commitlog
    if ckpt <= cl.min_offset:
        return None
    suspects = []
    for (topic, qid), cq in store.consume_queues.items():
        last = _last_unit_within(store, cq, ckpt)
        if last is None or last[1] < cl.min_offset:
            continue  # (a quiet queue's last record may lie in a file `clean` has deleted)
        if not _record_intact(store, last[1], last[2], (topic, qid, last[0])):
            suspects.append(last[1])
    f = cl.file_for(ckpt - 1)
    if ckpt == f.base + cl.file_bytes or os.pread(f.fd, 1, ckpt - 1 - f.base) != b"\x02":
        suspects.append(ckpt - 1)
    return min(suspects, default=None)


def _intact_record_after(store: Store, end: int) -> int | None:
    """Offset of an intact record past ``end`` that a consume queue points to, if any.

    Shape and CRC only: a record there is evidence of acknowledged data even if its header is
    damaged, and the answer decides between refusing and cutting (which would lose it).
    """
    for cq in store.consume_queues.values():
        off = cq.max_offset
        while off > cq.min_offset:
            phy, size, _ = cq.unit(off - 1)
            if phy < end:
                break
            if _record_intact(store, phy, size):
                return phy
            off -= 1
    return None


def _start_without_gaps(store: Store, start: int, end: int) -> int:
    """Lower the replay start until no queue would get a gap.

    A consume queue can lag the replay start (a broker's queue that was not flushed, or one
    this store's rules start past): its first record in the replayed range then has a higher
    queue offset than the queue's end, and replaying would leave the offsets in between as
    placeholders nothing can read. The replay starts at that queue's last record instead, and
    the range added is checked the same way. Queues without units are taken as they are.
    """
    cl = store.commitlog
    tails = {key: _last_unit_within(store, cq, end) for key, cq in store.consume_queues.items()}
    # A queue whose units reach ``start`` already holds every record of it below ``start``
    # (units are dense): only one ending earlier can lag. Usually there is none to look for.
    if all(t is None or t[1] + t[2] >= start for t in tails.values()):
        return start
    checked_to = end
    while start < checked_to:
        lowest = start
        seen: set[tuple[str, int]] = set()
        for _phy, _size, mm, pos in cl.scan(start, verify_crc=False, end=checked_to):
            topic, qid, qoff = record_queue(mm, pos)
            sysflag = L.INT32.unpack_from(mm, pos + L.POS_SYSFLAG)[0]
            tx = sysflag & L.SYSFLAG_TRANSACTION_MASK
            if (topic, qid) in seen or tx not in (0, L.SYSFLAG_TRANSACTION_COMMIT):
                continue
            seen.add((topic, qid))
            last = tails.get((topic, qid))
            if last is not None and qoff > last[0] + 1:
                lowest = min(lowest, max(last[1] + last[2], cl.min_offset))
        checked_to, start = start, lowest
    return start


def _units_past(store: Store, cq: ConsumeQueue, end: int) -> int:
    return cq.max_offset - cq.end_within(end, unit_check(store, cq))
