"""A flipped byte in a commit-log record's header (which no CRC covers) is never served or tiered.

For each header field, one byte of one record is flipped, in a store written by mqtier and in a
copy of the real RocketMQ fixture store-b. Then ``read`` exits 4 naming the file and offset and
prints no message, ``inspect`` reports the record, ``dispatch --force`` commits that queue only
up to the record (exit 4, naming it) and the other queues in full, and the cold tier reads back
exactly what it holds.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from mqtier import Store
from mqtier.backend.open import open_cold_store
from mqtier.errors import CorruptRecordError
from mqtier.format import layout as L
from mqtier.format.message import check_record, check_record_header, encode_record
from mqtier.tier.catalog import load_catalog
from tests.cli.test_cli import run
from tests.tier.conftest import (
    CONFIG,
    TOPIC,
    Entry,
    Ledger,
    append,
    as_entry,
    cold_view,
    make_messages,
)

# field -> (position of the byte in the record, XOR mask); positions are those of the v4/v4
# header (both fixtures use IPv4 hosts). "topic" positions are filled in per record.
FLIPS: dict[str, tuple[int, int]] = {
    "TOTALSIZE": (3, 0x04),  # 4 bytes more or less, still inside the file
    "QUEUEID": (15, 0x02),
    "QUEUEOFFSET": (20, 0xFF),  # the case: a hugely negative offset
    "PHYSICALOFFSET": (35, 0x40),
    "SYSFLAG": (36, 0x40),  # a bit RocketMQ does not define
    "SYSFLAG-prepared": (39, 0x04),  # a prepared transaction, which no queue holds
    "BORNTIMESTAMP": (40, 0x80),  # negative
    "STORETIMESTAMP": (56, 0x40),  # thousands of years ahead
    "TOPICLEN": (-1, 0x01),
    "TOPIC": (-2, 0x20),
}
# What the failure names (the field itself, or the length check a wrong length trips first).
NAMED = {
    "TOTALSIZE": "length formula",
    "SYSFLAG-prepared": "SYSFLAG",
    "TOPICLEN": "size",
    "TOPIC": "TOPIC",
}


def flip_field(path: Path, phy: int, base: int, field: str) -> None:
    """XOR one byte of the ``field`` of the record at commit-log offset ``phy``."""
    data = bytearray(path.read_bytes())
    pos = phy - base
    at, mask = FLIPS[field]
    if at < 0:  # the topic length, or the topic's first byte, after the body
        body_len = L.INT32.unpack_from(data, pos + L.RECORD_HEADER_V4V4.size - 4)[0]
        at = L.RECORD_HEADER_V4V4.size + body_len + (0 if at == -1 else 1)
    data[pos + at] ^= mask
    path.write_bytes(bytes(data))


def commitlog_file(root: Path, phy: int) -> tuple[Path, int]:
    files = sorted((int(p.name), p) for p in (root / "commitlog").iterdir() if p.name.isdigit())
    base, path = [(b, p) for b, p in files if b <= phy][-1]
    return path, base


def assert_read_fails(root: Path, topic: str, queue: int, name: str, phy: int) -> None:
    res = run("read", "--store", str(root), "--topic", topic, "--queue", str(queue), "--json")
    assert res.exit_code == 4, res.output
    assert res.stdout == "", "a message was printed from a record whose header is corrupt"
    assert f"{name} @ {phy}:" in res.stderr


def assert_inspect_reports(path: Path, phy: int, base: int, field: str) -> None:
    res = run("inspect", str(path), "--json", "--limit", "0")
    assert res.exit_code == 4, res.output
    doc = json.loads(res.stdout)
    assert doc["error"]["offset"] == phy and doc["error"]["position"] == phy - base
    assert NAMED.get(field, field) in doc["error"]["detail"]
    assert f"{path.name} @ {phy}:" in res.stderr


def dispatch_fails(root: Path, url: str, name: str, phy: int, stop: str) -> None:
    res = run("dispatch", "--store", str(root), "--to", url, "--force", "--json")
    assert res.exit_code == 4, res.output
    assert f"{name} @ {phy}:" in res.stderr
    assert stop in res.stderr


# -- a store written by mqtier --------------------------------------------------------------------


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, Ledger]:
    """400 messages over four queues, written by mqtier and closed."""
    ledger = Ledger()
    rng = random.Random(21)
    with Store.open(tmp_path / "hot", create=True, config=CONFIG) as st:
        st.create_topic(TOPIC, 4)
        for _ in range(4):
            append(st, ledger, make_messages(rng, 100, max_body=300))
    return tmp_path / "hot", ledger


@pytest.mark.parametrize("field", list(FLIPS))
def test_mqtier_store(written: tuple[Path, Ledger], tmp_path: Path, field: str) -> None:
    root, ledger = written
    victim = ledger.queues[(TOPIC, 1)][10]
    path, base = commitlog_file(root, victim.phy_offset)
    flip_field(path, victim.phy_offset, base, field)
    phy, name = victim.phy_offset, path.name

    assert_read_fails(root, TOPIC, 1, name, phy)
    assert_inspect_reports(path, phy, base, field)
    url = f"file://{tmp_path / 'cold'}"
    dispatch_fails(root, url, name, phy, f"{TOPIC}/1 is tiered up to offset 10")

    cold = open_cold_store(url)
    state = load_catalog(cold, CONFIG.broker_name)
    assert state.next_offset((TOPIC, 1)) == 10  # the queue stops right before the record
    view = cold_view(cold, CONFIG.broker_name)  # and the cold tier reads back exactly
    for key, entries in ledger.queues.items():
        assert view.get(key, []) == (entries[:10] if key == (TOPIC, 1) else entries), key
    # The other queues still read from the hot store, and the victim's queue up to the record.
    with Store.open(root) as st:
        for key, entries in ledger.queues.items():
            if key != (TOPIC, 1):
                assert [as_entry(m) for m in st.read(*key, 0, 1000)] == entries
        assert [as_entry(m) for m in st.read(TOPIC, 1, 0, 10)] == ledger.queues[(TOPIC, 1)][:10]


@pytest.mark.parametrize("field", ["QUEUEOFFSET", "QUEUEID", "PHYSICALOFFSET", "STORETIMESTAMP"])
def test_a_read_without_the_unit_checks_the_header_too(
    written: tuple[Path, Ledger], field: str
) -> None:
    """By message id (or key) the record is found without its unit: the header must still agree
    with its queue (a queue id flipped to another existing queue names that queue's unit)."""
    root, ledger = written
    victim = ledger.queues[(TOPIC, 1)][10]
    path, base = commitlog_file(root, victim.phy_offset)
    with Store.open(root) as st:
        msg_id = st.read(TOPIC, 1, 10, 1)[0].msg_id
    flip_field(path, victim.phy_offset, base, field)
    with Store.open(root) as st:
        with pytest.raises(CorruptRecordError) as info:
            st.query_msg_id(msg_id)
        assert (info.value.path, info.value.offset) == (path, victim.phy_offset)
        assert info.value.exit_code == 4
        with pytest.raises(CorruptRecordError):
            st.read_at(victim.phy_offset)


def test_recovery_spot_check_reports_a_bad_header(
    written: tuple[Path, Ledger], caplog: pytest.LogCaptureFixture
) -> None:
    """After a crash, the last record each queue holds below the checkpoint is spot-checked,
    header included: the bad header is reported, and nothing is cut."""
    root, ledger = written
    victim = ledger.queues[(TOPIC, 1)][-1]
    path, base = commitlog_file(root, victim.phy_offset)
    flip_field(path, victim.phy_offset, base, "QUEUEOFFSET")
    (root / L.FILE_ABORT).touch()  # as a crashed writer leaves it
    with caplog.at_level(logging.WARNING, logger="mqtier.store.recovery"), Store.open(root) as st:
        end = st.commitlog.durable_end
    assert f"{path.name} @ {victim.phy_offset}: header field QUEUEOFFSET" in caplog.text
    with Store.open(root, create=True) as st:  # a writable open recovers on disk
        assert st.commitlog.durable_end == end  # no acknowledged record was cut
        for key, entries in ledger.queues.items():
            if key != (TOPIC, 1):
                assert [as_entry(m) for m in st.read(*key, 0, 1000)] == entries
        with pytest.raises(CorruptRecordError, match="QUEUEOFFSET"):
            st.read(TOPIC, 1, 0, 1000)


# -- a copy of the real RocketMQ store-b -----------------------------------------------------------


def store_b_units(root: Path) -> list[tuple[int, int]]:
    """(commit-log offset, size) of each unit in store-b's on-disk consume queue abc/0."""
    out = []
    qdir = root / "consumequeue" / "abc" / "0"
    for p in sorted(qdir.iterdir(), key=lambda p: int(p.name)):
        data = p.read_bytes()
        for phy, size, _tag in L.CQ_UNIT.iter_unpack(data[: len(data) // 20 * 20]):
            if size <= 0:
                break
            out.append((phy, size))
    return out


@pytest.mark.fixtures
@pytest.mark.parametrize("field", list(FLIPS))
def test_rocketmq_store_b(store_b: Path, tmp_path: Path, field: str) -> None:
    victim = 20  # in the consume queue on disk (56 units)
    phy = store_b_units(store_b)[victim][0]
    with Store.open(store_b) as st:
        before: list[Entry] = [as_entry(m) for m in st.read("abc", 0, 0, victim)]
        broker = st.config.broker_name
    path, base = commitlog_file(store_b, phy)
    flip_field(path, phy, base, field)

    assert_read_fails(store_b, "abc", 0, path.name, phy)
    assert_inspect_reports(path, phy, base, field)
    url = f"file://{tmp_path / 'cold'}"
    # store-b's broker crashed (abort, no lock holder) and left no mqtier checkpoint: a
    # read-only open scans from RocketMQ's crash rule, meets the damage (a framing field) or
    # not, and reads on from what the consume queue covers (the victim is inside it). So the
    # read that meets the record finds the damage, whichever field it is in, and the queue is
    # tiered up to the record before it.
    dispatch_fails(store_b, url, path.name, phy, "abc/0 is tiered up to offset")

    cold = open_cold_store(url)
    assert load_catalog(cold, broker).next_offset(("abc", 0)) == victim
    assert cold_view(cold, broker) == {("abc", 0): before}


# -- the check itself -------------------------------------------------------------------------------


def test_check_record_header_names_field_expected_and_found() -> None:
    rec = encode_record(
        topic=b"orders", queue_id=3, flag=0, queue_offset=7, phy_offset=4096, sysflag=0,
        born_ts=1_700_000_000_000, born_host=(b"\x7f\x00\x00\x01", 1),
        store_ts=1_700_000_000_001, store_host=(b"\x7f\x00\x00\x01", 2), body=b"hello",
        properties=b"KEYS\x01k\x02",
    )  # fmt: skip
    assert check_record(rec, 0, len(rec), verify_crc=True) == len(rec)
    good: dict[str, Any] = {
        "expect_phy": 4096,
        "expect_topic": "orders",
        "expect_queue": 3,
        "expect_queue_offset": 7,
        "expect_size": len(rec),
    }
    check_record_header(rec, 0, **good)
    wrongs: list[tuple[str, dict[str, Any]]] = [
        ("PHYSICALOFFSET", {"expect_phy": 4097}),
        ("TOPIC", {"expect_topic": "orderz"}),
        ("QUEUEID", {"expect_queue": 2}),
        ("QUEUEOFFSET", {"expect_queue_offset": 8}),
        ("TOTALSIZE", {"expect_size": len(rec) + 1}),
    ]
    for name, wrong in wrongs:
        args = good | wrong
        with pytest.raises(CorruptRecordError) as info:
            check_record_header(rec, 0, **args, path="x/00000000000000000000")
        msg = str(info.value)  # named by the offset the record was read at
        assert msg.startswith(f"00000000000000000000 @ {args['expect_phy']}: header field {name}:")
        assert "expected" in msg and "found" in msg


@pytest.mark.fixtures
@pytest.mark.parametrize(("at", "mask"), [(20, 0xFF), (26, 0x01)], ids=["negative", "gap"])
def test_recovery_refuses_to_replay_a_bad_queue_offset(store_b: Path, at: int, mask: int) -> None:
    """store-b's records past its 56 queue units are replayed by a writable open. One whose
    QUEUEOFFSET is negative, or beyond its queue's next offset, is refused by name (exit 4):
    dispatching it crashed recovery (exit 70) or would fill the queue with placeholders."""
    victim_offset = 100  # past the consume queue on disk
    phy = 0
    for base, path in sorted(
        (int(p.name), p) for p in (store_b / "commitlog").iterdir() if p.stat().st_size
    ):
        data = path.read_bytes()
        pos = 0
        while pos + 8 <= len(data) and L.RECORD_SIZE_MAGIC.unpack_from(data, pos)[1] == L.MAGIC_V1:
            if L.INT64.unpack_from(data, pos + L.POS_QUEUE_OFFSET)[0] == victim_offset:
                phy = base + pos
                break
            pos += L.INT32.unpack_from(data, pos)[0]
        if phy:
            break
    assert phy
    path, base = commitlog_file(store_b, phy)
    data = bytearray(path.read_bytes())
    data[phy - base + at] ^= mask
    path.write_bytes(bytes(data))
    res = run("recover", "--store", str(store_b), "--json")
    assert res.exit_code == 4, res.output
    assert f"{path.name} @ {phy}: header field QUEUEOFFSET" in res.stderr


@pytest.mark.parametrize("field", ["QUEUEOFFSET", "QUEUEID", "TOPIC", "SYSFLAG", "STORETIMESTAMP"])
def test_store_b_tail_record_with_a_bad_header_ends_the_read_only_view(
    store_b: Path, tmp_path: Path, field: str
) -> None:
    """A record past the consume queue on disk (store-b's crashed broker left 123 such) is
    dispatched in memory by a read-only open: a bad header there must neither make a phantom
    queue nor hide the queue's later records silently. The view ends before it, says so, and
    dispatch tiers up to it and exits 4."""
    victim = 100  # past the 56 units on disk
    with Store.open(store_b) as st:
        phy = st.read("abc", 0, victim, 1)[0].phy_offset
        broker = st.config.broker_name
    path, base = commitlog_file(store_b, phy)
    flip_field(path, phy, base, field)

    res = run("offsets", "--store", str(store_b), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [(q["topic"], q["queue"], q["max_offset"]) for q in doc["queues"]] == [
        ("abc", 0, victim)
    ]
    assert doc["health"]["damaged"].startswith(f"commitlog/{path.name} @ {phy}: header field")
    assert f"{path.name} @ {phy}" in res.stderr and "not shown" in res.stderr

    url = f"file://{tmp_path / 'cold'}"
    res = run("dispatch", "--store", str(store_b), "--to", url, "--force")
    assert res.exit_code == 4, res.output
    assert f"{path.name} @ {phy}" in res.stderr
    cold = open_cold_store(url)
    assert load_catalog(cold, broker).next_offset(("abc", 0)) == victim
