"""Splitting input streams into lines; JSON lines to messages."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtier.errors import InputFormatError
from mqtier.inputs import Defaults, message_from_json, read_lines, rows_from_json
from mqtier.store.framing import row_of


@pytest.mark.parametrize("block_bytes", [1, 3, 7, 1 << 20])
def test_whitespace_only_lines_are_blank_whatever_their_length(block_bytes: int) -> None:
    text = b'{"a":1}\n\n \n  \n   \n\t\t\t\t\n\r\n  x  \n{"b":2}\r\n    '
    got = list(read_lines(io.BytesIO(text), "t", block_bytes=block_bytes))
    assert got == [(1, b'{"a":1}'), (8, b"  x  "), (9, b'{"b":2}')]


def _reference_lines(text: bytes, limit: int) -> list[tuple[int, bytes | None]]:
    """What read_lines must give: every line numbered, blank ones dropped, a trailing CR
    taken off, a line over ``limit`` as None."""
    out: list[tuple[int, bytes | None]] = []
    pieces = text.split(b"\n")
    for n, line in enumerate(pieces, start=1):
        if len(line) > limit:
            out.append((n, None))
        elif line.strip():
            out.append((n, line[:-1] if line.endswith(b"\r") else line))
    return out


_line = st.sampled_from(
    [b'{"a":1}', b"x" * 40, b"", b" ", b"\t{}", b"{}\r", b"\r", b" y", b"z" * 90]
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(_line, max_size=40),
    end_newline=st.booleans(),
    block_bytes=st.sampled_from([1, 5, 64, 300, 1 << 20]),
    limit=st.sampled_from([60, 1000]),
)
def test_lines_come_out_as_a_plain_split_gives_them(
    lines: list[bytes], end_newline: bool, block_bytes: int, limit: int
) -> None:
    text = b"\n".join(lines) + (b"\n" if end_newline and lines else b"")
    got = list(read_lines(io.BytesIO(text), "t", block_bytes=block_bytes, max_line_bytes=limit))
    assert got == _reference_lines(text, limit)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
_field_values = {
    "topic": st.none() | st.sampled_from(["", "t", "orders"]) | _json_values,
    "queue": st.none() | st.integers(-2, 5) | st.booleans() | _json_values,
    "body": st.none() | st.text() | _json_values,
    "body_b64": st.none() | st.sampled_from(["eA==", "!!"]) | _json_values,
    "keys": st.none() | st.text() | st.lists(st.text(max_size=4)) | _json_values,
    "tags": st.none() | st.text() | _json_values,
    "properties": st.none() | st.dictionaries(st.text(max_size=3), st.text()) | _json_values,
}
_valid_values = {
    "topic": st.sampled_from(["t", "orders"]),
    "queue": st.integers(0, 5),
    "body": st.text(),
    "keys": st.lists(st.text(max_size=4)),
    "tags": st.text(),
    "properties": st.dictionaries(st.text(max_size=3), st.text()),
}


@st.composite
def _one_field_wild(draw: st.DrawFn) -> dict[str, Any]:
    """A plain line with at most one field of any value: each rule is met on its own."""
    optional = {k: v for k, v in _valid_values.items() if k != "body"}
    doc = draw(st.fixed_dictionaries({"body": st.text()}, optional=optional))
    name = draw(st.sampled_from(sorted(_field_values)))
    doc[name] = draw(_field_values[name])
    return doc


_docs = st.fixed_dictionaries({}, optional=_field_values) | _json_values | _one_field_wild()


@settings(max_examples=400, deadline=None)
@given(docs=st.lists(_docs, min_size=1, max_size=8), default_topic=st.sampled_from([None, "d"]))
def test_rows_from_json_decide_every_line_as_message_from_json(
    docs: list[Any], default_topic: str | None
) -> None:
    defaults = Defaults(default_topic, None)
    lines = [orjson.dumps(d) for d in docs] + [b'{"body": "x"', b"\xff"]  # and two bad lines
    numbers = list(range(1, len(lines) + 1))
    got = rows_from_json(lines, defaults, "in", numbers)
    assert [_decided(line, n, defaults) for line, n in zip(lines, numbers, strict=True)] == [
        str(g) if isinstance(g, InputFormatError) else g for g in got
    ]


def _decided(line: bytes, n: int, defaults: Defaults) -> Any:
    """What the line-by-line path makes of a line: its row, or its error's message."""
    try:
        return row_of(message_from_json(line, defaults, "in", n))
    except InputFormatError as exc:
        return str(exc)
