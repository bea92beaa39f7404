"""The record cache's byte accounting, which decides what it evicts."""

from __future__ import annotations

from mqtier.store.cache import RecordCache


def test_putting_an_offset_again_counts_its_bytes_once() -> None:
    cache = RecordCache(max_bytes=64 * 100, admit_max_bytes=100)
    cache.put_many([(0, b"a" * 100), (100, b"b" * 50)])
    cache.put_many([(0, b"c" * 100)])  # the same offset again (a replay)
    cache.put(100, b"d" * 50)
    assert cache.size_bytes == 150
    assert cache.stats()["entries"] == 2
    assert cache.get(0) == b"c" * 100


def test_eviction_keeps_the_newest_within_the_budget() -> None:
    cache = RecordCache(max_bytes=300, admit_max_bytes=100)
    cache.put_many([(i * 100, bytes([i]) * 100) for i in range(5)])
    assert cache.size_bytes == 300
    assert [cache.get(i * 100) is not None for i in range(5)] == [False, False, True, True, True]
    cache.put_many([(900, b"x" * 101)])  # over the admission size: not cached
    assert cache.get(900) is None and cache.size_bytes == 300
