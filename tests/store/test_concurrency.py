"""Many threads appending to one store: group commit must neither lose, duplicate nor reorder.

Every acknowledged ``AppendResult`` is checked against what the store serves afterwards: each
message exactly once, per (topic, queue) offsets 0..n-1 without gap, per thread and queue in
acknowledgement order, bodies intact; and concurrent callers really shared fsyncs.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mqtier import AppendResult, Message, MessageRecord, Store, StoreConfig

THREADS = 64
OPS_PER_THREAD = 60
TOPICS = ("conc-a", "conc-b", "conc-c")


@dataclass(frozen=True)
class Acked:
    thread: int
    seq: int  # acknowledgement order within the thread
    msg: Message
    result: AppendResult


def _message(rng: random.Random, thread: int, i: int) -> Message:
    return Message(
        topic=rng.choice(TOPICS),
        body=f"t{thread}-m{i}-".encode() + rng.randbytes(rng.randint(0, 600)),
        queue_id=rng.randrange(4) if rng.random() < 0.7 else None,
        keys=(f"t{thread}-m{i}",),
        tags=rng.choice((None, "red", "blue")),
    )


def _writer(st: Store, thread: int, start: threading.Barrier) -> list[Acked]:
    rng = random.Random(thread)
    out: list[Acked] = []
    i = 0
    start.wait(30)
    for _ in range(OPS_PER_THREAD):
        n = rng.randint(2, 5) if rng.random() < 0.2 else 1
        msgs = [_message(rng, thread, i + j) for j in range(n)]
        results = [st.append(msgs[0])] if n == 1 else st.append_batch(msgs)
        assert len(results) == n
        out.extend(Acked(thread, len(out), m, r) for m, r in zip(msgs, results, strict=True))
        i += n
    return out


def _run_threads(n: int, fn: Callable[[int], list[Acked]]) -> list[Acked]:
    """Run ``fn(thread)`` on ``n`` threads at once; re-raise the first failure."""
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(fn, t) for t in range(n)]
        return [a for f in futures for a in f.result(timeout=60)]


def _read_all(st: Store, topic: str, qid: int, end: int) -> list[MessageRecord]:
    out: list[MessageRecord] = []
    while len(out) < end:
        got = st.read(topic, qid, len(out), 500)
        assert got, f"{topic}/{qid}: nothing at {len(out)} of {end}"
        out.extend(got)
    return out


def _check(st: Store, acked: list[Acked]) -> None:
    by_phy = {a.result.phy_offset: a for a in acked}
    assert len(by_phy) == len(acked), "two acknowledgements share a commit-log offset"
    per_queue: dict[tuple[str, int], list[Acked]] = {}
    for a in acked:
        r = a.result
        assert r.topic == a.msg.topic
        assert a.msg.queue_id in (None, r.queue_id)
        per_queue.setdefault((r.topic, r.queue_id), []).append(a)
    offsets = {(q.topic, q.queue_id): q for q in st.offsets()}
    assert set(offsets) == set(per_queue)
    for key, items in per_queue.items():
        # The acknowledged queue offsets are exactly 0..n-1: no gap, no duplicate.
        assert sorted(a.result.queue_offset for a in items) == list(range(len(items))), key
        q = offsets[key]
        assert (q.min_offset, q.max_offset) == (0, len(items)), key
        msgs = _read_all(st, key[0], key[1], len(items))
        assert [m.queue_offset for m in msgs] == list(range(len(items)))
        for m in msgs:
            a = by_phy[m.phy_offset]  # every stored message was acknowledged, and only once
            assert (a.result.topic, a.result.queue_id) == key
            assert m.queue_offset == a.result.queue_offset
            assert m.size == a.result.size
            assert m.body == a.msg.body
            assert m.keys == a.msg.keys
            assert m.tags == a.msg.tags
            assert m.uniq_key == a.result.uniq_key
    # Within one thread, appends to the same queue got increasing offsets in ack order.
    per_thread_queue: dict[tuple[int, str, int], list[Acked]] = {}
    for a in acked:
        per_thread_queue.setdefault((a.thread, a.result.topic, a.result.queue_id), []).append(a)
    for items in per_thread_queue.values():
        items.sort(key=lambda a: a.seq)
        offs = [a.result.queue_offset for a in items]
        phys = [a.result.phy_offset for a in items]
        assert offs == sorted(offs) and len(set(offs)) == len(offs)
        assert phys == sorted(phys)
    # Spot-check the other read paths.
    for a in acked[:: max(1, len(acked) // 200)]:
        assert st.query_msg_id(a.result.msg_id).body == a.msg.body
        found = st.query_key(a.result.topic, a.msg.keys[0])
        assert [m.phy_offset for m in found] == [a.result.phy_offset]


def test_concurrent_appends_are_all_there_exactly_once_in_order(
    store: Store, store_path: Path
) -> None:
    start = threading.Barrier(THREADS)
    acked = _run_threads(THREADS, lambda t: _writer(store, t, start))
    total = len(acked)
    assert total > THREADS * OPS_PER_THREAD

    stats = store.stats()
    assert stats["messages_committed"] == total
    # Group commit aggregated concurrent callers: far fewer write+fsync batches than messages.
    assert 0 < stats["group_commits"] < total
    assert stats["commitlog_max_offset"] == sum(a.result.size for a in acked) + _blank_bytes(
        store, acked
    )

    assert store.wait_dispatched(30)
    _check(store, acked)
    store.close()

    with Store.open(store_path, writable=True) as st:
        assert st.recovery is not None
        assert st.recovery.clean_shutdown is True
        assert st.recovery.changed is False
        _check(st, acked)


def _blank_bytes(st: Store, acked: list[Acked]) -> int:
    """Bytes of end-of-file filler between records (records never span two files)."""
    size = st.config.commitlog_file_bytes
    spans = sorted((a.result.phy_offset, a.result.phy_offset + a.result.size) for a in acked)
    gaps = 0
    pos = 0
    for start, end in spans:
        assert start >= pos, "two records overlap"
        if start > pos:
            assert start % size == 0 and start - pos < size, "a gap that is not BLANK filler"
            gaps += start - pos
        assert start // size == (end - 1) // size, "a record spans two files"
        pos = end
    return gaps


def test_group_commit_batches_concurrent_callers(tmp_path: Path, tiny_config: StoreConfig) -> None:
    """With one caller per batch impossible, the number of fsync batches must drop."""
    with Store.open(tmp_path / "s", create=True, config=tiny_config) as st:
        start = threading.Barrier(32)

        def work(t: int) -> list[Acked]:
            start.wait(30)
            for i in range(30):
                st.append(Message(topic="gc", body=b"%d-%d" % (t, i), queue_id=t % 4))
            return []

        _run_threads(32, work)
        stats = st.stats()
        assert stats["messages_committed"] == 32 * 30
        # 32 threads always waiting: batches average well above one message.
        assert stats["group_commits"] * 2 < stats["messages_committed"], stats
