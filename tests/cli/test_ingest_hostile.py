"""`mqtier ingest` under hostile input and faults (issue #10, items 5-7 and the extras).

Real subprocesses, real signals, real /dev/zero, a real read-only mount where the machine
allows mounting: each test here fails on the code before the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mqtier import Message, Store
from mqtier.cli import app
from mqtier.errors import ConfigError
from mqtier.format import layout as L
from mqtier.inputs import read_lines
from mqtier.store.topics import MAX_QUEUES

runner = CliRunner()

SMALL = ["--commitlog-file-size", "16M", "--broker", "broker-hostile"]


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def mqtier_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mqtier", *args]


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def count_messages(store: Path) -> int:
    res = subprocess.run(
        mqtier_cmd("offsets", "--store", str(store), "--json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return sum(q["messages"] for q in json.loads(res.stdout)["queues"])


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = tmp_path / "s"
    src = tmp_path / "first.jsonl"
    src.write_text("".join(json.dumps({"body": f"first {i}"}) + "\n" for i in range(100)))
    res = run("ingest", "--store", str(store), "-t", "orders", "--queues", "4", *SMALL, str(src))
    assert res.exit_code == 0, res.output
    return store


def _default_signals() -> None:
    """The child must see the signals the test sends, whatever the test runner ignores."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


# ---- item 5: a signal rolls the ingest back ---------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_mid_ingest_rolls_it_back(filled: Path, tmp_path: Path, signum: int) -> None:
    checkpoint = digest(filled / L.FILE_CHECKPOINT), digest(filled / L.FILE_DISPATCH_CHECKPOINT)
    topics = digest(filled / L.DIR_CONFIG / L.FILE_TOPICS)
    err_path = tmp_path / "err.txt"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            mqtier_cmd("ingest", "--store", str(filled), "-t", "orders", "--format", "raw", "-"),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_default_signals,  # noqa: PLW1509 - no threads in the child yet
        )
    assert proc.stdin is not None
    stdin = proc.stdin

    def feed() -> None:  # an endless, large stdin: the run is mid-way whenever it is signalled
        block = b"".join(b"line %d of a long ingest\n" % i for i in range(20_000))
        try:
            while True:
                stdin.write(block)
        except (BrokenPipeError, ValueError, OSError):
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        deadline = time.monotonic() + 60
        # a partial run is durable and visible before the signal: the case that lost data
        while count_messages(filled) < 100 + 20_000:
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "the ingest made no progress"
            time.sleep(0.2)
        assert (filled / L.FILE_INGEST_FENCE).exists()
        proc.send_signal(signum)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdin.close()
    lines = err_path.read_text().strip().splitlines()
    assert rc == 128 + signum, lines
    assert len(lines) == 1, lines
    assert signal.Signals(signum).name in lines[0] and "rolled back" in lines[0]
    assert not (filled / L.FILE_ABORT).exists()
    assert not (filled / L.FILE_INGEST_FENCE).exists()
    assert count_messages(filled) == 100
    assert (digest(filled / L.FILE_CHECKPOINT), digest(filled / L.FILE_DISPATCH_CHECKPOINT)) == (
        checkpoint
    )
    assert digest(filled / L.DIR_CONFIG / L.FILE_TOPICS) == topics
    with Store.open(filled, create=True) as st:  # it opens and takes appends again
        st.append(Message("orders", b"after the rollback"))
    assert count_messages(filled) == 101


def test_a_signal_before_a_first_ingest_leaves_no_store(tmp_path: Path) -> None:
    store = tmp_path / "new"
    err_path = tmp_path / "err.txt"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            mqtier_cmd("ingest", "--store", str(store), *SMALL, "-t", "t", "-f", "raw", "-"),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_default_signals,  # noqa: PLW1509
        )
    assert proc.stdin is not None
    proc.stdin.write(b"one line\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not (store / L.FILE_INGEST_FENCE).exists():  # the run is waiting for more stdin
        assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    proc.stdin.close()
    assert not store.exists()


# ---- item 6: bounded memory on endless input ---------------------------------------------------


# Runs argv[2:] as its child and writes that child's peak RSS (KiB) to the file argv[1]. The
# measured process must be a grandchild: Linux records, at exec, the high-water RSS of the
# memory a process forked from, so a direct child of a big pytest worker reports the worker's
# RSS (hundreds of MiB) whatever it does itself; a child of this small launcher does not.
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], stdin_path: str | None) -> tuple[int, int, float, str]:
    """Exit code, peak RSS (bytes), seconds and stderr of one process (see _LAUNCHER)."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = os.path.join(tmp, "maxrss")
        with open(stdin_path or os.devnull, "rb") as stdin:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, rss_file, *args],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a stuck ingest and its launcher die together
            )
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                pytest.fail("ingest of endless input did not stop")
            seconds = time.monotonic() - t0
        with open(rss_file) as fh:
            peak_kib = int(fh.read())
    return proc.returncode, peak_kib * 1024, seconds, err.decode()


@pytest.mark.parametrize(
    ("fmt", "source", "stdin"),
    [("file", "/dev/zero", None), ("raw", "-", "/dev/zero"), ("jsonl", "-", "/dev/zero")],
)
def test_endless_input_fails_at_the_size_limit_in_bounded_memory(
    tmp_path: Path, fmt: str, source: str, stdin: str | None
) -> None:
    store = tmp_path / "s"
    args = mqtier_cmd("ingest", "--store", str(store), *SMALL, "-t", "t", "-f", fmt, source)
    rc, peak, seconds, err = run_measured(args, stdin)
    assert rc == 9, err
    line = err.strip().splitlines()
    assert len(line) == 1, line
    where = "/dev/zero:0:" if fmt == "file" else "<stdin>:1:"
    assert where in line[0] and "maximum message size" in line[0], line
    assert peak < 500 << 20, f"peak RSS {peak >> 20} MiB"
    assert seconds < 60
    assert not store.exists()  # the failed first ingest left nothing


class Endless(io.RawIOBase):
    """A stream of ``b"x"`` that never ends (no newline), counting what was read from it."""

    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = 1 << 16 if size < 0 else size
        self.served += n
        return b"x" * n


def test_read_lines_reports_an_endless_line_once_it_passes_the_limit() -> None:
    stream = Endless()
    lines = read_lines(stream, "gen", block_bytes=1 << 16, max_line_bytes=1 << 20)  # type: ignore[arg-type]
    assert next(lines) == (1, None)
    assert stream.served <= (1 << 20) + (2 << 16)  # read only past the limit, not on and on


def test_read_lines_skips_to_the_end_of_an_over_long_line() -> None:
    text = b"ok 1\n" + b"y" * 5000 + b"\nok 3\n" + b"z" * 3000 + b"\n" + b"w" * 10 + b"\nlast"
    for block in (7, 64, 1 << 20):
        got = list(read_lines(io.BytesIO(text), "t", block_bytes=block, max_line_bytes=100))
        assert got == [
            (1, b"ok 1"),
            (2, None),
            (3, b"ok 3"),
            (4, None),
            (5, b"w" * 10),
            (6, b"last"),
        ]


def test_skip_bad_skips_an_over_long_line(tmp_path: Path) -> None:
    store = tmp_path / "s"
    src = tmp_path / "in.txt"
    src.write_bytes(b"short\n" + b"L" * 9000 + b"\nafter\n")
    res = run(
        "ingest", "--store", str(store), *SMALL, "--max-message-size", "4K",
        "-t", "t", "-f", "raw", "--skip-bad", "--json", str(src),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["messages"] == 2 and doc["bad_lines"] == 1
    assert f"{src}:2:" in doc["bad_samples"][0]


def test_a_line_with_both_body_and_body_b64_is_malformed(filled: Path, tmp_path: Path) -> None:
    src = tmp_path / "both.jsonl"
    src.write_text('{"body": "ok"}\n{"body": "text", "body_b64": "AAEC"}\n')
    before = tree(filled / "commitlog")
    res = run("ingest", "--store", str(filled), "-t", "orders", str(src))
    assert res.exit_code == 8, res.output
    assert f"{src}:2:" in res.stderr and "body_b64" in res.stderr
    assert tree(filled / "commitlog") == before


@pytest.mark.parametrize("topic", ["a\nb", "tab\there", "esc\x1b[31m", "del\x7f", "c1\x85"])
def test_a_topic_with_a_control_character_is_invalid(
    filled: Path, tmp_path: Path, topic: str
) -> None:
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps({"body": "x", "topic": topic}) + "\n")
    res = run("ingest", "--store", str(filled), str(src))
    assert res.exit_code == 10, res.output
    assert len(res.stderr.strip().splitlines()) == 1  # the newline is shown escaped
    assert "control character" in res.stderr
    res = run("ingest", "--store", str(filled), "-t", topic, "-f", "raw", str(src))
    assert res.exit_code == 10, res.output
    assert not (filled / "consumequeue" / topic).exists()


# ---- item 7: bounded queue ids and counts ------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--queues", "99999999999999999999"), ("--queues", str(MAX_QUEUES + 1)),
     ("--queue", str(MAX_QUEUES)), ("--queue", "2147483647")],
)  # fmt: skip
def test_queue_options_out_of_range_are_usage_errors(
    tmp_path: Path, option: str, value: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"body": "x"}\n')
    res = run("ingest", "--store", str(tmp_path / "new"), "-t", "t", option, value, str(src))
    assert res.exit_code == 2, res.output
    assert option in res.output
    assert not (tmp_path / "new").exists()


def topic_queues(store: Path, topic: str) -> int:
    doc = json.loads((store / L.DIR_CONFIG / L.FILE_TOPICS).read_text())
    return int(doc["topicConfigTable"][topic]["writeQueueNums"])


@pytest.mark.parametrize("queue", [4, 1023, 2147483647, 2**40])
def test_a_queue_beyond_the_topic_is_an_error(filled: Path, tmp_path: Path, queue: int) -> None:
    topics = digest(filled / L.DIR_CONFIG / L.FILE_TOPICS)
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"body": "x", "queue": queue}) + "\n")
    res = run("ingest", "--store", str(filled), "-t", "orders", str(src))
    assert res.exit_code == 13, res.output
    assert f"{src}:1:" in res.stderr and f"queue {queue}" in res.stderr
    assert digest(filled / L.DIR_CONFIG / L.FILE_TOPICS) == topics
    res = run("ingest", "--store", str(filled), "-t", "orders", "--grow-queues", str(src))
    if queue < MAX_QUEUES:
        assert res.exit_code == 0, res.output
        assert topic_queues(filled, "orders") == queue + 1
    else:  # never past the bound, even when asked to grow
        assert res.exit_code == 13, res.output
        assert digest(filled / L.DIR_CONFIG / L.FILE_TOPICS) == topics


def test_a_new_topic_gets_the_default_queues_not_the_named_one(tmp_path: Path) -> None:
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"body": "x", "topic": "fresh", "queue": 9}) + "\n")
    res = run("ingest", "--store", str(tmp_path / "s"), *SMALL, str(src))
    assert res.exit_code == 13, res.output
    assert "4 queues" in res.stderr


def test_topic_table_refuses_counts_past_the_bound(filled: Path) -> None:
    with Store.open(filled, create=True) as st:
        with pytest.raises(ConfigError):
            st.create_topic("wide", MAX_QUEUES + 1)
        st.create_topic("wide", MAX_QUEUES)
    assert topic_queues(filled, "wide") == MAX_QUEUES


# ---- the extras: checkpoint, foreign directories, read-only mounts ------------------------------


@pytest.mark.parametrize("good_lines", [0, 50_000])
def test_a_failed_ingest_leaves_the_checkpoints_byte_identical(
    filled: Path, tmp_path: Path, good_lines: int
) -> None:
    names = (L.FILE_CHECKPOINT, L.FILE_DISPATCH_CHECKPOINT)
    before = {n: digest(filled / n) for n in names}
    assert before[L.FILE_CHECKPOINT] is not None
    src = tmp_path / "bad.jsonl"
    with src.open("w") as fh:
        for i in range(good_lines):  # enough for the reput to checkpoint meanwhile
            fh.write(json.dumps({"body": f"good {i}"}) + "\n")
        fh.write("{broken\n")
    time.sleep(0.01)  # a rewritten checkpoint would carry a later timestamp
    res = run("ingest", "--store", str(filled), "-t", "orders", str(src))
    assert res.exit_code == 8, res.output
    assert {n: digest(filled / n) for n in names} == before


def test_a_store_is_not_made_among_user_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    (home / "photos").mkdir()
    src = tmp_path / "in.jsonl"
    src.write_text('{"body": "x"}\n')
    res = run("ingest", "--store", str(home), *SMALL, "-t", "t", str(src))
    assert res.exit_code == 7, res.output
    assert str(home) in res.stderr and "--create" in res.stderr
    assert sorted(p.name for p in home.iterdir()) == ["photos", "thesis.tex"]
    res = run("ingest", "--store", str(home), *SMALL, "-t", "t", "--create", str(src))
    assert res.exit_code == 0, res.output
    assert (home / "commitlog").is_dir()
    (tmp_path / "afile").write_text("not a directory")
    res = run("ingest", "--store", str(tmp_path / "afile"), *SMALL, "-t", "t", str(src))
    assert res.exit_code == 7, res.output
    assert "not a directory" in res.stderr


def test_ingest_into_a_store_without_write_permission_is_exit_12(
    filled: Path, tmp_path: Path
) -> None:
    for p in [filled, *filled.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = tree(filled)
    src = tmp_path / "in.jsonl"
    src.write_text('{"body": "x"}\n')
    try:
        res = run("ingest", "--store", str(filled), "-t", "orders", str(src))
        assert res.exit_code == 12, res.output
        assert str(filled) in res.stderr and "write" in res.stderr
        assert tree(filled) == before
    finally:
        for p in [filled, *filled.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_ingest_on_a_read_only_mount_is_exit_12(read_only_mount: Path, tmp_path: Path) -> None:
    store = read_only_mount / "s"
    src = tmp_path / "in.jsonl"
    src.write_text('{"body": "x"}\n')
    res = run("ingest", "--store", str(store), *SMALL, "-t", "t", str(src))
    assert res.exit_code == 0, res.output
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_mount)], check=True)
    before = tree(store)
    for target in (store, read_only_mount / "new"):
        res = run("ingest", "--store", str(target), "-t", "t", str(src))
        assert res.exit_code == 12, res.output
        assert "read-only file system" in res.stderr
    assert tree(store) == before
