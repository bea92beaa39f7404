"""``read --topic t`` of every queue merged by store time, ``--from-time``, and ``--follow``
(issue #11 item 9), with real stores, a real concurrent ingest, real signals and real pipes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from mqtier import Store
from mqtier.cli import _cold
from mqtier.format.message import Message
from mqtier.store import store as store_module
from tests.cli.test_cli import run
from tests.cli.test_looking_writes_nothing import changes, snapshot
from tests.conftest import ROOT
from tests.geometry import TINY

# (queue, store time in seconds past BASE) in append order. Each queue's times rise, as a
# broker's do, but commit-log order is not time order, and queues 1 and 2 tie at 2000 (the tie
# goes to the lower queue id, though queue 2's message came first).
APPENDS = [(0, 3000), (1, 1000), (2, 2000), (0, 3500), (1, 2000), (2, 2500), (0, 5000)]
BASE = 1_800_000_000  # 2027-01-15T08:00:00Z: store times must lie in 2000..2099


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    monkeypatch.delenv("MQTIER_COLD", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_cold, "config_path", None)


@pytest.fixture
def timed_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Topic ``t`` with three queues whose messages have the store times of APPENDS."""
    root = tmp_path / "timed"
    clock = {"now": 0.0}
    fake = types.SimpleNamespace(time=lambda: clock["now"], monotonic=time.monotonic)
    monkeypatch.setattr(store_module, "time", fake)  # the writer stamps store times with it
    with Store.open(root, create=True, config=TINY) as st:
        st.create_topic("t", 3)
        for i, (queue, at) in enumerate(APPENDS):
            clock["now"] = float(BASE + at)
            st.append(Message("t", f"m{i}".encode(), queue_id=queue))
    monkeypatch.setattr(store_module, "time", time)
    return root


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def by_time(docs: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    return [(d["store_time"], d["queue"], d["queue_offset"]) for d in docs]


def expected(from_s: int = 0) -> list[tuple[int, int, int]]:
    """(store time in ms, queue, offset) of APPENDS stored at or after BASE + from_s."""
    offsets: dict[int, int] = {}
    rows = []
    for queue, at in APPENDS:
        offsets[queue] = offsets.get(queue, -1) + 1
        if at >= from_s:
            rows.append(((BASE + at) * 1000, queue, offsets[queue]))
    return sorted(rows)


def test_without_queue_every_queue_is_read_merged_by_store_time(timed_store: Path) -> None:
    res = run("read", "--store", str(timed_store), "--topic", "t", "--json")
    assert res.exit_code == 0, res.output
    assert by_time(lines(res.stdout)) == expected()
    # --count bounds the total, in the same order
    res = run("read", "--store", str(timed_store), "--topic", "t", "-n", "4", "--json")
    assert by_time(lines(res.stdout)) == expected()[:4]
    # plain lines (a pipe) in the same order, one header
    res = run("read", "--store", str(timed_store), "--topic", "t")
    rows = res.stdout.splitlines()
    assert rows[0].startswith("topic\tqueue\tqueue_offset")
    got = [(int(r.split("\t")[1]), int(r.split("\t")[2])) for r in rows[1:]]
    assert got == [(q, off) for _, q, off in expected()]


def test_from_without_queue_is_refused_with_a_hint(timed_store: Path) -> None:
    res = run("read", "--store", str(timed_store), "--topic", "t", "--from", "1")
    assert res.exit_code == 2
    assert "--from 1 needs --queue" in res.stderr and "try: mqtier read" in res.stderr
    assert "--from-time" in res.stderr
    both = run("read", "-s", str(timed_store), "-t", "t", "-q", "0", "--from", "1",
               "--from-time", "0")  # fmt: skip
    assert both.exit_code == 2 and "give one" in both.stderr


def test_from_time_on_the_hot_store(timed_store: Path) -> None:
    s = ["--store", str(timed_store), "--topic", "t", "--json"]
    res = run("read", *s, "--from-time", str((BASE + 2000) * 1000))  # ms
    assert res.exit_code == 0, res.output
    assert by_time(lines(res.stdout)) == expected(2000)
    res = run("read", *s, "--from-time", "2027-01-15T08:33:21+00:00")  # BASE + 2001 s
    assert by_time(lines(res.stdout)) == expected(2001)
    res = run("read", *s, "--queue", "0", "--from-time", str((BASE + 2000) * 1000))
    assert by_time(lines(res.stdout)) == [r for r in expected(2000) if r[1] == 0]
    res = run("read", *s, "--from-time", str((BASE + 6000) * 1000))  # all older: nothing
    assert res.exit_code == 0 and res.stdout == ""


def test_from_time_across_both_tiers_after_clean(tmp_path: Path) -> None:
    """The first message at or after T lives only in the cold tier (clean deleted it from the
    hot store): --from-time with --cold starts there, merged across queues."""
    store, cold = tmp_path / "s", (tmp_path / "cold").as_uri()
    small = ["--commitlog-file-size", "256K"]
    for part in ("a", "b", "c"):
        src = tmp_path / f"{part}.jsonl"
        src.write_text("".join(f'{{"body": "{part}{i} {"x" * 500}"}}\n' for i in range(1200)))
        res = run("ingest", "--store", str(store), "--topic", "t", "--queues", "2", *small,
                  str(src))  # fmt: skip
        assert res.exit_code == 0, res.output
        if part == "a":
            time.sleep(0.01)
            at = int(time.time() * 1000)  # after every message of part a, before part b
            time.sleep(0.01)
    everything = lines(run("read", "--store", str(store), "--topic", "t", "-n", "9999",
                           "--json").stdout)  # fmt: skip
    assert len(everything) == 3600
    for args in (
        ["dispatch", "--store", str(store), "--to", cold, "--force"],
        ["clean", "--store", str(store), "--cold", cold, "--keep", "0s"],
    ):
        res = run(*args)
        assert res.exit_code == 0, (args, res.output)
    hot_min = {
        q["queue"]: q["min_offset"]
        for q in json.loads(run("offsets", "--store", str(store), "--json").stdout)["queues"]
    }
    want = sorted(by_time([d for d in everything if d["store_time"] >= at]))
    assert all(off < hot_min[q] for _, q, off in want[:2])  # the first ones are cold only
    res = run("read", "--store", str(store), "--cold", cold, "--topic", "t",
              "--from-time", str(at), "-n", "9999", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    docs = [d for d in lines(res.stdout) if "queue_offset" in d]  # not the request bill
    assert by_time(docs) == want
    assert docs[0]["body"].startswith("b0 ")
    # one queue, both tiers
    res = run("read", "--store", str(store), "--cold", cold, "--topic", "t", "--queue", "1",
              "--from-time", str(at), "-n", "1", "--json")  # fmt: skip
    assert (
        by_time([d for d in lines(res.stdout) if "queue_offset" in d])
        == [r for r in want if r[1] == 1][:1]
    )
    # the hot store alone has only what clean left: the read starts at the first it holds
    res = run("read", "--store", str(store), "--topic", "t", "--from-time", str(at),
              "-n", "9999", "--json")  # fmt: skip
    assert by_time(lines(res.stdout)) == [r for r in want if r[2] >= hot_min[r[1]]]


def test_follow_with_count_stops_after_count(timed_store: Path) -> None:
    before = snapshot(timed_store)
    res = run("read", "--store", str(timed_store), "--topic", "t", "--follow", "-n", "3",
              "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert by_time(lines(res.stdout)) == expected()[:3]
    assert changes(before, snapshot(timed_store)) == []


# -- --follow with real processes ---------------------------------------------------------


def mqtier(*args: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mqtier", *args], cwd=ROOT, **kw)


def read_lines(stream: Any, n: int, timeout: float = 60) -> list[str]:
    """``n`` lines from a pipe, failing after ``timeout`` seconds (no hang on a bug)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while len(got) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {n} lines: {got}"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        assert chunk, f"EOF after {got}"
        buf += chunk
        *whole, buf = buf.split(b"\n")
        got.extend(w.decode() for w in whole)
    assert buf == b"" or len(got) >= n
    return got


def jsonl(path: Path, bodies: list[str]) -> Path:
    path.write_text("".join(json.dumps({"topic": "t", "body": b}) + "\n" for b in bodies))
    return path


@pytest.fixture
def live_store(tmp_path: Path) -> Path:
    store = tmp_path / "live"
    res = run("ingest", "--store", str(store), "--topic", "t", "--queues", "2",
              str(jsonl(tmp_path / "first.jsonl", ["old0", "old1", "old2"])))  # fmt: skip
    assert res.exit_code == 0, res.output
    return store


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_follow_prints_what_a_concurrent_ingest_adds_and_exits_0_on_a_signal(
    live_store: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    before = snapshot(live_store)
    follower = mqtier("read", "--store", str(live_store), "--topic", "t", "--follow",
                      "--json", "--poll", "50ms",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        old = [json.loads(x)["body"] for x in read_lines(follower.stdout, 3)]
        assert sorted(old) == ["old0", "old1", "old2"]
        # A writer in another process holds the store's lock while the follower polls.
        ingest = mqtier("ingest", "--store", str(live_store), "-", stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        assert ingest.stdin is not None
        ingest.stdin.write(jsonl(tmp_path / "n.jsonl", ["new0", "new1"]).read_bytes())
        ingest.stdin.flush()
        time.sleep(0.5)  # the follower polls beside a live writer
        _, ierr = ingest.communicate(timeout=60)  # closes stdin: the ingest commits
        assert ingest.returncode == 0, ierr
        new = [json.loads(x) for x in read_lines(follower.stdout, 2)]
        assert sorted(d["body"] for d in new) == ["new0", "new1"]
        # and a second run, another refresh
        res = run("ingest", "--store", str(live_store),
                  str(jsonl(tmp_path / "m.jsonl", ["more0"])))  # fmt: skip
        assert res.exit_code == 0, res.output
        assert json.loads(read_lines(follower.stdout, 1)[0])["body"] == "more0"
        follower.send_signal(sig)
        _, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
        follower.wait()
    assert follower.returncode == 0, err
    assert b"Traceback" not in err and b"Aborted" not in err, err
    # the follower wrote nothing: the only changes are the two ingests'
    assert [c for c in changes(before, snapshot(live_store)) if "lock" in c] == []


def test_follow_into_head_exits_0_when_head_goes_away(live_store: Path) -> None:
    """`read --follow | head -3` ends when head has its lines, though nothing new arrives."""
    follower = mqtier("read", "--store", str(live_store), "--topic", "t", "--follow",
                      "--poll", "50ms", stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert follower.stdout is not None
    head = subprocess.Popen(["head", "-3"], stdin=follower.stdout, stdout=subprocess.PIPE)
    follower.stdout.close()  # head holds the only reading end now
    try:
        out, _ = head.communicate(timeout=60)
        _, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
        follower.wait()
    assert out.decode().splitlines()[0].startswith("topic\tqueue")
    assert len(out.splitlines()) == 3
    assert follower.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err


# -- the library underneath: a read-only view refreshed beside its writer -----------------------


def test_a_read_only_view_refreshes_and_skips_an_unfinished_ingest(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with Store.open(root, create=True, config=TINY) as w:
        w.create_topic("t", 2)
        w.append_batch([Message("t", b"a", queue_id=0)])
        view = Store.open(root)
        try:
            assert view.refresh() == "same"
            # enough to roll into new commit-log and consume-queue files, and a new queue
            for i in range(300):
                w.append_batch([Message("t", b"x" * 400, queue_id=i % 2)])
            w.append_batch([Message("u", b"new topic", queue_id=0)])
            assert view.refresh() == "grew"
            assert [len(view.read("t", q, 0, 1000)) for q in (0, 1)] == [151, 150]
            assert [m.body for m in view.read("u", 0, 0, 10)] == [b"new topic"]
            # an ingest that may still roll back: not shown until its fence is lifted
            w.wait_dispatched()
            w.fence_ingest(w.commitlog.durable_end)
            w.append_batch([Message("t", b"maybe", queue_id=1)])
            assert view.refresh() == "same"
            w.fence_ingest(None)
            assert view.refresh() == "grew"
            assert view.read("t", 1, 150, 10)[0].body == b"maybe"
        finally:
            view.close()


def test_follow_on_a_terminal_prints_rows_as_they_come(live_store: Path) -> None:
    """A table needs every row before it can print; a follow never ends, so on a terminal
    its rows come one by one, aligned under a header."""
    import pty

    leader, follower_tty = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    follower = mqtier("read", "--store", str(live_store), "--topic", "t", "--follow",
                      "--poll", "50ms", stdout=follower_tty, stderr=subprocess.PIPE,
                      env=env)  # fmt: skip
    os.close(follower_tty)
    try:
        with os.fdopen(leader, "rb", buffering=0) as tty:
            rows = read_lines(tty, 4)
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
        follower.wait()
    text = [r.replace("\x1b[1m", "").replace("\x1b[0m", "").rstrip("\r") for r in rows]
    assert text[0].split()[:3] == ["topic", "queue", "offset"]
    assert sorted(r.split()[-1] for r in text[1:]) == ["old0", "old1", "old2"]
    assert all(len(r) <= 120 for r in text), text
    assert follower.returncode == 0, err


def test_a_follower_never_prints_what_an_ingest_rolls_back(tmp_path: Path) -> None:
    """The view was opened during an ingest (it shows its records); the follower holds them
    back, the ingest rolls back, and the next message, which reuses the queue offset, is
    printed: a rolled-back message was never printed and no message is skipped."""
    from mqtier.tier.follow import follow

    root = tmp_path / "s"
    w = Store.open(root, create=True, config=TINY)
    w.create_topic("t", 1)
    w.append_batch([Message("t", b"kept", queue_id=0)])
    w.wait_dispatched()
    start = w.commitlog.durable_end
    w.fence_ingest(start)
    w.append_batch([Message("t", b"doomed", queue_id=0)])
    view = Store.open(root)
    assert [m.body for m in view.read("t", 0, 0, 10)] == [b"kept", b"doomed"]
    batches = follow(view, None, "t", {}, reopen=lambda: Store.open(root), poll_s=0.01)
    try:
        assert [m.body for m in next(batches)] == [b"kept"]
        w.rollback_to(start)  # closes the writer
        assert view.refresh() == "stale"
        with Store.open(root, writable=True) as w2:
            w2.append_batch([Message("t", b"after", queue_id=0)])
        got = next(batches)
        assert [(m.body, m.queue_offset) for m in got] == [(b"after", 1)]
    finally:
        batches.close()
        view.close()
