"""Reads across tiers: the read policy decides, per request, which tier serves which offsets.

Policies (RocketMQ's ``tieredStorageLevel``):

* ``disable``: the hot store only.
* ``not_in_disk``: offsets the hot store no longer has come from the cold tier, the rest from
  the hot store.
* ``not_in_mem``: as ``not_in_disk``; additionally, offsets whose records are not in the hot
  store's memory cache are read from cold when the cold tier has them. (A command-line process
  starts with an empty cache, so for the CLI this reads everything cold has from cold.)
* ``force``: the cold tier only.

When a cold read fails (network, corruption) and the hot store still holds the offsets, the
hot store answers instead, as RocketMQ falls back.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import TypeVar

from mqtier.errors import ColdStoreError, CorruptionError, NotFoundError
from mqtier.format.message import MessageRecord
from mqtier.store.store import Store
from mqtier.tier.reader import ColdReader

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class ReadPolicy(StrEnum):
    DISABLE = "disable"
    NOT_IN_DISK = "not_in_disk"
    NOT_IN_MEM = "not_in_mem"
    FORCE = "force"


def _hot_range(store: Store, topic: str, queue_id: int) -> tuple[int, int] | None:
    """The hot store's readable offsets of a queue, ``[first, end)``; None without the queue."""
    # One queue's range, not store.offsets(): a read of every queue of a topic asks this per
    # queue, and offsets() looks at every queue of the store each time.
    cq = store.consume_queue(topic, queue_id)
    if cq is None:
        return None
    return store.first_readable(topic, queue_id), cq.max_offset


def _cold_range(cold: ColdReader, key: tuple[str, int]) -> tuple[int, int] | None:
    """The offsets the cold tier holds, ``[first, end)``.

    None when it holds none, also when expiry removed every segment of the queue and only its
    floor (the committed end) is left: those offsets can only come from the hot store.
    """
    first, end = cold.state.first_offset(key), cold.state.next_offset(key)
    return (first, end) if first is not None and end is not None else None


def read_tiered(
    store: Store | None,
    cold: ColdReader | None,
    topic: str,
    queue_id: int,
    offset: int,
    count: int,
    *,
    policy: ReadPolicy = ReadPolicy.NOT_IN_DISK,
    tags: Iterable[str] | None = None,
) -> list[MessageRecord]:
    """Queue entries ``[offset, offset + count)`` from the tiers the policy chooses, in order.

    Offsets one tier does not hold come from the other whatever the policy prefers, except
    that ``disable`` and ``force`` use one tier only: the cold tier may have expired a queue's
    head (or all of it) while the hot store still holds it, and the hot store may have
    cleaned a head the cold tier holds.

    Raises:
        NotFoundError: neither tier (of those the policy allows) has the queue.
    """
    tag_list = list(tags) if tags else None
    if cold is None or policy is ReadPolicy.DISABLE:
        if store is None:
            raise NotFoundError("no hot store to read (give --store)")
        return store.read(topic, queue_id, offset, count, tags=tag_list)
    if store is None or policy is ReadPolicy.FORCE:
        return cold.read(topic, queue_id, offset, count, tags=tag_list)
    key = (topic, queue_id)
    hot = _hot_range(store, topic, queue_id)
    in_cold = _cold_range(cold, key)
    if hot is None and in_cold is None:
        raise NotFoundError(f"topic {topic!r} queue {queue_id} is in neither tier")
    end = offset + count
    # The offsets cold serves: all it has under not_in_mem (the CLI's cache is empty), only
    # those the hot store no longer has under not_in_disk. Never below cold's first offset.
    cold_lo, cold_hi = in_cold if in_cold is not None else (end, end)
    if policy is ReadPolicy.NOT_IN_DISK and hot is not None:
        cold_hi = min(cold_hi, hot[0])
    cold_lo, cold_hi = max(offset, cold_lo), min(end, cold_hi)
    if cold_lo >= cold_hi:
        return store.read(topic, queue_id, offset, count, tags=tag_list) if hot is not None else []
    out: list[MessageRecord] = []
    if offset < cold_lo and hot is not None:  # below cold's first offset: expired there
        out.extend(store.read(topic, queue_id, offset, cold_lo - offset, tags=tag_list))
    try:
        got = cold.read(topic, queue_id, cold_lo, cold_hi - cold_lo, tags=tag_list)
    except (ColdStoreError, CorruptionError) as exc:
        if hot is None or cold_lo < hot[0]:
            raise
        log.warning("cold read failed, reading the hot store instead: %s", exc)
        got, cold_hi = [], cold_lo
    except NotFoundError:
        # The read reloaded the catalog (an object was gone) and expiry has removed the
        # whole queue meanwhile: whatever the hot store has is all there is.
        if hot is None:
            raise
        got = []
    # A reload may also have moved cold's first offset past cold_lo: cold would silently
    # start there, so the hot store serves the offsets in between.
    now = _cold_range(cold, key)
    gap_end = cold_hi if now is None else min(cold_hi, max(cold_lo, now[0]))
    if gap_end > cold_lo and hot is not None:
        out.extend(store.read(topic, queue_id, cold_lo, gap_end - cold_lo, tags=tag_list))
        got = [m for m in got if m.queue_offset >= gap_end]
    out.extend(got)
    if cold_hi < end and hot is not None:
        out.extend(store.read(topic, queue_id, cold_hi, end - cold_hi, tags=tag_list))
    return out


def offset_by_time_tiered(
    store: Store | None, cold: ColdReader | None, topic: str, queue_id: int, ts_ms: int
) -> int:
    """The first offset of a queue stored at or after ``ts_ms``, looking at both tiers.

    Each tier answers for the offsets it holds and the earliest answer wins: the cold tier
    usually holds the oldest messages, but expiry can leave the hot store older ones. One past
    the newest message when every message is older.

    Raises:
        NotFoundError: neither tier has the queue.
    """
    key = (topic, queue_id)
    found: list[int] = []  # per tier, its first offset at or after ts_ms
    ends: list[int] = []  # per tier, one past its newest offset
    if store is not None and (hot := _hot_range(store, topic, queue_id)) is not None:
        found.append(store.offset_by_time(topic, queue_id, ts_ms))
        ends.append(hot[1])
    if cold is not None and (in_cold := _cold_range(cold, key)) is not None:
        found.append(cold.offset_by_time(topic, queue_id, ts_ms))
        ends.append(in_cold[1])
    if not found:
        raise NotFoundError(f"topic {topic!r} queue {queue_id} is in neither tier")
    # A tier answers its end when all it holds is older: that is no answer unless every tier
    # says so, and then the newest end is one past the newest message.
    hits = [f for f, e in zip(found, ends, strict=True) if f < e]
    return min(hits) if hits else max(ends)


READ_BATCH = 256  # messages per read while iterating: read-ahead sees a sequential reader


def iter_tiered(
    store: Store | None,
    cold: ColdReader | None,
    topic: str,
    queue_id: int,
    offset: int,
    count: int,
    *,
    policy: ReadPolicy = ReadPolicy.NOT_IN_DISK,
    tags: Iterable[str] | None = None,
    batch: int = READ_BATCH,
    end: int | None = None,
) -> Iterator[list[MessageRecord]]:
    """:func:`read_tiered` of ``count`` queue entries from ``offset``, in batches.

    For long reads: memory stays bounded, output can stream, and the cold reader sees
    sequential reads, so its read-ahead works. As with one read, offsets below the first one
    either tier has start there, and ``count`` bounds the entries examined (with tags, the
    messages returned may be fewer); ``end``, when given, is a queue offset the read stops
    before (``read --follow`` stops before an unfinished ingest's records).

    Raises:
        NotFoundError: neither tier (of those the policy allows) has the queue.
    """
    key = (topic, queue_id)
    use_hot = store is not None and (cold is None or policy is not ReadPolicy.FORCE)
    use_cold = cold is not None and policy is not ReadPolicy.DISABLE
    firsts, ends = [], []
    if use_hot:
        assert store is not None
        hot = _hot_range(store, topic, queue_id)
        if hot is not None:
            firsts.append(hot[0])
            ends.append(hot[1])
    if use_cold:
        assert cold is not None
        in_cold = _cold_range(cold, key)
        if in_cold is not None:
            firsts.append(in_cold[0])
            ends.append(in_cold[1])
    if not firsts:
        raise NotFoundError(f"topic {topic!r} queue {queue_id} is in neither tier")
    off = max(offset, min(firsts))
    stop = min(off + count, max(ends), end if end is not None else max(ends))
    tag_list = list(tags) if tags else None
    while off < stop:
        n = min(batch, stop - off)
        yield read_tiered(store, cold, topic, queue_id, off, n, policy=policy, tags=tag_list)
        off += n


# -- every queue of a topic ------------------------------------------------------------------

MERGE_BATCH_MIN = 16  # per queue while merging many: queues x batch messages are held at once


def merge_key(m: MessageRecord) -> tuple[int, int, int]:
    """The order of a read of several queues: store time, then queue id, then queue offset
    (store times tie within a group commit; the rest makes the order the same on every run)."""
    return m.store_ts, m.queue_id, m.queue_offset


def _tiers(
    store: Store | None, cold: ColdReader | None, policy: ReadPolicy
) -> tuple[Store | None, ColdReader | None]:
    """The tiers a policy reads: the hot store unless forced cold, cold unless disabled."""
    hot = store if store is not None and (cold is None or policy is not ReadPolicy.FORCE) else None
    return hot, cold if cold is not None and policy is not ReadPolicy.DISABLE else None


def topic_queues(
    store: Store | None, cold: ColdReader | None, topic: str, *, policy: ReadPolicy
) -> list[int]:
    """The queue ids of ``topic`` in the tiers ``policy`` reads: the hot store's consume
    queues and the cold tier's catalog (queues whose every segment expired are left out).

    Raises:
        NotFoundError: no tier read has a queue of ``topic``.
    """
    hot, in_cold = _tiers(store, cold, policy)
    ids: set[int] = set()
    if hot is not None:
        ids.update(q for t, q in hot.consume_queues if t == topic)
    if in_cold is not None:
        keys = [k for k in in_cold.state.queues if k[0] == topic]
        ids.update(q for t, q in keys if _cold_range(in_cold, (t, q)) is not None)
    if not ids:
        where = " or ".join(
            w for w, tier in (("the hot store", hot), ("the cold tier", in_cold)) if tier
        )
        raise NotFoundError(f"topic {topic!r} has no queue in {where or 'any tier'}")
    return sorted(ids)


def start_offset(
    store: Store | None,
    cold: ColdReader | None,
    topic: str,
    queue_id: int,
    *,
    policy: ReadPolicy,
    from_ms: int | None,
) -> int:
    """Where a read of one queue starts: its first message stored at or after ``from_ms``
    in the tiers ``policy`` reads, or (``None``) the first offset either has (0; reads start
    at the first offset a tier holds)."""
    if from_ms is None:
        return 0
    hot, in_cold = _tiers(store, cold, policy)
    return offset_by_time_tiered(hot, in_cold, topic, queue_id, from_ms)


def iter_merged(
    store: Store | None,
    cold: ColdReader | None,
    topic: str,
    ranges: Mapping[int, tuple[int, int | None]],
    *,
    policy: ReadPolicy = ReadPolicy.NOT_IN_DISK,
    tags: Iterable[str] | None = None,
) -> Iterator[MessageRecord]:
    """The messages of several queues of ``topic``, ``ranges[queue] = (first offset, end or
    None for the queue's end)``, merged in :func:`merge_key` order.

    Each queue is read in batches as the merge needs it (a k-way merge), so memory holds a
    batch per queue, never a whole queue; batches shrink as queues are many.
    """
    tag_list = list(tags) if tags else None
    batch = max(MERGE_BATCH_MIN, READ_BATCH // max(1, len(ranges)))

    def one(queue_id: int, first: int, end: int | None) -> Iterator[MessageRecord]:
        for msgs in iter_tiered(
            store, cold, topic, queue_id, first, 1 << 62,
            policy=policy, tags=tag_list, batch=batch, end=end,
        ):  # fmt: skip
            yield from msgs

    return heapq.merge(
        *(one(q, first, end) for q, (first, end) in sorted(ranges.items())), key=merge_key
    )


def batched(items: Iterable[_T], n: int) -> Iterator[list[_T]]:
    """``items`` in lists of up to ``n`` (what the output layer writes and flushes at once)."""
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk
