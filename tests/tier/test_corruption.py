"""Damaged cold objects: a read fails loudly, naming the object and where, never wrong data."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from mqtier import Message, Store
from mqtier.backend.base import ColdStore
from mqtier.errors import CorruptionError, CorruptRecordError, MqtierError
from mqtier.format.coldobject import Block, Segment, parse_block_index
from mqtier.format.layout import RECORD_HEADER_V4V4
from mqtier.tier.catalog import commit_key, load_catalog
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from mqtier.tier.reader import ColdReader
from tests.tier.conftest import (
    BROKER,
    TOPIC,
    Entry,
    Ledger,
    append,
    as_entry,
    assert_cold_equals,
    cold_view,
    data_objects,
    make_messages,
)


@pytest.fixture
def tiered(
    hot: Store, file_url: str, open_cold: Callable[..., ColdStore]
) -> tuple[ColdStore, Ledger, Path]:
    """600 messages over four queues tiered to file:// in objects of many small blocks."""
    ledger = Ledger()
    append(hot, ledger, make_messages(random.Random(12), 600))
    cold = open_cold(file_url)
    run_dispatch(hot, cold, DispatchOptions(force=True, object_bytes=48 << 10, block_bytes=4 << 10))
    assert_cold_equals(cold, ledger)
    return cold, ledger, Path(file_url[len("file://") :])


def a_middle_block(cold: ColdStore) -> tuple[Segment, list[Block], int]:
    """A segment with at least three blocks, its block index, and the index of a middle block."""
    state = load_catalog(cold, BROKER)
    for segs in state.queues.values():
        for seg in segs:
            blocks = parse_block_index(
                cold.get(seg.object, seg.index_pos, seg.index_pos + seg.index_len), seg
            )
            if len(blocks) >= 3:
                return seg, blocks, len(blocks) // 2
    raise AssertionError("no segment with three blocks")


def flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x40
    path.write_bytes(bytes(data))


def read_all(reader: ColdReader, seg: Segment, first: int, end: int) -> list[Entry]:
    return [as_entry(m) for m in reader.read(seg.topic, seg.queue, first, end - first)]


def test_flipped_byte_in_a_block(tiered: tuple[ColdStore, Ledger, Path]) -> None:
    cold, ledger, root = tiered
    seg, blocks, i = a_middle_block(cold)
    bad = blocks[i]
    flip(root / seg.object, bad.offset + bad.clen // 2)
    want = ledger.queues[(seg.topic, seg.queue)]

    with ColdReader(cold, BROKER) as reader:
        with pytest.raises(CorruptionError) as info:
            reader.read(seg.topic, seg.queue, bad.first, 1)
        assert info.value.exit_code == 4
        assert seg.object in str(info.value)
        assert f"@ {bad.offset}" in str(info.value)  # the object and the offset in it
        # A read spanning the bad block fails as a whole; it never returns a prefix silently.
        with pytest.raises(CorruptionError):
            reader.read(seg.topic, seg.queue, seg.first, seg.count)
    with ColdReader(cold, BROKER, read_ahead=False) as reader:
        # The blocks around it still read back exactly.
        before = read_all(reader, seg, seg.first, bad.first)
        assert before == want[seg.first : bad.first]
        after = read_all(reader, seg, bad.first + bad.count, seg.end)
        assert after == want[bad.first + bad.count : seg.end]


def test_flipped_byte_in_a_block_index(tiered: tuple[ColdStore, Ledger, Path]) -> None:
    cold, _ledger, root = tiered
    seg, _blocks, _i = a_middle_block(cold)
    flip(root / seg.object, seg.index_pos + 5)
    with ColdReader(cold, BROKER) as reader, pytest.raises(CorruptionError) as info:
        reader.read(seg.topic, seg.queue, seg.first, 10)
    assert info.value.exit_code == 4
    assert f"{seg.object} @ {seg.index_pos}" in str(info.value)


def test_truncated_object_fails_by_name_and_never_returns_wrong_data(
    tiered: tuple[ColdStore, Ledger, Path],
) -> None:
    cold, ledger, root = tiered
    seg, blocks, i = a_middle_block(cold)
    path = root / seg.object
    whole = path.read_bytes()
    cuts = sorted(
        {
            0,
            10,
            blocks[0].offset,  # right after the header
            blocks[i].offset + blocks[i].clen // 2,  # inside a block
            seg.index_pos,  # blocks whole, the index gone
            seg.index_pos + seg.index_len // 2,
            len(whole) - 30,  # inside the footer
            len(whole) - 1,  # the trailer's last byte
        }
    )
    state = load_catalog(cold, BROKER)
    in_object = [(k, s) for k, segs in state.queues.items() for s in segs if s.object == seg.object]
    assert len(in_object) >= 1
    for cut in cuts:
        path.write_bytes(whole[:cut])
        with ColdReader(cold, BROKER, read_ahead=False) as reader:
            for key, s in in_object:
                want = ledger.queues[key][s.first : s.end]
                failure: MqtierError | None = None
                try:
                    got = [as_entry(m) for m in reader.read(key[0], key[1], s.first, s.count)]
                except MqtierError as exc:
                    failure = exc
                if failure is not None:
                    assert seg.object in str(failure), (cut, failure)
                    assert failure.exit_code in (3, 4), (cut, failure)
                    continue
                # Whatever a read returns is right: here only when the cut spared the segment.
                assert got == want, (cut, key)
                assert cut >= s.index_pos + s.index_len, (cut, "read through a cut")
    path.write_bytes(whole)
    assert_cold_equals(cold, ledger)


def test_deleted_object_fails_by_name(tiered: tuple[ColdStore, Ledger, Path]) -> None:
    cold, _ledger, root = tiered
    seg, _blocks, _i = a_middle_block(cold)
    (root / seg.object).unlink()
    with ColdReader(cold, BROKER) as reader, pytest.raises(MqtierError) as info:
        reader.read(seg.topic, seg.queue, seg.first, 1)
    assert seg.object in str(info.value)
    assert info.value.exit_code == 4  # committed data lost: damage (MissingCommittedObjectError)


def test_commit_record_disagreeing_with_its_object_is_detected(
    tiered: tuple[ColdStore, Ledger, Path],
) -> None:
    cold, _ledger, root = tiered
    path = root / commit_key(BROKER, 1)
    state = load_catalog(cold, BROKER)
    (key, segs), *_ = sorted(state.queues.items())
    seg = segs[-1]
    # A sealed record edited like this fails its checksum at load (tests/cold/
    # test_damaged_catalog.py); a legacy one, without a checksum, must still be caught on read.
    legacy = orjson.loads(path.read_bytes())
    legacy.pop("sha256")
    legacy.pop("index_added")  # legacy records, written before the index, have none
    text = orjson.dumps(legacy)
    wrong = text.replace(
        f'"object":"{seg.object}","topic":"{seg.topic}","queue":{seg.queue},'
        f'"first":{seg.first},"count":{seg.count},'.encode(),
        f'"object":"{seg.object}","topic":"{seg.topic}","queue":{seg.queue},'
        f'"first":{seg.first},"count":{seg.count + 8},'.encode(),
    )
    assert wrong != text
    path.write_bytes(wrong)  # a bit flip in one digit: still valid JSON

    reader = ColdReader(cold, BROKER, read_ahead=False)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(reader.read(key[0], key[1], seg.first, seg.count + 100))
        except MqtierError as exc:
            outcome.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(3)
    hung = t.is_alive()
    reader.state.queues.clear()  # lets a looping read() find no segment and return
    t.join(5)
    assert not hung, "ColdReader.read() did not return within 3 s"
    assert isinstance(outcome[0], CorruptionError), outcome


def test_read_ahead_does_not_fail_a_read_of_intact_data(
    hot: Store, file_url: str, open_cold: Callable[..., ColdStore]
) -> None:
    ledger = Ledger()
    rng = random.Random(13)
    cold = open_cold(file_url)
    for _ in range(2):  # two commits: queue 0 gets two segments in two objects
        append(hot, ledger, make_messages(rng, 100, queues=1))
        run_dispatch(hot, cold, DispatchOptions(force=True))
    first, second = load_catalog(cold, BROKER).queues[("orders", 0)]
    flip(Path(file_url[len("file://") :]) / second.object, second.index_pos + 3)
    want = ledger.queues[("orders", 0)]
    with ColdReader(cold, BROKER) as reader:
        assert [as_entry(m) for m in reader.read("orders", 0, 0, 90)] == want[:90]
        # Offsets 90..99 are in the intact first segment; the window reaches into the second.
        got = reader.read("orders", 0, 90, first.end - 90)
        assert [as_entry(m) for m in got] == want[90 : first.end]


@pytest.mark.parametrize(
    "edit",
    [
        lambda doc: doc["added"][0].pop("object"),  # a field missing
        lambda doc: doc.update(seq="one"),  # a number that is not one
        lambda doc: doc["added"][0].update(first=None),  # a segment field of the wrong type
    ],
    ids=["missing-field", "seq-not-a-number", "segment-field-wrong-type"],
)
def test_malformed_commit_record_is_corruption_naming_it(
    tiered: tuple[ColdStore, Ledger, Path], edit: Callable[[dict[str, Any]], object]
) -> None:
    """Valid JSON of the wrong shape is corrupt data (exit 4), not an internal error (70)."""
    cold, _ledger, root = tiered
    key = commit_key(BROKER, 1)
    doc = orjson.loads((root / key).read_bytes())
    doc.pop("sha256")  # a legacy record: its shape is checked (a sealed one fails its checksum)
    edit(doc)
    (root / key).write_bytes(orjson.dumps(doc))
    with pytest.raises(CorruptionError, match=f"{key}: commit record is malformed") as info:
        load_catalog(cold, BROKER)
    assert info.value.exit_code == 4


@pytest.mark.parametrize("commit_every", [1 << 30, 8 << 10], ids=["one-commit", "many-commits"])
def test_corrupt_hot_record_stops_only_its_queue(
    hot: Store, memory_url: str, open_cold: Callable[..., ColdStore], commit_every: int
) -> None:
    """A bad hot record stops its queue right before it; the other queues are tiered."""
    ledger = Ledger()
    append(hot, ledger, make_messages(random.Random(5), 400))
    victim = ledger.queues[(TOPIC, 1)][60]
    f = hot.commitlog.file_for(victim.phy_offset)
    pos = victim.phy_offset - f.base + RECORD_HEADER_V4V4.size  # the first body byte
    with f.path.open("r+b") as fh:
        fh.seek(pos)
        byte = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([byte[0] ^ 0x20]))
    cold = open_cold(memory_url)
    opts = DispatchOptions(
        force=True, object_bytes=16 << 10, block_bytes=4 << 10, commit_every_bytes=commit_every
    )
    with pytest.raises(CorruptRecordError) as info:
        run_dispatch(hot, cold, opts)
    err = info.value
    assert (err.path, err.offset) == (f.path, victim.phy_offset)
    assert f"{TOPIC}/1 is tiered up to offset 60" in str(err)
    view = cold_view(cold)
    for key, entries in ledger.queues.items():
        assert view.get(key, []) == (entries[:60] if key == (TOPIC, 1) else entries), key
    state = load_catalog(cold, BROKER)
    assert data_objects(cold) == state.referenced_objects()  # the dropped attempt left nothing
    # Every later run stops at the same record and commits nothing new.
    with pytest.raises(CorruptRecordError, match="tiered up to offset 60"):
        run_dispatch(hot, cold, opts)
    assert load_catalog(cold, BROKER).seq == state.seq


def test_a_retry_after_a_bad_hot_record_keeps_to_max_bytes(
    hot: Store, memory_url: str, open_cold: Callable[..., ColdStore]
) -> None:
    """The queues are equal, so the bad queue is tiered second; the retry after it must spend
    only what --max-bytes has left, and decide again whether the budget stopped it."""
    results = hot.append_batch(
        [Message(TOPIC, bytes([65 + i % 26]) * 300, queue_id=i % 4) for i in range(400)]
    )
    assert hot.wait_dispatched(10)
    victim = [r for r in results if r.queue_id == 1][20]
    f = hot.commitlog.file_for(victim.phy_offset)
    with f.path.open("r+b") as fh:
        pos = victim.phy_offset - f.base + RECORD_HEADER_V4V4.size
        fh.seek(pos)
        byte = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([byte[0] ^ 0x20]))
    cap = 100_000  # of about 137,000 bytes of records
    opts = DispatchOptions(
        force=True, object_bytes=16 << 10, block_bytes=4 << 10, max_bytes=cap,
        commit_every_bytes=8 << 10,
    )  # fmt: skip
    cold = open_cold(memory_url)
    with pytest.raises(CorruptRecordError):
        run_dispatch(hot, cold, opts)
    state = load_catalog(cold, BROKER)
    committed = sum(s.raw_bytes for segs in state.queues.values() for s in segs)
    assert (
        cap - victim.size < committed < cap + victim.size
    )  # it stops after the record that crosses it
    assert (state.next_offset((TOPIC, 1)) or 0) <= 20


# One byte of a header field no CRC covers: (position in the v4/v4 record, XOR mask).
HEADER_FLIPS = {
    "QUEUEOFFSET": (20, 0xFF),  # hugely negative
    "QUEUEID": (15, 0x02),  # queue 1 -> 3, another queue of the topic
    "PHYSICALOFFSET": (35, 0x40),
    "SYSFLAG": (36, 0x40),
    "BORNTIMESTAMP": (40, 0x80),
    "STORETIMESTAMP": (56, 0x40),
}


@pytest.mark.parametrize("field", list(HEADER_FLIPS))
@pytest.mark.parametrize("commit_every", [1 << 30, 8 << 10], ids=["one-commit", "many-commits"])
def test_corrupt_hot_record_header_stops_only_its_queue(
    hot: Store, memory_url: str, open_cold: Callable[..., ColdStore], commit_every: int, field: str
) -> None:
    """A header the body CRC does not cover is checked before the record is packed: its queue
    stops right before it, naming the field; the other queues are tiered and read back."""
    ledger = Ledger()
    append(hot, ledger, make_messages(random.Random(6), 400))
    victim = ledger.queues[(TOPIC, 1)][60]
    f = hot.commitlog.file_for(victim.phy_offset)
    at, mask = HEADER_FLIPS[field]
    with f.path.open("r+b") as fh:
        fh.seek(victim.phy_offset - f.base + at)
        byte = fh.read(1)
        fh.seek(victim.phy_offset - f.base + at)
        fh.write(bytes([byte[0] ^ mask]))
    cold = open_cold(memory_url)
    opts = DispatchOptions(
        force=True, object_bytes=16 << 10, block_bytes=4 << 10, commit_every_bytes=commit_every
    )
    with pytest.raises(CorruptRecordError) as info:
        run_dispatch(hot, cold, opts)
    err = info.value
    assert (err.path, err.offset) == (f.path, victim.phy_offset)
    assert f"header field {field}" in str(err)
    assert f"{TOPIC}/1 is tiered up to offset 60" in str(err)
    view = cold_view(cold)
    for key, entries in ledger.queues.items():
        assert view.get(key, []) == (entries[:60] if key == (TOPIC, 1) else entries), key
    state = load_catalog(cold, BROKER)
    assert data_objects(cold) == state.referenced_objects()
    with pytest.raises(CorruptRecordError, match="tiered up to offset 60"):
        run_dispatch(hot, cold, opts)
    assert load_catalog(cold, BROKER).seq == state.seq
