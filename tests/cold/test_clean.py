"""``clean`` frees hot space and never deletes a message the cold tier has not committed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from mqtier import Message, Store
from mqtier.backend.base import ColdStore
from mqtier.errors import ColdHistoryMismatchError
from mqtier.tier.catalog import load_catalog
from mqtier.tier.clean import clean, safe_below
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from mqtier.tier.reader import ColdReader
from tests.cold.conftest import BROKER, fill
from tests.geometry import TINY


def _all_hot(st: Store) -> dict[tuple[int, int], bytes]:
    out = {}
    for qo in st.offsets():
        for m in st.read(qo.topic, qo.queue_id, qo.min_offset, qo.max_offset - qo.min_offset):
            out[(m.queue_id, m.queue_offset)] = m.body
    return out


def test_clean_without_a_cold_copy_deletes_nothing(hot: Store, cold: ColdStore) -> None:
    fill(hot, 900)
    files = [f.path.name for f in hot.commitlog.files]
    assert len(files) > 3
    report = clean(hot, load_catalog(cold, BROKER), keep_ms=0)
    assert report.files == []
    assert [f.path.name for f in hot.commitlog.files] == files
    assert report.blocked_by is not None and "not yet committed cold" in report.blocked_by


def test_clean_deletes_only_what_is_committed(hot: Store, cold: ColdStore) -> None:
    fill(hot, 900)
    before = _all_hot(hot)
    # Tier only part of the data: two runs, the second after more appends that stay hot.
    run_dispatch(hot, cold, DispatchOptions(force=True))
    fill(hot, 600, start=900)
    state = load_catalog(cold, BROKER)
    limit = safe_below(hot, state)
    report = clean(hot, state, keep_ms=0)
    assert report.files, "committed files should have gone"
    # Invariant 2: every message left out of the hot store is committed cold.
    assert hot.commitlog.min_offset <= limit
    reader = ColdReader(cold, BROKER)
    for (queue, offset), body in before.items():
        unit_phy = hot.consume_queue("orders", queue).unit(offset)[0]  # type: ignore[union-attr]
        if unit_phy < hot.commitlog.min_offset:
            got = reader.read("orders", queue, offset, 1)
            assert [m.body for m in got] == [body]
    # The untiered messages (appended after the dispatch) are all still hot.
    for qo in hot.offsets():
        cold_next = reader.state.next_offset(("orders", qo.queue_id))
        assert cold_next is not None and qo.min_offset <= cold_next


def test_keep_protects_young_files(hot: Store, cold: ColdStore) -> None:
    fill(hot, 900)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    report = clean(hot, load_catalog(cold, BROKER), keep_ms=3_600_000)
    assert report.files == []
    assert report.blocked_by is not None and "newer than --keep" in report.blocked_by


def test_dry_run_changes_nothing(hot: Store, cold: ColdStore) -> None:
    fill(hot, 900)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    files = [f.path for f in hot.commitlog.files]
    report = clean(hot, load_catalog(cold, BROKER), keep_ms=0, dry_run=True)
    assert report.files
    assert all(p.exists() for p in files)


@pytest.mark.parametrize("appended_after", [0, 300])
def test_clean_drops_derived_files_below_the_new_minimum(
    hot: Store, cold: ColdStore, appended_after: int
) -> None:
    fill(hot, 1500)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    if appended_after:
        fill(hot, appended_after, start=1500)
    cq_files = sum(len(cq.files) for cq in hot.consume_queues.values())
    report = clean(hot, load_catalog(cold, BROKER), keep_ms=0)
    assert report.files
    assert report.derived_files > 0
    assert sum(len(cq.files) for cq in hot.consume_queues.values()) < cq_files
    low = hot.commitlog.min_offset
    for cq in hot.consume_queues.values():
        first = cq.files[0].base // 20
        assert cq.min_offset >= first
        # Units still on disk may point below the minimum (inside a kept file); reads skip them.
    for qo in hot.offsets():
        msgs = hot.read("orders", qo.queue_id, qo.min_offset, 10)
        assert msgs and all(m.phy_offset >= low for m in msgs)


def test_clean_refuses_a_cold_tier_of_another_store(
    hot: Store, cold: ColdStore, tmp_path: Path
) -> None:
    """Another store tiered under the same broker name: its offsets say nothing about ours."""
    other = Store.open(tmp_path / "other", create=True, config=TINY)
    other.create_topic("orders", 3)
    try:
        fill(other, 900)
        run_dispatch(other, cold, DispatchOptions(force=True))
    finally:
        other.close()
    fill(hot, 300)
    files = [f.path.name for f in hot.commitlog.files]
    before = _all_hot(hot)
    with pytest.raises(ColdHistoryMismatchError, match="another store"):
        clean(hot, load_catalog(cold, BROKER), keep_ms=0)
    assert [f.path.name for f in hot.commitlog.files] == files
    assert _all_hot(hot) == before


def test_clean_keeps_records_the_hot_reput_has_not_reached(hot: Store, cold: ColdStore) -> None:
    """Durable records not yet in any consume queue are not committed cold either."""
    fill(hot, 300)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    committed_end = hot.commitlog.durable_end
    gate = threading.Event()
    reput = hot.reput_framed

    def lagging(batch: Any, where: Any) -> None:  # the reput falls behind the writer
        gate.wait()
        reput(batch, where)

    hot.reput_framed = lagging  # type: ignore[method-assign]
    try:
        hot.append_batch(
            [Message("orders", b"x" * 300, queue_id=i % 3, keys=(f"L{i}",)) for i in range(600)]
        )
        assert hot.dispatched_end <= committed_end < hot.commitlog.durable_end
        state = load_catalog(cold, BROKER)
        assert safe_below(hot, state) <= committed_end
        clean(hot, state, keep_ms=0)
        assert hot.commitlog.min_offset <= committed_end
    finally:
        gate.set()
        hot.reput_framed = reput  # type: ignore[method-assign]
    assert hot.wait_dispatched(10)
    # Every lagging message is still hot, so the next dispatch can tier it.
    assert len(hot.query_key("orders", "L599")) == 1
    run_dispatch(hot, cold, DispatchOptions(force=True))
    reader = ColdReader(cold, BROKER)
    assert sum(reader.state.next_offset(("orders", q)) or 0 for q in range(3)) == 900
