"""A batch of one topic without properties of its own is framed a column at a time; what it
makes must be exactly what the per-row path makes of the same rows: the same bytes, queue
choices, UNIQ_KEYs, index keys, topic table and round-robin turns, or the same error."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtier.errors import MqtierError
from mqtier.store import framing
from mqtier.store.config import StoreConfig
from mqtier.store.framing import FramedBatch, Framer, Row
from mqtier.store.topics import TopicTable

HOST = (bytes([10, 0, 0, 7]), 10911)
PREFIX = "C0A80001" + "1A2B" + "DEADBEEF"  # the UNIQ_KEYs' host, pid and random parts
COUNTER_START = 65_500  # the counter's 16 bits come round within a batch
BORN_MS = 1_700_000_000_123

names = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=6)
# What may spoil a batch for the column path, at one row of it (or none, most often): the
# per-row path must then frame it (or fail on it) as ever.
FLAWS = [
    None, None, None, None,
    "properties", "flag", "other topic", "queue beyond", "queues mixed", "body too long",
    "key with space", "key with separator", "empty key", "non-ASCII key", "tag with separator",
    "non-ASCII tag", "key is its UNIQ_KEY", "long tag",
]  # fmt: skip
# Flaws the column path takes as they are (it frames them as the per-row path does), or may.
TAKEN = {None, "key is its UNIQ_KEY"}
MAYBE = {"long tag"}  # properties at about their 32,767-byte limit: over it, or just under
ODD_KEYS = {"key with space": "a b", "key with separator": "x\x01y", "empty key": ""}
ODD_KEYS["non-ASCII key"] = "zé"
ODD_TAGS = {"tag with separator": "q\x02", "non-ASCII tag": "é"}


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Row], str | None]:
    n = draw(st.integers(framing._UNIFORM_MIN, 80))
    topic = draw(st.sampled_from(["orders", "audit", "new-topic"]))
    flaw = draw(st.sampled_from(FLAWS))
    given = draw(st.booleans()) if flaw != "queues mixed" else True
    at = draw(st.integers(0, n - 1))
    rows: list[Row] = []
    for i in range(n):
        body = draw(st.binary(max_size=200) | st.integers(0, 3000).map(lambda k: b"z" * k))
        qid = draw(st.integers(0, 1)) if given else None
        keys = tuple(draw(st.lists(names, max_size=3)))
        if flaw == "key is its UNIQ_KEY":  # (every row one key, as the usual ingest's)
            keys = (f"{PREFIX}00112233{(COUNTER_START + i) & 0xFFFF:04X}" if i == at else "k",)
        tags = draw(st.none() | st.just("") | names)
        props: dict[str, str] = {}
        flag, row_topic = 0, topic
        if i == at:
            if flaw == "properties":
                props = {"pa": "v"}
            elif flaw == "flag":
                flag = 1
            elif flaw == "other topic":
                row_topic = "other"
            elif flaw == "queue beyond":
                qid = 9
            elif flaw == "queues mixed":
                qid = None
            elif flaw == "body too long":
                body = b"y" * 4001
            elif flaw in ODD_KEYS:
                keys = (*keys, ODD_KEYS[flaw])
            elif flaw in ODD_TAGS:
                tags = ODD_TAGS[flaw]
            elif flaw == "long tag":
                tags = "t" * draw(st.integers(32_767 - 120, 32_767 - 40))
        rows.append((row_topic, body, qid, keys, tags, props, flag))
    return rows, flaw


def _framer(tmp: Path, prop_crc: bool) -> Framer:
    topics = TopicTable(tmp)
    topics.ensure("orders", 4)
    topics.ensure("audit", 2)
    cfg = StoreConfig(default_queues=3, append_prop_crc=prop_crc, max_message_bytes=4000)
    framer = Framer(topics, cfg, HOST)
    framer._uniq_prefix = PREFIX
    framer._uniq_counter = itertools.count(COUNTER_START)
    framer._clock = lambda: (f"{PREFIX}00112233", BORN_MS)  # type: ignore[method-assign]
    return framer


def _outcome(framer: Framer, rows: list[Row]) -> tuple[Any, ...]:
    try:
        batch: FramedBatch | MqtierError = framer.frame(rows, grow_queues=False)
    except MqtierError as exc:
        batch = exc
    state = (
        framer.topics.table,
        framer.topics_dirty,
        next(framer._uniq_counter),
        {t: next(c) for t, c in framer._round_robin.items()},
    )
    if isinstance(batch, MqtierError):
        return (type(batch), str(batch), state)
    fields = (
        bytes(batch.data),
        batch.sizes,
        batch.queues,
        batch.tags,
        batch.uniq_keys,
        batch.index_keys,
        batch.key_owner,
        batch.body_bytes,
    )
    return (fields, state)


@settings(max_examples=150, deadline=None)
@given(drawn=batches(), prop_crc=st.booleans())
def test_column_path_frames_what_the_per_row_path_frames(
    tmp_path_factory: pytest.TempPathFactory, drawn: tuple[list[Row], str | None], prop_crc: bool
) -> None:
    rows, flaw = drawn
    columns = _framer(tmp_path_factory.mktemp("a"), prop_crc)
    took: list[bool] = []
    real = Framer._frame_uniform

    def spy(self: Framer, rows: list[Row]) -> FramedBatch | None:
        out = real(self, rows)
        took.append(out is not None)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Framer, "_frame_uniform", spy)
        by_columns = _outcome(columns, rows)
    if flaw not in MAYBE:  # a flawless batch goes by columns, any other row by row
        assert took == [flaw in TAKEN]

    per_row = _framer(tmp_path_factory.mktemp("b"), prop_crc)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(framing, "_UNIFORM_MIN", 10**9)
        by_rows = _outcome(per_row, rows)
    assert by_columns == by_rows


@pytest.mark.parametrize("prop_crc", [False, True])
@pytest.mark.parametrize("over", [0, 1])
def test_properties_at_their_limit_and_one_byte_over(
    tmp_path: Path, prop_crc: bool, over: int
) -> None:
    # KEYS\x01k\x02 (7) + TAGS\x01...\x02 (6 + tag) + UNIQ_KEY\x01<32>\x02 (42), plus the
    # 21 bytes kept for __CRC32#: the longest tag that fits, or one byte more.
    tag_len = 32_767 - 7 - 6 - 42 - (21 if prop_crc else 0) + over
    rows: list[Row] = [
        ("orders", b"x", None, ("k",), "t" * tag_len if i == 5 else "a", {}, 0) for i in range(20)
    ]
    took = _framer(tmp_path / "a", prop_crc)._frame_uniform(rows) is not None
    assert took is not bool(over)
    by_columns = _outcome(_framer(tmp_path / "b", prop_crc), rows)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(framing, "_UNIFORM_MIN", 10**9)
        by_rows = _outcome(_framer(tmp_path / "c", prop_crc), rows)
    assert by_columns == by_rows
    assert (by_rows[0] is framing.PropertiesTooLongError) is bool(over)


def test_a_new_topic_whose_default_count_is_out_of_range_fails_row_by_row(
    tmp_path: Path,
) -> None:
    """A hand-edited config may give new topics more than MAX_QUEUES queues: each row fails
    with its own error (ingest --skip-bad skips them), as the per-row path reports it."""
    topics = TopicTable(tmp_path)
    framer = Framer(topics, StoreConfig(default_queues=2000), HOST)
    rows: list[Row] = [("fresh", b"x", None, ("k",), None, {}, 0) for _ in range(20)]
    failed: list[int] = []
    batch = framer.frame(rows, on_error=lambda i, exc: failed.append(i))
    assert not batch
    assert failed == list(range(20))
    assert topics.queues("fresh") is None
