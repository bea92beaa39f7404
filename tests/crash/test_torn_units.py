"""Consume-queue units a kill tore while the reput copied them are never kept nor shown.

The reput copies a run of units into a queue's map in one go. A SIGKILL during the copy can
leave the run's first unit half stored (its size and tags written, its commit-log offset still
zero: a copy may store its first vector last) or leave whole zero units before units it did
store. Seen in a CI run: a killed ingest's fenced-off run showed 513 of its messages to a
read-only open (the walk back to the fence stopped at a torn unit that "ended" below it), and a
repair kept the torn unit in the queue for good, pointing at another queue's record.

Each test makes the state for real (a child appends, waits for the reput, and SIGKILLs itself),
then tears one unit the way a copy does, and checks the read-only view, the repair and what
comes after.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from mqtier import Store
from mqtier.format import layout as L
from mqtier.format.message import encode_record
from mqtier.store import commitlog as commitlog_module
from mqtier.store.consumequeue import ConsumeQueue
from tests.conftest import ROOT
from tests.crash.killed_writer import QUEUES, message
from tests.geometry import TINY

pytestmark = pytest.mark.crash

BASE = 40  # acknowledged messages before the kill, 10 per queue
RUN = 200  # appended by the killed child, 50 per queue
PER_QUEUE = BASE // QUEUES
# No periodic flush during the child's run: the dispatch checkpoint stays at the base's end,
# so the units the child's reput wrote all lie past it, as after a kill between two flushes.
CONFIG = TINY.with_changes(
    commitlog_file_bytes=1024 * 1024, cq_units_per_file=1024, flush_interval_ms=600_000
)
UB = L.CQ_UNIT_BYTES

# How the copy tore: (first byte, end byte) of the unit left as zeros.
TEARS = {
    "offset-unstored": (0, 8),  # size and tags written, commit-log offset still zero
    "unit-unstored": (0, UB),  # a hole of one whole unit
    "two-units-unstored": (0, 2 * UB),  # a hole of two
    "unit-and-offset-unstored": (0, UB + 8),  # a hole, then a unit with only its size stored
}


def _killed_store(tmp_path: Path, *, fence: bool, topic: str = "t") -> Path:
    root = tmp_path / "store"
    with Store.open(root, create=True, config=CONFIG) as st:
        st.append_batch([message("base", i) for i in range(BASE)])
    cmd = [sys.executable, "-m", "tests.crash.killed_writer", str(root), str(RUN), "run"]
    done = subprocess.run(
        [*cmd, *(["--fence"] if fence else []), f"--topic={topic}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9, done.stderr
    assert (root / L.FILE_ABORT).exists()
    return root


def _tear(root: Path, queue: int, offset: int, tear: str, topic: str = "t") -> None:
    start, end = TEARS[tear]
    path = root / L.DIR_CONSUMEQUEUE / topic / str(queue) / f"{0:020d}"
    with path.open("r+b") as fh:
        fh.seek(offset * UB)
        unit = fh.read(UB)
        assert unit != bytes(UB)  # the reput wrote it
        fh.seek(offset * UB + start)
        fh.write(bytes(end - start))


def _counts(st: Store) -> list[int]:
    return [q.max_offset - q.min_offset for q in st.offsets() if q.topic == "t"]


def _bodies(st: Store, queue: int) -> list[bytes]:
    return _bodies_of(st, "t", queue)


def _bodies_of(st: Store, topic: str, queue: int) -> list[bytes]:
    return [r.body for r in st.read(topic, queue, 0, 10_000)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _units_past_end_are_zero(root: Path, st: Store) -> None:
    for q in range(QUEUES):
        cq = st.consume_queue("t", q)
        assert cq is not None
        data = (root / L.DIR_CONSUMEQUEUE / "t" / str(q) / f"{0:020d}").read_bytes()
        assert data[cq.max_offset * UB :] == bytes(len(data) - cq.max_offset * UB), q


@pytest.mark.parametrize("tear", TEARS)
@pytest.mark.parametrize("where", [0, 17], ids=["first-run-unit", "later-run-unit"])
def test_a_torn_unit_of_a_fenced_run_neither_shows_nor_stays(
    tmp_path: Path, tear: str, where: int
) -> None:
    root = _killed_store(tmp_path, fence=True)
    _tear(root, 0, PER_QUEUE + where, tear)
    before = _files(root)
    with Store.open(root) as st:  # read-only: the run is fenced off, all of it
        assert _counts(st) == [PER_QUEUE] * QUEUES
        assert _bodies(st, 0) == [message("base", i).body for i in range(0, BASE, QUEUES)]
    assert _files(root) == before  # looking wrote nothing
    with Store.open(root, writable=True) as st:  # the repair
        assert st.recovery is not None and st.recovery.ingest_rolled_back_from is not None
        assert _counts(st) == [PER_QUEUE] * QUEUES
        _units_past_end_are_zero(root, st)
        st.append_batch([message("after", i) for i in range(8)])
    with Store.open(root) as st:
        assert _counts(st) == [PER_QUEUE + 2] * QUEUES
        expect = [message("base", i).body for i in range(0, BASE, QUEUES)]
        expect += [message("after", i).body for i in (0, 4)]
        assert _bodies(st, 0) == expect


@pytest.mark.parametrize("tear", TEARS)
def test_a_torn_unit_of_acknowledged_records_reads_right_before_and_after_repair(
    tmp_path: Path, tear: str
) -> None:
    root = _killed_store(tmp_path, fence=False)
    _tear(root, 0, PER_QUEUE + 5, tear)
    expect = [message("base", i).body for i in range(0, BASE, QUEUES)]
    expect += [message("run", i).body for i in range(0, RUN, QUEUES)]
    before = _files(root)
    with Store.open(root) as st:  # the view takes the commit log's unit for the torn one
        assert _counts(st) == [PER_QUEUE + RUN // QUEUES] * QUEUES
        assert _bodies(st, 0) == expect
    assert _files(root) == before
    with Store.open(root, writable=True) as st:  # the repair writes the unit again
        assert _counts(st) == [PER_QUEUE + RUN // QUEUES] * QUEUES
        assert _bodies(st, 0) == expect
    with Store.open(root) as st:
        assert _bodies(st, 0) == expect


def _queue_with_hole(directory: Path, count: int, hole: int, width: int) -> None:
    cq = ConsumeQueue(directory, "t", 0, 1024, writable=True)
    for i in range(count):
        cq.put(i, 1000 + 100 * i, 100, 0)
    cq.flush()
    cq.close()
    path = directory / f"{0:020d}"
    with path.open("r+b") as fh:
        fh.seek(hole * UB)
        fh.write(bytes(width * UB))


@pytest.mark.parametrize("width", [1, 2, 3])
def test_zero_units_followed_by_written_ones_do_not_end_the_queue(
    tmp_path: Path, width: int
) -> None:
    """Wherever the hole lies (so also where the end's binary search probes), the queue ends
    after its last written unit, not at the hole: else a repair would leave the units after the
    hole on disk past the queue's end, to be read back as units after the next crash."""
    count = 120
    for hole in range(1, count - width):
        directory = tmp_path / f"{hole}"
        _queue_with_hole(directory, count, hole, width)
        cq = ConsumeQueue(directory, "t", 0, 1024, writable=False)
        try:
            assert cq.max_offset == count, hole
        finally:
            cq.close()


def test_a_follower_reads_past_a_unit_its_live_owner_is_copying(tmp_path: Path) -> None:
    """A read-only view refreshed beside a live owner may meet a unit the owner's reput is
    copying at that instant: it reads the log's own unit, and the files serve it again (its
    memory emptied) once they agree with the log."""
    root = tmp_path / "store"
    unit_file = root / L.DIR_CONSUMEQUEUE / "t" / "0" / f"{0:020d}"
    with Store.open(root, create=True, config=CONFIG) as owner:
        owner.append_batch([message("base", i) for i in range(BASE)])
        assert owner.wait_dispatched(10)
        with Store.open(root) as view:
            owner.append_batch([message("run", i) for i in range(RUN)])
            assert owner.wait_dispatched(10)
            with unit_file.open("r+b") as fh:  # caught half-way: its offset not yet stored
                fh.seek((PER_QUEUE + 3) * UB)
                copied = fh.read(8)
                fh.seek((PER_QUEUE + 3) * UB)
                fh.write(bytes(8))
            assert view.refresh() == "grew"
            expect = [message("base", i).body for i in range(0, BASE, QUEUES)]
            expect += [message("run", i).body for i in range(0, RUN, QUEUES)]
            assert _bodies(view, 0) == expect
            with unit_file.open("r+b") as fh:  # the copy finished
                fh.seek((PER_QUEUE + 3) * UB)
                fh.write(copied)
            owner.append_batch([message("more", i) for i in range(4)])
            assert owner.wait_dispatched(10)
            assert view.refresh() == "grew"
            assert _bodies(view, 0) == [*expect, message("more", 0).body]
            cq = view.consume_queue("t", 0)
            assert cq is not None and not cq._memory  # the files serve the view again


@pytest.mark.parametrize("writable", [False, True], ids=["read-only", "writable"])
def test_a_damaged_unit_does_not_cost_the_units_after_it(tmp_path: Path, writable: bool) -> None:
    """The order check must not turn one damaged unit into lost ones: the queue's last unit,
    whose predecessor's commit-log offset a flipped bit made huge, is kept, as its record is
    there; reading the damaged one reports it."""
    root = tmp_path / "store"
    with Store.open(root, create=True, config=CONFIG) as st:
        st.append_batch([message("base", i) for i in range(BASE)])
    path = root / L.DIR_CONSUMEQUEUE / "t" / "1" / f"{0:020d}"
    with path.open("r+b") as fh:
        fh.seek((PER_QUEUE - 2) * UB)
        fh.write(bytes([0x40]))  # the high byte of the commit-log offset
    with Store.open(root, writable=writable) as st:
        assert _counts(st) == [PER_QUEUE] * QUEUES
        last = st.read("t", 1, PER_QUEUE - 1, 1)
        assert [r.body for r in last] == [message("base", BASE - 3).body]


def test_a_transactions_records_past_the_queues_are_no_torn_units(tmp_path: Path) -> None:
    """A prepared or rolled-back transaction's record carries queue offset 0 (RocketMQ writes
    it so) and has no unit: the view must not take the queue's unit 0 for a torn one of it."""
    root = tmp_path / "store"
    with Store.open(root, create=True, config=CONFIG) as st:
        st.append_batch([message("base", i) for i in range(BASE)])
        end = st.commitlog.durable_end
    now = int(time.time() * 1000)
    host = (bytes([10, 0, 0, 1]), 10911)
    data = b""
    # A broker's records past what mqtier dispatched: prepared, rolled back, then a plain one.
    for sysflag, qoff, body in ((4, 0, b"half"), (12, 0, b"undo"), (0, PER_QUEUE, b"next")):
        data += encode_record(
            topic=b"t", queue_id=0, flag=0, queue_offset=qoff, phy_offset=end + len(data),
            sysflag=sysflag, born_ts=now, born_host=host, store_ts=now, store_host=host,
            body=body, properties=b"",
        )  # fmt: skip
    with (root / L.DIR_COMMITLOG / f"{0:020d}").open("r+b") as fh:
        fh.seek(end)
        fh.write(data)
    (root / L.FILE_ABORT).write_text("0")  # a crashed writer: the view reads past the queues
    with Store.open(root) as st:
        assert _counts(st) == [PER_QUEUE + 1] + [PER_QUEUE] * (QUEUES - 1)
        expect = [message("base", i).body for i in range(0, BASE, QUEUES)] + [b"next"]
        assert _bodies(st, 0) == expect


@pytest.mark.parametrize("tear", TEARS)
def test_a_long_tail_read_a_window_at_a_time_shows_what_the_per_record_tail_shows(
    tmp_path: Path, tear: str
) -> None:
    """A view whose tail is long passes over the records plainly in their queue a window at
    a time (tailbatch.already_there): with a lagging queue, a torn unit and the records in
    memory, it must show exactly what the record-by-record tail shows."""
    root = tmp_path / "store"
    with Store.open(root, create=True, config=CONFIG) as st:
        st.append_batch([message("base", i) for i in range(BASE)])
        st.append_batch([message("run", i) for i in range(RUN)])
    # As a crashed broker leaves its store (no mqtier checkpoint, `abort`): the view reads
    # the whole log, nearly all of it in its queue and IndexFile already.
    (root / L.FILE_DISPATCH_CHECKPOINT).unlink()
    (root / L.FILE_ABORT).write_text("0")
    _tear(root, 2, PER_QUEUE + 7, tear)
    lagging = root / L.DIR_CONSUMEQUEUE / "t" / "1" / f"{0:020d}"
    with lagging.open("r+b") as fh:  # queue 1 lost its last 20 units (its file lags)
        fh.seek((PER_QUEUE + RUN // QUEUES - 20) * UB)
        fh.write(bytes(20 * UB))

    def view(switch_after: int) -> tuple[object, ...]:
        with (
            mock.patch.object(commitlog_module, "ARRAYS_AFTER_BYTES", switch_after),
            Store.open(root) as st,
        ):
            assert st.recovery is not None
            keys = [[r.body for r in st.query_key("t", f"run-{i}")] for i in range(RUN)]
            return (
                [(q.topic, q.queue_id, q.min_offset, q.max_offset) for q in st.offsets()],
                [_bodies(st, q) for q in range(QUEUES)],
                keys,
                st.health.undispatched,
                st.recovery.messages_redispatched,
            )

    by_record = view(1 << 40)
    assert by_record == view(0)
    assert by_record[0] == [("t", q, 0, PER_QUEUE + RUN // QUEUES) for q in range(QUEUES)]


@pytest.mark.parametrize("tear", ["offset-unstored", "unit-and-offset-unstored"])
def test_a_torn_first_unit_of_a_queue_the_fenced_run_made_neither_shows_nor_stays(
    tmp_path: Path, tear: str
) -> None:
    """No unit comes before a new queue's first one to tell a torn unit by order: its record
    is looked at instead (it is another queue's record at offset 0)."""
    root = _killed_store(tmp_path, fence=True, topic="newt")
    _tear(root, 0, 0, tear, topic="newt")
    with Store.open(root) as st:
        assert {(q.topic, q.queue_id): q.max_offset - q.min_offset for q in st.offsets()} == {
            **{("t", q): PER_QUEUE for q in range(QUEUES)},
            **{("newt", q): 0 for q in range(QUEUES)},
        }
    with Store.open(root, writable=True) as st:
        st.append_batch([message("after", i, "newt") for i in range(4)])
    with Store.open(root) as st:
        assert _bodies_of(st, "newt", 0) == [message("after", 0, "newt").body]
