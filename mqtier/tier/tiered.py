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


def _hot_first(store: Store, topic: str, queue_id: int) -> int | None:
    for qo in store.offsets():
        if qo.topic == topic and qo.queue_id == queue_id:
            return qo.min_offset
    return None


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
    tag_list = list(tags) if tags else None
    if cold is None or policy is ReadPolicy.DISABLE:
        if store is None:
            raise NotFoundError("no hot store to read (give --store)")
        return store.read(topic, queue_id, offset, count, tags=tag_list)
    if store is None or policy is ReadPolicy.FORCE:
        return cold.read(topic, queue_id, offset, count, tags=tag_list)
    hot_first = _hot_first(store, topic, queue_id)
    cold_end = cold.state.next_offset((topic, queue_id))
    if hot_first is None and cold_end is None:
        raise NotFoundError(f"topic {topic!r} queue {queue_id} is in neither tier")
    if policy is ReadPolicy.NOT_IN_MEM and cold_end is not None:
        split = cold_end  # the CLI's cache is empty: cold serves all it has
    elif hot_first is None:
        split = offset + count  # the hot store has no such queue
    else:
        split = hot_first
    out: list[MessageRecord] = []
    end = offset + count
    cold_to = min(split, end, cold_end) if cold_end is not None else offset
    if cold_to > offset:
        try:
            out = cold.read(topic, queue_id, offset, cold_to - offset, tags=tag_list)
        except (ColdStoreError, CorruptionError) as exc:
            if hot_first is None or offset < hot_first:
                raise
            log.warning("cold read failed, reading the hot store instead: %s", exc)
            out = []
            cold_to = offset
        offset = cold_to
    if offset < end and hot_first is not None:
        out.extend(store.read(topic, queue_id, offset, end - offset, tags=tag_list))
    return out


def offset_by_time_tiered(
    store: Store | None, cold: ColdReader | None, topic: str, queue_id: int, ts_ms: int
) -> int:
    """The first offset of a queue stored at or after ``ts_ms``, looking at both tiers.

    The cold tier holds a queue's oldest messages, so it answers first; when all it has is older,
    the hot store answers (its messages come after the cold ones). One past the newest message
    when every message is older.

    Raises:
        NotFoundError: neither tier has the queue.
    """
    key = (topic, queue_id)
    hot_has = store is not None and _hot_first(store, topic, queue_id) is not None
    if cold is not None and cold.state.queues.get(key):
        found = cold.offset_by_time(topic, queue_id, ts_ms)
        cold_end = cold.state.next_offset(key)
        if found != cold_end or not hot_has:
            return found
        assert store is not None
        return max(found, store.offset_by_time(topic, queue_id, ts_ms))
    if store is None or not hot_has:
        raise NotFoundError(f"topic {topic!r} queue {queue_id} is in neither tier")
    return store.offset_by_time(topic, queue_id, ts_ms)


READ_BATCH = 256  # messages per read while iterating: read-ahead sees a sequential reader


def _hot_range(store: Store, topic: str, queue_id: int) -> tuple[int, int] | None:
    for qo in store.offsets():
        if qo.topic == topic and qo.queue_id == queue_id:
            return qo.min_offset, qo.max_offset
    return None


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
        first, end = cold.state.first_offset(key), cold.state.next_offset(key)
        if first is not None and end is not None:
            firsts.append(first)
            ends.append(end)
    if not firsts:
        raise NotFoundError(f"topic {topic!r} queue {queue_id} is in neither tier")
    off = max(offset, min(firsts))
    stop = min(off + count, max(ends))
    tag_list = list(tags) if tags else None
    while off < stop:
        n = min(batch, stop - off)
        yield read_tiered(store, cold, topic, queue_id, off, n, policy=policy, tags=tag_list)
        off += n
