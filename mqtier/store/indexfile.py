"""RocketMQ IndexFiles: hash slots + chained items, keyed by ``topic#key``.

Layout: 40-byte header, ``slots`` int32 heads, ``items`` 20-byte items (item 0 is never used).
Each message's UNIQ_KEY and every KEYS token get an item. Queries return candidate commit-log
offsets by hash only; :class:`mqtier.store.store.Store` re-checks the real key on the message.
"""

from __future__ import annotations

import array
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mqtier.format import layout as L
from mqtier.store.mapped import KEEP_RESIDENT_BYTES, MappedFile

log = logging.getLogger(__name__)

_HDR = L.INDEX_HEADER
_SLOT = L.INDEX_SLOT
_ITEM = L.INDEX_ITEM
_ITEM_BYTES = L.INDEX_ITEM_BYTES
_INT_MAX = 0x7FFFFFFF


def index_file_bytes(slots: int, items: int) -> int:
    return L.INDEX_HEADER.size + slots * L.INDEX_SLOT_BYTES + items * L.INDEX_ITEM_BYTES


def index_file_name(ms: int) -> str:
    """``yyyyMMddHHmmssSSS`` in local time, as ``UtilAll.timeMillisToHumanString``."""
    dt = datetime.fromtimestamp(ms / 1000)
    return dt.strftime("%Y%m%d%H%M%S") + f"{ms % 1000:03d}"


@dataclass(slots=True)
class IndexHeader:
    begin_ts: int = 0
    end_ts: int = 0
    begin_phy: int = 0
    end_phy: int = 0
    slot_count: int = 0  # slots in use
    index_count: int = 1  # next item number; item 0 is never written


class IndexFile:
    """One index file. ``put`` runs on the reput thread; ``query`` on any thread."""

    def __init__(
        self, path: Path, slots: int, items: int, *, writable: bool, create: bool = False
    ) -> None:
        self.path = path
        self.slots = slots
        self.items = items
        # The header and slot table take random writes: reserved up front. Items are
        # appended in order and reserved as they go (see MappedFile.reserve).
        self.file = MappedFile(
            path,
            0,
            index_file_bytes(slots, items),
            writable=writable,
            create=create,
            reserve=L.INDEX_HEADER.size + slots * L.INDEX_SLOT_BYTES,
        )
        self.mm = self.file.mm
        self.header = IndexHeader(*_HDR.unpack_from(self.mm, 0))
        if create or self.header.index_count <= 0:
            self.header.index_count = max(self.header.index_count, 1)
        self.items_at = L.INDEX_HEADER.size + slots * L.INDEX_SLOT_BYTES

    @property
    def full(self) -> bool:
        return self.header.index_count >= self.items

    def put(self, key_hash: int, phy: int, store_ts: int) -> bool:
        """Add one item; False when the file is full (the caller rolls a new file)."""
        h = self.header
        if h.index_count >= self.items:
            return False
        slot_pos = L.INDEX_HEADER.size + (key_hash % self.slots) * L.INDEX_SLOT_BYTES
        prev = _SLOT.unpack_from(self.mm, slot_pos)[0]
        if prev <= 0 or prev >= h.index_count:  # item index_count is not written yet
            prev = 0
        if h.begin_ts <= 0:
            diff = 0
        else:
            diff = min(max((store_ts - h.begin_ts) // 1000, 0), _INT_MAX)
        n = h.index_count
        item_pos = self.items_at + n * L.INDEX_ITEM_BYTES
        self.file.reserve(item_pos + L.INDEX_ITEM_BYTES)
        self.mm[item_pos : item_pos + L.INDEX_ITEM_BYTES] = _ITEM.pack(key_hash, phy, diff, prev)
        self.mm[slot_pos : slot_pos + 4] = _SLOT.pack(n)
        if n <= 1:
            h.begin_phy = phy
            h.begin_ts = store_ts
        if prev == 0:
            h.slot_count += 1
        h.index_count = n + 1
        h.end_phy = phy
        h.end_ts = max(h.end_ts, store_ts)
        self.file.dirty = True
        return True

    def _packed_header(self) -> bytes:
        h = self.header
        return _HDR.pack(h.begin_ts, h.end_ts, h.begin_phy, h.end_phy, h.slot_count, h.index_count)

    def query(
        self,
        key_hash: int,
        begin_ms: int,
        end_ms: int,
        limit: int,
        header: IndexHeader | None = None,
    ) -> list[int]:
        """Commit-log offsets of items with ``key_hash`` stored within ``[begin_ms, end_ms]``
        (``header``: :meth:`current_header`, when the caller has just taken it)."""
        out: list[int] = []
        h = header if header is not None else self.current_header()
        slot_pos = L.INDEX_HEADER.size + (key_hash % self.slots) * L.INDEX_SLOT_BYTES
        cur = _SLOT.unpack_from(self.mm, slot_pos)[0]
        hops = 0
        # A head past the stored count is a writer's item not yet counted (it runs, or was
        # killed before its next flush): a reader follows it too, or every older item of the
        # slot, counted or not, would be hidden behind it. Writers store an item before the
        # head that points to it; an item that reads as zeros ends the chain all the same.
        # Locals: a shared key's chain is walked item by item on a query's hot path.
        items, mm, items_at, unpack = self.items, self.mm, self.items_at, _ITEM.unpack_from
        counted, begin_ts, oldest = h.index_count, h.begin_ts, begin_ms - 999
        while 0 < cur < items and len(out) < limit and hops < items:
            item_hash, phy, diff, prev = unpack(mm, items_at + cur * _ITEM_BYTES)
            if cur >= counted and not (item_hash or phy or diff or prev):
                break
            ts = begin_ts + diff * 1000
            if ts < oldest:  # timeDiff is in whole seconds: allow the rounding
                break
            if item_hash == key_hash and ts <= end_ms:
                out.append(phy)
            if prev <= 0 or prev >= cur:
                break
            cur = prev
            hops += 1
        return out

    def rewind_to_header(self) -> bool:
        """Undo what was added after the header was last stored (a kill -9 leaves such items).

        Slot heads past the stored item count are walked back along their items' ``prev``
        links to the newest item the header counts. Returns False when that is impossible (an
        item reads as zeros: its page never reached the disk); the file must then be rebuilt.
        """
        count = self.header.index_count
        if count <= 0:
            return False
        heads = array.array("i")
        heads.frombytes(self.mm[L.INDEX_HEADER.size : self.items_at])
        if sys.byteorder == "little":
            heads.byteswap()  # the file is big-endian
        zero = bytes(L.INDEX_ITEM_BYTES)
        for slot, head in enumerate(heads):
            if head < count:
                continue
            cur = head
            while cur >= count:
                at = self.items_at + cur * L.INDEX_ITEM_BYTES
                item = self.mm[at : at + L.INDEX_ITEM_BYTES]
                if cur >= self.items or item == zero:
                    return False
                prev = _ITEM.unpack(item)[3]
                if prev < 0 or prev >= cur:
                    return False
                cur = prev
            pos = L.INDEX_HEADER.size + slot * L.INDEX_SLOT_BYTES
            self.mm[pos : pos + L.INDEX_SLOT_BYTES] = _SLOT.pack(cur)
            self.file.dirty = True
        return True

    def current_header(self) -> IndexHeader:
        # The writer keeps the live header in memory and stores it at flush; readers of a
        # file another process writes must take it from the map.
        if self.file.writable:
            return self.header
        return IndexHeader(*_HDR.unpack_from(self.mm, 0))

    def flush(self) -> None:
        """Store the items and slot heads, then the header that counts them.

        Two syncs, in that order: a power cut during one sync may keep any subset of its
        pages, and a header on disk that counts items whose pages were lost would make
        recovery skip their records (it replays from the header's end). A file whose header
        is unchanged and that holds nothing unsynced costs nothing.
        """
        packed = self._packed_header()
        if not self.file.dirty and self.mm[: _HDR.size] == packed:
            return
        self.file.flush()
        self.mm[: _HDR.size] = packed
        self.file.dirty = True
        self.file.flush()
        if self.file.writable:  # items are appended in order; the slot table stays mapped
            written = self.items_at + self.header.index_count * L.INDEX_ITEM_BYTES
            self.file.drop_resident(self.items_at, written - KEEP_RESIDENT_BYTES)

    def close(self) -> None:
        self.file.close()


class IndexService:
    """The store's index files, oldest first; the last one takes new items."""

    def __init__(self, directory: Path, slots: int, items: int, *, writable: bool) -> None:
        self.directory = directory
        self.slots = slots
        self.items = items
        self.writable = writable
        self.files: list[IndexFile] = []
        size = index_file_bytes(slots, items)
        if directory.is_dir():
            for p in sorted(directory.iterdir()):
                if not (p.name.isdigit() and len(p.name) == 17):
                    continue
                actual = p.stat().st_size
                if actual == 0 and p.is_file():
                    # Killed between creating the file and sizing it: it never held an item.
                    if writable:
                        p.unlink()
                        log.info("%s: empty index file a crash left; removed", p)
                    continue
                if actual != size:
                    # A foreign store with other geometry: derive slots/items is impossible
                    # from the size alone, so such files are skipped with a warning.
                    log.warning("%s: %d bytes, expected %d; skipped", p, actual, size)
                    continue
                self.files.append(IndexFile(p, slots, items, writable=writable))

    @property
    def end_phy(self) -> int:
        """Items for records below this offset are already indexed (the redispatch skip rule)."""
        if not self.files:
            return 0
        h = self.files[-1].header
        return h.end_phy if h.index_count > 1 else h.begin_phy

    def writable_file(self) -> IndexFile:
        if self.files and not self.files[-1].full:
            return self.files[-1]
        prev = self.files[-1] if self.files else None
        if prev is not None:
            # Store the full file's header before the next file exists: only the last file is
            # rewound after a crash, so once another file follows it, this header must count
            # every item its slot heads point to (a kill -9 between creating the next file and
            # this flush left heads past a stale count: the file's keys hidden, and cut when
            # recovery later appended to it).
            prev.flush()
        self.directory.mkdir(parents=True, exist_ok=True)
        ms = int(time.time() * 1000)
        name = index_file_name(ms)
        while (self.directory / name).exists():
            ms += 1
            name = index_file_name(ms)
        f = IndexFile(self.directory / name, self.slots, self.items, writable=True, create=True)
        if prev is not None:  # a new file continues where the full one ended
            f.header.begin_phy = f.header.end_phy = prev.header.end_phy
            f.header.begin_ts = f.header.end_ts = prev.header.end_ts
            # Stored now: a crash before the next checkpoint would leave a zero header, whose
            # begin offset 0 makes recovery index the whole commit log again.
            f.flush()
        self.files.append(f)
        return f

    def put(self, hashes: list[int], phy: int, store_ts: int) -> None:
        if self.files and self.files[-1].header.index_count > 1 and phy < self.end_phy:
            # Already indexed: a redispatch after recovery. The record at end_phy itself is
            # indexed again, as RocketMQ does: its keys may have been split over the file that
            # filled up and the next one; queries drop the duplicate.
            return
        f = self.writable_file()
        for key_hash in hashes:
            if not f.put(key_hash, phy, store_ts):
                f = self.writable_file()
                f.put(key_hash, phy, store_ts)

    def query(self, key_hash: int, begin_ms: int, end_ms: int, limit: int) -> list[int]:
        """Newest files first; only files whose time range overlaps the window."""
        out: list[int] = []
        for f in reversed(self.files):
            h = f.current_header()
            if h.index_count <= 1:
                continue
            if h.end_ts < begin_ms - 999 or h.begin_ts > end_ms:
                continue
            out.extend(f.query(key_hash, begin_ms, end_ms, limit - len(out), h))
            if len(out) >= limit:
                break
        return out

    def drop_after(self, phy: int) -> list[Path]:
        """Delete files holding items at or past ``phy`` (they are rebuilt from the commit log)."""
        dropped: list[Path] = []
        while self.files and self.files[-1].header.end_phy >= phy:
            dropped.extend(self.drop_last())
        return dropped

    def drop_head_files(self, min_phy: int) -> list[Path]:
        """Delete the oldest files whose items all point below ``min_phy`` (never the last)."""
        dropped: list[Path] = []
        while len(self.files) > 1 and self.files[0].header.end_phy < min_phy:
            f = self.files.pop(0)
            f.close()
            f.path.unlink()
            dropped.append(f.path)
        return dropped

    def drop_last(self) -> list[Path]:
        """Delete the newest file (the one a crash may have left half-linked)."""
        if not self.files:
            return []
        f = self.files.pop()
        f.close()
        f.path.unlink()
        return [f.path]

    def flush(self) -> None:
        for f in self.files:
            if f.file.writable:
                f.flush()

    def close(self) -> None:
        for f in self.files:
            if f.file.writable:
                f.flush()
            f.close()
        self.files.clear()
