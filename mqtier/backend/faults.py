"""A fault-injecting wrapper: the cold tier misbehaving on purpose, for tests and drills.

Each request draws from a seeded random source and may fail before it reaches the store
(error, timeout), land but lose its answer (the caller sees an error after the write
happened), or land partially (a truncated object, then an error). Reads may fail too. The
commit protocol must converge to the exact hot data under any mix of these.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mqtier.backend.base import ColdStore, ObjectInfo
from mqtier.backend.retrying import TransientColdError


@dataclass(frozen=True, slots=True)
class FaultRates:
    error: float = 0.0  # fails before anything is written
    timeout: float = 0.0  # fails as a timeout, before anything is written
    lost_answer: float = 0.0  # put/create lands, then the caller sees an error
    partial: float = 0.0  # put lands truncated, then the caller sees an error
    read_error: float = 0.0  # get/list/size fail


class FaultyColdStore(ColdStore):
    def __init__(self, inner: ColdStore, rates: FaultRates, seed: int = 0) -> None:
        self.inner = inner
        self.url = inner.url
        self.rates = rates
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {}
        self.enabled = True

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def _draw(self, rate: float, what: str) -> bool:
        if not self.enabled or rate <= 0:
            return False
        with self._lock:
            hit = self._rng.random() < rate
            if hit:
                self.injected[what] = self.injected.get(what, 0) + 1
        return hit

    def _before_write(self) -> None:
        if self._draw(self.rates.error, "error"):
            raise TransientColdError("injected: request failed")
        if self._draw(self.rates.timeout, "timeout"):
            raise TimeoutError("injected: request timed out")

    def put(self, key: str, data: bytes) -> None:
        self._before_write()
        if len(data) > 1 and self._draw(self.rates.partial, "partial"):
            self.inner.put(key, data[: len(data) // 2])
            raise TransientColdError("injected: connection dropped mid-upload")
        self.inner.put(key, data)
        if self._draw(self.rates.lost_answer, "lost_answer"):
            raise TimeoutError("injected: the answer was lost")

    def create(self, key: str, data: bytes) -> bool:
        self._before_write()
        created = self.inner.create(key, data)
        if self._draw(self.rates.lost_answer, "lost_answer"):
            raise TimeoutError("injected: the answer was lost")
        return created

    def _before_read(self) -> None:
        if self._draw(self.rates.read_error, "read_error"):
            raise TransientColdError("injected: read failed")

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self._before_read()
        return self.inner.get(key, start, end)

    def list(self, prefix: str) -> list[ObjectInfo]:
        self._before_read()
        return self.inner.list(prefix)

    def list_incomplete(self, prefix: str, older_than_s: float = 0.0) -> Sequence[str]:
        self._before_read()
        return self.inner.list_incomplete(prefix, older_than_s)

    def delete(self, keys: Iterable[str]) -> None:
        self._before_write()
        self.inner.delete(keys)

    def check_root(self, *, may_create: bool) -> None:
        # No fault drawn: a seeded campaign must meet the same faults with or without the check.
        self.inner.check_root(may_create=may_create)

    def size(self, key: str) -> int:
        self._before_read()
        return self.inner.size(key)
