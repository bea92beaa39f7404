"""Bulk ingest from files or stdin: parse, validate, group-commit, all or nothing.

Input is parsed in chunks on the calling thread while the previous chunk is written and synced
by the group-commit writer, so parsing and the disk overlap. If any input is bad (and
``skip_bad`` is off), everything this run appended is rolled back before the error propagates:
a failed ingest leaves the store as it found it.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqtier.errors import InputFormatError, MessageTooLargeError, MqtierError
from mqtier.format import layout as L
from mqtier.format.message import Message
from mqtier.inputs import (
    Defaults,
    files_in,
    max_line_bytes,
    read_file,
    read_lines,
    rows_from_json,
)
from mqtier.store.framing import FramedBatch, Row, row_of
from mqtier.store.groupcommit import PendingAppend
from mqtier.store.store import Placed, Store

CHUNK_MESSAGES = 1024
CHUNK_BYTES = 1 << 20
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


Item = tuple[str, int, Row | MqtierError]  # (source, line, the message or its error)


def _chunks(
    inputs: list[str],
    fmt: str,
    defaults: Defaults,
    max_message_bytes: int,
    on_read: Callable[[int], None] | None = None,
    *,
    errors_end_chunks: bool = True,
) -> Generator[list[Item], None, None]:
    """Input in order, in chunks of at most CHUNK_MESSAGES items or about CHUNK_BYTES
    (and with ``errors_end_chunks``, up to an error: the run ends there).

    No input is held whole beyond what one message of the store could be: a longer line or
    file is an error at that size (``/dev/zero`` fails after a few MiB, it does not fill RAM).
    """
    chunk: list[Item] = []
    nbytes = 0
    for item, size in _items(inputs, fmt, defaults, max_message_bytes, on_read):
        chunk.append(item)
        nbytes += size
        # An error goes out at once: without --skip-bad it ends the run, which must not wait
        # for more input (after a line too long the rest may never come: /dev/zero).
        full = len(chunk) >= CHUNK_MESSAGES or nbytes >= CHUNK_BYTES
        if full or (errors_end_chunks and isinstance(item[2], MqtierError)):
            yield chunk
            chunk, nbytes = [], 0
    if chunk:
        yield chunk


def _items(
    inputs: list[str],
    fmt: str,
    defaults: Defaults,
    max_message_bytes: int,
    on_read: Callable[[int], None] | None,
) -> Generator[tuple[Item, int], None, None]:
    """Each input item with the bytes it holds; JSON lines parsed a chunk's worth at a time."""
    limit = max_line_bytes(fmt, max_message_bytes)
    for name in inputs:
        if fmt == "file":
            for source, n, msg in _file_messages(Path(name), defaults, max_message_bytes, on_read):
                if isinstance(msg, Message):
                    yield (source, n, row_of(msg)), len(msg.body)
                else:
                    yield (source, n, msg), 0
            continue
        if name == "-":
            stream = sys.stdin.buffer
            source = "<stdin>"
        else:
            # A file that cannot be opened is an operating-system error (exit 1, like a
            # missing --format file input), not malformed input: its OSError names the file.
            stream = open(name, "rb")  # noqa: SIM115 - closed below, after the generator
            source = name
        try:
            lines = read_lines(stream, source, max_line_bytes=limit, on_read=on_read)
            if fmt == "raw":
                for n, line in lines:
                    yield _raw_item(source, n, line, defaults, limit, max_message_bytes)
            else:
                yield from _json_items(source, lines, defaults, limit, max_message_bytes)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()


def _raw_item(
    source: str, n: int, line: bytes | None, defaults: Defaults, limit: int, max_bytes: int
) -> tuple[Item, int]:
    if line is None:
        return (source, n, MessageTooLargeError(_too_long("line", limit, max_bytes))), 0
    if not defaults.topic:
        return (source, n, InputFormatError(source, n, "raw input needs --topic")), 0
    return (source, n, (defaults.topic, line, defaults.queue, (), None, {}, 0)), len(line)


def _json_items(
    source: str,
    lines: Iterator[tuple[int, bytes | None]],
    defaults: Defaults,
    limit: int,
    max_bytes: int,
) -> Generator[tuple[Item, int], None, None]:
    held: list[tuple[int, bytes]] = []
    nbytes = 0

    def parsed() -> Generator[tuple[Item, int], None, None]:
        rows = rows_from_json([ln for _, ln in held], defaults, source, [n for n, _ in held])
        for (n, line), row in zip(held, rows, strict=True):
            yield (source, n, row), len(line)

    for n, line in lines:
        if line is None:  # too long: the lines before it, then its error, at once
            yield from parsed()
            held, nbytes = [], 0
            yield (source, n, MessageTooLargeError(_too_long("line", limit, max_bytes))), 0
            continue
        held.append((n, line))
        nbytes += len(line)
        if len(held) >= CHUNK_MESSAGES or nbytes >= CHUNK_BYTES:
            yield from parsed()
            held, nbytes = [], 0
    yield from parsed()


def _file_messages(
    root: Path,
    defaults: Defaults,
    max_message_bytes: int,
    on_read: Callable[[int], None] | None = None,
) -> Generator[tuple[str, int, Message | MqtierError], None, None]:
    for path in files_in(root):
        if on_read is not None:
            on_read(_size_of(path))
        if not defaults.topic:
            yield str(path), 0, InputFormatError(str(path), 0, "file input needs --topic")
            continue
        try:
            body = read_file(path, max_message_bytes)
        except OSError as exc:
            yield str(path), 0, InputFormatError(str(path), 0, f"cannot read: {exc.strerror}")
            continue
        if body is None:
            too_long = _too_long("file", max_message_bytes, max_message_bytes)
            yield str(path), 0, MessageTooLargeError(f"{path}:0: {too_long}")
            continue
        yield str(path), 0, Message(defaults.topic, body, queue_id=defaults.queue)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reading it fails next, with the error to report


def _too_long(what: str, limit: int, max_message_bytes: int) -> str:
    return (
        f"{what} is over {limit:,} bytes, longer than any message this store accepts "
        f"(maximum message size {max_message_bytes:,} bytes)"
    )


def checkpoint_files(store: Store) -> dict[Path, bytes | None]:
    """The checkpoint files as an ingest found them, for a rollback to put back: the
    dispatcher rewrites them (with new timestamps) while the run goes on."""
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
        rows: list[Row] = []
        where: list[int] = []  # the item of each row
        errors: list[tuple[int, MqtierError]] = []  # (item, its error), as found
        for i, (_, _, row) in enumerate(items):
            if isinstance(row, MqtierError):
                errors.append((i, row))
            else:
                rows.append(row)
                where.append(i)
        batch = store.frame(
            rows,
            grow_queues=grow_queues,
            on_error=lambda r, exc: errors.append((where[r], exc)),
        )
        for i, exc in sorted(errors, key=lambda e: e[0]):
            bad(exc, items[i][0], items[i][1])
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

    chunks = _chunks(
        inputs, fmt, defaults, store.config.max_message_bytes, read, errors_end_chunks=not skip_bad
    )
    try:
        for chunk in chunks:
            append(chunk)
        while in_flight:
            settle()
        # Before the commit point: the derived files and checkpoint of the run are written
        # now, so that a full disk (or a dispatcher that failed during the run) fails the run,
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
