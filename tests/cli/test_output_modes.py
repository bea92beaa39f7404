"""The output layer as people and scripts meet it: a table on a real terminal (a pty at 80
columns), plain tab-separated lines in a pipe, --full, --format, and answers on stdout.

Plain shapes are also pinned by golden files (tests/cli/test_plain_golden.py); these tests check
the rules: nothing shortened in a pipe, one line per item, ids and times whole on a terminal.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtier.cli import app

runner = CliRunner()
LONG = "payload " + "z" * 300 + " END"
ID = re.compile(r"\b[0-9A-F]{32}\b")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("modes")
    lines = []
    for i in range(6):
        body = LONG if i == 2 else f'{{"order": {i}, "note": "tab\there\nnewline"}}'
        lines.append(
            json.dumps(
                {"topic": "orders", "queue": i % 2, "keys": [f"ORDER-{i}", f"K{i}"], "body": body}
            )
        )
    src = tmp / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    root = tmp / "s"
    res = runner.invoke(app, ["ingest", "--store", str(root), "--create", str(src)])
    assert res.exit_code == 0, res.output
    return root


def on_terminal(*args: str, columns: int = 80) -> str:
    """Run ``mqtier args`` with stdout on a real pty of ``columns`` columns; its stdout."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm", "NO_COLOR": "1"}
    env.pop("MQTIER_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqtier", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # bold headers


def test_piped_read_is_plain_untruncated_tab_separated(store: Path) -> None:
    res = runner.invoke(app, ["read", "--store", str(store), "-t", "orders", "-q", "0"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    header = lines[0].split("\t")
    assert header[:3] == ["topic", "queue", "queue_offset"] and header[-1] == "body"
    assert "│" not in res.stdout and "…" not in res.stdout
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 3 and all(len(r) == len(header) for r in rows)  # one line per message
    by = {r[header.index("queue_offset")]: dict(zip(header, r, strict=True)) for r in rows}
    assert by["1"]["body"] == LONG  # whole, however long
    assert len(by["0"]["msg_id"]) == 32 and len(by["0"]["uniq_key"]) == 32
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", by["0"]["store_time"]
    )
    # a tab or newline in a body must not split the line: escaped, as \t and \n
    assert by["0"]["body"] == '{"order": 0, "note": "tab\\there\\nnewline"}'
    assert by["0"]["keys"] == "ORDER-0 K0"


def test_piped_offsets_rows_start_with_data(store: Path) -> None:
    res = runner.invoke(app, ["offsets", "--store", str(store)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("topic\tqueue\tmin_offset\tmax_offset")
    assert [line.split("\t")[:4] for line in lines[1:]] == [
        ["orders", "0", "0", "3"],
        ["orders", "1", "0", "3"],
    ]
    assert "broker" in res.stderr  # the title is context: stderr, so awk sees rows only


def test_terminal_read_at_80_columns_never_shortens_ids_or_times(store: Path) -> None:
    text = on_terminal("read", "--store", str(store), "-t", "orders", "-q", "0")
    lines = text.splitlines()
    assert lines[0].startswith("topic orders  queue 0  stored ")  # what every row shares
    rows = [line for line in lines[2:] if line.strip()]
    assert len(rows) == 3
    assert all(len(line) <= 80 for line in lines), text
    ids = [m.group() for row in rows for m in [ID.search(row)] if m]
    assert len(ids) == 3  # all 32 characters of every id
    assert all(re.search(r"\b\d\d:\d\d:\d\d\.\d{3}\b", row) for row in rows)
    assert any(row.endswith("…") for row in rows)  # the bodies gave way, and say so
    assert "│" not in text


def test_terminal_full_shows_whole_bodies(store: Path) -> None:
    text = on_terminal("read", "--store", str(store), "-t", "orders", "-q", "0", "--full")
    assert "…" not in text
    joined = "".join(line.strip() for line in text.splitlines())
    assert LONG.replace(" ", "") in joined.replace(" ", "")
    assert all(len(line) <= 80 for line in text.splitlines()), text


def test_terminal_offsets_fits_and_groups_the_topic(store: Path) -> None:
    text = on_terminal("offsets", "--store", str(store))
    lines = text.splitlines()
    assert "topic orders" in lines[0] and "broker" in lines[0]
    assert lines[1].split()[:3] == ["queue", "min", "max"]
    assert all(len(line) <= 80 for line in lines[1:])  # the title holds the store's path


def test_wide_terminal_gives_bodies_the_room(store: Path) -> None:
    text = on_terminal("read", "--store", str(store), "-t", "orders", "-q", "1", columns=200)
    assert '{"order": 1, "note": "tab\\there\\nnewline"}' in text


def test_format_template(store: Path) -> None:
    res = runner.invoke(
        app,
        [
            "read", "--store", str(store), "-t", "orders", "-q", "1",
            "--format", "{queue}/{queue_offset}\\t{keys}\\t{properties[KEYS]}|{properties[NOPE]}|",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "1/0\tORDER-1 K1\tORDER-1 K1||",
        "1/1\tORDER-3 K3\tORDER-3 K3||",
        "1/2\tORDER-5 K5\tORDER-5 K5||",
    ]


@pytest.mark.parametrize(
    "template", ["{nope}", "{topic.__class__}", "{body[0]}", "{topic", "{queue:zz}"]
)
def test_a_bad_template_is_exit_2_before_anything_prints(store: Path, template: str) -> None:
    res = runner.invoke(
        app, ["read", "--store", str(store), "-t", "orders", "-q", "0", "--format", template]
    )
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    assert "--format" in res.stderr and "Traceback" not in res.stderr


def test_query_takes_the_same_template(store: Path) -> None:
    res = runner.invoke(
        app,
        ["query", "key", "ORDER-4", "--store", str(store), "-t", "orders", "-f", "{msg_id} {body}"],
    )
    assert res.exit_code == 0, res.output
    msg_id, body = res.stdout.strip().split(" ", 1)
    assert ID.fullmatch(msg_id) and body == '{"order": 4, "note": "tab\there\nnewline"}'


def test_recover_answers_on_stdout(store: Path) -> None:
    res = runner.invoke(app, ["recover", "--store", str(store), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "valid data ends at commit-log offset" in res.stdout


def test_plain_escapes_are_unambiguous() -> None:
    """A backslash in a value is written \\\\ in a pipe, so a literal backslash-n and a newline
    stay apart (a value without control characters kept its backslashes bare)."""
    import io

    from mqtier.cli._output import Column, Listing, Output

    out = Output("plain", stream=io.StringIO())
    out.rows(Listing([Column("v")], [{"v": "C:\\new"}, {"v": "two\nlines"}]))
    assert out.stream.getvalue() == "v\nC:\\\\new\ntwo\\nlines\n"  # type: ignore[attr-defined]
