"""Replaying the commit log into the consume queues and index: recovery, rebuild, rollback.

A window of records at a time (:meth:`CommitLog.scan_windows`): header checks and queue-offset
continuity as arrays, each queue's units packed in one copy, every index key of the window
hashed and linked at once. A record the array checks doubt is replayed on its own by the
per-record path, which either raises its exact error or dispatches it, so what lands in the
derived files does not depend on which path a record took (a property test holds the two to
the same bytes).
"""

from __future__ import annotations

import bisect
import mmap
from typing import TYPE_CHECKING, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from mqtier.errors import CorruptRecordError
from mqtier.format import layout as L
from mqtier.format.javahash import _topic_prefix_hash, index_key_hash, tags_code
from mqtier.format.javahash_batch import _MASK32, index_hashes_of, powers_of_31, span_hashes
from mqtier.format.message import (
    check_record_header,
    decode_properties,
    dispatch_fields,
)
from mqtier.format.recordbatch import Fields, Ints, Topics, spans, topics_of
from mqtier.store.reputbatch import UNIT_DTYPE
from mqtier.store.state import queue_dir_name

if TYPE_CHECKING:
    from mqtier.store.commitlog import RecordWindow
    from mqtier.store.store import Store

QueueKey = tuple[str, int]
_TX_MASK: Final = L.SYSFLAG_TRANSACTION_MASK
_QID_MASK: Final = 0xFFFFFFFF
_COMMIT: Final = L.SYSFLAG_TRANSACTION_COMMIT
_ROLLBACK: Final = L.SYSFLAG_TRANSACTION_ROLLBACK


def replay(store: Store, start: int, end: int) -> int:
    """Dispatch every record in ``[start, end)`` again (idempotent for units already there);
    returns how many records it read.

    Raises:
        CorruptRecordError: a record's header fails its checks, or its queue offset would
            leave a gap in its queue: its queue fields cannot be trusted, and dispatching it
            would write a unit where it does not belong (or fill a queue with placeholders).
            The units of the records before it are in place.
    """
    replayer = Replayer(store)
    for w in store.commitlog.scan_windows(start, verify_crc=False, end=end):
        replayer.window(w)
    return replayer.records


class Replayer:
    """Replays windows of records handed to it in log order (:func:`replay`, or recovery's
    scan as it goes), none from commit-log offset ``below`` on; raises as :func:`replay` does."""

    def __init__(self, store: Store, *, below: int | None = None) -> None:
        self.store = store
        self.below = below
        self.nexts: dict[QueueKey, int] = {}  # each queue's next offset, as replayed
        self.records = 0
        self.end: int | None = None  # where the last record replayed ends

    def window(self, w: RecordWindow) -> None:
        assert w.fields is not None
        n = len(w.starts)
        if self.below is not None and w.origin + w.starts[-1] >= self.below:
            n = bisect.bisect_left(w.starts, self.below - w.origin)
            if n == 0:
                return
            w = w._replace(starts=w.starts[:n], sizes=w.sizes[:n], fields=w.fields.head(n))
        assert w.fields is not None
        _replay_window(self.store, w, w.fields, self.nexts)
        self.records += n
        self.end = w.origin + w.starts[-1] + w.sizes[-1]


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
    topics = topics_of(buf, f.topic_at[lo:hi], f.topic_len[lo:hi])
    tx = f.sysflag[lo:hi] & _TX_MASK
    queued = np.flatnonzero((tx == 0) | (tx == _COMMIT))
    # Each queued record's queue as one number (topic code, queue id: never negative here),
    # numbered by np.unique: the window's queues, and which records are each one's.
    keyed = (topics.codes[queued] << 32) | f.queue_id[lo:hi][queued]
    distinct, codes = np.unique(keyed, return_inverse=True)
    number: list[QueueKey] = [(topics.names[k >> 32], k & _QID_MASK) for k in distinct.tolist()]
    qoffs = f.queue_offset[lo:hi]
    groups = _groups(codes, queued)
    # Queue-offset continuity, per queue: no record may skip past the queue's next offset.
    stop = hi - lo
    firsts: list[int] = []  # each queue's next offset before this batch
    for key, members in zip(number, groups, strict=True):
        offs = qoffs[members]
        nxt = _next_offset(store, nexts, key, int(offs[0]))
        firsts.append(nxt)
        if key not in store.consume_queues and not queue_dir_name(key[0]):
            # No queue can be made for it (a torn topic): the per-record path reports it.
            stop = min(stop, int(members[0]))
            continue
        allowed = np.maximum.accumulate(np.concatenate(([nxt], offs[:-1] + 1)))
        gaps = np.flatnonzero(offs > allowed)
        if len(gaps):
            stop = min(stop, int(members[gaps[0]]))
    if stop < hi - lo:
        # Replay what comes before that record; the per-record path then reports it.
        return _replay_batch(store, w, f, lo, lo + stop, nexts) if stop else lo
    phys = w.origin + f.starts[lo:hi]
    tags, hashes, owners = _keys_and_tags(f, lo, hi, topics, tx != _ROLLBACK)
    sizes = f.sizes[lo:hi]
    for key, members, nxt in zip(number, groups, firsts, strict=True):
        offs = qoffs[members]
        nexts[key] = max(nxt, int(offs.max()) + 1)
        cq = store.consume_queue(key[0], key[1], create=True)
        assert cq is not None
        if len(offs) == 1 or bool((np.diff(offs) == 1).all()):
            units = np.empty(len(members), dtype=UNIT_DTYPE)
            units["phy"] = phys[members]
            units["size"] = sizes[members]
            units["tag"] = tags[members]
            cq.put_packed(int(offs[0]), units.tobytes())
        else:  # (a broker's log replayed over units already there: put checks each)
            cq.put_run(
                [(int(offs[j]), int(phys[i]), int(sizes[i]), int(tags[i]))
                 for j, i in enumerate(members.tolist())]
            )  # fmt: skip
    if len(hashes):
        store.reput_hashes(hashes, phys[owners], f.store_ts[lo:hi][owners])
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


class _Spans(NamedTuple):
    """Per record: where the value of one property begins and ends (-1: the record has none)."""

    begin: Ints
    end: Ints


def _last_values(
    p: npt.NDArray[np.uint8], begin: Ints, end: Ints, owner: Ints, n: int, name: bytes
) -> _Spans:
    """Each record's value of property ``name`` among entries ``[begin, end)`` of ``p``:
    decode_properties' rules, a non-empty value, the last entry of the name wins."""
    width = len(name)
    cand = np.flatnonzero(end - begin > width)
    at = begin[cand]
    match = np.ones(len(cand), dtype=bool)
    for j, byte in enumerate(name):
        match &= p[at + j] == byte
    sel = cand[match]
    o = owner[sel]
    last = np.ones(len(sel), dtype=bool)
    last[:-1] = o[1:] != o[:-1]
    sel, o = sel[last], o[last]
    vb = np.full(n, -1, dtype=np.int64)
    ve = np.full(n, -1, dtype=np.int64)
    vb[o] = begin[sel] + width
    ve[o] = end[sel]
    return _Spans(vb, ve)


_LONG: Final = 256


class _Compact:
    """Byte spans of ``p`` gathered into one small array, for counting and hashing them."""

    def __init__(self, p: npt.NDArray[np.uint8], spans_of: list[tuple[Ints, Ints]]) -> None:
        begins = np.concatenate([b for b, _ in spans_of])
        lengths = np.concatenate([e - b for b, e in spans_of])
        self.data = p[spans(begins, lengths)]
        ends = np.cumsum(lengths)
        self.starts, self.ends = ends - lengths, ends
        self.cuts = np.cumsum([len(b) for b, _ in spans_of])[:-1]

    def _split(self, values: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        return np.split(values, self.cuts)

    def _counts(self, mask: npt.NDArray[np.bool_]) -> list[Ints]:
        running = np.zeros(len(mask) + 1, dtype=np.int64)
        np.cumsum(mask, out=running[1:])
        return self._split(running[self.ends] - running[self.starts])  # type: ignore[return-value]

    def count(self, byte: int) -> list[Ints]:
        """Per span group, per span: how many times ``byte`` occurs."""
        return self._counts(self.data == byte)

    def count_wide(self) -> list[Ints]:
        """Per span group, per span: how many bytes are not ASCII."""
        return self._counts(self.data >= 0x80)

    def hashes(self) -> list[npt.NDArray[np.uint64]]:
        """Per span group: each span's hashCode() modulo 2**32, as text of one-byte chars."""
        return self._split(span_hashes(self.data, self.starts, self.ends))  # type: ignore[return-value]


def _keys_and_tags(
    f: Fields, lo: int, hi: int, topics: Topics, indexed: npt.NDArray[np.bool_]
) -> tuple[Ints, Ints, Ints]:
    """For records ``lo`` to ``hi``: each one's tags code, and the IndexFile hash of each of
    its keys (UNIQ_KEY, then the KEYS tokens that differ from it) with the record each
    belongs to, records in order: what reput_items derives from the same properties.

    The hashes are taken from the bytes as arrays. A record whose keys or tags are not ASCII
    (Java hashes UTF-16) or whose KEYS holds several tokens goes the per-record way.
    """
    n = hi - lo
    at0 = int(f.props_joined_at[lo]) - 1  # the 0x02 in front of record lo's properties
    p = np.frombuffer(f.props_joined, dtype=np.uint8)[at0 : int(f.props_joined_at[hi]) - 1]
    local_at = f.props_joined_at[lo : hi + 1] - at0
    twos = np.flatnonzero(p == 2)
    begin, end = twos[:-1] + 1, twos[1:]
    owner = np.searchsorted(local_at, begin, side="right") - 1
    keys = _last_values(p, begin, end, owner, n, b"KEYS\x01")
    uniq = _last_values(p, begin, end, owner, n, b"UNIQ_KEY\x01")
    tags = _last_values(p, begin, end, owner, n, b"TAGS\x01")

    def length(v: _Spans) -> Ints:
        out: Ints = np.where(v.begin >= 0, v.end - v.begin, 0)
        return out

    # Values longer than this go the per-record way: the arrays below then stay small (a
    # window of records with 32 KiB properties would need gigabytes of them).
    slow = (length(keys) > _LONG) | (length(uniq) > _LONG) | (length(tags) > _LONG)
    groups = [np.flatnonzero(~slow & (v.begin >= 0)) for v in (keys, uniq, tags)]
    values = _Compact(
        p, [(v.begin[g], v.end[g]) for v, g in zip((keys, uniq, tags), groups, strict=True)]
    )
    # Several KEYS tokens, or anything not ASCII (Java hashes UTF-16 code units): per record.
    for g, spaces, wide in zip(groups, values.count(32), values.count_wide(), strict=True):
        slow[g[wide > 0]] = True
        if g is groups[0]:
            slow[g[spaces > 0]] = True
    fast = ~slow
    key_hash, uniq_hash, tag_hash = values.hashes()
    kept = [fast[g] for g in groups]
    # Tags codes: String.hashCode() of the TAGS value, 0 without one.
    has_tags = groups[2][kept[2]]
    tag_codes = np.zeros(n, dtype=np.int64)
    th = tag_hash[kept[2]].astype(np.int64)
    tag_codes[has_tags] = np.where(th >= 1 << 31, th - (1 << 32), th)
    # Keys: hashCode(topic#key) = hashCode(topic#) * 31**len(key) + hashCode(key).
    prefix = np.array([_topic_prefix_hash(t) for t in topics.names], dtype=np.uint64)
    prefix = prefix[topics.codes]
    k_ok, u_ok = kept[0] & indexed[groups[0]], kept[1] & indexed[groups[1]]
    rec_k, hk = groups[0][k_ok], key_hash[k_ok]
    rec_u, hu = groups[1][u_ok], uniq_hash[u_ok]
    if len(rec_k):  # a KEYS value equal to the UNIQ_KEY is indexed once
        ku, kk = uniq.begin[rec_k], keys.begin[rec_k]
        klen, ulen = keys.end[rec_k] - kk, uniq.end[rec_k] - ku
        same = np.flatnonzero((ku >= 0) & (klen == ulen))
        drop = [
            i for i in same.tolist()
            if p[kk[i] : kk[i] + klen[i]].tobytes() == p[ku[i] : ku[i] + ulen[i]].tobytes()
        ]  # fmt: skip
        if drop:
            keep = np.ones(len(rec_k), dtype=bool)
            keep[drop] = False
            rec_k, hk = rec_k[keep], hk[keep]
    full_u = (prefix[rec_u] * powers_of_31(uniq.end[rec_u] - uniq.begin[rec_u]) + hu) & _MASK32
    full_k = (prefix[rec_k] * powers_of_31(keys.end[rec_k] - keys.begin[rec_k]) + hk) & _MASK32
    owners = [rec_u, rec_k]
    subs = [np.zeros(len(rec_u), dtype=np.int64), np.ones(len(rec_k), dtype=np.int64)]
    hashes = [index_hashes_of(full_u), index_hashes_of(full_k)]
    tag_list = tag_codes.tolist()
    for i in np.flatnonzero(slow).tolist():
        a, b = int(local_at[i]), int(local_at[i + 1]) - 1
        props = decode_properties(str(p[a:b].tobytes(), "utf-8", "replace"))
        tag_list[i] = tags_code(props.get(L.PROP_TAGS))
        if not indexed[i]:
            continue
        u = props.get(L.PROP_UNIQ_KEY)
        found = [u] if u else []
        found += [k for k in props.get(L.PROP_KEYS, "").split(" ") if k and k != u]
        if found:
            owners.append(np.full(len(found), i, dtype=np.int64))
            subs.append(np.arange(len(found), dtype=np.int64))
            topic = topics.names[topics.codes[i]]
            hashes.append(np.array([index_key_hash(topic, k) for k in found], dtype=np.int64))
    all_owners = np.concatenate(owners)
    order = np.lexsort((np.concatenate(subs), all_owners))
    return np.array(tag_list, dtype=np.int64), np.concatenate(hashes)[order], all_owners[order]


def _replay_one(
    store: Store, nexts: dict[QueueKey, int], buf: mmap.mmap | bytes, pos: int, phy: int
) -> None:
    """The per-record path: check the record's header and queue offset, then dispatch it."""
    topic, qid, qoff, sysflag, store_ts, size, props = dispatch_fields(buf, pos)
    _check_replayed(store, nexts, buf, pos, phy, (topic, qid, qoff, sysflag))
    keys = tuple(k for k in props.get(L.PROP_KEYS, "").split(" ") if k)
    store.reput_items(
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
