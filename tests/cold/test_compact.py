"""``compact`` merges runs of small cold segments and swaps them in one commit."""

from __future__ import annotations

import itertools

import orjson
import pytest

from mqtier import Store
from mqtier.backend.base import ColdStore
from mqtier.errors import CommitConflictError, CorruptionError
from mqtier.format.coldobject import parse_block_index
from mqtier.tier.catalog import CatalogState, commit_key, load_catalog
from mqtier.tier.compact import CompactOptions, compact, small_runs
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from mqtier.tier.packer import PackOptions
from mqtier.tier.reader import ColdReader
from tests.cold.conftest import BROKER, fill

ROUNDS = 6


def tier_in_rounds(hot: Store, cold: ColdStore, rounds: int = ROUNDS) -> None:
    """``rounds`` dispatch runs of 60 messages: each queue gets one small segment per run."""
    for rnd in range(rounds):
        fill(hot, 60, start=60 * rnd)
        run_dispatch(hot, cold, DispatchOptions(force=True, block_bytes=2 << 10))


def cold_records(cold: ColdStore) -> dict[int, list[bytes]]:
    """Every committed record of each queue of topic "orders", read through a fresh catalog."""
    reader = ColdReader(cold, BROKER, read_ahead=False)
    out = {}
    for q in range(3):
        msgs = reader.read("orders", q, 0, 10_000)
        assert [m.queue_offset for m in msgs] == list(range(len(msgs)))
        out[q] = [(m.phy_offset, m.body, m.properties) for m in msgs]
    return out


def data_objects(cold: ColdStore) -> set[str]:
    return {i.key for i in cold.list(f"{BROKER}/data/")}


def test_compaction_merges_small_runs_and_keeps_every_record(hot: Store, cold: ColdStore) -> None:
    tier_in_rounds(hot, cold)
    before = load_catalog(cold, BROKER)
    seq_before = before.seq
    assert all(len(segs) == ROUNDS for segs in before.queues.values())
    records = cold_records(cold)
    old_objects = data_objects(cold)

    seen: list[tuple[int, int, int]] = []
    report = compact(
        cold,
        before,
        on_progress=lambda r: seen.append((r.runs_done, r.messages_done, r.stored_bytes_done)),
    )

    # progress once per merged segment, growing to the whole of what was merged
    assert len(seen) == 3 * ROUNDS and seen == sorted(seen)
    assert seen[-1][1:] == (60 * ROUNDS, report.stored_bytes_to_merge)
    after = load_catalog(cold, BROKER)
    assert after.seq == seq_before + 1 == report.committed_seq
    assert all(len(segs) == 1 for segs in after.queues.values())  # one object holds them all
    assert cold_records(cold) == records  # the same records, the same offsets
    # the old objects are gone, and nothing but the new objects is left
    assert data_objects(cold) == after.referenced_objects()
    assert not (old_objects & data_objects(cold))
    assert report.objects_deleted == len(old_objects)
    doc = report.to_json()
    assert doc["segments_merged"] == 3 * ROUNDS and doc["segments_written"] == 3
    assert doc["messages"] == 60 * ROUNDS
    queues = {(q["topic"], q["queue"]): q for q in doc["queues"]}
    assert [(q["topic"], q["queue"]) for q in doc["queues"]] == sorted(queues)
    assert queues[("orders", 1)] == {
        "topic": "orders",
        "queue": 1,
        "segments_before": ROUNDS,
        "messages": 20 * ROUNDS,
        "segments_after": 1,
    }
    # the commit record removes the old segments and adds the new ones, in one step
    record = orjson.loads(cold.get(commit_key(BROKER, after.seq)))
    assert len(record["removed"]) == 3 * ROUNDS and len(record["added"]) == 3
    # dispatch goes on after a compaction, and a second compaction has nothing to do
    fill(hot, 60, start=60 * ROUNDS)
    assert run_dispatch(hot, cold, DispatchOptions(force=True)).messages == 60
    assert not small_runs(load_catalog(cold, BROKER), CompactOptions(min_run=3))


def test_small_objects_cut_at_the_target_size(hot: Store, cold: ColdStore) -> None:
    tier_in_rounds(hot, cold)
    report = compact(
        cold,
        load_catalog(cold, BROKER),
        CompactOptions(pack=PackOptions(object_bytes=2 << 10, block_bytes=1 << 10)),
    )
    after = load_catalog(cold, BROKER)
    assert report.objects > 1
    for segs in after.queues.values():  # contiguous, each new segment's index agrees with it
        assert all(a.end == b.first for a, b in itertools.pairwise(segs))
        for s in segs:
            parse_block_index(cold.get(s.object, s.index_pos, s.index_pos + s.index_len), s)
    assert sum(s.count for segs in after.queues.values() for s in segs) == 60 * ROUNDS


def test_only_runs_of_small_segments_merge(hot: Store, cold: ColdStore) -> None:
    tier_in_rounds(hot, cold, rounds=3)
    state = load_catalog(cold, BROKER)
    assert len(small_runs(state, CompactOptions())) == 3  # a run per queue
    assert small_runs(state, CompactOptions(min_run=4)) == []
    assert small_runs(state, CompactOptions(small_bytes=1)) == []  # nothing counts as small


def test_dry_run_changes_nothing(hot: Store, cold: ColdStore) -> None:
    tier_in_rounds(hot, cold, rounds=3)
    objects = data_objects(cold)
    report = compact(cold, load_catalog(cold, BROKER), CompactOptions(dry_run=True))
    assert report.to_json()["segments_merged"] == 9 and report.to_json()["segments_written"] == 0
    assert data_objects(cold) == objects
    assert load_catalog(cold, BROKER).seq == 3


def test_a_dispatch_committing_first_wins(hot: Store, cold: ColdStore) -> None:
    tier_in_rounds(hot, cold, rounds=3)
    stale: CatalogState = load_catalog(cold, BROKER)
    fill(hot, 60, start=180)
    run_dispatch(hot, cold, DispatchOptions(force=True))  # takes the commit compaction wanted
    records = cold_records(cold)
    with pytest.raises(CommitConflictError):
        compact(cold, stale)
    assert cold_records(cold) == records
    assert all(len(segs) == 4 for segs in load_catalog(cold, BROKER).queues.values())
    # compaction's uploads were never committed: the next committing run deletes them
    fill(hot, 30, start=240)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    assert data_objects(cold) == load_catalog(cold, BROKER).referenced_objects()


def test_a_damaged_block_stops_compaction_before_it_commits(hot: Store, cold: ColdStore) -> None:
    tier_in_rounds(hot, cold, rounds=3)
    state = load_catalog(cold, BROKER)
    seg = state.queues[("orders", 2)][1]
    data = bytearray(cold.get(seg.object))
    data[60] ^= 0xFF  # inside the object's first block
    cold.put(seg.object, bytes(data))
    with pytest.raises(CorruptionError, match=seg.object):
        compact(cold, state)
    assert load_catalog(cold, BROKER).seq == 3


@pytest.mark.parametrize("read_ahead", [False, True])
def test_reader_opened_before_compaction_reads_on(
    hot: Store, cold: ColdStore, read_ahead: bool
) -> None:
    """Compaction deletes the objects the old catalog names: a reader holding it reloads."""
    tier_in_rounds(hot, cold)
    want = cold_records(cold)
    with ColdReader(cold, BROKER, read_ahead=read_ahead) as reader:
        first = reader.read("orders", 1, 0, 5)  # the old catalog, its objects still there
        compact(cold, load_catalog(cold, BROKER))
        rest = reader.read("orders", 1, 5, 10_000)
        assert reader.stats["catalog_reloads"] == 1
        got = [(m.phy_offset, m.body, m.properties) for m in [*first, *rest]]
        assert got == want[1]
        assert reader.state.seq == load_catalog(cold, BROKER).seq
