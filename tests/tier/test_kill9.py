"""kill -9 during tiering: whatever instant the job dies at, the cold tier stays exact.

A child process (``tests/tier/dispatch_child.py``) appends and tiers to a ``file://`` cold tier in
a loop, with tiny objects and many commits; the test SIGKILLs it at a random moment (twice per
seed, on the same directories). Then, in this process: every commit the child reported is still
there, what is committed is an exact prefix of the recovered hot store, one more run tiers the
rest so the cold tier equals the hot data, and its garbage collection removes every object the
killed runs left behind.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqtier import Store
from mqtier.backend.file_store import FileColdStore
from mqtier.backend.open import open_cold_store
from mqtier.tier.catalog import load_catalog
from mqtier.tier.dispatch import ABANDONED_WRITE_S, DispatchOptions, run_dispatch
from tests.tier.conftest import (
    BROKER,
    CONFIG,
    NO_WAIT,
    Ledger,
    as_entry,
    assert_cold_equals,
    cold_view,
    data_objects,
    make_messages,
)

pytestmark = pytest.mark.crash

ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 15.0


def run_and_kill(
    store: Path,
    cold: Path,
    seed: int,
    delay: float,
    log: Path,
    child: str = "tests.tier.dispatch_child",
) -> list[int]:
    """Start the child, SIGKILL it ``delay`` seconds after it is ready; its reported commits."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", child, str(store), str(cold), str(seed)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    buf = bytearray()
    try:
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"ready\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"the child never got ready: {log.read_text()}")
                if sel.select(left):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    buf += chunk
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        buf += proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the child exited by itself with {proc.returncode}:\n{log.read_text()}")
    lines = bytes(buf).decode().splitlines()
    return [int(line.split()[1]) for line in lines if line.startswith("committed ")]


def hot_ledger(st: Store) -> Ledger:
    ledger = Ledger()
    for q in st.offsets():
        assert q.min_offset == 0
        msgs = st.read(q.topic, q.queue_id, 0, q.max_offset)
        ledger.queues[(q.topic, q.queue_id)] = [as_entry(m) for m in msgs]
    ledger.check_dense()
    return ledger


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_during_tiering_leaves_an_exact_cold_tier(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    store_dir, cold_dir, log = tmp_path / "hot", tmp_path / "cold", tmp_path / "child.log"
    reported: list[int] = []
    for kill in range(2):
        reported += run_and_kill(store_dir, cold_dir, seed * 10 + kill, rng.uniform(0.1, 1.2), log)

    cold = open_cold_store(f"file://{cold_dir}", retry=NO_WAIT)
    with Store.open(store_dir, writable=True) as st:
        ledger = hot_ledger(st)
        # Every commit the child saw succeed survived, and what is committed is exact.
        state = load_catalog(cold, BROKER)
        assert state.seq >= max(reported, default=0)
        for key, got in cold_view(cold).items():
            assert got == ledger.queues[key][: len(got)], key

        # One more run (with something new, so it commits and collects): exact and clean.
        msgs = make_messages(rng, 10)
        ledger.add(msgs, st.append_batch(msgs))
        st.wait_dispatched()
        report = run_dispatch(st, cold, DispatchOptions(force=True, object_bytes=64 << 10))
        assert report.committed_seq == state.seq + report.commits and report.commits >= 1
        assert_cold_equals(cold, ledger)
        assert data_objects(cold) == load_catalog(cold, BROKER).referenced_objects()
        assert run_dispatch(st, cold, DispatchOptions(force=True)).queues_pending == 0


def test_temporary_file_of_a_killed_upload_is_collected(tmp_path: Path) -> None:
    ledger = Ledger()
    rng = random.Random(42)
    cold_dir = tmp_path / "cold"
    cold = open_cold_store(f"file://{cold_dir}", retry=NO_WAIT)
    with Store.open(tmp_path / "hot", create=True, config=CONFIG) as st:
        msgs = make_messages(rng, 50)
        ledger.add(msgs, st.append_batch(msgs))
        st.wait_dispatched()
        run_dispatch(st, cold, DispatchOptions(force=True))
        # A run killed inside FileColdStore.put, after writing its temporary file.
        path = cold_dir / BROKER / "data" / f"{1:020d}" / "killed-000001.mqd"
        leftover = FileColdStore(cold_dir)._write_tmp(path, b"x" * 4096)
        # Collected once it is older than any live upload could be (a fresh one may be a
        # racing job's write in progress: see the test below).
        old = time.time() - ABANDONED_WRITE_S - 1
        os.utime(leftover, (old, old))
        msgs = make_messages(rng, 50)
        ledger.add(msgs, st.append_batch(msgs))
        st.wait_dispatched()
        run_dispatch(st, cold, DispatchOptions(force=True))
    assert_cold_equals(cold, ledger)
    assert not leftover.exists(), f"{leftover} left behind"


def test_a_fresh_temporary_file_is_a_live_upload_and_is_left_alone(tmp_path: Path) -> None:
    """Of two racing jobs, the winner's garbage collection must not delete the loser's
    upload in progress: the loser would fail with an I/O error (exit 14), not lose the race
    (exit 5)."""
    rng = random.Random(43)
    cold_dir = tmp_path / "cold"
    cold = open_cold_store(f"file://{cold_dir}", retry=NO_WAIT)
    with Store.open(tmp_path / "hot", create=True, config=CONFIG) as st:
        st.append_batch(make_messages(rng, 50))
        st.wait_dispatched()
        run_dispatch(st, cold, DispatchOptions(force=True))
        path = cold_dir / BROKER / "data" / f"{1:020d}" / "racing-000001.mqd"
        in_flight = FileColdStore(cold_dir)._write_tmp(path, b"x" * 4096)
        st.append_batch(make_messages(rng, 50))
        st.wait_dispatched()
        run_dispatch(st, cold, DispatchOptions(force=True))
    assert in_flight.exists()
