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

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtier import Message, Store, StoreConfig
from mqtier.format import layout as L
from mqtier.format.javahash import java_string_hash, tags_code
from mqtier.format.message import decode_record, encode_record

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
