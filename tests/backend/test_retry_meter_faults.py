"""Retries, request metering, fault injection and ``open_cold_store``.

The stores under test are real (memory, file, S3 via moto); the only stand-in is ``Scripted``, a
tiny ``ColdStore`` wrapper that raises exceptions chosen by the test before passing a call on.
"""

from __future__ import annotations

import errno
import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from hypothesis import given
from hypothesis import strategies as st
from s3fs.errors import translate_boto_error

from mqtier.backend.base import ColdStore, ObjectInfo
from mqtier.backend.faults import FaultRates, FaultyColdStore
from mqtier.backend.file_store import FileColdStore
from mqtier.backend.fsspec_store import FsspecColdStore
from mqtier.backend.memory_store import MemoryColdStore
from mqtier.backend.metered import MeteredColdStore, RequestBill
from mqtier.backend.open import bill_of, open_cold_store, raw_cold_store
from mqtier.backend.retrying import (
    RetryingColdStore,
    RetryPolicy,
    TransientColdError,
    is_retryable,
)
from mqtier.errors import (
    ColdObjectNotFoundError,
    ColdStoreError,
    CommitConflictError,
    ConfigError,
    CorruptionError,
)

NO_WAIT = RetryPolicy(attempts=5, base_s=0.0)


def _never_sleep(seconds: float) -> None:
    pytest.fail(f"retried (would sleep {seconds} s) where no retry was expected")


class Scripted(ColdStore):
    """Passes every call on to ``inner``, first raising the next planned exception of its kind."""

    def __init__(self, inner: ColdStore, **plan: Sequence[BaseException]) -> None:
        self.inner = inner
        self.url = inner.url
        self.plan = {kind: list(excs) for kind, excs in plan.items()}
        self.calls: Counter[str] = Counter()

    def _hit(self, kind: str) -> None:
        self.calls[kind] += 1
        if self.plan.get(kind):
            raise self.plan[kind].pop(0)

    def put(self, key: str, data: bytes) -> None:
        self._hit("put")
        self.inner.put(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self._hit("create")
        return self.inner.create(key, data)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self._hit("get")
        return self.inner.get(key, start, end)

    def list(self, prefix: str) -> list[ObjectInfo]:
        self._hit("list")
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        self._hit("delete")
        self.inner.delete(keys)

    def size(self, key: str) -> int:
        self._hit("size")
        return self.inner.size(key)


@pytest.fixture
def mem_name() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        MemoryColdStore.forget(name)


@pytest.fixture
def mem(mem_name: str) -> MemoryColdStore:
    return MemoryColdStore(mem_name)


# -- is_retryable --------------------------------------------------------------------------------


class ServerDisconnectedError(Exception):
    """Named like aiohttp's: matched by class name, not by type."""


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("timed out"),
        ConnectionError("dropped"),
        ConnectionResetError(),
        BrokenPipeError(),
        TransientColdError("injected"),
        OSError(errno.ECONNRESET, "Connection reset by peer"),
        OSError(errno.EIO, "I/O error"),
        OSError(errno.ETIMEDOUT, "timed out"),
        OSError(errno.EBUSY, "busy"),
        OSError("An error occurred (SlowDown) when calling the PutObject operation: reduce"),
        OSError("An error occurred (InternalError) when calling the GetObject operation"),
        OSError("An error occurred (503) when calling the HeadObject operation"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ServerDisconnectedError("server disconnected"),
    ],
    ids=repr,
)
def test_retryable(exc: BaseException) -> None:
    assert is_retryable(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError("gone"),
        FileNotFoundError(errno.ENOENT, "No such file"),
        FileExistsError("taken"),
        PermissionError("Access Denied"),
        PermissionError("An error occurred (SlowDown) ..."),  # denied wins over the code
        ValueError("bad"),
        ValueError("(SlowDown)"),  # the codes only count on OSErrors
        KeyError("k"),
        OSError("plain"),
        OSError(errno.ENOSPC, "No space left on device"),
        ConfigError("bad url"),
        ColdStoreError("already wrapped"),
        ColdObjectNotFoundError("missing"),
        CorruptionError("bad crc"),
        CommitConflictError("lost the race"),
    ],
    ids=repr,
)
def test_not_retryable(exc: BaseException) -> None:
    assert is_retryable(exc) is False


def _s3fs_error(code: str, message: str) -> BaseException:
    """The exception s3fs raises for an S3 error answer with this code."""
    answer: Any = {"Error": {"Code": code, "Message": message}}
    exc: BaseException = translate_boto_error(ClientError(answer, "PutObject"))
    return exc


@pytest.mark.parametrize(
    ("code", "message", "retry"),
    [
        ("SlowDown", "Please reduce your request rate.", True),
        ("ServiceUnavailable", "Service Unavailable", True),
        ("503", "Service Unavailable", True),
        ("RequestTimeout", "Your socket connection to the server was not read from", True),
        ("502", "Bad Gateway", True),
        ("AccessDenied", "Access Denied", False),
        ("NoSuchKey", "The specified key does not exist.", False),
        ("NoSuchBucket", "The specified bucket does not exist", False),
    ],
)
def test_retryable_s3_answers_as_s3fs_raises_them(code: str, message: str, retry: bool) -> None:
    assert is_retryable(_s3fs_error(code, message)) is retry


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("InternalError", "We encountered an internal error. Please try again."),
        ("500", "Internal Server Error"),
    ],
)
def test_s3_internal_error_is_retryable(code: str, message: str) -> None:
    assert is_retryable(_s3fs_error(code, message)) is True


# -- RetryPolicy ---------------------------------------------------------------------------------


@given(
    st.integers(0, 40),
    st.floats(0, 10, allow_nan=False),
    st.floats(0, 60, allow_nan=False),
)
def test_delay_is_full_jitter_within_the_cap(attempt: int, base: float, cap: float) -> None:
    delay = RetryPolicy(attempts=3, base_s=base, cap_s=cap).delay(attempt)
    assert 0 <= delay <= min(cap, base * 2**attempt)


def test_zero_base_never_waits() -> None:
    assert {RetryPolicy(base_s=0).delay(a) for a in range(10)} == {0.0}


# -- RetryingColdStore ---------------------------------------------------------------------------

OPS: dict[str, Callable[[ColdStore], object]] = {
    "put": lambda s: s.put("k", b"new"),
    "create": lambda s: s.create("fresh", b"c"),
    "get": lambda s: s.get("k", 1, 3),
    "list": lambda s: s.list(""),
    "delete": lambda s: s.delete(["k"]),
    "size": lambda s: s.size("k"),
}
EXPECTED = {"put": None, "create": True, "get": b"ld", "list": [ObjectInfo("k", 3)], "size": 3}


@pytest.mark.parametrize("kind", sorted(OPS))
def test_retries_then_succeeds(mem: MemoryColdStore, kind: str) -> None:
    mem.put("k", b"old")
    flaky = Scripted(mem, **{kind: [TransientColdError("blip"), TimeoutError("slow")]})
    waits: list[float] = []
    policy = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.015)
    store = RetryingColdStore(flaky, policy, sleep=waits.append)
    assert OPS[kind](store) == EXPECTED.get(kind)
    assert flaky.calls[kind] == 3
    assert store.retries == 2
    assert len(waits) == 2
    assert all(0 <= w <= min(0.015, 0.01 * 2**n) for n, w in enumerate(waits, start=1))
    if kind == "delete":
        assert mem.list("") == []


def test_gives_up_after_the_attempts(mem: MemoryColdStore) -> None:
    flaky = Scripted(mem, put=[TransientColdError(f"blip {i}") for i in range(10)])
    waits: list[float] = []
    store = RetryingColdStore(flaky, RetryPolicy(attempts=4, base_s=0), sleep=waits.append)
    with pytest.raises(ColdStoreError) as info:
        store.put("seg/0001", b"data")
    message = str(info.value)
    assert message.startswith(f"{mem.url}: put seg/0001 failed after 4 attempts")
    assert "TransientColdError: blip 3" in message
    assert type(info.value) is ColdStoreError
    assert info.value.exit_code == 14
    assert isinstance(info.value.__cause__, TransientColdError)
    assert flaky.calls["put"] == 4
    assert len(waits) == 3
    assert store.retries == 3
    assert mem.list("") == []


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("get", "get seg/0001"),
        ("create", "create seg/0001"),
        ("list", "list seg/"),
        ("delete", "delete of 2 objects"),
        ("size", "size seg/0001"),
    ],
)
def test_give_up_message_names_the_operation(mem: MemoryColdStore, kind: str, what: str) -> None:
    calls: dict[str, Callable[[ColdStore], object]] = {
        "get": lambda s: s.get("seg/0001"),
        "create": lambda s: s.create("seg/0001", b"x"),
        "list": lambda s: s.list("seg/"),
        "delete": lambda s: s.delete(["seg/0001", "seg/0002"]),
        "size": lambda s: s.size("seg/0001"),
    }
    flaky = Scripted(mem, **{kind: [ConnectionResetError()] * 3})
    store = RetryingColdStore(flaky, RetryPolicy(attempts=2, base_s=0))
    with pytest.raises(ColdStoreError, match=f"^{mem.url}: {what} failed after 2 attempts"):
        calls[kind](store)


def test_permission_error_is_access_denied_at_once(mem: MemoryColdStore) -> None:
    flaky = Scripted(mem, put=[PermissionError("Access Denied")])
    waits: list[float] = []
    store = RetryingColdStore(flaky, NO_WAIT, sleep=waits.append)
    with pytest.raises(ColdStoreError) as info:
        store.put("k", b"x")
    assert type(info.value) is ColdStoreError
    assert str(info.value) == (f"{mem.url}: put k: access denied (PermissionError: Access Denied)")
    assert flaky.calls["put"] == 1
    assert waits == []
    assert store.retries == 0


def test_file_not_found_is_cold_object_not_found_at_once(mem: MemoryColdStore) -> None:
    flaky = Scripted(mem, get=[FileNotFoundError("nope")])
    store = RetryingColdStore(flaky, NO_WAIT, sleep=_never_sleep)
    with pytest.raises(ColdObjectNotFoundError, match=r"get seg/1: not found") as info:
        store.get("seg/1")
    assert info.value.exit_code == 3
    assert flaky.calls["get"] == 1


def test_file_not_found_on_a_write_keeps_its_reason(mem: MemoryColdStore) -> None:
    # On a put or create "not found" is about the container (a missing bucket), not the object.
    flaky = Scripted(mem, put=[FileNotFoundError("The specified bucket does not exist")])
    store = RetryingColdStore(flaky, NO_WAIT, sleep=_never_sleep)
    with pytest.raises(ColdStoreError) as info:
        store.put("k", b"v")
    assert type(info.value) is ColdStoreError
    assert str(info.value) == (
        f"{mem.url}: put k: FileNotFoundError: The specified bucket does not exist"
    )
    assert flaky.calls["put"] == 1


def test_other_errors_are_cold_store_errors_at_once(mem: MemoryColdStore) -> None:
    flaky = Scripted(mem, list=[ValueError("weird answer")])
    store = RetryingColdStore(flaky, NO_WAIT, sleep=_never_sleep)
    with pytest.raises(ColdStoreError, match=r"list /: ValueError: weird answer$"):
        store.list("")
    assert flaky.calls["list"] == 1


@pytest.mark.parametrize(
    "exc", [ConfigError("invalid cold object key"), ColdObjectNotFoundError("missing")]
)
def test_mqtier_errors_pass_through_unchanged(mem: MemoryColdStore, exc: Exception) -> None:
    flaky = Scripted(mem, size=[exc])
    store = RetryingColdStore(flaky, NO_WAIT, sleep=_never_sleep)
    with pytest.raises(type(exc)) as info:
        store.size("k")
    assert info.value is exc
    assert flaky.calls["size"] == 1


def test_real_missing_object_and_bad_key_are_not_retried(mem: MemoryColdStore) -> None:
    bill = RequestBill()
    store = RetryingColdStore(MeteredColdStore(mem, bill), NO_WAIT, sleep=_never_sleep)
    with pytest.raises(ColdObjectNotFoundError):
        store.get("missing")
    with pytest.raises(ConfigError):
        store.put("../escape", b"x")
    assert bill.count("get") == 1
    assert bill.count("put") == 1
    assert store.retries == 0


# -- create whose answer was lost ----------------------------------------------------------------


def _lose_first_answer(inner: ColdStore) -> tuple[RetryingColdStore, FaultyColdStore, RequestBill]:
    """Every create lands but loses its answer, until the retry layer first sleeps."""
    faulty = FaultyColdStore(inner, FaultRates(lost_answer=1.0))
    bill = RequestBill()

    def sleep(_: float) -> None:
        faulty.enabled = False

    store = RetryingColdStore(MeteredColdStore(faulty, bill), NO_WAIT, sleep=sleep)
    return store, faulty, bill


def test_lost_answer_create_still_reports_created(mem: MemoryColdStore) -> None:
    store, faulty, bill = _lose_first_answer(mem)
    assert store.create("catalog/commits/1", b"ours") is True
    assert mem.get("catalog/commits/1") == b"ours"
    assert faulty.injected == {"lost_answer": 1}
    assert bill.count("create") == 2  # the lost one and the retry, which found the key taken
    assert bill.count("get") == 1  # the read-back that proved the object is ours
    assert bill.to_json()["errors"] == 1


def test_lost_answer_create_loses_to_another_writer(mem: MemoryColdStore) -> None:
    mem.put("catalog/commits/1", b"theirs")
    store, faulty, _ = _lose_first_answer(mem)
    assert store.create("catalog/commits/1", b"ours") is False
    assert mem.get("catalog/commits/1") == b"theirs"
    assert faulty.injected == {"lost_answer": 1}


def test_lost_answer_create_with_identical_bytes_counts_as_ours(mem: MemoryColdStore) -> None:
    # By design: an object holding exactly our bytes is taken as our own write.
    mem.put("k", b"same")
    store, _, _ = _lose_first_answer(mem)
    assert store.create("k", b"same") is True


def test_taken_key_is_not_read_back_without_a_lost_answer(mem: MemoryColdStore) -> None:
    mem.put("k", b"theirs")
    bill = RequestBill()
    store = RetryingColdStore(MeteredColdStore(mem, bill), NO_WAIT)
    assert store.create("k", b"theirs") is False  # same bytes, but nothing was lost
    assert bill.count("create") == 1
    assert bill.count("get") == 0


def test_lost_answer_create_on_every_backend(cold: ColdStore) -> None:
    store, _, _ = _lose_first_answer(cold)
    assert store.create("catalog/LATEST", b"ours") is True
    assert cold.get("catalog/LATEST") == b"ours"
    store2, _, _ = _lose_first_answer(cold)
    assert store2.create("catalog/LATEST", b"someone else") is False
    assert cold.get("catalog/LATEST") == b"ours"


# -- RequestBill and MeteredColdStore ------------------------------------------------------------


def test_bill_counts_every_attempt_and_every_byte(mem_name: str) -> None:
    bill = RequestBill()
    store = open_cold_store(
        f"memory://{mem_name}",
        bill=bill,
        retry=NO_WAIT,
        wrap=lambda s: Scripted(s, put=[TransientColdError("blip")], get=[TimeoutError()]),
    )
    assert bill_of(store) is bill
    store.put("a", b"0123456789")  # fails once, then lands
    assert store.get("a") == b"0123456789"  # fails once, then reads 10 bytes
    assert store.get("a", 2, 5) == b"234"
    assert store.create("b", b"xy") is True
    assert store.create("b", b"zz") is False
    with pytest.raises(ColdObjectNotFoundError):
        store.get("missing")  # an answer, not an error
    assert store.list("") == [ObjectInfo("a", 10), ObjectInfo("b", 2)]
    assert store.size("a") == 10
    store.delete([])  # nothing to send
    store.delete(["a", "b"])

    assert bill.count("put") == 2
    assert bill.count("get") == 4
    assert bill.count("create") == 2
    assert bill.requests == 2 + 4 + 2 + 1 + 1 + 1
    doc = bill.to_json()
    assert set(doc) == {"requests", "errors", "bytes_sent", "bytes_received", "by_kind"}
    assert doc["requests"] == bill.requests
    assert doc["errors"] == 2
    assert doc["bytes_sent"] == 10 + 10 + 2 + 2  # a failed put still sent its bytes
    assert doc["bytes_received"] == 10 + 3
    assert set(doc["by_kind"]) == set(RequestBill.KINDS)
    for stats in doc["by_kind"].values():
        assert set(stats) == {"requests", "errors", "bytes_sent", "bytes_received", "seconds"}
        assert isinstance(stats["seconds"], float) and stats["seconds"] >= 0
    put = doc["by_kind"]["put"]
    assert (put["requests"], put["errors"], put["bytes_sent"], put["bytes_received"]) == (
        2,
        1,
        20,
        0,
    )
    get = doc["by_kind"]["get"]
    assert (get["requests"], get["errors"], get["bytes_sent"], get["bytes_received"]) == (
        4,
        1,
        0,
        13,
    )
    assert doc["by_kind"]["delete"]["requests"] == 1
    assert json.loads(json.dumps(doc)) == doc


def test_bill_json_lists_only_kinds_used() -> None:
    bill = RequestBill()
    assert bill.to_json() == {
        "requests": 0,
        "errors": 0,
        "bytes_sent": 0,
        "bytes_received": 0,
        "by_kind": {},
    }
    bill.record("size", 0.25, ok=True)
    assert bill.to_json()["by_kind"] == {
        "size": {
            "requests": 1,
            "errors": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
            "seconds": 0.25,
        }
    }


def test_bill_summary() -> None:
    bill = RequestBill()
    assert bill.summary() == "requests: none"
    bill.record("put", 0.1, out=6_000_000, ok=True)
    bill.record("put", 0.1, out=6_000_000, ok=False)
    bill.record("create", 0.1, ok=True)
    bill.record("get", 0.1, inb=600_000, ok=True)
    bill.record("get", 0.1, inb=500_000, ok=True)
    line = bill.summary()
    assert line == "requests: 2 put (12.0 MB), 1 failed, 1 create, 2 get (1.1 MB)"
    assert "\n" not in line


def test_bill_is_thread_safe() -> None:
    bill = RequestBill()

    def hammer(_: int) -> None:
        for _ in range(2000):
            bill.record("get", 0.0, inb=3, ok=True)
            bill.record("put", 0.0, out=2, ok=False)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hammer, range(4)))
    doc = bill.to_json()
    assert doc["requests"] == 16000
    assert doc["errors"] == 8000
    assert (doc["bytes_received"], doc["bytes_sent"]) == (24000, 16000)


def test_metered_store_passes_through(mem: MemoryColdStore) -> None:
    metered = MeteredColdStore(mem)
    assert metered.url == mem.url
    assert metered.atomic_create is True
    metered.put("k", b"abc")
    assert metered.get("k") == b"abc"
    assert metered.bill.count("put") == 1
    assert bill_of(metered) is metered.bill
    assert bill_of(mem) is None


def test_metered_store_counts_failures_and_reraises(mem: MemoryColdStore) -> None:
    metered = MeteredColdStore(Scripted(mem, size=[PermissionError("denied")]))
    with pytest.raises(PermissionError):
        metered.size("k")
    with pytest.raises(ColdObjectNotFoundError):
        metered.size("k")
    assert metered.bill.to_json()["by_kind"]["size"]["requests"] == 2
    assert metered.bill.to_json()["by_kind"]["size"]["errors"] == 1


# -- open_cold_store -----------------------------------------------------------------------------


def test_open_memory_url(mem_name: str) -> None:
    store = open_cold_store(f"memory://{mem_name}/")
    assert isinstance(store, RetryingColdStore)
    assert store.url == f"memory://{mem_name}"
    assert store.atomic_create is True
    store.put("k", b"v")
    assert MemoryColdStore(mem_name).get("k") == b"v"  # same name, same objects
    bill = bill_of(store)
    assert isinstance(bill, RequestBill)
    assert bill.count("put") == 1
    assert isinstance(raw_cold_store(f"memory://{mem_name}"), MemoryColdStore)


def test_open_file_url_and_plain_path(tmp_path: Path) -> None:
    root = tmp_path / "cold"
    store = open_cold_store(f"file://{root}", retry=NO_WAIT)
    assert store.url == f"file://{root.resolve()}"
    store.put("a/b", b"v")
    assert (root / "a" / "b").read_bytes() == b"v"
    plain = raw_cold_store(str(root))
    assert isinstance(plain, FileColdStore)
    assert plain.get("a/b") == b"v"
    assert isinstance(raw_cold_store(f"file://{root}"), FileColdStore)


@pytest.mark.parametrize(
    "url", ["", "file://relative/dir", "file://", "nosuchprotocol-xyz://bucket/prefix"]
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_cold_store(url)
    assert info.value.exit_code == 2


def test_wrap_goes_under_the_meter(mem_name: str) -> None:
    wrapped: list[ColdStore] = []

    def wrap(store: ColdStore) -> ColdStore:
        faulty = FaultyColdStore(store, FaultRates(read_error=1.0))
        wrapped.append(faulty)
        return faulty

    store = open_cold_store(
        f"memory://{mem_name}", retry=RetryPolicy(attempts=2, base_s=0), wrap=wrap
    )
    assert isinstance(store.inner, MeteredColdStore)
    assert store.inner.inner is wrapped[0]
    with pytest.raises(ColdStoreError, match="after 2 attempts"):
        store.size("k")
    bill = bill_of(store)
    assert bill is not None and bill.kinds["size"].errors == 2


def test_open_s3_url(s3_bucket: str, s3_options: dict[str, Any], s3_client: Any) -> None:
    bill = RequestBill()
    store = open_cold_store(f"s3://{s3_bucket}/tier/", s3_options, bill=bill, retry=NO_WAIT)
    try:
        assert isinstance(store.inner, MeteredColdStore)
        assert isinstance(store.inner.inner, FsspecColdStore)
        assert store.url == f"s3://{s3_bucket}/tier"
        assert store.atomic_create is True
        store.put("x/1", b"12345")
        assert store.create("x/2", b"67") is True
        assert store.create("x/2", b"no") is False
        assert store.get("x/1", 1, 3) == b"23"
        assert store.list("x/") == [ObjectInfo("x/1", 5), ObjectInfo("x/2", 2)]
        with pytest.raises(ColdObjectNotFoundError):
            store.get("x/3")
        body = s3_client.get_object(Bucket=s3_bucket, Key="tier/x/2")["Body"].read()
        assert body == b"67"
        assert bill.count("create") == 2
        assert bill.to_json()["errors"] == 0
        assert bill.to_json()["bytes_received"] == 2
    finally:
        store.close()


@pytest.fixture
def missing_bucket_store(s3_bucket: str, s3_options: dict[str, Any]) -> Iterator[RetryingColdStore]:
    store = open_cold_store(f"s3://{s3_bucket}-missing/tier", s3_options, retry=NO_WAIT)
    try:
        yield store
    finally:
        store.close()


def test_s3_missing_bucket_fails_at_once(missing_bucket_store: RetryingColdStore) -> None:
    store = missing_bucket_store
    with pytest.raises(ColdStoreError, match=f"^{store.url}: put k"):
        store.put("k", b"v")
    with pytest.raises(ColdStoreError, match=f"^{store.url}: create k"):
        store.create("k", b"v")
    assert store.retries == 0


def test_s3_missing_bucket_says_so(missing_bucket_store: RetryingColdStore) -> None:
    with pytest.raises(ColdStoreError) as info:
        missing_bucket_store.put("k", b"v")
    assert "bucket does not exist" in str(info.value)
    assert not isinstance(info.value, ColdObjectNotFoundError)


# -- FaultyColdStore -----------------------------------------------------------------------------


def test_partial_put_leaves_a_truncated_object(mem: MemoryColdStore) -> None:
    faulty = FaultyColdStore(mem, FaultRates(partial=1.0))
    with pytest.raises(TransientColdError):
        faulty.put("seg", b"0123456789")
    assert mem.get("seg") == b"01234"
    assert faulty.injected == {"partial": 1}
    faulty.put("one", b"x")  # a single byte cannot be cut
    assert mem.get("one") == b"x"
    assert faulty.create("c", b"0123456789") is True  # create is all or nothing
    assert mem.get("c") == b"0123456789"


def test_partial_puts_through_the_retry_layer_fail_and_leave_the_truncation(
    mem: MemoryColdStore,
) -> None:
    store = RetryingColdStore(FaultyColdStore(mem, FaultRates(partial=1.0)), NO_WAIT)
    with pytest.raises(ColdStoreError, match="put seg failed after 5 attempts"):
        store.put("seg", b"0123456789")
    assert mem.get("seg") == b"01234"


@pytest.mark.parametrize(
    ("rates", "exc"),
    [(FaultRates(error=1.0), TransientColdError), (FaultRates(timeout=1.0), TimeoutError)],
)
def test_failed_writes_write_nothing(
    mem: MemoryColdStore, rates: FaultRates, exc: type[Exception]
) -> None:
    mem.put("kept", b"k")
    faulty = FaultyColdStore(mem, rates)
    with pytest.raises(exc):
        faulty.put("p", b"data")
    with pytest.raises(exc):
        faulty.create("c", b"data")
    with pytest.raises(exc):
        faulty.delete(["kept"])
    assert mem.list("") == [ObjectInfo("kept", 1)]
    assert faulty.get("kept") == b"k"  # reads are not affected


def test_lost_answer_put_lands(mem: MemoryColdStore) -> None:
    faulty = FaultyColdStore(mem, FaultRates(lost_answer=1.0))
    with pytest.raises(TimeoutError):
        faulty.put("p", b"data")
    assert mem.get("p") == b"data"


def test_read_errors(mem: MemoryColdStore) -> None:
    mem.put("k", b"v")
    faulty = FaultyColdStore(mem, FaultRates(read_error=1.0))
    for call in (lambda: faulty.get("k"), lambda: faulty.list(""), lambda: faulty.size("k")):
        with pytest.raises(TransientColdError):
            call()
    faulty.put("w", b"writes work")
    assert faulty.injected == {"read_error": 3}
    faulty.enabled = False
    assert faulty.get("k") == b"v"


def _outcomes(seed: int) -> list[str]:
    store = FaultyColdStore(
        MemoryColdStore(f"test-{uuid.uuid4().hex}"),
        FaultRates(error=0.2, timeout=0.2, lost_answer=0.2, partial=0.2, read_error=0.3),
        seed=seed,
    )
    out = []
    for i in range(60):
        try:
            store.put(f"k{i % 7}", b"0123")
            store.get(f"k{i % 7}")
            out.append("ok")
        except (TransientColdError, TimeoutError) as exc:
            out.append(type(exc).__name__)
    MemoryColdStore.forget(store.inner.url.removeprefix("memory://"))
    return out


def test_faults_are_reproducible_by_seed() -> None:
    assert _outcomes(11) == _outcomes(11)
    assert _outcomes(11) != _outcomes(12)
    assert set(_outcomes(11)) == {"ok", "TransientColdError", "TimeoutError"}


MIXED = FaultRates(error=0.15, timeout=0.15, lost_answer=0.2, partial=0.25, read_error=0.2)


def _converge(cold: ColdStore, seed: int, objects: int) -> FaultyColdStore:
    """Write, create, read and delete through faults and retries; check the exact result."""
    faulty = FaultyColdStore(cold, MIXED, seed=seed)
    store = RetryingColdStore(MeteredColdStore(faulty), RetryPolicy(attempts=40, base_s=0))
    rng = random.Random(seed)
    want: dict[str, bytes] = {}
    for i in range(objects):
        key = f"data/{i:04d}.mqt"
        want[key] = rng.randbytes(rng.choice([0, 1, 2, 100, 5000]))
        store.put(key, want[key])
    for i in range(objects // 2):
        key = f"catalog/commits/{i:020d}.json"
        want[key] = f'{{"seq": {i}}}'.encode()
        assert store.create(key, want[key]) is True
        assert store.create(key, b"a later, different writer") is False
    for key, data in want.items():
        assert store.get(key) == data
        if data:
            assert store.get(key, 1) == data[1:]
    doomed = sorted(want)[::3]
    store.delete(doomed)
    for key in doomed:
        del want[key]
    # Read back without faults or retries: the exact bytes, nothing else.
    assert cold.list("") == [ObjectInfo(k, len(v)) for k, v in sorted(want.items())]
    for key, data in want.items():
        assert cold.get(key) == data
    return faulty


def test_retry_layer_converges_under_faults(cold: ColdStore) -> None:
    faulty = _converge(cold, seed=8, objects=8)
    assert set(faulty.injected) == {"error", "timeout", "lost_answer", "partial", "read_error"}


@pytest.mark.parametrize("seed", range(10))
def test_retry_layer_converges_under_faults_many_seeds(mem: MemoryColdStore, seed: int) -> None:
    faulty = _converge(mem, seed=seed, objects=30)
    assert sum(faulty.injected.values()) > 20


def test_concurrent_writers_through_faults_agree_on_one_creator(mem_name: str) -> None:
    """Lost answers and retries must not let two writers both believe they created a key."""
    writers = 6
    stores = [
        open_cold_store(
            f"memory://{mem_name}",
            retry=RetryPolicy(attempts=40, base_s=0),
            wrap=lambda s, i=i: FaultyColdStore(s, MIXED, seed=100 + i),
        )
        for i in range(writers)
    ]
    for round_ in range(5):
        key = f"catalog/commits/{round_:020d}.json"
        barrier = threading.Barrier(writers)

        def run(i: int, key: str = key, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait(timeout=30)
            return stores[i].create(key, f"writer {i}".encode())

        with ThreadPoolExecutor(writers) as pool:
            results = list(pool.map(run, range(writers)))
        assert sum(results) == 1, results
        assert MemoryColdStore(mem_name).get(key) == f"writer {results.index(True)}".encode()
