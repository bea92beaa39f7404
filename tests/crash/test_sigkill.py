"""Invariant 1 under kill -9: every acknowledged append survives, exactly once, in place.

A child process (``tests/crash/writer.py``) appends from several threads and prints each
acknowledged append; the test SIGKILLs it at a random instant (sometimes several times in a row on
the same directory, so kills also land during and right after recovery), then reopens the store
and checks every acknowledged message through every read path: the consume queue, the
offsetMsgId, and the key index.
"""

from __future__ import annotations

import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mqtier import AppendResult, Message, MessageRecord, Store
from mqtier.format import layout as L
from mqtier.format.message import make_msg_id
from mqtier.store.store import is_store_dir
from tests.crash.writer import CONFIG, make_message, message_key

pytestmark = pytest.mark.crash

ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Ack:
    """One line of the child's stdout: an append the store acknowledged."""

    seed: int
    thread: int
    i: int
    topic: str
    queue_id: int
    queue_offset: int
    phy_offset: int


def _parse(seed: int, data: bytes) -> list[Ack]:
    acks = []
    for line in data.split(b"\n")[:-1]:  # the text after the last newline may be cut short
        thread, i, topic, queue, qoff, phy = line.decode().split()
        acks.append(Ack(seed, int(thread), int(i), topic, int(queue), int(qoff), int(phy)))
    return acks


def run_and_kill(store_dir: Path, seed: int, rng: random.Random, log: Path) -> list[Ack]:
    """Start the writer, let it acknowledge a random number of appends, SIGKILL it.

    Returns every acknowledged append the child printed, including lines still in the pipe
    when it died.
    """
    mode = rng.random()
    if mode < 0.2:
        want = 0  # kill by time only: during start-up, recovery, or the first appends
        delay = rng.uniform(0.05, 0.6)
    else:
        want = rng.randint(1, 40) if mode < 0.5 else rng.randint(40, 700)
        delay = rng.uniform(0, 0.01) if rng.random() < 0.5 else 0.0
    log_from = log.stat().st_size if log.exists() else 0
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.writer", str(store_dir), str(seed)],
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
            if want == 0:
                time.sleep(delay)
            while buf.count(b"\n") < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    lines = buf.count(b"\n")
                    pytest.fail(f"writer acknowledged only {lines} of {want} appends: {log}")
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break  # the child died on its own: reported below
                buf += chunk
            if want and delay:
                time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        buf += proc.stdout.read()  # lines printed before the kill are acknowledged too
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    if proc.returncode != -signal.SIGKILL:
        text = log.read_bytes()[log_from:].decode(errors="replace")
        pytest.fail(f"writer exited by itself with {proc.returncode}:\n{text}")
    return _parse(seed, bytes(buf))


def read_queue(st: Store, topic: str, queue_id: int, start: int, end: int) -> list:
    out = []
    off = start
    while off < end:
        got = st.read(topic, queue_id, off, 256)
        assert got, f"{topic}/{queue_id}: nothing readable at queue offset {off} (end {end})"
        out.extend(got)
        off = got[-1].queue_offset + 1
    return out


def check_store(store_dir: Path, acks: list[Ack], log: Path | None = None) -> None:
    """Every acknowledged append is present exactly once, intact, by every read path."""
    lost_keys: list[Ack] = []
    before_open = _index_files(store_dir)
    st = Store.open(store_dir, writable=True)
    try:
        opened = f"recovery: {st.recovery}; rebuild: {st.rebuild_report}"
        assert st.recovery is not None
        assert st.recovery.clean_shutdown is False  # a writer ran and never closed
        # Per (topic, queue): offsets contiguous from 0, each record in its own place.
        by_key: dict[str, list[MessageRecord]] = {}
        queues = {(q.topic, q.queue_id): q for q in st.offsets()}
        for (topic, qid), q in queues.items():
            assert q.min_offset == 0, q
            msgs = read_queue(st, topic, qid, 0, q.max_offset)
            assert [m.queue_offset for m in msgs] == list(range(q.max_offset)), (topic, qid)
            assert all(m.topic == topic and m.queue_id == qid for m in msgs)
            assert len({m.phy_offset for m in msgs}) == len(msgs)
            for m in msgs:
                for k in m.keys:
                    by_key.setdefault(k, []).append(m)
        for a in acks:
            want = make_message(a.seed, a.thread, a.i)
            key = message_key(a.seed, a.thread, a.i)
            where = f"seed {a.seed} thread {a.thread} message {a.i} ({a})"
            assert a.topic == want.topic, where
            assert want.queue_id in (None, a.queue_id), where
            assert (a.topic, a.queue_id) in queues, where
            assert a.queue_offset < queues[a.topic, a.queue_id].max_offset, where
            # Exactly once in the whole store (keys are unique per message).
            assert [m.phy_offset for m in by_key.get(key, [])] == [a.phy_offset], where
            got = st.read(a.topic, a.queue_id, a.queue_offset, 1)
            assert len(got) == 1, where
            m = got[0]
            assert (m.queue_offset, m.phy_offset) == (a.queue_offset, a.phy_offset), where
            assert m.body == want.body, where
            assert m.keys == want.keys, where
            assert m.tags == want.tags, where
            by_id = st.query_msg_id(make_msg_id(*st.store_host, a.phy_offset))
            assert by_id.phy_offset == a.phy_offset, where
            assert by_id.body == want.body, where
            found = [f.phy_offset for f in st.query_key(a.topic, key)]
            if not found:
                lost_keys.append(a)
            else:
                assert found == [a.phy_offset], where
        # The recovered store takes new appends after everything that survived.
        r = st.append(Message(topic="crash-after", body=b"after recovery", queue_id=0))
        assert r.phy_offset > max(a.phy_offset for a in acks)
        assert st.wait_dispatched(10)
        assert st.read("crash-after", 0, r.queue_offset, 1)[0].body == b"after recovery"
    finally:
        st.close()
    # A clean close leaves nothing for the next open to repair.
    st = Store.open(store_dir, writable=True)
    try:
        assert st.recovery is not None
        assert st.recovery.clean_shutdown is True
        assert st.recovery.changed is False, st.recovery
        after = {(q.topic, q.queue_id): q.max_offset for q in st.offsets()}
        before = dict.fromkeys(after, 0) | {k: q.max_offset for k, q in queues.items()}
        before["crash-after", 0] += 1
        assert after == before
    finally:
        st.close()
    if lost_keys:
        phys = sorted(a.phy_offset for a in lost_keys)
        pytest.fail(
            f"{len(lost_keys)} of {len(acks)} acknowledged keys lost, at commit-log offsets "
            f"{phys[0]}..{phys[-1]}, of runs {sorted({a.seed for a in lost_keys})};\n"
            f"index files before the check's open: {before_open};\n{opened};\n"
            f"index files after it: {_index_files(store_dir)};\n"
            f"writers' stderr: {log.read_text(errors='replace')[-3000:] if log else ''}"
        )


def _index_files(store_dir: Path) -> list[str]:
    """Each IndexFile as name, size and stored header, to diagnose a lost key."""
    out = []
    for p in sorted((store_dir / L.DIR_INDEX).glob("*")):
        head = p.read_bytes()[: L.INDEX_HEADER.size]
        fields = L.INDEX_HEADER.unpack(head) if len(head) == L.INDEX_HEADER.size else ()
        out.append(f"{p.name} {p.stat().st_size} B header {fields}")
    return out


@pytest.mark.parametrize("seed", range(1, 13))
def test_sigkill_keeps_every_acknowledged_append(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    store_dir = tmp_path / "store"
    log = tmp_path / "writer.log"
    runs = 1 if rng.random() < 0.5 else rng.randint(2, 3)  # kill again during/after recovery
    acks: list[Ack] = []
    for run in range(runs):
        acks.extend(run_and_kill(store_dir, seed * 100 + run, rng, log))
    if acks:
        check_store(store_dir, acks, log)
    elif is_store_dir(store_dir):
        # Killed before any acknowledgement: nothing was promised, but the store must open.
        Store.open(store_dir, writable=True).close()
        st = Store.open(store_dir, writable=True)
        st.close()
        assert st.recovery is not None
        assert st.recovery.clean_shutdown is True


# ---- deterministic images of a kill -9 ------------------------------------------------------
#
# After kill -9 the disk holds exactly what the page cache held: every pwrite and every write
# through a shared mmap, but only the checkpoint written at the last flush. Copying the files of a
# live, idle store therefore gives the disk image of a kill at that instant (the copy has the
# ``abort`` file the live store wrote at open).

QUIET = CONFIG.with_changes(flush_interval_ms=3_600_000)  # no checkpoint while the test runs


def _kill_image(live: Path, image: Path, st: Store) -> None:
    assert st.wait_dispatched(10)
    shutil.copytree(live, image)
    assert (image / L.FILE_ABORT).exists()


def _append_keyed(st: Store, prefix: str, n: int) -> dict[str, AppendResult]:
    out = {}
    for i in range(n):
        key = f"{prefix}{i}"
        out[key] = st.append(
            Message(topic="img", body=f"{key} body".encode(), queue_id=i % 2, keys=(key,))
        )
    return out


def test_kill_after_checkpoint_keeps_older_keys_queryable(tmp_path: Path) -> None:
    live = tmp_path / "live"
    st = Store.open(live, create=True, config=QUIET)
    before = _append_keyed(st, "old", 60)
    st.close()  # clean: the checkpoint (and every index header) covers the first 60
    st = Store.open(live, writable=True)
    after = _append_keyed(st, "new", 60)  # indexed, but no checkpoint before the "kill"
    _kill_image(live, tmp_path / "image", st)
    st.close()
    st = Store.open(tmp_path / "image", writable=True)
    try:
        assert st.recovery is not None
        assert st.recovery.clean_shutdown is False
        for key, r in (before | after).items():
            assert st.read(r.topic, r.queue_id, r.queue_offset, 1)[0].body == f"{key} body".encode()
        lost = sorted(k for k, r in (before | after).items() if not st.query_key("img", k))
        assert lost == []
    finally:
        st.close()


def test_kill_between_checkpoint_files_recovers(tmp_path: Path) -> None:
    """The disk after a kill between writing ``checkpoint`` and ``mqtier.dispatch``."""
    store_dir = tmp_path / "store"
    st = Store.open(store_dir, create=True, config=QUIET)
    results = _append_keyed(st, "k", 30)
    st.close()
    (store_dir / L.FILE_DISPATCH_CHECKPOINT).unlink()  # the first one was never written
    (store_dir / L.FILE_ABORT).write_bytes(b"")
    st = Store.open(store_dir, writable=True)
    try:
        assert st.recovery is not None
        assert st.recovery.clean_shutdown is False
        for key, r in results.items():
            assert st.read(r.topic, r.queue_id, r.queue_offset, 1)[0].body == f"{key} body".encode()
            assert [m.phy_offset for m in st.query_key("img", key)] == [r.phy_offset]
    finally:
        st.close()
