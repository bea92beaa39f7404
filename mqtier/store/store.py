"""``Store``: the public face of the hot store (open, append, read, query, close).

Threads: any number of callers append and read; one group-commit writer thread owns the commit
log's write position; one reput thread owns the consume queues and the index.

This module opens, appends and closes; the rest of a store's work lives beside it, as mixins
over :class:`~mqtier.store.state.StoreState`: reads and queries (``reads.py``), a read-only
view's in-memory tail (``tailview.py``); recovery (``recovery.py``), the reput of records into
consume queues and index (``replay.py``, ``reputbatch.py``) and framing (``framing.py``)
are modules of their own.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from mqtier.errors import (
    MqtierError,
    NotAStoreError,
    ReadOnlyStoreError,
)
from mqtier.format import layout as L
from mqtier.format.checkpoint import Checkpoint, pack_dispatch_offset, unpack_dispatch_offset
from mqtier.format.message import (
    Message,
    make_msg_id,
    validate_topic,
)
from mqtier.store.commitlog import CommitLog, infer_file_bytes
from mqtier.store.config import StoreConfig
from mqtier.store.consumequeue import ConsumeQueue
from mqtier.store.derived import manifest_doc, missing_derived, save_manifest
from mqtier.store.fileio import naming, remove_stale_tmp, write_atomic
from mqtier.store.framing import FramedBatch, Framer, Row, merged, record_starts, row_of, stamp
from mqtier.store.groupcommit import GroupCommitter, PendingAppend
from mqtier.store.health import StoreHealth
from mqtier.store.indexfile import IndexService
from mqtier.store.lock import StoreLock
from mqtier.store.reads import MAX_TIME_MS, QueueOffsets, StoreReads
from mqtier.store.recovery import recover, unit_check
from mqtier.store.reput import Reput
from mqtier.store.tailview import ReadOnlyTail

if TYPE_CHECKING:
    from mqtier.store.reputbatch import Int64s
from mqtier.store.topics import TopicTable

# QueueOffsets (what Store.offsets returns) and MAX_TIME_MS were defined here before the reads
# moved to reads.py: importing them from here goes on working.
__all__ = [
    "MAX_TIME_MS",
    "AppendResult",
    "PendingMessages",
    "Placed",
    "QueueOffsets",
    "Store",
    "configured_broker_name",
    "is_store_dir",
]
log = logging.getLogger(__name__)

# What recovery hands the reput per record: topic, queue id, queue offset, commit-log
# offset, size, tags code, store timestamp, keys, uniq key, sysflag, record bytes (or None).
DispatchItem = tuple[
    str, int, int, int, int, int, int, tuple[str, ...], str | None, int, bytes | None
]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an acknowledged (durable) message went."""

    topic: str
    queue_id: int
    queue_offset: int
    phy_offset: int
    size: int
    uniq_key: str
    store_host: tuple[bytes, int]

    @property
    def msg_id(self) -> str:
        return make_msg_id(self.store_host[0], self.store_host[1], self.phy_offset)


class Placed(NamedTuple):
    """Where the writer put a framed batch: each record's commit-log and queue offset."""

    phys: list[int]
    queue_offsets: list[int]
    store_ts: int


class PendingMessages:
    """Messages queued by :meth:`Store.append_batch_async`; :meth:`wait` returns their
    results once durable."""

    __slots__ = ("_batch", "_host", "_pending")

    def __init__(
        self,
        batch: FramedBatch,
        pending: PendingAppend[FramedBatch, Placed],
        host: tuple[bytes, int],
    ) -> None:
        self._batch = batch
        self._pending = pending
        self._host = host

    def wait(self, timeout: float | None = None) -> list[AppendResult]:
        (where,) = self._pending.wait(timeout)
        b, host = self._batch, self._host
        return [
            AppendResult(topic, qid, qoff, phy, size, uniq, host)
            for (topic, qid), qoff, phy, size, uniq in zip(
                b.queues, where.queue_offsets, where.phys, b.sizes, b.uniq_keys, strict=True
            )
        ]


def _runs_within(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """(end, bytes) of runs of records of at most ``limit`` bytes (a record over it: a run
    alone), in order."""
    total = sum(sizes)
    if total <= limit:
        return [(len(sizes), total)]
    runs: list[tuple[int, int]] = []
    run = 0
    for i, size in enumerate(sizes):
        if run and run + size > limit:
            runs.append((i, run))
            run = 0
        run += size
    runs.append((len(sizes), run))
    return runs


def _queue_of(derived: str) -> tuple[str, int]:
    """(topic, queue) of a ``consumequeue/TOPIC/QUEUE`` entry of the derived-file manifest."""
    _, topic, qid = derived.rsplit("/", 2)
    return topic, int(qid)


def _writable_dir(root: Path) -> bool:
    """Whether we may write into ``root``. A directory without any write permission bit counts
    as read-only even for root, who could write anyway: the owner marked it so on purpose."""
    return os.access(root, os.W_OK) and bool(root.stat().st_mode & 0o222)


def configured_broker_name(path: str | os.PathLike[str]) -> str:
    """The broker name a :meth:`Store.open` of ``path`` would use, read without opening the
    store (no recovery, no scan): from ``config/mqtier.json``, else the default a broker's
    store gets.

    Raises:
        NotAStoreError: ``path`` holds no store.
    """
    root = Path(path)
    if not is_store_dir(root):
        raise NotAStoreError(f"{root}: not a store (no {L.DIR_COMMITLOG}/ directory)")
    stored = StoreConfig.load(root / L.DIR_CONFIG / L.FILE_STORE_CONFIG)
    return (stored or StoreConfig()).broker_name


def is_store_dir(root: Path) -> bool:
    return (root / L.DIR_COMMITLOG).is_dir() or (
        root / L.DIR_CONFIG / L.FILE_STORE_CONFIG
    ).is_file()


class Store(ReadOnlyTail, StoreReads):
    """A RocketMQ-compatible store directory. Open with :meth:`open`; use as a context manager."""

    # ---- opening and closing ----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        create: bool = False,
        config: StoreConfig | None = None,
        recover_dry_run: bool = False,
        rebuild: bool = False,
    ) -> Store:
        """Open the store at ``path``: read-only unless asked to write.

        A read-only open writes no byte: it runs recovery in memory (the torn tail of a crashed
        writer is not shown, records past the consume queues are dispatched in memory), so it is
        safe on a crashed broker's directory, whose files are the evidence, and beside a running
        writer, whose durable records it sees. :attr:`health` says what it found.

        Args:
            path: the store root (``commitlog/``, ``consumequeue/``, ``index/``, ...).
            writable: open for appending; takes the store's lock and, if the last writer
                crashed, recovers the store on disk (truncates the torn tail, rebuilds consume
                queues and index).
            create: create an empty store when ``path`` holds none (implies ``writable``).
            config: settings for a new store; ignored for an existing one, whose own
                ``config/mqtier.json`` (or file geometry) wins.
            recover_dry_run: open read-only and only report what recovery would do.
            rebuild: (writable) after recovery, drop every consume queue and IndexFile and
                derive them again from the whole commit log (:attr:`rebuild_report`).

        Raises:
            NotAStoreError: ``path`` holds no store and ``create`` is false.
            StoreLockedError: writing was asked and another process holds the store's lock.
            ReadOnlyStoreError: writing was asked and the directory cannot be written.
        """
        root = Path(path)
        exists = is_store_dir(root)
        writable = (writable or create) and not recover_dry_run
        if not exists and not create:
            if root.exists() and not root.is_dir():
                raise NotAStoreError(f"{root}: not a directory")
            raise NotAStoreError(
                f"{root}: not a store (no {L.DIR_COMMITLOG}/ directory); "
                "create one with 'mqtier ingest'"
            )
        if writable and exists and not _writable_dir(root):
            raise ReadOnlyStoreError(
                f"{root}: the store's directory is read-only; it can be read but not written"
            )
        cfg_path = root / L.DIR_CONFIG / L.FILE_STORE_CONFIG
        stored = StoreConfig.load(cfg_path)
        if stored is None:
            base = config or StoreConfig()
            inferred = infer_file_bytes(root / L.DIR_COMMITLOG)
            if inferred is not None and exists:
                base = base.with_changes(commitlog_file_bytes=inferred)
            stored = base
        store = cls(root, stored, read_only=not writable)
        try:
            store._open_files(
                write_config=not cfg_path.exists(),
                dry_run=recover_dry_run,
                rebuild=rebuild and writable,
            )
        except BaseException:
            store._close_files()
            raise
        return store

    @property
    def health(self) -> StoreHealth:
        """How the store was left, as this open found it (see :class:`StoreHealth`)."""
        return self._health

    def _open_files(self, *, write_config: bool, dry_run: bool, rebuild: bool = False) -> None:
        cfg = self.config
        state = StoreHealth.probe(self.root)
        fence_before = self.unfinished_ingest_from
        if not self.read_only:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = StoreLock(self.root)
            self._lock.acquire()
            remove_stale_tmp(self.root)  # a checkpoint replacement a crash interrupted
            if write_config:
                cfg.save(self.root / L.DIR_CONFIG / L.FILE_STORE_CONFIG)
        self.commitlog = CommitLog(
            self.root / L.DIR_COMMITLOG,
            cfg.commitlog_file_bytes,
            writable=not self.read_only,
            prewrite=cfg.prewrite,
        )
        self._load_consume_queues()
        self.index = IndexService(
            self.root / L.DIR_INDEX, cfg.index_slots, cfg.index_items, writable=not self.read_only
        )
        self.topics = TopicTable(self.root / L.DIR_CONFIG)
        missing = missing_derived(self.root)  # before recovery drops files of its own
        self._queues_on_disk = bool(self._cqs)
        self._lost = {_queue_of(m) for m in missing if m.startswith(L.DIR_CONSUMEQUEUE + "/")}
        if missing and not self.read_only and not rebuild:
            log.warning(
                "%s: %s went missing; rebuilding consume queues and index from the commit log",
                self.root,
                ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if missing[5:] else ""),
            )
            rebuild = True
        # A rebuild dispatches the whole log: recovery only finds its end (and cuts a torn tail),
        # unless nothing derived is left to throw away: then recovery's replay is the rebuild.
        self.recovery = recover(
            self,
            dry_run=dry_run,
            view=self.read_only and not dry_run,
            replay=not rebuild,
            rebuild_in_one_pass=rebuild,
        )
        if rebuild:
            from mqtier.store.rebuild import rebuild_derived

            # Recovery replayed the whole log as it scanned it, or (its scan began at a
            # checkpoint, or derived files were there to throw away) replayed nothing.
            whole = self.recovery.replayed_whole_log
            self.rebuild_report = rebuild_derived(
                self, missing, replayed=self.recovery if whole else None
            )
        undispatched = 0
        if self.read_only:
            undispatched, read = self._reput_tail_in_memory(
                self.recovery.redispatch_from, self.recovery.end_offset
            )
            if not dry_run:  # a view's recovery leaves the count to its replay in memory
                self.recovery.messages_redispatched = read
        self._health = StoreHealth(
            state,
            read_only=self.read_only,
            torn_at=self.recovery.torn_bytes_at,
            torn_reason=self.recovery.torn_reason,
            undispatched=undispatched,
            repaired=not self.read_only and self.recovery.changed,
            unfinished_ingest_from=self.recovery.ingest_rolled_back_from,
            missing_derived=tuple(missing) if self.read_only else (),
            damaged=str(self.tail_damage) if self.tail_damage is not None else None,
        )
        for key, cq in self._cqs.items():
            self._queue_offsets[key] = cq.max_offset
        if self.read_only:
            self._view_fences = {fence_before, self.unfinished_ingest_from}
            return
        abort = self.root / L.FILE_ABORT
        existed = abort.exists()
        try:
            abort.write_text(str(os.getpid()))  # present while we run: a crash leaves it behind
        except OSError as exc:  # a full disk: leave the store as clean as it was
            if not existed:
                abort.unlink(missing_ok=True)
            raise naming(exc, abort) from None
        # A fence left by an ingest that died unfinished: recovery has rolled its records back.
        (self.root / L.FILE_INGEST_FENCE).unlink(missing_ok=True)
        self.commitlog.ensure_writable_file()
        self._framer = Framer(self.topics, cfg, self.store_host)
        self._reput = Reput(
            self._apply_reput,
            self._write_checkpoint,
            start_offset=self.commitlog.durable_end,
            flush_interval_s=cfg.flush_interval_ms / 1000,
        )
        self._writer = GroupCommitter(
            self._commit_batch,
            max_wait_s=cfg.group_wait_us / 1e6,
            max_batch_bytes=cfg.max_batch_bytes,
            count=len,
        )

    def _load_consume_queues(self) -> None:
        base = self.root / L.DIR_CONSUMEQUEUE
        if not base.is_dir():
            return
        for tdir in sorted(base.iterdir()):
            if not tdir.is_dir():
                continue
            for qdir in sorted(tdir.iterdir()):
                if qdir.is_dir() and qdir.name.isdigit():
                    qid = int(qdir.name)
                    self._cqs[(tdir.name, qid)] = ConsumeQueue(
                        qdir,
                        tdir.name,
                        qid,
                        self.config.cq_units_per_file,
                        writable=not self.read_only,
                    )

    def consume_queue(
        self, topic: str, queue_id: int, *, create: bool = False
    ) -> ConsumeQueue | None:
        cq = self._cqs.get((topic, queue_id))
        if cq is None and create:
            validate_topic(topic, allow_v2=True)
            cq = ConsumeQueue(
                self.root / L.DIR_CONSUMEQUEUE / topic / str(queue_id),
                topic,
                queue_id,
                self.config.cq_units_per_file,
                writable=True,
            )
            self._cqs[(topic, queue_id)] = cq
        return cq

    @property
    def consume_queues(self) -> dict[tuple[str, int], ConsumeQueue]:
        return self._cqs

    def close(self) -> None:
        """Commit pending appends, finish dispatching, checkpoint, and release the lock."""
        if self._closed:
            return
        self._closed = True
        clean = True
        try:
            if self._writer is not None:
                self._writer.close()
                clean = self._writer.failed is None
            if self._reput is not None:
                self._reput.close()
        except BaseException:
            clean = False
            raise
        finally:
            if not self.read_only and clean:
                self.topics_save_if_dirty()
                (self.root / L.FILE_ABORT).unlink(missing_ok=True)
            self._close_files()

    def drop_files_below(self, offset: int) -> tuple[list[Path], list[Path]]:
        """Delete the commit-log files that lie wholly below commit-log ``offset`` (never the
        last), then the consume-queue files and IndexFiles that point only below it; returns
        the commit-log files and the derived files deleted. The commit-log files go first: a
        crash between leaves derived files that point below the log's minimum, which reads
        skip and the next call deletes."""
        self._check_writable()
        log_files = self.commitlog.drop_head_files(offset)
        derived: list[Path] = []
        for cq in self._cqs.values():
            derived.extend(cq.drop_head_files(offset))
        derived.extend(self.index.drop_head_files(offset))
        return log_files, derived

    def fence_ingest(self, offset: int | None) -> None:
        """Mark records from ``offset`` on as an unfinished ingest (``None`` lifts the mark).

        An ingest is all or nothing: a bad line rolls back what it appended. Those records are
        durable and readable meanwhile, so a tiering job must not copy them to the cold tier,
        where no rollback could reach them; it reads :attr:`unfinished_ingest_from`.
        """
        self._check_writable()  # a read-only open must not leave a fence in another's store
        path = self.root / L.FILE_INGEST_FENCE
        if offset is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, pack_dispatch_offset(offset))

    def rollback_to(
        self, offset: int, *, restore: Mapping[Path, bytes | None] | None = None
    ) -> None:
        """Drop every record at or past commit-log ``offset`` and close the store.

        Undoes a failed bulk ingest: the caller holds the lock, so nothing else appended. Waits
        for pending appends first. Consume queues and index lose what points past ``offset``.
        ``restore`` maps files (the checkpoints) to the bytes to put back once that is done, or
        None to remove one: what they held before the run, which described this same data.
        """
        if self.read_only or self._closed:
            return
        self._closed = True
        try:
            assert self._writer is not None
            assert self._reput is not None
            self._writer.close()
            self._reput.close()
            cl = self.commitlog
            if cl.durable_end > offset:
                cl.truncate(offset, dirty_bytes=cl.durable_end - offset)
                for cq in self._cqs.values():
                    cq.truncate_phy(offset, unit_check(self, cq))
                dropped = self.index.drop_after(offset)
                if dropped:
                    from mqtier.store.replay import replay

                    start = self.index.end_phy if self.index.files else cl.min_offset
                    replay(self, max(start, cl.min_offset), offset)
                self.cache.drop_from(offset)
                self._write_checkpoint(offset)
            for path, data in (restore or {}).items():
                if data is None:
                    path.unlink(missing_ok=True)
                else:
                    write_atomic(path, data)
            (self.root / L.FILE_INGEST_FENCE).unlink(missing_ok=True)
            (self.root / L.FILE_ABORT).unlink(missing_ok=True)
        finally:
            self._close_files()

    def _close_files(self) -> None:
        if hasattr(self, "commitlog"):
            self.commitlog.close()
        for cq in self._cqs.values():
            if not self.read_only:
                cq.flush()
            cq.close()
        if hasattr(self, "index"):
            self.index.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- appending --------------------------------------------------------------------------

    def create_topic(self, topic: str, queues: int, *, save: bool = True) -> None:
        """Declare ``topic`` with ``queues`` write queues (widening an existing topic).

        ``queues`` is at most :data:`~mqtier.store.topics.MAX_QUEUES` (ConfigError otherwise).
        With ``save=False`` the topic table is written at close (or by
        :meth:`topics_save_if_dirty`) and not at all if the store is rolled back.
        """
        self._check_writable()
        validate_topic(topic, allow_v2=True)
        if self.topics.ensure(topic, queues):
            if save:
                self.topics.save()
            else:
                assert self._framer is not None
                self._framer.topics_dirty = True

    def topics_save_if_dirty(self) -> None:
        if self._framer is not None and self._framer.topics_dirty:
            self.topics.save()
            self._framer.topics_dirty = False

    def _check_writable(self) -> None:
        if self.read_only or self._writer is None:
            raise ReadOnlyStoreError(f"{self.root}: store is open read-only")
        if self._closed:
            raise ReadOnlyStoreError(f"{self.root}: store is closed")

    def frame(
        self,
        rows: Sequence[Row],
        *,
        grow_queues: bool = True,
        on_error: Callable[[int, MqtierError], None] | None = None,
    ) -> FramedBatch:
        """Validate and frame messages for :meth:`append_framed_async` (the caller's thread).

        A new topic gets ``default_queues`` queues; a queue id past its topic's count widens
        the topic to it with ``grow_queues`` (up to ``MAX_QUEUES``), else is an
        InvalidMessageError. See :meth:`Framer.frame` for ``on_error``.
        """
        self._check_writable()
        assert self._framer is not None
        return self._framer.frame(rows, grow_queues=grow_queues, on_error=on_error)

    def append(self, msg: Message) -> AppendResult:
        """Append one message; returns once it is durable (fdatasync'ed)."""
        return self.append_batch((msg,))[0]

    def append_batch(self, msgs: Sequence[Message]) -> list[AppendResult]:
        """Append messages in order; returns once all are durable."""
        return self.append_batch_async(msgs).wait()

    def append_batch_async(self, msgs: Iterable[Message]) -> PendingMessages:
        """Queue messages for the next group commit; ``.wait()`` returns their results.

        Every message is validated before any is queued: a bad one raises with nothing
        appended. (The writer syncs at most ``max_batch_bytes`` at a time.)
        """
        batch = self.frame([row_of(m) for m in msgs])
        return PendingMessages(batch, self.append_framed_async(batch), self.store_host)

    def append_framed_async(self, batch: FramedBatch) -> PendingAppend[FramedBatch, Placed]:
        """Queue a framed batch for the next group commit; ``.wait()`` returns its place."""
        self._check_writable()
        assert self._writer is not None
        return self._writer.submit((batch,), len(batch.data))

    def _commit_batch(self, batches: list[FramedBatch]) -> list[Placed]:
        """Writer thread: place, stamp, write, sync. Then hand the batches to the reput."""
        assert self._reput is not None
        assert self._framer is not None
        if self._reput.error is not None:
            # The consume queues or index could not be written (a full disk): acknowledging
            # more appends would only grow what recovery must replay. Fail them instead.
            raise self._reput.error
        cl = self.commitlog
        store_ts = int(time.time() * 1000)
        batch = merged(batches)
        qoffs = self._queue_offsets
        updates: dict[tuple[str, int], int] = {}
        offsets: list[int] = []
        for key in batch.queues:
            qoff = updates.get(key)
            if qoff is None:
                qoff = qoffs.get(key, 0)
            offsets.append(qoff)
            updates[key] = qoff + 1
        phys: list[int] = []
        sizes = batch.sizes
        view = memoryview(batch.data)
        at = lo = 0
        for hi, nbytes in _runs_within(sizes, self.config.max_batch_bytes):
            # Each run is placed, stamped, written and synced before the next: the bytes one
            # sync (and one torn tail) spans stay bounded however much one batch holds.
            run = view[at : at + nbytes]
            run_phys = cl.add_framed(run, sizes[lo:hi])
            stamp(
                run,
                sizes[lo:hi],
                offsets[lo:hi],
                run_phys,
                store_ts,
                self._framer.store_ts_at,
                prop_crc=self.config.append_prop_crc,
            )
            end = cl.flush_batch()
            phys += run_phys
            at, lo = at + nbytes, hi
        qoffs.update(updates)
        where = Placed(phys, offsets, store_ts)
        self._reput.submit([end, batch, where], len(batch.data))
        if len(batches) == 1:
            return [where]
        out: list[Placed] = []
        lo = 0
        for b in batches:
            hi = lo + len(b)
            out.append(Placed(phys[lo:hi], offsets[lo:hi], store_ts))
            lo = hi
        return out

    # ---- dispatching (reput thread, or recovery) ---------------------------------------

    def _apply_reput(self, job: list[Any]) -> int:
        end: int = job[0]
        self.reput_framed(job[1], job[2])
        return end

    def reput_framed(self, batch: FramedBatch, where: Placed) -> None:
        """:meth:`reput_items` for a batch the writer placed (appends are never
        transactional: every record gets its consume-queue unit and index keys)."""
        from mqtier.store import reputbatch  # numpy: only writers pay its import

        phys, sizes = where.phys, batch.sizes
        for key, first, units in reputbatch.queue_runs(
            batch.queues, where.queue_offsets, phys, sizes, batch.tags
        ):
            cq = self._cqs.get(key)
            if cq is None:
                cq = self.consume_queue(key[0], key[1], create=True)
                assert cq is not None
            cq.put_packed(first, units)
        cached: list[tuple[int, bytes]] = []
        if batch.cached and self.cache.max_bytes > 0:
            admit = self.cache.admit_max_bytes
            view = memoryview(batch.data)
            for at, phy, size in zip(record_starts(sizes), phys, sizes, strict=True):
                if size <= admit:
                    cached.append((phy, bytes(view[at : at + size])))
        self._index_and_cache(
            batch.index_keys,
            [phys[i] for i in batch.key_owner],
            [where.store_ts] * len(batch.key_owner),
            cached,
        )

    def reput_items(self, items: list[DispatchItem]) -> None:
        """Apply records to consume queues, index and cache (RocketMQ's dispatchers).

        One pass sorts the batch into per-queue runs and a flat list of index keys; the runs
        are copied into the consume queues and the keys hashed and linked as arrays
        (:mod:`mqtier.store.reputbatch`), which is what keeps up with the writer.
        """
        runs: dict[tuple[str, int], list[tuple[int, int, int, int]]] = {}
        index_keys: list[str] = []
        key_phys: list[int] = []
        key_stamps: list[int] = []
        cached: list[tuple[int, bytes]] = []
        for topic, qid, qoff, phy, size, tag, store_ts, keys, uniq, sysflag, rec in items:
            tx = sysflag & L.SYSFLAG_TRANSACTION_MASK
            if tx in (0, L.SYSFLAG_TRANSACTION_COMMIT):
                run = runs.get((topic, qid))
                if run is None:
                    run = runs[(topic, qid)] = []
                run.append((qoff, phy, size, tag))
            if tx != L.SYSFLAG_TRANSACTION_ROLLBACK:
                before = len(index_keys)
                if uniq:
                    index_keys.append(f"{topic}#{uniq}")
                index_keys.extend(f"{topic}#{k}" for k in keys if k != uniq)
                added = len(index_keys) - before
                if added:
                    key_phys.extend([phy] * added)
                    key_stamps.extend([store_ts] * added)
            if rec is not None:
                cached.append((phy, rec))
        for (topic, qid), run in runs.items():
            cq = self._cqs.get((topic, qid))
            if cq is None:
                cq = self.consume_queue(topic, qid, create=True)
                assert cq is not None
            cq.put_run(run)
        self._index_and_cache(index_keys, key_phys, key_stamps, cached)

    def reput_hashes(self, hashes: Int64s, key_phys: Int64s, key_stamps: Int64s) -> None:
        """Index items whose key hashes are taken (arrays, as :func:`reputbatch.index_hashes`)."""
        from mqtier.store import reputbatch  # numpy: only writers pay its import

        reputbatch.index_hashes(self.index, hashes, key_phys, key_stamps)

    def _index_and_cache(
        self,
        index_keys: list[str],
        key_phys: list[int],
        key_stamps: list[int],
        cached: list[tuple[int, bytes]],
    ) -> None:
        """``topic#key`` items into the index, records into the cache: the rest of a reput."""
        from mqtier.store import reputbatch  # numpy: only writers pay its import

        if index_keys:
            reputbatch.index_keys(self.index, index_keys, key_phys, key_stamps)
        if cached:
            self.cache.put_many(cached)

    def write_checkpoint(self, offset: int) -> None:
        """Flush consume queues and index, then record ``offset`` as dispatched (writable)."""
        self._write_checkpoint(offset)

    def _write_checkpoint(self, offset: int) -> None:
        """Flush consume queues and index, then record ``offset`` as dispatched."""
        for cq in list(self._cqs.values()):
            cq.flush()
        self.index.flush()
        manifest = manifest_doc(
            (key for key, cq in list(self._cqs.items()) if cq.files),
            (f.path.name for f in self.index.files),
        )
        if manifest != self._manifest_saved:  # what exists changes rarely: a new queue or file
            save_manifest(self.root, manifest)
            self._manifest_saved = manifest
        now = int(time.time() * 1000)
        write_atomic(self.root / L.FILE_CHECKPOINT, Checkpoint(now, now, now, 0, offset).to_bytes())
        write_atomic(self.root / L.FILE_DISPATCH_CHECKPOINT, pack_dispatch_offset(offset))

    def read_dispatch_checkpoint(self) -> int | None:
        try:
            return unpack_dispatch_offset((self.root / L.FILE_DISPATCH_CHECKPOINT).read_bytes())
        except FileNotFoundError:
            return None

    @property
    def dispatched_end(self) -> int:
        """Commit-log offset below which every record is in the consume queues and index.

        Below ``durable_end`` while the reput catches up; equal to it on a read-only or
        freshly recovered store.
        """
        if self._reput is None:
            return self.commitlog.durable_end
        return min(self._reput.dispatched_offset, self.commitlog.durable_end)

    def checkpoint(self) -> None:
        """Dispatch, flush and checkpoint every acknowledged append now (a bulk ingest does,
        before its commit point, so that a full disk fails the run rather than its close).

        Raises:
            OSError: the derived files or the checkpoint could not be written.
        """
        if self._reput is not None:
            self._reput.checkpoint_through(self.commitlog.durable_end)

    def wait_dispatched(self, timeout: float | None = None) -> bool:
        """Block until every acknowledged append is visible to reads and queries."""
        if self._reput is None:
            return True
        return self._reput.wait_for(self.commitlog.durable_end, timeout)
