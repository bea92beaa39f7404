"""A byte-bounded cache of recent records for hot reads, with admission by size.

Records are cached as their raw bytes, keyed by commit-log offset. A record larger than
``admit_max_bytes`` is never admitted: one big message would otherwise evict hundreds of small
ones that consumers are about to read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class RecordCache:
    def __init__(self, max_bytes: int, admit_max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.admit_max_bytes = admit_max_bytes if admit_max_bytes is not None else max_bytes // 64
        self._data: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, offset: int, record: bytes) -> None:
        n = len(record)
        if n > self.admit_max_bytes or self.max_bytes <= 0:
            return
        with self._lock:
            old = self._data.pop(offset, None)
            if old is not None:
                self._bytes -= len(old)
            self._data[offset] = record
            self._bytes += n
            while self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= len(evicted)

    def put_many(self, items: list[tuple[int, bytes]]) -> None:
        if self.max_bytes <= 0:
            return
        limit = self.admit_max_bytes
        with self._lock:
            data = self._data
            for offset, record in items:
                if len(record) <= limit:
                    old = data.pop(offset, None)  # put again (a replay): count it once
                    if old is not None:
                        self._bytes -= len(old)
                    data[offset] = record
                    self._bytes += len(record)
            while self._bytes > self.max_bytes:
                _, evicted = data.popitem(last=False)
                self._bytes -= len(evicted)

    def get(self, offset: int) -> bytes | None:
        if not self._data:  # a read-only store's (or a new one's): no lock for nothing
            self.misses += 1
            return None
        with self._lock:
            rec = self._data.get(offset)
            if rec is None:
                self.misses += 1
            else:
                self.hits += 1
                self._data.move_to_end(offset)
            return rec

    def drop_from(self, offset: int) -> None:
        """Forget records at or past ``offset`` (after a truncation)."""
        with self._lock:
            for k in [k for k in self._data if k >= offset]:
                self._bytes -= len(self._data.pop(k))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "bytes": self._bytes,
            "entries": len(self._data),
            "max_bytes": self.max_bytes,
        }
