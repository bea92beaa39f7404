"""Reading a store: records by commit-log offset and by queue offset, queries by key,
UNIQ_KEY, message ID and time, and each queue's offsets (mixed into Store)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

from mqtier.errors import ConfigError, CorruptRecordError, NotFoundError
from mqtier.format import layout as L
from mqtier.format.javahash import index_key_hash, tags_code
from mqtier.format.message import (
    QUEUED_TX_KINDS,
    MessageRecord,
    check_record_header,
    decode_record,
    decode_sound_record,
    header_plausible,
    parse_msg_id,
    unit_plausible,
)
from mqtier.store.consumequeue import ConsumeQueue, ConsumeQueueExt, is_ext_address
from mqtier.store.state import StoreState

log = logging.getLogger("mqtier.store.store")

_TX_MASK: Final = L.SYSFLAG_TRANSACTION_MASK
MAX_TIME_MS: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class QueueOffsets:
    """One queue's range in the hot store (``max_offset`` is the next offset to be written)."""

    topic: str
    queue_id: int
    min_offset: int
    max_offset: int
    min_phy: int
    max_phy: int


class StoreReads(StoreState):
    """Reads and queries of an open store."""

    def read_at(
        self, phy: int, size: int | None = None, *, unit: tuple[str, int, int] | None = None
    ) -> MessageRecord:
        """The record at commit-log offset ``phy``, verified (size, magic, CRC, header fields).

        ``unit`` is the (topic, queue id, queue offset) of the consume-queue unit that gave
        ``phy`` and ``size``: the header must say the same. Without it (a read by key, message
        id or time) the record must be the one its own queue's unit at its offset points to,
        where the queue has that unit.

        Raises:
            NotFoundError: the offset is outside the local store.
            CorruptRecordError: the bytes there fail verification.
        """
        cl = self.commitlog
        # Before the cache: a record of a file `clean` has deleted may still be cached, and
        # must not be found here when the store no longer holds it.
        if phy < cl.min_offset or phy + 8 > cl.durable_end:
            raise NotFoundError(
                f"commit-log offset {phy} is outside [{cl.min_offset}, {cl.durable_end})"
            )
        rec = self.cache.get(phy)
        if rec is None:
            # Without a size, read ahead: the decode finds the record's end in the buffer
            # (most records fit), and the slow path reads a longer one whole.
            rec = cl.read_ahead(phy) if size is None else cl.read(phy, size)
        msg = decode_sound_record(rec, 0, len(rec), True, phy, -1 if size is None else size)
        if msg is None or (unit is not None and not unit_plausible(msg, unit)):
            if size is None:
                rec = cl.read_record(phy)
            msg = self._decode_or_raise(rec, phy, size, unit)
        if unit is None and msg.sysflag & _TX_MASK in QUEUED_TX_KINDS:
            cq = self._cqs.get((msg.topic, msg.queue_id))
            held = cq.unit_if_held(msg.queue_offset) if cq is not None else None
            if held is not None and held[0] != phy:
                self._check_queue_claim(msg, held[0], held[1])
        return msg

    def _decode_or_raise(
        self, rec: bytes, phy: int, size: int | None, unit: tuple[str, int, int] | None
    ) -> MessageRecord:
        """:meth:`read_at`'s full checks, where the one-pass decode declined: an odd but valid
        record is decoded, anything else raises the error that names what is wrong."""
        try:
            msg = decode_record(rec, 0, verify_crc=True)
            # The CRCs do not cover the header: a flipped byte there must not become data.
            if not header_plausible(msg, phy, unit, size):
                if unit is None:
                    check_record_header(rec, 0, expect_phy=phy, expect_size=size)
                else:
                    check_record_header(
                        rec, 0, expect_phy=phy, expect_size=size, expect_topic=unit[0],
                        expect_queue=unit[1], expect_queue_offset=unit[2],
                    )  # fmt: skip
        except CorruptRecordError as exc:
            # The file is named only on failure: looking it up costs a read ~1 us.
            raise CorruptRecordError(self.commitlog.file_for(phy).path, phy, exc.detail) from None
        return msg

    def _check_queue_claim(self, msg: MessageRecord, unit_phy: int, unit_size: int) -> None:
        """A record read without its unit must be the one its queue's unit at its offset names.

        Called by :meth:`read_at` where that unit exists (the record is of a queued kind and
        its queue holds its offset) and points elsewhere, at (``unit_phy``, ``unit_size``):
        a garbled QUEUEID, QUEUEOFFSET or TOPIC usually names another record's unit.
        """
        if (unit_phy, unit_size, 0) == L.PRE_BLANK_UNIT:
            return
        raise CorruptRecordError(
            str(self.commitlog.file_for(msg.phy_offset).path),  # named only on failure (~1 us)
            msg.phy_offset,
            f"header fields TOPIC, QUEUEID, QUEUEOFFSET: expected a record that its queue's "
            f"unit points to, found {msg.topic}/{msg.queue_id} offset {msg.queue_offset}, "
            f"whose unit points to commit-log offset {unit_phy}",
        )

    def read(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        count: int,
        *,
        tags: Iterable[str] | None = None,
    ) -> list[MessageRecord]:
        """Up to ``count`` messages of one queue from queue ``offset``, in order.

        With ``tags``, only messages carrying one of them are returned (``count`` bounds the
        queue units examined, as a broker's pull does).
        """
        cq = self._cqs.get((topic, queue_id))
        if cq is None:
            raise NotFoundError(f"topic {topic!r} queue {queue_id} does not exist in {self.root}")
        wanted = set(tags) if tags else None
        codes = {tags_code(t) for t in wanted} if wanted else None
        out: list[MessageRecord] = []
        end = self.commitlog.durable_end
        low = self.commitlog.min_offset
        first = max(offset, cq.min_offset)  # where cq.units() starts
        for i, (phy, size, tag) in enumerate(cq.units(offset, count)):
            if (phy, size, tag) == L.PRE_BLANK_UNIT or 0 <= phy < low:
                continue  # below a queue's first offset, or its record was cleaned
            if phy < 0 or size <= 0 or phy + size > end:
                # Units past the end of valid data were hidden (read-only) or cut (recovery):
                # one left inside the queue is damaged, and skipping it would hide a message.
                raise cq.damaged_unit(
                    first + i,
                    f"holds commit-log offset {phy}, size {size}: no record of the valid "
                    f"data [{low}, {end})",
                )
            if codes is not None:
                code = self._ext_tags_code(topic, queue_id, tag) if is_ext_address(tag) else tag
                if code is not None and code not in codes:
                    continue
            msg = self.read_at(phy, size, unit=(topic, queue_id, first + i))
            if wanted is not None and msg.tags not in wanted:
                continue  # the hash matched, the tag did not
            out.append(msg)
        return out

    def _ext_tags_code(self, topic: str, queue_id: int, address: int) -> int | None:
        ext = self._exts.get((topic, queue_id))
        if ext is None:
            ext = ConsumeQueueExt(self.root / L.DIR_CONSUMEQUEUE_EXT / topic / str(queue_id))
            self._exts[(topic, queue_id)] = ext
        return ext.tags_code(address)

    def query_key(
        self,
        topic: str,
        key: str,
        *,
        begin_ms: int = 0,
        end_ms: int = MAX_TIME_MS,
        max_results: int = L.INDEX_MAX_RESULTS,
    ) -> list[MessageRecord]:
        """Messages of ``topic`` whose KEYS contain ``key`` (or whose UNIQ_KEY is ``key``)."""
        found: list[MessageRecord] = []
        seen: set[int] = set()
        # Ask for more candidates than needed: hash collisions are filtered out below.
        candidates = self.index.query(index_key_hash(topic, key), begin_ms, end_ms, max_results * 4)
        if self._memory_keys:  # a read-only view's tail: newer than anything indexed
            tail = self._memory_keys.get(f"{topic}#{key}")
            if tail:
                candidates = [*reversed(tail), *candidates]  # newest first, as the index
        lo, end = self.commitlog.min_offset, self.commitlog.durable_end
        read_at = self.read_at
        for phy in candidates:
            if phy in seen or phy < lo or phy + 8 > end:
                continue
            seen.add(phy)
            msg = read_at(phy)
            if msg.topic != topic or not begin_ms <= msg.store_ts <= end_ms:
                continue
            if not msg.carries_key(key):  # the hash is no proof
                continue
            found.append(msg)
            if len(found) >= max_results:
                break
        if len(found) > 1:
            found.sort(key=attrgetter("phy_offset"))
        return found

    def query_uniq(self, uniq_key: str, topic: str | None = None) -> list[MessageRecord]:
        """Messages whose UNIQ_KEY (the client-side message id) is ``uniq_key``."""
        topics = [topic] if topic else sorted({t for t, _ in self._cqs})
        out: list[MessageRecord] = []
        for t in topics:
            out.extend(m for m in self.query_key(t, uniq_key) if m.uniq_key == uniq_key)
        return out

    def query_msg_id(self, msg_id: str) -> MessageRecord:
        """The message with this offsetMsgId (store host + commit-log offset)."""
        try:
            ip, port, phy = parse_msg_id(msg_id)
        except ValueError as exc:  # an ill-formed id is bad input, not a missing message
            raise ConfigError(str(exc)) from None
        cl = self.commitlog
        if cl.min_offset <= phy and phy + 8 <= cl.durable_end:
            _, magic = L.RECORD_SIZE_MAGIC.unpack(cl.read(phy, 8))
            if magic not in (L.MAGIC_V1, L.MAGIC_V2):
                # An id can name any offset; no record starting there is "not found". A record
                # whose magic is right but whose checks fail is corrupt (read_at says so).
                raise NotFoundError(f"message id {msg_id}: no message starts at offset {phy}")
        msg = self.read_at(phy)
        if msg.store_host != (ip, port):
            log.warning("message id %s names another store host than this store's", msg_id)
        return msg

    def offset_by_time(self, topic: str, queue_id: int, ts_ms: int) -> int:
        """The first queue offset whose message was stored at or after ``ts_ms``."""
        cq = self._cqs.get((topic, queue_id))
        if cq is None:
            raise NotFoundError(f"topic {topic!r} queue {queue_id} does not exist")
        lo, hi = max(cq.min_offset, self._first_readable(cq)), cq.max_offset
        while lo < hi:
            mid = (lo + hi) // 2
            phy, size, _ = cq.unit(mid)
            if self.read_at(phy, size, unit=(topic, queue_id, mid)).store_ts < ts_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def first_readable(self, topic: str, queue_id: int) -> int:
        """First queue offset of ``topic``/``queue_id`` whose message this store still holds
        (``clean`` deletes the oldest commit-log files; their units stay in the queue).

        Raises:
            NotFoundError: no such queue.
        """
        cq = self._cqs.get((topic, queue_id))
        if cq is None:
            raise NotFoundError(f"topic {topic!r} queue {queue_id} does not exist in {self.root}")
        return self._first_readable(cq)

    def _first_readable(self, cq: ConsumeQueue) -> int:
        """First queue offset whose record is still in the local commit log."""
        low = self.commitlog.min_offset
        lo, hi = cq.min_offset, cq.max_offset
        while lo < hi:
            mid = (lo + hi) // 2
            if cq.unit(mid)[0] < low:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def offsets(self) -> list[QueueOffsets]:
        """Per (topic, queue): the readable queue-offset range and commit-log range."""
        out = []
        for (topic, qid), cq in sorted(self._cqs.items()):
            first = self._first_readable(cq)
            if first < cq.max_offset:
                min_phy = cq.unit(first)[0]
                last_phy, _, _ = cq.unit(cq.max_offset - 1)
            else:
                min_phy = last_phy = -1
            out.append(QueueOffsets(topic, qid, first, cq.max_offset, min_phy, last_phy))
        return out

    def stats(self) -> dict[str, Any]:
        w = self._writer
        return {
            "commitlog_min_offset": self.commitlog.min_offset,
            "commitlog_max_offset": self.commitlog.durable_end,
            "cache": self.cache.stats(),
            "group_commits": w.batches if w else 0,
            "messages_committed": w.items_committed if w else 0,
        }
