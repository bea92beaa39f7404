"""Defects found reviewing #11 as an operator would, each fixed with the test that shows it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mqtier.cli import _cold
from tests.cli.test_cli import run


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    monkeypatch.delenv("MQTIER_COLD", raising=False)
    monkeypatch.delenv("MQTIER_TIMEOUT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_cold, "config_path", None)


@pytest.fixture
def tiered(tmp_path: Path) -> tuple[Path, str]:
    """A store of two topics (orders: 2 queues, audit: 1) wholly tiered to a file:// tier."""
    src = tmp_path / "in.jsonl"
    lines = [{"topic": "orders", "queue": i % 2, "body": f"o{i}"} for i in range(6)]
    lines += [{"topic": "audit", "queue": 0, "body": f"a{i}"} for i in range(3)]
    src.write_text("".join(json.dumps(d) + "\n" for d in lines))
    store, cold = tmp_path / "s", (tmp_path / "cold").as_uri()
    res = run("ingest", "--store", str(store), "--commitlog-file-size", "256K", str(src))
    assert res.exit_code == 0, res.output
    res = run("dispatch", "--store", str(store), "--to", cold, "--force")
    assert res.exit_code == 0, res.output
    return store, cold


def test_offsets_topic_with_a_cold_tier_shows_that_topic_only(tiered: tuple[Path, str]) -> None:
    """`offsets --store S --cold C --topic T` listed every cold queue of every topic, and a
    topic neither tier holds was exit 0 with the whole table (without --store it was right)."""
    store, cold = tiered
    res = run("offsets", "--store", str(store), "--cold", cold, "--topic", "audit", "--json")
    assert res.exit_code == 0, res.output
    assert [(q["topic"], q["queue"]) for q in json.loads(res.stdout)["queues"]] == [("audit", 0)]
    res = run("offsets", "--store", str(store), "--cold", cold, "--topic", "nope")
    assert res.exit_code == 3, res.output
    assert "no topic 'nope'" in res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize(
    "template",
    ["{queue_offset:>99999999999}", "{body:.123456}", "{queue_offset:{topic}}", "{queue:{body.x}}"],
)
def test_format_spec_bounded_and_without_fields(tiered: tuple[Path, str], template: str) -> None:
    """A huge width was MemoryError, exit 70 (or gigabytes per line); a field inside a spec
    slipped past the field check, with attribute access. Both are exit 2 before any read."""
    store, _ = tiered
    res = run("read", "--store", str(store), "--topic", "orders", "--format", template)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: --format"), res.stderr
    assert res.stdout == ""


def test_format_spec_within_bounds_still_works(tiered: tuple[Path, str]) -> None:
    store, _ = tiered
    args = ("--store", str(store), "--topic", "orders", "--queue", "1", "--count", "1")
    res = run("read", *args, "--format", "{queue:0>3}|{body:>6.2}|{queue_offset:,}")
    assert res.exit_code == 0, res.output
    assert res.stdout == "001|    o1|0\n"


def test_read_with_a_store_stops_at_its_timeout(tiered: tuple[Path, str]) -> None:
    """With --store, a --timeout that ran out at the cold tier fell back to the hot store and
    exit 0; mqtier-read(1) says the whole command stops with exit 14, naming the limit."""
    store, cold = tiered
    res = run("read", "--store", str(store), "--cold", cold, "--topic", "orders",
              "--timeout", "1ms")  # fmt: skip
    assert res.exit_code == 14, res.output
    assert "--timeout 1ms" in res.stderr
    assert res.stdout == ""


def test_an_error_quoting_a_newline_stays_one_line(tmp_path: Path) -> None:
    """The S3 library quotes a bad --endpoint-url as given: a newline in it split the error."""
    pytest.importorskip("s3fs")
    res = run("log", "--cold", "s3://bucket/p", "--broker", "b",
              "--endpoint-url", "http://a\nb\x1b[31m")  # fmt: skip
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1, res.stderr
    assert "\x1b" not in res.stderr
    assert "http://a\\nb\\x1b[31m" in res.stderr


def test_a_failed_cold_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A put that hit a full disk left its part-written ``.….mqtier-tmp`` file in the tier for
    ever (nothing lists or deletes it). A real kernel error: a file size limit (EFBIG)."""
    code = f"""
import resource, signal
from mqtier.backend.file_store import FileColdStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
cold = FileColdStore({str(tmp_path / "cold")!r})
cold.check_root(may_create=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
for op in (cold.put, cold.create):
    try:
        op("b/data/1/x.mqd", b"x" * 100_000)
    except OSError as exc:
        print(exc.errno)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["27", "27"], res.stdout + res.stderr  # EFBIG, twice
    assert [p.name for p in (tmp_path / "cold").rglob("*") if p.is_file()] == []


def test_a_missing_committed_object_is_damage_not_absence(tiered: tuple[Path, str]) -> None:
    """A data object the catalog commits to, deleted behind mqtier's back: reads said "no such
    object", exit 3 (nothing there), though committed messages were lost: exit 4."""
    store, cold = tiered
    (obj,) = list(Path(cold.removeprefix("file://")).rglob("*.mqd"))
    obj.unlink()
    res = run("read", "--cold", cold, "--broker", _broker(store), "--topic", "orders", "-q", "0")
    assert res.exit_code == 4, res.output
    assert obj.name in res.stderr and "lost an object" in res.stderr
    assert res.stdout == ""


def _broker(store: Path) -> str:
    res = run("offsets", "--store", str(store), "--json")
    return str(json.loads(res.stdout)["broker"])


def test_a_failed_first_ingest_says_it_removed_the_store(tmp_path: Path) -> None:
    """A bad line (exit 8) in the ingest that created a store removed it without a word; the
    one error line now says so (Ctrl-C already did)."""
    src = tmp_path / "bad.jsonl"
    src.write_text('{"topic": "t", "body": "ok"}\nnot json\n')
    new = tmp_path / "new"
    res = run("ingest", "--store", str(new), str(src))
    assert res.exit_code == 8, res.output
    assert res.stderr.count("\n") == 1, res.stderr
    assert f"removed the store {new} this run created" in res.stderr
    assert not new.exists()
