"""Request accounting: every request a command sends to the cold tier, by kind.

Object stores bill per request and per byte, so each command reports its bill: counts, bytes and
latency per kind (``--json`` includes it; text mode prints one line on stderr). The meter wraps
the raw backend, under the retry layer, so a retried request is counted as often as it was sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mqtier.backend.base import ColdStore, ObjectInfo
from mqtier.errors import ColdObjectNotFoundError

T = TypeVar("T")


@dataclass(slots=True)
class KindStats:
    requests: int = 0
    errors: int = 0
    bytes_out: int = 0  # sent to the store
    bytes_in: int = 0  # received from it
    seconds: float = 0.0


class RequestBill:
    """Thread-safe totals per request kind (put, create, get, list, delete, size)."""

    KINDS = ("put", "create", "get", "list", "delete", "size")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kinds: dict[str, KindStats] = {k: KindStats() for k in self.KINDS}

    def record(self, kind: str, seconds: float, *, out: int = 0, inb: int = 0, ok: bool) -> None:
        with self._lock:
            s = self.kinds[kind]
            s.requests += 1
            s.errors += 0 if ok else 1
            s.bytes_out += out
            s.bytes_in += inb
            s.seconds += seconds

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.kinds.values())

    @property
    def bytes_received(self) -> int:
        return sum(s.bytes_in for s in self.kinds.values())

    def count(self, kind: str) -> int:
        return self.kinds[kind].requests

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(s.requests for s in self.kinds.values()),
                "errors": sum(s.errors for s in self.kinds.values()),
                "bytes_sent": sum(s.bytes_out for s in self.kinds.values()),
                "bytes_received": sum(s.bytes_in for s in self.kinds.values()),
                "by_kind": {
                    k: {
                        "requests": s.requests,
                        "errors": s.errors,
                        "bytes_sent": s.bytes_out,
                        "bytes_received": s.bytes_in,
                        "seconds": round(s.seconds, 3),  # durations: to the millisecond
                    }
                    for k, s in self.kinds.items()
                    if s.requests
                },
            }

    def summary(self) -> str:
        """One line for people: ``requests: 3 put (12.0 MB), 1 create, 2 get (1.1 MB)``."""
        parts = []
        for k, s in self.kinds.items():
            if not s.requests:
                continue
            moved = s.bytes_out + s.bytes_in
            extra = f" ({moved / 1e6:.1f} MB)" if moved else ""
            errs = f", {s.errors} failed" if s.errors else ""
            parts.append(f"{s.requests} {k}{extra}{errs}")
        return "requests: " + (", ".join(parts) if parts else "none")


class MeteredColdStore(ColdStore):
    def __init__(self, inner: ColdStore, bill: RequestBill | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.bill = bill or RequestBill()

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def _timed(
        self, kind: str, call: Callable[[], T], *, out: int = 0, size_in: Callable[[T], int]
    ) -> T:
        t0 = time.perf_counter()
        try:
            result = call()
        except ColdObjectNotFoundError:
            # "No such object" is an answer, not a failure: catalog loads probe for it.
            self.bill.record(kind, time.perf_counter() - t0, out=out, ok=True)
            raise
        except BaseException:
            self.bill.record(kind, time.perf_counter() - t0, out=out, ok=False)
            raise
        self.bill.record(kind, time.perf_counter() - t0, out=out, inb=size_in(result), ok=True)
        return result

    def put(self, key: str, data: bytes) -> None:
        self._timed("put", lambda: self.inner.put(key, data), out=len(data), size_in=_zero)

    def create(self, key: str, data: bytes) -> bool:
        return self._timed(
            "create", lambda: self.inner.create(key, data), out=len(data), size_in=_zero
        )

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self._timed("get", lambda: self.inner.get(key, start, end), size_in=len)

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self._timed("list", lambda: self.inner.list(prefix), size_in=_zero)

    def list_incomplete(self, prefix: str, older_than_s: float = 0.0) -> Sequence[str]:
        return self._timed(
            "list", lambda: self.inner.list_incomplete(prefix, older_than_s), size_in=_zero
        )

    def delete(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        if batch:
            self._timed("delete", lambda: self.inner.delete(batch), size_in=_zero)

    def size(self, key: str) -> int:
        return self._timed("size", lambda: self.inner.size(key), size_in=_zero)

    def check_root(self, *, may_create: bool) -> None:
        # One HEAD (of the bucket or directory): billed like the HEAD of an object.
        self._timed("size", lambda: self.inner.check_root(may_create=may_create), size_in=_zero)

    def close(self) -> None:
        self.inner.close()


def _zero(_: object) -> int:
    return 0
