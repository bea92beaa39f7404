"""Splitting input streams into lines."""

from __future__ import annotations

import io

import pytest

from mqtier.inputs import read_lines


@pytest.mark.parametrize("block_bytes", [1, 3, 7, 1 << 20])
def test_whitespace_only_lines_are_blank_whatever_their_length(block_bytes: int) -> None:
    text = b'{"a":1}\n\n \n  \n   \n\t\t\t\t\n\r\n  x  \n{"b":2}\r\n    '
    got = list(read_lines(io.BytesIO(text), "t", block_bytes=block_bytes))
    assert got == [(1, b'{"a":1}'), (8, b"  x  "), (9, b'{"b":2}')]
