"""A read-only open sees every durable message, also those its owner has not dispatched yet."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mqtier import Message, Store
from tests.geometry import TINY


def test_read_only_open_dispatches_the_owners_tail_in_memory(tmp_path: Path) -> None:
    root = tmp_path / "s"
    writer = Store.open(root, create=True, config=TINY)
    gate = threading.Event()
    dispatch_items = writer.dispatch_items

    def lagging(items: Any) -> None:  # the owner's dispatcher falls behind its appends
        gate.wait()
        dispatch_items(items)

    try:
        first = writer.append_batch(
            [
                Message("t", f"early {i}".encode(), queue_id=i % 2, keys=(f"E{i}",))
                for i in range(40)
            ]
        )
        assert writer.wait_dispatched(10)
        writer.dispatch_items = lagging  # type: ignore[method-assign]
        late = writer.append_batch(
            [
                Message("t", f"late {i}".encode(), queue_id=i % 2, keys=(f"L{i}",))
                for i in range(300)
            ]
        )
        assert writer.consume_queue("t", 0).max_offset == 20  # type: ignore[union-attr]
        with Store.open(root, read_only=True) as ro:
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
    finally:
        gate.set()
        writer.dispatch_items = dispatch_items  # type: ignore[method-assign]
        writer.close()
