"""The cold-tier commands from the command line: exit codes, JSON, config file, no stray writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mqtier.cli import _cold
from tests.cli.test_cli import SMALL, run, write_jsonl


def tree_digest(root: Path) -> dict[str, object]:
    """Content hashes of small files; size and mtime of big ones (the 420 MB sparse index)."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            small = st.st_size < (8 << 20)
            out[str(p.relative_to(root))] = (
                hashlib.sha256(p.read_bytes()).hexdigest()
                if small
                else (st.st_size, st.st_mtime_ns)
            )
    return out


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = tmp_path / "s"
    src = write_jsonl(tmp_path / "o.jsonl", 3000)
    res = run(
        "ingest", "--store", str(store), "--topic", "orders", "--queues", "4", *SMALL, str(src)
    )
    assert res.exit_code == 0, res.output
    return store


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    monkeypatch.delenv("MQTIER_COLD", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./mqtier.toml unless a test writes one
    monkeypatch.setattr(_cold, "config_path", None)


def url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'cold'}"


def test_dispatch_json_then_up_to_date(filled: Path, tmp_path: Path) -> None:
    res = run("dispatch", "--store", str(filled), "--to", url(tmp_path), "--force", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["messages"] == 3000 and doc["commits"] == 1 and doc["committed_seq"] == 1
    assert doc["requests"]["by_kind"]["create"]["requests"] == 1
    assert doc["compression_ratio"] > 1
    again = run("dispatch", "--store", str(filled), "--to", url(tmp_path), "--json")
    assert again.exit_code == 0
    doc2 = json.loads(again.stdout)
    assert doc2["up_to_date"] and doc2["messages"] == 0
    assert "put" not in doc2["requests"]["by_kind"]


def test_dispatch_without_threshold_waits_and_says_so(filled: Path, tmp_path: Path) -> None:
    res = run("dispatch", "--store", str(filled), "--to", url(tmp_path))
    assert res.exit_code == 0
    assert "nothing ready" in res.output and "--force" in res.output


def test_dispatch_dry_run_writes_nothing(filled: Path, tmp_path: Path) -> None:
    before = tree_digest(filled)
    res = run("dispatch", "--store", str(filled), "--to", url(tmp_path), "--force", "--dry-run")
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "cold").exists() or not any((tmp_path / "cold").rglob("*.mqd"))
    assert tree_digest(filled) == before


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["dispatch", "--store", "{store}"], 2),  # no cold tier
        (["dispatch", "--store", "{store}", "--to", "file://relative"], 2),
        (["read", "--cold", "{cold}", "--topic", "orders"], 2),  # no store, no --broker
        (["expire", "--cold", "{cold}", "--ttl", "1d"], 2),  # no --broker
        (["expire", "--cold", "{cold}", "--broker", "b"], 2),  # no TTL
        # a --topic/--ttl pair could pair up wrongly: --topic-ttl TOPIC=TTL is the one spelling
        (["expire", "--cold", "{cold}", "--broker", "b", "--ttl", "1d", "--topic", "o"], 2),
        (["clean", "--store", "{store}"], 2),  # no cold tier
        (["compact", "--cold", "{cold}"], 2),  # no --broker
        (["compact", "--broker", "b"], 2),  # no cold tier
        (["compact", "--cold", "{cold}", "--broker", "b", "--small", "lots"], 2),
        (["dispatch", "--store", "{store}", "--to", "{cold}", "--broker", "../x"], 2),
        (["read", "--cold", "{cold}", "--broker", "nobody", "--topic", "orders"], 3),
    ],
)
def test_bad_invocations_exit_with_their_code(
    filled: Path, tmp_path: Path, args: list[str], code: int
) -> None:
    before = tree_digest(filled)
    argv = [a.format(store=filled, cold=url(tmp_path)) for a in args]
    res = run(*argv)
    assert res.exit_code == code, res.output
    assert tree_digest(filled) == before


@pytest.mark.parametrize(
    ("args", "option"),
    [
        # (Found in review: --concurrency 0 reached ThreadPoolExecutor, an internal error, 70.)
        (
            ["dispatch", "--store", "{store}", "--to", "{cold}", "--force", "--concurrency", "0"],
            "--concurrency",
        ),
        (
            ["dispatch", "--store", "{store}", "--to", "{cold}", "--concurrency", "-3"],
            "--concurrency",
        ),
        (
            ["dispatch", "--store", "{store}", "--to", "{cold}", "--batch-count", "0"],
            "--batch-count",
        ),
        (
            ["dispatch", "--store", "{store}", "--to", "{cold}", "--max-requests", "0"],
            "--max-requests",
        ),
        (["compact", "--cold", "{cold}", "--broker", "b", "--min-run", "1"], "--min-run"),
        (
            ["read", "--store", "{store}", "--to", "{cold}", "-t", "orders", "--count", "-1"],
            "--count",
        ),
        (["read", "--store", "{store}", "-t", "orders", "--from", "-5"], "--from"),
        (["read", "--store", "{store}", "-t", "orders", "--queue", "-1"], "--queue"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(
    filled: Path, tmp_path: Path, args: list[str], option: str
) -> None:
    before = tree_digest(filled)
    res = run(*[a.format(store=filled, cold=url(tmp_path)) for a in args])
    assert res.exit_code == 2, res.output
    assert option in res.output
    assert "internal error" not in res.output
    assert tree_digest(filled) == before
    assert not (tmp_path / "cold").exists()  # the cold tier was not even opened


def test_dispatch_whose_snapshot_fails_still_succeeds(
    filled: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit is durable before its snapshot: a failed snapshot is a warning, not exit 14."""
    snapshots = tmp_path / "cold" / "broker-cli" / "catalog" / "snapshots"
    snapshots.parent.mkdir(parents=True)
    snapshots.write_text("a file where the directory should be: every snapshot write fails")
    for n in range(1, 17):  # the 16th commit writes the first snapshot
        src = write_jsonl(tmp_path / f"more{n}.jsonl", 5, topic="orders")
        assert run("ingest", "--store", str(filled), str(src)).exit_code == 0
        res = run("dispatch", "--store", str(filled), "--to", url(tmp_path), "--force", "--json")
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["committed_seq"] == n
        assert len(doc["warnings"]) == (n == 16), doc["warnings"]
    assert "snapshot" in doc["warnings"][0]
    assert [r.levelname for r in caplog.records if "snapshot" in r.getMessage()] == ["WARNING"]
    snapshots.unlink()  # the fault is gone: the next commit writes the snapshot
    src = write_jsonl(tmp_path / "last.jsonl", 5, topic="orders")
    assert run("ingest", "--store", str(filled), str(src)).exit_code == 0
    res = run("dispatch", "--store", str(filled), "--to", url(tmp_path), "--force", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["warnings"] == [], res.output
    assert (snapshots / f"{17:020d}.json.zst").exists()
    off = run("offsets", "--store", str(filled), "--cold", url(tmp_path), "--json")
    assert all(q["pending"] == 0 for q in json.loads(off.stdout)["queues"])


def test_read_offsets_clean_expire_round(filled: Path, tmp_path: Path) -> None:
    assert run("dispatch", "--store", str(filled), "--to", url(tmp_path), "--force").exit_code == 0
    cold_read = run(
        "read", "--cold", url(tmp_path), "--broker", "broker-cli", "-t", "orders", "-q", "1",
        "--from", "0", "-n", "3", "--json",
    )  # fmt: skip
    assert cold_read.exit_code == 0, cold_read.output
    docs = [json.loads(line) for line in cold_read.stdout.splitlines()]
    bill = json.loads(cold_read.stderr.splitlines()[-1])["requests"]  # stdout: messages only
    assert bill["by_kind"]["get"]["requests"] >= 3  # catalog, block index, block
    hot_read = run("read", "--store", str(filled), "-t", "orders", "-q", "1", "-n", "3", "--json")
    assert docs == [json.loads(line) for line in hot_read.stdout.splitlines()]

    off = run("offsets", "--store", str(filled), "--cold", url(tmp_path), "--json")
    assert off.exit_code == 0, off.output
    queues = json.loads(off.stdout)["queues"]
    assert all(q["pending"] == 0 and q["cold_max_offset"] == q["max_offset"] for q in queues)
    # --at over both tiers, and over the cold tier alone: the same answers
    at = run(
        "offsets", "--store", str(filled), "--cold", url(tmp_path), "--at", "2000-01-01", "--json"
    )
    assert at.exit_code == 0, at.output
    assert all(q["offset_at_time"] == 0 for q in json.loads(at.stdout)["queues"])
    cold_at = run(
        "offsets", "--cold", url(tmp_path), "--broker", "broker-cli", "--at", "2999-01-01", "--json"
    )
    assert cold_at.exit_code == 0, cold_at.output
    assert all(
        q["offset_at_time"] == q["cold_max_offset"] for q in json.loads(cold_at.stdout)["queues"]
    )

    # nothing small enough in a row: compact has nothing to do; a second dispatch run makes runs
    cp = run("compact", "--cold", url(tmp_path), "--broker", "broker-cli")
    assert cp.exit_code == 0 and "nothing to compact" in cp.output, cp.output
    append = run(
        "ingest", "--store", str(filled), "--topic", "orders", "-", input='{"body":"x"}\n' * 40
    )
    assert append.exit_code == 0, append.output
    assert run("dispatch", "--store", str(filled), "--to", url(tmp_path), "--force").exit_code == 0
    dry = run("compact", "--cold", url(tmp_path), "--broker", "broker-cli", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] and plan["segments_merged"] > 0 and plan["segments_written"] == 0
    cp = run("compact", "--cold", url(tmp_path), "--broker", "broker-cli", "--json")
    assert cp.exit_code == 0, cp.output
    done = json.loads(cp.stdout)
    assert done["segments_merged"] == plan["segments_merged"] and done["segments_written"] > 0
    assert done["messages"] == plan["messages"] and "requests" in done

    cl = run("clean", "--store", str(filled), "--cold", url(tmp_path), "--keep", "0s", "--json")
    assert cl.exit_code == 0, cl.output
    assert json.loads(cl.stdout)["commitlog_files"]

    ex = run(
        "expire", "--cold", url(tmp_path), "--broker", "broker-cli", "--ttl", "1ms", "--yes",
        "--json",
    )  # fmt: skip
    assert ex.exit_code == 0, ex.output
    assert json.loads(ex.stdout)["messages"] == 3040


def test_config_file_supplies_the_cold_url(filled: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "mq.toml"
    cfg.write_text(f'[cold]\nurl = "{url(tmp_path)}"\nbroker = "broker-cli"\n')
    res = run("--config", str(cfg), "dispatch", "--store", str(filled), "--force", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["messages"] == 3000
    read = run("--config", str(cfg), "read", "-t", "orders", "-q", "0", "-n", "1", "--json")
    assert read.exit_code == 0, read.output
    assert json.loads(read.stdout)["queue_offset"] == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[cold\n")
    res = run("--config", str(bad), "dispatch", "--store", str(filled))
    assert res.exit_code == 2 and "bad.toml" in res.output


def test_a_read_below_the_queues_minimum_starts_there_and_says_so(tmp_path: Path) -> None:
    """After `clean`, offset 0 is gone: `read` (no --from) starts at the queue's minimum, as
    mqtier-read(1) says, instead of answering nothing with exit 0."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"body": "m{i} {"x" * 500}"}}\n' for i in range(3000)))
    store, cold = tmp_path / "s", (tmp_path / "cold").as_uri()
    for args in (
        ["ingest", "--store", str(store), "--topic", "t", "--queues", "1",
         "--commitlog-file-size", "256K", str(src)],
        ["dispatch", "--store", str(store), "--to", cold, "--force"],
        ["clean", "--store", str(store), "--cold", cold, "--keep", "0s"],
    ):  # fmt: skip
        res = run(*args)
        assert res.exit_code == 0, (args, res.output)
    first = json.loads(run("offsets", "--store", str(store), "--json").stdout)["queues"][0][
        "min_offset"
    ]
    assert first > 0  # clean deleted the head of the queue
    res = run("read", "--store", str(store), "--topic", "t", "-n", "2", "--json")
    assert res.exit_code == 0, res.output
    got = [json.loads(line)["queue_offset"] for line in res.stdout.splitlines()]
    assert got == [first, first + 1]
    assert f"starts at offset {first:,}" in res.stderr
