"""Kill-test child: append and tier to a ``file://`` cold tier in a loop, until SIGKILLed.

Run as ``python -m tests.tier.dispatch_child STORE_DIR COLD_DIR SEED`` from the project root.
Each round appends a few dozen messages and runs the tiering job with tiny objects and frequent
commits, so a kill lands between uploads, between an upload and its commit record, between a
commit and its snapshot, or during garbage collection. After each run it prints
``committed SEQ``; the parent may check that every printed commit survived.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from mqtier import Store
from mqtier.backend.open import open_cold_store
from mqtier.backend.retrying import RetryPolicy
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from tests.tier.conftest import CONFIG, TOPIC, make_messages

OPTS = DispatchOptions(
    force=True, object_bytes=3 << 10, commit_every_bytes=6 << 10, block_bytes=1 << 10
)


def main(argv: list[str]) -> int:
    store_dir, cold_dir, seed = Path(argv[1]), Path(argv[2]), int(argv[3])
    rng = random.Random(seed)
    cold = open_cold_store(f"file://{cold_dir}", retry=RetryPolicy(attempts=2, base_s=0.0))
    with Store.open(store_dir, create=True, config=CONFIG) as st:
        st.create_topic(TOPIC, 4)
        print("ready", flush=True)
        while True:
            st.append_batch(make_messages(rng, rng.randint(20, 60), max_body=300))
            st.wait_dispatched()
            report = run_dispatch(st, cold, OPTS)
            print(f"committed {report.committed_seq}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
