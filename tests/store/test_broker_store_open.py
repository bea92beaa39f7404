"""Opening a broker's store (no mqtier files) costs its tail, not its last commit-log files.

A broker-style store here is one mqtier wrote, with mqtier's own files taken away (its dispatch
checkpoint and derived-file manifest), so what is left is what a RocketMQ broker leaves:
commit log, consume queues, IndexFiles, ``checkpoint`` with timestamps, ``config/topics.json``
and, while it runs or after it crashed, ``abort`` (and mqtier's ``config/mqtier.json``, kept
only for the small test geometry, which a broker's default files do not need). The cost of an open is counted in bytes of
records scanned (``CommitLog.scanned_bytes``), not in time.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mqtier import Message, MessageRecord, Store
from mqtier.errors import CorruptRecordError
from mqtier.format import layout as L
from mqtier.format.checkpoint import Checkpoint
from tests.geometry import TINY

TOPIC = "orders"
QUEUES = 3
FILES = 6  # commit-log files of TINY's 64 KiB the store fills


def _entries(msgs: list[MessageRecord]) -> list[tuple[int, int, bytes, str | None]]:
    return [(m.queue_id, m.queue_offset, m.body, m.properties.get("KEYS")) for m in msgs]


def broker_store(root: Path, *, abort: bool) -> dict[int, list[tuple[int, int, bytes, str | None]]]:
    """Fill ``root`` over FILES commit-log files, then strip mqtier's files; returns what each
    queue holds."""
    rng = random.Random(5)
    with Store.open(root, create=True, config=TINY) as st:
        st.create_topic(TOPIC, QUEUES)
        while st.commitlog.durable_end < (FILES - 1) * TINY.commitlog_file_bytes + 20_000:
            st.append_batch(
                [
                    Message(
                        TOPIC,
                        rng.randbytes(rng.randrange(50, 900)),
                        queue_id=rng.randrange(QUEUES),
                        keys=(f"K{rng.randrange(400)}",),
                    )
                    for _ in range(40)
                ]
            )
    for name in (L.FILE_DISPATCH_CHECKPOINT, L.FILE_DERIVED_MANIFEST):
        (root / name).unlink()
    if abort:
        (root / L.FILE_ABORT).write_text("4242")
    with Store.open(root) as st:
        return {q: _entries(st.read(TOPIC, q, 0, 100_000)) for q in range(QUEUES)}


@contextmanager
def live_broker(root: Path, abort: bool) -> Iterator[None]:
    """With ``abort``: a process holding the store's lock, as a running broker does (an
    ``abort`` without one is a crash)."""
    if not abort:
        yield
        return
    code = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
        "fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root / L.FILE_LOCK)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def cut_queue_tail(root: Path, queue: int, units: int) -> None:
    """Zero the last ``units`` units of one consume queue, as a broker that had not dispatched
    (or flushed) them yet leaves it."""
    files = sorted((root / L.DIR_CONSUMEQUEUE / TOPIC / str(queue)).iterdir())
    data = [bytearray(p.read_bytes()) for p in files]
    flat = b"".join(data)
    used = next(i for i in range(0, len(flat), 20) if flat[i : i + 20] == bytes(20))
    cut_at = used - units * 20
    size = len(data[0])
    for i, (p, d) in enumerate(zip(files, data, strict=True)):
        lo = max(0, cut_at - i * size)
        if lo < size:
            d[lo:] = bytes(size - lo)
            p.write_bytes(bytes(d))


@pytest.mark.parametrize("abort", [False, True])
def test_read_only_open_of_a_broker_store_scans_nothing_its_queues_cover(
    tmp_path: Path, abort: bool
) -> None:
    root = tmp_path / "broker"
    expected = broker_store(root, abort=abort)
    with live_broker(root, abort), Store.open(root) as st:
        assert st.recovery is not None
        assert st.recovery.scan_from == st.commitlog.durable_end
        if abort:
            # After a crash the IndexFile's header names its last record (RocketMQ's
            # endPhyOffset, the start of the newest record it indexed), which is taken again.
            newest = max(m.phy_offset for q in range(QUEUES) for m in st.read(TOPIC, q, 0, 10**5))
            assert st.recovery.redispatch_from == newest
            assert st.recovery.messages_redispatched == 1
            # (three passes at most: the gap check, the count, the dispatch in memory)
            assert st.commitlog.scanned_bytes <= 3 * (st.commitlog.durable_end - newest)
        else:
            assert st.recovery.messages_redispatched == 0
            assert st.commitlog.scanned_bytes == 0  # not a byte of a record the queues hold
        assert {q: _entries(st.read(TOPIC, q, 0, 100_000)) for q in range(QUEUES)} == expected
        some = expected[1][7]
        assert some[3] is not None
        assert (1, 7) in {(m.queue_id, m.queue_offset) for m in st.query_key(TOPIC, some[3])}


@pytest.mark.parametrize("abort", [False, True])
def test_read_only_open_scans_only_the_records_past_its_queues(tmp_path: Path, abort: bool) -> None:
    root = tmp_path / "broker"
    expected = broker_store(root, abort=abort)
    with Store.open(root) as st:
        cut = [m for q in range(QUEUES) for m in st.read(TOPIC, q, len(expected[q]) - 5, 5)]
        end = st.commitlog.durable_end
    for q in range(QUEUES):
        cut_queue_tail(root, q, 5)  # the broker's reput is behind: its last 5 units each
    with live_broker(root, abort), Store.open(root) as st:
        rec = st.recovery
        assert rec is not None
        # Every record missing from its queue is dispatched again, in memory.
        assert rec.redispatch_from <= min(m.phy_offset for m in cut)
        assert st.health.undispatched == len(cut)
        # Found the end, checked for gaps, counted and dispatched the tail: a few passes over
        # it, and nothing of the files below it.
        low = min(rec.scan_from, rec.redispatch_from)
        assert 0 < st.commitlog.scanned_bytes <= 4 * (end - low) < end - st.commitlog.min_offset
        assert {q: _entries(st.read(TOPIC, q, 0, 100_000)) for q in range(QUEUES)} == expected


def test_after_a_crash_a_quiet_queue_that_lost_its_tail_is_read_whole(tmp_path: Path) -> None:
    """A crashed broker (``abort``, nobody holding the lock): a queue that went quiet early and
    lost its last units (a power loss; a quiet queue's file is flushed least often) has no
    record past the other queues' end. The view does not trust the queues' end then: it
    scans as RocketMQ's rule says, and every message is read."""
    root = tmp_path / "broker"
    expected = broker_store(root, abort=True)
    with Store.open(root) as st:
        quiet = min(range(QUEUES), key=lambda q: st.read(TOPIC, q, 0, 10**5)[-1].phy_offset)
    cut_queue_tail(root, quiet, 5)
    with Store.open(root) as st:
        assert st.health.undispatched >= 5
        assert {q: _entries(st.read(TOPIC, q, 0, 100_000)) for q in range(QUEUES)} == expected


@pytest.mark.parametrize("newest", [True, False])
def test_read_only_open_falls_back_to_a_full_scan_when_a_spot_check_fails(
    tmp_path: Path, newest: bool
) -> None:
    """A queue's last unit points at a record that fails its checks (a write the disk lost):
    the queues prove nothing, so the open scans as RocketMQ's rule says and finds the damage.
    The newest record is a torn tail the view ends before; an older one, with acknowledged
    records after it, is damage in the middle: the open refuses, changing nothing."""
    root = tmp_path / "broker"
    broker_store(root, abort=True)
    with Store.open(root) as st:
        lasts = sorted((st.read(TOPIC, q, 0, 100_000)[-1] for q in range(QUEUES)),
                       key=lambda m: m.phy_offset)  # fmt: skip
        victim = lasts[-1] if newest else lasts[0]
        f = st.commitlog.file_for(victim.phy_offset)
        path, pos = f.path, victim.phy_offset - f.base
    data = bytearray(path.read_bytes())
    data[pos + victim.size - 1] ^= 0xFF  # the record's last byte: its properties' 0x02
    path.write_bytes(bytes(data))
    if not newest:
        with pytest.raises(CorruptRecordError, match=f"{path.name} @ {victim.phy_offset}: "):
            Store.open(root)
        return
    with Store.open(root) as st:
        assert st.recovery is not None and st.recovery.scan_from < victim.phy_offset
        assert st.health.torn_at == victim.phy_offset
        assert st.commitlog.durable_end == victim.phy_offset


def test_writable_open_after_a_clean_shutdown_checks_only_the_last_file(tmp_path: Path) -> None:
    root = tmp_path / "broker"
    expected = broker_store(root, abort=False)
    with Store.open(root, writable=True) as st:
        assert st.recovery is not None and st.recovery.clean_shutdown
        last = st.commitlog.file_for(st.commitlog.durable_end - 1)
        assert st.recovery.scan_from == last.base  # (a spare after it holds no record)
        assert st.commitlog.scanned_bytes <= TINY.commitlog_file_bytes
        assert {q: _entries(st.read(TOPIC, q, 0, 100_000)) for q in range(QUEUES)} == expected


def test_writable_open_after_a_crash_follows_the_checkpoint_timestamps(tmp_path: Path) -> None:
    """RocketMQ's rule: scan from the last file whose first record is no newer than the flush
    times in ``checkpoint`` (less its 3 s margin); here, the file before the last."""
    root = tmp_path / "broker"
    expected = broker_store(root, abort=True)
    with Store.open(root) as st:
        holding = [f for f in st.commitlog.files if f.base < st.commitlog.durable_end]
        second_last = holding[-2].base  # (a spare after the last may hold no record yet)
        first = st.read_at(second_last)
    flushed = first.store_ts + 3000
    (root / L.FILE_CHECKPOINT).write_bytes(Checkpoint(flushed, flushed, flushed).to_bytes())
    with Store.open(root, writable=True) as st:
        assert st.recovery is not None and not st.recovery.clean_shutdown
        assert st.recovery.scan_from == second_last
        assert {q: _entries(st.read(TOPIC, q, 0, 100_000)) for q in range(QUEUES)} == expected
