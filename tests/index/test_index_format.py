"""The cold index object format (docs/FORMAT.md 15.5): round trip, damage, geometry, tail size.

Objects are built by :func:`build_index_object` from items made the way a tiering run makes
them (a KEYS token's, a UNIQ_KEY's and a commit-log offset's hash per message), read back by
the functions a lookup uses (:func:`parse_tail`, ``IndexTail.byte_span``/``decode_items``),
and damaged byte by byte: every damage is a ``CorruptionError`` naming the object and a byte
position, never items returned.
"""

from __future__ import annotations

import random
import re
import zlib

import numpy as np
import pytest

from mqtier.errors import CorruptionError, UnsupportedFormatError
from mqtier.format import layout as L
from mqtier.format.coldindex import (
    FOOTER,
    HEADER,
    ITEM_DTYPE,
    PAGE,
    IndexGeometry,
    IndexTail,
    Items,
    build_index_object,
    item_order,
    key_hash,
    offset_hash,
    parse_header,
    parse_tail,
    slot_of,
    slots_of,
)

KEY = "broker-a/index/00000000000000000007/0123456789abcdef0123456789abcdef-L0.mqi"
QUEUES = [("orders", q) for q in range(8)] + [("audit", q) for q in range(4)]


def data_object(i: int) -> str:
    return f"broker-a/data/{i:020d}/{i:032x}-{1 + i % 3:06d}.mqd"


def realistic_items(n_messages: int, rng: random.Random, *, objects: int = 2) -> Items:
    """Three items a message, as a tiering run indexes it: one KEYS token (a tenth of them
    shared by ten messages), its UNIQ_KEY and its commit-log offset."""
    n = 3 * n_messages
    items = np.zeros(n, dtype=ITEM_DTYPE)
    t0 = 1_796_000_000_000
    hashes = []
    for m in range(n_messages):
        order = m // 10 if m % 10 == 0 else m  # ORDER-k shared by ten messages now and then
        uniq = f"7F000001{m:024X}"
        hashes += [key_hash(f"ORDER-{order}"), key_hash(uniq), offset_hash(m * 173)]
    items["hash"] = np.array(hashes, dtype=np.uint64)
    msg = np.repeat(np.arange(n_messages), 3)
    items["store_ms"] = t0 + msg // 4  # several messages a millisecond: ties are ordered too
    items["queue"] = msg % len(QUEUES)
    items["queue_offset"] = msg // len(QUEUES)
    items["object"] = msg % objects
    items["block_pos"] = 40 + (msg // 500) * 90_000
    items["block_len"] = 90_000
    items["block_crc"] = rng.getrandbits(32)
    return items


def build(items: Items, objects: int = 2) -> tuple[bytes, IndexGeometry]:
    return build_index_object(
        items,
        [data_object(i) for i in range(objects)],
        QUEUES,
        run_id=bytes(range(16)),
        created_ms=1_796_000_000_000,
    )


def tail_of(data: bytes, geo: IndexGeometry) -> IndexTail:
    return parse_tail(data[geo.tail_pos :], KEY, geo.size, geo.tail_pos, geo.tail_crc)


def slot_items(data: bytes, tail: IndexTail, h: int) -> Items:
    first, end = tail.slot_items(h)
    start, stop = tail.byte_span(first, end)
    return tail.decode_items(data[start:stop], start, first, end)


def newest_first(items: Items) -> list[tuple[int, int, int]]:
    return [(-int(i["store_ms"]), -int(i["queue"]), -int(i["queue_offset"])) for i in items]


def flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x5A
    return bytes(out)


def named_position(exc: pytest.ExceptionInfo[CorruptionError]) -> int:
    """The byte position an error names after the object's key (``KEY @ 1234: ...``)."""
    text = str(exc.value)
    assert text.startswith(f"{KEY} @ "), text
    found = re.match(rf"{re.escape(KEY)} @ (\d+): ", text)
    assert found, text
    return int(found.group(1))


@pytest.fixture(scope="module")
def sample() -> tuple[Items, bytes, IndexGeometry]:
    items = realistic_items(2000, random.Random(7))
    data, geo = build(items)
    return items, data, geo


# -- round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_messages", [0, 1, 4, 8, 85, 2000])
def test_every_item_is_found_in_its_slot_newest_first(n_messages: int) -> None:
    items = realistic_items(n_messages, random.Random(n_messages))
    data, geo = build(items)
    assert geo.size == len(data) and geo.items == len(items)
    tail = tail_of(data, geo)
    assert tail.items == len(items) and tail.objects == [data_object(0), data_object(1)]
    assert tail.queues == QUEUES
    header = parse_header(data, KEY)
    assert header["items"] == len(items) and header["slot_bits"] == tail.slot_bits
    seen = 0
    for h in sorted({int(x) for x in items["hash"]}):
        got = slot_items(data, tail, h)
        assert all(
            slot_of(int(x), tail.slot_bits) == slot_of(h, tail.slot_bits) for x in got["hash"]
        )
        assert newest_first(got) == sorted(newest_first(got)), "a slot is not newest first"
        want = np.sort(items[items["hash"] == np.uint64(h)], order=["store_ms", "queue_offset"])
        mine = np.sort(got[got["hash"] == np.uint64(h)], order=["store_ms", "queue_offset"])
        assert mine.tobytes() == want.astype(ITEM_DTYPE).tobytes(), f"hash {h:x}"
        seen += len(mine)
    assert seen == len(items)
    # the directory says where every slot starts: the slots tile the items exactly
    assert int(tail.directory[0]) == 0 and int(tail.directory[-1]) == len(items)


def test_an_empty_slot_reads_nothing() -> None:
    """With 12-24 items a slot on average an empty slot is rare, but it costs no GET: every
    hash here has its top bit set, so slot 0 of 2 is empty."""
    items = realistic_items(8, random.Random(4))  # 24 items: 2 slots
    items["hash"] |= np.uint64(1 << 63)
    data, geo = build(items)
    tail = tail_of(data, geo)
    assert tail.slot_bits == 1
    first, end = tail.slot_items(0x1234)
    assert first == end == 0
    assert tail.slot_items(1 << 63) == (0, 24)


def test_the_same_items_in_any_order_make_the_same_bytes() -> None:
    items = realistic_items(300, random.Random(3))
    shuffled = items.copy()
    np.random.default_rng(5).shuffle(shuffled)
    assert build(items)[0] == build(shuffled)[0]


# -- damage: a flipped byte anywhere is refused, with the object and a byte position -----------


def test_a_flipped_byte_in_an_item_page_names_its_page(
    sample: tuple[Items, bytes, IndexGeometry],
) -> None:
    items, data, geo = sample
    tail = tail_of(data, geo)
    h = int(items["hash"][1234])
    first, end = tail.slot_items(h)
    start, stop = tail.byte_span(first, end)
    for at in (start, start + 3, start + 4, (start + stop) // 2, stop - 1):
        bad = flipped(data, at)
        with pytest.raises(CorruptionError) as exc:
            tail.decode_items(bad[start:stop], start, first, end)
        pos = named_position(exc)
        assert pos <= at < pos + PAGE, f"flip at {at}, error names {pos}"
        assert (pos - HEADER.size) % PAGE == 0  # the start of the page holding the byte


@pytest.mark.parametrize("region", ["directory", "tables", "footer"])
def test_a_flipped_byte_in_the_tail_is_refused(
    sample: tuple[Items, bytes, IndexGeometry], region: str
) -> None:
    _items, data, geo = sample
    tail = tail_of(data, geo)
    tables_at = tail.dir_pos + len(tail.directory) * 4
    foot_at = geo.size - FOOTER.size
    span = {
        "directory": range(geo.tail_pos, tables_at),
        "tables": range(tables_at, foot_at),
        "footer": range(foot_at, geo.size),
    }[region]
    for at in sorted({span[0], span[1], span[len(span) // 2], span[-2], span[-1]}):
        bad = flipped(data, at)
        with pytest.raises(CorruptionError) as exc:
            tail_of(bad, geo)
        pos = named_position(exc)
        # the tail's own CRC names where the tail starts; the footer's names the footer
        assert pos == (foot_at if region == "footer" else geo.tail_pos), (at, str(exc.value))


def test_a_flipped_byte_in_the_header_is_refused(
    sample: tuple[Items, bytes, IndexGeometry],
) -> None:
    _items, data, _geo = sample
    for at in range(HEADER.size):
        with pytest.raises(CorruptionError) as exc:
            parse_header(flipped(data, at), KEY)
        assert named_position(exc) in (0, 8), at  # the header, or its version field


def test_a_truncated_tail_is_refused(sample: tuple[Items, bytes, IndexGeometry]) -> None:
    _items, data, geo = sample
    for cut in (1, FOOTER.size - 1, FOOTER.size, geo.size - geo.tail_pos - 1):
        short = data[geo.tail_pos : geo.size - cut]  # what a ranged GET of a cut object returns
        with pytest.raises(CorruptionError) as exc:
            parse_tail(short, KEY, geo.size, geo.tail_pos, geo.tail_crc)
        assert named_position(exc) == geo.tail_pos
        assert "expected" in str(exc.value)
    with pytest.raises(CorruptionError):
        parse_header(data[: HEADER.size - 1], KEY)


def test_a_tail_other_than_the_catalogs_is_refused(
    sample: tuple[Items, bytes, IndexGeometry],
) -> None:
    """An object replaced under its key: its tail checks out alone, but not the tail_crc the
    catalog recorded when it committed the object."""
    _items, data, geo = sample
    with pytest.raises(CorruptionError, match="replaced") as exc:
        parse_tail(data[geo.tail_pos :], KEY, geo.size, geo.tail_pos, geo.tail_crc ^ 1)
    assert named_position(exc) == geo.size - FOOTER.size


def test_items_past_the_tables_or_a_directory_out_of_order_are_refused() -> None:
    """A directory that is not a running count (a writer bug, CRC right) is refused."""
    items = realistic_items(100, random.Random(1))
    data, geo = build(items)
    tail = tail_of(data, geo)
    directory = tail.directory.astype(">u4").copy()
    directory[1], directory[2] = directory[2] + 1, directory[1]
    tables = data[tail.dir_pos + directory.nbytes : geo.size - FOOTER.size]
    body = directory.tobytes() + tables
    bad = refooter(data, data[: geo.tail_pos] + body, tail_crc=zlib.crc32(body))
    with pytest.raises(CorruptionError, match="running count"):
        parse_tail(bad[geo.tail_pos :], KEY, len(bad), geo.tail_pos, zlib.crc32(body))


# -- geometry this reader does not know --------------------------------------------------------


FOOTER_FIELDS = ("dir_pos", "tables_pos", "tables_len", "items", "bits", "hash_id", "item_bytes",
                 "page", "tail_crc", "own_crc", "magic")  # fmt: skip


def refooter(data: bytes, body: bytes | None = None, **changes: int) -> bytes:
    """``data`` with footer fields changed and the footer's own CRC made right again (what a
    writer of another version, or a buggy one, would produce); ``body`` replaces what comes
    before the footer."""
    fields = dict(zip(FOOTER_FIELDS, FOOTER.unpack(data[-FOOTER.size :]), strict=True))
    fields.update(changes)
    head = FOOTER.pack(*fields.values())
    at = FOOTER.size - 12
    footer = head[:at] + L.UINT32.pack(zlib.crc32(head[:at])) + head[at + 4 :]
    return (data[: -FOOTER.size] if body is None else body) + footer


def reheader(data: bytes, **changes: int) -> bytes:
    """``data`` with header fields changed (by position) and the header CRC made right."""
    fields = list(HEADER.unpack_from(data))
    for index, value in changes.items():
        fields[int(index.lstrip("f"))] = value
    head = HEADER.pack(*fields)
    return head[:-4] + L.UINT32.pack(zlib.crc32(head[:-4])) + data[HEADER.size :]


@pytest.mark.parametrize(("hash_id", "item"), [(2, 48), (0, 48), (1, 64), (1, 40)])
def test_an_unknown_hash_or_item_size_is_unsupported(hash_id: int, item: int) -> None:
    items = realistic_items(100, random.Random(2))
    data, geo = build(items)
    bad = refooter(data, hash_id=hash_id, item_bytes=item)
    with pytest.raises(UnsupportedFormatError) as exc:
        parse_tail(bad[geo.tail_pos :], KEY, geo.size, geo.tail_pos, geo.tail_crc)
    assert named_position(exc) == geo.size - FOOTER.size
    # the header repeats the geometry for tools reading the object alone: refused there too
    with pytest.raises(UnsupportedFormatError) as exc:
        parse_header(reheader(data, f2=hash_id, f3=item), KEY)
    assert named_position(exc) == 10


def test_an_unknown_version_is_unsupported(sample: tuple[Items, bytes, IndexGeometry]) -> None:
    _items, data, _geo = sample
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        parse_header(reheader(data, f1=2), KEY)


# -- what the cache keeps: at most 1 % of the object -------------------------------------------


@pytest.mark.parametrize("n_items", [10_000, 100_000, 1_000_000])
def test_the_tail_is_at_most_one_percent_of_the_object(n_items: int) -> None:
    """The tail (directory, tables, footer) is what a reader caches per index object; the
    issue allows at most 1 % of the index bytes it describes. Slots hold 12 to 24 items, so
    the directory is 4 bytes per 12-24 items of 48 (at most 0.69 %), plus the tables."""
    items = realistic_items(-(-n_items // 3), random.Random(n_items), objects=8)
    data, geo = build(items, objects=8)
    tail = geo.size - geo.tail_pos
    assert tail <= 0.01 * geo.size, f"{n_items} items: tail {tail} of {geo.size} bytes"
    assert tail_of(data, geo).items == len(items)


@pytest.mark.parametrize("seed", range(12))
def test_item_order_is_the_five_key_lexsort(seed: int) -> None:
    # the one-sort order must give the bytes the plain lexsort gives, ties and all
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 3000))
    bits = int(rng.integers(0, 12))
    items = np.zeros(n, dtype=ITEM_DTYPE)
    items["hash"] = (
        rng.integers(0, 2**64, n, dtype=np.uint64) if seed % 3 else rng.integers(0, 4, n)
    )
    wide = seed % 4 == 0  # a time range too wide to share 64 bits with the slot: the fallback
    base = 1_700_000_000_000
    items["store_ms"] = (
        rng.integers(0, 2**62, n)
        if wide
        else base + rng.integers(0, 1 + int(rng.integers(0, 50)), n)
    )
    items["queue_offset"] = rng.integers(0, 1 + int(rng.integers(0, 20)), n)
    items["queue"] = rng.integers(0, 3, n)
    items["object"] = np.arange(n)  # tells apart items equal in every sort key
    hashes = items["hash"].astype(np.uint64)
    slots = slots_of(hashes, bits)
    want = np.lexsort(
        (
            hashes,
            -items["queue_offset"].astype(np.int64),
            -items["queue"].astype(np.int64),
            -items["store_ms"].astype(np.int64),
            slots,
        )
    )
    assert np.array_equal(item_order(items, hashes, slots, bits), want)
