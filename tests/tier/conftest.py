"""Helpers for the cold-tier reliability tests: small hot stores, cold tiers, and exact views.

Every test compares the cold tier against a *ledger*: what the test itself appended (topic, queue,
queue offset, commit-log offset, body, keys, tags), so a bug shared by the hot and the cold read
paths cannot hide. ``cold_view`` reads every committed message back through :class:`ColdReader`
and fails on any gap, duplicate or reordering in a queue.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mqtier import Message, MessageRecord, Store, StoreConfig
from mqtier.backend.base import ColdStore
from mqtier.backend.memory_store import MemoryColdStore
from mqtier.backend.metered import RequestBill
from mqtier.backend.open import open_cold_store
from mqtier.backend.retrying import RetryingColdStore, RetryPolicy
from mqtier.format.coldobject import block_records, decode_block, parse_block_index
from mqtier.tier.catalog import CatalogState, data_prefix, load_catalog
from mqtier.tier.reader import ColdReader
from tests.moto_s3 import start_moto_server

BROKER = "b1"
TOPIC = "orders"
# 1 MiB commit-log files, small consume-queue and index files: a 1000-queue topic stays cheap.
CONFIG = StoreConfig(
    broker_name=BROKER,
    commitlog_file_bytes=1 << 20,
    cq_units_per_file=1024,
    index_slots=997,
    index_items=1 << 14,
    max_batch_bytes=256 << 10,
    flush_interval_ms=50,
)
NO_WAIT = RetryPolicy(attempts=2, base_s=0.0)


# -- what was appended ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One acknowledged append, as the test wants to see it again."""

    topic: str
    queue: int
    queue_offset: int
    phy_offset: int
    body: bytes
    keys: tuple[str, ...]
    tags: str | None


@dataclass
class Ledger:
    """Every message a test appended, per queue, in queue-offset order."""

    queues: dict[tuple[str, int], list[Entry]] = field(default_factory=dict)
    appended: int = 0

    def add(self, msgs: list[Message], results: list[Any]) -> None:
        for m, r in zip(msgs, results, strict=True):
            e = Entry(r.topic, r.queue_id, r.queue_offset, r.phy_offset, m.body, m.keys, m.tags)
            self.queues.setdefault((e.topic, e.queue), []).append(e)
            self.appended += 1

    def check_dense(self) -> None:
        for key, entries in self.queues.items():
            assert [e.queue_offset for e in entries] == list(range(len(entries))), key


def make_messages(
    rng: random.Random,
    n: int,
    *,
    topic: str = TOPIC,
    queues: int = 4,
    max_body: int = 400,
    tag: str = "",
) -> list[Message]:
    """``n`` messages with random binary bodies, keys and tags over ``queues`` queues."""
    out = []
    for _ in range(n):
        i = rng.getrandbits(40)
        body = rng.randbytes(rng.randint(1, max_body))
        keys = (f"K{i}",) if rng.random() < 0.8 else (f"K{i}", f"alt{i % 97}")
        tags = rng.choice([None, "red", "green", f"t{tag}"])
        out.append(Message(topic, body, queue_id=rng.randrange(queues), keys=keys, tags=tags))
    return out


def append(st: Store, ledger: Ledger, msgs: list[Message]) -> None:
    ledger.add(msgs, st.append_batch(msgs))
    st.wait_dispatched()


# -- what the cold tier holds ----------------------------------------------------------------------


def as_entry(m: MessageRecord) -> Entry:
    return Entry(m.topic, m.queue_id, m.queue_offset, m.phy_offset, m.body, m.keys, m.tags)


def cold_view(cold: ColdStore, broker: str = BROKER, chunk: int = 97) -> dict[Any, list[Entry]]:
    """Every committed message, per queue, read through ColdReader in odd-sized chunks.

    Fails on a gap, a duplicate or a reordering inside a queue, and on a catalog whose segments
    do not tile each queue's range.
    """
    state = load_catalog(cold, broker)
    check_catalog(state)
    view: dict[Any, list[Entry]] = {}
    with ColdReader(cold, broker, state=state) as reader:
        for r in reader.ranges():
            got: list[Entry] = []
            off = r.first
            while off < r.next:
                batch = reader.read(r.topic, r.queue_id, off, chunk)
                assert batch, f"{r.topic}/{r.queue_id}: nothing at committed offset {off}"
                got.extend(as_entry(m) for m in batch)
                off += len(batch)
            offsets = [e.queue_offset for e in got]
            assert offsets == list(range(r.first, r.next)), f"{r.topic}/{r.queue_id}: {offsets}"
            view[(r.topic, r.queue_id)] = got
    return view


def check_catalog(state: CatalogState) -> None:
    """Each queue's segments follow each other with no gap and no overlap."""
    for key, segs in state.queues.items():
        assert segs, key
        for a, b in itertools.pairwise(segs):
            assert b.first == a.end, f"{key}: segment at {b.first} after one ending at {a.end}"
        for s in segs:
            assert s.count > 0 and s.object.startswith(data_prefix(state.broker)), s


def assert_cold_equals(cold: ColdStore, ledger: Ledger, broker: str = BROKER) -> None:
    """The cold tier holds exactly the ledger: every queue, every offset, every byte."""
    view = cold_view(cold, broker)
    assert sorted(view) == sorted(ledger.queues), "queues differ between cold and the ledger"
    for key, entries in ledger.queues.items():
        got = view[key]
        assert len(got) == len(entries), f"{key}: cold has {len(got)}, appended {len(entries)}"
        for want, have in zip(entries, got, strict=True):
            assert have == want, f"{key} @ {want.queue_offset}: {have} != {want}"


def assert_hot_equals(st: Store, ledger: Ledger) -> None:
    for key, entries in ledger.queues.items():
        got = [as_entry(m) for m in st.read(key[0], key[1], 0, len(entries) + 10)]
        assert got == entries, key


def raw_records(cold: ColdStore, state: CatalogState) -> Iterator[tuple[Any, int, bytes]]:
    """(queue, queue offset, original record bytes) of every committed record, from the objects."""
    for key, segs in sorted(state.queues.items()):
        for seg in segs:
            blocks = parse_block_index(
                cold.get(seg.object, seg.index_pos, seg.index_pos + seg.index_len), seg
            )
            for b in blocks:
                raw = decode_block(cold.get(seg.object, b.offset, b.offset + b.clen), b, seg.object)
                for qoff, _pos, rec in block_records(raw, b, seg.object):
                    yield key, qoff, rec


def data_objects(cold: ColdStore, broker: str = BROKER) -> set[str]:
    return {o.key for o in cold.list(data_prefix(broker))}


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def hot(tmp_path: Path) -> Iterator[Store]:
    st = Store.open(tmp_path / "hot", create=True, config=CONFIG)
    st.create_topic(TOPIC, 4)
    try:
        yield st
    finally:
        st.close()


@pytest.fixture
def bill() -> RequestBill:
    return RequestBill()


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A private ``memory://`` cold tier, forgotten after the test."""
    name = f"tier-{uuid.uuid4().hex}"
    try:
        yield f"memory://{name}"
    finally:
        MemoryColdStore.forget(name)


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'cold'}"


@pytest.fixture(params=["memory", "file"])
def cold_url(request: pytest.FixtureRequest) -> str:
    """Each cold backend that needs no server: ``memory://`` and ``file://``."""
    fixture = "memory_url" if request.param == "memory" else "file_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def open_cold(bill: RequestBill) -> Callable[..., RetryingColdStore]:
    """``open_cold(url, **kw)``: open_cold_store metered into ``bill``, no retry pauses."""

    def opener(url: str, **kw: Any) -> RetryingColdStore:
        kw.setdefault("bill", bill)
        kw.setdefault("retry", NO_WAIT)
        return open_cold_store(url, **kw)

    return opener


# -- an S3 server, only for the one test that tiers to S3 ----------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with start_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_url(moto_endpoint: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(s3://bucket/cold, storage options)`` on a fresh bucket of the moto server."""
    boto3 = pytest.importorskip("boto3")
    client = boto3.client(
        "s3",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
    )
    bucket = f"mqtier-tier-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    options = {
        "key": "testing",
        "secret": "testing",
        "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }
    try:
        yield f"s3://{bucket}/cold", options
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)
