"""Review of the hot store under faults: a damaged consume-queue unit is reported, never
skipped or taken for the queue's end (which hid the units after it and let the next append
overwrite them)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from mqtier import Message, Store
from mqtier.errors import CorruptRecordError
from mqtier.format import layout as L
from tests.geometry import TINY

PER_QUEUE = 75  # TINY: 64 units per consume-queue file, so each queue has two files


def build(root: Path) -> None:
    with Store.open(root, create=True, config=TINY) as st:
        st.create_topic("t1", 4)
        st.append_batch([Message("t1", f"m{i}".encode(), queue_id=1) for i in range(PER_QUEUE)])


def damage_unit(
    root: Path, offset: int, *, phy: int | None = None, size: int | None = None
) -> None:
    """Overwrite the commit-log offset or the size of queue t1/1's unit at ``offset``."""
    per_file = TINY.cq_units_per_file
    base = (offset // per_file) * per_file * L.CQ_UNIT_BYTES
    path = root / "consumequeue" / "t1" / "1" / L.offset_file_name(base)
    with path.open("r+b") as f:
        pos = (offset % per_file) * L.CQ_UNIT_BYTES
        if phy is not None:
            f.seek(pos)
            f.write(struct.pack(">q", phy))
        if size is not None:
            f.seek(pos + 8)
            f.write(struct.pack(">i", size))


@pytest.mark.parametrize("offset", [64 + k for k in range(PER_QUEUE - 64 - 1)] + [8, 32])
def test_a_zeroed_unit_inside_a_queue_is_not_its_end(tmp_path: Path, offset: int) -> None:
    root = tmp_path / "s"
    build(root)
    damage_unit(root, offset, size=0)

    with Store.open(root) as st:
        assert st.consume_queue("t1", 1).max_offset == PER_QUEUE  # type: ignore[union-attr]
        with pytest.raises(CorruptRecordError, match=rf"t1/1 unit {offset} .*--rebuild"):
            st.read("t1", 1, offset, 1)
        assert [m.body for m in st.read("t1", 1, offset + 1, 1)] == [f"m{offset + 1}".encode()]

    # A writer appends after the real end: the acknowledged messages after the damage stay.
    with Store.open(root, writable=True) as st:
        res = st.append(Message("t1", b"new", queue_id=1))
        assert res.queue_offset == PER_QUEUE
        assert st.read("t1", 1, PER_QUEUE - 1, 1)[0].body == f"m{PER_QUEUE - 1}".encode()


def test_a_unit_pointing_past_the_commit_log_is_reported_not_skipped(tmp_path: Path) -> None:
    root = tmp_path / "s"
    build(root)
    damage_unit(root, 1, phy=1 << 36)
    with Store.open(root) as st:
        with pytest.raises(CorruptRecordError, match=r"t1/1 unit 1 holds commit-log offset"):
            st.read("t1", 1, 0, 3)  # was: offsets 0 and 2, exit 0, message 1 silently gone
        assert [m.body for m in st.read("t1", 1, 2, 2)] == [b"m2", b"m3"]


def test_a_torn_last_unit_still_ends_the_queue(tmp_path: Path) -> None:
    root = tmp_path / "s"
    build(root)
    damage_unit(root, PER_QUEUE - 1, size=0)  # a crash wrote its offset, not its size
    with Store.open(root) as st:
        assert st.consume_queue("t1", 1).max_offset == PER_QUEUE - 1  # type: ignore[union-attr]


def test_a_crash_after_everything_was_dispatched_reports_nothing_missing(tmp_path: Path) -> None:
    """Recovery replays from the index's last record (indexed again by design); the read-only
    view used to count that record as "missing from its consume queues or index"."""
    root = tmp_path / "s"
    with Store.open(root, create=True, config=TINY) as st:
        st.create_topic("t1", 4)
        st.append_batch([Message("t1", b"x", keys=(f"K{i}",)) for i in range(40)])
    (root / L.FILE_ABORT).write_text("1")  # killed after its last checkpoint
    with Store.open(root) as st:
        assert st.health.state == "crashed"
        assert st.health.undispatched == 0
        assert "missing" not in (st.health.warning(root) or "")
        assert [m.keys for m in st.query_key("t1", "K39")] == [("K39",)]


@pytest.mark.parametrize("back", [8, 3, 2, 1])
def test_an_offset_in_a_files_last_bytes_is_no_record(tmp_path: Path, back: int) -> None:
    # read_at of an offset a user gave (read --offset, a message id) in the last bytes of a
    # commit-log file that another follows: an error naming the place, not struct.error
    with Store.open(tmp_path / "s", create=True, config=TINY) as st:
        for i in range(0, 400, 50):
            st.append_batch(
                [Message(topic="t", body=b"x" * 300, keys=(f"k{j}",)) for j in range(i, i + 50)]
            )
        assert st.commitlog.durable_end > TINY.commitlog_file_bytes
        with pytest.raises(CorruptRecordError, match="no record starts here"):
            st.read_at(TINY.commitlog_file_bytes - back)


def test_a_directory_named_like_an_index_file_is_skipped_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with Store.open(root, create=True, config=TINY) as st:
        st.append(Message(topic="t", body=b"x", keys=("k",)))
    (root / "index" / "29991231235959999").mkdir()
    with Store.open(root, writable=True) as st:
        assert len(st.query_key("t", "k")) == 1
    assert (root / "index" / "29991231235959999").is_dir()
