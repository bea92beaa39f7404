"""The Python API end to end: append, read and query a hot store, tier it, read across tiers.

Everything the CLI does is a library call underneath. This example:

1. creates a store and appends 2,000 order messages over 4 queues (one durable group commit
   per batch), then reads a queue and looks messages up by key and by offsetMsgId;
2. tiers the store to a ``file://`` cold tier with ``run_dispatch`` and prints the run's
   request bill;
3. reads the same queue back from the cold tier alone (``ColdReader``), and from both tiers
   after the hot store's older files were cleaned (``read_tiered``).

    python examples/library.py ./library-demo
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from mqtier import Message, Store, StoreConfig
from mqtier.backend.metered import RequestBill
from mqtier.backend.open import open_cold_store
from mqtier.tier.catalog import load_catalog
from mqtier.tier.clean import clean
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from mqtier.tier.reader import ColdReader
from mqtier.tier.tiered import ReadPolicy, read_tiered


def order(i: int) -> Message:
    body = json.dumps({"order_id": f"ORDER-{i}", "amount": i % 500 + 0.99}).encode()
    return Message("orders", body, queue_id=i % 4, keys=(f"ORDER-{i}",), tags="paid")


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "library-demo")
    if root.exists():
        shutil.rmtree(root)
    # Small commit-log files so that `clean` below has whole files to free.
    config = StoreConfig(broker_name="broker-lib", commitlog_file_bytes=64 * 1024)

    with Store.open(root / "store", create=True, config=config) as st:
        # 1. Appends return once their bytes are fdatasync'ed; a batch is one write + sync.
        results = st.append_batch([order(i) for i in range(2000)])
        print(
            f"appended {len(results)} messages, last at commit-log offset {results[-1].phy_offset}"
        )
        st.wait_dispatched()  # consume queues and index are built by a background thread
        for m in st.read("orders", 2, 0, 3):
            print(f"  queue 2 offset {m.queue_offset}: {m.body.decode()}")
        (hit,) = st.query_key("orders", "ORDER-42")
        print(f"ORDER-42 is queue {hit.queue_id} offset {hit.queue_offset}, id {hit.msg_id}")
        assert st.query_msg_id(hit.msg_id).body == hit.body

        # 2. Tier everything to a cold tier: any fsspec URL (s3://, gs://, file://, memory://).
        bill = RequestBill()
        cold = open_cold_store((root / "cold").resolve().as_uri(), bill=bill)
        report = run_dispatch(st, cold, DispatchOptions(force=True))
        print(
            f"tiered {report.messages} messages in {report.objects} object(s), "
            f"{report.raw_bytes / max(report.stored_bytes, 1):.1f}x compressed; {bill.summary()}"
        )

        # 3a. Read back from the cold tier alone, as a machine without the store would.
        with ColdReader(cold, "broker-lib") as reader:
            cold_msgs = reader.read("orders", 2, 0, 3)
            assert [m.body for m in cold_msgs] == [m.body for m in st.read("orders", 2, 0, 3)]
            print(f"cold tier holds queue 2 offsets 0..{reader.state.next_offset(('orders', 2))}")

        # 3b. Free hot space: whole files whose every message is committed cold go.
        freed = clean(st, load_catalog(cold, "broker-lib"), keep_ms=0)
        print(f"clean freed {len(freed.files)} commit-log file(s); hot queue 2 now starts at "
              f"{next(q.min_offset for q in st.offsets() if q.queue_id == 2)}")  # fmt: skip
        with ColdReader(cold, "broker-lib") as reader:
            both = read_tiered(st, reader, "orders", 2, 0, 500, policy=ReadPolicy.NOT_IN_DISK)
        assert [m.queue_offset for m in both] == list(range(500))
        print(f"read_tiered served offsets 0..499 of queue 2 from both tiers ({len(both)} msgs)")


if __name__ == "__main__":
    main()
