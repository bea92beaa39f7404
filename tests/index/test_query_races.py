"""A query on a catalog loaded before a merge or compaction committed still answers right.

Maintenance deletes the objects it replaced right after its commit, so a long-lived index (or
a query that loaded the catalog a moment before) can find an index object or a data object
gone. That is not lost data: the query asks the new catalog once and answers from it.
"""

from __future__ import annotations

import random
from pathlib import Path

from mqtier import Store
from mqtier.backend.memory_store import MemoryColdStore
from mqtier.index.merge import MergeOptions, merge_indexes
from mqtier.index.query import open_cold_index, query_key
from mqtier.tier.catalog import load_catalog
from mqtier.tier.compact import CompactOptions, compact
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from tests.tier.conftest import BROKER, CONFIG, TOPIC, Ledger, append, make_messages


def test_a_merge_after_the_index_was_opened_is_followed(tmp_path: Path) -> None:
    name = f"race-{tmp_path.name}"
    cold = MemoryColdStore(name)
    rng = random.Random(4)
    st = Store.open(tmp_path / "s", config=CONFIG, create=True, writable=True)
    try:
        keyed = []
        for _ in range(4):
            msgs = make_messages(rng, 20)
            keyed.append(msgs[0].keys[0])
            append(st, Ledger(), msgs)
            run_dispatch(st, cold, DispatchOptions(force=True))
        index = open_cold_index(cold, BROKER)  # loaded before the maintenance below
        state = load_catalog(cold, BROKER)
        compact(cold, state, CompactOptions(small_bytes=1 << 30))
        merge_indexes(cold, state, MergeOptions(fanout=2))
        old = set(index.state.indexes)
        assert old.isdisjoint(load_catalog(cold, BROKER).indexes)  # every one it knew is gone
        assert all(not cold.exists(o) for o in old)
        for key in keyed:
            got = query_key(topic=TOPIC, key=key, index=index)
            assert [key in h.message.keys for h in got.hits] == [True], key
        assert index.state.seq == load_catalog(cold, BROKER).seq  # it moved on to the new one
    finally:
        st.close()
        MemoryColdStore.forget(name)
