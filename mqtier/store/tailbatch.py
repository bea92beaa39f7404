"""Which records of a window a read-only view's replay in memory can pass over, as arrays.

A crashed broker's view reads its whole last commit-log file (the queues' end is no bound
after a crash), yet nearly every record there is in its queue and its IndexFile already: one
lookup of the queue and one of its unit per record, in Python, was most of such an open. Here
a window's records are matched to their queues' units with one sort and one copy of units per
queue; the records that are not plainly there go the per-record way (tailview.py), which also
judges them exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from mqtier.format import layout as L
from mqtier.format.recordbatch import Fields, topics_of
from mqtier.store.commitlog import RecordWindow
from mqtier.store.consumequeue import ConsumeQueue

_QID_MASK = 0xFFFFFFFF


def already_there(
    w: RecordWindow, f: Fields, cqs: Mapping[tuple[str, int], ConsumeQueue], index_end: int
) -> npt.NDArray[np.bool_]:
    """Per record of ``w``: whether its queue's unit on disk is its own (not torn), and it is
    below the IndexFile's end, so the view has nothing to add for it. For each queue only the
    records before the first that fails count: what the per-record path does with that one (a
    torn unit hidden, a unit added in memory) changes what the later ones need."""
    n = len(f.starts)
    there = np.zeros(n, dtype=bool)
    phys = w.origin + f.starts
    tx = f.sysflag & L.SYSFLAG_TRANSACTION_MASK
    # Only what the reput puts in a queue has a unit to check: a prepared or rolled-back
    # transaction's record is passed over once its queue offset is below the queue's end.
    dispatched = (tx == 0) | (tx == L.SYSFLAG_TRANSACTION_COMMIT)
    candidate = (f.queue_id >= 0) & (f.topic_len > 0) & (phys < index_end)
    if not candidate.any():
        return there
    topics = topics_of(w.buf, f.topic_at, f.topic_len)
    keyed = (topics.codes << 32) | np.where(candidate, f.queue_id, 0)
    distinct, codes = np.unique(keyed, return_inverse=True)
    codes = codes.reshape(n)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(distinct) + 1))
    for k, key in enumerate(distinct.tolist()):
        members = order[bounds[k] : bounds[k + 1]]
        cq = cqs.get((topics.names[key >> 32], key & _QID_MASK))
        if cq is None:
            continue
        qoffs = f.queue_offset[members]
        ok = candidate[members] & (qoffs < cq.max_offset)
        check = ok & dispatched[members] & (qoffs >= cq.first_offset)
        if check.any():
            lo, hi = int(qoffs[check].min()), int(qoffs[check].max()) + 1
            units = np.array(cq.units(lo, hi - lo), dtype=np.int64).reshape(-1, 3)
            at = np.clip(qoffs - lo, 0, max(len(units) - 1, 0))
            match = check & (qoffs - lo < len(units))
            if len(units):
                match &= (units[at, 0] == phys[members]) & (units[at, 1] == f.sizes[members])
            ok &= ~check | match
        there[members] = np.logical_and.accumulate(ok)
    return there
