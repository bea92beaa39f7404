"""Backend fixtures: one moto S3 server per session, and every backend behind one ``cold`` fixture.

``cold`` is parametrized over the cold-tier backends mqtier ships, each on fresh, private storage:

* ``file``: :class:`FileColdStore` on a directory in ``tmp_path``;
* ``file-url``: the same, opened from a ``file:///...`` URL through :func:`raw_cold_store`;
* ``memory``: :class:`MemoryColdStore` under a name unique to the test, forgotten afterwards;
* ``s3``: :class:`FsspecColdStore` on ``s3://<bucket>/cold`` against moto's server over HTTP,
  with a bucket of its own per test (moto's state is reset at the end of the session).

``cold_reopen`` opens a second, independent handle on the same storage (another writer).
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mqtier.backend.base import ColdStore
from mqtier.backend.file_store import FileColdStore
from mqtier.backend.fsspec_store import FsspecColdStore
from mqtier.backend.memory_store import MemoryColdStore
from mqtier.backend.open import raw_cold_store
from tests.moto_s3 import s3_client as moto_s3_client
from tests.moto_s3 import start_moto_server

COLD_KINDS = ("file", "file-url", "memory", "s3")
S3_PREFIX = "cold"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto S3 server running for the whole session."""
    with start_moto_server() as endpoint:
        yield endpoint
        # The server keeps its buckets in this process: drop them all at once.
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str) -> Any:
    """A boto3 client on the moto server (dummy credentials, passed explicitly)."""
    return moto_s3_client(moto_endpoint)


@pytest.fixture(scope="session")
def aio_session() -> Any:
    """One aiobotocore session for every s3fs instance: it loads the S3 service model once
    (about 0.1 s per new session otherwise). Each instance still makes its own client."""
    from aiobotocore.session import AioSession  # type: ignore[import-untyped]

    return AioSession()


@pytest.fixture
def s3_options(moto_endpoint: str, aio_session: Any) -> dict[str, Any]:
    """Storage options for s3fs: dummy credentials, the moto endpoint, no instance cache."""
    return {
        "session": aio_session,
        "key": "testing",
        "secret": "testing",
        "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A new, empty bucket for this test (moto's state is reset when the session ends)."""
    name = f"mqtier-test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=COLD_KINDS)
def cold_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cold_reopen(
    cold_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], ColdStore]]:
    """A factory of independent handles on one fresh cold tier of kind ``cold_kind``."""
    opened: list[ColdStore] = []
    cleanup: list[Callable[[], None]] = []
    if cold_kind == "file":
        root = tmp_path / "cold"

        def make() -> ColdStore:
            return FileColdStore(root)

    elif cold_kind == "file-url":
        url = f"file://{tmp_path / 'cold'}"

        def make() -> ColdStore:
            return raw_cold_store(url)

    elif cold_kind == "memory":
        name = f"test-{uuid.uuid4().hex}"
        cleanup.append(lambda: MemoryColdStore.forget(name))

        def make() -> ColdStore:
            return MemoryColdStore(name)

    elif cold_kind == "s3":
        bucket: str = request.getfixturevalue("s3_bucket")
        options: dict[str, Any] = request.getfixturevalue("s3_options")

        def make() -> ColdStore:
            return FsspecColdStore(f"s3://{bucket}/{S3_PREFIX}", options)

    else:  # pragma: no cover - guarded by COLD_KINDS
        raise AssertionError(cold_kind)

    def reopen() -> ColdStore:
        store = make()
        opened.append(store)
        return store

    try:
        yield reopen
    finally:
        for store in opened:
            store.close()
        for fn in cleanup:
            fn()


@pytest.fixture
def cold(cold_reopen: Callable[[], ColdStore]) -> ColdStore:
    """A fresh, empty cold tier of each backend kind."""
    return cold_reopen()
