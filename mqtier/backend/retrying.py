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
from mqtier.errors import ColdStoreError, MqtierError
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


class RetryingColdStore(ColdStore):
    def __init__(
        self,
        inner: ColdStore,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self.retries = 0

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def _call(self, what: str, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
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
                self.retries += 1
                log.debug("%s: retrying %s after %s", self.url, what, describe_error(exc))
                self._sleep(self.policy.delay(attempt))

    def put(self, key: str, data: bytes) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, data))

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

        return self._call(f"create {key}", attempt)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key, start, end))

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self._call(f"list {prefix or '/'}", lambda: self.inner.list(prefix))

    def list_incomplete(self, prefix: str, older_than_s: float = 0.0) -> Sequence[str]:
        return self._call(
            f"list {prefix or '/'}", lambda: self.inner.list_incomplete(prefix, older_than_s)
        )

    def delete(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        self._call(f"delete of {len(batch)} objects", lambda: self.inner.delete(batch))

    def size(self, key: str) -> int:
        return self._call(f"size {key}", lambda: self.inner.size(key))

    def check_root(self, *, may_create: bool) -> None:
        self._call("check of the root", lambda: self.inner.check_root(may_create=may_create))

    def close(self) -> None:
        self.inner.close()


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
