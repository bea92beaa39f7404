"""Group commit: many concurrent appends, one ``pwrite`` + ``fdatasync`` per batch.

Callers add their messages to the open batch and wait on the batch's event; a single writer
thread takes the whole open batch, commits it, and wakes every caller at once. While one batch
syncs the next one fills, so the batch size follows the load by itself. On top of that the
writer may hold a batch open for a short window when it expects more callers: the number of
callers in the previous batch is the estimate of how many writers are active (the adaptive
batch of the storage-contest design), and the window closes early once that many have arrived.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Batch(Generic[T, R]):
    __slots__ = ("calls", "done", "error", "items", "nbytes", "results")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.results: list[R] = []
        self.calls = 0
        self.nbytes = 0
        self.done = threading.Event()
        self.error: BaseException | None = None


class PendingAppend(Generic[T, R]):
    """A submitted slice of a batch; :meth:`wait` returns its results once durable."""

    __slots__ = ("_batch", "_count", "_start")

    def __init__(self, batch: _Batch[T, R], start: int, count: int) -> None:
        self._batch = batch
        self._start = start
        self._count = count

    def wait(self, timeout: float | None = None) -> list[R]:
        if not self._batch.done.wait(timeout):
            raise TimeoutError("append not acknowledged in time")
        if self._batch.error is not None:
            raise self._batch.error
        return self._batch.results[self._start : self._start + self._count]


class GroupCommitter(Generic[T, R]):
    """Runs ``commit(items) -> results`` on one thread for everything submitted meanwhile."""

    def __init__(
        self,
        commit: Callable[[list[T]], list[R]],
        *,
        max_wait_s: float = 0.0005,
        max_batch_bytes: int = 4 << 20,
        name: str = "mqtier-groupcommit",
        count: Callable[[T], int] = lambda _item: 1,
    ) -> None:
        self._commit = commit
        self._max_wait_s = max_wait_s
        self._max_batch_bytes = max_batch_bytes
        self._cond = threading.Condition()
        self._open: _Batch[T, R] = _Batch()
        self._target_calls = 1
        self._closed = False
        self._failed: BaseException | None = None
        self.batches = 0
        self.items_committed = 0  # counted by ``count`` (a batch of messages: its messages)
        self._count = count
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[T], nbytes: int) -> PendingAppend[T, R]:
        """Queue ``items`` (about ``nbytes`` on disk) for the next commit."""
        with self._cond:
            if self._failed is not None:
                raise self._failed
            if self._closed:
                raise RuntimeError("the store is closed")
            b = self._open
            start = len(b.items)
            b.items.extend(items)
            b.calls += 1
            b.nbytes += nbytes
            if b.calls == 1 or b.calls >= self._target_calls or b.nbytes >= self._max_batch_bytes:
                self._cond.notify()
        return PendingAppend(b, start, len(items))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._open.items and not self._closed:
                    self._cond.wait()
                if not self._open.items:
                    return
                b = self._open
                if (
                    b.calls < self._target_calls
                    and b.nbytes < self._max_batch_bytes
                    and not self._closed
                ):
                    self._cond.wait(self._max_wait_s)
                self._open = _Batch()
            try:
                b.results = self._commit(b.items)
            except BaseException as exc:  # noqa: BLE001 - every caller must hear of it
                b.error = exc
                with self._cond:
                    # After a failed write or fsync nothing later may be acknowledged.
                    self._failed = exc
                    pending, self._open = self._open, _Batch()
                pending.error = exc
                pending.done.set()
            else:
                self.batches += 1
                self.items_committed += sum(map(self._count, b.items))
            self._target_calls = max(1, b.calls)
            b.done.set()

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
