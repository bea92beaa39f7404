"""Hostile numbers: every numeric, size, duration and time option is range-checked (exit 2).

Found in a hostile run (#10, item 8): ``clean --keep 99999999999999999999d`` ended in exit 70
(``Integer exceeds 64-bit range``), and 'nan', '1e999' or negative values went through. Each
parser is fuzzed, then every such option of every command gets the same hostile values from
the command line: exit 2, one line naming the option, no traceback, nothing written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

import pytest
import typer.main
from hypothesis import given
from hypothesis import strategies as st

from mqtier.cli import _cold, app
from mqtier.cli._parse import (
    MAX_DURATION_S,
    MAX_SIZE,
    MAX_TIME_MS,
    parse_duration,
    parse_size,
    parse_time,
)
from mqtier.errors import ConfigError
from tests.cli.test_cli import SMALL, run, write_jsonl
from tests.cli.test_cold_cli import tree_digest  # size and mtime of the big sparse index

T = TypeVar("T")

# -- the parsers ---------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "",
    " ",
    "-1",
    "-0.5",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e999",
    "1e3",
    "0x10",
    "1.5.5",
    "12abc",
    "5 mins",
    "99999999999999999999",
    "99999999999999999999d",
    "9" * 400,
    "1" + "0" * 30 + "P",
    "\x00",
    "\u0661\u0662",  # Arabic-Indic digits: str.isdigit() says yes
    "4ib",
    "--",
]

# Text built from the characters the grammars use, so hypothesis gets near the edges.
grammar_text = st.text(alphabet="0123456789.-+eEnaifKMGTPBkmgtpbishd: T", max_size=30)
any_text = st.one_of(grammar_text, st.text(max_size=30), st.sampled_from(HOSTILE_TEXT))


def _usage_error_or(parse: Callable[..., T], text: str, *args: str, **kw: float) -> T | None:
    """What ``parse`` returns, or None after checking that its error is a one-line usage error."""
    try:
        return parse(text, *args, **kw)
    except ConfigError as exc:
        error = exc
    assert error.exit_code == 2
    assert str(error).startswith("--x: ") and "\n" not in str(error)
    return None


@given(any_text)
def test_parse_size_returns_a_size_in_range_or_a_usage_error(text: str) -> None:
    value = _usage_error_or(parse_size, text, "--x")
    if value is None:
        return
    assert isinstance(value, int) and 1 <= value <= MAX_SIZE


@given(any_text)
def test_parse_duration_returns_a_duration_in_range_or_a_usage_error(text: str) -> None:
    value = _usage_error_or(parse_duration, text, "--x", minimum_s=0)
    if value is None:
        return
    assert math.isfinite(value) and 0 <= value <= MAX_DURATION_S
    assert int(value * 1000) < 2**63  # the ms callers make of it fit a Java long


@given(st.one_of(any_text, st.datetimes().map(lambda d: d.isoformat())))
def test_parse_time_returns_a_time_in_range_or_a_usage_error(text: str) -> None:
    value = _usage_error_or(parse_time, text, "--x")
    if value is None:
        return
    assert isinstance(value, int) and 0 <= value <= MAX_TIME_MS


@given(st.integers(1, 1 << 20), st.sampled_from(["", "K", "M", "G", "KiB", "mb", "B"]))
def test_parse_size_reads_what_it_documents(n: int, unit: str) -> None:
    mult = {"": 1, "B": 1, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "mb": 1 << 20}
    assert parse_size(f"{n}{unit}") == n * mult.get(unit, 1 << 30)


@given(st.integers(1, 36500), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_parse_duration_reads_what_it_documents(n: int, unit: str) -> None:
    mult = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * mult)


def test_the_reported_overflow_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match=r"^--keep: '99999999999999999999d' is out of range"):
        parse_duration("99999999999999999999d", "--keep", minimum_s=0)
    for text in ("nan", "1e999", "inf", "-5s"):
        with pytest.raises(ConfigError, match=r"^--keep: .* is not a duration"):
            parse_duration(text, "--keep")
    with pytest.raises(ConfigError, match="out of range: allowed 1ms"):
        parse_duration("0", "--max-duration")  # zero where zero means nothing


# -- every option of every command -------------------------------------------------------------

# What each option is, and the arguments its command needs to get as far as checking it.
# ``{store}`` a filled store, ``{new}`` a directory that is not there, ``{cold}`` a file:// tier
# that exists, ``{file}`` a commit-log file.
STORE = ["--store", "{store}"]
COMMANDS: dict[str, list[str]] = {
    "ingest": ["ingest", "--store", "{new}", "--topic", "t", "{input}"],
    "offsets": ["offsets", *STORE],
    "read": ["read", *STORE, "--topic", "orders"],
    "inspect": ["inspect", "{file}"],
    "dispatch": ["dispatch", *STORE, "--to", "{cold}", "--follow"],
    "clean": ["clean", *STORE, "--cold", "{cold}"],
    "expire": ["expire", "--cold", "{cold}", "--broker", "b"],
    "compact": ["compact", "--cold", "{cold}", "--broker", "b"],
    "query key": ["query", "key", "K", *STORE, "--topic", "orders"],
    "query uniq": ["query", "uniq", "U", "--cold", "{cold}", "--broker", "b"],
    "query id": ["query", "id", "7F00000100002A9F0000000000000000", "--cold", "{cold}"],
    "log": ["log", "--cold", "{cold}", "--broker", "b"],
}
# (command, option, kind, whether 0 is a valid value, prefix of the value)
OPTIONS: list[tuple[str, str, str, bool, str]] = [
    ("ingest", "--queue", "int", True, ""),
    ("ingest", "--queues", "int", False, ""),
    ("ingest", "--commitlog-file-size", "size", False, ""),
    ("ingest", "--max-message-size", "size", False, ""),
    ("offsets", "--at", "time", True, ""),
    ("read", "--queue", "int", True, ""),
    ("read", "--from", "int", True, ""),
    ("read", "--count", "int", True, ""),
    ("read", "--from-time", "time", True, ""),
    ("read", "--poll", "duration", False, ""),
    ("inspect", "--limit", "int", True, ""),
    ("dispatch", "--batch-count", "int", False, ""),
    ("dispatch", "--batch-bytes", "size", False, ""),
    ("dispatch", "--batch-age", "duration", True, ""),
    ("dispatch", "--max-bytes", "size", False, ""),
    ("dispatch", "--max-bytes-per-sec", "size", False, ""),
    ("dispatch", "--max-requests", "int", False, ""),
    ("dispatch", "--max-duration", "duration", False, ""),
    ("dispatch", "--interval", "duration", False, ""),
    ("dispatch", "--object-size", "size", False, ""),
    ("dispatch", "--concurrency", "int", False, ""),
    ("clean", "--keep", "duration", True, ""),
    ("expire", "--ttl", "duration", True, ""),
    ("expire", "--topic-ttl", "duration", True, "orders="),
    ("compact", "--small", "size", False, ""),
    ("compact", "--min-run", "int", False, ""),
    ("compact", "--object-size", "size", False, ""),
    ("compact", "--fanout", "int", False, ""),
    ("query key", "--begin", "time", True, ""),
    ("query key", "--end", "time", True, ""),
    ("query key", "--max", "int", False, ""),
    ("query uniq", "--max", "int", False, ""),
    *((c, "--timeout", "duration", False, "") for c in ("query key", "query uniq", "query id")),
    *((c, "--timeout", "duration", False, "") for c in ("clean", "compact", "dispatch")),
    *((c, "--timeout", "duration", False, "") for c in ("expire", "offsets", "read")),
    ("log", "--limit", "int", True, ""),
    ("log", "--since", "time", True, ""),
    ("log", "--timeout", "duration", False, ""),
]
HOSTILE_CLI = [
    "-1",
    "nan",
    "inf",
    "1e999",
    "99999999999999999999",
    "99999999999999999999d",
    "9" * 400,
    "12abc",
    "1.5.5",
    " ",
    "\u0661\u0662",
]
# Strings that are sizes, durations or times although click only sees text.
_MEASURE_WORDS = (
    "size", "bytes", "age", "duration", "interval", "keep", "ttl", "small", "timeout", "poll"
)  # fmt: skip
_TIME_OPTIONS = {"--at", "--begin", "--end", "--from-time", "--since"}


def _is_number(param: Any) -> bool:
    """An int or float option (``int | None`` too), by the annotation typer built it from."""
    annotation = param.type_descriptor.annotation
    return bool({int, float} & {annotation, *get_args(annotation)})


def _numeric_options() -> set[tuple[str, str]]:
    """(command, option) of every option that takes a number, size, duration or time."""
    out: set[tuple[str, str]] = set()

    # Duck-typed: typer builds its commands from a copy of click's classes, not click's own.
    def walk(cmd: Any, path: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{path} {name}".strip())
            return
        for p in cmd.params:
            if p.param_type_name != "option" or p.is_flag:
                continue
            name = max(p.opts, key=len)
            numeric = _is_number(p)
            words = name.lstrip("-").split("-")  # "--storage-option" holds no "age"
            measured = any(w in words for w in _MEASURE_WORDS) or name in _TIME_OPTIONS
            if numeric or measured:
                out.add((path, name))

    walk(typer.main.get_command(app), "")
    return out


def test_every_numeric_option_is_in_the_table() -> None:
    """A new option of a number, size, duration or time must join the hostile test below."""
    found = _numeric_options()
    assert ("read", "--count") in found and ("dispatch", "--batch-age") in found  # it finds them
    listed = {(c, o) for c, o, *_ in OPTIONS}
    assert found - listed == set(), "add these to OPTIONS"
    # query id/uniq have no such options; every command named here exists
    assert {c for c, _ in found} <= set(COMMANDS)


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    monkeypatch.delenv("MQTIER_COLD", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_cold, "config_path", None)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A filled store, an (empty) file:// tier, and the rest the commands need."""
    root = tmp_path_factory.mktemp("hostile")
    store = root / "s"
    src = write_jsonl(root / "o.jsonl", 50)
    res = run("ingest", "--store", str(store), "--topic", "orders", *SMALL, str(src))
    assert res.exit_code == 0, res.output
    (root / "cold").mkdir()
    first = min((store / "commitlog").iterdir())
    return {
        "store": str(store),
        "new": str(root / "new-store"),
        "cold": f"file://{root / 'cold'}",
        "file": str(first),
        "input": str(src),
        "root": str(root),
    }


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for command, option, _kind, zero_ok, prefix in OPTIONS:
        values = [*HOSTILE_CLI, *([] if zero_ok else ["0"])]
        cases += [(command, option, prefix + v) for v in values]
    return cases


@pytest.mark.parametrize(("command", "option", "value"), _cases())
def test_hostile_values_are_usage_errors(
    world: dict[str, str], command: str, option: str, value: str
) -> None:
    before = tree_digest(Path(world["root"]))
    argv = [a.format(**world) for a in COMMANDS[command]]
    res = run(*argv, option, value)
    out = res.output
    assert res.exit_code == 2, out
    assert option in out, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert tree_digest(Path(world["root"])) == before  # nothing written anywhere
    assert not Path(world["new"]).exists()


def test_the_reported_clean_overflow_is_exit_2(world: dict[str, str]) -> None:
    res = run("clean", "--store", world["store"], "--cold", world["cold"], "--keep",
              "99999999999999999999d")  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "--keep: '99999999999999999999d' is out of range" in res.output


def test_json_errors_of_bad_values_are_json(world: dict[str, str]) -> None:
    res = run("clean", "--store", world["store"], "--cold", world["cold"], "--keep", "nan",
              "--json")  # fmt: skip
    assert res.exit_code == 2
    assert '"type": "ConfigError"' in res.stderr and "--keep" in res.stderr


# -- expire: a TTL under an hour needs --yes -------------------------------------------------


@pytest.mark.parametrize(
    "ttl", [["--ttl", "0"], ["--ttl", "59m"], ["--ttl", "1ms"], ["--topic-ttl", "orders=0s"]]
)
def test_short_ttl_needs_yes(world: dict[str, str], ttl: list[str]) -> None:
    base = ["expire", "--cold", world["cold"], "--broker", "b", *ttl]
    res = run(*base)
    assert res.exit_code == 2, res.output
    assert "--yes" in res.output and "under an hour" in res.output
    assert run(*base, "--yes").exit_code == 0  # confirmed (an empty tier: nothing expires)
    assert run(*base, "--dry-run").exit_code == 0  # a preview deletes nothing, needs no --yes


def test_an_hour_or_more_needs_no_yes(world: dict[str, str]) -> None:
    res = run("expire", "--cold", world["cold"], "--broker", "b", "--ttl", "1h")
    assert res.exit_code == 0, res.output
