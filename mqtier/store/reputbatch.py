"""The numpy half of dispatching: hash and link a whole batch of index keys as arrays.

Per key, a Python ``IndexFile.put`` plus the hash costs about 4 us; the reput indexes two
or more keys per message, so at 100k messages/s that alone would need most of a core. Here the
batch costs a few array operations, and the bytes written are exactly those of the same items
put one by one (a property test holds the two to it), item bytes before slot heads. Kept apart
from ``indexfile`` so that commands which only read never import numpy.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from mqtier.format import layout as L
from mqtier.format.javahash_batch import index_key_hashes
from mqtier.store.indexfile import IndexFile, IndexService

_INT_MAX: Final = 0x7FFFFFFF
# One 20-byte item as numpy sees it: big-endian and packed, as L.INDEX_ITEM.
_ITEM_DTYPE: Final = np.dtype([("hash", ">i4"), ("phy", ">i8"), ("diff", ">i4"), ("prev", ">i4")])

Int64s = npt.NDArray[np.int64]
# One 20-byte consume-queue unit: commit-log offset, size, tags code (big-endian, packed).
UNIT_DTYPE: Final = np.dtype([("phy", ">i8"), ("size", ">i4"), ("tag", ">i8")])
_UNIT: Final = L.CQ_UNIT
_SMALL_BATCH: Final = 32
QueueKey = tuple[str, int]


def queue_runs(
    queues: list[QueueKey],
    queue_offsets: list[int],
    phys: list[int],
    sizes: list[int],
    tags: list[int],
) -> list[tuple[QueueKey, int, bytes]]:
    """Each queue's records of a batch as (queue, first queue offset, packed units), the
    units in batch order (the writer gave each queue's records consecutive offsets)."""
    n = len(queues)
    if n < _SMALL_BATCH:  # (one append: the arrays would cost more than packing it)
        grouped: dict[QueueKey, tuple[int, list[bytes]]] = {}
        for key, qoff, phy, size, tag in zip(queues, queue_offsets, phys, sizes, tags, strict=True):
            run = grouped.get(key)
            if run is None:
                run = grouped[key] = (qoff, [])
            run[1].append(_UNIT.pack(phy, size, tag))
        return [(key, first, b"".join(packed)) for key, (first, packed) in grouped.items()]
    units = np.empty(n, dtype=UNIT_DTYPE)
    units["phy"] = phys
    units["size"] = sizes
    units["tag"] = tags
    number: dict[QueueKey, int] = {}
    which = [number.setdefault(q, len(number)) for q in queues]
    if len(number) == 1:
        return [(queues[0], queue_offsets[0], units.tobytes())]
    codes = np.array(which, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(number))
    ends = np.cumsum(counts)
    packed = units[order]
    out: list[tuple[QueueKey, int, bytes]] = []
    for key, code in number.items():
        lo, hi = int(ends[code] - counts[code]), int(ends[code])
        out.append((key, queue_offsets[int(order[lo])], packed[lo:hi].tobytes()))
    return out


def index_keys(
    index: IndexService, full_keys: list[str], phys: list[int], stamps: list[int]
) -> None:
    """Add one item per ``topic#key`` for the record at ``phys[i]`` stored at ``stamps[i]``.

    A record's items are adjacent and records come in commit-log order; records below the
    index's ``end_phy`` are skipped, as :meth:`IndexService.put` skips them.
    """
    index_hashes(
        index,
        index_key_hashes(full_keys),
        np.array(phys, dtype=np.int64),
        np.array(stamps, dtype=np.int64),
    )


def index_hashes(index: IndexService, hashes: Int64s, phy_arr: Int64s, ts_arr: Int64s) -> None:
    """:func:`index_keys` with each key's IndexFile hash already taken."""
    if index.files and index.files[-1].header.index_count > 1:
        fresh = phy_arr >= index.end_phy
        if not fresh.all():
            hashes, phy_arr, ts_arr = hashes[fresh], phy_arr[fresh], ts_arr[fresh]
    while len(hashes):
        done = put_items(index.writable_file(), hashes, phy_arr, ts_arr)
        hashes, phy_arr, ts_arr = hashes[done:], phy_arr[done:], ts_arr[done:]


def put_items(f: IndexFile, hashes: Int64s, phys: Int64s, stamps: Int64s) -> int:
    """Add items to one file, byte-for-byte as that many ``f.put`` calls; return how many fit.

    Within the batch each item links to the batch's previous item of the same slot, and the
    first item of a slot to the slot's current head.
    """
    h = f.header
    first = h.index_count
    k = min(len(hashes), f.items - first)
    if k <= 0:
        return 0
    # Before any write: a full disk fails here, as an OSError, with nothing half-written.
    f.file.reserve(f.items_at + (first + k) * L.INDEX_ITEM_BYTES)
    hashes, phys, stamps = hashes[:k], phys[:k], stamps[:k]
    numbers = np.arange(first, first + k, dtype=np.int64)
    slots = hashes % f.slots
    order = np.argsort(slots, kind="stable")
    by_slot = slots[order]
    same = by_slot[1:] == by_slot[:-1]  # this sorted item's predecessor shares its slot
    is_last = np.ones(k, dtype=bool)
    is_last[:-1] = ~same
    slot_table = np.frombuffer(f.mm, dtype=">i4", count=f.slots, offset=L.INDEX_HEADER.size)
    try:
        heads = slot_table[slots].astype(np.int64)
    finally:
        del slot_table  # a live view would keep the map from closing
    heads[(heads <= 0) | (heads >= first)] = 0  # garbage or a rewound tail: no chain
    prev_sorted = heads[order]
    prev_sorted[1:][same] = numbers[order][:-1][same]
    prev = np.empty(k, dtype=np.int64)
    prev[order] = prev_sorted

    # put() takes each item's time difference before it moves begin_ts (which the first item
    # of a file does), and writes 0 while begin_ts is unset.
    old_begin_ts = h.begin_ts
    if first <= 1:
        h.begin_phy = int(phys[0])
        h.begin_ts = int(stamps[0])
    diffs = _seconds_since(stamps, h.begin_ts)
    diffs[0] = _seconds_since(stamps[:1], old_begin_ts)[0]
    items = np.empty(k, dtype=_ITEM_DTYPE)
    items["hash"] = hashes
    items["phy"] = phys
    items["diff"] = diffs
    items["prev"] = prev
    at = f.items_at + first * L.INDEX_ITEM_BYTES
    f.mm[at : at + k * L.INDEX_ITEM_BYTES] = items.tobytes()
    # Only then the slot heads: a kill -9 between the two leaves heads that point at items
    # already written, which recovery's rewind can follow. Heads written first pointed at
    # zeros (the file was dropped and rebuilt) or, in a file rewound before, at the items of
    # an earlier run, whose links lead into other slots' chains and lose their keys.
    _link_heads(f, by_slot[is_last], numbers[order][is_last])
    h.slot_count += int(np.count_nonzero(prev == 0))
    h.index_count = first + k
    h.end_phy = int(phys[-1])
    h.end_ts = max(h.end_ts, int(stamps.max()))
    f.file.dirty = True
    return k


def _link_heads(f: IndexFile, slots: Int64s, heads: Int64s) -> None:
    slot_table = np.frombuffer(f.mm, dtype=">i4", count=f.slots, offset=L.INDEX_HEADER.size)
    try:
        slot_table[slots] = heads
    finally:
        del slot_table  # a live view would keep the map from closing


def _seconds_since(stamps: Int64s, begin_ts: int) -> Int64s:
    if begin_ts <= 0:
        return np.zeros(len(stamps), dtype=np.int64)
    return np.clip((stamps - begin_ts) // 1000, 0, _INT_MAX)
