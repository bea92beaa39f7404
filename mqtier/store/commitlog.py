"""The commit log: fixed-size files named by their first byte's global offset.

One writer thread appends (see ``groupcommit.py``): it places records with :meth:`CommitLog.place`
and :meth:`CommitLog.add`, then :meth:`CommitLog.flush_batch` issues one ``pwrite`` and one
``fdatasync`` per touched file. Readers use ``pread`` and never see bytes past ``durable_end``.
"""

from __future__ import annotations

import bisect
import logging
import mmap
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from mqtier.errors import ConfigError, CorruptRecordError, NotFoundError
from mqtier.format import layout as L
from mqtier.format.message import END_OF_DATA, END_OF_FILE, check_record
from mqtier.store.fileio import (
    fsync_dir,
    naming,
    remove_stale_tmp,
    zero_range,
)
from mqtier.store.prewrite import ZeroAhead, open_sparse

if TYPE_CHECKING:
    from mqtier.format.recordbatch import Fields

log = logging.getLogger(__name__)

_BLANK_HEAD = L.RECORD_SIZE_MAGIC


# What one pread takes at a record's start when its size is not known yet: most records
# are smaller, and a page of the page cache costs about what 4 bytes of it do.
READ_AHEAD_BYTES: Final = 1024


class RecordWindow(NamedTuple):
    """Consecutive records of one buffer (a file's map, or one record's bytes)."""

    origin: int  # the global offset of ``buf[0]``
    buf: mmap.mmap | bytes
    starts: list[int]  # each record's position in ``buf``
    sizes: list[int]
    fields: Fields | None  # with ``arrays``: every record's fields


@dataclass(slots=True)
class CommitLogFile:
    """One commit-log file, open for ``pread`` (and ``pwrite`` when writable)."""

    base: int
    path: Path
    fd: int

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True, slots=True)
class ScanStop:
    """Where and why a scan of the commit log stopped."""

    offset: int  # end of the last valid record (or BLANK-terminated file)
    reason: str  # "end" (zeros or no more files) or "corrupt"
    error: CorruptRecordError | None = None


# A scan asked to choose (``arrays=None``) goes as arrays once it has read this much.
ARRAYS_AFTER_BYTES: Final = 16 << 20


def list_offset_files(directory: Path) -> list[tuple[int, Path]]:
    """Files named by a 20-digit offset, in offset order."""
    if not directory.is_dir():
        return []
    return sorted(
        (int(p.name), p) for p in directory.iterdir() if len(p.name) == 20 and p.name.isdigit()
    )


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (not deleted, not replaced)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _data_limit(fd: int, pos: int, size: int) -> int:
    """Where the first hole at or past ``pos`` begins (``size`` if none, or unknown).

    Files are created sparse: past the end of data, where the pre-writer has not written its
    zeros, they hold holes. A hole holds no record, and reading one through a map faults
    (SIGBUS) on a full tmpfs, where even a read must allocate the page.
    """
    try:
        return min(size, os.lseek(fd, pos, os.SEEK_HOLE))
    except OSError:  # ENXIO: ``pos`` at the end; EINVAL: the file system cannot tell
        return size


def infer_file_bytes(directory: Path) -> int | None:
    """The size of the store's commit-log files, read off the first non-empty file."""
    for _, p in list_offset_files(directory):
        size = p.stat().st_size
        if size:
            return size
    return None


def _starts_with_zeros(path: Path) -> bool:
    """Whether no record starts at the beginning of ``path`` (a never-used spare)."""
    with path.open("rb") as fh:
        return fh.read(8) == bytes(8)


class CommitLog:
    """The store's commit log. Not thread-safe for writing: one writer thread appends."""

    def __init__(
        self, directory: Path, file_bytes: int, *, writable: bool, prewrite: bool = True
    ) -> None:
        self.directory = directory
        self.file_bytes = file_bytes
        self.writable = writable
        self.prewrite = prewrite
        self.files: list[CommitLogFile] = []
        self._bases: list[int] = []
        self.durable_end = 0  # every byte below is synced and readable
        self._write_pos = 0  # global offset where the next record goes
        self._chunks: list[tuple[CommitLogFile, int, list[bytes | memoryview]]] = []
        self._cur: CommitLogFile | None = None  # the file receiving appends
        self._zeros: ZeroAhead | None = None  # the pre-writer, started by the first write
        # Bytes of records :meth:`scan` has yielded: what an open costs, counted for tests and
        # benchmarks (a read-only open of a broker's store should scan only its tail).
        self.scanned_bytes = 0
        self._load()

    # ---- files ------------------------------------------------------------------------------

    def _load(self) -> None:
        if self.writable:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(self.directory)
        flags = os.O_RDWR if self.writable else os.O_RDONLY
        entries = list_offset_files(self.directory)
        for i, (base, path) in enumerate(entries):
            size = path.stat().st_size
            if size == 0 and i == len(entries) - 1:
                # RocketMQ leaves an empty last file when it rolled but never wrote; it holds
                # nothing, so a writer replaces it with a full-size file when it gets there.
                if self.writable:
                    path.unlink()
                continue
            if size != self.file_bytes:
                raise ConfigError(
                    f"{path}: {size} bytes, but commit-log files are {self.file_bytes} bytes"
                )
            if base % self.file_bytes:
                raise ConfigError(f"{path}: offset {base} is not a multiple of {self.file_bytes}")
            if self.files and base != self.files[-1].base + self.file_bytes:
                if i == len(entries) - 1 and _starts_with_zeros(path):
                    # An empty spare beyond a gap (left by an older rollback): it holds nothing
                    # and would be out of place once appends fill the gap.
                    if self.writable:
                        path.unlink()
                    continue
                raise ConfigError(
                    f"{path}: commit-log files are not contiguous (the previous file ends at "
                    f"{self.files[-1].base + self.file_bytes})"
                )
            self._add_file(CommitLogFile(base, path, os.open(path, flags)))

    def _add_file(self, f: CommitLogFile) -> None:
        self.files.append(f)
        self._bases.append(f.base)

    @property
    def min_offset(self) -> int:
        return self.files[0].base if self.files else 0

    def drop_head_files(self, below: int) -> list[Path]:
        """Delete the oldest files that lie wholly below offset ``below`` (never the last)."""
        dropped: list[Path] = []
        while len(self.files) > 1 and self.files[0].base + self.file_bytes <= below:
            f = self.files.pop(0)
            self._bases.pop(0)
            os.close(f.fd)
            f.path.unlink()
            dropped.append(f.path)
        return dropped

    def file_for(self, offset: int) -> CommitLogFile:
        i = bisect.bisect_right(self._bases, offset) - 1
        if i < 0 or offset >= self.files[i].base + self.file_bytes:
            raise NotFoundError(f"commit-log offset {offset} is not in the local store")
        return self.files[i]

    def refresh_files(self, end: int) -> bool:
        """Read-only: match the open files to the directory as a live writer changes it.

        Files the writer added are opened; head files a ``clean`` deleted are closed (an open
        descriptor would keep their space from being freed); files at or past ``end``, which
        hold nothing a read of this view returns, are opened again if they were replaced.
        Returns False when a file holding records below ``end`` was replaced: what the view
        shows may be gone, so the store must be opened anew.
        """
        assert not self.writable
        on_disk = dict(list_offset_files(self.directory))
        kept: list[CommitLogFile] = []
        for f in self.files:
            path = on_disk.get(f.base)
            same = path is not None and _same_file(f.fd, path)
            if f.base < end and not same:
                if path is None and not kept:
                    f.close()  # a head file cleaned away: the view starts later now
                    continue
                return False
            if not same:
                f.close()  # past the view's end and replaced or gone: reopened below if there
                continue
            kept.append(f)
        for base, path in sorted(on_disk.items()):
            if kept and base <= kept[-1].base:
                continue
            if kept and base != kept[-1].base + self.file_bytes:
                break  # not the next file (yet): keep what is contiguous
            try:
                if path.stat().st_size != self.file_bytes:
                    break  # an empty last file: the writer has not rolled into it yet
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                break  # removed since the listing
            kept.append(CommitLogFile(base, path, fd))
        self.files = kept
        self._bases = [f.base for f in kept]
        return True

    def _stop_prewrite(self) -> None:
        """Stop the background pre-writer and wait for it; the next write starts it again."""
        if self._zeros is not None:
            self._zeros.stop()
            self._zeros = None

    def close(self) -> None:
        self._stop_prewrite()  # the next open pre-writes again
        for f in self.files:
            f.close()
        self.files.clear()
        self._bases.clear()

    # ---- reading ----------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at global ``offset``, which must lie below ``durable_end``."""
        if offset < self.min_offset or offset + size > self.durable_end:
            raise NotFoundError(
                f"commit-log range [{offset}, {offset + size}) is outside the local store "
                f"[{self.min_offset}, {self.durable_end})"
            )
        f = self.file_for(offset)
        return os.pread(f.fd, size, offset - f.base)

    def read_ahead(self, offset: int) -> bytes:
        """Up to READ_AHEAD_BYTES from ``offset`` (never past ``durable_end`` or its file): one
        pread that holds most records whole, for a decode that finds the record's end itself.
        The caller checks ``min_offset <= offset`` and ``offset + 8 <= durable_end``."""
        # file_for without its checks: the files are contiguous from min_offset to past end
        f = self.files[bisect.bisect_right(self._bases, offset) - 1]
        pos = offset - f.base
        return os.pread(
            f.fd, min(READ_AHEAD_BYTES, self.durable_end - offset, self.file_bytes - pos), pos
        )

    def read_record(self, offset: int) -> bytes:
        """The bytes of the record starting at ``offset``, as long as its TOTALSIZE says.

        One pread for a record of up to READ_AHEAD_BYTES (most are), instead of one for the
        size and one for the rest.

        Raises:
            NotFoundError: ``offset`` is outside the local store.
            CorruptRecordError: no record of a plausible size starts there.
        """
        end = self.durable_end
        if offset < self.min_offset or offset + 8 > end:
            raise NotFoundError(f"commit-log offset {offset} is outside [{self.min_offset}, {end})")
        buf = self.read_ahead(offset)
        size = L.INT32.unpack_from(buf)[0] if len(buf) >= 8 else 0  # the file's last bytes
        if size <= 0 or offset + size > end:
            path = self.file_for(offset).path  # named only on failure
            raise CorruptRecordError(path, offset, f"no record starts here (size {size})")
        if size <= len(buf):
            return buf if size == len(buf) else buf[:size]
        f = self.file_for(offset)
        return buf + os.pread(f.fd, size - len(buf), offset - f.base + len(buf))

    def map_file(self, f: CommitLogFile) -> mmap.mmap:
        """A read-only map of a whole file, for scans."""
        return mmap.mmap(f.fd, self.file_bytes, access=mmap.ACCESS_READ)

    def copier(self) -> RecordCopier:
        """A reader of many records that copies them out of maps of the files (no system
        call per record), up to what is durable now; close it to unmap them."""
        return RecordCopier(self, self.durable_end)

    def scan(
        self, start: int, *, verify_crc: bool = True, end: int | None = None
    ) -> Generator[tuple[int, int, mmap.mmap | bytes, int], None, None]:
        """Yield ``(global offset, size, buffer, position in it)`` for each record from
        ``start``: the buffer is the file's map, or the record's bytes where it reaches into a
        hole of a sparse file (reading a hole through a map faults on a full tmpfs).

        ``start`` must be a record boundary (a file start or the end of a record). The scan ends
        silently at the end of data; a corrupt record raises :class:`CorruptRecordError`, whose
        ``offset`` is global.
        """
        for w in self.scan_windows(start, verify_crc=verify_crc, end=end, arrays=False):
            yield w.origin + w.starts[0], w.sizes[0], w.buf, w.starts[0]

    def scan_windows(
        self,
        start: int,
        *,
        verify_crc: bool = True,
        end: int | None = None,
        arrays: bool | None = True,
    ) -> Generator[RecordWindow, None, None]:
        """:meth:`scan`, up to 4096 consecutive records at a time, with their fields and checks
        computed as arrays (:mod:`mqtier.format.recordbatch`, numpy). A record the array checks
        doubt is checked on its own, as ``arrays=False`` checks every record (one per window,
        no fields), so the records yielded and the error raised are the same either way.
        ``arrays=None``: record by record, then as arrays once the scan has read
        ARRAYS_AFTER_BYTES (worth numpy's import for a long scan, not for a short one)."""
        if not self.files:
            return
        switch_at = self.scanned_bytes + ARRAYS_AFTER_BYTES if arrays is None else None
        if arrays:
            from mqtier.format import recordbatch as rb
        most = 16  # doubling: a caller that wants only the first records reads few more
        rest: tuple[list[int], list[int], Fields] | None = None
        start = max(start, self.min_offset)
        i = max(0, bisect.bisect_right(self._bases, start) - 1)
        pos = start - self.files[i].base
        fb = self.file_bytes
        for f in self.files[i:]:
            mm = self.map_file(f)
            rest = None
            try:
                hole = _data_limit(f.fd, pos, fb)
                stop = fb if end is None else end - f.base
                while True:
                    if pos >= stop:
                        return
                    if pos >= hole:
                        hole = _data_limit(f.fd, pos, fb)
                        if hole <= pos:
                            return  # a hole reads as zeros, where no record starts
                    if switch_at is not None and self.scanned_bytes >= switch_at:
                        from mqtier.format import recordbatch as rb

                        arrays, switch_at = True, None
                    if arrays:
                        fields: Fields | None
                        if rest is not None and rest[0][0] == pos:
                            starts, sizes, fields = rest  # after a record checked on its own
                        else:
                            starts, sizes, heads = rb.follow_sizes(mm, pos, hole, stop, most)
                            fields = rb.fields(mm, starts, sizes, heads) if starts else None
                        rest = None
                        if fields is not None:
                            n = rb.first_doubtful(mm, fields, verify_crc=verify_crc)
                            if n < len(starts) - 1:  # the records after the doubted one
                                rest = (starts[n + 1 :], sizes[n + 1 :], fields.tail(n + 1))
                            whole = n == len(starts)
                            if n:
                                if not whole:
                                    starts, sizes, fields = starts[:n], sizes[:n], fields.head(n)
                                nbytes = sum(sizes)
                                self.scanned_bytes += nbytes
                                yield RecordWindow(f.base, mm, starts, sizes, fields)
                                pos += nbytes
                                most = min(2 * most, 4096)
                                if whole:
                                    continue
                                # (else the doubted record is next: checked on its own below)
                    buf, at, size = self._check_one(f, mm, pos, hole, verify_crc)
                    if size == END_OF_FILE:
                        break
                    if size == END_OF_DATA:
                        return
                    self.scanned_bytes += size
                    one = rb.fields_of_one(buf, at, size) if arrays else None
                    yield RecordWindow(f.base + pos - at, buf, [at], [size], one)
                    pos += size
            finally:
                mm.close()
            pos = 0

    def _check_one(
        self, f: CommitLogFile, mm: mmap.mmap, pos: int, hole: int, verify_crc: bool
    ) -> tuple[mmap.mmap | bytes, int, int]:
        """check_record on the record at ``pos`` of ``f``: (buffer, position, size or
        END_OF_FILE / END_OF_DATA); the buffer is the record's bytes where it reaches into a
        hole (a sparse copy, cp --sparse or rsync -S, makes one of any zero block)."""
        fb = self.file_bytes
        buf: mmap.mmap | bytes = mm
        at = pos
        if pos + 8 > hole:  # even the size is not all in data: read it plainly
            head = os.pread(f.fd, 8, pos)
            want = L.INT32.unpack_from(head)[0] if len(head) == 8 else 0
        else:
            want = L.INT32.unpack_from(mm, pos)[0]
        if pos + max(want, 8) > hole:
            buf, at = os.pread(f.fd, min(max(want, 8), fb - pos), pos), 0
        try:
            size = check_record(buf, at, len(buf) if buf is not mm else fb,
                                verify_crc=verify_crc, path=str(f.path))  # fmt: skip
        except CorruptRecordError as exc:
            raise CorruptRecordError(f.path, f.base + pos + exc.offset - at, exc.detail) from None
        return buf, at, size

    def find_end(
        self,
        start: int,
        *,
        verify_crc: bool = True,
        arrays: bool | None = False,
        each: Callable[[RecordWindow], None] | None = None,
    ) -> ScanStop:
        """Scan from ``start`` and report where valid data ends, without changing anything
        (``arrays``: see :meth:`scan_windows`; worth its numpy import for long scans).
        ``each`` is given every window of records that passed, in order, as the scan goes (what
        it raises is its own: never taken for where valid data ends)."""
        last = max(start, self.min_offset)
        windows = self.scan_windows(start, verify_crc=verify_crc, arrays=arrays)
        try:
            while True:
                try:
                    w = next(windows, None)
                except CorruptRecordError as exc:
                    return ScanStop(exc.offset, "corrupt", exc)
                if w is None:
                    break
                if each is not None:
                    each(w)
                last = w.origin + w.starts[-1] + w.sizes[-1]
        finally:
            windows.close()
        # A file that ends with BLANK is fully used: the end is the next file's start.
        if self.files:
            f = self.file_for(last) if last < self.files[-1].base + self.file_bytes else None
            if f is not None and last > f.base and self._ends_with_blank_at(f, last - f.base):
                last = f.base + self.file_bytes
        return ScanStop(last, "end")

    def _ends_with_blank_at(self, f: CommitLogFile, pos: int) -> bool:
        if self.file_bytes - pos < 8:
            return self.file_bytes - pos == 0
        size, magic = _BLANK_HEAD.unpack(os.pread(f.fd, 8, pos))
        return bool(magic == L.BLANK_MAGIC and size == self.file_bytes - pos)

    def set_end(self, end: int) -> None:
        """Declare ``end`` the end of valid data (after recovery or a read-only scan)."""
        self.durable_end = end
        self._write_pos = end

    def truncate(self, end: int, *, dirty_bytes: int) -> list[Path]:
        """Drop everything at or past ``end``: zero the torn tail, delete later files.

        Only ``dirty_bytes`` past ``end`` are zeroed: nothing beyond one unsynced group commit
        can have been written there, and the rest of a pre-written file is zeros already.
        Returns the files deleted.
        """
        self._cur = None
        self._stop_prewrite()  # it may be writing a file past the end
        removed: list[Path] = []
        while self.files and self.files[-1].base >= end and self.files[-1].base > 0:
            # Later files hold nothing valid (a pre-written spare is recreated when needed).
            f = self.files.pop()
            self._bases.pop()
            f.close()
            f.path.unlink()
            removed.append(f.path)
        # A spare pre-written after the old last file is on disk but not in ``files``; left
        # there it would sit beyond a gap once ``end`` lies in an earlier file.
        for base, path in list_offset_files(self.directory):
            if base >= end and base > 0 and path not in removed:
                path.unlink()
                removed.append(path)
        if self.files and end < self.files[-1].base + self.file_bytes:
            f = self.files[-1]
            pos = end - f.base
            try:
                zero_range(f.fd, pos, min(self.file_bytes, pos + dirty_bytes))
            except OSError:
                # A full disk cannot take even the zeros. Cutting the file and growing it
                # back gives the same zeros as a hole, which needs no space (later syncs of
                # that file are slower until it is replaced, a fair price for a rollback).
                os.ftruncate(f.fd, pos)
                os.ftruncate(f.fd, self.file_bytes)
            os.fdatasync(f.fd)
        if removed:
            fsync_dir(self.directory)
        self.set_end(end)
        return removed

    # ---- appending (writer thread only) -----------------------------------------------------

    @property
    def write_pos(self) -> int:
        return self._write_pos

    def place(self, size: int) -> int:
        """Reserve room for a record of ``size`` bytes and return its global offset.

        Rolls to a new file when the record plus the 8-byte BLANK minimum does not fit, writing
        the BLANK filler into the current batch first (a record never spans two files).
        """
        pos = self._write_pos
        f = self._current_file(pos)
        in_file = pos - f.base
        left = self.file_bytes - in_file
        if size + L.BLANK_MIN_BYTES > left:
            self._chunk_for(f, in_file).append(_BLANK_HEAD.pack(left, L.BLANK_MAGIC))
            pos = f.base + self.file_bytes
            self._write_pos = pos
            f = self._current_file(pos)
        return pos

    def add(self, record: bytes) -> None:
        """Queue ``record`` at the position :meth:`place` returned."""
        pos = self._write_pos
        f = self._current_file(pos)
        self._chunk_for(f, pos - f.base).append(record)
        self._write_pos = pos + len(record)

    def add_framed(self, data: bytearray | memoryview, sizes: list[int]) -> list[int]:
        """Queue records framed back to back in ``data`` (``sizes`` in order) at the write
        position, rolling to a new file as :meth:`place` does; return their offsets."""
        phys: list[int] = []
        view = memoryview(data)
        at = 0  # bytes of data queued
        i, n = 0, len(sizes)
        while i < n:
            pos = self._write_pos
            f = self._current_file(pos)
            in_file = pos - f.base
            room = self.file_bytes - in_file - L.BLANK_MIN_BYTES  # a record ends within this
            first, length = i, 0
            while i < n and length + sizes[i] <= room:
                phys.append(pos + length)
                length += sizes[i]
                i += 1
            if length:
                self._chunk_for(f, in_file).append(view[at : at + length])
                at += length
                self._write_pos = pos + length
            if i < n:  # the next record does not fit: the rest of this file is a BLANK
                if i == first and in_file == 0:
                    raise ValueError(f"a {sizes[i]}-byte record is larger than a file")
                in_file = self._write_pos - f.base
                left = self.file_bytes - in_file
                self._chunk_for(f, in_file).append(_BLANK_HEAD.pack(left, L.BLANK_MAGIC))
                self._write_pos = f.base + self.file_bytes
        return phys

    def _chunk_for(self, f: CommitLogFile, in_file: int) -> list[bytes | memoryview]:
        if self._chunks and self._chunks[-1][0] is f:
            return self._chunks[-1][2]
        parts: list[bytes | memoryview] = []
        self._chunks.append((f, in_file, parts))
        return parts

    def flush_batch(self) -> int:
        """Write and sync the queued records; return the new durable end.

        On an I/O error the queued records are dropped and the error propagates: the caller must
        stop appending (after a failed fsync the page cache cannot be trusted).
        """
        chunks, self._chunks = self._chunks, []
        f: CommitLogFile | None = None
        try:
            if self.prewrite and chunks:
                self._pre_writer().claim(self.durable_end, self._write_pos)
            for f, in_file, parts in chunks:
                data = b"".join(parts)
                written = os.pwrite(f.fd, data, in_file)
                if written != len(data):
                    raise OSError(f"short write to {f.path}: {written} of {len(data)} bytes")
                os.fdatasync(f.fd)
        except OSError as exc:
            self._write_pos = self.durable_end
            raise naming(exc, f.path if f is not None else self.directory) from None
        except BaseException:
            self._write_pos = self.durable_end
            raise
        self.durable_end = self._write_pos
        return self.durable_end

    def _current_file(self, pos: int) -> CommitLogFile:
        """The file that holds global offset ``pos``, created if it does not exist yet."""
        cur = self._cur
        if cur is not None and cur.base <= pos < cur.base + self.file_bytes:
            return cur
        i = bisect.bisect_right(self._bases, pos) - 1
        if i >= 0 and pos < self.files[i].base + self.file_bytes:
            f = self.files[i]
        else:
            base = (pos // self.file_bytes) * self.file_bytes
            path = self.directory / L.offset_file_name(base)
            # Sparse, at its full size: the pre-writer fills the zeros ahead of the appends (a
            # whole file written first would hold up the first append for seconds).
            f = CommitLogFile(base, path, open_sparse(path, self.file_bytes))
            self._add_file(f)
        self._cur = f
        return f

    def _pre_writer(self) -> ZeroAhead:
        z = self._zeros
        if z is None:
            z = self._zeros = ZeroAhead(
                lambda base: self.directory / L.offset_file_name(base),
                self.file_bytes,
                self.durable_end,
            )
        return z

    def ensure_writable_file(self) -> None:
        """Open (or create) the file that receives the next append, and start the zeros ahead."""
        self._current_file(self._write_pos)
        if self.prewrite:
            self._pre_writer().claim(self._write_pos, self._write_pos)


class RecordCopier:
    """See :meth:`CommitLog.copier`."""

    def __init__(self, log: CommitLog, end: int) -> None:
        self._log = log
        self.end = end  # what it may read: durable when it was made
        self._maps: dict[int, mmap.mmap] = {}

    def read(self, phy: int, size: int) -> bytes:
        """The ``size`` bytes at commit-log offset ``phy``, which must end by :attr:`end`."""
        f = self._log.file_for(phy)
        if phy + size > self.end:
            raise NotFoundError(f"commit-log offset {phy} is past the durable end {self.end}")
        mm = self._maps.get(f.base)
        if mm is None:
            mm = self._maps[f.base] = self._log.map_file(f)
        return mm[phy - f.base : phy - f.base + size]

    def close(self) -> None:
        for mm in self._maps.values():
            mm.close()
        self._maps.clear()
