"""Zeros written ahead of the commit-log writer, in a bounded window, by a background thread.

A sync of records into blocks that already hold written zeros costs about half of one that must
allocate them (ext4: no block allocation or extent conversion in the sync), so RocketMQ and
mqtier pre-write commit-log files. Pre-writing a whole 1 GiB file before the first append makes
a new store wait seconds and take a gigabyte at once; here files are created sparse, at their
full size, and only ``window`` bytes ahead of the writer are zero-filled, step by step, so disk
use grows with the data. Where the writer outruns the zeros it writes into the holes: correct,
only its syncs are slower.

The one rule that keeps records safe: zeros are never written where the writer has written or
is writing. The writer announces each batch's end before it writes (:meth:`ZeroAhead.claim`);
a step starts at or past every end announced, and a batch that reaches into a step being
written waits for it to finish. A pre-writer the writer has outrun starts again a little
ahead of it rather than right where the next batch goes.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from mqtier.store.fileio import fsync_dir, naming, zero_range

log = logging.getLogger(__name__)

# How far ahead of the writer the zeros reach (at most half a file: never past the next file),
# and how much is written and synced at a time (a batch waits for one step at most).
WINDOW_BYTES: Final = 64 << 20
STEP_BYTES: Final = 1 << 20


def open_sparse(path: Path, size: int) -> int:
    """Open ``path`` for writing, creating it as a sparse file of ``size`` bytes if absent.

    Never shortens or truncates an existing file, so the writer and the pre-writer can both
    call it for the same file.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
            fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


class ZeroAhead:
    """The background pre-writer of one writable commit log (see the module docstring)."""

    def __init__(
        self,
        path_for: Callable[[int], Path],
        file_bytes: int,
        start: int,
        *,
        window: int = WINDOW_BYTES,
        step: int = STEP_BYTES,
    ) -> None:
        self._path_for = path_for  # global base offset -> the file's path
        self._file_bytes = file_bytes
        self._window = min(window, file_bytes // 2)
        self._step = max(1, min(step, self._window // 4))
        self._cond = threading.Condition()
        self._floor = start  # the writer's announced end: zeros go only at or past it
        self._done = start  # zeros are written and synced up to here (from the floor)
        self._want = start
        self._busy: tuple[int, int] | None = None  # the step being written
        self._error: BaseException | None = None
        self._stopping = False
        self._fds: dict[int, int] = {}
        # Before the first claim can move the window: a claim that saw the un-skipped start
        # would ask for a step of zeros over blocks already written (each reopen, one more).
        self._skip_written()
        self._thread = threading.Thread(target=self._run, name="mqtier-prewrite", daemon=True)
        self._thread.start()

    @property
    def zeroed_to(self) -> int:
        """Global offset up to which the bytes ahead of the writer are written zeros."""
        with self._cond:
            return self._done

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the pre-writer (a failed sync), if one did."""
        with self._cond:
            return self._error

    def claim(self, start: int, end: int) -> None:
        """Called by the writer before it writes ``[start, end)``: no zeros will land there.

        Waits while a step overlapping the range is being written, and moves the window on.

        Raises:
            OSError: the pre-writer failed (an I/O error, a failed sync), naming the file. The
                writer must stop too: after a failed sync of a file, its cached pages (the
                writer's records among them) cannot be trusted. A full disk that refuses the
                zeros only stops the zeros.
        """
        with self._cond:
            if self._error is not None:
                raise self._error
            self._floor = max(self._floor, end)
            while self._busy is not None and self._busy[0] < end and start < self._busy[1]:
                self._cond.wait()
            want = end + self._window
            if want - max(self._done, end) >= self._step:
                self._want = want
                self._cond.notify_all()

    def stop(self) -> None:
        """Stop the thread (after its current step) and close its files."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._next_step() >= self._want:
                    self._cond.wait()
                if self._stopping:
                    return
                lo = self._next_step()
                base = lo - lo % self._file_bytes
                hi = min(lo + self._step, base + self._file_bytes)
                self._busy = (lo, hi)
            try:
                fd = self._fd_for(base)
                try:
                    zero_range(fd, lo - base, hi - base)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    # A full disk takes no more zeros: the writer goes on into the holes and
                    # meets the full disk itself, if it is still full then.
                    log.warning("pre-writing %s stopped: %s", self._path_for(base), exc.strerror)
                    with self._cond:
                        self._busy, self._stopping = None, True
                        self._cond.notify_all()
                    return
                os.fdatasync(fd)
            except BaseException as exc:  # noqa: BLE001 - the writer must hear of any failure
                path = self._path_for(base)
                err = naming(exc, path) if isinstance(exc, OSError) else exc
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                log.warning("pre-writing %s failed: %s", path, reason)
                with self._cond:
                    self._error, self._busy = err, None
                    self._cond.notify_all()
                return
            with self._cond:
                self._done, self._busy = hi, None
                self._cond.notify_all()

    def _skip_written(self) -> None:
        """Start past the blocks the file already holds after the start (the zeros an earlier
        open wrote): a store opened for each small job would otherwise write the window again
        every time."""
        start = self._done
        base = start - start % self._file_bytes
        try:
            fd = self._fd_for(base)
            hole = os.lseek(fd, start - base, os.SEEK_HOLE)
        except OSError:  # the file system cannot tell: write the zeros again
            return
        self._done = max(self._done, base + min(hole, self._file_bytes))

    def _next_step(self) -> int:
        done, floor = self._done, self._floor
        return done if done >= floor else floor + 2 * self._step  # (half the window at most)

    def _fd_for(self, base: int) -> int:
        fd = self._fds.get(base)
        if fd is None:
            for old in [b for b in self._fds if b < base]:
                os.close(self._fds.pop(old))  # the writer has moved past that file
            fd = self._fds[base] = open_sparse(self._path_for(base), self._file_bytes)
        return fd
