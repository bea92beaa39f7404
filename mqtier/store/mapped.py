"""Fixed-size files mapped into memory, for the consume queues and index files.

These files are derived data: after a crash they are checked and rebuilt from the commit log,
so they are written through ``mmap`` (cheap random writes) and only ``msync``ed at checkpoints.
The commit log itself never goes through ``mmap`` (msync is several times slower than
``pwrite`` + ``fdatasync`` on ext4).

A write through a map into a hole of a sparse file allocates the block at that moment; on a
full disk the kernel can only answer with SIGBUS, which kills the process with no message
and no rollback. So a writable map never writes where blocks are not reserved:
:meth:`MappedFile.reserve` allocates them first (``posix_fallocate``), where ENOSPC is an
ordinary ``OSError`` naming the file. Files stay sparse beyond what was reserved, so a queue
holding one message does not cost a whole file's worth of disk.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Final

from mqtier.store.fileio import create_sparse

# Blocks are reserved ahead of the writes in steps of this size: one posix_fallocate per MiB
# of consume-queue units or index items.
RESERVE_STEP_BYTES: Final = 1 << 20
# What a flush leaves mapped behind the write position of an append-only map (see
# MappedFile.drop_resident): the newest units and items, which readers touch most.
KEEP_RESIDENT_BYTES: Final = 1 << 20


class MappedFile:
    """One fixed-size file mapped read-only or read-write; the fd is closed once mapped."""

    __slots__ = ("base", "dirty", "dropped", "mm", "path", "reserved", "size", "writable")

    def __init__(
        self,
        path: Path,
        base: int,
        size: int,
        *,
        writable: bool,
        create: bool = False,
        reserve: int = 0,
    ) -> None:
        """``reserve``: bytes from the start to allocate now (a writable map's random-access
        part, such as an IndexFile's slot table); the rest is reserved as writes reach it."""
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
        self.reserved = 0
        self.dropped = 0  # pages below this were last unmapped from this process
        if writable and reserve:
            try:
                self.reserve(reserve)
            except OSError:
                self.mm.close()
                if create:
                    path.unlink(missing_ok=True)  # no empty file left behind by a full disk
                raise

    def reserve(self, end: int) -> None:
        """Make sure the blocks below file position ``end`` exist before a write reaches them.

        Raises:
            OSError: ENOSPC (or EDQUOT, EIO) naming the file; nothing was written.
        """
        if end <= self.reserved:
            return
        new = min(self.size, -(-end // RESERVE_STEP_BYTES) * RESERVE_STEP_BYTES)
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, self.reserved, new - self.reserved)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        finally:
            os.close(fd)
        self.reserved = new

    def data_end(self) -> int:
        """Where the file's first hole begins (its size if it has none): the bytes past it
        were never written. Reading a hole through a map can raise SIGBUS on a full tmpfs,
        which must allocate a page even to show zeros, so scans stop here."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return self.size
        try:
            return min(self.size, os.lseek(fd, 0, os.SEEK_HOLE))
        except OSError:  # no SEEK_HOLE here: the kernel treats the file as all data
            return self.size
        finally:
            os.close(fd)

    def flush(self) -> None:
        if self.dirty:
            self.mm.flush()
            self.dirty = False

    def drop_resident(self, start: int, end: int) -> None:
        """Unmap this process's pages wholly inside ``[start, end)``, past those dropped before.

        A bulk ingest writes consume-queue units and index items in order and does not read
        them back, yet every page it wrote would stay in its resident set, about 60 MiB per GB
        ingested. The map is shared, so the pages and what was written to them stay in the
        page cache (and on disk once flushed): a later read maps them again.
        """
        page = mmap.PAGESIZE
        lo = -(-max(start, self.dropped) // page) * page
        hi = (min(end, self.size) // page) * page
        if hi <= lo:
            return
        try:
            self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (AttributeError, OSError):  # not on this platform: the pages just stay
            return
        self.dropped = hi

    def close(self) -> None:
        self.mm.close()
