"""Invariant 8: looking changes nothing.

Every command that only reads is run on a copy of each real RocketMQ store and on a store
whose writer was killed with SIGKILL mid-append (and then given a torn tail), and after each
command every file's bytes, size, mode and mtime, and every directory's entries and mtime,
must be exactly as before. Operators run mqtier on a crashed broker's directory: its files
are the evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtier.cli import app
from mqtier.format.layout import FILE_ABORT
from mqtier.store.store import Store
from tests.conftest import ROOT

runner = CliRunner()


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a write could change: content, size, mode, mtime, and each directory's
    entries (an added or removed file changes its directory's mtime and listing)."""
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted([root, *root.rglob("*")]):
        st = p.lstat()
        key = str(p.relative_to(root))
        if p.is_dir():
            out[key] = ("dir", st.st_mode, st.st_mtime_ns, tuple(sorted(os.listdir(p))))
        else:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[key] = ("file", st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def changes(
    before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]
) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def crashed_mqtier_store(tmp_path: Path) -> Path:
    """A store whose writer was SIGKILLed after acknowledging appends, plus a torn tail."""
    root = tmp_path / "crashed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash.writer", str(root), "7"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 60
        seen = 0
        while seen < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += 1
        assert seen >= 300, "the writer acknowledged too few appends"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert (root / FILE_ABORT).exists()
    with Store.open(root) as st:  # read-only: where the durable data ends
        end = st.commitlog.durable_end
        last = st.commitlog.file_for(end)
        file_bytes = st.commitlog.file_bytes
    # A torn tail: the start of a record whose body never reached the disk. Where the kill
    # left the end within a few bytes of the file's end (at least the 8 of a BLANK remain),
    # only what fits is written: a longer write would make the file longer than its size.
    torn = (500).to_bytes(4, "big") + bytes.fromhex("DAA320A7") + b"\x07" * 40
    with open(last.path, "r+b") as fh:
        fh.seek(end - last.base)
        fh.write(torn[: file_bytes - (end - last.base)])
    return root


def read_only_commands(store: Path, cold: Path, topic: str) -> list[list[str]]:
    """Every reading command (and dry run) with its main options."""
    s = ["--store", str(store)]
    url = cold.as_uri()
    files = [p for p in sorted(store.rglob("*")) if p.is_file() and p.name != "lock"]
    return [
        ["offsets", *s],
        ["offsets", *s, "--json"],
        ["offsets", *s, "--topic", topic, "--at", "-1h", "--json"],
        ["read", *s, "--topic", topic, "--queue", "0", "--count", "5"],
        ["read", *s, "--topic", topic, "--queue", "0", "--from", "3", "--json", "--b64"],
        ["read", *s, "--topic", topic, "--queue", "0", "--tag", "tag1", "--json"],
        ["query", "key", "no-such-key", *s, "--topic", topic],
        ["query", "key", "k-7-0-1", *s, "--topic", topic, "--json"],
        ["query", "id", "7F00000100002A9F0000000000000000", *s],
        ["query", "uniq", "7F00000100002A9F0000000000000001", *s],
        ["recover", *s, "--dry-run"],
        ["recover", *s, "--dry-run", "--json"],
        *(["inspect", str(p)] for p in files),
        ["inspect", str(files[0]), "--json"],
        ["dispatch", *s, "--to", url, "--dry-run", "--force"],
        ["dispatch", *s, "--to", url, "--force", "--json"],
        ["dispatch", *s, "--to", url],
        ["offsets", *s, "--cold", url, "--json"],
        ["log", "--cold", url, *s],
        ["log", "--cold", url, *s, "--json", "--limit", "1"],
        ["read", *s, "--cold", url, "--topic", topic, "--queue", "0", "--policy", "force"],
        ["read", *s, "--cold", url, "--topic", topic, "--queue", "0", "--policy", "not_in_mem"],
        ["clean", *s, "--cold", url, "--keep", "1s", "--dry-run"],
        ["clean", *s, "--cold", url, "--keep", "1s", "--dry-run", "--json"],
    ]


def assert_looking_changes_nothing(store: Path, cold: Path, topic: str) -> None:
    before = snapshot(store)
    for args in read_only_commands(store, cold, topic):
        res = runner.invoke(app, args)
        # inspect reports a torn record as corrupt (exit 4), naming file and offset
        allowed = (0, 3, 4) if args[0] == "inspect" else (0, 3)
        assert res.exit_code in allowed, f"{args}: exit {res.exit_code}\n{res.output}"
        changed = changes(before, snapshot(store))
        assert not changed, f"{' '.join(args)} changed {changed}"


def test_fixture_store_b_is_never_written(store_b: Path, tmp_path: Path) -> None:
    assert_looking_changes_nothing(store_b, tmp_path / "cold", "abc")


def test_fixture_store_c_is_never_written(store_c: Path, tmp_path: Path) -> None:
    assert_looking_changes_nothing(store_c, tmp_path / "cold", "abc")


def test_a_crashed_mqtier_store_is_never_written(tmp_path: Path) -> None:
    store = crashed_mqtier_store(tmp_path)
    assert_looking_changes_nothing(store, tmp_path / "cold", "crash-a")


def test_a_crashed_store_warns_what_is_not_shown(tmp_path: Path) -> None:
    """A read of a crashed store says it was not shut down cleanly and where the torn tail
    is, instead of cutting it silently; offsets --json carries the same facts."""
    store = crashed_mqtier_store(tmp_path)
    res = runner.invoke(app, ["read", "--store", str(store), "--topic", "crash-a", "-n", "1"])
    assert res.exit_code == 0, res.output
    assert "not shut down cleanly" in res.stderr
    assert "torn tail at offset" in res.stderr
    assert "nothing was changed" in res.stderr
    res = runner.invoke(app, ["offsets", "--store", str(store), "--json"])
    health = json.loads(res.stdout)["health"]
    assert health["state"] == "crashed"
    assert health["torn_at"] is not None and health["torn_reason"]
    # After recover (which writes, and says so) the store is clean and the warning is gone.
    res = runner.invoke(app, ["recover", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert "truncate a torn tail" in res.stdout
    res = runner.invoke(app, ["offsets", "--store", str(store), "--json"])
    assert json.loads(res.stdout)["health"]["state"] == "clean"
    assert "warning" not in res.stderr


def test_library_open_is_read_only_by_default(store_b: Path) -> None:
    before = snapshot(store_b)
    with Store.open(store_b) as st:
        assert st.read_only
        assert st.health.state == "crashed"
        assert len(st.read("abc", 0, 0, 1000)) == 179
    assert changes(before, snapshot(store_b)) == []
    with Store.open(store_b, writable=True) as st:  # asked to write: recovers on disk
        assert not st.read_only
    assert changes(before, snapshot(store_b)) != []


@pytest.mark.parametrize("command", ["recover", "clean"])
def test_writing_commands_on_a_read_only_directory_exit_12(
    store_b: Path, tmp_path: Path, command: str
) -> None:
    for p in [store_b, *store_b.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = snapshot(store_b)
    (tmp_path / "cold").mkdir()  # a missing cold root is exit 3 before the store is opened
    extra = ["--cold", (tmp_path / "cold").as_uri()] if command == "clean" else []
    res = runner.invoke(app, [command, "--store", str(store_b), *extra])
    assert res.exit_code == 12, res.output
    assert "read-only" in res.stderr and str(store_b) in res.stderr
    assert changes(before, snapshot(store_b)) == []
