"""The tiering job: copy committed hot messages to the cold tier, exactly once per queue offset.

A run reads the catalog, decides per (topic, queue) what is ready (batch policy), reads those
records from the hot store (verifying each one), packs them into data objects, uploads the
objects in parallel with building the next, and finally creates one commit record naming them.
The hot store keeps taking appends meanwhile: a run tiers what was durable when it looked.

Packing keeps the PUT count proportional to bytes, not queues: queues go into one object after
the other, each as one contiguous segment, and an object is cut when its compressed size
reaches ``object_bytes`` (or its raw size ``object_raw_limit``). A busy queue, taken first, fills
objects of its own; the sparse ones share the rest. Blocks are compressed on a thread pool while
the next records are read, and finished objects upload on another.
"""

from __future__ import annotations

import bisect
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any, Final

from mqtier.backend.base import ColdStore
from mqtier.backend.open import bill_of
from mqtier.errors import ColdHistoryMismatchError, CorruptRecordError, NotFoundError
from mqtier.format import layout as L
from mqtier.format.coldobject import SourceRecord
from mqtier.format.message import record_store_ts
from mqtier.store.consumequeue import ConsumeQueue
from mqtier.store.reads import QueueOffsets
from mqtier.store.store import Store
from mqtier.tier.catalog import (
    CatalogState,
    QueueKey,
    check_broker,
    check_history,
    commit,
    data_prefix,
    index_prefix,
    load_catalog,
)
from mqtier.tier.indexing import IndexCollector
from mqtier.tier.packer import (
    BLOCK_BYTES,
    OBJECT_BYTES,
    OBJECT_RAW_LIMIT,
    UPLOAD_CONCURRENCY,
    ObjectPacker,
    PackOptions,
    default_compress_threads,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a queue's pending messages are worth an upload: whichever threshold comes first."""

    max_count: int = 4096
    max_bytes: int = 4 << 20
    max_age_s: float = 60.0


@dataclass(frozen=True, slots=True)
class DispatchOptions:
    policy: BatchPolicy = BatchPolicy()
    force: bool = False  # tier every pending message, ignoring the thresholds
    dry_run: bool = False
    object_bytes: int = OBJECT_BYTES  # target compressed bytes per data object
    object_raw_limit: int = OBJECT_RAW_LIMIT  # and at most this much raw
    compress_threads: int = field(default_factory=default_compress_threads)
    block_bytes: int = BLOCK_BYTES
    level: int = 1  # zstd level
    upload_concurrency: int = UPLOAD_CONCURRENCY
    commit_every_bytes: int = 256 << 20  # commit at least this often, bounding lost work
    max_bytes: int | None = None  # stop after tiering this many raw bytes (--max-bytes)
    max_bytes_per_sec: float | None = None  # upload bandwidth cap (--max-bytes-per-sec)
    max_requests: int | None = None  # stop before the run's request count would pass this
    gc: bool = True  # delete objects of commits that can no longer happen

    def pack_options(self) -> PackOptions:
        return PackOptions(
            self.object_bytes,
            self.object_raw_limit,
            self.block_bytes,
            self.level,
            self.upload_concurrency,
            self.compress_threads,
            self.max_bytes_per_sec,
        )


@dataclass
class QueuePlan:
    topic: str
    queue: int
    start: int  # first queue offset to tier
    end: int  # one past the last
    pending_bytes: int
    reason: str  # count | bytes | age | force


@dataclass
class DispatchReport:
    broker: str
    committed_seq_before: int = 0
    committed_seq: int = 0
    queues_pending: int = 0
    queues_tiered: int = 0
    messages: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    objects: int = 0
    commits: int = 0
    garbage_deleted: int = 0
    seconds: float = 0.0
    plans: list[QueuePlan] = field(default_factory=list)
    waiting: list[QueuePlan] = field(default_factory=list)  # pending, below the thresholds
    stopped_by: str | None = None  # "max_bytes" or "max_requests" when a limit ended the run
    # What went wrong without failing the run (a catalog snapshot that failed after its commit)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "broker": self.broker,
            "committed_seq_before": self.committed_seq_before,
            "committed_seq": self.committed_seq,
            "queues_pending": self.queues_pending,
            "queues_tiered": self.queues_tiered,
            "messages": self.messages,
            "raw_bytes": self.raw_bytes,
            "stored_bytes": self.stored_bytes,
            "compression_ratio": round(self.raw_bytes / self.stored_bytes, 3)
            if self.stored_bytes
            else None,
            "objects": self.objects,
            "commits": self.commits,
            "garbage_deleted": self.garbage_deleted,
            "stopped_by": self.stopped_by,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),  # durations: seconds, to the millisecond
            # Nothing left behind: every pending message was tiered (none waits for a batch
            # threshold, no limit stopped the run).
            "up_to_date": not self.waiting and self.stopped_by is None,
            "nothing_to_do": self.queues_pending == 0,
            "waiting_queues": len(self.waiting),
            "waiting_messages": sum(p.end - p.start for p in self.waiting),
            "queues": [
                {
                    "topic": p.topic,
                    "queue": p.queue,
                    "from": p.start,
                    "to": p.end,
                    "bytes": p.pending_bytes,
                    "reason": p.reason,
                }
                # by (topic, queue), as every per-queue array; the run's order is its own
                for p in sorted(self.plans, key=lambda p: (p.topic, p.queue))
            ],
        }


def check_same_history(
    state: CatalogState,
    key: QueueKey,
    cq: ConsumeQueue,
    hot_min: int,
    hot_max: int,
    store_ts_at: Callable[[int, int], int],
) -> None:
    """Refuse a cold tier whose messages of this queue are not this store's.

    Two stores that tier under one broker name would otherwise mix silently: the cold tier's
    next offset would count as "already tiered" for the other store's messages. The hot store
    must reach the cold tier's end, and where it still holds the last cold message, that
    message must sit at the commit-log offset the cold tier recorded for it, with a store
    time inside the last segment's time range (the same messages appended to another store
    land at the same offsets, but later). ``store_ts_at(phy, size)`` reads a hot record's
    store time. A slave's byte-for-byte copy of its master's log passes, as it should.

    Raises:
        ColdHistoryMismatchError: naming the queue and what disagrees.
    """
    segs = state.queues.get(key)
    cold_next = state.next_offset(key)
    if cold_next is None:
        return
    name = f"{key[0]}/{key[1]}"
    hint = f"is another store tiering as broker {state.broker!r}?"
    if cold_next > hot_max:
        raise ColdHistoryMismatchError(
            f"{name}: the cold tier holds offsets up to {cold_next - 1} but this store's queue "
            f"ends at {hot_max - 1}; {hint}",
            hint=who_wrote(state.broker),
        )
    if segs and hot_min < cold_next:
        last = segs[-1]
        phy, size, _ = cq.unit(cold_next - 1)
        if phy != last.cl_max:
            raise ColdHistoryMismatchError(
                f"{name}: offset {cold_next - 1} is at commit-log offset {phy} here but at "
                f"{last.cl_max} in the cold tier; {hint}",
                hint=who_wrote(state.broker),
            )
        ts = store_ts_at(phy, size)
        if not last.min_ts <= ts <= last.max_ts:
            raise ColdHistoryMismatchError(
                f"{name}: offset {cold_next - 1} has store time {ts} here, outside "
                f"{last.min_ts}..{last.max_ts} of its segment in the cold tier; {hint}",
                hint=who_wrote(state.broker),
            )


def check_log_extent(store: Store, state: CatalogState) -> None:
    """Refuse a cold tier holding commit-log offsets this store never wrote.

    A store's commit log only grows at its end (``clean`` drops its head), so every record
    it tiered sits below its durable end. A segment that ends at or past it was tiered from
    another store: one whose queues this store may not even have, which the per-queue
    :func:`check_same_history` would never look at. One pass over the catalog, no I/O.

    Raises:
        ColdHistoryMismatchError: naming the queue with the farthest record.
    """
    end = store.commitlog.durable_end
    last = max(
        (segs[-1] for segs in state.queues.values() if segs), key=lambda s: s.cl_max, default=None
    )
    if last is not None and last.cl_max >= end:
        raise ColdHistoryMismatchError(
            f"{last.topic}/{last.queue}: the cold tier of broker {state.broker!r} holds a "
            f"record at commit-log offset {last.cl_max}, but this store's commit log ends at "
            f"{end}; is another store tiering as broker {state.broker!r}?",
            hint=who_wrote(state.broker),
        )


def who_wrote(broker: str) -> str:
    """The ``try:`` line of a history mismatch: the log names the host and run of each commit
    (the library does not know the URL the command was given)."""
    return f"mqtier log --cold URL --broker {broker}"


def check_store_history(
    store: Store, state: CatalogState, queues: Iterable[QueueOffsets] | None = None
) -> None:
    """Refuse a cold prefix whose history is not this store's: the check ``dispatch`` makes
    before it uploads, for every command given both a store and a cold tier.

    It reads a few bytes per queue (``queues``, default all of the store's) and never writes:
    commands that only look run it too, so that a cold range from another store is an error
    (exit 15) rather than a pending count that comes out negative.

    Raises:
        ColdHistoryMismatchError: naming the queue and what disagrees.
    """
    for qo in store.offsets() if queues is None else queues:
        key: QueueKey = (qo.topic, qo.queue_id)
        cq = store.consume_queue(qo.topic, qo.queue_id)
        if cq is None or state.next_offset(key) is None:
            continue
        check_same_history(
            state, key, cq, qo.min_offset, qo.max_offset, lambda p, n: hot_store_ts(store, p, n)
        )
    check_log_extent(store, state)  # after: a queue's own disagreement names it better


def plan_queues(
    store: Store,
    state: CatalogState,
    opts: DispatchOptions,
    now_ms: int,
    waiting: list[QueuePlan] | None = None,
) -> list[QueuePlan]:
    """Which queues to tier in this run, and from where to where.

    Queues with pending messages below every threshold go to ``waiting`` (reason "waiting").
    """
    plans: list[QueuePlan] = []
    fence = store.unfinished_ingest_from
    check_store_history(store, state)  # before anything is planned, let alone uploaded
    for qo in store.offsets():
        key: QueueKey = (qo.topic, qo.queue_id)
        cold_next = state.next_offset(key)
        start = qo.min_offset if cold_next is None else cold_next
        if cold_next is not None and cold_next < qo.min_offset:
            raise NotFoundError(
                f"{qo.topic}/{qo.queue_id}: the cold tier ends at offset {cold_next} but the hot "
                f"store starts at {qo.min_offset}; offsets in between were deleted before they "
                "were tiered"
            )
        cq = store.consume_queue(qo.topic, qo.queue_id)
        assert cq is not None
        if start >= qo.max_offset:
            continue
        units = cq.units(start, qo.max_offset - start)
        if fence is not None:
            # A running ingest may still roll these back; the cold tier could not follow.
            units = list(takewhile(lambda u: u[0] < fence, units))
            if not units:
                continue
        end = start + len(units)
        pending_bytes = sum(size for _, size, _ in units)
        if opts.force:
            reason = "force"
        elif len(units) >= opts.policy.max_count:
            reason = "count"
        elif pending_bytes >= opts.policy.max_bytes:
            reason = "bytes"
        else:
            phy, size, _ = units[0]
            first_ts = hot_store_ts(store, phy, size)
            if now_ms - first_ts < opts.policy.max_age_s * 1000:
                if waiting is not None:
                    waiting.append(
                        QueuePlan(qo.topic, qo.queue_id, start, end, pending_bytes, "waiting")
                    )
                continue
            reason = "age"
        plans.append(QueuePlan(qo.topic, qo.queue_id, start, end, pending_bytes, reason))
    plans.sort(key=lambda p: -p.pending_bytes)
    return plans


def hot_store_ts(store: Store, phy: int, size: int) -> int:
    """The store time of the hot record at ``phy`` (it sits in the first 80 bytes)."""
    return record_store_ts(store.commitlog.read(phy, min(size, 80)))


def run_dispatch(
    store: Store,
    cold: ColdStore,
    opts: DispatchOptions | None = None,
    *,
    broker: str | None = None,
    on_progress: Callable[[DispatchReport], None] | None = None,
) -> DispatchReport:
    """Tier what is ready once, commit it, and return what was done.

    ``on_progress(report)`` is called once the plan is made (``report.plans``, whose
    ``pending_bytes`` add up to the run's total) and then as records are packed
    (``report.messages``, ``report.raw_bytes``, ``report.queues_tiered``).

    Raises:
        CommitConflictError: another job committed to this broker's prefix meanwhile.
        CorruptRecordError: a hot record failed verification. Raised at the end of the run:
            the record's queue is tiered up to the record and stops there (every later run
            does the same until it is repaired), and the other queues are tiered and committed.
    """
    opts = opts or DispatchOptions()
    broker = check_broker(broker or store.config.broker_name)
    t0 = time.perf_counter()
    bill0 = bill_of(cold)
    first_requests = bill0.requests if bill0 is not None else 0
    state = load_catalog(cold, broker)
    report = DispatchReport(broker, state.seq, state.seq)
    plans = plan_queues(store, state, opts, int(time.time() * 1000), report.waiting)
    report.queues_pending = len(plans)
    report.plans = plans
    if opts.dry_run or not plans:
        report.seconds = time.perf_counter() - t0
        if not opts.dry_run:
            _raise_tail_damage(store, state)
        return report
    check_history(cold, state)  # before any upload: a damaged history is never written to
    if on_progress is not None:
        on_progress(report)
    bill = bill_of(cold)
    # Requests the run has sent so far (loading the catalog); the rest are counted as planned.
    loaded = bill.requests - first_requests if bill is not None else state.loaded_requests
    bad: dict[QueueKey, tuple[int, CorruptRecordError]] = {}  # queue -> first bad offset
    while True:
        attempt = _Attempt(store, cold, state, broker, opts, report, on_progress, loaded)
        try:
            attempt.tier(plans)
            break
        except CorruptRecordError as exc:
            # Blocks are checked in parallel, so a later bad record of a queue may be found
            # first; its earlier one then moves the stop down (the stop only ever goes down).
            found = [
                (key, queue_offset)
                for key, queue_offset in _queues_of_record(store, plans, exc.offset)
                if key not in bad or bad[key][0] > queue_offset
            ]
            if not found:
                raise
            for key, queue_offset in found:
                # Every queue naming the record stops there: a read-only open makes units from
                # the headers of records past the consume queues, so a garbled QUEUEID or TOPIC
                # also shows the record in a queue of its own whose header agrees with it.
                bad[key] = (queue_offset, exc)
            key, queue_offset = found[0]
            # What this attempt packed after its last commit is dropped (its objects are
            # orphans for the garbage collection below); the queue stops at the bad record and
            # the others go on.
            attempt.forget_uncommitted()
            plans = _replan(plans, state, bad)
            report.plans = plans
            log.warning(
                "%s/%d: %s; tiering the queue up to offset %d and the other queues",
                key[0],
                key[1],
                exc,
                queue_offset,
            )
        finally:
            loaded += attempt.objects
            report.objects += attempt.objects
    if opts.gc and report.stopped_by != "max_requests":
        report.garbage_deleted = collect_garbage(cold, state)
    report.seconds = time.perf_counter() - t0
    if bad:
        (topic, queue), (queue_offset, first) = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more queues)" if len(bad) > 1 else ""
        try:
            path = store.commitlog.file_for(first.offset).path
        except NotFoundError:
            path = first.path
        raise CorruptRecordError(
            path,
            first.offset,
            f"{first.detail}; {topic}/{queue} is tiered up to offset {queue_offset} and stops "
            f"there{more} until the record is repaired; the other queues were tiered as far "
            f"as the run went (commit {state.seq})",
        )
    _raise_tail_damage(store, state)
    return report


def _raise_tail_damage(store: Store, state: CatalogState) -> None:
    """A read-only open ends its view before a record whose header failed: everything before
    it was tiered, but the run must not look finished (a later ``clean`` relies on that)."""
    damage = store.tail_damage
    if damage is not None:
        raise CorruptRecordError(
            damage.path,
            damage.offset,
            f"{damage.detail}; nothing from this record on is tiered until it is repaired "
            f"(what came before is, up to commit {state.seq})",
        )


def _queues_of_record(store: Store, plans: list[QueuePlan], phy: int) -> list[tuple[QueueKey, int]]:
    """The planned queues, and their offsets, whose units point to commit-log offset ``phy``."""
    out = []
    for plan in plans:
        cq = store.consume_queue(plan.topic, plan.queue)
        assert cq is not None
        units = cq.units(plan.start, plan.end - plan.start)
        i = bisect.bisect_left(units, phy, key=lambda u: u[0])
        if i < len(units) and units[i][0] == phy:
            out.append(((plan.topic, plan.queue), plan.start + i))
    return out


def _replan(
    plans: list[QueuePlan], state: CatalogState, bad: dict[QueueKey, tuple[int, Any]]
) -> list[QueuePlan]:
    """The plans again, from what is committed now, each bad queue ending at its bad record."""
    out: list[QueuePlan] = []
    for p in plans:
        key = (p.topic, p.queue)
        start = max(p.start, state.next_offset(key) or p.start)
        end = min(p.end, bad[key][0]) if key in bad else p.end
        if start < end:
            out.append(QueuePlan(p.topic, p.queue, start, end, p.pending_bytes, p.reason))
    return out


class _Attempt:
    """One pass over the plans: pack, upload and commit (a run makes a second pass only when
    a hot record fails verification, without that record's queue)."""

    def __init__(
        self,
        store: Store,
        cold: ColdStore,
        state: CatalogState,
        broker: str,
        opts: DispatchOptions,
        report: DispatchReport,
        on_progress: Callable[[DispatchReport], None] | None,
        loaded: int,
    ) -> None:
        self.store, self.cold, self.state, self.opts = store, cold, state, opts
        self.report, self.on_progress, self.loaded = report, on_progress, loaded
        self.run_id = uuid.uuid4().hex
        self.since_commit = 0
        # the report's counters as of the last commit, to return to if the attempt fails
        self._committed = (report.messages, report.raw_bytes, report.queues_tiered)
        self.packer = ObjectPacker(
            cold,
            self.run_id,
            lambda n: f"{data_prefix(broker)}{state.seq + 1:020d}/{self.run_id}-{n:06d}.mqd",
            opts.pack_options(),
            verify_from=str(store.commitlog.directory),
            may_open=self._may_open,
        )
        self.index = IndexCollector()
        self.broker = broker

    @property
    def objects(self) -> int:
        return self.packer.objects

    def forget_uncommitted(self) -> None:
        r = self.report
        r.messages, r.raw_bytes, r.queues_tiered = self._committed

    def _may_open(self) -> bool:
        """Under --max-requests: is there room for one more PUT and the final create?"""
        if self.opts.max_requests is None:
            return True
        # each commit is an index object's PUT and the record's create
        planned = self.loaded + self.packer.objects + 2 * self.report.commits + 1  # + this PUT
        if planned + 2 <= self.opts.max_requests:  # + this commit's index PUT and create
            return True
        self.report.stopped_by = "max_requests"
        return False

    def _commit_now(self) -> None:
        """Seal the open object, wait for every upload, then create the commit record."""
        r = self.report
        added = self.packer.drain()  # every object is in place before the record names it
        if added:
            r.stored_bytes += sum(s.stored_bytes for s in added)
            # the index of what this commit adds, in place before the record names it too
            key = f"{index_prefix(self.broker)}{self.state.seq + 1:020d}/{self.run_id}-L0.mqi"
            data, entry = self.index.build(
                added, self.packer.blocks_of, key=key, run_id=self.run_id
            )
            self.cold.put(key, data)
            commit(
                self.cold,
                self.state,
                added=added,
                index_added=[entry],
                run_id=self.run_id,
                warnings=r.warnings,
            )
            r.commits += 1
            r.committed_seq = self.state.seq
        self._committed = (r.messages, r.raw_bytes, r.queues_tiered)
        self.since_commit = 0

    def _add(self, plan: QueuePlan, run: list[SourceRecord], run_bytes: int) -> bool:
        """Add a run to the open object; False when --max-requests leaves no room for it."""
        if not self.packer.add(plan.topic, plan.queue, run):
            return False
        self.index.add(plan.topic, plan.queue, run)
        self.since_commit += run_bytes
        self.report.messages += len(run)
        self.report.raw_bytes += run_bytes
        if self.on_progress is not None:
            self.on_progress(self.report)
        return True

    def tier(self, plans: list[QueuePlan]) -> None:
        opts, report, store = self.opts, self.report, self.store
        # Records go to the object in pieces of about a block, so a full object is noticed in
        # time.
        piece_bytes = max(1, min(opts.block_bytes, opts.object_bytes))
        hot = store.commitlog.copier()
        report.stopped_by = None  # a retried attempt decides again
        try:
            # What earlier attempts committed counts against --max-bytes (their uncommitted
            # part was taken back out of report.raw_bytes).
            budget = None if opts.max_bytes is None else opts.max_bytes - report.raw_bytes
            for plan in plans:
                cq = store.consume_queue(plan.topic, plan.queue)
                assert cq is not None
                offset = plan.start
                run: list[SourceRecord] = []
                run_bytes = 0
                tiered_any = False
                for phy, size, _tag in cq.units(plan.start, plan.end - plan.start):
                    if budget is not None and budget <= 0:
                        report.stopped_by = "max_bytes"
                        break
                    record = hot.read(phy, size)
                    if L.INT32.unpack_from(record)[0] != size:  # the full check runs later
                        raise CorruptRecordError(
                            store.commitlog.file_for(phy).path,
                            phy,
                            "record size disagrees with its consume-queue unit",
                        )
                    run.append(SourceRecord(offset, record_store_ts(record), phy, record))
                    run_bytes += size
                    offset += 1
                    if budget is not None:
                        budget -= size
                    if run_bytes >= piece_bytes:
                        if not self._add(plan, run, run_bytes):
                            run = []
                            break
                        run, run_bytes, tiered_any = [], 0, True
                        if not self.packer.is_open and self.since_commit >= opts.commit_every_bytes:
                            self._commit_now()  # right after an object was sealed
                if run and self._add(plan, run, run_bytes):
                    tiered_any = True
                if tiered_any:
                    report.queues_tiered += 1
                if report.stopped_by:
                    break
                if self.since_commit >= opts.commit_every_bytes:
                    self._commit_now()
            self._commit_now()
        finally:
            self.packer.close()
            hot.close()


# A temporary file this old is a killed writer's, not a slow one's: uploads of an 8 MiB
# object take seconds even over a slow link.
ABANDONED_WRITE_S: Final = 15 * 60


def collect_garbage(cold: ColdStore, state: CatalogState) -> int:
    """Delete data and index objects that no commit names and no commit can name any more.

    Objects live under the number of the commit they were made for; once that number is taken,
    an object not named by the state is an orphan of a failed, raced or killed run. Objects made
    for a later commit may belong to a run still in progress and are left alone.
    """
    referenced = state.referenced_objects() | set(state.indexes)
    orphans: list[str] = []
    for prefix in (data_prefix(state.broker), index_prefix(state.broker)):

        def settled(key: str, prefix: str = prefix) -> bool:
            seq_part = key[len(prefix) :].split("/", 1)[0]
            return seq_part.isdigit() and int(seq_part) <= state.seq

        orphans += [i.key for i in cold.list(prefix) if settled(i.key) and i.key not in referenced]
        # The same rule for writes killed before they became objects (a file tier's temporary
        # files), once they are old enough not to be a live loser's upload in progress:
        # deleting that would fail its run with an I/O error instead of the lost race it is.
        abandoned = cold.list_incomplete(prefix, older_than_s=ABANDONED_WRITE_S)
        orphans += [key for key in abandoned if settled(key)]
    if orphans:
        log.info("deleting %d uncommitted objects", len(orphans))
        cold.delete(orphans)
    return len(orphans)
