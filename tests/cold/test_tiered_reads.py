"""Read policies across tiers, the fallback to hot, and cold read-ahead."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from mqtier import Store
from mqtier.backend.base import ColdStore
from mqtier.backend.metered import RequestBill
from mqtier.backend.open import open_cold_store
from mqtier.errors import NotFoundError
from mqtier.format.coldobject import parse_block_index
from mqtier.tier.catalog import load_catalog
from mqtier.tier.clean import clean
from mqtier.tier.dispatch import DispatchOptions, DispatchReport, run_dispatch
from mqtier.tier.expire import expire
from mqtier.tier.reader import ColdReader
from mqtier.tier.tiered import ReadPolicy, iter_tiered, offset_by_time_tiered, read_tiered
from tests.cold.conftest import BROKER, fill


@pytest.fixture
def tiered(hot: Store, cold: ColdStore) -> Store:
    """900 messages tiered, the oldest hot files cleaned, then 300 more kept hot only."""
    fill(hot, 900)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    clean(hot, load_catalog(cold, BROKER), keep_ms=0)
    fill(hot, 300, start=900)
    return hot


def test_not_in_disk_joins_both_tiers(tiered: Store, cold: ColdStore) -> None:
    reader = ColdReader(cold, BROKER)
    hot_first = next(q.min_offset for q in tiered.offsets() if q.queue_id == 0)
    assert hot_first > 0  # the clean removed the head of queue 0 from the hot store
    msgs = read_tiered(tiered, reader, "orders", 0, 0, 1000)
    assert [m.queue_offset for m in msgs] == list(range(400))
    assert msgs[0].body.startswith(b"order 0 ")


def test_disable_reads_hot_only_and_force_cold_only(tiered: Store, cold: ColdStore) -> None:
    reader = ColdReader(cold, BROKER)
    hot_only = read_tiered(tiered, reader, "orders", 0, 0, 1000, policy=ReadPolicy.DISABLE)
    hot_first = next(q.min_offset for q in tiered.offsets() if q.queue_id == 0)
    assert [m.queue_offset for m in hot_only] == list(range(hot_first, 400))
    cold_only = read_tiered(tiered, reader, "orders", 0, 0, 1000, policy=ReadPolicy.FORCE)
    assert [m.queue_offset for m in cold_only] == list(range(300))


def test_cold_only_read_without_a_store(tiered: Store, cold: ColdStore) -> None:
    reader = ColdReader(cold, BROKER)
    msgs = read_tiered(None, reader, "orders", 1, 10, 5, tags=["odd"])
    assert [m.queue_offset for m in msgs] == [10, 12, 14]  # queue 1 holds i = 3k+1
    with pytest.raises(NotFoundError):
        reader.read("nosuch", 0, 0, 1)


def test_cold_failure_falls_back_to_hot_when_hot_has_it(hot: Store, cold: ColdStore) -> None:
    fill(hot, 300)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    reader = ColdReader(cold, BROKER)
    for info in cold.list(f"{BROKER}/data/"):  # every object gone: cold reads fail
        cold.delete([info.key])
    msgs = read_tiered(hot, reader, "orders", 0, 0, 50, policy=ReadPolicy.NOT_IN_MEM)
    assert [m.queue_offset for m in msgs] == list(range(50))


def test_read_ahead_prefetches_and_grows_the_window(hot: Store, cold: ColdStore) -> None:
    fill(hot, 1200, queues=1, size=2000)
    run_dispatch(hot, cold, DispatchOptions(force=True, block_bytes=8 << 10))
    with ColdReader(cold, BROKER) as reader:
        seen: list[int] = []
        off = 0
        while batch := reader.read("orders", 0, off, 16):
            seen.extend(m.queue_offset for m in batch)
            off = batch[-1].queue_offset + 1
        stats = reader.window_stats
    assert seen == list(range(1200))
    assert stats["prefetched_blocks"] > 0
    assert stats["prefetch_hits"] > 0
    assert stats["windows"]["orders/0"] > 16  # grew past one batch


def test_read_ahead_window_halves_when_prefetched_data_expires(hot: Store, cold: ColdStore) -> None:
    fill(hot, 600, queues=1, size=2000)
    run_dispatch(hot, cold, DispatchOptions(force=True, block_bytes=8 << 10))
    # A cache of ~2 blocks: a big window's prefetched blocks are evicted before they are read.
    reader = ColdReader(cold, BROKER, cache_bytes=16 << 10, fetch_concurrency=1)
    try:
        off = 0
        for _ in range(20):
            batch = reader.read("orders", 0, off, 8)
            off = batch[-1].queue_offset + 1
        reader._pool.shutdown(wait=True)  # type: ignore[union-attr]  # let prefetches land
        reader._pool = None
        assert reader.stats["expired_unread"] > 0
        assert reader.window_stats["windows"]["orders/0"] < 8 * 20
    finally:
        reader.close()


def test_read_ahead_fetches_each_block_once_in_few_large_gets(hot: Store, tmp_path: Path) -> None:
    fill(hot, 3000, queues=1, size=2000)
    bill = RequestBill()
    cold = open_cold_store(f"file://{tmp_path / 'metered'}", bill=bill)
    run_dispatch(
        hot, cold, DispatchOptions(force=True, block_bytes=16 << 10, object_bytes=128 << 10)
    )
    state = load_catalog(cold, BROKER)
    segments = state.queues[("orders", 0)]
    blocks = sum(
        len(parse_block_index(cold.get(s.object, s.index_pos, s.index_pos + s.index_len), s))
        for s in segments
    )
    stored = sum(s.stored_bytes for s in segments)
    bill = RequestBill()
    cold = open_cold_store(f"file://{tmp_path / 'metered'}", bill=bill)
    with ColdReader(cold, BROKER, state=state) as reader:
        off = 0
        while batch := reader.read("orders", 0, off, 16):
            assert [m.queue_offset for m in batch] == list(range(off, off + len(batch)))
            off += len(batch)
        stats = reader.window_stats
    assert off == 3000
    assert len(segments) > 1 and blocks > 8 * len(segments)
    index_bytes = sum(s.index_len for s in segments)
    # every block fetched exactly once, by read-ahead after the first reads
    assert bill.kinds["get"].bytes_in == stored + index_bytes
    assert bill.count("get") <= len(segments) * 2 + 4 < blocks
    assert stats["prefetch_hits"] > blocks // 2
    assert stats["prefetch_errors"] == 0


def test_close_stops_read_ahead_and_reads_still_work(hot: Store, cold: ColdStore) -> None:
    fill(hot, 600, queues=1, size=2000)
    run_dispatch(hot, cold, DispatchOptions(force=True, block_bytes=8 << 10))
    reader = ColdReader(cold, BROKER)
    assert len(reader.read("orders", 0, 0, 8)) == 8
    assert len(reader.read("orders", 0, 8, 8)) == 8  # sequential: read-ahead starts
    reader.close()
    gets = reader.stats["gets"]
    assert [m.queue_offset for m in reader.read("orders", 0, 16, 100)] == list(range(16, 116))
    assert reader._pool is None  # nothing restarted it
    assert reader.stats["gets"] >= gets


def _ts_of_first(st: Store, reader: ColdReader | None, offset: int) -> int:
    msgs = read_tiered(st, reader, "orders", 0, offset, 1)
    assert [m.queue_offset for m in msgs] == [offset]
    return msgs[0].store_ts


def test_offset_by_time_across_tiers(hot: Store, cold: ColdStore) -> None:
    # Three rounds a few ms apart, each 100 messages in queue 0: cold and cleaned, cold, hot only.
    for rnd in range(3):
        if rnd:
            time.sleep(0.02)
        fill(hot, 300, start=300 * rnd)
        if rnd == 1:
            run_dispatch(hot, cold, DispatchOptions(force=True, block_bytes=2 << 10))
            clean(hot, load_catalog(cold, BROKER), keep_ms=0)
    reader = ColdReader(cold, BROKER)
    assert hot.offsets()[0].min_offset > 0  # the oldest part is in the cold tier only
    starts = [_ts_of_first(hot, reader, off) for off in (0, 100, 200)]
    assert starts[0] < starts[1] < starts[2]
    for want, ts in zip((0, 100, 200), starts, strict=True):
        assert offset_by_time_tiered(hot, reader, "orders", 0, ts) == want
        assert offset_by_time_tiered(hot, reader, "orders", 0, ts - 1) <= want
    assert offset_by_time_tiered(hot, reader, "orders", 0, 0) == 0
    assert offset_by_time_tiered(hot, reader, "orders", 0, starts[2] + 10**9) == 300  # all older
    # each tier alone
    assert reader.offset_by_time("orders", 0, starts[1]) == 100
    assert reader.offset_by_time("orders", 0, starts[2]) == 200  # one past the cold end
    assert offset_by_time_tiered(None, reader, "orders", 0, starts[2]) == 200
    assert offset_by_time_tiered(hot, None, "orders", 0, starts[2]) == 200
    with pytest.raises(NotFoundError):
        offset_by_time_tiered(hot, reader, "orders", 7, 0)


@pytest.mark.parametrize("policy", list(ReadPolicy))
def test_iterating_in_batches_reads_what_one_read_does(
    tiered: Store, cold: ColdStore, policy: ReadPolicy
) -> None:
    reader = ColdReader(cold, BROKER)
    for offset, count, tags in [(0, 400, None), (0, 10**6, None), (350, 7, ["even"]), (5, 0, None)]:
        if policy is ReadPolicy.DISABLE:
            offset = max(offset, tiered.offsets()[0].min_offset)  # the hot store alone
        want = read_tiered(tiered, reader, "orders", 0, offset, count, policy=policy, tags=tags)
        if policy is ReadPolicy.FORCE:  # the cold tier alone: the batches stop at its end
            want = [m for m in want if m.queue_offset < 300]
        batches = list(
            iter_tiered(
                tiered, reader, "orders", 0, offset, count, policy=policy, tags=tags, batch=16
            )
        )
        got = [m.queue_offset for b in batches for m in b]
        assert got == [m.queue_offset for m in want], (policy, offset, count)
        assert all(len(b) <= 16 for b in batches)
    with pytest.raises(NotFoundError):
        list(iter_tiered(tiered, reader, "orders", 9, 0, 10))


def test_a_long_cold_read_streams_with_read_ahead(
    hot: Store, cold: ColdStore, bill: RequestBill
) -> None:
    fill(hot, 3000, queues=1, size=2000)
    run_dispatch(hot, cold, DispatchOptions(force=True, block_bytes=8 << 10))
    gets = bill.count("get")
    with ColdReader(cold, BROKER) as reader:
        batches = iter_tiered(None, reader, "orders", 0, 0, 10**9, policy=ReadPolicy.FORCE)
        assert [m.queue_offset for b in batches for m in b] == list(range(3000))
        assert reader.stats["prefetch_hits"] > 0
    assert bill.count("get") - gets < 3000 * 2000 // (8 << 10) // 4  # far fewer GETs than blocks


def test_dispatch_reports_progress_up_to_its_plan(hot: Store, cold: ColdStore) -> None:
    fill(hot, 600, size=2000)
    seen: list[tuple[int, int, int]] = []

    def hook(report: DispatchReport) -> None:
        total = sum(p.pending_bytes for p in report.plans)
        seen.append((total, report.raw_bytes, report.messages))

    report = run_dispatch(
        hot, cold, DispatchOptions(force=True, block_bytes=8 << 10), on_progress=hook
    )
    assert seen[0][1:] == (0, 0)  # first call: the plan, nothing packed yet
    assert len(seen) > 3
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(seen))
    assert seen[-1] == (report.raw_bytes, report.raw_bytes, 600)


def _expire_head(hot: Store, cold: ColdStore) -> None:
    """Two tiering runs 150 ms apart; expiry then drops each queue's first segment only.

    Queue 0 ends up with offsets 0..99 hot and 50..99 cold.
    """
    fill(hot, 150)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    time.sleep(0.15)
    fill(hot, 150, start=150)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    segs = load_catalog(cold, BROKER).queues[("orders", 0)]
    assert [(s.first, s.end) for s in segs] == [(0, 50), (50, 100)]
    # a TTL that ends between the two runs' messages
    ttl = int(time.time() * 1000) - (segs[0].max_ts + segs[1].min_ts) // 2
    report = expire(cold, load_catalog(cold, BROKER), default_ttl_ms=ttl)
    queues = {(q["topic"], q["queue"]): q for q in report.to_json()["queues"]}
    # queue offsets [0, 50) expired: the queue's cold data now starts at 50
    assert queues[("orders", 0)] == {
        "topic": "orders",
        "queue": 0,
        "segments": 1,
        "messages": 50,
        "from": 0,
        "to": 50,
    }


@pytest.mark.parametrize("policy", [ReadPolicy.NOT_IN_DISK, ReadPolicy.NOT_IN_MEM])
def test_offsets_expired_from_cold_are_read_from_hot(
    hot: Store, cold: ColdStore, policy: ReadPolicy
) -> None:
    # (Found in review: not_in_mem sent offsets below cold's first one to the cold reader,
    # which starts at its first offset, so 0..49 were skipped although the hot store has them.)
    _expire_head(hot, cold)
    reader = ColdReader(cold, BROKER)
    assert reader.state.first_offset(("orders", 0)) == 50
    for offset, count in [(0, 100), (0, 20), (40, 20), (60, 1000)]:
        msgs = read_tiered(hot, reader, "orders", 0, offset, count, policy=policy)
        want = list(range(offset, min(offset + count, 100)))
        assert [m.queue_offset for m in msgs] == want, (offset, count)
        batches = iter_tiered(hot, reader, "orders", 0, offset, count, policy=policy, batch=16)
        assert [m.queue_offset for b in batches for m in b] == want, (offset, count)
    tagged = read_tiered(hot, reader, "orders", 0, 45, 10, policy=policy, tags=["odd"])
    assert [m.queue_offset for m in tagged] == [45, 47, 49, 51, 53]  # queue 0 holds i = 3k
    # the cold tier alone has what expiry left
    forced = read_tiered(hot, reader, "orders", 0, 0, 100, policy=ReadPolicy.FORCE)
    assert [m.queue_offset for m in forced] == list(range(50, 100))


@pytest.mark.parametrize("policy", [ReadPolicy.NOT_IN_DISK, ReadPolicy.NOT_IN_MEM])
def test_a_queue_expired_entirely_from_cold_is_read_from_hot(
    hot: Store, cold: ColdStore, policy: ReadPolicy
) -> None:
    fill(hot, 300)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    expire(cold, load_catalog(cold, BROKER), default_ttl_ms=0)
    reader = ColdReader(cold, BROKER)
    assert reader.state.first_offset(("orders", 0)) is None  # only its end is left
    assert reader.state.next_offset(("orders", 0)) == 100
    msgs = read_tiered(hot, reader, "orders", 0, 0, 100, policy=policy)
    assert [m.queue_offset for m in msgs] == list(range(100))
    batches = iter_tiered(hot, reader, "orders", 0, 0, 100, policy=policy, batch=16)
    assert [m.queue_offset for b in batches for m in b] == list(range(100))
    assert offset_by_time_tiered(hot, reader, "orders", 0, 0) == 0


@pytest.mark.parametrize("everything", [False, True])
def test_a_reader_that_learns_of_an_expiry_mid_read_gets_the_rest_from_hot(
    hot: Store, cold: ColdStore, everything: bool
) -> None:
    fill(hot, 150)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    time.sleep(0.15)
    fill(hot, 150, start=150)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    reader = ColdReader(cold, BROKER, read_ahead=False)  # loaded before the expiry
    assert reader.state.first_offset(("orders", 0)) == 0
    state = load_catalog(cold, BROKER)
    segs = state.queues[("orders", 0)]
    ttl = 0 if everything else int(time.time() * 1000) - (segs[0].max_ts + segs[1].min_ts) // 2
    expire(cold, state, default_ttl_ms=ttl)  # and deletes the objects only it named
    msgs = read_tiered(hot, reader, "orders", 0, 0, 100, policy=ReadPolicy.NOT_IN_MEM)
    assert reader.stats["catalog_reloads"] == 1  # the read found an object gone
    assert [m.queue_offset for m in msgs] == list(range(100))


def test_offset_by_time_sees_hot_messages_older_than_the_cold_tier(
    hot: Store, cold: ColdStore
) -> None:
    # (Found in review: the cold tier answered first, so a time older than every message gave
    # cold's first offset, 50, although the hot store still holds 0..49.)
    _expire_head(hot, cold)
    reader = ColdReader(cold, BROKER)
    assert offset_by_time_tiered(hot, reader, "orders", 0, 0) == 0
    for offset in (10, 49, 50, 70):
        ts = _ts_of_first(hot, None, offset)
        want = offset_by_time_tiered(hot, None, "orders", 0, ts)  # the hot store holds them all
        assert offset_by_time_tiered(hot, reader, "orders", 0, ts) == want <= offset
    assert offset_by_time_tiered(hot, reader, "orders", 0, 2**62) == 100
    assert offset_by_time_tiered(None, reader, "orders", 0, 0) == 50  # cold alone: from 50
