"""Retries with exponential backoff and full jitter for errors worth retrying.

Worth retrying: timeouts, dropped connections, throttling and 5xx answers. Not worth it: a
missing object, denied access, a bad URL; those become one clear error at once.

A conditional create whose answer was lost may have landed. When a retry of such a create finds
the key taken, the object is read back: if it holds exactly our bytes, the create succeeded.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from mqtier.backend.base import ColdStore, ObjectInfo
from mqtier.errors import ColdStoreError, ColdTimeoutError, MqtierError
from mqtier.redact import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRY_ERRNOS = {
    errno.EIO,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.EPIPE,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EREMOTEIO,  # s3fs: a 5xx answer (InternalError, 503 Slow Down)
}
# botocore/aiohttp exception class names, matched by name so this module needs neither.
_RETRY_NAMES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ResponseStreamingError",
    "ServerDisconnectedError",
    "ClientConnectorError",
    "ClientOSError",
    "IncompleteReadError",
    # What s3fs retried itself before we turned its retries off (see fsspec_store).
    "ResponseParserError",
    "HTTPClientError",
    "FSTimeoutError",
}
# Error codes as botocore words them: "An error occurred (SlowDown) when calling ...".
_RETRY_CODES = tuple(
    f"({code})"
    for code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "503", "500")
)


class TransientColdError(OSError):
    """A failure the backend itself marks as worth retrying (the fault injector raises it)."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, MqtierError | FileNotFoundError | FileExistsError | PermissionError):
        return False
    if isinstance(exc, TimeoutError | ConnectionError | TransientColdError):
        return True
    if type(exc).__name__ in _RETRY_NAMES:
        return True
    if isinstance(exc, OSError) and exc.errno in _RETRY_ERRNOS:
        return True
    text = str(exc)
    return isinstance(exc, OSError) and any(code in text for code in _RETRY_CODES)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    base_s: float = 0.1
    cap_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap_s, self.base_s * (2**attempt)))


@dataclass(frozen=True, slots=True)
class Deadline:
    """A time (``time.monotonic()``) after which no request starts and no retry waits.

    Checked only between requests, never by interrupting one: a request under way finishes
    (or fails by its own connect and read timeouts), so a commit is never cut in half. A
    deadline that passes mid-run leaves the cold tier as a failed request would: as before, or
    with whole commits and, at worst, uncommitted objects a later run deletes.
    """

    at: float
    label: str  # what set it, for messages: "--timeout 30s"

    @classmethod
    def after(cls, seconds: float, label: str) -> Deadline:
        return cls(time.monotonic() + seconds, label)

    def remaining(self) -> float:
        return self.at - time.monotonic()


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """One retry about to happen, for whoever shows progress (the CLI: a line on stderr)."""

    verb: str  # GET, PUT, HEAD, LIST, DELETE
    target: str  # the object's key, shortened to its last part (".../LATEST")
    attempt: int  # the attempt about to be made, from 2
    attempts: int
    delay_s: float
    reason: str  # short: "connection refused", "timed out", "HTTP 503"

    def __str__(self) -> str:
        return (
            f"retrying {self.verb} {self.target} ({self.attempt}/{self.attempts}) in "
            f"{self.delay_s:.1f} s: {self.reason}"
        )


class RetryingColdStore(ColdStore):
    def __init__(
        self,
        inner: ColdStore,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        *,
        on_retry: Callable[[RetryNotice], None] | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self.retries = 0
        # The library never prints: a caller that shows progress installs this.
        self.on_retry = on_retry
        self.deadline = deadline

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def _call(self, what: str, call: Callable[[], T], verb: str = "", key: str = "") -> T:
        attempt = 0
        while True:
            self._check_deadline(what, None)
            try:
                return call()
            except MqtierError:
                raise
            except Exception as exc:
                if not is_retryable(exc):
                    raise _as_cold_error(what, self.url, exc) from exc
                attempt += 1
                if attempt >= self.policy.attempts:
                    raise ColdStoreError(
                        f"{self.url}: {what} failed after {attempt} attempts: {describe_error(exc)}"
                    ) from exc
                delay = self.policy.delay(attempt)
                self._check_deadline(what, exc, delay)
                self.retries += 1
                log.debug("%s: retrying %s after %s", self.url, what, describe_error(exc))
                if self.on_retry is not None:
                    self.on_retry(
                        RetryNotice(
                            verb or what.partition(" ")[0].upper(),
                            _shortened(key) if key else self.url,
                            attempt + 1,
                            self.policy.attempts,
                            delay,
                            short_reason(exc),
                        )
                    )
                self._sleep(delay)

    def _check_deadline(self, what: str, exc: BaseException | None, delay: float = 0.0) -> None:
        """Stop before a request or a wait that would start at or run past the deadline."""
        if self.deadline is None:
            return
        left = self.deadline.remaining()
        if exc is None and left <= 0:
            raise ColdTimeoutError(
                f"{self.url}: {what}: stopped, the time limit ran out ({self.deadline.label})"
            )
        if exc is not None and left <= delay:
            raise ColdTimeoutError(
                f"{self.url}: {what} failed ({short_reason(exc)}) and the time limit "
                f"({self.deadline.label}) runs out before the next retry"
            ) from exc

    def put(self, key: str, data: bytes) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, data), "PUT", key)

    def create(self, key: str, data: bytes) -> bool:
        sent = False

        def attempt() -> bool:
            nonlocal sent
            if sent:
                # An earlier attempt may have landed without its answer reaching us.
                created = self.inner.create(key, data)
                return created or self.inner.get(key) == data
            sent = True
            return self.inner.create(key, data)

        return self._call(f"create {key}", attempt, "PUT", key)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key, start, end), "GET", key)

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self._call(
            f"list {prefix or '/'}", lambda: self.inner.list(prefix), "LIST", prefix or "/"
        )

    def list_incomplete(self, prefix: str, older_than_s: float = 0.0) -> Sequence[str]:
        return self._call(
            f"list {prefix or '/'}",
            lambda: self.inner.list_incomplete(prefix, older_than_s),
            "LIST",
            prefix or "/",
        )

    def delete(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        what = f"delete of {len(batch)} objects"
        self._call(what, lambda: self.inner.delete(batch), "DELETE", f"{len(batch)} objects")

    def size(self, key: str) -> int:
        return self._call(f"size {key}", lambda: self.inner.size(key), "HEAD", key)

    def check_root(self, *, may_create: bool) -> None:
        self._call(
            "check of the root", lambda: self.inner.check_root(may_create=may_create), "HEAD"
        )

    def close(self) -> None:
        self.inner.close()


def _shortened(key: str) -> str:
    """A key as a retry line shows it: its last part, which says what the request was for."""
    head, _, tail = key.rstrip("/").rpartition("/")
    tail += "/" if key.endswith("/") else ""
    return f".../{tail}" if head else key


# Reasons by exception class name (botocore, aiohttp), for the short words of a retry line.
_REASON_NAMES = {
    "ConnectTimeoutError": "connect timed out",
    "ReadTimeoutError": "timed out",
    "ServerDisconnectedError": "server disconnected",
    "ConnectionClosedError": "connection closed",
    "ResponseStreamingError": "connection dropped mid-answer",
    "IncompleteReadError": "connection dropped mid-answer",
}


def short_reason(exc: BaseException) -> str:
    """A few words for why a request failed: "connection refused", "timed out", "HTTP 503".

    Backends wrap the cause (botocore's EndpointConnectionError over aiohttp's error over a
    ConnectionRefusedError; s3fs's OSError over botocore's ClientError), so the chain is read.
    """
    chain = _chain(exc)
    for e in chain:
        status = _http_status(e)
        if status is not None:
            return f"HTTP {status}"
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
        if type(e).__name__ in _REASON_NAMES:
            return _REASON_NAMES[type(e).__name__]
        if isinstance(e, TimeoutError):
            return "timed out"
    if type(exc).__name__ == "EndpointConnectionError":
        return "cannot connect"
    text = describe_error(exc)
    return text if len(text) <= 80 else text[:77] + "..."


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 10:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ClientError (its ``response``), if that is what it is."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def describe_error(exc: BaseException) -> str:
    # A backend's message may quote the URL it was given, credentials and all.
    text = redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_cold_error(what: str, url: str, exc: BaseException) -> MqtierError:
    from mqtier.errors import ColdObjectNotFoundError

    if isinstance(exc, FileNotFoundError) and what.startswith(("get ", "size ")):
        return ColdObjectNotFoundError(f"{url}: {what}: not found")
    if isinstance(exc, PermissionError):
        return ColdStoreError(f"{url}: {what}: access denied ({describe_error(exc)})")
    return ColdStoreError(f"{url}: {what}: {describe_error(exc)}")
