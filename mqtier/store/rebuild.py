"""``recover --rebuild``: throw away every consume queue and IndexFile and derive them again.

Consume queues and IndexFiles are derived data: everything in them comes from the commit
log. When they are lost or damaged beyond what recovery's replay from the checkpoint mends
(a queue directory deleted by hand, ``index/`` wiped, files copied from another store), the
repair is to dispatch the whole commit log again, from its first record.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mqtier.format import layout as L
from mqtier.store.replay import replay

if TYPE_CHECKING:
    from mqtier.store.recovery import RecoveryReport
    from mqtier.store.store import Store


@dataclass
class RebuildReport:
    """What a rebuild removed and wrote; ``missing``: the derived files found lost that
    made a writable open rebuild by itself (empty when asked for)."""

    missing: list[str] = field(default_factory=list)
    consume_queue_files_removed: int = 0
    index_files_removed: list[str] = field(default_factory=list)
    replayed_from: int = 0
    replayed_to: int = 0
    messages: int = 0
    queues: int = 0
    index_files: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        # "queues" is an array of per-queue objects in every document; this is a count.
        doc["consume_queues"] = doc.pop("queues")
        doc["index_files"] = doc.pop("index_files")
        doc["seconds"] = round(doc.pop("seconds"), 3)  # durations: seconds, to the millisecond
        return doc


def rebuild_derived(
    store: Store, missing: list[str] | None = None, *, replayed: RecoveryReport | None = None
) -> RebuildReport:
    """Drop ``store``'s consume queues and IndexFiles and dispatch the whole commit log.

    Runs on a writable open after recovery, before the writer and reput threads start,
    so nothing else touches the derived files meanwhile. A crash part-way leaves a store
    whose next writable open (or another rebuild) derives what is missing again.
    ``replayed``: the recovery of a store with no derived file left, which replayed the
    whole log as it scanned it; only the checkpoint is left to write.
    """
    t0 = time.monotonic()
    report = RebuildReport(missing=list(missing or []))
    cl = store.commitlog
    if replayed is not None:
        report.replayed_from, report.replayed_to = replayed.redispatch_from, cl.durable_end
        report.messages = replayed.messages_redispatched
        store.write_checkpoint(cl.durable_end)
        report.queues = len(store.consume_queues)
        report.index_files = len(store.index.files)
        report.seconds = round(replayed.seconds + time.monotonic() - t0, 6)
        return report
    queues = store.consume_queues
    for cq in queues.values():
        report.consume_queue_files_removed += len(cq.files)
        cq.close()
    queues.clear()
    cq_root = store.root / L.DIR_CONSUMEQUEUE
    if cq_root.is_dir():
        shutil.rmtree(cq_root)
    report.index_files_removed = [p.name for p in store.index.drop_after(-1)]
    report.replayed_from, report.replayed_to = cl.min_offset, cl.durable_end
    report.messages = replay(store, cl.min_offset, cl.durable_end)
    store.write_checkpoint(cl.durable_end)  # flushes what was rebuilt, then records it
    report.queues = len(queues)
    report.index_files = len(store.index.files)
    report.seconds = round(time.monotonic() - t0, 6)
    return report
