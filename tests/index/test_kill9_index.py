"""kill -9 during tiering and during index merges: every query stays exact afterwards.

A child tiers (``tests/tier/dispatch_child.py``) or tiers, compacts and merges index objects
(``tests/index/merge_child.py``) in a loop; the test SIGKILLs it at a random moment, twice, on
the same directories, then re-runs the work to the end in this process. Every key, UNIQ_KEY
and offsetMsgId of every committed message must then be found from the cold tier alone,
exactly (compared with the hot store's own copy of the messages), and no index object may be
left that the catalog does not name.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mqtier import MessageRecord, Store
from mqtier.backend.open import open_cold_store
from mqtier.index.merge import MergeOptions, merge_indexes
from mqtier.index.query import open_cold_index, query_key, query_msg_id, query_uniq
from mqtier.tier.catalog import index_prefix, load_catalog
from mqtier.tier.compact import CompactOptions, compact
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from tests.tier.conftest import BROKER, NO_WAIT, TOPIC
from tests.tier.test_kill9 import run_and_kill

pytestmark = pytest.mark.crash


def _messages(st: Store) -> list[MessageRecord]:
    return [
        m
        for q in st.offsets()
        for m in st.read(q.topic, q.queue_id, q.min_offset, q.max_offset - q.min_offset)
    ]


def _check_every_query(cold_dir: Path, msgs: list[MessageRecord]) -> None:
    cold = open_cold_store(f"file://{cold_dir}", retry=NO_WAIT)
    index = open_cold_index(cold, BROKER)
    assert not index.unindexed()
    by_key: dict[str, list[tuple[int, int]]] = {}
    for m in msgs:
        for k in m.keys:
            by_key.setdefault(k, []).append((m.queue_id, m.queue_offset))
    rng = random.Random(7)
    for key in rng.sample(sorted(by_key), min(60, len(by_key))):
        got = query_key(topic=TOPIC, key=key, index=index, max_results=1 << 20)
        assert sorted((h.message.queue_id, h.message.queue_offset) for h in got.hits) == sorted(
            by_key[key]
        ), key
    for m in rng.sample(msgs, min(30, len(msgs))):
        assert [
            h.message.queue_offset for h in query_uniq(uniq_key=m.uniq_key or "", index=index).hits
        ] == [m.queue_offset]
        assert [h.message.phy_offset for h in query_msg_id(msg_id=m.msg_id, index=index).hits] == [
            m.phy_offset
        ]
    state = load_catalog(cold, BROKER)
    on_disk = {i.key for i in cold.list(index_prefix(BROKER))}
    assert on_disk == set(state.indexes)  # the killed runs' index objects were collected


@pytest.mark.parametrize(
    ("child", "seed"),
    [("tests.tier.dispatch_child", 0), ("tests.tier.dispatch_child", 1),
     ("tests.index.merge_child", 0), ("tests.index.merge_child", 1)],
)  # fmt: skip
def test_sigkill_leaves_every_query_exact(child: str, seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    store_dir, cold_dir, log = tmp_path / "hot", tmp_path / "cold", tmp_path / "child.log"
    for kill in range(2):
        run_and_kill(store_dir, cold_dir, seed * 10 + kill, rng.uniform(0.2, 1.5), log, child)
    cold = open_cold_store(f"file://{cold_dir}", retry=NO_WAIT)
    with Store.open(store_dir, writable=True) as st:
        msgs = _messages(st)
        # finish what was killed: tier the rest, compact and merge to the end
        run_dispatch(st, cold, DispatchOptions(force=True))
        state = load_catalog(cold, BROKER)
        compact(cold, state, CompactOptions(small_bytes=1 << 30))
        merge_indexes(cold, state, MergeOptions(fanout=2))
    _check_every_query(cold_dir, msgs)
