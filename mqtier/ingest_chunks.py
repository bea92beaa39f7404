"""An ingest's input in chunks: lines and files read, parsed and framed a chunk at a time.

A chunk is what one group commit appends: at most CHUNK_MESSAGES items or the item that brings
it to CHUNK_BYTES, and (without ``--skip-bad``) no item past a bad one. JSON lines are parsed a
chunk's worth at a time from whole blocks of lines, not one line through several generators:
at a hundred thousand lines a second, each layer a line passes through costs a few percent.
"""

from __future__ import annotations

import bisect
import itertools
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Final, NamedTuple

from mqtier.errors import InputFormatError, MessageTooLargeError, MqtierError
from mqtier.format.message import Message
from mqtier.inputs import (
    Defaults,
    files_in,
    max_line_bytes,
    read_file,
    read_line_blocks,
    rows_from_json,
)
from mqtier.store.framing import FramedBatch, Row, row_of

CHUNK_MESSAGES = 1024
CHUNK_BYTES = 1 << 20

Item = tuple[str, int, Row | MqtierError]  # (source, line, the message or its error)


def chunks(
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
    for part in _parts(inputs, fmt, defaults, max_message_bytes, on_read):
        if not chunk and not part.has_error and part.full:
            yield part.items  # (cut by the rule below: the usual case in a big input)
            continue
        for item, size in zip(part.items, part.sizes, strict=True):
            chunk.append(item)
            nbytes += size
            # An error goes out at once: without --skip-bad it ends the run, which must not
            # wait for more input (after a line too long the rest may never come: /dev/zero).
            full = len(chunk) >= CHUNK_MESSAGES or nbytes >= CHUNK_BYTES
            if full or (errors_end_chunks and isinstance(item[2], MqtierError)):
                yield chunk
                chunk, nbytes = [], 0
    if chunk:
        yield chunk


class _Part(NamedTuple):
    """Items of one input, in order, with the bytes each holds. ``full``: they make a chunk
    of their own by the chunk rule, cut where it cuts."""

    items: list[Item]
    sizes: list[int]
    has_error: bool
    full: bool = False


def _parts(
    inputs: list[str],
    fmt: str,
    defaults: Defaults,
    max_message_bytes: int,
    on_read: Callable[[int], None] | None,
) -> Generator[_Part, None, None]:
    """Each input's items; JSON lines parsed a chunk's worth at a time."""
    limit = max_line_bytes(fmt, max_message_bytes)
    for name in inputs:
        if fmt == "file":
            for source, n, msg in _file_messages(Path(name), defaults, max_message_bytes, on_read):
                if isinstance(msg, Message):
                    yield _Part([(source, n, row_of(msg))], [len(msg.body)], False)
                else:
                    yield _Part([(source, n, msg)], [0], True)
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
            blocks = read_line_blocks(stream, source, max_line_bytes=limit, on_read=on_read)
            if fmt == "raw":
                for numbers, lines in blocks:
                    for n, line in zip(numbers, lines, strict=True):
                        item, size = _raw_item(source, n, line, defaults, limit, max_message_bytes)
                        yield _Part([item], [size], isinstance(item[2], MqtierError))
            else:
                yield from _json_parts(source, blocks, defaults, limit, max_message_bytes)
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


def _json_parts(
    source: str,
    blocks: Iterator[tuple[Sequence[int], Sequence[bytes | None]]],
    defaults: Defaults,
    limit: int,
    max_bytes: int,
) -> Generator[_Part, None, None]:
    """The lines of ``blocks`` parsed in parts cut by the chunk rule (the last part, and a
    part before a line too long, may be shorter)."""
    numbers: list[int] = []
    lines: list[bytes] = []
    sizes: list[int] = []

    def parsed(end: int, full: bool) -> _Part:
        rows = rows_from_json(lines[:end], defaults, source, numbers[:end])
        items: list[Item] = list(
            zip(itertools.repeat(source, end), numbers[:end], rows, strict=True)
        )
        part = _Part(items, sizes[:end], any(map(isinstance, rows, _ERRORS)), full)
        del numbers[:end], lines[:end], sizes[:end]
        return part

    for block_numbers, block_lines in blocks:
        if type(block_numbers) is not range and None in block_lines:
            for n, line in zip(block_numbers, block_lines, strict=True):
                if line is None:  # too long: the lines before it, then its error, at once
                    if lines:
                        yield parsed(len(lines), False)
                    too_long = MessageTooLargeError(_too_long("line", limit, max_bytes))
                    yield _Part([(source, n, too_long)], [0], True)
                else:
                    numbers.append(n)
                    lines.append(line)
                    sizes.append(len(line))
        else:
            numbers += block_numbers
            lines += block_lines  # type: ignore[arg-type] # (no None: checked above)
            sizes += map(len, block_lines)  # type: ignore[arg-type]
        while (end := _chunk_end(sizes)) is not None:
            yield parsed(end, True)
    if lines:
        yield parsed(len(lines), False)


_ERRORS: Final = itertools.repeat(MqtierError)


def _chunk_end(sizes: list[int]) -> int | None:
    """Where the first chunk of items of these sizes ends, by the chunk rule (CHUNK_MESSAGES
    items, or the item that brings it to CHUNK_BYTES); None if they do not fill one yet."""
    cumulative = list(itertools.accumulate(sizes[:CHUNK_MESSAGES]))
    at = bisect.bisect_left(cumulative, CHUNK_BYTES)
    if at < len(cumulative):
        return at + 1
    return CHUNK_MESSAGES if len(cumulative) == CHUNK_MESSAGES else None


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


BadItem = tuple[str, int, MqtierError]  # (source, line, its error)
FrameRows = Callable[..., FramedBatch]  # Store.frame (or a Framer's frame)


def frame_chunk(
    frame: FrameRows, items: list[Item], *, grow_queues: bool
) -> tuple[FramedBatch, list[BadItem]]:
    """The good rows of ``items`` framed as one batch, and the bad items in input order
    (those the input reader found and those the framer refused)."""
    rows: list[Row] = [item[2] for item in items]  # type: ignore[misc] # (errors: below)
    where: list[int] | None = None  # the item of each row, when some items are errors
    errors: list[tuple[int, MqtierError]] = []  # (item, its error), as found
    if any(map(isinstance, rows, _ERRORS)):
        rows, where = [], []
        for i, (_, _, row) in enumerate(items):
            if isinstance(row, MqtierError):
                errors.append((i, row))
            else:
                rows.append(row)
                where.append(i)
    batch = frame(
        rows,
        grow_queues=grow_queues,
        on_error=lambda r, exc: errors.append((where[r] if where is not None else r, exc)),
    )
    errors.sort(key=lambda e: e[0])
    return batch, [(items[i][0], items[i][1], exc) for i, exc in errors]
