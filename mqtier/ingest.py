"""Bulk ingest from files or stdin: parse, validate, group-commit, all or nothing.

Input is parsed in chunks on the calling thread while the previous chunk is written and synced
by the group-commit writer, so parsing and the disk overlap. If any input is bad (and
``skip_bad`` is off), everything this run appended is rolled back before the error propagates:
a failed ingest leaves the store as it found it.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Generator
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
    message_from_json,
    read_file,
    read_lines,
)
from mqtier.store.groupcommit import PendingAppend
from mqtier.store.store import AppendResult, Prepared, Store, queue_key_hashes

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


def _messages(
    inputs: list[str],
    fmt: str,
    defaults: Defaults,
    max_message_bytes: int,
    on_read: Callable[[int], None] | None = None,
) -> Generator[tuple[str, int, Message | MqtierError], None, None]:
    """(source, line, message or the error that line raised), in input order.

    No input is held whole beyond what one message of the store could be: a longer line or
    file is an error at that size (``/dev/zero`` fails after a few MiB, it does not fill RAM).
    """
    limit = max_line_bytes(fmt, max_message_bytes)
    for name in inputs:
        if fmt == "file":
            yield from _file_messages(Path(name), defaults, max_message_bytes, on_read)
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
            for n, line in read_lines(stream, source, max_line_bytes=limit, on_read=on_read):
                if line is None:
                    too_long = _too_long("line", limit, max_message_bytes)
                    yield source, n, MessageTooLargeError(too_long)
                elif fmt == "raw":
                    if not defaults.topic:
                        yield source, n, InputFormatError(source, n, "raw input needs --topic")
                    else:
                        yield source, n, Message(defaults.topic, line, queue_id=defaults.queue)
                else:
                    try:
                        yield source, n, message_from_json(line, defaults, source, n)
                    except InputFormatError as exc:
                        yield source, n, exc
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()


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
    in_flight: deque[PendingAppend[Prepared, AppendResult]] = deque()
    chunk: list[Prepared] = []
    chunk_bytes = 0

    def settle(pending: PendingAppend[Prepared, AppendResult]) -> None:
        for r in pending.wait():
            qs = summary.queues.setdefault(r.topic, {})
            qs[r.queue_id] = qs.get(r.queue_id, 0) + 1
        if on_progress is not None:
            on_progress(summary.messages, summary.input_bytes)

    def bad(exc: MqtierError, source: str, line: int) -> None:
        if not skip_bad:
            raise _located(exc, source, line) from None
        summary.bad_lines += 1
        if len(summary.bad_samples) < 5:
            summary.bad_samples.append(str(_located(exc, source, line)))

    def submit(chunk: list[Prepared]) -> None:
        in_flight.append(store.append_prepared_async(chunk))
        if len(in_flight) >= MAX_IN_FLIGHT:
            settle(in_flight.popleft())

    def prepare_parsed(parsed: list[tuple[str, int, Message]]) -> None:
        nonlocal chunk, chunk_bytes
        hashes = queue_key_hashes([m for _, _, m in parsed])
        for (source, line, msg), key_hash in zip(parsed, hashes, strict=True):
            try:
                prepared = store.prepare(msg, key_hash, grow_queues=grow_queues)
            except MqtierError as exc:
                bad(exc, source, line)
                continue
            chunk.append(prepared)
            chunk_bytes += prepared[11]
            summary.messages += 1
            summary.bytes += len(prepared[4])
            if len(chunk) >= CHUNK_MESSAGES or chunk_bytes >= CHUNK_BYTES:
                submit(chunk)
                chunk, chunk_bytes = [], 0

    parsed: list[tuple[str, int, Message]] = []
    parsed_bytes = 0

    def read(nbytes: int) -> None:
        summary.input_bytes += nbytes

    messages = _messages(inputs, fmt, defaults, store.config.max_message_bytes, read)
    try:
        for source, line, item in messages:
            if isinstance(item, MqtierError):
                bad(item, source, line)
                continue
            parsed.append((source, line, item))
            parsed_bytes += len(item.body)
            # bytes too: 1024 bodies of 4 MiB each would be 4 GiB held at once
            if len(parsed) >= CHUNK_MESSAGES or parsed_bytes >= CHUNK_BYTES:
                prepare_parsed(parsed)
                parsed, parsed_bytes = [], 0
        prepare_parsed(parsed)
        if chunk:
            in_flight.append(store.append_prepared_async(chunk))
        while in_flight:
            settle(in_flight.popleft())
        # Before the commit point: the derived files and checkpoint of the run are written
        # now, so that a full disk (or a dispatcher that failed during the run) fails the run,
        # which rolls back, rather than the close after it has committed.
        store.checkpoint()
        if before_commit is not None:
            before_commit()
    except BaseException:
        messages.close()  # an input file is closed now, not when the generator is collected
        for pending in in_flight:
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
