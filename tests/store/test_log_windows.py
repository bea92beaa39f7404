"""The commit log scanned and replayed a window at a time accepts, rejects and derives exactly
what the per-record path does (mqtier.format.recordbatch, CommitLog.scan_windows,
mqtier.store.replay), on logs of every record kind with damage anywhere."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtier import Store, StoreConfig
from mqtier.errors import CorruptRecordError, InvalidTopicError
from mqtier.format import layout as L
from mqtier.format.message import (
    check_record_header,
    decode_properties,
    dispatch_fields,
    encode_record,
)
from mqtier.store import commitlog as commitlog_module
from mqtier.store import replay as replay_module
from mqtier.store.commitlog import CommitLog

FILE_BYTES = 1 << 16
TS = 1_700_000_000_000
V4 = (bytes([10, 0, 0, 1]), 10911)
V6 = (bytes(range(16)), 10911)

names = st.sampled_from(["KEYS", "UNIQ_KEY", "TAGS", "WAIT", "K", "KEYSX", "é"])
values = st.one_of(
    st.text(alphabet=st.sampled_from("ab \x01é中0"), max_size=6),
    st.text(alphabet="ab", min_size=250, max_size=270),  # past what the arrays hash
)
entries = st.lists(st.tuples(names, values), max_size=5).map(
    lambda es: "".join(f"{n}\x01{v}\x02" for n, v in es).encode()
)
# Now and then properties no writer makes: empty entries, no name, no 0x01, bad UTF-8.
raw_props = st.lists(
    st.sampled_from([b"\x01", b"\x02", b"a", b"\xc3\xa9", b"\xff", b"\xc3"]), max_size=8
).map(b"".join)
# A KEYS token equal to the UNIQ_KEY is indexed once.
same_key = st.tuples(values.filter(bool), st.sampled_from(["", " b"])).map(
    lambda vs: f"UNIQ_KEY\x01{vs[0]}\x02KEYS\x01{vs[0]}{vs[1]}\x02".encode()
)
records = st.lists(
    st.fixed_dictionaries(
        {
            # v2 past 127 bytes, and past the widest topic replay groups as arrays; a NUL
            # inside (a torn topic no queue can be made for)
            "topic": st.sampled_from(["t", "orders", "é" * 3, "x" * 130, "y" * 300, "o\x00s"]),
            "queue_id": st.integers(0, 2),
            "sysflag": st.sampled_from([0, 0, 0, 4, 8, 12]),  # prepared, commit, rollback
            "born_host": st.sampled_from([V4, V4, V6]),
            "store_host": st.sampled_from([V4, V4, V6]),
            "body": st.binary(max_size=40),
            "props": st.one_of(entries, entries, entries, raw_props, same_key),
            "crc_prop": st.booleans(),
        }
    ),
    min_size=1,
    max_size=25,
)


def _log(recs: list[dict[str, Any]]) -> bytes:
    out = bytearray()
    qoffs: dict[tuple[str, int], int] = {}
    for r in recs:
        key = (r["topic"], r["queue_id"])
        props = r["props"]
        rec = encode_record(
            topic=r["topic"].encode(),
            queue_id=r["queue_id"],
            flag=0,
            queue_offset=qoffs.get(key, 0),
            phy_offset=len(out),
            sysflag=r["sysflag"],
            born_ts=TS,
            born_host=r["born_host"],
            store_ts=TS + len(out),
            store_host=r["store_host"],
            body=r["body"],
            properties=props,
            append_prop_crc=r["crc_prop"],
        )
        if len(out) + len(rec) > FILE_BYTES - L.BLANK_MIN_BYTES:
            break
        out += rec
        if r["sysflag"] in (0, 8):
            qoffs[key] = qoffs.get(key, 0) + 1
    return bytes(out)


def _commitlog(root: Path, data: bytes) -> CommitLog:
    d = root / "commitlog"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / f"{0:020d}").write_bytes(data + bytes(FILE_BYTES - len(data)))
    return CommitLog(d, FILE_BYTES, writable=False)


def _outcome(it: Any) -> tuple[list[Any], str | None]:
    seen: list[Any] = []
    try:
        seen.extend(it)  # (what was yielded before an error is kept)
    except CorruptRecordError as exc:
        return seen, f"{exc.offset}: {exc.detail}"
    return seen, None


damage = st.one_of(
    st.none(),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("zero"), st.integers(0, 10_000), st.integers(1, 40)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
)


def _damaged(data: bytes, how: Any) -> bytes:
    if how is None or not data:
        return data
    kind, at, arg = how
    at %= len(data)
    b = bytearray(data)
    if kind == "flip":
        b[at] ^= arg
    elif kind == "zero":
        b[at : at + arg] = bytes(len(b[at : at + arg]))
    else:
        del b[at:]
    return bytes(b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=records, how=damage, verify_crc=st.booleans())
def test_windows_accept_and_reject_exactly_what_the_per_record_scan_does(
    tmp_path_factory: pytest.TempPathFactory, recs: list[dict[str, Any]], how: Any, verify_crc: bool
) -> None:
    root = tmp_path_factory.mktemp("log")
    cl = _commitlog(root, _damaged(_log(recs), how))
    try:
        plain, plain_error = _outcome(
            (off, size) for off, size, _, _ in cl.scan(0, verify_crc=verify_crc)
        )
        windows: list[tuple[int, int]] = []
        fields_seen: list[tuple[Any, ...]] = []
        expected_fields: list[tuple[Any, ...]] = []

        def each() -> Any:
            for w in cl.scan_windows(0, verify_crc=verify_crc):
                f = w.fields
                assert f is not None
                for i, (at, size) in enumerate(zip(w.starts, w.sizes, strict=True)):
                    off = w.origin + at
                    topic, qid, qoff, sysflag, store_ts, _, _ = dispatch_fields(w.buf, at)
                    try:
                        check_record_header(w.buf, at, expect_phy=off)
                        header = True
                    except CorruptRecordError:
                        header = False
                    expected_fields.append((qid, qoff, sysflag, store_ts, header))
                    fields_seen.append(
                        (
                            int(f.queue_id[i]),
                            int(f.queue_offset[i]),
                            int(f.sysflag[i]),
                            int(f.store_ts[i]),
                            bool(f.header_ok[i]) and int(f.phy[i]) == off,
                        )
                    )
                    assert topic  # (every record that passes has one)
                    yield off, size

        windows, windows_error = _outcome(each())
        assert windows == plain
        assert windows_error == plain_error
        assert fields_seen == expected_fields
        end_plain = cl.find_end(0, verify_crc=verify_crc)
        end_windows = cl.find_end(0, verify_crc=verify_crc, arrays=True)
        assert (end_windows.offset, end_windows.reason) == (end_plain.offset, end_plain.reason)
        # A scan that chooses (a read-only open's) switches to arrays part-way: the same again.
        with mock.patch.object(commitlog_module, "ARRAYS_AFTER_BYTES", 600):
            switched = _outcome(
                (w.origin + at, size)
                for w in cl.scan_windows(0, verify_crc=verify_crc, arrays=None)
                for at, size in zip(w.starts, w.sizes, strict=True)
            )
            end_switched = cl.find_end(0, verify_crc=verify_crc, arrays=None)
        assert switched == (plain, plain_error)
        assert (end_switched.offset, end_switched.reason) == (end_plain.offset, end_plain.reason)
    finally:
        cl.close()


def test_decode_properties_agrees_with_what_the_test_expects() -> None:
    # (the reference the property test compares with: the last entry of a name wins)
    assert decode_properties("KEYS\x01a\x02KEYS\x01b\x02") == {"KEYS": "b"}


def _derived_bytes(root: Path) -> list[tuple[str, bytes]]:
    """Consume-queue files by path, IndexFiles in order (named by the time they were made)."""
    queues = sorted(p for p in (root / "consumequeue").rglob("*") if p.is_file())
    out = [(str(p.relative_to(root)), p.read_bytes()) for p in queues]
    out.extend(("index", p.read_bytes()) for p in sorted((root / "index").glob("*")))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=records)
def test_a_rebuild_by_windows_writes_the_derived_files_the_per_record_replay_writes(
    tmp_path_factory: pytest.TempPathFactory, recs: list[dict[str, Any]]
) -> None:
    root = tmp_path_factory.mktemp("store")
    data = _log(recs)
    cfg = StoreConfig(commitlog_file_bytes=FILE_BYTES, index_slots=64, index_items=256)
    Store.open(root, create=True, config=cfg).close()
    _commitlog(root, data).close()
    try:
        with Store.open(root, writable=True, rebuild=True) as store:
            assert store.rebuild_report is not None
            replayed = store.rebuild_report.messages
            accepted = sum(1 for _ in store.commitlog.scan(0))  # (recovery cut damage off)
        error = None
    except InvalidTopicError as exc:  # a torn topic: both ways refuse it, after the same work
        error, replayed, accepted = str(exc), 0, 0
    by_windows = _derived_bytes(root)

    def one_by_one(store: Store, w: Any, f: Any, nexts: Any) -> None:
        for at in w.starts:
            replay_module._replay_one(store, nexts, w.buf, at, w.origin + at)

    mp = pytest.MonkeyPatch()
    mp.setattr(replay_module, "_replay_window", one_by_one)
    try:
        with Store.open(root, writable=True, rebuild=True):
            pass
        error_one_by_one = None
    except InvalidTopicError as exc:
        error_one_by_one = str(exc)
    finally:
        mp.undo()
    assert error_one_by_one == error
    assert _derived_bytes(root) == by_windows
    assert replayed == accepted


@pytest.mark.parametrize(
    "props",
    [
        b"a\x01b\x02\x02c\x01d\x02",  # an empty entry between two
        b"a\x01\x02\x02",  # an empty entry last
        b"\x02a\x01b\x02",  # an empty entry first
        b"\x02",  # nothing but an empty entry
        b"\x01a\x02",  # no name
        b"a\x01b\x02cd\x02",  # no 0x01
        b"a\x01\xff\x02",  # not UTF-8
        b"a\x01\xc3\x02",  # a UTF-8 sequence cut short by the separator
        b"a\x01b",  # no final 0x02
    ],
)
@pytest.mark.parametrize("where", [0, 1, 2])
def test_damaged_properties_stop_both_scans_at_the_same_record(
    tmp_path: Path, props: bytes, where: int
) -> None:
    good = {"topic": "t", "queue_id": 0, "sysflag": 0, "born_host": V4, "store_host": V4,
            "body": b"x", "props": b"KEYS\x01k\x02", "crc_prop": False}  # fmt: skip
    recs = [dict(good) for _ in range(3)]
    recs[where]["props"] = props
    cl = _commitlog(tmp_path, _log(recs))
    try:
        plain = _outcome((off, size) for off, size, _, _ in cl.scan(0))
        windows = _outcome(
            (w.origin + at, size)
            for w in cl.scan_windows(0)
            for at, size in zip(w.starts, w.sizes, strict=True)
        )
        assert windows == plain
        assert plain[1] is not None and "properties" in plain[1]  # the damage was seen
        assert len(plain[0]) == where
    finally:
        cl.close()
