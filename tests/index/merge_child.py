"""Kill-test child: compact and merge a ``file://`` cold tier's index in a loop, until killed.

Run as ``python -m tests.index.merge_child STORE_DIR COLD_DIR SEED`` from the project root.
Each round appends and tiers a few small runs (one index object each), then merges index
objects two at a time, so a kill lands while a merge reads, uploads, commits or deletes what
it replaced. Prints ``ready`` once, then ``merged SEQ`` after each round.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from mqtier import Store
from mqtier.backend.open import open_cold_store
from mqtier.backend.retrying import RetryPolicy
from mqtier.index.merge import MergeOptions, merge_indexes
from mqtier.tier.catalog import load_catalog
from mqtier.tier.compact import CompactOptions, compact
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from tests.tier.conftest import BROKER, CONFIG, TOPIC, make_messages

OPTS = DispatchOptions(force=True, object_bytes=3 << 10, block_bytes=1 << 10)


def main(argv: list[str]) -> int:
    store_dir, cold_dir, seed = Path(argv[1]), Path(argv[2]), int(argv[3])
    rng = random.Random(seed)
    cold = open_cold_store(f"file://{cold_dir}", retry=RetryPolicy(attempts=2, base_s=0.0))
    with Store.open(store_dir, create=True, config=CONFIG) as st:
        st.create_topic(TOPIC, 4)
        print("ready", flush=True)
        while True:
            for _ in range(3):
                st.append_batch(make_messages(rng, rng.randint(10, 40), max_body=300))
                st.wait_dispatched()
                run_dispatch(st, cold, OPTS)
            state = load_catalog(cold, BROKER)
            compact(cold, state, CompactOptions(small_bytes=1 << 30))
            merge_indexes(cold, state, MergeOptions(fanout=2))
            print(f"merged {state.seq}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
