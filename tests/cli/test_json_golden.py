"""The ``--json`` documents of every command, against golden files (docs/cli-json.md, version 2).

One scenario runs every command that writes a document on one store and one cold tier, under a
fixed clock (so store times, index names and commit records are the same on every run) and with
fixed UNIQ_KEYs (so every record, and what the cold tier stores, is the same byte for byte).
What a run cannot fix (the temporary directory, measured seconds and rates, bytes of requests)
is normalised before the comparison with ``tests/cli/golden/<name>.json``.

Besides the golden files, every document is checked against the rules of the contract: it starts
with ``"version"``, per-queue data is an array of ``{"topic", "queue", ...}`` objects sorted by
(topic, queue) and never a map keyed by ``"topic/queue"`` or by queue ids, and durations are
seconds (``seconds``, ``*_seconds``) rounded to the millisecond.

To regenerate the golden files after a deliberate change of the contract (which bumps
``JSON_VERSION`` and goes in CHANGELOG.md when it is breaking):

    MQTIER_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/cli/test_json_golden.py
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mqtier.cli import _cold, app
from mqtier.cli._json import JSON_VERSION

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("MQTIER_UPDATE_GOLDEN") == "1"
T0 = 1_795_323_484.125  # 2026-11-23 (a binary fraction: ms values come out exact)
BROKER = "broker-golden"

runner = CliRunner()


class Clock:
    """``time.time`` for the scenario: fixed, moved on only between commands."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _inputs(path: Path, start: int, n: int) -> Path:
    """``n`` messages: most to ``orders`` (the --topic), every fourth to ``audit`` queue 1."""
    with path.open("w") as fh:
        for i in range(start, start + n):
            doc: dict[str, Any] = {
                "body": f"order {i} " + "x" * 80,
                "keys": [f"ORDER-{i}"],
                "tags": "paid",
                "properties": {"UNIQ_KEY": f"{i:032X}"},  # else random and per process
            }
            if i % 4 == 3:
                doc.update(topic="audit", queue=1)
            fh.write(json.dumps(doc) + "\n")
    return path


def _run(*args: str, code: int = 0) -> Any:
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return res


def _doc(*args: str) -> Any:
    return json.loads(_run(*args).stdout)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """(name -> the document that command wrote, the temporary directory), commands in the
    order an operator would run them."""
    tmp = tmp_path_factory.mktemp("golden")
    clock = Clock()
    docs: dict[str, Any] = {}
    try:
        with pytest.MonkeyPatch.context() as mp:
            _play(mp, clock, tmp, docs)
    finally:
        time.tzset()  # the TZ of the run again
    return docs, str(tmp)


def _play(mp: pytest.MonkeyPatch, clock: Clock, tmp: Path, docs: dict[str, Any]) -> None:
    """Every command of the scenario, its document into ``docs``."""
    store, cold = str(tmp / "store"), f"file://{tmp / 'cold'}"
    mp.setattr(time, "time", clock)
    mp.setenv("TZ", "UTC")  # inspect's *_time and IndexFile names are local times
    time.tzset()
    mp.delenv("MQTIER_CONFIG", raising=False)
    mp.delenv("MQTIER_COLD", raising=False)
    mp.delenv("MQTIER_STORE", raising=False)
    mp.chdir(tmp)  # no ./mqtier.toml
    mp.setattr(_cold, "config_path", None)
    small = ["--commitlog-file-size", "16K", "--broker", BROKER]
    first = str(_inputs(tmp / "first.jsonl", 0, 160))
    docs["ingest"] = _doc(
        "ingest", "--store", store, "-t", "orders", "--queues", "3", *small, "--json", first
    )
    docs["offsets"] = _doc("offsets", "--store", store, "--json")
    docs["recover"] = _doc("recover", "--store", store, "--rebuild", "--json")
    docs["inspect"] = _doc(
        "inspect", str(tmp / "store/commitlog/00000000000000000000"), "-n", "2", "--json"
    )
    docs["dispatch"] = _doc("dispatch", "--store", store, "--cold", cold, "--force", "--json")
    clock.now += 1  # a second run of both, so every queue has two small cold segments
    second = str(_inputs(tmp / "second.jsonl", 160, 40))
    _run("ingest", "--store", store, "-t", "orders", "--json", second)
    _run("dispatch", "--store", store, "--cold", cold, "--force", "--json")
    docs["offsets-cold"] = _doc("offsets", "--store", store, "--cold", cold, "--json")
    clock.now += 2 * 3600
    docs["clean"] = _doc("clean", "--store", store, "--cold", cold, "--keep", "1h", "--json")
    docs["compact"] = _doc("compact", "--cold", cold, "--broker", BROKER, "--json")
    clock.now += 3 * 86400
    docs["expire"] = _doc("expire", "--cold", cold, "--broker", BROKER, "--ttl", "1d", "--json")
    err = _run("query", "key", "NOPE", "--store", store, "-t", "orders", "--json", code=3)
    docs["error"] = json.loads(err.stderr.strip().splitlines()[-1])
    read = _run("read", "--store", store, "--cold", cold, "-t", "orders", "-q", "0", "--json")
    docs["read-requests"] = json.loads(read.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def documents(scenario: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """The documents as written (the rules are checked on these, durations unrounded)."""
    return scenario[0]


@pytest.fixture(scope="module")
def normalised(scenario: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """The documents with what a run cannot fix replaced (compared with the golden files)."""
    docs, tmp = scenario
    return {name: _normalised(doc, tmp) for name, doc in docs.items()}


# --- normalising what a run cannot fix ---------------------------------------------------------

MEASURED = {"seconds": "<seconds>", "messages_per_second": "<rate>"}


def _normalised(doc: Any, tmp: str) -> Any:
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            if key in MEASURED and isinstance(value, int | float):
                value = MEASURED[key]
            elif key in ("bytes_sent", "bytes_received") and isinstance(value, int):
                value = "<bytes>"  # commit records name the host and process that made them
            out[key] = _normalised(value, tmp)
        return out
    if isinstance(doc, list):
        return [_normalised(item, tmp) for item in doc]
    if isinstance(doc, str):
        return doc.replace(tmp, "<tmp>")
    return doc


# --- the contract's rules, on every document ---------------------------------------------------

NAMES = (
    "ingest",
    "offsets",
    "recover",
    "inspect",
    "dispatch",
    "offsets-cold",
    "clean",
    "compact",
    "expire",
    "error",
    "read-requests",
)


def _walk(doc: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    yield path, doc
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from _walk(item, f"{path}[{i}]")


def _per_queue(node: Any) -> bool:
    """A non-empty array of objects naming a topic and a queue each."""
    return (
        isinstance(node, list)
        and bool(node)
        and all(isinstance(i, dict) and "topic" in i and "queue" in i for i in node)
    )


def _rule_breaks(doc: Any) -> list[str]:
    """What in ``doc`` breaks the shape rules of docs/cli-json.md (durations checked raw)."""
    found = []
    for path, node in _walk(doc):
        if isinstance(node, dict):
            for key, value in node.items():
                if re.fullmatch(r".+/\d+", key) or key.isdigit():
                    found.append(f"{path}: keyed by queue ({key!r}); use an array of objects")
                if key.endswith("_ms"):
                    found.append(f"{path}.{key}: a duration in ms; use seconds")
                if (key == "seconds" or key.endswith("_seconds")) and not (
                    isinstance(value, int | float) and round(value, 3) == value
                ):
                    found.append(f"{path}.{key}: {value!r} is not seconds to the millisecond")
            if "queues" in node and isinstance(node["queues"], dict):
                found.append(f"{path}.queues: a map; per-queue data is an array of objects")
        if _per_queue(node):
            keys = [(i["topic"], i["queue"]) for i in node]
            if not all(isinstance(q, int) for _, q in keys):
                found.append(f"{path}: queue ids must be ints")
            elif keys != sorted(keys):
                found.append(f"{path}: not sorted by (topic, queue): {keys}")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_document_starts_with_the_version(documents: dict[str, Any], name: str) -> None:
    doc = documents[name]
    assert next(iter(doc)) == "version", f"{name}: first key is {next(iter(doc))!r}"
    assert doc["version"] == JSON_VERSION == 2


@pytest.mark.parametrize("name", NAMES)
def test_document_follows_the_shape_rules(documents: dict[str, Any], name: str) -> None:
    breaks = _rule_breaks(documents[name])
    assert not breaks, f"{name}: " + "; ".join(breaks)


def test_shape_rules_catch_version_1_shapes() -> None:
    """The checks above would have failed on the unversioned output (docs/cli-json.md v1)."""
    v1_ingest = {"messages": 2, "queues": {"orders": {"0": 1, "1": 1}}}
    v1_expire = {"queues": {"orders/3": {"messages": 5, "new_first": 5}}}
    v1_clean = {"keep_ms": 3_600_000, "seconds": 0.0213345}
    assert len(_rule_breaks(v1_ingest)) == 3  # a map, keyed by queue ids ("0", "1")
    assert len(_rule_breaks(v1_expire)) == 2
    assert len(_rule_breaks(v1_clean)) == 2
    unsorted = {"queues": [{"topic": "b", "queue": 0}, {"topic": "a", "queue": 1}]}
    assert _rule_breaks(unsorted)


def test_every_per_queue_collection_is_populated(documents: dict[str, Any]) -> None:
    """The scenario reaches the per-queue arrays it checks (an empty one proves nothing)."""
    for name in ("ingest", "offsets", "dispatch", "offsets-cold", "compact", "expire"):
        queues = documents[name]["queues"]
        assert len({q["topic"] for q in queues}) == 2, (name, queues)
    assert documents["clean"]["commitlog_files"], documents["clean"]
    assert documents["recover"]["rebuild"]["consume_queues"] == 4


# --- golden files -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_document_matches_golden_file(normalised: dict[str, Any], name: str) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(normalised[name], indent=2, ensure_ascii=False) + "\n"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: run with MQTIER_UPDATE_GOLDEN=1 to write it"
    golden = json.loads(path.read_text(encoding="utf-8"))
    assert normalised[name] == golden, (
        f"{name} --json differs from {path.name}; if the change is meant, regenerate with "
        "MQTIER_UPDATE_GOLDEN=1 (a breaking change bumps JSON_VERSION, see CHANGELOG.md)"
    )
