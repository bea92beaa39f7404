"""RetryingColdStore tells of each retry and stops at its deadline (issue #11, item 7).

The library prints nothing: a caller installs ``on_retry``. The deadline is checked before a
request starts and before a retry waits, never inside a request. Faults come from the fault
injector (a real wrapper of a real store), time from the real clock.
"""

from __future__ import annotations

import time

import pytest

from mqtier.backend.faults import FaultRates, FaultyColdStore
from mqtier.backend.memory_store import MemoryColdStore
from mqtier.backend.retrying import Deadline, RetryingColdStore, RetryNotice, RetryPolicy
from mqtier.errors import ColdStoreError, ColdTimeoutError


def _always_failing(
    notices: list[RetryNotice], deadline: Deadline | None = None
) -> RetryingColdStore:
    faulty = FaultyColdStore(MemoryColdStore("notices"), FaultRates(timeout=1.0, read_error=1.0))
    policy = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.02)
    return RetryingColdStore(faulty, policy, on_retry=notices.append, deadline=deadline)


def test_each_retry_is_one_notice_with_attempt_total_delay_and_reason() -> None:
    notices: list[RetryNotice] = []
    store = _always_failing(notices)
    with pytest.raises(ColdStoreError, match="after 4 attempts"):
        store.get("broker-a/catalog/LATEST")
    assert [(n.verb, n.target, n.attempt, n.attempts) for n in notices] == [
        ("GET", ".../LATEST", a, 4) for a in (2, 3, 4)
    ]
    assert all(0 <= n.delay_s <= 0.02 for n in notices)
    line = str(notices[0])
    assert line.startswith("retrying GET .../LATEST (2/4) in 0.0 s: "), line


def test_a_passed_deadline_stops_before_the_first_request() -> None:
    notices: list[RetryNotice] = []
    store = _always_failing(notices, deadline=Deadline(time.monotonic() - 1, "--timeout 1s"))
    with pytest.raises(ColdTimeoutError, match=r"time limit ran out \(--timeout 1s\)"):
        store.put("broker-a/x", b"data")
    assert notices == []
    assert isinstance(store.inner, FaultyColdStore)
    assert store.inner.injected == {}  # no request was sent


def test_no_retry_waits_past_the_deadline() -> None:
    faulty = FaultyColdStore(MemoryColdStore("slow-waits"), FaultRates(read_error=1.0))
    store = RetryingColdStore(
        faulty,
        RetryPolicy(attempts=50, base_s=0.2, cap_s=0.2),
        deadline=Deadline.after(0.5, "--timeout 500ms"),
    )
    t0 = time.monotonic()
    with pytest.raises(ColdTimeoutError, match="runs out before the next retry") as info:
        store.get("k")
    assert time.monotonic() - t0 < 0.5  # it stopped instead of sleeping past the limit
    assert isinstance(info.value, ColdStoreError) and info.value.exit_code == 14


def test_a_deadline_far_away_changes_nothing() -> None:
    store = RetryingColdStore(MemoryColdStore("far"), deadline=Deadline.after(3600, "--timeout 1h"))
    store.put("a/b", b"1")
    assert store.get("a/b") == b"1"
