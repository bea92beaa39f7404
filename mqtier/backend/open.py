"""From a URL to a ready cold store: the backend, a request meter and retries.

``file:///path`` or a plain path is a local directory, ``memory://name`` an in-process store,
and anything else goes to fsspec (``s3://bucket/prefix``, ``gs://...``), whose storage options
come from the caller (flags, environment, config file; see ``mqtier.config``).
"""

from __future__ import annotations

from typing import Any

from mqtier.backend.base import ColdStore
from mqtier.backend.metered import MeteredColdStore, RequestBill
from mqtier.backend.retrying import RetryingColdStore, RetryPolicy
from mqtier.errors import ConfigError


def raw_cold_store(url: str, storage_options: dict[str, Any] | None = None) -> ColdStore:
    """The backend for ``url`` without metering or retries."""
    if not url:
        raise ConfigError("empty cold-tier URL")
    if url.startswith("file://"):
        from mqtier.backend.file_store import FileColdStore

        path = url[len("file://") :]
        if not path.startswith("/"):
            raise ConfigError(f"{url}: a file:// URL needs an absolute path (file:///dir)")
        return FileColdStore(path)
    if url.startswith("memory://"):
        from mqtier.backend.memory_store import MemoryColdStore

        return MemoryColdStore(url[len("memory://") :].strip("/") or "default")
    if "://" not in url:
        from mqtier.backend.file_store import FileColdStore

        return FileColdStore(url)
    from mqtier.backend.fsspec_store import FsspecColdStore

    try:
        return FsspecColdStore(url, storage_options)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{url}: cannot open this URL: {exc}") from None


def open_cold_store(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    bill: RequestBill | None = None,
    retry: RetryPolicy | None = None,
    wrap: Any = None,
) -> RetryingColdStore:
    """Backend for ``url``, metered into ``bill`` and retried under ``retry``.

    ``wrap`` (a callable taking and returning a ColdStore) is applied to the raw backend before
    metering: the fault-injection tests put their faulty layer there.
    """
    store = raw_cold_store(url, storage_options)
    if wrap is not None:
        store = wrap(store)
    return RetryingColdStore(MeteredColdStore(store, bill), retry)


def bill_of(store: ColdStore) -> RequestBill | None:
    """The request bill of a store made by :func:`open_cold_store`."""
    inner = store.inner if isinstance(store, RetryingColdStore) else store
    return inner.bill if isinstance(inner, MeteredColdStore) else None
