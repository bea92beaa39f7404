"""``expire`` drops old cold segments from the head of each queue and then their objects."""

from __future__ import annotations

import time

from mqtier import Store
from mqtier.backend.base import ColdStore
from mqtier.tier.catalog import load_catalog
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from mqtier.tier.expire import expire
from mqtier.tier.reader import ColdReader
from tests.cold.conftest import BROKER, fill


def test_expire_removes_old_segments_and_their_objects(hot: Store, cold: ColdStore) -> None:
    fill(hot, 300)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    old_objects = load_catalog(cold, BROKER).referenced_objects()
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    fill(hot, 300, start=300)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    state = load_catalog(cold, BROKER)
    ttl = int(time.time() * 1000) - cut + 1  # everything stored before `cut` is older
    old_index = next(iter(state.indexes))  # the first run's index object: only its messages
    report = expire(cold, state, default_ttl_ms=ttl)
    assert report.messages == 300
    # its data objects, and the index object that indexed nothing else (same commit)
    assert report.objects_deleted == len(old_objects) + 1
    assert old_index not in load_catalog(cold, BROKER).indexes and not cold.exists(old_index)
    left = {i.key for i in cold.list(f"{BROKER}/data/")}
    assert not (left & old_objects)
    after = load_catalog(cold, BROKER)
    reader = ColdReader(cold, BROKER)
    for q in range(3):
        assert after.first_offset(("orders", q)) == 100  # 300 messages over 3 queues expired
        assert [m.queue_offset for m in reader.read("orders", q, 0, 500)] == list(range(100, 200))


def test_expired_queue_is_not_tiered_again(hot: Store, cold: ColdStore) -> None:
    fill(hot, 90)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    time.sleep(0.02)
    expire(cold, load_catalog(cold, BROKER), default_ttl_ms=1)
    state = load_catalog(cold, BROKER)
    assert state.queues == {}
    report = run_dispatch(hot, cold, DispatchOptions(force=True))
    assert report.messages == 0  # the hot copies below the expired end are not re-uploaded
    fill(hot, 30, start=90)
    report = run_dispatch(hot, cold, DispatchOptions(force=True))
    assert report.messages == 30
    assert load_catalog(cold, BROKER).first_offset(("orders", 0)) == 30


def test_topic_ttl_and_dry_run(hot: Store, cold: ColdStore) -> None:
    fill(hot, 60)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    time.sleep(0.02)
    state = load_catalog(cold, BROKER)
    kept = expire(cold, state, default_ttl_ms=None, topic_ttl_ms={"other": 1})
    assert kept.messages == 0
    dry = expire(cold, state, default_ttl_ms=None, topic_ttl_ms={"orders": 1}, dry_run=True)
    assert dry.messages == 60
    assert load_catalog(cold, BROKER).seq == state.seq  # nothing committed


def test_reader_opened_before_expiry_skips_to_what_is_left(hot: Store, cold: ColdStore) -> None:
    """Expiry deletes objects a reader's catalog still names: it reloads and reads what is left."""
    fill(hot, 300)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    fill(hot, 300, start=300)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    reader = ColdReader(cold, BROKER, read_ahead=False)
    assert reader.state.first_offset(("orders", 0)) == 0
    expire(cold, load_catalog(cold, BROKER), default_ttl_ms=int(time.time() * 1000) - cut + 1)
    got = reader.read("orders", 0, 0, 500)
    assert [m.queue_offset for m in got] == list(range(100, 200))
    assert reader.stats["catalog_reloads"] == 1
