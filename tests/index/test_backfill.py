"""A tier written before the cold index: queries say what they cannot search, and compact
indexes it, after which every message is found again."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import orjson

from mqtier import Store
from mqtier.backend.open import open_cold_store
from mqtier.index.backfill import backfill, unindexed_segments
from mqtier.index.query import open_cold_index, query_key
from mqtier.tier.catalog import load_catalog
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from tests.tier.conftest import BROKER, CONFIG, NO_WAIT, TOPIC, Ledger, append, make_messages


def _legacy_tier(tmp_path: Path) -> tuple[Path, dict[str, set[tuple[int, int]]]]:
    """A file:// tier as an mqtier from before the index wrote it: records without index
    fields, checksums or hash chain; no index objects, no snapshot, no LATEST."""
    cold_dir = tmp_path / "cold"
    cold = open_cold_store(f"file://{cold_dir}", retry=NO_WAIT)
    rng = random.Random(2)
    by_key: dict[str, set[tuple[int, int]]] = {}
    with Store.open(tmp_path / "s", config=CONFIG, create=True, writable=True) as st:
        for _ in range(3):
            append(st, Ledger(), make_messages(rng, 25))
            run_dispatch(st, cold, DispatchOptions(force=True))
        for q in st.offsets():
            for m in st.read(q.topic, q.queue_id, 0, q.max_offset):
                for k in m.keys:
                    by_key.setdefault(k, set()).add((m.queue_id, m.queue_offset))
    catalog = cold_dir / BROKER / "catalog"
    for path in (catalog / "commits").glob("*.json"):
        doc = orjson.loads(path.read_bytes())
        for name in ("index_added", "index_removed", "prev", "sha256"):
            doc.pop(name, None)
        path.write_bytes(orjson.dumps(doc))
    shutil.rmtree(cold_dir / BROKER / "index")
    (catalog / "LATEST").unlink()
    return cold_dir, by_key


def test_a_legacy_tier_is_reported_then_indexed_by_backfill(tmp_path: Path) -> None:
    cold_dir, by_key = _legacy_tier(tmp_path)
    cold = open_cold_store(f"file://{cold_dir}", retry=NO_WAIT)
    state = load_catalog(cold, BROKER)
    assert not state.indexes and unindexed_segments(state)
    index = open_cold_index(cold, BROKER)
    key = min(by_key)
    before = query_key(topic=TOPIC, key=key, index=index)
    assert not before.hits and before.unindexed  # not searched, and it says so

    missing = unindexed_segments(state)
    report = backfill(cold, state)
    assert report.segments == len(missing) == sum(len(s) for s in state.queues.values())
    assert report.messages == 75  # 3 runs of 25, every one of them tiered before the index
    assert report.objects_written == 1
    assert not unindexed_segments(load_catalog(cold, BROKER))
    index = open_cold_index(cold, BROKER)
    assert not index.unindexed()
    for k in sorted(by_key)[:30]:
        hits = query_key(topic=TOPIC, key=k, index=index, max_results=1 << 20).hits
        assert {(h.message.queue_id, h.message.queue_offset) for h in hits} == by_key[k]
    assert backfill(cold, load_catalog(cold, BROKER)).segments == 0  # idempotent
