"""Consume queues: per (topic, queue), 20-byte units mapping queue offset to a commit-log record.

Path: ``consumequeue/{topic}/{queue}/{20-digit byte offset}``; unit *n* sits at byte ``n*20``.
A queue that starts above offset 0 begins with pre-blank units. Tags codes may be
ConsumeQueueExt addresses in stores written with ``enableConsumeQueueExt``; those are resolved
through :class:`ConsumeQueueExt`.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from pathlib import Path

from mqtier.errors import CorruptRecordError
from mqtier.format import layout as L
from mqtier.store.commitlog import list_offset_files
from mqtier.store.mapped import KEEP_RESIDENT_BYTES, MappedFile

log = logging.getLogger(__name__)

_UNIT = L.CQ_UNIT
_UB = L.CQ_UNIT_BYTES
_PRE_BLANK = _UNIT.pack(*L.PRE_BLANK_UNIT)
_ZERO_UNIT = bytes(_UB)  # a unit never written
# Most zero units a torn copy of a run of units can leave before units it did store: the first
# vector of a copy (at most 64 bytes with AVX-512) spans at most 4 units; twice that, to spare.
_HOLE_UNITS = 8


# (queue offset, commit-log offset, size) -> whether the commit log holds that unit's record
UnitCheck = Callable[[int, int, int], bool]


def is_ext_address(tags_code: int) -> bool:
    return tags_code <= L.EXT_ADDR_MAX


class ConsumeQueue:
    """One (topic, queue). Written by the reput thread only; read by anyone."""

    def __init__(
        self, directory: Path, topic: str, queue_id: int, units_per_file: int, *, writable: bool
    ) -> None:
        self.directory = directory
        self.topic = topic
        self.queue_id = queue_id
        self.file_bytes = units_per_file * _UB
        self.writable = writable
        self.files: list[MappedFile] = []
        self.max_offset = 0  # next queue offset to write (= count of units incl. pre-blank)
        self.first_offset = 0  # first unit that is not pre-blank
        # Read-only opens: units of records durable past the files, known only in memory
        # (the owner's reput has not written them yet, or a crashed broker never did).
        self._memory: list[tuple[int, int, int]] = []
        self._memory_from = 0
        # Read-only: the first unit on disk found to disagree with the commit log (torn by a
        # crash); from there on the view shows units from memory only.
        self._torn_from: int | None = None
        self._phy_limit: int | None = None  # read-only: units past this are not shown
        self._matches: UnitCheck | None = None  # (and the check hide_past_phy was given)
        self._load()

    def _load(self) -> None:
        for base, path in list_offset_files(self.directory):
            size = path.stat().st_size
            if size == 0:
                continue
            if size != self.file_bytes:
                if not self.files:  # a foreign store: adopt its file size
                    self.file_bytes = size
                else:
                    log.warning("%s: %d bytes, expected %d; ignored", path, size, self.file_bytes)
                    continue
            self.files.append(MappedFile(path, base, self.file_bytes, writable=self.writable))
        if not self.files:
            return
        # The written units end at the first all-zero unit; a torn last unit is dropped.
        self.max_offset = self._scan_end()
        self.first_offset = self._skip_pre_blank()

    def _scan_end(self) -> int:
        end = self._written_end()
        return end if self._torn_from is None else min(end, self._torn_from)

    def _written_end(self) -> int:
        for f in reversed(self.files):
            mm = f.mm
            # Units are written front to back: none lies past the file's first hole.
            n = f.data_end() // _UB
            if n == 0:
                continue
            # Binary search works because units are written front to back (but for the holes
            # a torn copy leaves, see below). It looks for never-written (all-zero) units, not
            # invalid ones: a damaged unit inside the queue that the search happened to probe
            # would otherwise end the queue there, hiding the units after it and letting the
            # next append overwrite them.
            lo = self._first_zero_unit(mm, 0, n)
            while True:
                # A kill can stop the reput while it copies a run of units, with the run's
                # first bytes not yet stored (a copy may store its first vector last): a few
                # zero units with written ones after them are a hole, not the queue's end.
                after = mm[(lo + 1) * _UB : min(n, lo + 1 + _HOLE_UNITS) * _UB]
                written = len(after.rstrip(b"\0"))
                if lo >= n or not written:
                    break
                lo = self._first_zero_unit(mm, lo + 1 + (written - 1) // _UB + 1, n)
            while lo > 0:  # a unit torn by a crash ends the queue before it
                phy, size, _ = _UNIT.unpack_from(mm, (lo - 1) * _UB)
                if phy >= 0 and size > 0:
                    break
                lo -= 1
            if lo > 0:
                return (f.base + lo * _UB) // _UB
        return self.files[0].base // _UB

    def _skip_pre_blank(self) -> int:
        off = self.files[0].base // _UB
        while off < self.max_offset:
            phy, size, tag = self.unit(off)
            if (phy, size, tag) != L.PRE_BLANK_UNIT:
                break
            off += 1
        return off

    @property
    def min_offset(self) -> int:
        return self.first_offset

    def _file_for(self, byte_pos: int, *, create: bool) -> MappedFile | None:
        if self.files:
            first = self.files[0].base
            i = (byte_pos - first) // self.file_bytes
            if 0 <= i < len(self.files):
                return self.files[i]
        if not create:
            return None
        base = (byte_pos // self.file_bytes) * self.file_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:  # create files in order so the list stays contiguous
            nxt = self.files[-1].base + self.file_bytes if self.files else base
            path = self.directory / L.offset_file_name(nxt)
            mf = MappedFile(path, nxt, self.file_bytes, writable=True, create=True)
            self.files.append(mf)
            if nxt >= base:
                return mf

    def reload_end(self) -> None:
        """Read-only: see the units (and files) the owner wrote since this queue was loaded."""
        assert not self.writable
        if self._memory:
            return
        known = self.files[-1].base if self.files else -1
        for base, path in list_offset_files(self.directory):
            if base <= known or path.stat().st_size != self.file_bytes:
                continue
            if self.files and base != self.files[-1].base + self.file_bytes:
                break  # not the next file: keep what is contiguous
            self.files.append(MappedFile(path, base, self.file_bytes, writable=False))
        if self.files:
            self.max_offset = self._scan_end()
            if not self.first_offset:
                self.first_offset = self._skip_pre_blank()
            if self._phy_limit is not None:
                self.hide_past_phy(self._phy_limit, self._matches)

    def refresh_view(self, phy_end: int, *, new: bool = False) -> None:
        """Read-only: see the units the owner wrote since the last look, those of records that
        end by commit-log ``phy_end`` (``new``: a queue just loaded, none of it seen yet).
        Units kept in memory are dropped once the files hold them, so a view refreshed for
        days (``read --follow``) stays small."""
        assert not self.writable
        shown = self.first_offset if new else self.max_offset
        memory, memory_from = self._memory, self._memory_from
        torn = self._torn_from
        if (
            torn is not None
            and memory_from <= torn < memory_from + len(memory)
            and self._unit_on_disk(torn) == memory[torn - memory_from]
        ):
            # A live owner may only have been copying that unit: now that its file agrees
            # with the log, the files serve the view again.
            self._torn_from = None
        self._memory, self._phy_limit = [], None
        on_disk = self._scan_end() if self.files else None
        if on_disk is not None and on_disk < (self.files[-1].base + self.file_bytes) // _UB:
            self.max_offset = on_disk  # the last file has room: no new file to look for
        else:
            self.reload_end()  # lists the directory: cheap per queue, not for every queue
        if memory and (not self.files or self.max_offset < shown):  # not all on disk yet
            self._memory, self._memory_from, self.max_offset = memory, memory_from, shown
        # Units are in commit-log order: the first new one past phy_end, by binary search
        # over the new units only (a damaged unit among those shown stays for reads to name).
        lo, hi = min(shown, self.max_offset), self.max_offset
        while lo < hi:
            mid = (lo + hi) // 2
            phy, size, _ = self.unit(mid)
            if phy >= 0 and size > 0 and phy + size <= phy_end:
                lo = mid + 1
            else:
                hi = mid
        self.max_offset = lo
        self._phy_limit = phy_end

    def hide_torn(self, offset: int) -> None:
        """Read-only: the unit at queue ``offset`` disagrees with the record the commit log
        holds for it (a crash tore it): show no unit from disk at or past it; the read-only
        tail adds the log's own from memory instead."""
        assert not self.writable
        if self._memory:
            return  # units in memory come from the log itself, and the records come in order
        self._torn_from = offset if self._torn_from is None else min(self._torn_from, offset)
        self.max_offset = min(self.max_offset, offset)

    def add_in_memory(self, offset: int, phy: int, size: int, tags_code: int) -> bool:
        """Extend a read-only queue in memory by the unit of queue ``offset``.

        Returns False (and adds nothing) unless ``offset`` continues the queue: a unit already
        on disk, or one past a gap, is not added.
        """
        assert not self.writable
        if offset != self.max_offset:
            if self.max_offset or self.files or self._memory:
                return False
            self.first_offset = self.max_offset = offset  # a queue that starts above 0
        if not self._memory:
            self._memory_from = offset
        self._memory.append((phy, size, tags_code))
        self.max_offset = offset + 1
        return True

    def unit(self, offset: int) -> tuple[int, int, int]:
        """(commit-log offset, size, tags code) of queue ``offset``; caller checks bounds."""
        if self._memory and offset >= self._memory_from:
            i = offset - self._memory_from
            return self._memory[i] if i < len(self._memory) else (-1, 0, 0)
        on_disk = self._unit_on_disk(offset)
        return (-1, 0, 0) if on_disk is None else on_disk

    def _unit_on_disk(self, offset: int) -> tuple[int, int, int] | None:
        pos = offset * _UB
        f = self._file_for(pos, create=False)
        if f is None:
            return None
        result: tuple[int, int, int] = _UNIT.unpack_from(f.mm, pos - f.base)
        return result

    def unit_if_held(self, offset: int) -> tuple[int, int, int] | None:
        """:meth:`unit` of queue ``offset`` where the queue holds it, else None (one call for
        a read's check of the unit that claims a record)."""
        if offset < self.first_offset or offset >= self.max_offset:
            return None
        return self.unit(offset)

    def damaged_unit(self, offset: int, detail: str) -> CorruptRecordError:
        """The error for the unit at queue ``offset`` that fails a check: names its file."""
        pos = offset * _UB
        f = self._file_for(pos, create=False)
        path = f.path if f is not None else self.directory
        where = pos - f.base if f is not None else pos
        return CorruptRecordError(
            path,
            where,
            f"consume queue {self.topic}/{self.queue_id} unit {offset} {detail}; "
            "'mqtier recover --rebuild' derives the consume queues again from the commit log",
        )

    def units(self, offset: int, count: int) -> list[tuple[int, int, int]]:
        """Up to ``count`` units from ``offset`` (fewer at the end of the queue)."""
        out: list[tuple[int, int, int]] = []
        end = min(self.max_offset, offset + count)
        off = max(offset, self.min_offset)
        disk_end = min(end, self._memory_from) if self._memory else end
        while off < end:
            if off >= disk_end:
                i = off - self._memory_from
                out.extend(self._memory[i : i + end - off])
                break
            pos = off * _UB
            f = self._file_for(pos, create=False)
            if f is None:
                break
            in_file = pos - f.base
            n = min(disk_end - off, (self.file_bytes - in_file) // _UB)
            out.extend(_UNIT.iter_unpack(f.mm[in_file : in_file + n * _UB]))
            off += n
        return out

    def put(self, offset: int, phy: int, size: int, tags_code: int) -> None:
        """Record queue ``offset``; re-putting an identical unit is a no-op (redispatch)."""
        if offset < self.max_offset:
            if offset >= self.first_offset and self.unit(offset) == (phy, size, tags_code):
                return
            if offset >= self.first_offset and self.unit(offset)[:2] == (phy, size):
                return  # same record, other tags code (an ext address written by RocketMQ)
            log.warning(
                "%s/%d: unit %d disagrees with the commit log; rewriting from there",
                self.topic,
                self.queue_id,
                offset,
            )
            self.truncate_to(offset)
        if offset > self.max_offset:
            if self.max_offset == 0 and not self.files:
                # A queue whose head is gone (``clean``, or a rebuild after it): the first
                # file starts at the file boundary below ``offset``, pre-blank up to it,
                # as RocketMQ does, not at offset 0 with gigabytes of blanks.
                self.first_offset = offset
                self.max_offset = (offset * _UB // self.file_bytes) * self.file_bytes // _UB
            self._fill_pre_blank(self.max_offset, offset)
        pos = offset * _UB
        f = self._file_for(pos, create=True)
        assert f is not None
        at = pos - f.base
        if at + _UB > f.reserved:  # once per MiB of units: the call is kept off the common path
            f.reserve(at + _UB)
        f.mm[at : at + _UB] = _UNIT.pack(phy, size, tags_code)
        f.dirty = True
        self.max_offset = offset + 1

    def put_run(self, units: list[tuple[int, int, int, int]]) -> None:
        """Record (queue offset, commit-log offset, size, tags code) units in order.

        The common case (consecutive offsets continuing the queue) is packed and copied into
        the map in one slice per file; anything else goes unit by unit through :meth:`put`.
        """
        first = units[0][0]
        contiguous = first == self.max_offset and units[-1][0] - first == len(units) - 1
        if not contiguous or (first > 0 and not self.files):  # the latter needs pre-blank units
            for offset, phy, size, tags_code in units:
                self.put(offset, phy, size, tags_code)
            return
        _, phys, sizes, tags = zip(*units, strict=True)
        self.put_packed(first, b"".join(map(_UNIT.pack, phys, sizes, tags)))

    def put_packed(self, first: int, data: bytes) -> None:
        """Record packed 20-byte units (commit-log offset, size, tags code) from queue offset
        ``first`` on: copied in one slice per file when they continue the queue, else (a
        queue behind or ahead of them, or one starting past 0) unit by unit, as :meth:`put`."""
        if first != self.max_offset or (first > 0 and not self.files):
            for i, (phy, size, tags_code) in enumerate(_UNIT.iter_unpack(data)):
                self.put(first + i, phy, size, tags_code)
            return
        pos = first * _UB
        done = 0
        while done < len(data):
            f = self._file_for(pos + done, create=True)
            assert f is not None
            at = pos + done - f.base
            n = min(len(data) - done, self.file_bytes - at)
            f.reserve(at + n)
            f.mm[at : at + n] = data[done : done + n]
            f.dirty = True
            done += n
        self.max_offset = first + len(data) // _UB

    def _fill_pre_blank(self, start: int, end: int) -> None:
        for off in range(start, end):
            pos = off * _UB
            f = self._file_for(pos, create=True)
            assert f is not None
            f.reserve(pos - f.base + _UB)
            f.mm[pos - f.base : pos - f.base + _UB] = _PRE_BLANK
            f.dirty = True

    def truncate_to(self, offset: int) -> None:
        """Drop units at and past queue ``offset`` (zero them; delete files past it)."""
        offset = max(offset, self.files[0].base // _UB if self.files else 0)
        while self.files and self.files[-1].base > offset * _UB:
            f = self.files.pop()
            f.close()
            f.path.unlink()
        if self.files and offset < self.max_offset:
            f = self.files[-1]
            start = offset * _UB - f.base
            end = min(self.file_bytes, self.max_offset * _UB - f.base)
            if end > start:
                f.reserve(end)  # a foreign (RocketMQ) file may be sparse below its end too
                f.mm[start:end] = bytes(end - start)
                f.dirty = True
        self.max_offset = offset
        self.first_offset = min(self.first_offset, offset)

    @staticmethod
    def _first_zero_unit(mm: mmap.mmap, lo: int, hi: int) -> int:
        """The first never-written (all-zero) unit in ``[lo, hi)`` (``hi`` if none), by binary
        search: units are written front to back, so the written ones come first."""
        while lo < hi:
            mid = (lo + hi) // 2
            if mm[mid * _UB : (mid + 1) * _UB] == _ZERO_UNIT:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def end_within(self, phy_end: int, matches: UnitCheck | None = None) -> int:
        """The queue offset after the last unit whose record ends by commit-log ``phy_end``
        (units past it belong to a torn tail or a rolled-back run).

        Such a unit must also lie past the record of the unit before it (a queue's records are
        in commit-log order), or else (none before it, or out of order) ``matches(offset, phy,
        size)`` must let it stay (recovery's check: it does not point at another record):
        a kill can stop the reput half-way through copying a run of units, leaving the first
        unit torn (seen: its size written, its commit-log offset still zero, so that it "ends"
        far below ``phy_end``). Kept, it would stay in the queue for good, pointing at another
        queue's record. (``matches`` keeps a unit whose predecessor is damaged, or whose record
        was lost.) Without ``matches`` a unit with none before it stays.
        """
        off = self.max_offset
        while off > self.first_offset:
            phy, size, _ = self.unit(off - 1)
            if phy >= 0 and size > 0 and phy + size <= phy_end:
                follows = self._follows(off - 1, phy)
                if follows or (matches is None and follows is None):
                    break
                if matches is not None and matches(off - 1, phy, size):
                    break
            off -= 1
        return off

    def _follows(self, offset: int, phy: int) -> bool | None:
        """Whether the unit at queue ``offset`` (record at ``phy``) begins past the record of
        the unit before it; None when no unit comes before it (the queue's first, or only
        zero units between: the copy a kill tore may have left whole units unstored before
        it), so that order cannot tell."""
        for before in range(offset - 1, max(self.first_offset, offset - _HOLE_UNITS) - 1, -1):
            prev, size, _ = self.unit(before)
            if size > 0:
                return prev >= 0 and prev + size <= phy
        return None

    def truncate_phy(self, phy_end: int, matches: UnitCheck | None = None) -> int:
        """Drop units whose record reaches past commit-log offset ``phy_end``; return how many
        (``matches``: see :meth:`end_within`)."""
        off = self.end_within(phy_end, matches)
        dropped = self.max_offset - off
        if dropped:
            self.truncate_to(off)
        return dropped

    def hide_past_phy(self, phy_end: int, matches: UnitCheck | None = None) -> int:
        """Read-only: stop showing units whose record reaches past ``phy_end`` (a torn tail,
        an unfinished ingest) without writing; they stay hidden across :meth:`reload_end`.
        Returns how many were hidden (``matches``: see :meth:`end_within`)."""
        assert not self.writable
        self._phy_limit, self._matches = phy_end, matches
        off = self.end_within(phy_end, matches)
        hidden = self.max_offset - off
        self.max_offset = off
        return hidden

    def last_phy_end(self) -> int:
        """End of the last record this queue points to (0 when empty)."""
        if self.max_offset <= self.first_offset:
            return 0
        phy, size, _ = self.unit(self.max_offset - 1)
        return phy + size

    def drop_head_files(self, min_phy: int) -> list[Path]:
        """Delete the oldest files whose every unit points below commit-log offset ``min_phy``
        (never the last file). The queue's minimum offset moves up accordingly."""
        dropped: list[Path] = []
        per_file = self.file_bytes // _UB
        while len(self.files) > 1:
            f = self.files[0]
            last = f.base // _UB + per_file - 1
            phy, size, _ = self.unit(last)
            if phy < 0 or phy + size > min_phy:
                break
            self.files.pop(0)
            f.close()
            f.path.unlink()
            dropped.append(f.path)
            self.first_offset = max(self.first_offset, self.files[0].base // _UB)
        return dropped

    def flush(self) -> None:
        written = self.max_offset * _UB
        for f in self.files:
            dirty = f.dirty
            f.flush()
            if dirty and f.writable:
                # Keep the last pages a reader of the newest units is likely to touch.
                f.drop_resident(0, written - f.base - KEEP_RESIDENT_BYTES)

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files.clear()


class ConsumeQueueExt:
    """Read-only view of ``consumequeue_ext/{topic}/{queue}``: resolves ext tags addresses."""

    def __init__(self, directory: Path) -> None:
        self.files = [(base, p) for base, p in list_offset_files(directory)]
        self.file_bytes = self.files[0][1].stat().st_size if self.files else 0

    def tags_code(self, address: int) -> int | None:
        """The real tags code stored at an ext ``address``, or None when it cannot be read."""
        if not self.files or not self.file_bytes:
            return None
        ext_offset = address - L.LONG_MIN
        base = (ext_offset // self.file_bytes) * self.file_bytes
        for b, p in self.files:
            if b == base:
                with p.open("rb") as fh:
                    fh.seek(ext_offset - b)
                    head = fh.read(L.CQ_EXT_UNIT_HEAD.size)
                if len(head) < L.CQ_EXT_UNIT_HEAD.size:
                    return None
                size, code, _, _ = L.CQ_EXT_UNIT_HEAD.unpack(head)
                return int(code) if size >= L.CQ_EXT_UNIT_HEAD.size else None
        return None
