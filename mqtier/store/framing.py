"""Messages to record bytes in batches: the callers' half of an append.

A record's bytes depend on three values only the writer knows: its queue offset, its commit-log
offset and the store timestamp of the commit that writes it. Everything else (validation, the
queue a message goes to, its properties, body CRC and header) is worked out here, on the
caller's thread, for a whole batch: the records are framed back to back into one buffer with
those three fields left zero, and the writer places the batch and stamps them in (see
:func:`stamp`), a few array operations per batch instead of a record encoded per message.
"""

from __future__ import annotations

import itertools
import os
import random
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from mqtier.errors import (
    InvalidMessageError,
    MessageTooLargeError,
    MqtierError,
    PropertiesTooLongError,
)
from mqtier.format import layout as L
from mqtier.format.crc import crc32
from mqtier.format.javahash import java_string_hash, tags_code
from mqtier.format.message import Message, check_max_size, crc32_property_digits, validate_topic
from mqtier.store.config import StoreConfig
from mqtier.store.topics import MAX_QUEUES, TopicTable

# One message as the framer takes it: topic, body, queue id (None: the store picks), keys,
# tags, properties, flag. A plain tuple: building one per input line costs next to nothing.
Row = tuple[str, bytes, int | None, Sequence[str], str | None, Mapping[str, str], int]

_PROP_CRC_PLACEHOLDER: Final = b"__CRC32#\x01" + b"0" * 10 + b"\x02"
# Stamped fields: QUEUEOFFSET and PHYSICALOFFSET are adjacent; STORETIMESTAMP follows the born
# host (4 or 16 bytes of address, then the port).
_QUEUE_AND_PHY: Final = struct.Struct(">qq")
_STORE_TS: Final = struct.Struct(">q")
# A batch this small is stamped field by field; a larger one with numpy (its set-up costs
# about as much as stamping a few dozen records one by one).
_SMALL_BATCH: Final = 32
# The born timestamp and the UNIQ_KEY's time part are taken once per this many records, and
# again before the 16-bit counter after the time part could come round to a value used with it.
_CLOCK_EVERY: Final = 1024
_COUNTS_PER_CLOCK: Final = 1 << 15
# A batch at least this long, of one topic and no properties of the caller's, is framed column
# by column (see Framer._frame_uniform); a shorter one costs less row by row.
_UNIFORM_MIN: Final = 16
_PROP_CRC_PLACEHOLDER_STR: Final = _PROP_CRC_PLACEHOLDER.decode("ascii")
_KEY_SPOILERS: Final = frozenset(" \x01\x02")
_TAG_SPOILERS: Final = frozenset("\x01\x02")


def row_of(msg: Message) -> Row:
    return (msg.topic, msg.body, msg.queue_id, msg.keys, msg.tags, msg.properties, msg.flag)


@dataclass(slots=True)
class FramedBatch:
    """Records framed back to back, waiting for their offsets and store timestamp.

    ``index_keys[j]`` (``topic#key``) belongs to record ``key_owner[j]`` of the batch.
    """

    data: bytearray = field(default_factory=bytearray)
    sizes: list[int] = field(default_factory=list)
    queues: list[tuple[str, int]] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)
    uniq_keys: list[str] = field(default_factory=list)
    index_keys: list[str] = field(default_factory=list)
    key_owner: list[int] = field(default_factory=list)
    body_bytes: int = 0
    # Keep the records in the store's read cache once written (a bulk ingest does not: nothing
    # in its process reads them back, and copying each one costs more than the cache saves).
    cached: bool = True

    def __len__(self) -> int:
        return len(self.sizes)


class Framer:
    """Validates and frames messages for one writable store; owns the choices appends make
    (the queue of a message that names none, new topics and widened ones, UNIQ_KEYs)."""

    def __init__(self, topics: TopicTable, config: StoreConfig, host: tuple[bytes, int]) -> None:
        self.topics = topics
        self.topics_dirty = False  # a topic was added or widened; saved at close
        self._config = config
        self._host = host
        v6 = len(host[0]) == 16  # born and store host are both this host
        self._header = L.record_header_struct(v6, v6)
        self._sysflag = (L.SYSFLAG_BORNHOST_V6 | L.SYSFLAG_STOREHOST_V6) if v6 else 0
        self._store_ts_at = L.POS_SYSFLAG + 4 + 8 + len(host[0]) + 4
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._topic_parts: dict[str, bytes] = {}  # topic -> its TOPICLEN + TOPIC bytes
        pid = os.getpid() & 0xFFFF
        self._uniq_prefix = host[0][-4:].hex().upper() + f"{pid:04X}{random.getrandbits(32):08X}"
        now = datetime.now(UTC)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        self._month_start_ms = int(month_start.timestamp() * 1000)
        self._uniq_counter = itertools.count(random.getrandbits(15))

    @property
    def store_ts_at(self) -> int:
        """Where STORETIMESTAMP lies in this store's records."""
        return self._store_ts_at

    # ---- queues and topics ------------------------------------------------------------------

    def topic_queues(self, topic: str) -> int:
        """The topic's write-queue count, creating the topic with the default count if new."""
        n = self.topics.queues(topic)
        if n is None:
            n = self._config.default_queues
            self.topics.ensure(topic, n)
            self.topics_dirty = True
        return n

    def _check_queue(self, topic: str, qid: int, grow: bool) -> None:
        """A queue a message names: one its topic has, or with ``grow`` one to widen it to.

        Never a silent widening past what was asked: a stray ``"queue": 2147483647`` would
        otherwise make every broker reading ``topics.json`` overflow.
        """
        n = self.topic_queues(topic)
        if 0 <= qid < n:
            return
        if not grow or not 0 <= qid < MAX_QUEUES:
            hint = (
                f"queue ids are 0 to {MAX_QUEUES - 1}"
                if qid >= MAX_QUEUES or qid < 0
                else "widen the topic first, or let it grow: ingest --grow-queues"
            )
            raise InvalidMessageError(
                f"topic {topic}: queue {qid} is beyond its {n} queues ({hint})"
            )
        self.topics.ensure(topic, qid + 1)
        self.topics_dirty = True

    def _round_robin_next(self, topic: str) -> int:
        """The next turn of the topic's round robin (messages with neither queue nor keys)."""
        rr = self._round_robin.get(topic)
        if rr is None:
            rr = self._round_robin[topic] = itertools.count()
        return next(rr)

    def _topic_part(self, topic: str) -> bytes:
        part = self._topic_parts.get(topic)
        if part is None:
            raw = validate_topic(topic)
            part = self._topic_parts[topic] = L.TOPIC_LEN_V1.pack(len(raw)) + raw
        return part

    # ---- framing ----------------------------------------------------------------------------

    def frame(
        self,
        rows: Sequence[Row],
        *,
        grow_queues: bool = True,
        on_error: Callable[[int, MqtierError], None] | None = None,
    ) -> FramedBatch:
        """Frame ``rows`` in order into one batch.

        A message that fails validation raises its MqtierError, or with ``on_error`` is left
        out and reported as ``on_error(index in rows, error)``.
        """
        if _UNIFORM_MIN <= len(rows) <= _CLOCK_EVERY:
            uniform = self._frame_uniform(rows)
            if uniform is not None:
                return uniform
        batch = FramedBatch()
        parts: list[bytes] = []
        key_hashes = _first_key_hashes(rows)
        cfg = self._config
        max_body = cfg.max_message_bytes
        prop_crc = cfg.append_prop_crc
        max_record = cfg.commitlog_file_bytes - L.BLANK_MIN_BYTES
        header, sysflag = self._header, self._sysflag
        host_ip, host_port = self._host
        fixed = header.size + 2  # the header and PROPS_LEN; topic part and lengths vary
        sizes, queues, tag_codes = batch.sizes, batch.queues, batch.tags
        uniq_keys, index_keys, key_owner = batch.uniq_keys, batch.index_keys, batch.key_owner
        uniq_base, born_ts, since = "", 0, -(1 << 62)
        counter = self._uniq_counter
        topic_parts = self._topic_parts
        counts: dict[str, int] = {}  # topic -> its queue count, as this batch leaves it
        for i, (topic, body, qid, keys, tags, props, flag) in enumerate(rows):
            if i % _CLOCK_EVERY == 0:
                uniq_base, born_ts = self._clock()
            try:
                topic_part = topic_parts.get(topic) or self._topic_part(topic)
                if len(body) > max_body:
                    check_max_size(len(body), max_body, f"topic {topic}")
                n = counts.get(topic)
                if n is None:
                    n = counts[topic] = self.topic_queues(topic)
                if qid is None:
                    if keys:
                        qid = abs(key_hashes[i] if key_hashes else java_string_hash(keys[0])) % n
                    else:
                        qid = self._round_robin_next(topic) % n
                elif not 0 <= qid < n:
                    self._check_queue(topic, qid, grow_queues)
                    counts[topic] = self.topic_queues(topic)
                props_bytes, uniq = self._properties(keys, tags, props)
                if not uniq:
                    count = next(counter)
                    if count - since >= _COUNTS_PER_CLOCK:
                        # (shared with other threads' batches: this one may have waited
                        # while they used up the counter's values under this time part)
                        uniq_base, born_ts = self._clock()
                        since = count
                    uniq = f"{uniq_base}{count & 0xFFFF:04X}"
                    props_bytes += f"UNIQ_KEY\x01{uniq}\x02".encode()
                plen = len(props_bytes) + (L.CRC32_RESERVED_LEN + 1 if prop_crc else 0)
                if plen > L.MAX_PROPERTIES_BYTES:
                    raise PropertiesTooLongError(
                        f"topic {topic}: properties are {plen} bytes; "
                        f"the limit is {L.MAX_PROPERTIES_BYTES}"
                    )
                if prop_crc:
                    props_bytes += _PROP_CRC_PLACEHOLDER
                size = fixed + len(body) + len(topic_part) + len(props_bytes)
                if size > max_record:
                    # A record never spans two files; one larger than a file could never be
                    # placed.
                    raise MessageTooLargeError(
                        f"topic {topic}: the record would be {size} bytes, more than a "
                        f"{cfg.commitlog_file_bytes}-byte commit-log file holds"
                    )
            except MqtierError as exc:
                if on_error is None:
                    raise
                on_error(i, exc)
                continue
            n = len(sizes)
            parts += (
                header.pack(
                    size,
                    L.MAGIC_V1,
                    crc32(body) & 0x7FFFFFFF,
                    qid,
                    flag,
                    0,
                    0,
                    sysflag,
                    born_ts,
                    host_ip,
                    host_port,
                    0,
                    host_ip,
                    host_port,
                    0,
                    0,
                    len(body),
                ),
                body,
                topic_part,
                L.PROPS_LEN.pack(len(props_bytes)),
                props_bytes,
            )
            sizes.append(size)
            queues.append((topic, qid))
            tag_codes.append(tags_code(tags))
            uniq_keys.append(uniq)
            _add_index_keys(index_keys, key_owner, n, f"{topic}#", uniq, keys)
            batch.body_bytes += len(body)
        batch.data = bytearray().join(parts)
        return batch

    def _frame_uniform(self, rows: Sequence[Row]) -> FramedBatch | None:
        """:meth:`frame` of a batch of one topic whose rows bring no properties, flag or
        UNIQ_KEY of their own, a column at a time (each step one C-level pass over the batch);
        None, having changed nothing, when the batch is not of that shape or any row might fail
        a check (the per-row path then frames it, and names the row that fails).

        Every record is byte for byte what the per-row path makes of it: the same property
        order, queue choice, UNIQ_KEY sequence and index keys.
        """
        n = len(rows)
        topics, bodies, qids, keyss, tagss, propss, flags = zip(*rows, strict=True)
        topic = topics[0]
        if topics.count(topic) != n or any(propss) or any(flags):
            return None
        topic_part = self._topic_parts.get(topic)
        if topic_part is None:
            try:
                topic_part = self._topic_part(topic)
            except MqtierError:
                return None
        cfg = self._config
        body_lens = list(map(len, bodies))
        if max(body_lens) > cfg.max_message_bytes:
            return None
        queue_count = self.topics.queues(topic) or cfg.default_queues
        picked = qids.count(None)
        if picked not in (0, n) or (not picked and not 0 <= min(qids) <= max(qids) < queue_count):
            return None
        keys_flat = list(itertools.chain.from_iterable(keyss))
        key_text, tag_text = "".join(keys_flat), "".join(filter(None, tagss))
        # What _properties refuses (an empty key, a space in one, a separator in a key or
        # the tags), and anything outside ASCII (so that a property's length in bytes is its
        # length in characters): tested over all keys and tags at once.
        if "" in keys_flat or not _KEY_SPOILERS.isdisjoint(key_text):
            return None
        if not _TAG_SPOILERS.isdisjoint(tag_text) or not (key_text + tag_text).isascii():
            return None
        key_parts = [f"KEYS\x01{' '.join(ks)}\x02" if ks else "" for ks in keyss]
        tag_parts = [f"TAGS\x01{t}\x02" if t else "" for t in tagss]
        prop_crc = cfg.append_prop_crc
        tail = _PROP_CRC_PLACEHOLDER_STR if prop_crc else ""
        reserved = L.CRC32_RESERVED_LEN + 1 if prop_crc else 0
        # Lengths before the UNIQ_KEY (of fixed length) decide every check that is left.
        uniq_len = len(self._uniq_prefix) + 8 + 4
        uniq_part = len("UNIQ_KEY\x01\x02") + uniq_len
        plens = [
            len(k) + len(t) + uniq_part + len(tail)
            for k, t in zip(key_parts, tag_parts, strict=True)
        ]
        if max(plens) - len(tail) + reserved > L.MAX_PROPERTIES_BYTES:
            return None
        fixed = self._header.size + 2 + len(topic_part)
        sizes = [fixed + b + p for b, p in zip(body_lens, plens, strict=True)]
        if max(sizes) > cfg.commitlog_file_bytes - L.BLANK_MIN_BYTES:
            return None
        try:
            # (A new topic is made here, its first choice: a default count past MAX_QUEUES,
            # as a hand-edited config may hold, fails it before anything changed.)
            n_queues = self.topic_queues(topic)
        except MqtierError:
            return None  # the per-row path reports it for each row
        # Every check passed: from here on the batch is framed, and its choices are made.
        if picked:
            key_hashes = _first_key_hashes(rows)
            qids = tuple(
                abs(key_hashes[i] if key_hashes else java_string_hash(ks[0])) % n_queues
                if ks
                else self._round_robin_next(topic) % n_queues
                for i, ks in enumerate(keyss)
            )
        # The UNIQ_KEYs: the counter's next n values (taken in one C call, so contiguous: no
        # thread cuts in) under one reading of the clock, as the per-row path gives a batch of
        # at most _CLOCK_EVERY.
        counts = list(itertools.islice(self._uniq_counter, n))
        uniq_base, born_ts = self._clock()
        uniqs = [f"{uniq_base}{c & 0xFFFF:04X}" for c in counts]
        props = [
            f"{k}{t}UNIQ_KEY\x01{u}\x02{tail}".encode()
            for k, t, u in zip(key_parts, tag_parts, uniqs, strict=True)
        ]
        host_ip, host_port = self._host
        rep = itertools.repeat
        headers = map(
            self._header.pack,
            sizes,
            rep(L.MAGIC_V1),
            [c & 0x7FFFFFFF for c in map(crc32, bodies)],
            qids,
            rep(0),  # flag
            rep(0),  # queue offset: stamped
            rep(0),  # commit-log offset: stamped
            rep(self._sysflag),
            rep(born_ts),
            rep(host_ip),
            rep(host_port),
            rep(0),  # store timestamp: stamped
            rep(host_ip),
            rep(host_port),
            rep(0),  # reconsume times
            rep(0),  # prepared transaction offset
            body_lens,
        )
        data = bytearray().join(
            itertools.chain.from_iterable(
                zip(
                    headers,
                    bodies,
                    rep(topic_part, n),
                    map(L.PROPS_LEN.pack, plens),
                    props,
                    strict=True,
                )
            )
        )
        batch = FramedBatch(
            data=data,
            sizes=sizes,
            queues=list(zip(rep(topic, n), qids, strict=True)),
            tags=list(map(tags_code, tagss)),
            uniq_keys=uniqs,
            body_bytes=sum(body_lens),
        )
        prefix = f"{topic}#"
        firsts = [ks[0] for ks in keyss if len(ks) == 1]
        if len(firsts) == n and set(firsts).isdisjoint(uniqs):
            with_prefix = map(
                prefix.__add__, itertools.chain.from_iterable(zip(uniqs, firsts, strict=True))
            )
            batch.index_keys = list(with_prefix)
            batch.key_owner = list(
                itertools.chain.from_iterable(zip(range(n), range(n), strict=True))
            )
        else:
            for i, (u, ks) in enumerate(zip(uniqs, keyss, strict=True)):
                _add_index_keys(batch.index_keys, batch.key_owner, i, prefix, u, ks)
        return batch

    def _properties(
        self, keys: Sequence[str], tags: str | None, props: Mapping[str, str]
    ) -> tuple[bytes, str]:
        """KEYS, TAGS and the user's properties as stored (UNIQ_KEY last, added by the caller
        when the message brings none), and the UNIQ_KEY it brings."""
        parts: list[str] = []
        if keys:
            for k in keys:
                if not k or " " in k or "\x01" in k or "\x02" in k:
                    raise InvalidMessageError(
                        f"key {k!r} is empty or contains a space or a 0x01/0x02 separator"
                    )
            parts.append(f"KEYS\x01{' '.join(keys)}\x02")
        if tags:
            if "\x01" in tags or "\x02" in tags:
                raise InvalidMessageError(f"tags {tags!r} contain a 0x01/0x02 separator")
            parts.append(f"TAGS\x01{tags}\x02")
        uniq = ""
        if props:
            for name, value in props.items():
                if any(c in name or c in value for c in "\x01\x02") or not name:
                    raise InvalidMessageError(f"property {name!r} contains a 0x01/0x02 separator")
                if name == L.PROP_UNIQ_KEY:
                    uniq = value
                elif name not in (L.PROP_KEYS, L.PROP_TAGS) and value:
                    parts.append(f"{name}\x01{value}\x02")
        if uniq:
            parts.append(f"UNIQ_KEY\x01{uniq}\x02")
        return "".join(parts).encode("utf-8"), uniq

    def _clock(self) -> tuple[str, int]:
        """The UNIQ_KEY's prefix with its time part, and the born timestamp, now.

        Taken again whenever the shared counter has moved on by half its 16 bits since: keys
        stay unique unless 32,768 are made within one millisecond (as RocketMQ's clients).
        """
        now_ms = int(time.time() * 1000)
        ms = (now_ms - self._month_start_ms) & 0xFFFFFFFF
        return f"{self._uniq_prefix}{ms:08X}", now_ms


def _add_index_keys(
    index_keys: list[str],
    key_owner: list[int],
    owner: int,
    prefix: str,
    uniq: str,
    keys: Sequence[str],
) -> None:
    """Record ``owner``'s index keys (``topic#``-prefixed): its UNIQ_KEY, then each key that
    is not the same string."""
    index_keys.append(prefix + uniq)
    key_owner.append(owner)
    for k in keys:
        if k != uniq:
            index_keys.append(prefix + k)
            key_owner.append(owner)


def _first_key_hashes(rows: Sequence[Row]) -> list[int] | None:
    """``String.hashCode`` of the first key of each row that leaves its queue to the store,
    at once through numpy (hashing one key in Python costs ~2.5 us); None for small batches,
    which are not worth the array set-up (the hash is taken row by row then)."""
    wanted = [i for i, r in enumerate(rows) if r[2] is None and r[3]]
    if len(wanted) < 16:
        return None
    from mqtier.format.javahash_batch import java_hashes

    out = [0] * len(rows)
    for i, h in zip(wanted, java_hashes([rows[i][3][0] for i in wanted]).tolist(), strict=True):
        out[i] = h
    return out


def record_starts(sizes: Sequence[int]) -> list[int]:
    """Where each record of a batch starts in its buffer."""
    return [0, *itertools.accumulate(sizes)][:-1] if sizes else []


def merged(batches: list[FramedBatch]) -> FramedBatch:
    """The batches as one, end to end (a group commit of single appends is dozens of
    one-record batches: placed, stamped and reput as one, they cost as much as one)."""
    if len(batches) == 1:
        return batches[0]
    out = FramedBatch(data=bytearray().join([b.data for b in batches]))
    out.cached = any(b.cached for b in batches)
    for b in batches:
        base = len(out.sizes)
        out.sizes += b.sizes
        out.queues += b.queues
        out.tags += b.tags
        out.uniq_keys += b.uniq_keys
        out.index_keys += b.index_keys
        out.key_owner += [i + base for i in b.key_owner] if base else b.key_owner
        out.body_bytes += b.body_bytes
    return out


def stamp(
    data: bytearray | memoryview,
    sizes: Sequence[int],
    queue_offsets: Sequence[int],
    phys: Sequence[int],
    store_ts: int,
    store_ts_at: int,
    *,
    prop_crc: bool,
) -> None:
    """Write each record's queue offset, commit-log offset and the store timestamp into the
    records framed back to back in ``data`` (and, with ``prop_crc``, each one's
    ``__CRC32#`` over the finished record)."""
    starts = record_starts(sizes)
    if len(sizes) < _SMALL_BATCH:
        for at, qoff, phy in zip(starts, queue_offsets, phys, strict=True):
            _QUEUE_AND_PHY.pack_into(data, at + L.POS_QUEUE_OFFSET, qoff, phy)
            _STORE_TS.pack_into(data, at + store_ts_at, store_ts)
    else:
        _stamp_arrays(data, starts, queue_offsets, phys, store_ts, store_ts_at)
    if prop_crc:
        view = memoryview(data)
        try:
            for at, size in zip(starts, sizes, strict=True):
                end = at + size
                whole = crc32(view[at : end - L.CRC32_RESERVED_LEN]) & 0x7FFFFFFF
                data[end - 11 : end - 1] = crc32_property_digits(whole)
        finally:
            view.release()


def _stamp_arrays(
    data: bytearray | memoryview,
    starts: Sequence[int],
    queue_offsets: Sequence[int],
    phys: Sequence[int],
    store_ts: int,
    store_ts_at: int,
) -> None:
    import numpy as np  # only writers pay its import

    n = len(starts)
    at = np.asarray(starts, dtype=np.int64)[:, None]
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        pair = np.empty((n, 2), dtype=">i8")
        pair[:, 0] = queue_offsets
        pair[:, 1] = phys
        buf[at + (L.POS_QUEUE_OFFSET + np.arange(16))] = pair.view(np.uint8).reshape(n, 16)
        stamp_bytes = np.frombuffer(_STORE_TS.pack(store_ts), dtype=np.uint8)
        buf[at + (store_ts_at + np.arange(8))] = stamp_bytes
    finally:
        del buf  # a live view would keep the bytearray from being resized or freed
