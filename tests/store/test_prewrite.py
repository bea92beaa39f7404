"""Zeros ahead of the writer: a bounded window, never over a record, failures stop the writer."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import threading
from pathlib import Path

import pytest

from mqtier import Message, Store, StoreConfig
from mqtier.store.prewrite import ZeroAhead

FILE = 1 << 20  # 1 MiB files: the window is half a file, steps of a quarter of that


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_a_new_store_takes_disk_for_its_data_and_a_window_not_a_whole_file(
    tmp_path: Path,
) -> None:
    cfg = StoreConfig(commitlog_file_bytes=64 << 20)
    with Store.open(tmp_path / "s", create=True, config=cfg) as st:
        st.append(Message("t", b"x" * 1000, queue_id=0))
        files = sorted((tmp_path / "s" / "commitlog").iterdir())
        assert [p.stat().st_size for p in files] == [64 << 20]  # RocketMQ's size and name
        st.append_batch([Message("t", b"y" * 1000, queue_id=0) for _ in range(2000)])
        end = st.commitlog.durable_end
    # What was written plus the zeros ahead of it (half a file at most here), not 64 MiB.
    assert end <= allocated(files[0]) <= end + (32 << 20) + (1 << 20)
    with Store.open(tmp_path / "s") as st:
        assert len(st.read("t", 0, 0, 5000)) == 2001


def test_zeros_never_land_on_what_the_writer_claimed(tmp_path: Path) -> None:
    """The writer's protocol (claim, then write) against a pre-writer with tiny steps, which
    races it over the same bytes: every byte the writer wrote is still there."""
    path = tmp_path / "00000000000000000000"
    zeros = ZeroAhead(lambda base: tmp_path / f"{base:020d}", FILE, 0, window=64 << 10, step=4096)
    rng = random.Random(3)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    expected = bytearray()
    try:
        pos = 0
        while pos < FILE // 2 - 20_000:
            data = rng.randbytes(rng.randrange(1, 20_000))
            zeros.claim(pos, pos + len(data))
            assert os.pwrite(fd, data, pos) == len(data)
            expected += data
            pos += len(data)
            if rng.random() < 0.1:  # let the pre-writer run ahead, over what comes next
                for _ in range(1000):
                    if zeros.zeroed_to >= pos + 8192:
                        break
                    threading.Event().wait(0.001)
        assert zeros.error is None
        assert zeros.zeroed_to > FILE // 4  # it wrote zeros over much of what was then written
    finally:
        zeros.stop()
    assert os.pread(fd, len(expected), 0) == bytes(expected)
    assert os.pread(fd, FILE - len(expected), len(expected)) == bytes(FILE - len(expected))
    os.close(fd)


def test_a_failing_pre_writer_stops_the_writer_naming_the_file(tmp_path: Path) -> None:
    """A pre-writer that cannot write (here: its file is a directory) makes the next claim
    raise its error: after a failed write or sync the writer must stop."""
    (tmp_path / f"{0:020d}").mkdir()
    zeros = ZeroAhead(lambda base: tmp_path / f"{base:020d}", FILE, 0, window=64 << 10, step=4096)
    try:
        zeros.claim(0, 100)
        for _ in range(200):
            if zeros.error is not None:
                break
            threading.Event().wait(0.01)
        assert zeros.error is not None
        with pytest.raises(OSError) as raised:
            zeros.claim(100, 200)
        assert str(tmp_path / f"{0:020d}") in str(raised.value)
    finally:
        zeros.stop()


def _window_written(st: Store, upto: int) -> None:
    zeros = st.commitlog._zeros
    assert zeros is not None
    for _ in range(1000):
        if zeros.zeroed_to >= upto:
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"zeros reached {zeros.zeroed_to}, not {upto}")


def test_a_reopened_store_does_not_write_its_window_of_zeros_again(tmp_path: Path) -> None:
    """Once the window is written, a writable open (each small cron job's) writes no zeros."""
    cfg = StoreConfig(commitlog_file_bytes=8 << 20)
    with Store.open(tmp_path / "s", create=True, config=cfg) as st:
        st.append(Message("t", b"x" * 1000, queue_id=0))
        _window_written(st, 4 << 20)  # half a file here
    with Store.open(tmp_path / "s", writable=True) as st:
        _window_written(st, 4 << 20)  # (fills what the first run skipped, if it fell behind)
    path = next((tmp_path / "s" / "commitlog").iterdir())
    before = path.stat()
    with Store.open(tmp_path / "s", writable=True) as st:
        _window_written(st, 4 << 20)  # it takes the zeros already there as written
    after = path.stat()
    assert (after.st_mtime_ns, after.st_blocks) == (before.st_mtime_ns, before.st_blocks)


def test_a_claim_right_after_the_start_writes_no_zeros_where_blocks_are_written(
    tmp_path: Path,
) -> None:
    """The writer claims as soon as it opens; the blocks already there must count by then
    (a claim that saw only the start asked for one more step of zeros on every reopen)."""
    path = tmp_path / f"{0:020d}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, FILE)
    os.pwrite(fd, b"r" * 1000 + bytes(FILE // 2 - 1000), 0)  # a record, then the window
    os.fsync(fd)
    os.close(fd)
    before = path.stat()
    for _ in range(10):
        zeros = ZeroAhead(lambda base: tmp_path / f"{base:020d}", FILE, 1000, step=4096)
        zeros.claim(1000, 1000)
        for _ in range(20):  # time for a step it should not take
            if zeros.zeroed_to > FILE // 2:
                break
            threading.Event().wait(0.005)
        zeros.stop()
    after = path.stat()
    assert (after.st_mtime_ns, after.st_blocks) == (before.st_mtime_ns, before.st_blocks)


def test_a_store_copied_sparse_keeps_records_whose_bodies_hold_zero_blocks(
    tmp_path: Path,
) -> None:
    """``cp --sparse=always`` (rsync -S, tar -S) turns any zero block into a hole, also one
    inside a message body. Scans must read such a record whole, not take the hole for the end
    of data: a writable open after a crash would otherwise cut acknowledged records."""
    cfg = StoreConfig(commitlog_file_bytes=1 << 20, prewrite=False)
    src, copy = tmp_path / "src", tmp_path / "copy"
    with Store.open(src, create=True, config=cfg) as st:
        st.append_batch([Message("t", b"a" * 100, queue_id=0) for _ in range(10)])
        st.append(Message("t", bytes(20_000), queue_id=0))  # five zero blocks at least
        st.append_batch([Message("t", b"b" * 100, queue_id=0) for _ in range(10)])
        end = st.commitlog.durable_end
    subprocess.run(["cp", "-a", "--sparse=always", str(src), str(copy)], check=True)
    log = next((copy / "commitlog").iterdir())
    fd = os.open(log, os.O_RDONLY)
    try:
        if os.lseek(fd, 0, os.SEEK_HOLE) >= end:
            pytest.skip("this file system made no hole inside the data")
    finally:
        os.close(fd)
    (copy / "abort").write_text("1")  # as if it crashed: the open scans the whole log
    (copy / "mqtier.dispatch").unlink()
    with Store.open(copy) as st:
        assert st.commitlog.durable_end == end
        assert len(st.read("t", 0, 0, 100)) == 21
    with Store.open(copy, writable=True) as st:
        assert st.commitlog.durable_end == end
        msgs = st.read("t", 0, 0, 100)
        assert len(msgs) == 21 and msgs[10].body == bytes(20_000)


def test_a_full_disk_refusing_the_zeros_stops_only_the_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on the zeros (not on a sync): the writer goes on into the holes."""
    from mqtier.store import prewrite

    def full(fd: int, start: int, end: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(prewrite, "zero_range", full)
    zeros = ZeroAhead(lambda base: tmp_path / f"{base:020d}", FILE, 0, window=64 << 10, step=4096)
    try:
        zeros.claim(0, 0)
        zeros._thread.join(5)
        assert not zeros._thread.is_alive() and zeros.error is None
        zeros.claim(0, 100)  # no error: the writer goes on
    finally:
        zeros.stop()
