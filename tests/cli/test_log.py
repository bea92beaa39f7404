"""``mqtier log``: the cold tier's recent commits, newest first (#11 item 10).

An operator asks what last night's cron job did: which runs committed, from which host, what
each added to or removed from every queue, and what it cost. The tier here is made by the real
commands (``ingest``, ``dispatch``, ``expire``, ``compact``) on a file:// tier and on moto's S3;
a long history is made through the catalog's own ``commit``; damage is done by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from rich.console import Console

from mqtier.backend.open import open_cold_store
from mqtier.cli import _cold, _output
from mqtier.cli._json import JSON_VERSION
from mqtier.format.coldobject import Segment
from mqtier.tier.catalog import (
    PROBE_PAST,
    SNAPSHOT_EVERY,
    CatalogState,
    commit,
    commit_key,
    latest_key,
    load_catalog,
)
from tests.cli.test_cli import run, tree_digest
from tests.moto_s3 import start_moto_server

BROKER = "broker-log"
GOLDEN = Path(__file__).parent / "golden" / "log"
LEGACY = GOLDEN / "legacy-tier"  # commit records written before `mqtier log` existed
PER_ROUND = 20  # messages per ingest: 10 in each of the 2 queues


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MQTIER_CONFIG", "MQTIER_COLD", "MQTIER_STORE", "MQTIER_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./mqtier.toml
    monkeypatch.setattr(_cold, "config_path", None)


def ok(*args: str) -> Any:
    res = run(*args)
    assert res.exit_code == 0, (args, res.stdout, res.stderr)
    return res


def ingest(root: Path, store: Path, start: int) -> None:
    src = root / f"in-{start}.jsonl"
    src.write_text(
        "".join(json.dumps({"body": f"m{i}"}) + "\n" for i in range(start, start + PER_ROUND))
    )
    ok("ingest", "--store", str(store), "--topic", "orders", "--queues", "2",
       "--broker", BROKER, str(src))  # fmt: skip


class Clock:
    """``time.time`` while a history is made: moved on only between commands, so which
    segments an expiry drops does not depend on how fast the machine is."""

    def __init__(self) -> None:
        # Noon UTC of today: a history a few minutes long never spans midnight (a table test
        # expects one day in the title).
        self.now = time.time() // 86400 * 86400 + 43200.0

    def __call__(self) -> float:
        return self.now


def make_history(root: Path, url: str, options: list[str] | None = None) -> Path:
    """Five commits by the real commands: dispatch x3, expire (round 1), compact (rounds 2-3)."""
    store, opts = root / "store", options or []
    clock = Clock()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time", clock)

        def step(*args: str, after: float = 1) -> None:
            ok(*args)
            clock.now += after

        ingest(root, store, 0)
        step("dispatch", "--store", str(store), "--to", url, *opts, "--force", after=100)
        for n in (1, 2):  # 2, 3: [10, 20), [20, 30); round 1 is then 100 s older
            ingest(root, store, n * PER_ROUND)
            step("dispatch", "--store", str(store), "--to", url, *opts, "--force")
        clock.now += 100
        # 4: drops round 1 (stored 200 s ago), keeps rounds 2 and 3 (100 s ago)
        step("expire", "--cold", url, *opts, "--broker", BROKER, "--ttl", "150s", "--yes")
        step("compact", "--cold", url, *opts, "--broker", BROKER)  # 5: [10, 30) in one
    return store


@pytest.fixture(scope="module")
def tier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("log")
    make_history(root, (root / "cold").as_uri())
    return root


def log_json(url: str, *extra: str) -> dict[str, Any]:
    res = ok("log", "--cold", url, "--broker", BROKER, "--json", *extra)
    return json.loads(res.stdout)


def ranges(commit: dict[str, Any], side: str) -> dict[int, tuple[int, int] | None]:
    return {
        q["queue"]: (q[side]["min_offset"], q[side]["max_offset"]) if q[side] else None
        for q in commit["queues"]
    }


def assert_the_five_commits(doc: dict[str, Any]) -> None:
    commits = doc["commits"]
    assert [c["seq"] for c in commits] == [5, 4, 3, 2, 1]  # newest first
    assert [c["operation"] for c in commits] == [
        "compact", "expire", "dispatch", "dispatch", "dispatch",
    ]  # fmt: skip
    times = [c["time"] for c in commits]
    assert times == sorted(times, reverse=True)
    compact, expire, *dispatches = commits
    for c, lo in zip(dispatches, (20, 10, 0), strict=True):
        assert ranges(c, "added") == {0: (lo, lo + 10), 1: (lo, lo + 10)}
        assert ranges(c, "removed") == {0: None, 1: None}
        assert c["added"]["messages"] == 20 and c["added"]["objects"] == 1
    assert ranges(expire, "removed") == {0: (0, 10), 1: (0, 10)}
    assert ranges(expire, "added") == {0: None, 1: None}
    assert expire["removed"]["messages"] == 20
    assert ranges(compact, "removed") == {0: (10, 30), 1: (10, 30)}
    assert ranges(compact, "added") == {0: (10, 30), 1: (10, 30)}
    assert compact["removed"]["segments"] == 4 and compact["added"]["segments"] == 2
    for c in commits:
        assert c["host"] == os.uname().nodename
        assert c["run_id"] and c["damaged"] is None
        assert isinstance(c["seconds"], float) and c["seconds"] >= 0
        assert c["requests"]["requests"] >= 2  # at least the load's GET and the create
        assert c["time_iso"] == _output.local_time(c["time"])
    assert all(c["requests"]["bytes_sent"] > 0 for c in (compact, *dispatches))
    assert (
        doc["damaged"] == [] and doc["cold"]["newest_seq"] == 5 and doc["version"] == JSON_VERSION
    )


def test_log_lists_each_commit_newest_first(tier: Path) -> None:
    assert_the_five_commits(log_json((tier / "cold").as_uri()))


def test_the_broker_comes_from_the_store(tier: Path) -> None:
    res = ok("log", "--cold", (tier / "cold").as_uri(), "--store", str(tier / "store"), "--json")
    doc = json.loads(res.stdout)
    assert doc["broker"] == BROKER and len(doc["commits"]) == 5


def test_limit_and_since(tier: Path) -> None:
    url = (tier / "cold").as_uri()
    doc = log_json(url, "--limit", "2")
    assert [c["seq"] for c in doc["commits"]] == [5, 4] and doc["more"] is True
    assert log_json(url, "--limit", "0")["more"] is False
    third = log_json(url)["commits"][2]["time"]
    doc = log_json(url, "--since", str(third))
    assert [c["seq"] for c in doc["commits"]] == [5, 4, 3] and doc["more"] is True
    newest = log_json(url)["commits"][0]["time"]
    doc = log_json(url, "--since", str(newest + 1))
    assert doc["commits"] == [] and doc["more"] is True


def test_looking_writes_nothing_to_the_tier(tier: Path) -> None:
    cold = tier / "cold"
    before = tree_digest(cold)
    ok("log", "--cold", cold.as_uri(), "--broker", BROKER)
    ok("log", "--cold", cold.as_uri(), "--store", str(tier / "store"), "--json", "-n", "1")
    assert tree_digest(cold) == before


def test_plain_output_in_a_pipe(tier: Path) -> None:
    """Not a terminal: a header, then one tab-separated line per commit and queue, each whole
    (run ids, times, ranges); the title and the summary go to stderr."""
    res = ok("log", "--cold", (tier / "cold").as_uri(), "--broker", BROKER)
    lines = res.stdout.splitlines()
    header = lines[0].split("\t")
    assert header[:8] == ["seq", "time", "operation", "host", "run_id", "topic", "queue", "added"]
    assert "requests" in header
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert [(r["seq"], r["queue"]) for r in rows] == [
        (str(s), str(q)) for s in (5, 4, 3, 2, 1) for q in (0, 1)
    ]
    doc = log_json((tier / "cold").as_uri())
    assert {r["run_id"] for r in rows} == {c["run_id"] for c in doc["commits"]}
    assert rows[0]["operation"] == "compact" and rows[0]["added"] == "[10, 30)"
    assert rows[2]["removed"] == "[0, 10)" and rows[2]["added"] == "-"
    times = {c["seq"]: c["time_iso"] for c in doc["commits"]}
    assert all(r["time"] == times[int(r["seq"])] for r in rows)  # whole, with its UTC offset
    assert "newest commit 5" in res.stderr and "5 commits shown" in res.stderr


def test_table_at_80_columns_keeps_times_and_offsets(
    tier: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buf = StringIO()
    console = Console(file=buf, force_terminal=True, width=80, color_system=None)
    monkeypatch.setattr(_output, "out_console", console)
    monkeypatch.setenv("COLUMNS", "80")
    ok("log", "--cold", (tier / "cold").as_uri(), "--broker", BROKER)
    text = buf.getvalue()
    assert "…" not in text  # nothing in a log listing is cut
    assert "[10, 30)" in text and "compact" in text
    day = log_json((tier / "cold").as_uri())["commits"][0]["time_iso"][:10]
    assert day in text.splitlines()[0]  # one day: the date and zone go to the title


def test_limit_1_costs_a_bounded_number_of_requests(tmp_path: Path) -> None:
    """A history of 40 commits (snapshots at 16 and 32): --limit 1 reads LATEST, the tail
    after the newest snapshot and the probes past its end, never the whole history; the
    default --limit 20 costs about one GET per commit shown."""
    url = (tmp_path / "cold").as_uri()
    cold = open_cold_store(url, root="creatable")
    state = load_catalog(cold, BROKER)
    for seq in range(1, 41):
        commit(cold, state, added=[_segment(seq)], run_id=f"{seq:032x}")
    assert state.snapshot_seq == 32

    def bill(*extra: str) -> dict[str, Any]:
        doc = log_json(url, *extra)
        return {"seqs": [c["seq"] for c in doc["commits"]], **doc["requests"]}

    one = bill("--limit", "1")
    assert one["seqs"] == [40]
    tail = 40 - 32
    # LATEST, records 33..40, record 41 (missing)
    assert one["by_kind"]["get"]["requests"] == 1 + tail + 1
    # the root's check and the probes past 41
    assert one["by_kind"]["size"]["requests"] == 1 + PROBE_PAST
    assert one["requests"] <= 1 + SNAPSHOT_EVERY + 1 + 1 + PROBE_PAST
    twenty = bill()
    assert twenty["seqs"] == list(range(40, 20, -1))
    assert twenty["by_kind"]["get"]["requests"] == 1 + 20 + 1  # LATEST, 20 records, the 41st
    assert "list" not in twenty["by_kind"]


def _segment(seq: int, queue: int = 0) -> Segment:
    return Segment(
        object=f"{BROKER}/data/{seq:020d}/{seq:032x}-000001.mqd", topic="orders", queue=queue,
        first=(seq - 1) * 5, count=5, min_ts=1_790_000_000_000 + seq, max_ts=1_790_000_000_000 + seq,
        cl_min=0, cl_max=0, raw_bytes=500, stored_bytes=100, index_pos=0, index_len=48,
        index_crc=0,
    )  # fmt: skip


def test_a_damaged_record_is_listed_and_named(tier: Path, tmp_path: Path) -> None:
    """A record failing its checksum and a lost one (a hole): every other commit is shown, the
    damaged ones are listed as such, the error names them at the end (exit 4), no traceback."""
    cold = tmp_path / "cold"
    shutil.copytree(tier / "cold", cold)
    flipped = cold / commit_key(BROKER, 4)
    flipped.write_bytes(flipped.read_bytes().replace(b'"count":10', b'"count":11', 1))
    (cold / commit_key(BROKER, 2)).unlink()
    res = run("log", "--cold", cold.as_uri(), "--broker", BROKER, "--json")
    assert res.exit_code == 4, res.output
    doc = json.loads(res.stdout)
    assert [c["seq"] for c in doc["commits"]] == [5, 4, 3, 2, 1]
    by_seq = {c["seq"]: c for c in doc["commits"]}
    assert "fails its sha256 checksum" in by_seq[4]["damaged"]
    assert commit_key(BROKER, 4) in by_seq[4]["damaged"] and by_seq[4]["operation"] is None
    assert "missing" in by_seq[2]["damaged"] and commit_key(BROKER, 2) in by_seq[2]["damaged"]
    assert [by_seq[s]["damaged"] for s in (5, 3, 1)] == [None, None, None]
    assert ranges(by_seq[5], "added") == {0: (10, 30), 1: (10, 30)}
    error = json.loads(res.stderr.strip().splitlines()[-1])["error"]
    assert error["exit_code"] == 4 and commit_key(BROKER, 4) in error["message"]
    assert "(and 1 more)" in error["message"]
    plain = run("log", "--cold", cold.as_uri(), "--broker", BROKER)
    assert plain.exit_code == 4 and "Traceback" not in plain.output
    assert "\tdamaged\t" in plain.stdout
    assert "error: " in plain.stderr and commit_key(BROKER, 4) in plain.stderr


def test_a_damaged_latest_falls_back_to_one_list(tier: Path, tmp_path: Path) -> None:
    cold = tmp_path / "cold"
    shutil.copytree(tier / "cold", cold)
    pointer = {"version": 1, "snapshot_seq": 3, "snapshot_bytes": 10, "sha256": "0" * 64}
    (cold / latest_key(BROKER)).write_bytes(orjson.dumps(pointer))
    res = run("log", "--cold", cold.as_uri(), "--broker", BROKER, "--json")
    assert res.exit_code == 4, res.output
    doc = json.loads(res.stdout)
    assert [c["seq"] for c in doc["commits"]] == [5, 4, 3, 2, 1]
    assert doc["requests"]["by_kind"]["list"]["requests"] == 1
    assert latest_key(BROKER) in doc["damaged"][0]


def test_a_missing_tier_or_broker_is_not_found(tier: Path, tmp_path: Path) -> None:
    res = run("log", "--cold", (tmp_path / "nope").as_uri(), "--broker", BROKER)
    assert res.exit_code == 3, res.output
    res = run("log", "--cold", (tier / "cold").as_uri(), "--broker", "broker-typo")
    assert res.exit_code == 3, res.output
    assert "broker-typo" in res.stderr and "no commits" in res.stderr
    res = run("log", "--cold", (tier / "cold").as_uri())
    assert res.exit_code == 2 and "--broker" in res.stderr
    res = run("log", "--cold", (tier / "cold").as_uri(), "--broker", BROKER, "--since", "x")
    assert res.exit_code == 2 and "--since" in res.stderr


# -- records written before `mqtier log` (no operation, seconds, requests) -------------------


def test_records_from_before_log_still_load_and_show_dashes(tmp_path: Path) -> None:
    """tests/cli/golden/log/legacy-tier was made by the catalog code before this change
    (dispatch x3, compact, a hand-made expiry): the loader still reads it, and log shows what
    those records do not say as - (null in JSON), deriving the operation from the change."""
    cold = tmp_path / "cold"
    shutil.copytree(LEGACY, cold)
    state = load_catalog(open_cold_store(cold.as_uri()), "broker-t")
    assert state.seq == 5 and state.first_offset(("orders", 1)) == 0
    assert state.first_offset(("orders", 0)) is None and state.next_offset(("orders", 0)) == 30
    res = ok("log", "--cold", cold.as_uri(), "--broker", "broker-t", "--json")
    commits = json.loads(res.stdout)["commits"]
    assert [c["operation"] for c in commits] == [
        "expire", "compact", "dispatch", "dispatch", "dispatch",
    ]  # fmt: skip
    assert all(c["requests"] is None and c["seconds"] is None for c in commits)
    assert ranges(commits[0], "removed") == {0: (0, None)}  # the old shape names only `first`
    assert commits[0]["removed"]["messages"] is None
    assert ranges(commits[1], "added") == {0: (0, 30), 1: (0, 30)}
    plain = ok("log", "--cold", cold.as_uri(), "--broker", "broker-t")
    expire_line = plain.stdout.splitlines()[1].split("\t")
    assert expire_line[2] == "expire" and expire_line[-1] == "-" and "[0, ?)" in expire_line
    # A new commit on top of the old records carries the new fields; the mix still loads.
    store = open_cold_store(cold.as_uri())
    commit(store, state, added=[], removed=[state.queues[("orders", 1)][0]], run_id="x" * 32)
    assert load_catalog(store, "broker-t").seq == 6
    newest = json.loads(ok("log", "--cold", cold.as_uri(), "--broker", "broker-t", "--json",
                           "-n", "1").stdout)["commits"][0]  # fmt: skip
    assert newest["operation"] == "expire" and newest["removed"]["messages"] == 30


def test_a_removed_entry_must_match_its_segment(tmp_path: Path) -> None:
    """The counts a new record repeats of what it removes are checked by every load: a record
    edited to claim another count (resealed, so its checksum holds) is damage."""
    from mqtier.tier import catalog

    url = (tmp_path / "cold").as_uri()
    cold = open_cold_store(url, root="creatable")
    state = CatalogState(BROKER)
    commit(cold, state, added=[_segment(1)], run_id="a" * 32)
    commit(cold, state, added=[], removed=[_segment(1)], run_id="b" * 32)
    key = tmp_path / "cold" / commit_key(BROKER, 2)
    record = orjson.loads(key.read_bytes())
    assert record["removed"][0]["count"] == 5
    record["removed"][0]["count"] = 4
    record.pop("sha256")
    key.write_bytes(catalog._sealed(record))
    with pytest.raises(catalog.CorruptionError, match="count 4, but that segment has 5"):
        load_catalog(cold, BROKER)


# -- the same over S3 (moto) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with start_moto_server() as endpoint:
        yield endpoint


def test_log_over_s3(moto: str, tmp_path: Path) -> None:
    boto3.client(
        "s3", aws_access_key_id="k", aws_secret_access_key="s", endpoint_url=moto,
        region_name="us-east-1",
    ).create_bucket(Bucket="tier-log")  # fmt: skip
    options = [
        "-o", f"client_kwargs.endpoint_url={moto}", "-o", "client_kwargs.region_name=us-east-1",
        "-o", "key=k", "-o", "secret=s", "-o", "skip_instance_cache=true",
    ]  # fmt: skip
    url = "s3://tier-log/prefix"
    make_history(tmp_path, url, options)
    res = ok("log", "--cold", url, *options, "--broker", BROKER, "--json")
    doc = json.loads(res.stdout)
    assert_the_five_commits(doc)
    assert doc["cold"]["url"] == url
    res = ok("log", "--cold", url, *options, "--broker", BROKER, "--json", "--limit", "1")
    assert json.loads(res.stdout)["requests"]["by_kind"]["get"]["requests"] <= 1 + 5 + 1


# -- golden files: the JSON document and the plain lines of the old tier ---------------------


def test_golden_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``log --json`` and plain ``log`` of the old tier against tests/cli/golden/log/
    (``MQTIER_UPDATE_GOLDEN=1`` rewrites them), under TZ=UTC, with the tier's path and the
    measured request seconds normalised."""
    cold = tmp_path / "cold"
    shutil.copytree(LEGACY, cold)
    args = ["log", "--cold", cold.as_uri(), "--broker", "broker-t", "-n", "3"]
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        doc = json.loads(ok(*args, "--json").stdout)
        plain = ok(*args).stdout
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    for kind in doc["requests"]["by_kind"].values():
        kind["seconds"] = 0.0
    shapes = {
        "legacy.json": json.dumps(doc, indent=2).replace(cold.as_uri(), "file:///COLD") + "\n",
        "legacy.txt": plain.replace(cold.as_uri(), "file:///COLD"),
    }
    for name, text in shapes.items():
        path = GOLDEN / name
        if os.environ.get("MQTIER_UPDATE_GOLDEN") == "1":
            path.write_text(text, encoding="utf-8")
        assert path.read_text(encoding="utf-8") == text, f"log differs from {path}"


def test_every_key_is_documented(tier: Path) -> None:
    from tests.cli.test_docs import assert_documented, json_keys

    assert_documented(json_keys(log_json((tier / "cold").as_uri())), "log --json")
