"""The tiering job copies every hot message to the cold tier exactly once, byte for byte.

Covers: the round trip (memory://, file:// and one S3 run), a rerun with nothing new, several
incremental rounds with many objects and commits (through a catalog snapshot), the batch
policy and dry runs, the request economy of packing, and two jobs racing for one commit.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from mqtier import Message, Store
from mqtier.backend.base import ColdStore, ObjectInfo
from mqtier.backend.metered import RequestBill
from mqtier.backend.open import open_cold_store
from mqtier.backend.retrying import RetryingColdStore
from mqtier.errors import ColdHistoryMismatchError, CommitConflictError
from mqtier.tier import dispatch as dispatch_mod
from mqtier.tier.catalog import (
    PROBE_PAST,
    SNAPSHOT_EVERY,
    CatalogState,
    commit,
    commit_key,
    latest_key,
    load_catalog,
)
from mqtier.tier.dispatch import BatchPolicy, DispatchOptions, run_dispatch
from tests.tier.conftest import (
    BROKER,
    CONFIG,
    NO_WAIT,
    TOPIC,
    Ledger,
    append,
    assert_cold_equals,
    assert_hot_equals,
    check_catalog,
    data_objects,
    make_messages,
    raw_records,
)

Opener = Callable[..., RetryingColdStore]
FORCE = DispatchOptions(force=True)


def writes(bill: RequestBill) -> int:
    return bill.count("put") + bill.count("create")


def commit_records(cold: ColdStore) -> list[str]:
    return [o.key for o in cold.list(f"{BROKER}/catalog/commits/")]


# -- 1. round trip -------------------------------------------------------------------------------


def test_round_trip_every_message_byte_identical(
    hot: Store, cold_url: str, open_cold: Opener, bill: RequestBill
) -> None:
    rng = random.Random(1)
    hot.create_topic("audit", 2)
    ledger = Ledger()
    for _ in range(6):  # ~1.4 MB: the commit log rolls into a second 1 MiB file
        append(hot, ledger, make_messages(rng, 400, max_body=600))
        append(hot, ledger, make_messages(rng, 100, topic="audit", queues=2))
    ledger.check_dense()
    assert_hot_equals(hot, ledger)
    assert (
        max(e.phy_offset for q in ledger.queues.values() for e in q) > CONFIG.commitlog_file_bytes
    )
    cold = open_cold(cold_url)

    report = run_dispatch(hot, cold, FORCE)

    assert report.messages == ledger.appended
    assert report.queues_tiered == len(ledger.queues) == 6
    assert report.commits == 1 and report.committed_seq == 1
    assert_cold_equals(cold, ledger)  # body, keys, tags, queue and commit-log offsets, order
    # The stored records are the original commit-log bytes, untouched.
    phy = {(k, e.queue_offset): e.phy_offset for k, q in ledger.queues.items() for e in q}
    seen = 0
    for key, qoff, rec in raw_records(cold, load_catalog(cold, BROKER)):
        assert rec == hot.commitlog.read(phy[(key, qoff)], len(rec)), (key, qoff)
        seen += 1
    assert seen == ledger.appended

    # A second run with nothing new: no upload, no commit record, nothing pending.
    before = writes(bill)
    again = run_dispatch(hot, cold, FORCE)
    assert again.queues_pending == 0 and again.to_json()["up_to_date"] is True
    assert (again.messages, again.objects, again.commits) == (0, 0, 0)
    assert again.committed_seq == 1
    assert writes(bill) == before
    assert commit_records(cold) == [commit_key(BROKER, 1)]
    assert_cold_equals(cold, ledger)


def test_round_trip_to_s3(hot: Store, s3_url: tuple[str, dict[str, Any]]) -> None:
    """The same protocol over S3 (moto): conditional create included."""
    url, options = s3_url
    bill = RequestBill()
    cold = open_cold_store(url, options, bill=bill, retry=NO_WAIT)
    rng = random.Random(2)
    ledger = Ledger()
    append(hot, ledger, make_messages(rng, 300))
    run_dispatch(hot, cold, DispatchOptions(force=True, object_bytes=32 << 10))
    append(hot, ledger, make_messages(rng, 100))
    second = run_dispatch(hot, cold, DispatchOptions(force=True, object_bytes=32 << 10))
    assert second.committed_seq == 2
    assert_cold_equals(cold, ledger)
    before = writes(bill)
    assert run_dispatch(hot, cold, FORCE).queues_pending == 0
    assert writes(bill) == before
    # A stale job cannot create commit 2 again on S3 either.
    with pytest.raises(CommitConflictError):
        commit(cold, CatalogState(BROKER, seq=1), added=[], run_id="stale")
    cold.close()


# -- 2. incremental rounds -----------------------------------------------------------------------


def test_incremental_rounds_many_objects_and_commits(
    hot: Store, cold_url: str, open_cold: Opener, bill: RequestBill
) -> None:
    rng = random.Random(3)
    ledger = Ledger()
    cold = open_cold(cold_url)
    opts = DispatchOptions(
        force=True, object_bytes=6 << 10, commit_every_bytes=12 << 10, block_bytes=4 << 10
    )
    total_commits = 0
    for rnd in range(6):
        append(hot, ledger, make_messages(rng, rng.randint(150, 300), tag=str(rnd)))
        report = run_dispatch(hot, cold, opts)
        assert report.objects >= 3, report.to_json()
        assert report.commits >= 2, report.to_json()
        assert report.committed_seq == report.committed_seq_before + report.commits
        total_commits += report.commits
        assert_cold_equals(cold, ledger)
    assert total_commits > SNAPSHOT_EVERY  # so loads go through a snapshot and a tail

    # SNAPSHOT_EVERY is bound as commit()'s default when the module loads: monkeypatching the
    # module constant would not change it, so the test commits past 16 instead.
    state = load_catalog(cold, BROKER)
    assert state.seq == total_commits
    pointer = orjson.loads(cold.get(latest_key(BROKER)))
    snap = pointer["snapshot_seq"]
    assert snap == (total_commits // SNAPSHOT_EVERY) * SNAPSHOT_EVERY
    # LATEST + snapshot + the commit it summarises (cross-checked) + the tail of commit
    # records + the probe that finds none + the probes past it that look for a hole.
    assert state.loaded_requests == 3 + (state.seq - snap) + 1 + PROBE_PAST

    # The snapshot + tail adds up to the same state as replaying every commit record.
    cold.delete([latest_key(BROKER)])
    replayed = load_catalog(cold, BROKER)
    assert replayed.loaded_requests == 1 + state.seq + 1 + PROBE_PAST
    assert replayed.queues == state.queues and replayed.seq == state.seq
    assert_cold_equals(cold, ledger)

    # Every object in the data prefix is referenced: nothing failed, nothing leaked.
    assert data_objects(cold) == state.referenced_objects()


def test_max_bytes_runs_tier_a_prefix_and_converge(
    hot: Store, memory_url: str, open_cold: Opener
) -> None:
    rng = random.Random(4)
    ledger = Ledger()
    append(hot, ledger, make_messages(rng, 600))
    cold = open_cold(memory_url)
    runs = 0
    while True:
        runs += 1
        report = run_dispatch(hot, cold, DispatchOptions(force=True, max_bytes=40 << 10))
        cold_view_ok = load_catalog(cold, BROKER)
        check_catalog(cold_view_ok)
        if report.queues_pending == 0:
            break
        assert report.raw_bytes <= (40 << 10) + 1024  # the budget, plus at most one record
        assert runs < 50
    assert runs > 3
    assert_cold_equals(cold, ledger)


def test_dispatch_while_a_writer_appends(hot: Store, memory_url: str, open_cold: Opener) -> None:
    """The job tiers what was durable when it looked; a writer keeps appending meanwhile."""
    ledger = Ledger()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        rng = random.Random(10)
        try:
            while not stop.is_set():
                msgs = make_messages(rng, rng.randint(1, 30))
                results = hot.append_batch(msgs)
                with lock:
                    ledger.add(msgs, results)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    cold = open_cold(memory_url)
    opts = DispatchOptions(force=True, object_bytes=8 << 10, commit_every_bytes=16 << 10)
    t = threading.Thread(target=writer)
    t.start()
    tiered_runs = 0
    try:
        # 1.5 s of runs, and at least 3 that tiered something (a loaded machine takes longer)
        deadline, give_up = time.monotonic() + 1.5, time.monotonic() + 30
        while time.monotonic() < deadline or (tiered_runs < 3 and time.monotonic() < give_up):
            if run_dispatch(hot, cold, opts).messages:
                tiered_runs += 1
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors
    assert tiered_runs >= 3
    hot.wait_dispatched()
    run_dispatch(hot, cold, opts)
    for entries in ledger.queues.values():  # appends from one thread, but sort to be sure
        entries.sort(key=lambda e: e.queue_offset)
    ledger.check_dense()
    assert_cold_equals(cold, ledger)


# -- 3. batch policy and dry runs ----------------------------------------------------------------


def test_batch_policy_thresholds_and_dry_run(
    hot: Store, memory_url: str, open_cold: Opener, bill: RequestBill
) -> None:
    ledger = Ledger()
    rng = random.Random(5)

    def to_queue(q: int, n: int, size: int) -> list[Message]:
        return [Message(TOPIC, rng.randbytes(size), queue_id=q, keys=(f"q{q}",)) for _ in range(n)]

    append(hot, ledger, to_queue(0, 50, 20))  # few, small and fresh: waits
    append(hot, ledger, to_queue(1, 150, 20))  # count threshold
    append(hot, ledger, to_queue(2, 10, 3000))  # bytes threshold
    cold = open_cold(memory_url)
    policy = BatchPolicy(max_count=100, max_bytes=16 << 10, max_age_s=3600)

    dry = run_dispatch(hot, cold, DispatchOptions(policy=policy, dry_run=True))
    assert writes(bill) == 0 and bill.count("delete") == 0
    assert not cold.list("")
    assert {(p.queue, p.reason, p.start, p.end) for p in dry.plans} == {
        (1, "count", 0, 150),
        (2, "bytes", 0, 10),
    }
    assert [(p.queue, p.end - p.start, p.reason) for p in dry.waiting] == [(0, 50, "waiting")]
    assert dry.to_json()["waiting_messages"] == 50 and dry.messages == 0

    real = run_dispatch(hot, cold, DispatchOptions(policy=policy))
    assert real.messages == 160
    state = load_catalog(cold, BROKER)
    assert {k: state.next_offset(k) for k in state.queues} == {(TOPIC, 1): 150, (TOPIC, 2): 10}
    assert state.next_offset((TOPIC, 0)) is None

    # Nothing new for queues 1 and 2; queue 0 still waits.
    again = run_dispatch(hot, cold, DispatchOptions(policy=policy))
    assert again.queues_pending == 0 and again.messages == 0
    assert [p.queue for p in again.waiting] == [0]

    # max_age_s=0: every pending message is old enough.
    aged = run_dispatch(hot, cold, DispatchOptions(policy=BatchPolicy(100, 1 << 40, 0.0)))
    assert [(p.queue, p.reason) for p in aged.plans] == [(0, "age")]
    assert_cold_equals(cold, ledger)


# -- 4. request economy --------------------------------------------------------------------------


def test_thousand_small_queues_share_objects(
    tmp_path: Path, memory_url: str, open_cold: Opener, bill: RequestBill
) -> None:
    ledger = Ledger()
    with Store.open(tmp_path / "wide", create=True, config=CONFIG) as st:
        st.create_topic("wide", 1000)
        msgs = [
            Message("wide", f"q{q} m{i}".encode() * 3, queue_id=q, keys=(f"k{q}.{i}",), tags="t")
            for i in range(10)
            for q in range(1000)
        ]
        append(st, ledger, msgs)
        cold = open_cold(memory_url)
        report = run_dispatch(st, cold, DispatchOptions(force=True, object_bytes=1 << 20))
        assert report.messages == 10_000 and report.queues_tiered == 1000
        assert writes(bill) <= 5, bill.to_json()
        assert bill.count("create") == 1
        state = load_catalog(cold, BROKER)
        assert len(state.referenced_objects()) == report.objects <= 4
        assert all(len(segs) == 1 for segs in state.queues.values())  # one segment per queue
        assert_cold_equals(cold, ledger)


def test_busy_queue_fills_objects_of_its_own(
    hot: Store, memory_url: str, open_cold: Opener, bill: RequestBill
) -> None:
    ledger = Ledger()
    rng = random.Random(6)
    object_bytes = 64 << 10
    busy = [Message(TOPIC, rng.randbytes(900), queue_id=0) for _ in range(300)]  # incompressible
    append(hot, ledger, busy)
    quiet = [Message(TOPIC, b"quiet %d" % i, queue_id=1 + i % 3) for i in range(30)]
    append(hot, ledger, quiet)
    cold = open_cold(memory_url)

    report = run_dispatch(
        hot, cold, DispatchOptions(force=True, object_bytes=object_bytes, block_bytes=16 << 10)
    )

    state = load_catalog(cold, BROKER)
    by_object: dict[str, set[int]] = {}
    stored: dict[str, int] = {}
    for (_topic, q), segs in state.queues.items():
        for s in segs:
            by_object.setdefault(s.object, set()).add(q)
            stored[s.object] = stored.get(s.object, 0) + s.stored_bytes
    *own, last = sorted(by_object)
    assert len(own) >= 3, by_object
    assert all(by_object[o] == {0} for o in own), by_object
    # Cut at the compressed target, give or take one block. While no block of the run has been
    # compressed yet (a loaded machine), an object is cut by its raw size instead, and these
    # records (random bodies, compressible headers) shrink by ~8 %: allow that much less.
    low = int(object_bytes * 0.88)
    assert all(low <= stored[o] < object_bytes + (20 << 10) for o in own), stored
    # The quiet queues share the last object, with the busy queue's remainder unless its last
    # piece happened to fill an object (where the cut falls depends on the compression estimate).
    assert by_object[last] - {0} == {1, 2, 3}, by_object
    assert len(state.queues[(TOPIC, 0)]) == len(own) + (0 in by_object[last])  # one per object
    # one PUT per data object, one for the commit's index object and one for LATEST
    assert report.objects == len(by_object) == bill.count("put") - 2
    assert bill.count("create") == 1 and len(state.indexes) == 1
    assert_cold_equals(cold, ledger)


# -- 6. racing jobs ------------------------------------------------------------------------------


class _Hooked(ColdStore):
    """Delegates to ``inner``; calls ``before_commit`` once, before the first commit create."""

    def __init__(self, inner: ColdStore, before_commit: Callable[[], None]) -> None:
        self.inner = inner
        self.url = inner.url
        self.before_commit: Callable[[], None] | None = before_commit

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def create(self, key: str, data: bytes) -> bool:
        hook, self.before_commit = self.before_commit, None
        if hook is not None and "/catalog/commits/" in key:
            hook()
        return self.inner.create(key, data)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self.inner.get(key, start, end)

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        self.inner.delete(keys)

    def size(self, key: str) -> int:
        return self.inner.size(key)


def test_stale_state_commit_is_refused(hot: Store, memory_url: str, open_cold: Opener) -> None:
    ledger = Ledger()
    append(hot, ledger, make_messages(random.Random(7), 200))
    cold = open_cold(memory_url)
    stale = load_catalog(cold, BROKER)
    run_dispatch(hot, cold, FORCE)
    winner = load_catalog(cold, BROKER)
    segs = [s for ss in winner.queues.values() for s in ss]

    with pytest.raises(CommitConflictError) as info:
        commit(cold, stale, added=segs, run_id="loser")
    assert info.value.exit_code == 5
    assert stale.seq == 0 and not stale.queues  # nothing applied to the loser's state
    assert commit_records(cold) == [commit_key(BROKER, 1)]
    assert orjson.loads(cold.get(commit_key(BROKER, 1)))["run_id"] != "loser"
    assert_cold_equals(cold, ledger)


def test_a_run_overtaken_before_its_commit_loses_cleanly(
    hot: Store, memory_url: str, open_cold: Opener
) -> None:
    """Run A uploads, then run B commits first (inside A's window); A must commit nothing."""
    ledger = Ledger()
    rng = random.Random(8)
    append(hot, ledger, make_messages(rng, 300))
    plain = open_cold(memory_url)
    b_reports = []

    def other_job() -> None:
        b_reports.append(run_dispatch(hot, plain, FORCE))

    racer = open_cold(memory_url, wrap=lambda s: _Hooked(s, other_job))
    with pytest.raises(CommitConflictError) as info:
        run_dispatch(hot, racer, DispatchOptions(force=True, object_bytes=16 << 10))
    assert info.value.exit_code == 5
    assert b_reports[0].committed_seq == 1
    assert commit_records(plain) == [commit_key(BROKER, 1)]
    assert_cold_equals(plain, ledger)

    # The loser runs again: up to date, nothing uploaded twice.
    assert run_dispatch(hot, racer, FORCE).queues_pending == 0
    append(hot, ledger, make_messages(rng, 50))
    later = run_dispatch(hot, racer, FORCE)
    assert later.committed_seq == 2
    assert_cold_equals(plain, ledger)
    assert data_objects(plain) == load_catalog(plain, BROKER).referenced_objects()


def test_two_threads_racing_from_one_state(
    hot: Store, cold_url: str, open_cold: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both jobs load the same catalog state, then race: one commit wins, one conflicts."""
    ledger = Ledger()
    rng = random.Random(9)
    append(hot, ledger, make_messages(rng, 400))
    barrier = threading.Barrier(2, timeout=10)
    real_load = dispatch_mod.load_catalog

    def load_then_wait(cold: ColdStore, broker: str) -> CatalogState:
        state = real_load(cold, broker)
        barrier.wait()
        return state

    monkeypatch.setattr(dispatch_mod, "load_catalog", load_then_wait)
    outcomes: list[Any] = [None, None]

    def job(i: int) -> None:
        cold = open_cold(cold_url)
        try:
            outcomes[i] = run_dispatch(hot, cold, DispatchOptions(force=True, object_bytes=8 << 10))
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[i] = exc

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    monkeypatch.undo()

    conflicts = [o for o in outcomes if isinstance(o, CommitConflictError)]
    wins = [o for o in outcomes if isinstance(o, dispatch_mod.DispatchReport)]
    assert len(conflicts) == 1 and len(wins) == 1, outcomes
    assert conflicts[0].exit_code == 5
    assert wins[0].committed_seq == 1 and wins[0].messages == ledger.appended
    cold = open_cold(cold_url)
    assert commit_records(cold) == [commit_key(BROKER, 1)]
    assert_cold_equals(cold, ledger)

    # The loser's uploads may outlive the winner's collection; the next run that commits
    # removes them, and nothing is tiered twice.
    append(hot, ledger, make_messages(rng, 20))
    assert run_dispatch(hot, cold, FORCE).committed_seq == 2
    assert_cold_equals(cold, ledger)
    assert data_objects(cold) == load_catalog(cold, BROKER).referenced_objects()


def test_two_stores_under_one_broker_name(
    tmp_path: Path, memory_url: str, open_cold: Opener
) -> None:
    """Two hot stores that share a broker name and a cold tier (a misconfiguration).

    Their records have the same sizes, so the first store's last tiered message sits at the
    same commit-log offset in the second store: only its store time tells them apart. The
    second store's run is refused and commits nothing; the cold queue keeps the first's data.
    """
    cold = open_cold(memory_url)
    ledgers = [Ledger(), Ledger()]
    stores = [Store.open(tmp_path / f"s{i}", create=True, config=CONFIG) for i in range(2)]
    try:
        for i, st in enumerate(stores):
            if i:
                time.sleep(0.01)  # the second store's messages are stored later
            st.create_topic(TOPIC, 1)
            msgs = [Message(TOPIC, b"store%d-%d" % (i, n), queue_id=0) for n in range(100 + 50 * i)]
            append(st, ledgers[i], msgs)
        first = run_dispatch(stores[0], cold, FORCE)
        cq = stores[1].consume_queue(TOPIC, 0)
        assert (
            cq is not None
            and cq.unit(99)[0] == load_catalog(cold, BROKER).queues[(TOPIC, 0)][-1].cl_max
        )  # the commit-log offsets cannot tell the two apart
        with pytest.raises(ColdHistoryMismatchError) as info:
            run_dispatch(stores[1], cold, FORCE)
    finally:
        for st in stores:
            st.close()
    assert first.committed_seq == 1 and info.value.exit_code == 15
    assert "store time" in str(info.value)
    assert load_catalog(cold, BROKER).seq == 1
    assert_cold_equals(cold, ledgers[0])


# -- 7. two stores under one broker name ---------------------------------------------------------


@pytest.mark.parametrize("other_size", [80, 200], ids=["shorter", "longer"])
def test_a_second_store_under_the_same_broker_name_is_refused(
    hot: Store, tmp_path: Path, memory_url: str, open_cold: Opener, other_size: int
) -> None:
    ledger = Ledger()
    rng = random.Random(21)
    append(hot, ledger, make_messages(rng, 120, queues=1))
    cold = open_cold(memory_url)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    before = load_catalog(cold, BROKER)
    objects = data_objects(cold)
    # Another store, same broker name: its queue 0 holds other messages at the same offsets.
    with Store.open(tmp_path / "other", create=True, config=CONFIG) as other:
        other.create_topic(TOPIC, 4)
        other.append_batch(make_messages(random.Random(99), other_size, queues=1))
        other.wait_dispatched()
        with pytest.raises(ColdHistoryMismatchError) as info:
            run_dispatch(other, cold, DispatchOptions(force=True))
    assert info.value.exit_code == 15
    assert f"{TOPIC}/0" in str(info.value) and repr(BROKER) in str(info.value)
    # nothing of the other store went in, nothing of the first store's tiering changed
    after = load_catalog(cold, BROKER)
    assert after.seq == before.seq and after.queues == before.queues
    assert data_objects(cold) == objects
    assert_cold_equals(cold, ledger)
    # the first store goes on as before
    append(hot, ledger, make_messages(rng, 30, queues=1))
    assert run_dispatch(hot, cold, DispatchOptions(force=True)).messages == 30
    assert_cold_equals(cold, ledger)
