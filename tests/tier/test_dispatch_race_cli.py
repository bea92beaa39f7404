"""Two `mqtier dispatch` processes racing on one file:// prefix: one commits, the other
loses the race with exit 5 and commits nothing, never an I/O error (exit 14) because the
winner's garbage collection deleted the loser's upload in progress."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path

from mqtier import Message, Store
from mqtier.backend.open import open_cold_store
from mqtier.tier.catalog import CatalogState, load_catalog
from tests.conftest import ROOT
from tests.geometry import TINY

RACES = 3


def test_racing_dispatch_processes_lose_with_exit_5(tmp_path: Path) -> None:
    store = tmp_path / "hot"
    cold = tmp_path / "cold"
    rng = random.Random(5)
    cmd = [sys.executable, "-m", "mqtier", "dispatch", "--store", str(store)]
    cmd += ["--to", cold.as_uri(), "--force", "--object-size", "16K", "--json"]
    for race in range(RACES):
        with Store.open(store, create=True, config=TINY.with_changes(flush_interval_ms=10)) as st:
            st.append_batch(
                [
                    Message(f"t{i % 12}", rng.randbytes(rng.randint(200, 3000)), queue_id=0)
                    for i in range(1500)
                ]
            )
            st.wait_dispatched()
        jobs = [
            subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        codes = []
        for job in jobs:
            _out, err = job.communicate(timeout=120)
            codes.append(job.returncode)
            assert job.returncode in (0, 5), (race, job.returncode, err.decode()[-2000:])
            if job.returncode == 5:
                assert b"committed" in err or b"another" in err, err
        assert 0 in codes, codes
    with Store.open(store) as st:
        # Exactly once: every hot message is in the cold tier, each queue contiguous from 0.
        state = committed(cold, st.config.broker_name)
        for q in st.offsets():
            segs = state.queues[(q.topic, q.queue_id)]
            assert segs[0].first == 0 and segs[-1].end == q.max_offset
            assert all(a.end == b.first for a, b in itertools.pairwise(segs))


def committed(cold: Path, broker: str) -> CatalogState:
    store = open_cold_store(cold.as_uri())
    try:
        return load_catalog(store, broker)
    finally:
        store.close()
