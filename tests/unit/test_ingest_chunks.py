"""Ingest cuts its input into chunks (one group commit each) by one rule, item by item: at
CHUNK_MESSAGES items, at the item that brings a chunk to CHUNK_BYTES, and (without
--skip-bad) right after a bad item. Parsing whole parts of a file at a time must cut exactly
there, across blocks and files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtier import ingest_chunks
from mqtier.errors import MqtierError
from mqtier.inputs import Defaults

# 25-byte lines (13 x's) fill a 50- or 400-byte chunk exactly: the cut at the item that
# reaches the limit, not the one past it.
_good = (st.just(13) | st.integers(0, 120)).map(lambda n: b'{"body": "%s"}' % (b"x" * n))
_line = _good | st.sampled_from([b"{oops", b"", b"  ", b'{"body": 1, "queue": -1}', b"y" * 300])


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.lists(st.lists(_line, max_size=60), min_size=1, max_size=3),
    errors_end_chunks=st.booleans(),
    most=st.sampled_from([1, 3, 7, 1024]),
    most_bytes=st.sampled_from([50, 400, 1 << 20]),
)
def test_chunks_are_cut_where_the_item_by_item_rule_cuts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: list[list[bytes]],
    errors_end_chunks: bool,
    most: int,
    most_bytes: int,
) -> None:
    monkeypatch.setattr(ingest_chunks, "CHUNK_MESSAGES", most)
    monkeypatch.setattr(ingest_chunks, "CHUNK_BYTES", most_bytes)
    sizes: dict[tuple[str, int], int] = {}
    names = []
    for i, lines in enumerate(files):
        path = tmp_path / f"in{i}.jsonl"
        path.write_bytes(b"\n".join(lines))
        names.append(str(path))
        for n, line in enumerate(lines, start=1):
            sizes[(str(path), n)] = len(line)
    chunks = list(
        ingest_chunks.chunks(
            names,
            "jsonl",
            Defaults("t", None),
            max_message_bytes=20,
            errors_end_chunks=errors_end_chunks,
        )
    )
    items = [item for chunk in chunks for item in chunk]
    want_lines = [(name, n) for name, lines in zip(names, files, strict=True)
                  for n, line in enumerate(lines, start=1) if line.strip()]  # fmt: skip
    assert [(source, n) for source, n, _ in items] == want_lines
    cuts, count, nbytes = [], 0, 0
    for source, n, row in items:
        count += 1
        nbytes += sizes[(source, n)]
        if (
            count >= most
            or nbytes >= most_bytes
            or (errors_end_chunks and isinstance(row, MqtierError))
        ):
            cuts.append(count)
            count, nbytes = 0, 0
    if count:
        cuts.append(count)
    assert [len(c) for c in chunks] == cuts
