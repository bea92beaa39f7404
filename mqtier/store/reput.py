"""The reput thread: builds consume queues and the index off the append path.

The group-commit writer hands over what it just made durable; this thread applies it (RocketMQ's
reput) and every ``flush_interval_s`` flushes the derived files, then records how far it got in
the dispatch checkpoint. Recovery replays the commit log from that checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)

# How many bytes of durable records may wait for the reput before the writer waits for it: a
# bulk ingest can outrun the reput (both want the GIL), and each waiting batch holds its records.
MAX_BACKLOG_BYTES: Final = 32 << 20


class Reput:
    def __init__(
        self,
        apply: Callable[[list[Any]], int],
        checkpoint: Callable[[int], None],
        *,
        start_offset: int,
        flush_interval_s: float = 1.0,
    ) -> None:
        self._apply = apply
        self._checkpoint = checkpoint
        self._flush_interval_s = flush_interval_s
        self._cond = threading.Condition()
        self._pending: list[tuple[list[Any], int]] = []
        self._backlog = 0  # record bytes submitted and not yet applied
        self._closed = False
        self.dispatched_offset = start_offset  # everything below is in the CQs and index
        self.checkpointed_offset = start_offset
        self._wanted = start_offset  # checkpoint_through asks for a checkpoint up to here
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mqtier-reput", daemon=True)
        self._thread.start()

    def submit(self, items: list[Any], nbytes: int = 0) -> None:
        """Queue a job of ``nbytes`` of records; first wait while the backlog is full."""
        with self._cond:
            while self._backlog > MAX_BACKLOG_BYTES and self.error is None and not self._closed:
                self._cond.wait()
            self._pending.append((items, nbytes))
            self._backlog += nbytes
            self._cond.notify_all()

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            with self._cond:
                while not self._pending and not self._closed and not self._asked():
                    timeout = self._flush_interval_s - (time.monotonic() - last_flush)
                    if timeout <= 0:
                        break
                    self._cond.wait(timeout)
                batches, self._pending = self._pending, []
                closing = self._closed
            try:
                for items, nbytes in batches:
                    end = self._apply(items)
                    with self._cond:
                        self.dispatched_offset = end
                        self._backlog -= nbytes
                        self._cond.notify_all()
                now = time.monotonic()
                asked = self._wanted > self.checkpointed_offset
                if closing or asked or now - last_flush >= self._flush_interval_s:
                    if self.dispatched_offset != self.checkpointed_offset or closing:
                        self._checkpoint(self.dispatched_offset)
                        with self._cond:
                            self.checkpointed_offset = self.dispatched_offset
                            self._cond.notify_all()
                    last_flush = now
            except BaseException as exc:  # the store reports it; appends stay durable
                if isinstance(exc, OSError):  # a full disk: the store's error says it all
                    log.debug("dispatch failed", exc_info=True)
                else:
                    log.exception("dispatch failed")
                with self._cond:
                    self.error = exc
                    self._cond.notify_all()
                return
            if closing:
                with self._cond:
                    if not self._pending:
                        return

    def _asked(self) -> bool:
        """A checkpoint is asked for and there is something new to record (under the lock)."""
        return self._wanted > self.checkpointed_offset < self.dispatched_offset

    def checkpoint_through(self, offset: int) -> None:
        """Block until everything below ``offset`` is dispatched, flushed and checkpointed,
        now rather than at the next interval.

        Raises:
            BaseException: the reput's error, if it failed (a full disk).
        """
        with self._cond:
            self._wanted = max(self._wanted, offset)
            self._cond.notify_all()
            while self.checkpointed_offset < offset and self.error is None:
                if not self._thread.is_alive():
                    raise RuntimeError("the reput has stopped")  # closed: a caller's bug
                self._cond.wait(0.5)
        if self.error is not None:
            raise self.error

    def wait_for(self, offset: int, timeout: float | None = None) -> bool:
        """Block until everything below ``offset`` is dispatched (reads see it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.dispatched_offset < offset and self.error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        if self.error is not None:
            raise self.error
        return True

    def close(self) -> None:
        """Apply what is pending, flush, checkpoint, stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self.error is not None:
            raise self.error
