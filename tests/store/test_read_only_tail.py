"""A read-only open sees every durable message, also those its owner has not dispatched yet."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mqtier import Message, Store
from mqtier.store import store as store_module
from tests.geometry import TINY

ROOT = Path(__file__).resolve().parents[2]


class LaggingOwner:
    """A writable store whose reput stalls from :meth:`lag` until :meth:`catch_up`."""

    def __init__(self, root: Path) -> None:
        self.store = Store.open(root, create=True, config=TINY)
        self._gate = threading.Event()
        self._reput = self.store.reput_framed

    def _stalled(self, batch: Any, where: Any) -> None:
        self._gate.wait()
        self._reput(batch, where)

    def lag(self) -> None:
        assert self.store.wait_dispatched(10)
        self.store.reput_framed = self._stalled  # type: ignore[method-assign]

    def catch_up(self) -> None:
        self._gate.set()
        self.store.reput_framed = self._reput  # type: ignore[method-assign]
        assert self.store.wait_dispatched(10)


@contextmanager
def lagging_owner(root: Path) -> Iterator[LaggingOwner]:
    owner = LaggingOwner(root)
    try:
        yield owner
    finally:
        owner.catch_up()
        owner.store.close()


def test_read_only_open_dispatches_the_owners_tail_in_memory(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with lagging_owner(root) as owner:
        writer = owner.store
        first = writer.append_batch(
            [
                Message("t", f"early {i}".encode(), queue_id=i % 2, keys=(f"E{i}",))
                for i in range(40)
            ]
        )
        owner.lag()
        late = writer.append_batch(
            [
                Message("t", f"late {i}".encode(), queue_id=i % 2, keys=(f"L{i}",))
                for i in range(300)
            ]
        )
        assert writer.consume_queue("t", 0).max_offset == 20  # type: ignore[union-attr]
        with Store.open(root) as ro:
            assert ro.read_only
            for qid in (0, 1):
                got = ro.read("t", qid, 0, 1000)
                want = [r for r in first + late if r.queue_id == qid]
                assert [(m.queue_offset, m.phy_offset) for m in got] == [
                    (r.queue_offset, r.phy_offset) for r in want
                ]
            assert {(q.queue_id, q.max_offset) for q in ro.offsets()} == {(0, 170), (1, 170)}
            assert [m.body for m in ro.query_key("t", "L299")] == [b"late 299"]
            assert [m.phy_offset for m in ro.query_uniq(late[5].uniq_key)] == [late[5].phy_offset]


def test_read_only_key_queries_answer_newest_first_with_the_tail(tmp_path: Path) -> None:
    """A key on more records than a query returns: the newest win, the undispatched tail too."""
    root = tmp_path / "s"
    with lagging_owner(root) as owner:
        owner.store.append_batch([Message("t", b"old", queue_id=0, keys=("HOT",))] * 100)
        owner.lag()
        tail = owner.store.append_batch([Message("t", b"new", queue_id=0, keys=("HOT",))] * 10)
        with Store.open(root) as ro:
            got = ro.query_key("t", "HOT", max_results=20)
        assert {r.phy_offset for r in tail} <= {m.phy_offset for m in got}
        assert len(got) == 20 and sum(m.body == b"old" for m in got) == 10
    with Store.open(root) as ro:  # the owner's own answer, once dispatched
        owners = ro.query_key("t", "HOT", max_results=20)
    assert [m.phy_offset for m in owners] == [m.phy_offset for m in got]


def test_the_owner_dispatching_during_a_read_only_open_leaves_no_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner catches up and checkpoints after the open loaded its consume queues but before
    recovery read the checkpoint: the units it wrote meanwhile are picked up, not skipped."""
    root = tmp_path / "s"
    real_index = store_module.IndexService
    with lagging_owner(root) as owner:

        def owner_catches_up(*args: Any, **kwargs: Any) -> Any:
            owner.catch_up()
            time.sleep(5 * TINY.flush_interval_ms / 1000)  # its checkpoint is written
            return real_index(*args, **kwargs)

        owner.store.append_batch([Message("t", b"e", queue_id=i % 2) for i in range(40)])
        owner.lag()
        owner.store.append_batch([Message("t", b"l", queue_id=i % 2) for i in range(300)])
        monkeypatch.setattr(store_module, "IndexService", owner_catches_up)
        with Store.open(root) as ro:
            assert {(q.queue_id, q.max_offset) for q in ro.offsets()} == {(0, 170), (1, 170)}
            assert len(ro.read("t", 1, 0, 1000)) == 170


_KILLED_WRITER = """
import os, signal, sys
from mqtier import Message, Store
st = Store.open(sys.argv[1], writable=True)
msgs = [Message(topic="t", body=b"n%d" % i, queue_id=0, keys=("new%d" % i,)) for i in range(20)]
st.append_batch(msgs)
assert st.wait_dispatched(10)
os.kill(os.getpid(), signal.SIGKILL)  # dispatched, never flushed: the header counts less
"""


def test_a_read_only_query_follows_slot_heads_past_the_stored_item_count(tmp_path: Path) -> None:
    # A writer killed after dispatching (or one still running) leaves slot heads newer than
    # the IndexFile's stored header: a reader that stopped at such a head hid every older key
    # of that slot, the ones the header counts included.
    root = tmp_path / "s"
    quiet = TINY.with_changes(flush_interval_ms=3_600_000)  # the header is stored at close only
    with Store.open(root, create=True, config=quiet) as st:
        msgs = [
            Message(topic="t", body=b"b%d" % i, queue_id=0, keys=(f"key{i}",)) for i in range(60)
        ]
        acked = {m.keys[0]: r.phy_offset for m, r in zip(msgs, st.append_batch(msgs), strict=True)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(root)],
        check=False,
        cwd=ROOT,
        capture_output=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    before = {p.name: p.read_bytes() for p in (root / "index").iterdir()}
    with Store.open(root) as ro:
        found = {k: [m.phy_offset for m in ro.query_key("t", k)] for k in acked}
        new = [m.queue_offset for i in range(20) for m in ro.query_key("t", f"new{i}")]
    assert found == {k: [phy] for k, phy in acked.items()}
    assert sorted(new) == list(range(60, 80))
    assert {p.name: p.read_bytes() for p in (root / "index").iterdir()} == before  # looked only
