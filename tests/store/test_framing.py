"""The batch append path writes exactly what a plain per-message encoder writes.

The reference here places each record by RocketMQ's rule (a record that does not fit with the
8-byte BLANK minimum rolls to the next file, behind a BLANK filler) and encodes it with
``encode_record`` one by one; the store frames whole batches, places them in runs and stamps
offsets and timestamps in with arrays. With the UNIQ_KEYs given and the timestamps read back,
the commit-log files must be byte for byte the same, and every consume-queue unit and index
key must find its record.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtier import Message, Store, StoreConfig
from mqtier.errors import InvalidMessageError
from mqtier.format import layout as L
from mqtier.format.javahash import java_string_hash, tags_code
from mqtier.format.message import decode_record, encode_record
from mqtier.ingest import ingest
from mqtier.inputs import Defaults
from mqtier.store import commitlog as commitlog_module

FILE_BYTES = 64 << 10  # small files: batches cross file ends often
TOPICS = ("orders", "audit")

names = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=8)
messages = st.builds(
    lambda topic, body, queue, keys, tags, props, flag: Message(
        topic,
        body,
        queue_id=queue,
        keys=tuple(keys),
        tags=tags,
        properties=props,
        flag=flag,
    ),
    st.sampled_from(TOPICS),
    st.binary(max_size=3000) | st.integers(0, 9000).map(lambda n: b"z" * n),
    st.none() | st.integers(0, 3),
    st.lists(names, max_size=3),
    st.none() | names,
    st.dictionaries(names.map(lambda s: "p" + s), names, max_size=2),
    st.integers(0, 2**31 - 1),
)
# Batches as callers make them: one message, a few, or more than the stamping threshold.
sizes = st.sampled_from([1, 2, 5, 31, 32, 70])
batches = st.lists(
    sizes.flatmap(lambda n: st.lists(messages, min_size=n, max_size=n)), min_size=1, max_size=4
)


def _reference(store: Store, batches: list[list[Message]], queues: int, since_ms: int) -> bytes:
    """The commit log as one buffer, encoded message by message from what was stored."""
    out = bytearray()
    qoffs: dict[tuple[str, int], int] = {}
    rr: dict[str, int] = {}
    host = store.store_host
    for msg in (m for b in batches for m in b):
        qid = msg.queue_id
        if qid is None:
            if msg.keys:
                qid = abs(java_string_hash(msg.keys[0])) % queues
            else:
                qid = rr.get(msg.topic, 0) % queues
                rr[msg.topic] = rr.get(msg.topic, 0) + 1
        parts = []
        if msg.keys:
            parts.append(f"KEYS\x01{' '.join(msg.keys)}\x02")
        if msg.tags:
            parts.append(f"TAGS\x01{msg.tags}\x02")
        props = dict(msg.properties)
        uniq = props.pop("UNIQ_KEY")
        parts += [f"{k}\x01{v}\x02" for k, v in props.items() if v]
        parts.append(f"UNIQ_KEY\x01{uniq}\x02")
        pos = len(out)
        rec_args: dict[str, Any] = {
            "topic": msg.topic.encode(),
            "queue_id": qid,
            "flag": msg.flag,
            "queue_offset": qoffs.get((msg.topic, qid), 0),
            "sysflag": 0,
            "born_host": host,
            "store_host": host,
            "body": msg.body,
            "properties": "".join(parts).encode(),
        }
        probe = encode_record(phy_offset=0, born_ts=0, store_ts=0, **rec_args)
        left = FILE_BYTES - pos % FILE_BYTES
        if len(probe) + L.BLANK_MIN_BYTES > left:
            out += L.RECORD_SIZE_MAGIC.pack(left, L.BLANK_MAGIC) + bytes(left - 8)
            pos = len(out)
        # The timestamps are the store's clock: taken from what it wrote.
        written = decode_record(store.commitlog.read_record(pos))
        assert since_ms <= written.born_ts <= written.store_ts <= time.time() * 1000
        out += encode_record(
            phy_offset=pos,
            born_ts=written.born_ts,
            store_ts=written.store_ts,
            **rec_args,
        )
        qoffs[(msg.topic, qid)] = qoffs.get((msg.topic, qid), 0) + 1
    return bytes(out)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=batches)
def test_batches_write_what_a_per_message_encoder_writes(
    tmp_path_factory: object, batches: list[list[Message]]
) -> None:
    root = Path(os.fspath(tmp_path_factory.mktemp("s")))  # type: ignore[attr-defined]
    cfg = StoreConfig(commitlog_file_bytes=FILE_BYTES, default_queues=4)
    since_ms = int(time.time() * 1000)
    numbered = iter(range(10**9))
    batches = [  # each message its own UNIQ_KEY, so that the reference can give the same
        [replace(m, properties={**m.properties, "UNIQ_KEY": f"U{next(numbered)}"}) for m in b]
        for b in batches
    ]
    with Store.open(root, create=True, config=cfg) as store:
        results = [store.append_batch_async(b) for b in batches]
        acked = [r for pending in results for r in pending.wait()]
        expected = _reference(store, batches, 4, since_ms)
        end = store.commitlog.durable_end
        assert end == len(expected)
        actual = b"".join(
            store.commitlog.read(base, min(FILE_BYTES, end - base))
            for base in range(0, end, FILE_BYTES)
        )
        assert actual == expected
        msgs = [m for b in batches for m in b]
        assert [r.uniq_key for r in acked] == [m.properties["UNIQ_KEY"] for m in msgs]
        store.checkpoint()
        for r, m in zip(acked, msgs, strict=True):
            cq = store.consume_queue(r.topic, r.queue_id)
            assert cq is not None
            assert cq.unit(r.queue_offset) == (r.phy_offset, r.size, tags_code(m.tags))
            for key in (*m.keys, r.uniq_key):
                found = store.query_key(r.topic, key, max_results=len(msgs))
                assert r.phy_offset in [f.phy_offset for f in found], key


def test_one_write_and_sync_spans_at_most_max_batch_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small bodies or big properties: the bound is on record bytes, not body bytes."""
    written: list[int] = []
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        written.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(commitlog_module.os, "pwrite", pwrite)
    cfg = StoreConfig(max_batch_bytes=64 << 10, prewrite=False)  # (its zeros: pwrite too)
    with Store.open(tmp_path / "s", create=True, config=cfg) as store:
        store.append_batch([Message("t", b"x", queue_id=0) for _ in range(5000)])
        store.append_batch(
            [Message("t", b"", queue_id=0, properties={"p": "v" * 20_000}) for _ in range(30)]
        )
        assert store.wait_dispatched(10)
        cq = store.consume_queue("t", 0)
        assert cq is not None and cq.max_offset == 5030
    assert len(written) >= 10 and max(written) <= 64 << 10


def test_a_bad_message_anywhere_in_a_batch_appends_none_of_it(tmp_path: Path) -> None:
    cfg = StoreConfig(max_batch_bytes=64 << 10)
    with Store.open(tmp_path / "s", create=True, config=cfg) as store:
        good = [Message("t", b"y" * 1000, queue_id=0) for _ in range(300)]
        with pytest.raises(InvalidMessageError, match="bad key"):
            store.append_batch([*good, Message("t", b"z", keys=("bad key",))])
        assert store.commitlog.durable_end == 0
        assert store.append(good[0]).queue_offset == 0


def test_skip_bad_keeps_batches_whole_and_reports_bad_lines_in_input_order(
    tmp_path: Path,
) -> None:
    """Bad lines between good ones cost no group commit of their own."""
    lines = []
    for i in range(3000):
        if i % 2:
            lines.append(b'{"body": "x", "keys": ["bad key"]}' if i % 4 == 1 else b"{oops")
        else:
            lines.append(b'{"body": "good %d"}' % i)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    with Store.open(tmp_path / "s", create=True) as store:
        summary = ingest(store, [str(src)], defaults=Defaults("t", 0), skip_bad=True)
        assert (summary.messages, summary.bad_lines) == (1500, 1500)
        assert [s.split(":")[1] for s in summary.bad_samples] == ["2", "4", "6", "8", "10"]
        assert store.stats()["group_commits"] <= 10
