"""Which broker prefix a command uses, and a prefix that is not the store's (#11 item 2).

With ``broker = "broker-a"`` in a config file, ``dispatch --store S`` (S's own broker name is
another) tiered under ``broker-a/``, and ``offsets`` then showed ``pending -48`` without a word.
The store's own name wins unless ``--broker`` is on the command line, and a cold prefix whose
history is not the store's is exit 15 for every command given both, before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mqtier.cli import _cold
from tests.cli.test_cli import run
from tests.cli.test_cold_cli import tree_digest

MISMATCH = 15


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    monkeypatch.delenv("MQTIER_COLD", raising=False)
    monkeypatch.delenv("MQTIER_STORE", raising=False)
    monkeypatch.chdir(tmp_path)  # ./mqtier.toml only where a test writes one
    monkeypatch.setattr(_cold, "config_path", None)


def make_store(tmp_path: Path, name: str, broker: str, topic: str, n: int, body: int = 20) -> Path:
    """A one-queue store of ``n`` messages whose own broker name is ``broker``."""
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"body": f"{i:0{body}d}"}) + "\n" for i in range(n)))
    store = tmp_path / name
    res = run(
        "ingest", "--store", str(store), "--topic", topic, "--queues", "1",
        "--commitlog-file-size", "256K", "--broker", broker, str(src),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return store


def cold_url(tmp_path: Path) -> str:
    return (tmp_path / "cold").as_uri()


def test_the_stores_own_name_wins_over_the_config_files(tmp_path: Path) -> None:
    """The issue's case: config broker="broker-a", a store named broker-s. Every command with
    --store uses broker-s/; only --broker on the command line picks another prefix."""
    (tmp_path / "mqtier.toml").write_text(
        f'[cold]\nurl = "{cold_url(tmp_path)}"\nbroker = "broker-a"\n'
    )
    store = make_store(tmp_path, "s", "broker-s", "orders", 48)
    res = run("dispatch", "--store", str(store), "--force", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["broker"] == "broker-s"
    assert (tmp_path / "cold" / "broker-s" / "catalog").is_dir()
    assert not (tmp_path / "cold" / "broker-a").exists()
    assert "broker-a" in res.stderr  # says the config file's name was not used, and why

    res = run("offsets", "--store", str(store), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["cold"]["broker"] == "broker-s"
    assert [(q["cold_max_offset"], q["pending"]) for q in doc["queues"]] == [(48, 0)]

    # --policy force: the cold tier alone serves it, from the store's prefix
    res = run(
        "read", "--store", str(store), "-t", "orders", "-q", "0", "-n", "100", "--policy",
        "force", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 48

    res = run("clean", "--store", str(store), "--dry-run", "--json")
    assert res.exit_code == 0, res.output

    # Without a store the config file's name is the default, and --broker always wins.
    res = run("offsets", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["cold"]["broker"] == "broker-a"
    res = run("dispatch", "--store", str(store), "--broker", "renamed", "--force", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["broker"] == "renamed"
    assert (tmp_path / "cold" / "renamed" / "catalog").is_dir()


def commands(store: Path, cold: str) -> list[list[str]]:
    """Every command that takes both a store and a cold tier."""
    s = ["--store", str(store), "--cold", cold]
    return [
        ["dispatch", *s, "--force"],
        ["dispatch", *s, "--force", "--dry-run"],
        ["offsets", *s],
        ["offsets", *s, "--json"],
        ["read", *s, "-t", "orders", "-q", "0", "--from", "0"],
        ["read", *s, "-t", "orders", "-q", "0", "--from", "300", "--policy", "not_in_mem"],
        ["clean", *s, "--keep", "0s"],
        ["clean", *s, "--keep", "0s", "--dry-run"],
    ]


def refuse_all(store: Path, tmp_path: Path) -> None:
    """Each command exits 15, naming the broker, and writes nothing to either tier."""
    cold = cold_url(tmp_path)
    for argv in commands(store, cold):
        before = (tree_digest(store), tree_digest(tmp_path / "cold"))
        res = run(*argv)
        assert res.exit_code == MISMATCH, (argv, res.output)
        assert "broker-a" in res.stderr, (argv, res.stderr)
        # where to see who wrote it: a command that runs as it is, the tier's URL filled in
        assert f"mqtier log --cold {cold} --broker broker-a" in res.stderr, argv
        assert res.stdout == "", (argv, res.stdout)
        assert (tree_digest(store), tree_digest(tmp_path / "cold")) == before, argv


def test_a_prefix_ahead_of_the_store_is_exit_15_for_every_command(tmp_path: Path) -> None:
    """The issue's ``pending -48``: broker-a/ holds 348 messages of orders/0 from another
    store (tiered there with an explicit --broker, on its own a legitimate rename); the store
    named broker-a has 300. offsets showed -48 pending, read --from 300 served the other
    store's messages as this one's, clean rewrote the checkpoint before refusing."""
    other = make_store(tmp_path, "other", "broker-s", "orders", 348)
    res = run(
        "dispatch", "--store", str(other), "--cold", cold_url(tmp_path), "--broker", "broker-a",
        "--force",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    refuse_all(make_store(tmp_path, "a", "broker-a", "orders", 300), tmp_path)


def test_a_prefix_of_other_queues_only_is_exit_15_for_every_command(tmp_path: Path) -> None:
    """broker-a/ holds only another store's topic, reaching past this store's commit log:
    no queue of this store overlaps it, so the per-queue check alone let dispatch mix the two
    stores under one prefix (and clean, offsets, read take it for this store's)."""
    other = make_store(tmp_path, "other", "broker-s", "payments", 348, body=400)
    res = run(
        "dispatch", "--store", str(other), "--cold", cold_url(tmp_path), "--broker", "broker-a",
        "--force",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    refuse_all(make_store(tmp_path, "a", "broker-a", "orders", 300), tmp_path)
