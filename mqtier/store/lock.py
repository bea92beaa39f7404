"""The store's single-writer lock: a POSIX record lock on byte 0 of ``lock``.

RocketMQ takes ``FileChannel.tryLock(0, 1)``, which is an ``fcntl`` record lock on Linux, so a
running broker and mqtier exclude each other. POSIX locks are per process, so a second open in
the same process is caught by an in-process registry instead.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from mqtier.errors import StoreLockedError
from mqtier.format import layout as L
from mqtier.store.fileio import naming

_held: set[str] = set()
_held_lock = threading.Lock()


class StoreLock:
    def __init__(self, root: Path) -> None:
        self.path = root / L.FILE_LOCK
        self._fd: int | None = None
        self._key = str(root.resolve())

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreLockedError`."""
        with _held_lock:
            if self._key in _held:
                raise StoreLockedError(f"{self.path.parent}: store is already open for writing")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            except OSError:
                os.close(fd)
                raise StoreLockedError(
                    f"{self.path.parent}: store is locked by another process (a running broker "
                    "or mqtier); commands that only read, such as offsets and read, still work"
                ) from None
            if os.fstat(fd).st_size != len(L.LOCK_CONTENT):
                try:
                    os.pwrite(fd, L.LOCK_CONTENT, 0)
                except OSError as exc:  # a full disk: the lock works without its content
                    os.close(fd)
                    raise naming(exc, self.path) from None
            self._fd = fd
            _held.add(self._key)

    def release(self) -> None:
        if self._fd is None:
            return
        with _held_lock:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)
            os.close(self._fd)
            self._fd = None
            _held.discard(self._key)


def is_locked_elsewhere(root: Path) -> bool:
    """True when another process holds the lock (tested without taking it)."""
    path = root / L.FILE_LOCK
    if not path.exists():
        return False
    with _held_lock:
        if str(root.resolve()) in _held:
            return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        # F_GETLK through lockf is not exposed; a shared lock attempt on a read-only fd tells
        # whether an exclusive lock is held, without ever holding anything ourselves for long.
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 0)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)
