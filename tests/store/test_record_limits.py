"""Commit-log sizing and files (IPv6 hosts, records larger than a file, spares and gaps), and
opening a store whose lock another process takes meanwhile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mqtier import Message, Store
from mqtier.errors import ConfigError, MessageTooLargeError, StoreLockedError
from mqtier.format.layout import offset_file_name
from mqtier.store.commitlog import READ_AHEAD_BYTES
from mqtier.store.fileio import create_prewritten
from mqtier.store.store import AppendResult
from tests.geometry import TINY


def test_an_ipv6_store_host_sizes_and_reads_its_records(tmp_path: Path) -> None:
    """IPv6 hosts take 24 more header bytes; units, results and file rolls must count them."""
    cfg = TINY.with_changes(store_host="[::1]:10911")
    bodies = [f"message {i} ".encode() * (i % 40 + 1) * 3 for i in range(300)]  # rolls files
    with Store.open(tmp_path / "s", create=True, config=cfg) as st:
        results = st.append_batch(
            [Message("v6", b, queue_id=i % 3, keys=(f"K{i}",)) for i, b in enumerate(bodies)]
        )
        assert st.commitlog.durable_end == results[-1].phy_offset + results[-1].size
        assert len(st.commitlog.files) > 2
    with Store.open(tmp_path / "s") as st:
        for i, (r, body) in enumerate(zip(results, bodies, strict=True)):
            assert len(r.msg_id) == 56
            got = st.read("v6", r.queue_id, r.queue_offset, 1)
            assert [(m.body, m.phy_offset, m.store_host) for m in got] == [
                (body, r.phy_offset, (bytes(15) + b"\x01", 10911))
            ]
            assert st.query_msg_id(r.msg_id).body == body
            if i % 50 == 0:
                assert [m.body for m in st.query_key("v6", f"K{i}")] == [body]


def test_a_record_larger_than_a_file_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """The body limit is half a tiny file; long properties can still push the record past it."""
    with Store.open(tmp_path / "s", create=True, config=TINY) as st:
        st.append(Message("t", b"first", queue_id=0))
        end = st.commitlog.durable_end
        body = b"x" * TINY.max_message_bytes  # at the body limit: accepted on its own
        big = Message("t", body, queue_id=0, properties={"p": "v" * 32700})
        with pytest.raises(MessageTooLargeError, match="commit-log file holds"):
            st.append(big)
        assert st.commitlog.durable_end == end
        st.append(Message("t", body, queue_id=0))  # the same body without them fits
    with Store.open(tmp_path / "s", writable=True) as st:  # and the store reopens
        assert [len(m.body) for m in st.read("t", 0, 0, 10)] == [5, len(body)]


def _files(root: Path) -> list[int]:
    return sorted(int(p.name) for p in (root / "commitlog").iterdir() if p.name.isdigit())


def test_rollback_removes_a_spare_pre_written_past_the_new_end(tmp_path: Path) -> None:
    """The background pre-write makes the file after the current one before it is tracked; a
    rollback into an earlier file must remove it too, or it would sit beyond a gap."""
    root = tmp_path / "s"
    size = TINY.commitlog_file_bytes
    st = Store.open(root, create=True, config=TINY)
    kept = st.append_batch([Message("t", b"k" * 300, queue_id=0) for _ in range(150)])
    start = st.commitlog.durable_end
    st.append_batch([Message("t", b"r" * 300, queue_id=0) for _ in range(600)])
    last = _files(root)[-1]
    create_prewritten(root / "commitlog" / offset_file_name(last + size), size)  # the spare
    st.rollback_to(start)
    assert _files(root) == list(range(0, start // size * size + 1, size))
    with Store.open(root, writable=True) as st:
        more = st.append_batch([Message("t", b"m" * 300, queue_id=0) for _ in range(600)])
        assert st.wait_dispatched(10)
        on_disk, tracked = _files(root), [f.base for f in st.commitlog.files]
        assert on_disk == list(range(0, len(on_disk) * size, size))  # no gap
        assert tracked == on_disk[: len(tracked)]  # at most a spare beyond the tracked ones
        bodies = [m.body for m in st.read("t", 0, 0, 2000)]
        assert bodies == [b"k" * 300] * len(kept) + [b"m" * 300] * len(more)
        assert sum(1 for _ in st.commitlog.scan(0)) == len(kept) + len(more)


def test_open_drops_an_empty_file_beyond_a_gap_and_refuses_a_full_one(tmp_path: Path) -> None:
    root = tmp_path / "s"
    size = TINY.commitlog_file_bytes
    with Store.open(root, create=True, config=TINY) as st:
        st.append_batch([Message("t", b"k" * 300, queue_id=0) for _ in range(10)])
    stray = root / "commitlog" / offset_file_name(5 * size)
    create_prewritten(stray, size)  # as an older rollback could leave it
    with Store.open(root, writable=True) as st:
        assert [f.base for f in st.commitlog.files] == [0, size][: len(st.commitlog.files)]
        assert len(st.read("t", 0, 0, 100)) == 10
    assert not stray.exists()
    stray.write_bytes(b"\x00\x00\x01\x00" + bytes(size - 4))  # not empty: refuse to guess
    with pytest.raises(ConfigError, match="not contiguous"):
        Store.open(root, writable=True)


def test_a_locked_store_reads_but_refuses_a_writer(tmp_path: Path) -> None:
    """Another process holds the lock: a default open reads, a writer fails with exit 6."""
    root = tmp_path / "s"
    with Store.open(root, create=True, config=TINY) as st:
        st.append_batch([Message("t", b"m", queue_id=0) for _ in range(5)])
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with Store.open(root) as st:
            assert st.read_only
            assert st.health.state == "in_use"
            assert len(st.read("t", 0, 0, 10)) == 5
        for kwargs in ({"writable": True}, {"create": True}):
            with pytest.raises(StoreLockedError):
                Store.open(root, **kwargs)  # type: ignore[arg-type]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


_HOLD_LOCK = (
    "import sys, time; from mqtier import Store; st = Store.open(sys.argv[1], writable=True);"
    "print('ready', flush=True); time.sleep(60)"
)


@pytest.mark.parametrize("reopen", [False, True], ids=["cached", "from-disk"])
def test_reads_by_key_and_id_return_records_shorter_and_longer_than_one_read_ahead(
    tmp_path: Path, reopen: bool
) -> None:
    """A read without a size reads READ_AHEAD_BYTES and decodes what fits; a longer record (or
    the store's last, whose read stops at the durable end) must come back whole all the same."""
    sizes = [1, READ_AHEAD_BYTES - 200, READ_AHEAD_BYTES, READ_AHEAD_BYTES * 3, 30_000, 7]
    bodies = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    with Store.open(tmp_path / "s", create=True, config=TINY) as st:
        results = st.append_batch(
            [Message("big", b, keys=(f"K{i}",)) for i, b in enumerate(bodies)]
        )
        st.wait_dispatched()
        if not reopen:
            _assert_read_whole(st, results, bodies)
    if reopen:
        with Store.open(tmp_path / "s") as st:
            _assert_read_whole(st, results, bodies)


def _assert_read_whole(st: Store, results: list[AppendResult], bodies: list[bytes]) -> None:
    for i, (r, body) in enumerate(zip(results, bodies, strict=True)):
        assert st.read_at(r.phy_offset).body == body
        assert st.query_msg_id(r.msg_id).body == body
        assert [m.body for m in st.query_key("big", f"K{i}")] == [body]
