"""A real full disk: a 40 MiB tmpfs and a 40 MiB ext4 loop device, filled by an ingest.

A write through a map into an unallocated block of a full file system raises SIGBUS, which
kills the process without a word (exit 135) and without its rollback; on tmpfs even reading
a hole can. So every command here runs in a child process and must end by itself: the
ingest with exit 1 naming the file, the rest with their usual answers, on the still-full
disk. Mounting needs root; CI runs as root, so there these tests must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

MQTIER = [sys.executable, "-m", "mqtier"]


def _mount(args: list[str], target: Path) -> None:
    done = subprocess.run(
        ["mount", *args, str(target)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = f"cannot mount a small file system here: {done.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI runs as root and must run the disk-full tests)")
        pytest.skip(reason)


@pytest.fixture(params=["tmpfs", "ext4"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "mnt"
    target.mkdir()
    if request.param == "tmpfs":
        _mount(["-t", "tmpfs", "-o", "size=40m", "tmpfs"], target)
    else:
        if shutil.which("mkfs.ext4") is None:
            pytest.skip("mkfs.ext4 not installed")
        image = tmp_path / "disk.img"
        with image.open("wb") as fh:
            fh.truncate(40 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        _mount(["-o", "loop", str(image)], target)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def mqtier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MQTIER, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300
    )


def write_jsonl(path: Path, n: int, prefix: str, body_bytes: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            doc = {"body": f"{prefix} {i} ".ljust(body_bytes, "x"), "keys": [f"{prefix}-{i}"]}
            fh.write(json.dumps(doc) + "\n")
    return path


def total_messages(store: Path) -> int:
    done = mqtier("offsets", "--store", str(store), "--json")
    assert done.returncode == 0, (done.returncode, done.stderr)
    return sum(q["messages"] for q in json.loads(done.stdout)["queues"])


def fill(disk: Path) -> Path:
    """Take every free byte left (as another program on a shared disk would)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        for step in (1 << 20, 1 << 16, 1 << 12, 1):
            chunk = bytes(step)
            try:
                while True:
                    fh.write(chunk)
            except OSError:
                continue  # the disk cannot take this much more: try smaller writes
    return filler


def test_an_ingest_that_fills_the_disk_fails_cleanly_and_keeps_what_was_acknowledged(
    small_disk: Path, tmp_path: Path
) -> None:
    store = small_disk / "store"
    base = write_jsonl(tmp_path / "base.jsonl", 3_000, "base", 150)
    done = mqtier(
        "ingest", "--store", str(store), "--topic", "t", "--queues", "4",
        "--commitlog-file-size", "1M", str(base),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    flood = write_jsonl(tmp_path / "flood.jsonl", 30_000, "flood", 1000)  # 30 MB: cannot fit

    done = mqtier("ingest", "--store", str(store), "--topic", "t", str(flood))
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # not SIGBUS (-7)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: No space left on device (") and str(store) in last, last
    assert "Traceback" not in done.stderr
    assert total_messages(store) == 3_000  # the failed run rolled back; the rest is there

    # The disk stays full: every reading command still answers (no SIGBUS on a hole).
    filler = fill(small_disk)
    assert total_messages(store) == 3_000
    done = mqtier("recover", "--store", str(store), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    done = mqtier("query", "key", "base-2999", "--store", str(store), "--topic", "t")
    assert done.returncode == 0, done.stderr
    done = mqtier("read", "--store", str(store), "--topic", "t", "--queue", "1", "--json")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 32, done.stderr
    # A writer on the full disk fails naming the file and changes nothing, or, where the
    # files it needs were allocated before (pre-written, reserved), simply succeeds.
    small = write_jsonl(tmp_path / "small.jsonl", 10, "small", 100)
    done = mqtier("ingest", "--store", str(store), "--topic", "t", str(small))
    if done.returncode == 1:
        assert "No space left on device (" in done.stderr and str(store) in done.stderr
        assert total_messages(store) == 3_000
    else:
        assert done.returncode == 0, done.stderr
        assert total_messages(store) == 3_010

    filler.unlink()  # space again: the store works as before
    before = total_messages(store)
    done = mqtier("ingest", "--store", str(store), "--topic", "t", str(small))
    assert done.returncode == 0, done.stderr
    assert total_messages(store) == before + 10


def test_a_first_ingest_on_a_full_disk_leaves_no_store(small_disk: Path, tmp_path: Path) -> None:
    """The issue's reproduction: 4 MiB commit-log files, far more data than the disk holds."""
    store = small_disk / "store"
    flood = write_jsonl(tmp_path / "flood.jsonl", 30_000, "flood", 1000)
    done = mqtier(
        "ingest", "--store", str(store), "--topic", "t", "--queues", "4",
        "--commitlog-file-size", "4M", str(flood),
    )  # fmt: skip
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "No space left on device (" in done.stderr
    assert not store.exists()  # all or nothing: a failed first ingest removes what it made
