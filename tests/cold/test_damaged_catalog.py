"""A damaged cold catalog is never trusted: every command that loads it fails (exit 4) naming
the damaged key, and nothing writes to the tier until it is repaired (issue #10 item 4).

The tier is made by real ``mqtier ingest`` / ``mqtier dispatch --force`` subprocesses (four
commits), copied for each test, damaged by hand, and then each command is run as the CLI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from typer.testing import CliRunner

from mqtier.cli import app
from mqtier.tier.catalog import commit_key, latest_key, snapshot_key

BROKER = "broker-dc"
COMMITS = 4


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def mqtier(*args: str) -> Ran:
    """The real command, run in this process (a subprocess per command made this file take
    minutes): exit code, stdout and stderr as a shell would see them."""
    res = CliRunner().invoke(app, list(args), env={"MQTIER_COLD": None, "MQTIER_STORE": None})
    return Ran(res.exit_code, res.stdout, res.stderr)


def ok(*args: str) -> None:
    res = mqtier(*args)
    assert res.returncode == 0, (args, res.stdout, res.stderr)


def ingest(store: Path, tmp: Path, n: int, start: int) -> None:
    src = tmp / f"in-{start}.jsonl"
    src.write_text(
        "".join(
            json.dumps({"body": f"m{i}", "keys": [f"K{i}"]}) + "\n" for i in range(start, start + n)
        )
    )
    ok(
        "ingest",
        "--store",
        str(store),
        "--topic",
        "orders",
        "--queues",
        "2",
        "--broker",
        BROKER,
        str(src),
    )


def dispatch(store: Path, cold: Path) -> None:
    ok("dispatch", "--store", str(store), "--to", f"file://{cold}", "--force", "--broker", BROKER)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store and a file:// cold tier with four commits (records 1..4, no snapshot)."""
    root = tmp_path_factory.mktemp("damaged-catalog")
    store, cold = root / "store", root / "cold"
    for n in range(COMMITS):
        ingest(store, root, 50, n * 50)
        dispatch(store, cold)
    assert (cold / commit_key(BROKER, COMMITS)).exists()
    return root


@pytest.fixture
def tier(pristine: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(pristine, tmp_path / "t", symlinks=True)
    return tmp_path / "t" / "store", tmp_path / "t" / "cold"


def digest(root: Path) -> dict[str, object]:
    """Content hashes of files, but size and mtime of big ones (the 420 MB sparse IndexFile:
    reading it for every command made this file take minutes)."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (
                hashlib.sha256(p.read_bytes()).hexdigest()
                if st.st_size < (8 << 20)
                else (st.st_size, st.st_mtime_ns)
            )
    return out


def commands(store: Path, cold: Path) -> dict[str, list[str]]:
    to = ["--cold", f"file://{cold}", "--broker", BROKER]
    return {
        "offsets": ["offsets", "--store", str(store), *to],
        "read": [
            "read",
            "--store",
            str(store),
            "--topic",
            "orders",
            "--queue",
            "0",
            "--count",
            "100",
            *to,
        ],
        "dispatch": [
            "dispatch",
            "--store",
            str(store),
            "--force",
            "--to",
            f"file://{cold}",
            "--broker",
            BROKER,
        ],
        "compact": ["compact", *to],
        "expire": ["expire", "--ttl", "1d", *to],
        "clean": ["clean", "--store", str(store), "--keep", "0s", *to],
    }


def assert_refused(store: Path, cold: Path, damaged: str, *, also: str = "") -> None:
    """Every command exits 4 naming ``damaged``; neither the tier nor the store changes."""
    before_cold, before_store = digest(cold), digest(store)
    if also:  # new data waiting, so dispatch would commit if it did not refuse
        ingest(store, cold.parent, 20, 10_000)
        before_store = digest(store)
    for name, args in commands(store, cold).items():
        res = mqtier(*args)
        assert res.returncode == 4, (name, res.returncode, res.stdout, res.stderr)
        assert damaged in res.stderr, (name, res.stderr)
        assert "try:" in res.stderr, (name, res.stderr)
        assert digest(cold) == before_cold, f"{name} wrote to a damaged tier"
        after_store = digest(store)  # clean loads the catalog before its writable open
        assert after_store == before_store, f"{name} changed the store"


def test_intact_tier_is_read(tier: tuple[Path, Path]) -> None:
    """The fixture itself is fine: the commands below fail because of the damage only."""
    store, cold = tier
    res = mqtier(*commands(store, cold)["offsets"], "--json")
    assert res.returncode == 0, res.stderr
    res = mqtier(*commands(store, cold)["read"], "--json")
    assert res.returncode == 0 and res.stdout.count("\n") == 100, res.stderr


def test_missing_commit_record_is_a_hole_nobody_commits_over(tier: tuple[Path, Path]) -> None:
    store, cold = tier
    key = commit_key(BROKER, 2)
    (cold / key).unlink()
    assert_refused(store, cold, key, also="new data")
    assert not (cold / key).exists()  # dispatch did not make a new commit 2 over 3 and 4


def test_two_missing_commit_records_are_a_hole_too(tier: tuple[Path, Path]) -> None:
    store, cold = tier
    (cold / commit_key(BROKER, 2)).unlink()
    (cold / commit_key(BROKER, 3)).unlink()
    assert_refused(store, cold, commit_key(BROKER, 2), also="new data")


def test_deleted_tail_with_its_objects_left_is_refused_by_writers(tier: tuple[Path, Path]) -> None:
    """Records 3 and 4 gone: readers see a consistent commit 2, but the objects of commit 4
    show that history was lost, so dispatch refuses before it uploads anything."""
    store, cold = tier
    (cold / commit_key(BROKER, 3)).unlink()
    (cold / commit_key(BROKER, 4)).unlink()
    ingest(store, cold.parent, 20, 10_000)
    before = digest(cold)
    res = mqtier(*commands(store, cold)["dispatch"])
    assert res.returncode == 4, (res.stdout, res.stderr)
    assert commit_key(BROKER, 3) in res.stderr and "try:" in res.stderr
    assert digest(cold) == before


def flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_in_a_commit_record(tier: tuple[Path, Path]) -> None:
    store, cold = tier
    key = commit_key(BROKER, 3)
    text = (cold / key).read_bytes()
    flip(cold / key, text.index(b'"count":') + len(b'"count":'))  # a digit: still valid JSON
    assert orjson.loads((cold / key).read_bytes())
    assert_refused(store, cold, key)


def reseal(doc: dict[str, object]) -> bytes:
    """The record as a careful hand edit leaves it: a valid checksum over the edited body."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    doc["sha256"] = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return orjson.dumps(doc)


@pytest.mark.parametrize("shift", [+1, -1], ids=["gap", "overlap"])
def test_commit_record_edited_into_a_gap_or_overlap(tier: tuple[Path, Path], shift: int) -> None:
    """Checksum or not, a segment must start where its queue's committed offsets end."""
    store, cold = tier
    key = commit_key(BROKER, 3)
    doc = orjson.loads((cold / key).read_bytes())
    doc["added"][0]["first"] += shift
    (cold / key).write_bytes(reseal(doc))
    assert_refused(store, cold, key)


def test_flipped_byte_in_a_snapshot(tier: tuple[Path, Path]) -> None:
    """Commits up to 16 so a snapshot exists, then one byte of it flipped."""
    store, cold = tier
    for n in range(COMMITS, 16):
        ingest(store, cold.parent, 5, 20_000 + n * 5)
        dispatch(store, cold)
    key = snapshot_key(BROKER, 16)
    assert json.loads((cold / latest_key(BROKER)).read_bytes())["snapshot_seq"] == 16
    flip(cold / key, len((cold / key).read_bytes()) // 2)
    assert_refused(store, cold, key)
