"""Index merges: level by level, or all at once; exact, atomic, and racing merges lose cleanly."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtier import Store
from mqtier.backend.memory_store import MemoryColdStore
from mqtier.errors import CommitConflictError
from mqtier.index.merge import MergeOptions, merge_indexes, plan_merges
from mqtier.index.query import open_cold_index, query_key
from mqtier.tier.catalog import index_prefix, load_catalog
from mqtier.tier.compact import CompactOptions, compact
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from mqtier.tier.expire import expire
from tests.tier.conftest import BROKER, CONFIG, TOPIC, Ledger, append, make_messages

RUNS = 20


@pytest.fixture
def tiered(tmp_path: Path) -> Iterator[tuple[MemoryColdStore, dict[str, set[tuple[int, int]]]]]:
    """RUNS tiering runs (one index object each) and, per key, the messages carrying it."""
    name = f"merge-{tmp_path.name}"
    cold = MemoryColdStore(name)
    rng = random.Random(11)
    by_key: dict[str, set[tuple[int, int]]] = {}
    with Store.open(tmp_path / "s", config=CONFIG, create=True, writable=True) as st:
        for _ in range(RUNS):
            append(st, Ledger(), make_messages(rng, 15))
            run_dispatch(st, cold, DispatchOptions(force=True))
            time.sleep(0.002)  # runs a few ms apart, for the expiry below
        for q in st.offsets():
            for m in st.read(q.topic, q.queue_id, 0, q.max_offset):
                for k in m.keys:
                    by_key.setdefault(k, set()).add((m.queue_id, m.queue_offset))
    yield cold, by_key
    MemoryColdStore.forget(name)


def _answers(cold: MemoryColdStore, keys: list[str]) -> dict[str, set[tuple[int, int]]]:
    index = open_cold_index(cold, BROKER)
    return {
        k: {
            (h.message.queue_id, h.message.queue_offset)
            for h in query_key(topic=TOPIC, key=k, index=index, max_results=1 << 20).hits
        }
        for k in keys
    }


def test_level_merges_leave_fewer_than_fanout_objects_per_level(tiered) -> None:
    cold, by_key = tiered
    keys = sorted(by_key)[:40]
    report = merge_indexes(cold, load_catalog(cold, BROKER), MergeOptions(fanout=4))
    state = load_catalog(cold, BROKER)
    levels = Counter(e.level for e in state.indexes.values())
    assert all(n < 4 for n in levels.values()), levels
    # 20 runs in base 4 is 110: one level-2 object, one level-1, none left at level 0
    assert levels == {2: 1, 1: 1}, levels
    assert report.items_read == report.items_written + report.items_dropped
    assert _answers(cold, keys) == {k: by_key[k] for k in keys}
    # what the merges replaced is gone, and nothing else is under index/
    assert {i.key for i in cold.list(index_prefix(BROKER))} == set(state.indexes)


def test_a_full_merge_leaves_one_object_and_the_same_answers(tiered) -> None:
    cold, by_key = tiered
    keys = sorted(by_key)[:40]
    merge_indexes(cold, load_catalog(cold, BROKER), MergeOptions(full=True))
    state = load_catalog(cold, BROKER)
    assert len(state.indexes) == 1
    assert _answers(cold, keys) == {k: by_key[k] for k in keys}


def test_merges_drop_expired_entries_and_follow_compacted_segments(tiered) -> None:
    cold, by_key = tiered
    # level merges first, so that objects index both what expires and what stays
    merge_indexes(cold, load_catalog(cold, BROKER), MergeOptions(fanout=4))
    state = load_catalog(cold, BROKER)
    # expire about half: every segment older than the 10th run's newest message
    tenth = sorted({s.max_ts for segs in state.queues.values() for s in segs})[9]
    ttl = int(time.time() * 1000) - tenth
    gone = expire(cold, state, default_ttl_ms=ttl)
    assert gone.messages > 0
    compact(cold, state, CompactOptions(small_bytes=1 << 30))
    report = merge_indexes(cold, state, MergeOptions(full=True))
    assert report.items_dropped > 0 and report.items_repointed > 0
    live = {
        (q, off)
        for (_t, q), segs in load_catalog(cold, BROKER).queues.items()
        for off in range(segs[0].first, segs[-1].end)
    }
    keys = sorted(by_key)[:60]
    index = open_cold_index(cold, BROKER)
    for k in keys:
        hits = query_key(topic=TOPIC, key=k, index=index, max_results=1 << 20).hits
        assert {(h.message.queue_id, h.message.queue_offset) for h in hits} == by_key[k] & live
        # re-pointed at the compacted objects: each hit is one ranged GET of its block again
        assert all(h.byte_range and h.byte_range != (0, 0) for h in hits)


def test_two_merges_racing_on_one_prefix_cannot_both_commit(tiered) -> None:
    cold, by_key = tiered
    first, second = load_catalog(cold, BROKER), load_catalog(cold, BROKER)
    merge_indexes(cold, first, MergeOptions(full=True))
    with pytest.raises(CommitConflictError):
        merge_indexes(cold, second, MergeOptions(full=True))
    keys = sorted(by_key)[:20]
    assert _answers(cold, keys) == {k: by_key[k] for k in keys}
    assert len(load_catalog(cold, BROKER).indexes) == 1


def test_a_rerun_with_nothing_due_deletes_what_a_stopped_merge_replaced(
    tiered, monkeypatch: pytest.MonkeyPatch
) -> None:
    cold, by_key = tiered

    def stopped(keys: list[str]) -> None:
        raise KeyboardInterrupt  # the merge stops right after its commit, before deleting

    with monkeypatch.context() as m:
        m.setattr(cold, "delete", stopped)
        with pytest.raises(KeyboardInterrupt):
            merge_indexes(cold, load_catalog(cold, BROKER), MergeOptions(full=True))
    state = load_catalog(cold, BROKER)
    assert len(state.indexes) == 1
    left = {i.key for i in cold.list(index_prefix(BROKER))} - set(state.indexes)
    assert len(left) == RUNS  # the objects the committed merge replaced are still there
    assert not plan_merges(state, MergeOptions())
    report = merge_indexes(cold, state, MergeOptions())
    assert report.objects_deleted == RUNS and not report.merges
    assert {i.key for i in cold.list(index_prefix(BROKER))} == set(state.indexes)
    assert merge_indexes(cold, state, MergeOptions()).objects_deleted == 0
    keys = sorted(by_key)[:20]
    assert _answers(cold, keys) == {k: by_key[k] for k in keys}


def test_a_dry_run_changes_nothing(tiered) -> None:
    cold, _ = tiered
    before = {i.key for i in cold.list("")}
    report = merge_indexes(cold, load_catalog(cold, BROKER), MergeOptions(fanout=4, dry_run=True))
    assert report.merges and not report.written
    assert {i.key for i in cold.list("")} == before


def test_each_query_on_one_index_explains_only_itself(tiered) -> None:
    cold, by_key = tiered
    keys = sorted(by_key)[:3]
    with open_cold_index(cold, BROKER) as index:
        objects = len(index.state.indexes)
        first = query_key(topic=TOPIC, key=keys[0], index=index).explain.to_json()
        assert first["index_objects"] == objects
        assert first["steps"][0]["step"] == "catalog"  # opening the index cost it
        for k in keys[1:]:
            doc = query_key(topic=TOPIC, key=k, index=index).explain.to_json()
            assert doc["index_objects"] == objects  # not added up across queries
            assert "catalog" not in [s["step"] for s in doc["steps"]]


def test_compact_says_what_it_deleted_when_no_merge_was_due(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mqtier.backend.open import open_cold_store
    from mqtier.cli import app

    url = f"file://{tmp_path / 'cold'}"
    with Store.open(tmp_path / "s", config=CONFIG, create=True, writable=True) as st:
        append(st, Ledger(), make_messages(random.Random(3), 10))
        run_dispatch(st, open_cold_store(url), DispatchOptions(force=True))
    left = tmp_path / "cold" / index_prefix(BROKER) / f"{1:020d}" / "killed-L0.mqi"
    left.write_bytes(b"an object a killed merge uploaded")  # settled: seq 1 is committed
    runner = CliRunner()
    res = runner.invoke(app, ["compact", "--cold", url, "--broker", BROKER])
    assert res.exit_code == 0, res.output
    assert "deleted 1 object no commit names any more" in res.output
    assert not left.exists()
    res = runner.invoke(app, ["compact", "--cold", url, "--broker", BROKER, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["index"]["objects_deleted"] == 0
