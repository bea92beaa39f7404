"""The fault campaign: an ingest hit by ENOSPC, EIO on write or on sync, SIGKILL or SIGTERM.

After each fault the messages acknowledged before it survive, the unacknowledged run is gone
(an ingest is all or nothing), the store opens read-only at once and for writing after
``recover``, and what the failed command printed names the fault and the file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mqtier.cli import app
from tests.conftest import ROOT

runner = CliRunner()

BASE_MESSAGES = 2_000
RUN_MESSAGES = 30_000
MQTIER = [sys.executable, "-m", "mqtier"]


def write_jsonl(path: Path, n: int, prefix: str) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            doc = {"body": f"{prefix} {i} " + "x" * 120, "keys": [f"{prefix}-{i}"]}
            fh.write(json.dumps(doc) + "\n")
    return path


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding BASE_MESSAGES acknowledged messages, 1 MiB commit-log files."""
    d = tmp_path_factory.mktemp("base")
    src = write_jsonl(d / "base.jsonl", BASE_MESSAGES, "base")
    store = d / "store"
    cmd = ["ingest", "--store", str(store), "--topic", "t", "--queues", "4"]
    done = subprocess.run(
        [*MQTIER, *cmd, "--commitlog-file-size", "1M", str(src)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return store


@pytest.fixture(scope="module")
def run_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("run") / "run.jsonl", RUN_MESSAGES, "run")


def mqtier(*args: str) -> Result:
    """The checks after a fault run in this process (the faults themselves in a child)."""
    return runner.invoke(app, list(args))


def messages(store: Path) -> int:
    done = mqtier("offsets", "--store", str(store), "--json")
    assert done.exit_code == 0, done.stderr
    return sum(q["messages"] for q in json.loads(done.stdout)["queues"])


def assert_survived(store: Path) -> None:
    """What was acknowledged is there, the failed run is not, and the store works again."""
    assert messages(store) == BASE_MESSAGES  # read-only, before any repair
    done = mqtier("recover", "--store", str(store))
    assert done.exit_code == 0, done.stderr
    assert messages(store) == BASE_MESSAGES
    done = mqtier("query", "key", "base-1999", "--store", str(store), "--topic", "t", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["body"].startswith("base 1999 ")
    done = mqtier("query", "key", "run-0", "--store", str(store), "--topic", "t")
    assert done.exit_code == 3, done.stdout  # the unacknowledged run left nothing behind
    extra = write_jsonl(store.parent / "extra.jsonl", 10, "extra")
    done = mqtier("ingest", "--store", str(store), "--topic", "t", str(extra))
    assert done.exit_code == 0, done.stderr
    assert messages(store) == BASE_MESSAGES + 10


# (os call, errno, nth call on a store file, sticky: every later call fails too)
CAMPAIGN = [
    pytest.param("pwrite", "ENOSPC", 3, True, id="enospc-commitlog-write"),
    pytest.param("write", "ENOSPC", 4, True, id="enospc-dispatch-checkpoint-mid-run"),
    pytest.param("posix_fallocate", "ENOSPC", 2, True, id="enospc-reserve-index-or-queue"),
    pytest.param("pwrite", "EIO", 2, False, id="eio-commitlog-write"),
    pytest.param("fdatasync", "EIO", 2, False, id="eio-commitlog-sync"),
    pytest.param("fsync", "EIO", 1, False, id="eio-checkpoint-sync"),
]


@pytest.mark.parametrize(("call", "code", "nth", "sticky"), CAMPAIGN)
def test_injected_io_fault(
    base_store: Path,
    run_input: Path,
    tmp_path: Path,
    call: str,
    code: str,
    nth: int,
    sticky: bool,
) -> None:
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    mode = "sticky" if sticky else "once"
    fault = [sys.executable, "-m", "tests.faults.inject", call, code, str(nth), mode, "--"]
    done = subprocess.run(
        [*fault, "ingest", "--store", str(store), "--topic", "t", str(run_input)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MQTIER_FAULT_ROOT": str(store)},
        timeout=300,
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and os.strerror(getattr(__import__("errno"), code)) in last
    assert str(store) in last, last  # names the file
    assert "Traceback" not in done.stderr
    assert_survived(store)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_ingest_killed_mid_run(
    base_store: Path, run_input: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    proc = subprocess.Popen(
        [*MQTIER, "ingest", "--store", str(store), "--topic", "t", str(run_input)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Kill once the run's records reach the second commit-log file: well into the run,
    # with thousands of its messages durable (and visible to a reader that ignored the fence).
    second = store / "commitlog" / "00000000000001048576"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if second.exists() and second.read_bytes()[:4] != bytes(4):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the ingest ended before it could be killed"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (-sig, 128 + sig), (proc.returncode, err)
    if sig == signal.SIGTERM:
        assert "rolled back" in err, err
    assert_survived(store)
