"""Turning input (JSON Lines, raw lines, one file per message) into :class:`Message` objects.

JSON Lines fields: ``topic``, ``queue``, ``body`` (text) or ``body_b64``, ``keys`` (a list or a
space-separated string), ``tags``, ``properties`` (an object of strings). ``topic`` and ``queue``
fall back to the command's flags.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import orjson

from mqtier.errors import InputFormatError
from mqtier.format import layout as L
from mqtier.format.message import Message
from mqtier.store.framing import Row, row_of

FORMATS = ("jsonl", "raw", "file")


@dataclass(frozen=True, slots=True)
class Defaults:
    topic: str | None
    queue: int | None


def _str_field(doc: dict[str, Any], name: str, source: str, line: int) -> str | None:
    value = doc.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InputFormatError(source, line, f"field {name!r} must be a string")


def message_from_json(raw: bytes, defaults: Defaults, source: str, line: int) -> Message:
    """One JSON Lines record to a Message.

    Raises:
        InputFormatError: the line is not a JSON object of the documented shape.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputFormatError(source, line, f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputFormatError(source, line, "expected a JSON object")
    topic = _str_field(doc, "topic", source, line) or defaults.topic
    if not topic:
        raise InputFormatError(source, line, "no topic (give --topic or a 'topic' field)")
    queue = doc.get("queue", defaults.queue)
    if queue is not None and (not isinstance(queue, int) or isinstance(queue, bool) or queue < 0):
        raise InputFormatError(source, line, f"queue must be a non-negative integer, not {queue!r}")
    if doc.get("body") is not None and doc.get("body_b64") is not None:
        # Which one was meant cannot be known; silently storing one would lose the other.
        raise InputFormatError(source, line, "fields 'body' and 'body_b64' are both given")
    if doc.get("body_b64") is not None:
        b64 = doc["body_b64"]
        if not isinstance(b64, str):
            raise InputFormatError(source, line, "field 'body_b64' must be a string")
        try:
            body = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise InputFormatError(source, line, "field 'body_b64' is not valid base64") from None
    else:
        text = doc.get("body")
        if text is None:
            raise InputFormatError(source, line, "no 'body' or 'body_b64' field")
        if isinstance(text, str):
            body = text.encode("utf-8")
        else:  # any other JSON value is stored as its compact JSON text
            body = orjson.dumps(text)
    keys_field = doc.get("keys")
    if keys_field is None:
        keys: tuple[str, ...] = ()
    elif isinstance(keys_field, str):
        keys = tuple(k for k in keys_field.split(" ") if k)
    elif isinstance(keys_field, list) and all(isinstance(k, str) for k in keys_field):
        keys = tuple(keys_field)
    else:
        raise InputFormatError(source, line, "field 'keys' must be a string or a list of strings")
    tags = _str_field(doc, "tags", source, line)
    props = doc.get("properties") or {}
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise InputFormatError(source, line, "field 'properties' must be an object of strings")
    return Message(topic=topic, body=body, queue_id=queue, keys=keys, tags=tags, properties=props)


def rows_from_json(
    lines: list[bytes], defaults: Defaults, source: str, numbers: list[int]
) -> list[Row | InputFormatError]:
    """:func:`message_from_json` of each line (numbered ``numbers``), as framer rows.

    A line of the plain shape (a string body, no ``body_b64``) becomes a row straight from
    its parse; anything else goes through :func:`message_from_json`, which decides it (and
    names the line in its error). Parsing a chunk as one JSON array is no faster with orjson,
    and it could not tell which line a value came from.
    """
    loads = orjson.loads
    out: list[Row | InputFormatError] = []
    for raw, n in zip(lines, numbers, strict=True):
        try:
            row = _plain_row(loads(raw), defaults)
        except orjson.JSONDecodeError:
            row = None
        out.append(row if row is not None else _row_or_error(raw, defaults, source, n))
    return out


def _row_or_error(raw: bytes, defaults: Defaults, source: str, line: int) -> Row | InputFormatError:
    try:
        return row_of(message_from_json(raw, defaults, source, line))
    except InputFormatError as exc:
        return exc


_NO_PROPERTIES: Mapping[str, str] = MappingProxyType({})


def _plain_row(doc: Any, defaults: Defaults) -> Row | None:
    """The row :func:`message_from_json` makes of ``doc`` when it has the plain shape, else
    None (that function then decides, with its exact error for a bad line). Written for
    speed: it runs once per input line."""
    if type(doc) is not dict:
        return None
    get = doc.get
    body = get("body")
    if type(body) is not str or get("body_b64") is not None:
        return None
    topic = get("topic")
    if topic is not None and type(topic) is not str:
        return None
    topic = topic or defaults.topic
    if not topic:
        return None
    queue = get("queue", defaults.queue)
    if queue is not None and (type(queue) is not int or queue < 0):
        return None
    keys_field = get("keys")
    keys: tuple[str, ...]
    if keys_field is None:
        keys = ()
    elif type(keys_field) is list:
        keys = tuple(keys_field)
        if not all(type(k) is str for k in keys):
            return None
    elif type(keys_field) is str:
        keys = tuple(k for k in keys_field.split(" ") if k)
    else:
        return None
    tags = get("tags")
    if tags is not None and type(tags) is not str:
        return None
    props = get("properties")
    if not props:
        props = _NO_PROPERTIES
    elif type(props) is not dict or not all(type(v) is str for v in props.values()):
        return None
    return (topic, body.encode("utf-8"), queue, keys, tags, props, 0)


_WHITESPACE = b" \t\r\n\x0b\x0c"


def _all_start_plain(lines: list[bytes]) -> bool:
    """No line is empty or starts with whitespace (the kept lines are then all of them).
    A bytes prefix test per line costs less than any scan of the block for b"\\n ": the
    search stops at every newline."""
    return not [line for line in lines if not line or line[0] in _WHITESPACE]


def max_line_bytes(fmt: str, max_message_bytes: int) -> int:
    """The longest input line that could still hold a message the store accepts.

    A raw line is the body (plus a CR). A JSON line may spell every byte of the body,
    properties and topic as a six-byte ``\\u00XX`` escape; 64 KiB more covers the field names
    and punctuation. Anything longer is refused as soon as it is seen, before it is held whole.
    """
    if fmt == "raw":
        return max_message_bytes + 1
    return 6 * (max_message_bytes + L.MAX_PROPERTIES_BYTES + L.MAX_TOPIC_BYTES_V1) + (64 << 10)


def read_lines(
    stream: BinaryIO,
    source: str,
    block_bytes: int = 4 << 20,
    max_line_bytes: int | None = None,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line without its newline), skipping blank lines: :func:`read_line_blocks`
    a line at a time."""
    for numbers, lines in read_line_blocks(stream, source, block_bytes, max_line_bytes, on_read):
        yield from zip(numbers, lines, strict=True)


def read_line_blocks(
    stream: BinaryIO,
    source: str,
    block_bytes: int = 4 << 20,
    max_line_bytes: int | None = None,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[tuple[Sequence[int], Sequence[bytes | None]]]:
    """The input's lines a block at a time: (their line numbers, the lines without their
    newlines), blank lines left out.

    ``on_read`` hears the size of every block read: input bytes consumed, which a progress bar
    measures against the file's size (body bytes would fall short of it by the JSON around
    each body).

    A line longer than ``max_line_bytes`` comes out as None as soon as it is known to be too
    long (a block of its own when it is longer than a block), and the rest of it is read and
    dropped up to its newline: memory stays within a block plus the limit whatever the input
    (``/dev/zero``, say).

    Reads big blocks and splits them in C: iterating a file line by line costs several times
    more per line, which shows at hundreds of thousands of lines per second. A block with no
    carriage return and no line that is empty or starts with whitespace (every block of the
    usual JSON Lines) goes out as split, its numbers a range.
    """
    limit = max_line_bytes if max_line_bytes is not None else sys.maxsize
    n = 0
    rest = b""
    skipping = False  # inside a line already reported as too long: drop it up to its newline
    while True:
        block = stream.read(block_bytes)
        if not block:
            break
        if on_read is not None:
            on_read(len(block))
        if skipping:
            cut = block.find(b"\n")
            if cut < 0:
                continue
            block = block[cut + 1 :]
            skipping = False
        data = rest + block if rest else block
        lines = data.split(b"\n")
        rest = lines.pop()
        checked = len(data) > limit  # else no line here can be too long: skip the check
        if lines and not checked and b"\r" not in data and _all_start_plain(lines):
            yield range(n + 1, n + 1 + len(lines)), lines
            n += len(lines)
        else:
            numbers: list[int] = []
            kept: list[bytes | None] = []
            for line in lines:
                n += 1
                if checked and len(line) > limit:
                    numbers.append(n)
                    kept.append(None)
                # blank means whitespace only; strip() runs only when the line starts with some
                elif line and (line[0] not in _WHITESPACE or line.strip()):
                    numbers.append(n)
                    kept.append(line.rstrip(b"\r") if line[-1:] == b"\r" else line)
            if numbers:
                yield numbers, kept
        if len(rest) > limit:
            n += 1
            yield [n], [None]
            rest = b""
            skipping = True
    if rest.strip():
        yield [n + 1], [rest.rstrip(b"\r")]


def read_file(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of ``path``, or None when it holds more than ``max_bytes`` (never read past
    that: the path may be a device or a pipe that never ends)."""
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    return None if len(data) > max_bytes else data


def files_in(path: Path) -> list[Path]:
    """A file, or every regular file below a directory in name order."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]
