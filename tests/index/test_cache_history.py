"""A local cache of catalog records is tied to the tier's history, never trusted blindly.

Commit records are immutable, so a cache keeps them; but a prefix can be wiped and tiered
again (or restored from a backup to an earlier point). Each record names its predecessor's
checksum and LATEST the newest one's, so a cache from another history is noticed and emptied.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mqtier import Store
from mqtier.backend.memory_store import MemoryColdStore
from mqtier.backend.metered import MeteredColdStore, RequestBill
from mqtier.index.cache import ImmutableCache
from mqtier.tier.catalog import load_catalog
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from tests.tier.conftest import BROKER, CONFIG, Ledger, append, make_messages

ONE_COMMIT = DispatchOptions(force=True)


def _tier(root: Path, name: str, commits: int, seed: int) -> None:
    """Tier ``commits`` runs of a fresh store to the memory tier ``name``."""
    st = Store.open(root / f"s{seed}", config=CONFIG, create=True, writable=True)
    rng = random.Random(seed)
    try:
        for _ in range(commits):
            append(st, Ledger(), make_messages(rng, 30))
            run_dispatch(st, MemoryColdStore(name), ONE_COMMIT)
    finally:
        st.close()


def _same(a: object, b: object) -> None:
    assert a.seq == b.seq and a.queues == b.queues and a.indexes == b.indexes  # type: ignore[attr-defined]


@pytest.mark.parametrize("commits_after", [1, 3, 5])
def test_a_cache_from_a_wiped_and_retiered_prefix_is_dropped(
    tmp_path: Path, commits_after: int
) -> None:
    name = f"hist-{commits_after}-{tmp_path.name}"
    cache = ImmutableCache(f"memory://{name}", root=tmp_path / "cache")
    try:
        _tier(tmp_path, name, 3, seed=1)
        warm = load_catalog(MemoryColdStore(name), BROKER, cache=cache)
        assert warm.seq == 3 and any((tmp_path / "cache").rglob("*.json"))
        MemoryColdStore.forget(name)  # the prefix wiped ...
        _tier(tmp_path, name, commits_after, seed=2)  # ... and tiered again by another store
        fresh = load_catalog(MemoryColdStore(name), BROKER)
        got = load_catalog(MemoryColdStore(name), BROKER, cache=cache)
        _same(got, fresh)
        assert got.seq == commits_after
        # and the cache now holds this history: a second load agrees too
        _same(load_catalog(MemoryColdStore(name), BROKER, cache=cache), fresh)
    finally:
        MemoryColdStore.forget(name)


def test_a_warm_load_asks_only_what_can_change(tmp_path: Path) -> None:
    """LATEST, the first missing record and its PROBE_PAST (2) probes: 4 requests, however long
    the history, once the records are cached."""
    name = f"warm-{tmp_path.name}"
    cache = ImmutableCache(f"memory://{name}", root=tmp_path / "cache")
    try:
        _tier(tmp_path, name, 20, seed=3)  # past SNAPSHOT_EVERY: a snapshot and a tail
        load_catalog(MemoryColdStore(name), BROKER, cache=cache)
        bill = RequestBill()
        metered = MeteredColdStore(MemoryColdStore(name), bill)
        state = load_catalog(metered, BROKER, cache=cache)
        assert state.seq == 20
        assert bill.requests == 4, bill.to_json()
    finally:
        MemoryColdStore.forget(name)
