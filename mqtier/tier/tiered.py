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

import logging
from collections.abc import Iterable, Iterator
from enum import StrEnum

from mqtier.errors import ColdStoreError, CorruptionError, NotFoundError
from mqtier.format.message import MessageRecord
from mqtier.store.store import Store
from mqtier.tier.reader import ColdReader

log = logging.getLogger(__name__)


class ReadPolicy(StrEnum):
    DISABLE = "disable"
    NOT_IN_DISK = "not_in_disk"
    NOT_IN_MEM = "not_in_mem"
    FORCE = "force"


def _hot_range(store: Store, topic: str, queue_id: int) -> tuple[int, int] | None:
    """The hot store's readable offsets of a queue, ``[first, end)``; None without the queue."""
    for qo in store.offsets():
        if qo.topic == topic and qo.queue_id == queue_id:
            return qo.min_offset, qo.max_offset
    return None


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
) -> Iterator[list[MessageRecord]]:
    """:func:`read_tiered` of ``count`` queue entries from ``offset``, in batches.

    For long reads: memory stays bounded, output can stream, and the cold reader sees
    sequential reads, so its read-ahead works. As with one read, offsets below the first one
    either tier has start there, and ``count`` bounds the entries examined (with tags, the
    messages returned may be fewer).

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
    stop = min(off + count, max(ends))
    tag_list = list(tags) if tags else None
    while off < stop:
        n = min(batch, stop - off)
        yield read_tiered(store, cold, topic, queue_id, off, n, policy=policy, tags=tag_list)
        off += n
