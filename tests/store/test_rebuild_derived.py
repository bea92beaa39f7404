"""Derived files can be rebuilt: a lost consume queue or IndexFile is noticed and derived
again from the commit log, byte for byte what the store had built."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtier import Message, Store
from mqtier.cli import app
from mqtier.format import layout as L
from mqtier.format.checkpoint import pack_dispatch_offset
from mqtier.store.consumequeue import ConsumeQueue
from tests.geometry import TINY

runner = CliRunner()


def build(root: Path) -> None:
    with Store.open(root, create=True, config=TINY) as st:
        st.create_topic("t1", 4)
        st.append_batch(
            [Message("t1", f"m{i}".encode(), keys=(f"K{i}",), tags=f"g{i % 3}") for i in range(300)]
        )


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def derived_bytes(root: Path) -> tuple[dict[str, bytes], list[bytes]]:
    """The consume queues by path, and the IndexFiles in order (named by the clock when made)."""
    index = [p.read_bytes() for p in sorted((root / "index").iterdir())]
    return files_under(root / "consumequeue"), index


def test_recover_rebuild_derives_a_deleted_queue_and_index_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "s"
    build(root)
    queue_before = files_under(root / "consumequeue")
    shutil.rmtree(root / "consumequeue" / "t1" / "2")
    for p in (root / "index").iterdir():
        p.unlink()

    res = runner.invoke(app, ["offsets", "--store", str(root), "--json"])
    doc = json.loads(res.stdout)
    assert sorted(q["queue"] for q in doc["queues"]) == [0, 1, 3]  # looking changes nothing
    assert "consumequeue/t1/2" in doc["health"]["missing_derived"]
    assert "went missing" in res.stderr and "--rebuild" in res.stderr
    res = runner.invoke(app, ["query", "key", "K7", "--store", str(root), "--topic", "t1"])
    assert res.exit_code == 3

    res = runner.invoke(app, ["recover", "--store", str(root), "--rebuild", "--json"])
    assert res.exit_code == 0, res.output
    rebuilt = json.loads(res.stdout)["rebuild"]
    assert rebuilt["messages"] == 300 and rebuilt["consume_queues"] == 4
    assert files_under(root / "consumequeue") == queue_before
    res = runner.invoke(
        app, ["query", "key", "K7", "--store", str(root), "--topic", "t1", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["body"] == "m7"
    res = runner.invoke(app, ["offsets", "--store", str(root), "--json"])
    assert json.loads(res.stdout)["health"]["missing_derived"] == []


def test_a_writable_open_notices_a_lost_queue_and_rebuilds_it(tmp_path: Path) -> None:
    root = tmp_path / "s"
    build(root)
    with Store.open(root) as st:
        want = [m.body for m in st.read("t1", 2, 0, 1000)]
    assert want
    shutil.rmtree(root / "consumequeue" / "t1" / "2")
    with Store.open(root, writable=True) as st:
        assert st.rebuild_report is not None
        assert st.rebuild_report.missing == ["consumequeue/t1/2"]
        assert [m.body for m in st.read("t1", 2, 0, 1000)] == want
        assert [m.body for m in st.query_key("t1", "K11")] == [b"m11"]


def test_a_store_that_never_had_a_queue_is_not_rebuilt(tmp_path: Path) -> None:
    """No manifest entry, no alarm: a queue that was never written is not 'missing'."""
    root = tmp_path / "s"
    build(root)
    with Store.open(root, writable=True) as st:
        assert st.rebuild_report is None
        st.create_topic("quiet", 2)
    with Store.open(root, writable=True) as st:
        assert st.rebuild_report is None


def test_a_queue_whose_head_is_gone_starts_at_its_file_not_at_offset_zero(tmp_path: Path) -> None:
    """Rebuilding after `clean` puts a queue's first unit at a high offset: only the file
    holding it is made (pre-blank up to it), as RocketMQ does."""
    cq = ConsumeQueue(tmp_path / "q", "t", 0, 64, writable=True)
    cq.put(100_000, 4096, 100, 0)
    assert [f.base for f in cq.files] == [(100_000 * 20 // (64 * 20)) * 64 * 20]
    assert cq.min_offset == 100_000 and cq.max_offset == 100_001
    assert cq.unit(100_000) == (4096, 100, 0)
    cq.close()


def test_an_empty_index_file_a_crash_left_is_removed_by_a_writable_open_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # kill -9 between creating an IndexFile and sizing it leaves a 0-byte file: it never held
    # an item, so it is no foreign store's file to warn about on every open
    root = tmp_path / "s"
    build(root)
    with Store.open(root) as st:
        want = [m.phy_offset for m in st.query_key("t1", "K7")]
    assert len(want) == 1
    empty = root / "index" / "29991231235959999"
    empty.touch()
    with caplog.at_level(logging.WARNING), Store.open(root) as st:
        assert [m.phy_offset for m in st.query_key("t1", "K7")] == want
    assert empty.exists() and not caplog.records  # looking changes nothing
    with Store.open(root, writable=True) as st:
        assert [m.phy_offset for m in st.query_key("t1", "K7")] == want
    assert not empty.exists()
    assert not caplog.records


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest-kept", "log-alone"])
def test_a_store_with_no_derived_file_left_is_rebuilt_in_one_pass_byte_for_byte(
    tmp_path: Path, manifest: bool
) -> None:
    """With every consume queue and IndexFile gone, recovery replays each window of records as
    its scan checks them (one pass over the log): the files are those the store had built."""
    root = tmp_path / "s"
    build(root)
    before = derived_bytes(root)
    for name in ("consumequeue", "index"):
        shutil.rmtree(root / name)
    for name in ("checkpoint", "mqtier.dispatch", *([] if manifest else ["mqtier.derived"])):
        (root / name).unlink()
    (root / "abort").write_text("0")  # as after a crash: the scan starts at the first file
    with Store.open(root, writable=True) as st:
        assert st.recovery is not None
        assert st.recovery.scan_from == st.recovery.redispatch_from == 0
        assert st.recovery.messages_redispatched == 300
        if manifest:
            assert st.rebuild_report is not None and st.rebuild_report.messages == 300
        assert [r.body for r in st.query_key("t1", "K7")] == [b"m7"]
    assert derived_bytes(root) == before


@pytest.mark.parametrize("checkpoints", [False, True], ids=["one-pass", "checkpoints-kept"])
def test_a_rebuild_cuts_an_unfinished_ingest_from_what_it_replayed(
    tmp_path: Path, checkpoints: bool
) -> None:
    """Without checkpoints the scan starts at the first record and replays as it goes, the
    cut at the fence coming after; with them it starts at the checkpoint, and the rebuild
    replays the whole log itself. Either way the run is gone and every other message kept."""
    root = tmp_path / "s"
    build(root)
    with Store.open(root, writable=True) as st:  # an ingest that died before it finished
        st.fence_ingest(st.commitlog.durable_end)
        st.append_batch([Message("t1", b"run", keys=(f"R{i}",)) for i in range(40)])
        st.append_batch([Message("t9", b"new", keys=(f"N{i}",)) for i in range(8)])
        assert st.wait_dispatched(10)
        st._writer = None  # (its close would not lift the fence either: that is the ingest's)
    before = files_under(root / "consumequeue")
    assert (root / "mqtier.ingest").exists()
    for name in ("consumequeue", "index"):
        shutil.rmtree(root / name)
    if not checkpoints:
        (root / "checkpoint").unlink()
        (root / "mqtier.dispatch").unlink()
    (root / "abort").write_text("0")
    with Store.open(root, writable=True) as st:
        assert st.recovery is not None and st.recovery.ingest_rolled_back_from is not None
        assert st.rebuild_report is not None and st.rebuild_report.messages == 300
        assert (st.recovery.scan_from == 0) is not checkpoints
        assert sum(q.max_offset - q.min_offset for q in st.offsets()) == 300
        assert [r.body for r in st.query_key("t1", "K299")] == [b"m299"]
        assert st.query_key("t1", "R0") == []
        # The run's own topic leaves no queue behind, as a replay that stopped at the end
        # would not have made one; and nothing was built only to be thrown away.
        assert sorted(st.consume_queues) == [("t1", q) for q in range(4)]
        assert st.rebuild_report.queues == 4
        assert st.rebuild_report.consume_queue_files_removed == 0
        assert st.rebuild_report.index_files_removed == []
    assert not (root / "consumequeue" / "t9").exists()
    assert len(before) >= 4


def test_recover_says_once_what_a_one_pass_rebuild_replayed(tmp_path: Path) -> None:
    root = tmp_path / "s"
    build(root)
    for name in ("consumequeue", "index"):
        shutil.rmtree(root / name)
    for name in ("checkpoint", "mqtier.dispatch"):
        (root / name).unlink()
    res = runner.invoke(app, ["recover", "--store", str(root), "--rebuild"])
    assert res.exit_code == 0, res.output
    assert "from 300 messages" in res.stdout
    assert "re-dispatch" not in res.stdout  # (recovery's replay was the rebuild: not twice)
    res = runner.invoke(app, ["recover", "--store", str(root), "--rebuild", "--json"])
    doc = json.loads(res.stdout)
    assert doc["rebuild"]["messages"] == 300


def test_a_rebuild_whose_scan_starts_at_a_checkpoint_builds_nothing_twice(tmp_path: Path) -> None:
    """The dispatch checkpoint behind the end (a crash between two flushes), nothing derived
    left: recovery's scan starts at the checkpoint, so it replays nothing of its own, and the
    rebuild replays the whole log once (no queue made from the checkpoint on, then deleted)."""
    root = tmp_path / "s"
    build(root)
    with Store.open(root) as st:
        middle = st.read("t1", 2, 20, 1)[0].phy_offset
    (root / "mqtier.dispatch").write_bytes(pack_dispatch_offset(middle))
    for name in ("consumequeue", "index"):
        shutil.rmtree(root / name)
    (root / "abort").write_text("0")
    with Store.open(root, writable=True) as st:
        assert st.recovery is not None and st.recovery.scan_from == middle
        assert st.rebuild_report is not None and st.rebuild_report.messages == 300
        assert st.rebuild_report.consume_queue_files_removed == 0
        assert st.rebuild_report.index_files_removed == []
        assert sum(q.max_offset - q.min_offset for q in st.offsets()) == 300


def test_a_one_pass_rebuild_never_replays_an_unfinished_ingests_records(tmp_path: Path) -> None:
    """The run's records are cut whatever they hold: one whose queue offset would leave a gap
    (a replay refuses it) must not fail the open, as it does not in a rebuild of two passes."""
    root = tmp_path / "s"
    build(root)
    with Store.open(root, writable=True) as st:
        st.fence_ingest(st.commitlog.durable_end)
        placed = st.append_batch([Message("t1", b"run", queue_id=0) for _ in range(3)])
        assert st.wait_dispatched(10)
        st._writer = None
    log = root / "commitlog" / f"{0:020d}"
    with log.open("r+b") as fh:  # the run's second record now skips ahead in its queue
        fh.seek(placed[1].phy_offset + L.POS_QUEUE_OFFSET)
        fh.write((10_000).to_bytes(8, "big"))
    for name in ("consumequeue", "index"):
        shutil.rmtree(root / name)
    for name in ("checkpoint", "mqtier.dispatch"):
        (root / name).unlink()
    (root / "abort").write_text("0")
    with Store.open(root, writable=True) as st:
        assert st.recovery is not None and st.recovery.ingest_rolled_back_from is not None
        assert st.rebuild_report is not None and st.rebuild_report.messages == 300
        assert sum(q.max_offset - q.min_offset for q in st.offsets()) == 300
