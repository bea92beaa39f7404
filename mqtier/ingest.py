"""Bulk ingest from files or stdin: parse, validate, group-commit, all or nothing.

Input is parsed in chunks on the calling thread while the previous chunk is written and synced
by the group-commit writer, so parsing and the disk overlap. If any input is bad (and
``skip_bad`` is off), everything this run appended is rolled back before the error propagates:
a failed ingest leaves the store as it found it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqtier.errors import InputFormatError, MqtierError
from mqtier.format import layout as L
from mqtier.ingest_chunks import Item, frame_chunk
from mqtier.ingest_chunks import chunks as read_chunks
from mqtier.inputs import Defaults
from mqtier.store.framing import FramedBatch
from mqtier.store.groupcommit import PendingAppend
from mqtier.store.store import Placed, Store

MAX_IN_FLIGHT = 3


@dataclass
class IngestSummary:
    messages: int = 0
    bytes: int = 0
    bad_lines: int = 0
    bad_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    first_offset: int | None = None
    end_offset: int = 0
    queues: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> queue -> count
    input_bytes: int = 0  # bytes of input read so far, for progress (not in to_json)

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "bytes": self.bytes,
            "bad_lines": self.bad_lines,
            "bad_samples": self.bad_samples,
            "seconds": round(self.seconds, 3),  # durations: seconds, to the millisecond
            "messages_per_second": round(self.messages / self.seconds, 1) if self.seconds else None,
            "commitlog_start": self.first_offset,
            "commitlog_end": self.end_offset,
            # Per-queue data is an array of {"topic", "queue", ...} in every document.
            "queues": [
                {"topic": t, "queue": q, "messages": n}
                for t, qs in sorted(self.queues.items())
                for q, n in sorted(qs.items())
            ],
        }


def checkpoint_files(store: Store) -> dict[Path, bytes | None]:
    """The checkpoint files as an ingest found them, for a rollback to put back: the
    reput rewrites them (with new timestamps) while the run goes on."""
    saved: dict[Path, bytes | None] = {}
    for name in (L.FILE_CHECKPOINT, L.FILE_DISPATCH_CHECKPOINT):
        path = store.root / name
        try:
            saved[path] = path.read_bytes()
        except FileNotFoundError:
            saved[path] = None
    return saved


def _located(exc: MqtierError, source: str, line: int) -> MqtierError:
    """The same error class, with the input position in front of its message."""
    if isinstance(exc, InputFormatError) or (line == 0 and source in str(exc)):
        return exc
    located = type(exc).__new__(type(exc))
    Exception.__init__(located, f"{source}:{line}: {exc}")
    located.hint = exc.hint
    return located


def ingest(
    store: Store,
    inputs: list[str],
    *,
    fmt: str = "jsonl",
    defaults: Defaults,
    skip_bad: bool = False,
    grow_queues: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    before_rollback: Callable[[], None] | None = None,
) -> IngestSummary:
    """Append every message of ``inputs`` (paths or ``-``) to ``store``.

    A message naming a queue its topic does not have is an error unless ``grow_queues``.
    ``before_commit`` runs once every message is durable, just before the run is made final
    (its fence lifted): from then on nothing rolls it back. If it raises, the run rolls back.
    ``before_rollback`` runs when a rollback begins (the CLI holds signals from then on: one
    raised half-way through would leave the run's fence and ``abort`` behind).
    A rolled-back run leaves ``checkpoint`` and ``mqtier.dispatch`` byte for byte as they were.
    ``on_progress(messages, input_bytes)`` runs as each chunk becomes durable: the messages so
    far, and the bytes of input read so far (which reach the inputs' sizes by the end).

    Raises:
        MqtierError: the first bad input (its class decides the exit code), after rolling back
            what this call appended; with ``skip_bad`` bad inputs are counted instead.
    """
    summary = IngestSummary()
    t0 = time.perf_counter()
    start = store.commitlog.durable_end
    summary.first_offset = start
    saved = checkpoint_files(store)
    store.fence_ingest(start)
    in_flight: deque[tuple[FramedBatch, PendingAppend[FramedBatch, Placed]]] = deque()

    def settle() -> None:
        batch, pending = in_flight.popleft()
        pending.wait()
        for (topic, qid), count in Counter(batch.queues).items():
            qs = summary.queues.setdefault(topic, {})
            qs[qid] = qs.get(qid, 0) + count
        if on_progress is not None:
            on_progress(summary.messages, summary.input_bytes)

    def bad(exc: MqtierError, source: str, line: int) -> None:
        if not skip_bad:
            raise _located(exc, source, line) from None
        summary.bad_lines += 1
        if len(summary.bad_samples) < 5:
            summary.bad_samples.append(str(_located(exc, source, line)))

    def append(items: list[Item]) -> None:
        """Frame and submit the rows of ``items``; report its bad ones in input order."""
        if not items:
            return
        batch, errors = frame_chunk(store.frame, items, grow_queues=grow_queues)
        for source, line, exc in errors:
            bad(exc, source, line)
        if not batch:
            return
        batch.cached = False
        summary.messages += len(batch)
        summary.bytes += batch.body_bytes
        in_flight.append((batch, store.append_framed_async(batch)))
        if len(in_flight) >= MAX_IN_FLIGHT:
            settle()

    def read(nbytes: int) -> None:
        summary.input_bytes += nbytes

    chunks = read_chunks(
        inputs, fmt, defaults, store.config.max_message_bytes, read, errors_end_chunks=not skip_bad
    )
    try:
        for chunk in chunks:
            append(chunk)
        while in_flight:
            settle()
        # Before the commit point: the derived files and checkpoint of the run are written
        # now, so that a full disk (or a reput that failed during the run) fails the run,
        # which rolls back, rather than the close after it has committed.
        store.checkpoint()
        if before_commit is not None:
            before_commit()
    except BaseException:
        chunks.close()  # an input file is closed now, not when the generator is collected
        for _, pending in in_flight:
            try:
                pending.wait()
            except Exception:  # noqa: BLE001, S110 - the first error is the one to report
                pass
        if before_rollback is not None:
            before_rollback()
        store.rollback_to(start, restore=saved)
        raise
    store.fence_ingest(None)
    store.topics_save_if_dirty()
    summary.end_offset = store.commitlog.durable_end
    summary.seconds = time.perf_counter() - t0
    return summary
