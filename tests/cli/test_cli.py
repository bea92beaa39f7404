"""The CLI contract: exit codes, JSON output, nothing written on bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtier.cli import app
from mqtier.format.layout import RECORD_HEADER_V4V4

runner = CliRunner()

SMALL = ["--commitlog-file-size", "256K", "--broker", "broker-cli"]


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def write_jsonl(path: Path, n: int, topic: str | None = None) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            doc = {"body": f"order {i}", "keys": [f"ORDER-{i}"], "tags": f"T{i % 3}"}
            if topic:
                doc["topic"] = topic
            fh.write(json.dumps(doc) + "\n")
    return path


def tree_digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = tmp_path / "s"
    src = write_jsonl(tmp_path / "o.jsonl", 300)
    res = run(
        "ingest", "--store", str(store), "--topic", "orders", "--queues", "4", *SMALL, str(src)
    )
    assert res.exit_code == 0, res.output
    return store


def test_ingest_json_summary(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "o.jsonl", 50)
    res = run(
        "ingest",
        "--store",
        str(tmp_path / "s"),
        "-t",
        "orders",
        "--queues",
        "2",
        *SMALL,
        "--json",
        str(src),
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["messages"] == 50
    assert doc["bad_lines"] == 0
    assert sum(q["messages"] for q in doc["queues"]) == 50
    assert {(q["topic"], q["queue"]) for q in doc["queues"]} <= {("orders", 0), ("orders", 1)}


def test_read_json_lines_contract(filled: Path) -> None:
    res = run(
        "read",
        "--store",
        str(filled),
        "--topic",
        "orders",
        "--queue",
        "1",
        "--from",
        "2",
        "--count",
        "5",
        "--json",
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [m["queue_offset"] for m in lines] == [2, 3, 4, 5, 6]
    required = {
        "topic",
        "queue",
        "queue_offset",
        "commitlog_offset",
        "msg_id",
        "uniq_key",
        "keys",
        "tags",
        "properties",
        "born_time",
        "store_time",
        "born_host",
        "store_host",
        "sysflag",
    }
    for m in lines:
        assert required <= set(m)
        assert m["topic"] == "orders" and m["queue"] == 1
        assert m["body"].startswith("order ")
        assert "body_b64" not in m


def test_read_b64_and_binary_bodies(tmp_path: Path) -> None:
    src = tmp_path / "b.jsonl"
    src.write_text(json.dumps({"body_b64": "AP/+", "keys": "BIN"}) + "\n")
    store = tmp_path / "s"
    assert (
        run(
            "ingest", "--store", str(store), "-t", "bin", "--queue", "0", *SMALL, str(src)
        ).exit_code
        == 0
    )
    res = run("read", "--store", str(store), "-t", "bin", "-q", "0", "--json")
    (m,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert m["body_b64"] == "AP/+" and "body" not in m
    res = run("read", "--store", str(store), "-t", "bin", "-q", "0", "--json", "--b64")
    assert json.loads(res.stdout)["body_b64"] == "AP/+"


def test_query_key_id_uniq(filled: Path) -> None:
    res = run("query", "key", "ORDER-42", "--store", str(filled), "--topic", "orders", "--json")
    assert res.exit_code == 0, res.output
    (m,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert m["keys"] == ["ORDER-42"] and m["body"] == "order 42"
    res = run("query", "id", m["msg_id"], "--store", str(filled), "--json")
    assert json.loads(res.stdout)["uniq_key"] == m["uniq_key"]
    res = run("query", "uniq", m["uniq_key"], "--store", str(filled), "--json")
    assert json.loads(res.stdout)["msg_id"] == m["msg_id"]


def test_query_missing_key_exits_3(filled: Path) -> None:
    res = run("query", "key", "NOPE", "--store", str(filled), "--topic", "orders")
    assert res.exit_code == 3


def test_query_id_naming_no_record_exits_3_and_a_corrupt_one_4(filled: Path) -> None:
    res = run("query", "key", "ORDER-42", "--store", str(filled), "--topic", "orders", "--json")
    m = json.loads(res.stdout)
    ip_port, phy = m["msg_id"][:-16], m["commitlog_offset"]
    for off in (phy + 3, phy + 40):  # inside a record: no record starts there
        res = run("query", "id", f"{ip_port}{off:016X}", "--store", str(filled))
        assert res.exit_code == 3, res.output
        assert "no message starts at offset" in res.stderr
    res = run("query", "id", f"{ip_port}{10**9:016X}", "--store", str(filled))
    assert res.exit_code == 3, res.output  # past the end of the store
    # A record whose magic is right but whose body CRC fails is corrupt data, not "not found".
    f = filled / "commitlog" / "00000000000000000000"
    data = bytearray(f.read_bytes())
    data[phy + RECORD_HEADER_V4V4.size + 1] ^= 0xFF  # inside the body
    f.write_bytes(bytes(data))
    res = run("query", "id", m["msg_id"], "--store", str(filled))
    assert res.exit_code == 4, res.output


def test_offsets_json(filled: Path) -> None:
    res = run("offsets", "--store", str(filled), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["broker"] == "broker-cli"
    assert sum(q["messages"] for q in doc["queues"]) == 300
    assert all(q["min_offset"] == 0 for q in doc["queues"])
    assert doc["commitlog"]["max_offset"] > 0


def test_recover_json_clean(filled: Path) -> None:
    res = run("recover", "--store", str(filled), "--json")
    doc = json.loads(res.stdout)
    assert doc["clean_shutdown"] is True and doc["changed"] is False


def test_inspect_commitlog_json(filled: Path) -> None:
    path = filled / "commitlog" / "00000000000000000000"
    res = run("inspect", str(path), "--json", "--limit", "5")
    doc = json.loads(res.stdout)
    assert doc["kind"] == "commitlog"
    assert doc["summary"]["records"] == 300
    assert len(doc["entries"]) == 5 and doc["entries_truncated"] is True


@pytest.mark.parametrize(
    ("line", "code", "needle"),
    [
        ("{not json", 8, "2"),
        (json.dumps({"body": "x" * 300_000}), 9, "maximum message size"),
        (json.dumps({"body": "x", "topic": "../etc"}), 10, "escape"),
        (json.dumps({"body": "x", "topic": "t" * 128}), 10, "limit is 127"),
        (json.dumps({"body": "x", "properties": {"p": "v" * 40000}}), 11, "32767"),
        (json.dumps({"body": "x", "keys": ["a\u0001b"]}), 13, "separator"),
    ],
)
def test_bad_input_exit_codes_and_nothing_written(
    filled: Path, tmp_path: Path, line: str, code: int, needle: str
) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"body": "good", "keys": "GOOD"}) + "\n" + line + "\n")
    before = tree_digest(filled / "commitlog"), tree_digest(filled / "consumequeue")
    res = run("ingest", "--store", str(filled), "-t", "orders", str(src))
    assert res.exit_code == code, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert str(src) in err[0]
    assert (tree_digest(filled / "commitlog"), tree_digest(filled / "consumequeue")) == before
    assert not (filled / "mqtier.ingest").exists()  # the rolled-back ingest lifted its fence
    res = run("offsets", "--store", str(filled), "--json")
    assert sum(q["messages"] for q in json.loads(res.stdout)["queues"]) == 300


@pytest.mark.parametrize(
    ("option", "value"), [("--queues", "0"), ("--queues", "-2"), ("--queue", "-1")]
)
def test_ingest_refuses_impossible_queue_numbers(tmp_path: Path, option: str, value: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", 3)
    res = run("ingest", "--store", str(tmp_path / "new"), "-t", "orders", option, value, str(src))
    assert res.exit_code == 2, res.output
    assert option in res.output
    assert not (tmp_path / "new").exists()


def test_skip_bad_counts(filled: Path, tmp_path: Path) -> None:
    src = tmp_path / "mixed.jsonl"
    src.write_text('{"body": "a"}\n{oops\n{"body": "b"}\n')
    res = run("ingest", "--store", str(filled), "-t", "orders", "--skip-bad", "--json", str(src))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["messages"] == 2 and doc["bad_lines"] == 1
    assert ":2:" in doc["bad_samples"][0]


def test_not_a_store_exit_7(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = run("offsets", "--store", str(tmp_path / "empty"))
    assert res.exit_code == 7
    assert "not a store" in res.stderr


def test_raw_and_stdin(tmp_path: Path) -> None:
    store = tmp_path / "s"
    res = run(
        "ingest",
        "--store",
        str(store),
        "-t",
        "logs",
        "--format",
        "raw",
        *SMALL,
        "-",
        input="line one\nline two\n",
    )
    assert res.exit_code == 0, res.output
    res = run("read", "--store", str(store), "-t", "logs", "-q", "0", "--json")
    res2 = run("read", "--store", str(store), "-t", "logs", "-q", "1", "--json")
    bodies = sorted(json.loads(x)["body"] for x in (res.stdout + res2.stdout).splitlines())
    assert bodies == ["line one", "line two"]


def test_file_per_message(tmp_path: Path) -> None:
    d = tmp_path / "msgs"
    d.mkdir()
    (d / "a.bin").write_bytes(b"\xff\x01payload")
    (d / "b.txt").write_bytes(b"hello")
    store = tmp_path / "s"
    res = run(
        "ingest",
        "--store",
        str(store),
        "-t",
        "files",
        "--queue",
        "0",
        "--format",
        "file",
        *SMALL,
        str(d),
    )
    assert res.exit_code == 0, res.output
    res = run("read", "--store", str(store), "-t", "files", "-q", "0", "--json")
    msgs = [json.loads(x) for x in res.stdout.splitlines()]
    assert msgs[0]["body_b64"] == "/wFwYXlsb2Fk" and msgs[1]["body"] == "hello"


def test_locked_store_ingest_exit_6_and_reads_work(filled: Path, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from mqtier import Store; st = Store.open(sys.argv[1], writable=True);"
            "print('ready', flush=True); time.sleep(60)",
            str(filled),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        src = write_jsonl(tmp_path / "more.jsonl", 3)
        before = tree_digest(filled)
        res = run("ingest", "--store", str(filled), "-t", "orders", str(src))
        assert res.exit_code == 6, res.output
        assert "locked" in res.stderr
        res = run("read", "--store", str(filled), "-t", "orders", "-q", "0", "--json")
        assert res.exit_code == 0, res.output
        assert len(res.stdout.splitlines()) > 0
        (tmp_path / "cold").mkdir()  # a missing cold root would be exit 3 before the lock
        cold = (tmp_path / "cold").as_uri()
        res = run("clean", "--store", str(filled), "--cold", cold, "--keep", "0s")
        assert res.exit_code == 6, res.output
        assert "locked" in res.stderr
        assert tree_digest(filled) == before
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_help_has_example_on_every_command() -> None:
    import typer.main

    group = typer.main.get_command(app)

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    seen = 0
    for path, _cmd in walk(group, []):
        res = run(*path, "--help")
        assert res.exit_code == 0
        assert "Example:" in res.stdout, path
        seen += 1
    assert seen >= 8


def test_store_without_write_permission_opens_read_only(store_b: Path) -> None:
    """Even as root: a store dir with no write bits is never written (crashed store-b here)."""
    for p in [store_b, *store_b.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = tree_digest(store_b)
    res = run("offsets", "--store", str(store_b), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["read_only"] is True
    # its consume queue holds 56; the other 123 durable records are dispatched in memory
    assert doc["queues"][0]["messages"] == 179
    res = run("recover", "--store", str(store_b), "--dry-run", "--json")
    assert json.loads(res.stdout)["messages_redispatched"] == 179
    assert tree_digest(store_b) == before


def test_failed_first_ingest_leaves_no_store(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"body": "ok"}\n{broken\n')
    res = run("ingest", "--store", str(tmp_path / "new"), "-t", "orders", *SMALL, str(src))
    assert res.exit_code == 8
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    res = run("ingest", "--store", str(tmp_path / "empty"), "-t", "orders", *SMALL, str(src))
    assert res.exit_code == 8
    assert list((tmp_path / "empty").iterdir()) == []


def test_failed_first_ingest_cleans_up_a_relative_store_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "bad.jsonl"
    src.write_text('{"body": "ok"}\n{broken\n')
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("mine")
    for store in ("new", "existing", "deeper/new"):
        # --create: a directory holding other files is refused without it (test_ingest_hostile)
        res = run("ingest", "--store", store, "--create", "-t", "orders", *SMALL, str(src))
        assert res.exit_code == 8, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "existing"]
    assert [p.name for p in (tmp_path / "existing").iterdir()] == ["notes.txt"]


def test_failed_first_ingest_keeps_what_the_directory_held(
    fixture_store_c_src: Path, tmp_path: Path
) -> None:
    """A broker's directory before its first message (config/ and checkpoint, no commit log)
    counts as no store; a failed ingest removes only what it added, not the broker's files."""
    broker = tmp_path / "broker"
    (broker / "config").mkdir(parents=True)
    for f in (fixture_store_c_src / "config").iterdir():
        shutil.copy(f, broker / "config" / f.name)
    shutil.copy(fixture_store_c_src / "checkpoint", broker / "checkpoint")
    for p in [broker, *broker.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    before = tree_digest(broker), sorted(broker.rglob("*"))
    src = tmp_path / "bad.jsonl"
    src.write_text('{"body": "ok"}\n{broken\n')
    res = run("ingest", "--store", str(broker), "-t", "orders", "--queues", "4", *SMALL, str(src))
    assert res.exit_code == 8, res.output
    assert (tree_digest(broker), sorted(broker.rglob("*"))) == before


def test_failed_ingest_leaves_the_topic_table_as_it_was(filled: Path, tmp_path: Path) -> None:
    topics = filled / "config" / "topics.json"
    before = topics.read_bytes()
    src = tmp_path / "bad.jsonl"
    src.write_text('{"body": "ok"}\n{broken\n')
    res = run("ingest", "--store", str(filled), "-t", "neworders", "--queues", "16", str(src))
    assert res.exit_code == 8, res.output
    assert topics.read_bytes() == before
    src.write_text('{"body": "ok"}\n')
    res = run("ingest", "--store", str(filled), "-t", "neworders", "--queues", "16", str(src))
    assert res.exit_code == 0, res.output
    assert b"neworders" in topics.read_bytes()
