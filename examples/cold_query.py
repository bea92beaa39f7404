"""Find messages in the cold tier alone: by key, by UNIQ_KEY and by offsetMsgId.

Every tiering run commits an index of what it tiered together with the data, so a message
stays findable after ``clean`` has freed its commit-log file. This example:

1. appends 3,000 order messages in 6 batches and tiers each batch to a ``file://`` cold tier
   (6 tiering runs, one index object each), then cleans the hot store;
2. looks messages up from the cold tier alone, then from both tiers, and prints what each
   query cost (``explain``: index objects consulted, requests per step);
3. merges the index objects into one (``compact --full-index`` does the same) and asks again.

    python examples/cold_query.py ./cold-query-demo
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from mqtier import Message, Store, StoreConfig
from mqtier.backend.metered import RequestBill
from mqtier.backend.open import open_cold_store
from mqtier.index.cache import ImmutableCache
from mqtier.index.merge import MergeOptions, merge_indexes
from mqtier.index.query import QueryResult, open_cold_index, query_key, query_msg_id, query_uniq
from mqtier.tier.catalog import load_catalog
from mqtier.tier.clean import clean
from mqtier.tier.dispatch import DispatchOptions, run_dispatch

BROKER = "broker-q"


def order(i: int) -> Message:
    body = json.dumps({"order_id": f"ORDER-{i}", "customer": f"C{i % 97}"}).encode()
    # two keys: the order (unique) and the customer (shared by ~30 orders)
    return Message("orders", body, queue_id=i % 4, keys=(f"ORDER-{i}", f"C{i % 97}"))


def show(what: str, result: QueryResult, bill: RequestBill, before: int) -> None:
    doc = result.explain.to_json()
    where = sorted({h.tier for h in result.hits})
    print(
        f"{what}: {len(result.hits)} found ({'/'.join(where) or '-'}), "
        f"{doc['index_objects']} index object(s) consulted, {bill.requests - before} requests"
    )


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "cold-query-demo")
    if root.exists():
        shutil.rmtree(root)
    config = StoreConfig(broker_name=BROKER, commitlog_file_bytes=64 * 1024)
    bill = RequestBill()
    url = (root / "cold").resolve().as_uri()
    cold = open_cold_store(url, bill=bill)
    cache = ImmutableCache(url, root=root / "cache")  # what never changes in the tier

    with Store.open(root / "store", create=True, config=config) as st:
        # 1. Six tiering runs, then free the hot files they covered.
        for batch in range(6):
            st.append_batch([order(i) for i in range(batch * 500, (batch + 1) * 500)])
            st.wait_dispatched()
            run_dispatch(st, cold, DispatchOptions(force=True))
        freed = clean(st, load_catalog(cold, BROKER), keep_ms=0, cold=cold)
        print(f"tiered 6 runs; clean freed {len(freed.files)} commit-log files")

    # 2. From the cold tier alone (the store's files are gone).
    with open_cold_index(cold, BROKER, cache=cache) as index:
        before = bill.requests
        hit = query_key(topic="orders", key="ORDER-42", index=index)
        show("key ORDER-42", hit, bill, before)
        (first,) = hit.messages
        assert json.loads(first.body)["order_id"] == "ORDER-42"
        before = bill.requests
        shared = query_key(topic="orders", key="C7", index=index, max_results=100)
        show("key C7 (shared)", shared, bill, before)
        assert len(shared.hits) == len(range(7, 3000, 97))
        before = bill.requests
        show("uniq", query_uniq(uniq_key=first.uniq_key or "", index=index), bill, before)
        before = bill.requests
        by_id = query_msg_id(msg_id=first.msg_id, index=index)
        show("offsetMsgId", by_id, bill, before)
        assert by_id.messages[0].body == first.body

    # 3. One index object instead of six: a key is then one slot read and one block read.
    report = merge_indexes(cold, load_catalog(cold, BROKER), MergeOptions(full=True))
    print(f"merged {report.items_read:,} index entries into {len(report.written)} object")
    with open_cold_index(cold, BROKER, cache=cache) as index:
        before = bill.requests
        again = query_key(topic="orders", key="ORDER-42", index=index)
        show("key ORDER-42 after the merge", again, bill, before)
        assert again.messages == hit.messages


if __name__ == "__main__":
    main()
