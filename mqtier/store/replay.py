"""Replaying the commit log into the consume queues and index: recovery, rebuild, rollback.

A window of records at a time (:meth:`CommitLog.scan_windows`): header checks and queue-offset
continuity as arrays, each queue's units packed in one copy, every index key of the window
hashed and linked at once. A record the array checks doubt is replayed on its own by the
per-record path, which either raises its exact error or dispatches it, so what lands in the
derived files does not depend on which path a record took (a property test holds the two to
the same bytes).
"""

from __future__ import annotations

import mmap
from typing import TYPE_CHECKING, Final

import numpy as np

from mqtier.errors import CorruptRecordError
from mqtier.format import layout as L
from mqtier.format.javahash import tags_code
from mqtier.format.message import check_record_header, dispatch_fields
from mqtier.format.recordbatch import Fields, Ints
from mqtier.store.dispatchbatch import UNIT_DTYPE

if TYPE_CHECKING:
    from mqtier.store.commitlog import RecordWindow
    from mqtier.store.store import Store

QueueKey = tuple[str, int]
_TX_MASK: Final = L.SYSFLAG_TRANSACTION_MASK
_COMMIT: Final = L.SYSFLAG_TRANSACTION_COMMIT
_ROLLBACK: Final = L.SYSFLAG_TRANSACTION_ROLLBACK
_WANTED: Final = (b"KEYS\x01", b"UNIQ_KEY\x01", b"TAGS\x01")


def replay(store: Store, start: int, end: int) -> int:
    """Dispatch every record in ``[start, end)`` again (idempotent for units already there);
    returns how many records it read.

    Raises:
        CorruptRecordError: a record's header fails its checks, or its queue offset would
            leave a gap in its queue: its queue fields cannot be trusted, and dispatching it
            would write a unit where it does not belong (or fill a queue with placeholders).
            The units of the records before it are in place.
    """
    n = 0
    nexts: dict[QueueKey, int] = {}  # each queue's next offset, as replayed
    for w in store.commitlog.scan_windows(start, verify_crc=False, end=end):
        assert w.fields is not None
        _replay_window(store, w, w.fields, nexts)
        n += len(w.starts)
    return n


def _replay_window(store: Store, w: RecordWindow, f: Fields, nexts: dict[QueueKey, int]) -> None:
    count = len(w.starts)
    doubtful = ~f.header_ok | (f.phy != w.origin + f.starts)
    lo = 0
    while lo < count:
        bad = np.flatnonzero(doubtful[lo:])
        hi = lo + int(bad[0]) if len(bad) else count
        if hi > lo:
            hi = _replay_batch(store, w, f, lo, hi, nexts)
        if hi < count:
            _replay_one(store, nexts, w.buf, w.starts[hi], w.origin + w.starts[hi])
            hi += 1
        lo = hi


def _replay_batch(
    store: Store, w: RecordWindow, f: Fields, lo: int, hi: int, nexts: dict[QueueKey, int]
) -> int:
    """Dispatch records ``lo`` to ``hi`` of a window whose headers passed; stop before the
    first whose queue offset would leave a gap (returned: where the batch stopped)."""
    buf = w.buf
    topics = _topics(buf, f.topic_at[lo:hi], f.topic_len[lo:hi])
    tx = f.sysflag[lo:hi] & _TX_MASK
    queued = np.flatnonzero((tx == 0) | (tx == _COMMIT))
    qids = f.queue_id[lo:hi].tolist()
    number: dict[QueueKey, int] = {}
    codes = np.fromiter(
        (number.setdefault((topics[i], qids[i]), len(number)) for i in queued.tolist()),
        dtype=np.int64,
        count=len(queued),
    )
    qoffs = f.queue_offset[lo:hi]
    groups = _groups(codes, queued)
    # Queue-offset continuity, per queue: no record may skip past the queue's next offset.
    stop = hi - lo
    for key, members in zip(number, groups, strict=True):
        offs = qoffs[members]
        nxt = _next_offset(store, nexts, key, int(offs[0]))
        allowed = np.maximum.accumulate(np.concatenate(([nxt], offs[:-1] + 1)))
        gaps = np.flatnonzero(offs > allowed)
        if len(gaps):
            stop = min(stop, int(members[gaps[0]]))
    if stop < hi - lo:
        # Replay what comes before that record; the per-record path then reports it.
        return _replay_batch(store, w, f, lo, lo + stop, nexts) if stop else lo
    phys = w.origin + f.starts[lo:hi]
    props = _wanted_properties(f, lo, hi)
    tags = [tags_code(props[2][i]) for i in range(hi - lo)]
    sizes = f.sizes[lo:hi]
    for key, members in zip(number, groups, strict=True):
        offs = qoffs[members]
        nexts[key] = max(_next_offset(store, nexts, key, int(offs[0])), int(offs.max()) + 1)
        cq = store.consume_queue(key[0], key[1], create=True)
        assert cq is not None
        if len(offs) == 1 or bool((np.diff(offs) == 1).all()):
            units = np.empty(len(members), dtype=UNIT_DTYPE)
            units["phy"] = phys[members]
            units["size"] = sizes[members]
            units["tag"] = [tags[i] for i in members.tolist()]
            cq.put_packed(int(offs[0]), units.tobytes())
        else:  # (a broker's log replayed over units already there: put checks each)
            cq.put_run(
                [(int(offs[j]), int(phys[i]), int(sizes[i]), tags[i])
                 for j, i in enumerate(members.tolist())]
            )  # fmt: skip
    index_keys: list[str] = []
    key_phys: list[int] = []
    key_stamps: list[int] = []
    indexed = np.flatnonzero(tx != _ROLLBACK).tolist()
    all_keys, uniqs = props[0], props[1]
    phy_list, ts_list = phys.tolist(), f.store_ts[lo:hi].tolist()
    for i in indexed:
        uniq, keys = uniqs[i], all_keys[i]
        if not (uniq or keys):
            continue
        topic = topics[i]
        before = len(index_keys)
        if uniq:
            index_keys.append(f"{topic}#{uniq}")
        if keys:
            index_keys.extend(f"{topic}#{k}" for k in keys.split(" ") if k and k != uniq)
        added = len(index_keys) - before
        key_phys.extend([phy_list[i]] * added)
        key_stamps.extend([ts_list[i]] * added)
    store.reput_index(index_keys, key_phys, key_stamps, [])
    return hi


def _groups(codes: Ints, members: Ints) -> list[Ints]:
    """For each queue code 0, 1, ...: the positions in ``members`` order of its records."""
    if len(codes) == 0:
        return []
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    return np.split(members[order], np.cumsum(counts)[:-1])


def _next_offset(store: Store, nexts: dict[QueueKey, int], key: QueueKey, first: int) -> int:
    """The offset a queue's next replayed record may reach at most (a new queue, or one with
    nothing on disk, may start anywhere: at ``first``)."""
    nxt = nexts.get(key)
    if nxt is not None:
        return nxt
    cq = store.consume_queues.get(key)
    if cq is None or (cq.max_offset == 0 and not cq.files):
        return first
    return cq.max_offset


def _topics(buf: mmap.mmap | bytes, at: Ints, lengths: Ints) -> list[str]:
    cache: dict[bytes, str] = {}
    out: list[str] = []
    for a, n in zip(at.tolist(), lengths.tolist(), strict=True):
        raw = buf[a : a + n]
        topic = cache.get(raw)
        if topic is None:
            topic = cache[raw] = str(raw, "utf-8", "replace")
        out.append(topic)
    return out


def _wanted_properties(
    f: Fields, lo: int, hi: int
) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Per record ``lo`` to ``hi``: its KEYS, UNIQ_KEY and TAGS values (None where absent), by
    :func:`~mqtier.format.message.decode_properties`'s rules (a non-empty value; the last
    entry of a name wins)."""
    n = hi - lo
    keys: list[str | None] = [None] * n
    uniq: list[str | None] = [None] * n
    tags: list[str | None] = [None] * n
    owners = np.flatnonzero(f.props_len[lo:hi] > 0).tolist()
    if not owners:
        return keys, uniq, tags
    k, rec = 0, owners[0]
    # Each record's entries, then an empty string where its properties end.
    for entry in f.properties_of(lo, hi).split(b"\x02"):
        if not entry:
            k += 1
            rec = owners[k] if k < len(owners) else -1
        elif entry.startswith(_WANTED):
            name, _, value = entry.partition(b"\x01")
            if value:
                text = str(value, "utf-8", "replace")
                if name == b"KEYS":
                    keys[rec] = text
                elif name == b"UNIQ_KEY":
                    uniq[rec] = text
                else:
                    tags[rec] = text
    return keys, uniq, tags


def _replay_one(
    store: Store, nexts: dict[QueueKey, int], buf: mmap.mmap | bytes, pos: int, phy: int
) -> None:
    """The per-record path: check the record's header and queue offset, then dispatch it."""
    topic, qid, qoff, sysflag, store_ts, size, props = dispatch_fields(buf, pos)
    _check_replayed(store, nexts, buf, pos, phy, (topic, qid, qoff, sysflag))
    keys = tuple(k for k in props.get(L.PROP_KEYS, "").split(" ") if k)
    store.dispatch_items(
        [
            (
                topic,
                qid,
                qoff,
                phy,
                size,
                tags_code(props.get(L.PROP_TAGS)),
                store_ts,
                keys,
                props.get(L.PROP_UNIQ_KEY),
                sysflag,
                None,
            )
        ]
    )


def _check_replayed(
    store: Store,
    nexts: dict[QueueKey, int],
    buf: mmap.mmap | bytes,
    pos: int,
    phy: int,
    fields: tuple[str, int, int, int],
) -> None:
    """Refuse to replay a record whose header is damaged (see :func:`replay`)."""
    topic, qid, qoff, sysflag = fields
    path = store.commitlog.file_for(phy).path
    try:
        check_record_header(buf, pos, expect_phy=phy, path=str(path))
    except CorruptRecordError as exc:
        raise CorruptRecordError(
            path, phy, f"{exc.detail}; the record was not dispatched"
        ) from None
    if sysflag & L.SYSFLAG_TRANSACTION_MASK not in (0, L.SYSFLAG_TRANSACTION_COMMIT):
        return  # not queued
    key = (topic, qid)
    nxt = nexts.get(key)
    if nxt is None:
        cq = store.consume_queues.get(key)
        if cq is None or (cq.max_offset == 0 and not cq.files):
            nexts[key] = qoff + 1  # a new queue may start anywhere (pre-blank below it)
            return
        nxt = cq.max_offset
    if qoff > nxt:
        raise CorruptRecordError(
            path,
            phy,
            f"header field QUEUEOFFSET: expected at most {nxt} (the next offset of "
            f"{topic}/{qid}), found {qoff}; the record was not dispatched",
        )
    nexts[key] = max(nxt, qoff + 1)
