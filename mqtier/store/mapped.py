"""Fixed-size files mapped into memory, for the consume queues and index files.

These files are derived data: after a crash they are checked and rebuilt from the commit log,
so they are written through ``mmap`` (cheap random writes) and only ``msync``ed at checkpoints.
The commit log itself never goes through ``mmap`` (msync is several times slower than
``pwrite`` + ``fdatasync`` on ext4).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from mqtier.store.fileio import create_sparse


class MappedFile:
    """One fixed-size file mapped read-only or read-write; the fd is closed once mapped."""

    __slots__ = ("base", "dirty", "mm", "path", "size", "writable")

    def __init__(
        self, path: Path, base: int, size: int, *, writable: bool, create: bool = False
    ) -> None:
        if create:
            create_sparse(path, size)
        self.path = path
        self.base = base
        self.size = size
        self.writable = writable
        self.dirty = False
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            actual = os.fstat(fd).st_size
            if actual < size:
                if not writable:
                    raise OSError(f"{path}: {actual} bytes, expected {size}")
                os.ftruncate(fd, size)
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            self.mm = mmap.mmap(fd, size, access=access) if size else mmap.mmap(-1, 1)
        finally:
            os.close(fd)

    def flush(self) -> None:
        if self.dirty:
            self.mm.flush()
            self.dirty = False

    def close(self) -> None:
        self.mm.close()
