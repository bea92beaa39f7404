"""A small hot store with messages over a few queues and commit-log files, and a cold tier."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtier import Store
from mqtier.backend.base import ColdStore
from mqtier.backend.memory_store import MemoryColdStore
from mqtier.backend.metered import RequestBill
from mqtier.backend.open import open_cold_store
from mqtier.backend.retrying import RetryPolicy
from mqtier.format.message import Message
from tests.geometry import TINY

BROKER = TINY.broker_name


def fill(st: Store, n: int, *, queues: int = 3, start: int = 0, size: int = 300) -> None:
    msgs = [
        Message(
            "orders",
            (f"order {i} " * (size // 10 + 1)).encode()[:size],
            queue_id=i % queues,
            keys=(f"K{i}",),
            tags="even" if i % 2 == 0 else "odd",
        )
        for i in range(start, start + n)
    ]
    st.append_batch(msgs)
    st.wait_dispatched()


@pytest.fixture
def hot(tmp_path: Path) -> Iterator[Store]:
    st = Store.open(tmp_path / "store", create=True, config=TINY)
    st.create_topic("orders", 3)
    try:
        yield st
    finally:
        st.close()


@pytest.fixture
def bill() -> RequestBill:
    return RequestBill()


@pytest.fixture
def cold(bill: RequestBill) -> Iterator[ColdStore]:
    name = f"t-{uuid.uuid4().hex}"
    store = open_cold_store(f"memory://{name}", bill=bill, retry=RetryPolicy(attempts=2, base_s=0))
    try:
        yield store
    finally:
        MemoryColdStore.forget(name)
