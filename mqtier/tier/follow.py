"""``read --follow``: the messages of a topic's queues as the hot store's owner makes them durable.

A follower holds a read-only view of the store and, each time it has printed what the view
shows, waits a poll interval and asks the view to :meth:`~mqtier.store.store.Store.refresh`
(cheap when nothing is new); it never writes to the store. Each queue has a cursor, the next
queue offset to read, so every message is printed once, in store-time order within each poll.

An unfinished ingest's records are not printed until the ingest is final: an ingest is all or
nothing, and a message printed and then rolled back would be one that never existed (its queue
offsets would be handed out again). With a cold tier, the first pass reads across both tiers;
new messages arrive in the hot store, so later passes read it alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from mqtier.format.message import MessageRecord
from mqtier.store.consumequeue import ConsumeQueue
from mqtier.store.store import Store
from mqtier.tier.reader import ColdReader
from mqtier.tier.tiered import READ_BATCH, ReadPolicy, _cold_range, batched, iter_merged

POLL_S = 0.5  # the default wait between looks for new messages (read --poll)


def follow(
    view: Store,
    cold: ColdReader | None,
    topic: str,
    cursors: dict[int, int],
    *,
    reopen: Callable[[], Store],
    queue: int | None = None,
    policy: ReadPolicy = ReadPolicy.NOT_IN_DISK,
    tags: list[str] | None = None,
    poll_s: float = POLL_S,
    idle: Callable[[], None] = lambda: None,
) -> Iterator[list[MessageRecord]]:
    """Batches of the messages of ``topic`` (one ``queue``, or every queue) from ``cursors``
    on (queue id to next offset; a queue missing from it is read from its start), then of
    each message made durable later, until the caller stops iterating.

    ``reopen`` opens a fresh read-only view when the current one cannot be refreshed (an
    ingest it showed has since finished or rolled back). ``idle`` runs before each wait: the
    CLI flushes its output there and notices a reader that went away. ``cursors`` is updated
    as queues are read. Views opened here are closed here; ``view`` stays the caller's.
    """
    current = view
    try:
        tiered = cold
        while True:
            yield from _pass(current, tiered, topic, cursors, queue, policy, tags)
            tiered = None  # new messages arrive in the hot store
            while True:
                idle()
                time.sleep(poll_s)
                state = current.refresh()
                if state == "stale":
                    fresh = reopen()
                    if current is not view:
                        current.close()
                    current = fresh
                if state != "same":
                    break
    finally:
        if current is not view:
            current.close()


def _pass(
    st: Store,
    cold: ColdReader | None,
    topic: str,
    cursors: dict[int, int],
    queue: int | None,
    policy: ReadPolicy,
    tags: list[str] | None,
) -> Iterator[list[MessageRecord]]:
    """What the view shows past the cursors, merged by store time; then the cursors move."""
    fence = st.unfinished_ingest_from
    ids = {q for t, q in st.consume_queues if t == topic}
    if cold is not None:
        ids.update(q for t, q in cold.state.queues if t == topic)
    ranges: dict[int, tuple[int, int | None]] = {}
    for q in sorted(ids):
        if queue is not None and q != queue:
            continue
        first = cursors.setdefault(q, 0)
        end = _end(st, cold, topic, q, fence, first)
        if end is not None and end > first:
            ranges[q] = (first, end)
    if not ranges:
        return
    yield from batched(iter_merged(st, cold, topic, ranges, policy=policy, tags=tags), READ_BATCH)
    for q, (_, end) in ranges.items():
        cursors[q] = max(cursors[q], end or 0)


def _end(
    st: Store, cold: ColdReader | None, topic: str, q: int, fence: int | None, first: int
) -> int | None:
    """One past the last offset of the queue this pass prints: the view's end, before the
    first record of an unfinished ingest; a queue only the cold tier holds ends there."""
    cq = st.consume_queue(topic, q)
    if cq is None:
        in_cold = _cold_range(cold, (topic, q)) if cold is not None else None
        return in_cold[1] if in_cold is not None else None
    return cq.max_offset if fence is None else _end_before(cq, fence, first)


def _end_before(cq: ConsumeQueue, phy: int, lo: int) -> int:
    """The first offset from ``lo`` whose record lies at or past commit-log offset ``phy``
    (units are in commit-log order, so a binary search finds it)."""
    lo, hi = max(lo, cq.min_offset), cq.max_offset
    while lo < hi:
        mid = (lo + hi) // 2
        if cq.unit(mid)[0] < phy:
            lo = mid + 1
        else:
            hi = mid
    return lo
