"""What every command writes on stdout in a pipe (plain mode), against golden files.

The scenario of tests/cli/test_json_golden.py (fixed clock, fixed UNIQ_KEYs, TZ=UTC) run without
--json: stdout is not a terminal here, so each command writes plain lines: a header and
tab-separated rows, or the summary that is its answer. The temporary directory and measured
durations are normalised; the rest must match ``tests/cli/golden/plain/<name>.txt``.

Regenerate after a deliberate change (and say so in CHANGELOG.md):

    MQTIER_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/cli/test_plain_golden.py
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtier.cli import _cold, app
from tests.cli.test_json_golden import BROKER, Clock, _inputs

GOLDEN = Path(__file__).parent / "golden" / "plain"
UPDATE = os.environ.get("MQTIER_UPDATE_GOLDEN") == "1"

runner = CliRunner()


def _out(*args: str, code: int = 0) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return res.stdout


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("plain")
    clock = Clock()
    outs: dict[str, str] = {}
    try:
        with pytest.MonkeyPatch.context() as mp:
            _play(mp, clock, tmp, outs)
    finally:
        time.tzset()
    return {name: _normalise(text, str(tmp)) for name, text in outs.items()}


def _normalise(text: str, tmp: str) -> str:
    text = text.replace(tmp, "<tmp>")
    text = re.sub(r"\b[0-9a-f]{32}-", "<run id>-", text)  # object names carry a random run id
    text = re.sub(r"in \d+\.\d\ds(, [\d,]+ msgs/s)?", "in <seconds>", text)
    return re.sub(r"(commits?), \d+\.\d\ds;", r"\1, <seconds>;", text)


def _play(mp: pytest.MonkeyPatch, clock: Clock, tmp: Path, outs: dict[str, str]) -> None:
    store, cold = str(tmp / "store"), f"file://{tmp / 'cold'}"
    mp.setattr(time, "time", clock)
    mp.setenv("TZ", "UTC")
    time.tzset()
    for name in ("MQTIER_CONFIG", "MQTIER_COLD", "MQTIER_STORE"):
        mp.delenv(name, raising=False)
    mp.chdir(tmp)
    mp.setattr(_cold, "config_path", None)
    small = ["--commitlog-file-size", "16K", "--broker", BROKER]
    first = str(_inputs(tmp / "first.jsonl", 0, 160))
    outs["ingest"] = _out(
        "ingest", "--store", store, "-t", "orders", "--queues", "3", *small, first
    )
    outs["offsets"] = _out("offsets", "--store", store)
    outs["read"] = _out("read", "--store", store, "-t", "orders", "-q", "1", "-n", "4")
    outs["read-format"] = _out(
        "read", "--store", store, "-t", "audit", "-q", "1", "-n", "3",
        "--format", "{topic}/{queue}@{queue_offset} {store_iso} {keys} {body}",
    )  # fmt: skip
    outs["query-key"] = _out("query", "key", "ORDER-7", "--store", store, "-t", "audit")
    outs["inspect"] = _out("inspect", str(tmp / "store/commitlog/00000000000000000000"), "-n", "3")
    outs["recover-dry-run"] = _out("recover", "--store", store, "--dry-run")
    outs["dispatch-dry-run"] = _out(
        "dispatch", "--store", store, "--cold", cold, "--force", "--dry-run"
    )
    outs["dispatch"] = _out("dispatch", "--store", store, "--cold", cold, "--force")
    clock.now += 1
    _out("ingest", "--store", store, "-t", "orders", str(_inputs(tmp / "second.jsonl", 160, 40)))
    _out("dispatch", "--store", store, "--cold", cold, "--force")
    outs["offsets-cold"] = _out("offsets", "--store", store, "--cold", cold)
    clock.now += 2 * 3600
    outs["clean-dry-run"] = _out(
        "clean", "--store", store, "--cold", cold, "--keep", "1h", "--dry-run"
    )
    outs["compact-dry-run"] = _out("compact", "--cold", cold, "--broker", BROKER, "--dry-run")
    clock.now += 3 * 86400
    outs["expire-dry-run"] = _out(
        "expire", "--cold", cold, "--broker", BROKER, "--ttl", "1d", "--dry-run"
    )


NAMES = [
    "ingest",
    "offsets",
    "read",
    "read-format",
    "query-key",
    "inspect",
    "recover-dry-run",
    "dispatch-dry-run",
    "dispatch",
    "offsets-cold",
    "clean-dry-run",
    "compact-dry-run",
    "expire-dry-run",
]


@pytest.mark.parametrize("name", NAMES)
def test_plain_output_matches_its_golden_file(outputs: dict[str, str], name: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(outputs[name])
    assert path.is_file(), f"no golden file {path}; run with MQTIER_UPDATE_GOLDEN=1"
    assert outputs[name] == path.read_text()


@pytest.mark.parametrize("name", NAMES)
def test_plain_rows_are_tab_separated_and_whole(outputs: dict[str, str], name: str) -> None:
    lines = outputs[name].splitlines()
    assert lines, f"{name} wrote nothing on stdout"
    assert not any(ch in outputs[name] for ch in "│┃━…"), "table borders or elision in a pipe"
    if "\t" in lines[0]:  # a listing: every row has the header's number of fields
        width = len(lines[0].split("\t"))
        assert all(len(line.split("\t")) == width for line in lines[1:]), outputs[name]
