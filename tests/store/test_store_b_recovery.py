"""Recovering a real RocketMQ store left by a crashed broker (fixture store-b).

store-b has an ``abort`` file, a zeroed ``checkpoint``, no mqtier dispatch checkpoint and no index;
its consume queue ``abc/0`` holds only 56 units while the commit log holds 179 records. The
expected messages are read here with an independent parser of the commit-log bytes, so the test
does not trust mqtier's own decoder.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from mqtier import Store

pytestmark = pytest.mark.fixtures

RECORDS = 179
CQ_UNITS = 56
MAGIC_V1 = 0xDAA320A7
BLANK = 0xCBD43194
HEAD = struct.Struct(">iIiiiqqiq4siq4siiqi")  # the v4/v4 header of docs/rocketmq-formats.md


@dataclass(frozen=True)
class Rec:
    phy: int
    size: int
    queue_id: int
    queue_offset: int
    body: bytes
    topic: str
    properties: dict[str, str]


def parse_commitlog(root: Path) -> list[Rec]:
    """Every record of ``root/commitlog``, straight from the bytes."""
    out = []
    files = sorted(p for p in (root / "commitlog").iterdir() if p.stat().st_size)
    for path in files:
        data = path.read_bytes()
        base = int(path.name)
        pos = 0
        while pos + 8 <= len(data):
            size, magic = struct.unpack_from(">iI", data, pos)
            if magic == BLANK:
                break
            if magic != MAGIC_V1 or size <= 0:
                break
            h = HEAD.unpack_from(data, pos)
            crc, queue_id, queue_offset, phy, body_len = h[2], h[3], h[5], h[6], h[-1]
            assert phy == base + pos
            p = pos + HEAD.size
            body = data[p : p + body_len]
            assert zlib.crc32(body) & 0x7FFFFFFF == crc
            p += body_len
            tlen = data[p]
            topic = data[p + 1 : p + 1 + tlen].decode()
            p += 1 + tlen
            (plen,) = struct.unpack_from(">h", data, p)
            raw = data[p + 2 : p + 2 + plen].decode()
            assert p + 2 + plen == pos + size
            props = dict(e.split("\x01", 1) for e in raw.split("\x02") if "\x01" in e)
            out.append(Rec(phy, size, queue_id, queue_offset, body, topic, props))
            pos += size
    return out


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_fixture_is_what_the_tests_assume(store_b: Path) -> None:
    recs = parse_commitlog(store_b)
    assert len(recs) == RECORDS
    assert {(r.topic, r.queue_id) for r in recs} == {("abc", 0)}
    assert [r.queue_offset for r in recs] == list(range(RECORDS))
    assert (store_b / "abort").exists()
    assert not (store_b / "mqtier.dispatch").exists()
    cq_bytes = sum(p.stat().st_size for p in (store_b / "consumequeue/abc/0").iterdir())
    units = [
        struct.unpack_from(">qiq", (store_b / "consumequeue/abc/0" / p.name).read_bytes(), i)
        for p in sorted((store_b / "consumequeue/abc/0").iterdir())
        for i in range(0, p.stat().st_size, 20)
    ]
    assert cq_bytes // 20 == len(units)
    assert sum(1 for phy, size, _ in units if size > 0) == CQ_UNITS


def test_open_rebuilds_the_consume_queue_of_a_crashed_broker(store_b: Path) -> None:
    recs = parse_commitlog(store_b)
    with Store.open(store_b, writable=True) as st:
        assert st.recovery is not None
        assert st.recovery.clean_shutdown is False
        msgs = st.read("abc", 0, 0, 1000)
        assert [m.queue_offset for m in msgs] == list(range(RECORDS))
        assert [(m.phy_offset, m.size, m.body) for m in msgs] == [
            (r.phy, r.size, r.body) for r in recs
        ]
        assert [m.properties for m in msgs] == [r.properties for r in recs]
        # The index did not exist: recovery built it from the commit log.
        key = recs[100].properties["KEYS"]
        want = sorted(r.phy for r in recs if key in r.properties["KEYS"].split(" "))
        assert [m.phy_offset for m in st.query_key("abc", key)] == want
        for r in recs[::17]:
            (k,) = r.properties["KEYS"].split(" ")
            assert r.phy in [m.phy_offset for m in st.query_key("abc", k)]
    # Recovered and cleanly closed: the next open has nothing to do.
    with Store.open(store_b, writable=True) as st:
        assert st.recovery is not None
        assert st.recovery.clean_shutdown is True
        assert st.recovery.changed is False
        assert len(st.read("abc", 0, 0, 1000)) == RECORDS


def test_read_only_open_changes_nothing(store_b: Path) -> None:
    recs = parse_commitlog(store_b)
    before = _hashes(store_b)
    try:
        with Store.open(store_b) as st:
            assert st.read_only
            assert st.recovery is not None
            assert st.recovery.clean_shutdown is False
            assert st.recovery.dry_run is True
            # Every durable message: the broker's 56 units, the rest dispatched in memory.
            msgs = st.read("abc", 0, 0, 1000)
            assert [m.queue_offset for m in msgs] == list(range(RECORDS))
            assert [(m.phy_offset, m.body) for m in msgs] == [(r.phy, r.body) for r in recs]
            assert [(q.min_offset, q.max_offset) for q in st.offsets()] == [(0, RECORDS)]
            late = recs[-1]  # past the broker's consume queue and its (absent) index
            (key,) = late.properties["KEYS"].split(" ")
            assert late.phy in [m.phy_offset for m in st.query_key("abc", key)]
            assert st.offset_by_time("abc", 0, 0) == 0
    finally:
        assert _hashes(store_b) == before  # holds even when the open fails


@pytest.mark.parametrize("units_kept", [10, CQ_UNITS])
def test_a_consume_queue_far_behind_a_clean_store_is_filled_not_holed(
    store_b: Path, units_kept: int
) -> None:
    """store-b as if shut down cleanly, its queue far behind the last three commit-log files
    (where RocketMQ's rule starts a clean scan): the replay starts at the queue's end, so
    every message is readable, and none is left as a placeholder."""
    recs = parse_commitlog(store_b)
    (store_b / "abort").unlink()
    cut = units_kept * 20  # byte position in the queue where its units stop
    for path in (store_b / "consumequeue/abc/0").iterdir():
        base = int(path.name)
        if base >= cut and base > 0:
            path.unlink()
        elif base + path.stat().st_size > cut:
            data = bytearray(path.read_bytes())
            data[cut - base :] = bytes(len(data) - (cut - base))
            path.write_bytes(bytes(data))
    with Store.open(store_b, writable=True) as st:
        assert st.recovery is not None and st.recovery.clean_shutdown is True
        assert st.recovery.redispatch_from == recs[units_kept].phy
        msgs = st.read("abc", 0, 0, 1000)
        assert [(m.queue_offset, m.body) for m in msgs] == [(r.queue_offset, r.body) for r in recs]
