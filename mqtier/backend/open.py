"""From a URL to a ready cold store: the backend, a request meter and retries.

``file:///path`` or a plain path is a local directory, ``memory://name`` an in-process store,
and anything else goes to fsspec (``s3://bucket/prefix``, ``gs://...``), whose storage options
come from the caller (flags, environment, config file; see ``mqtier.config``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from mqtier.backend.base import ColdStore
from mqtier.backend.metered import MeteredColdStore, RequestBill
from mqtier.backend.retrying import (
    Deadline,
    RetryingColdStore,
    RetryNotice,
    RetryPolicy,
    describe_error,
)
from mqtier.errors import ColdStoreError, ConfigError
from mqtier.redact import MASK, is_secret_name, redact, redact_url

# "s3:bucket/x", "s3:" or "gs:/x": a URL missing its "//", not a directory someone meant.
_SCHEME_WITHOUT_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:(?!//)")
# Buckets whose URL forms put credentials in the userinfo part, which fsspec would take for
# part of the bucket's name.
_NO_USERINFO = frozenset({"s3", "s3a", "gs", "gcs", "oss"})

RootCheck = Literal["none", "existing", "creatable"]


def raw_cold_store(
    url: str, storage_options: dict[str, Any] | None = None, deadline: Deadline | None = None
) -> ColdStore:
    """The backend for ``url`` without metering or retries (S3's own retries turned off)."""
    if not url:
        raise ConfigError("empty cold-tier URL")
    if url != url.strip() or any(c in url for c in "\x00\n\r\t"):
        raise ConfigError(f"{redact_url(url.strip())!r}: blanks or control characters in the URL")
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

        if _SCHEME_WITHOUT_SLASHES.match(url):
            scheme = url.partition(":")[0]
            raise ConfigError(
                f"{redact_url(url)}: not a URL (write {scheme}://BUCKET/prefix) nor, surely, a "
                f"directory (write ./{redact_url(url)} if it is one)"
            )
        return FileColdStore(url)
    return _fsspec_store(url, storage_options or {}, deadline)


def _fsspec_store(url: str, options: dict[str, Any], deadline: Deadline | None = None) -> ColdStore:
    from mqtier.backend.fsspec_store import BUCKET_PROTOCOLS, FsspecColdStore

    shown = redact_url(url)
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in BUCKET_PROTOCOLS:
        bucket = rest.split("/", 1)[0]
        if not bucket.strip("/"):
            raise ConfigError(f"{shown}: no bucket in the URL (write {scheme}://BUCKET/prefix)")
        if "@" in rest.split("?", 1)[0] and scheme in _NO_USERINFO:
            raise ConfigError(
                f"{shown}: credentials in the URL are not supported for {scheme}://; give them with "
                "-o key=... -o secret=..., the environment or the config file"
            )
    check_storage_options(options)
    if scheme in ("s3", "s3a"):
        options = s3_defaults(options, deadline)
    try:
        return FsspecColdStore(url, options)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{shown}: cannot open this URL: {redact(str(exc))}") from None
    except (TypeError, AttributeError, KeyError) as exc:
        raise ConfigError(
            f"{shown}: the storage options were refused: {describe_error(exc)}"
        ) from None
    except OSError as exc:  # ftp:// and sftp:// connect at once
        raise ColdStoreError(f"{shown}: cannot connect: {describe_error(exc)}") from None


# botocore's per-request timeouts as s3fs sets them; a --timeout shorter than one caps them.
S3_CONNECT_TIMEOUT_S: Final = 5.0
S3_READ_TIMEOUT_S: Final = 15.0


def s3_defaults(options: dict[str, Any], deadline: Deadline | None) -> dict[str, Any]:
    """``options`` with botocore's own retries off and its timeouts bounded by ``deadline``.

    Left alone, retries stack: botocore retries a refused connection 4 times (about 6 s of
    backoff) under each of s3fs' attempts, under each of ours, and an unreachable endpoint
    took 45 s of silence to fail. Our layer (RetryingColdStore) owns retries, so each one is
    seen and the deadline is checked between them; a user's own ``-o config_kwargs.retries``
    or timeouts win.
    """
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", {"total_max_attempts": 1})
    budget = max(0.1, deadline.remaining()) if deadline is not None else None
    for name, default in (
        ("connect_timeout", S3_CONNECT_TIMEOUT_S),
        ("read_timeout", S3_READ_TIMEOUT_S),
    ):
        # One request in flight when the limit passes is waited for, not cut: bound it too.
        config.setdefault(name, default if budget is None else min(default, budget))
    return {**options, "config_kwargs": config}


def check_storage_options(options: Mapping[str, Any], parent: str = "") -> None:
    """Refuse what fsspec backends would trip over much later with an AttributeError.

    An option named ``*_kwargs`` (``client_kwargs``, ``config_kwargs``, ...) is a group of
    options passed on to a client library; a plain value there is always a mistake.
    """
    for name, value in options.items():
        full = f"{parent}{name}"
        if name.endswith("kwargs") and not isinstance(value, Mapping):
            raise ConfigError(
                f"-o {full}: a group of options, not a value (write -o {full}.NAME=VALUE)"
            )
        if isinstance(value, Mapping):
            check_storage_options(value, f"{full}.")
        else:
            _check_number(full, name, value)


# Option names that take a count, a size or a time (s3fs' default_block_size,
# fixed_upload_size, max_concurrency; botocore's connect_timeout, max_attempts, ...).
_NUMERIC_NAMES = ("_size", "concurrency", "timeout", "max_attempts")


def _check_number(full: str, name: str, value: Any) -> None:
    """No backend option takes a negative number, and sizes and counts must be numbers.

    s3fs reads with ``-o default_block_size=-1`` without an error but returns zeros in place
    of every object's bytes: the catalog then looks damaged and data blocks fail their CRCs,
    sending an operator to "repair" an intact tier.
    """
    number = isinstance(value, int | float) and not isinstance(value, bool)
    shown = MASK if is_secret_name(name) else repr(str(value)[:40])
    if number and value < 0:
        raise ConfigError(f"-o {full}: {shown} is negative; it must be 0 or more")
    if name.lower().endswith(_NUMERIC_NAMES) and value is not None and not number:
        raise ConfigError(f"-o {full}: {shown} is not a number")


def open_cold_store(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    bill: RequestBill | None = None,
    retry: RetryPolicy | None = None,
    wrap: Any = None,
    root: RootCheck = "none",
    on_retry: Callable[[RetryNotice], None] | None = None,
    deadline: Deadline | None = None,
) -> RetryingColdStore:
    """Backend for ``url``, metered into ``bill`` and retried under ``retry``.

    ``wrap`` (a callable taking and returning a ColdStore) is applied to the raw backend before
    metering: the fault-injection tests put their faulty layer there.

    ``root="existing"`` checks that the tier's root (directory, bucket) exists, so that a wrong
    URL fails (exit 3) instead of reading as an empty tier; ``"creatable"`` lets a directory be
    missing (a first dispatch makes it) but not a bucket.

    ``on_retry`` hears of each retry before its wait (the CLI prints a line); past
    ``deadline`` no request starts and no retry waits (:class:`ColdTimeoutError`).
    """
    store = raw_cold_store(url, storage_options, deadline)
    if wrap is not None:
        store = wrap(store)
    out = RetryingColdStore(
        MeteredColdStore(store, bill), retry, on_retry=on_retry, deadline=deadline
    )
    if root != "none":
        out.check_root(may_create=root == "creatable")
    return out


def bill_of(store: ColdStore) -> RequestBill | None:
    """The request bill of a store made by :func:`open_cold_store`."""
    inner = store.inner if isinstance(store, RetryingColdStore) else store
    return inner.bill if isinstance(inner, MeteredColdStore) else None
