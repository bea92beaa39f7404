"""An in-process cold tier (``memory://name``): for tests, examples and dry runs.

Stores with the same name share their objects within one process, as fsspec's memory
filesystem does, so a test can write with one handle and read with another.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from mqtier.backend.base import ColdStore, ObjectInfo, check_key
from mqtier.errors import ColdObjectNotFoundError

_SHARED: dict[str, dict[str, bytes]] = {}
_SHARED_LOCK = threading.Lock()


class MemoryColdStore(ColdStore):
    def __init__(self, name: str = "default") -> None:
        self.url = f"memory://{name}"
        with _SHARED_LOCK:
            self._objects = _SHARED.setdefault(name, {})
        self._lock = _SHARED_LOCK

    @staticmethod
    def forget(name: str) -> None:
        """Drop every object of the store called ``name``."""
        with _SHARED_LOCK:
            _SHARED.pop(name, None)

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[check_key(key)] = bytes(data)

    def create(self, key: str, data: bytes) -> bool:
        with self._lock:
            if check_key(key) in self._objects:
                return False
            self._objects[key] = bytes(data)
            return True

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with self._lock:
            data = self._objects.get(check_key(key))
        if data is None:
            raise ColdObjectNotFoundError(f"{self.url}/{key}: no such object")
        return data[start:end]

    def list(self, prefix: str) -> list[ObjectInfo]:
        with self._lock:
            items = [(k, len(v)) for k, v in self._objects.items() if k.startswith(prefix)]
        return [ObjectInfo(k, n) for k, n in sorted(items)]

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._objects.pop(check_key(key), None)

    def size(self, key: str) -> int:
        with self._lock:
            data = self._objects.get(check_key(key))
        if data is None:
            raise ColdObjectNotFoundError(f"{self.url}/{key}: no such object")
        return len(data)
