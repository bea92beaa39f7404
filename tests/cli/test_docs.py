"""The docs cannot drift from the code: man pages, docs/cli-json.md, docs/FORMAT.md, examples/.

* every command has a man page that names every one of its options, and man/mqtier.1 lists it;
* every key the ``--json`` output can hold is described in docs/cli-json.md;
* every ``| Total | N | |`` line of docs/FORMAT.md equals the size of the struct in its heading;
* every example runs.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from mqtier import Message, Store, StoreConfig
from mqtier.cli import app
from mqtier.cli._json import JSON_VERSION
from mqtier.format import layout as L
from mqtier.format.message import decode_record, encode_record
from mqtier.ingest import IngestSummary
from mqtier.store.recovery import RecoveryReport

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
CLI_JSON = ROOT / "docs" / "cli-json.md"
FORMAT = ROOT / "docs" / "FORMAT.md"
EXAMPLES = ROOT / "examples"

runner = CliRunner()

COMMAND_PAGE_SECTIONS = (
    "NAME",
    "SYNOPSIS",
    "DESCRIPTION",
    "OPTIONS",
    "EXIT STATUS",
    "EXAMPLES",
    "SEE ALSO",
)
OVERVIEW_SECTIONS = (*COMMAND_PAGE_SECTIONS, "COMMANDS", "ENVIRONMENT", "FILES")


# --- helpers ----------------------------------------------------------------------------------


def leaf_commands() -> list[tuple[tuple[str, ...], Any]]:
    """(path, command) for every runnable command, nested groups included (``query key``)."""

    def walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app), ()))


LEAVES = leaf_commands()


def roff_text(path: Path) -> str:
    """The words of a roff page: ``\\-`` as ``-``, font changes and ``\\&`` removed."""
    text = path.read_text(encoding="utf-8")
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")
    text = re.sub(r"\\f(\(..|\[[^]]*\]|.)", "", text)
    return text


def roff_sections(path: Path) -> list[str]:
    return [
        line[4:].strip().strip('"')
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith(".SH ")
    ]


def mentions(text: str, word: str) -> bool:
    """``word`` appears as a whole option or phrase (``--queue`` is not in ``--queues``)."""
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text) is not None


def page_for(path: tuple[str, ...]) -> Path:
    # Subcommands of a group (query key|id|uniq) share the group's page.
    return MAN / f"mqtier-{path[0]}.1"


def option_names(cmd: Any) -> list[str]:
    names: list[str] = []
    for param in cmd.params:
        if param.param_type_name == "option":
            names.extend(param.opts)
            names.extend(param.secondary_opts)
    return names


def documented_names(markdown: str) -> set[str]:
    """Every identifier inside a backticked span, split on dots, ``[]`` and separators."""
    names: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", markdown):
        names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span))
    return names


def json_keys(doc: Any, *, data_maps: frozenset[str] = frozenset()) -> set[str]:
    """All object keys in ``doc``, not descending into maps keyed by data (topic names ...)."""
    keys: set[str] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            keys.add(key)
            if key not in data_maps:
                keys |= json_keys(value, data_maps=data_maps)
    elif isinstance(doc, list):
        for item in doc:
            keys |= json_keys(item, data_maps=data_maps)
    return keys


def assert_documented(keys: set[str], what: str) -> None:
    documented = documented_names(CLI_JSON.read_text(encoding="utf-8"))
    missing = sorted(keys - documented)
    assert not missing, f"{what}: keys missing from docs/cli-json.md: {missing}"


def sample_record(body: bytes) -> Any:
    raw = encode_record(
        topic=b"orders",
        queue_id=3,
        flag=7,
        queue_offset=42,
        phy_offset=4096,
        sysflag=0,
        born_ts=1_700_000_000_000,
        born_host=(bytes([10, 0, 0, 1]), 50000),
        store_ts=1_700_000_000_123,
        store_host=(bytes([192, 168, 71, 1]), 8123),
        body=body,
        properties=b"KEYS\x01ORDER-42 ORDER-43\x02TAGS\x01paid\x02UNIQ_KEY\x01AB12\x02",
    )
    return decode_record(raw)


# --- (a) man pages ----------------------------------------------------------------------------


def test_command_tree_is_what_the_pages_cover() -> None:
    paths = {path for path, _ in LEAVES}
    assert {("ingest",), ("read",), ("query", "key"), ("query", "id"), ("query", "uniq")} <= paths
    # No page for a command that no longer exists.
    pages = {p.name for p in MAN.glob("mqtier-*.1")}
    assert pages == {page_for(path).name for path in paths}


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_man_page_covers_every_option(path: tuple[str, ...], cmd: Any) -> None:
    page = page_for(path)
    assert page.is_file(), f"no man page for 'mqtier {' '.join(path)}' ({page.name})"
    text = roff_text(page)
    assert mentions(text, "mqtier " + " ".join(path)), f"{page.name} never names the command"
    names = option_names(cmd)
    assert names, f"'mqtier {' '.join(path)}' has no options?"
    missing = [name for name in names if not mentions(text, name)]
    assert not missing, f"{page.name} does not mention {missing}"


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_overview_lists_every_command(path: tuple[str, ...], cmd: Any) -> None:
    text = roff_text(MAN / "mqtier.1")
    assert mentions(text, " ".join(path)), f"man/mqtier.1 does not list '{' '.join(path)}'"
    see_also = re.escape(page_for(path).stem) + r"\s*\(1\)"  # ".BR mqtier\-read (1)"
    assert re.search(see_also, text), f"man/mqtier.1 does not refer to {page_for(path).name}"


@pytest.mark.parametrize("page", sorted(MAN.glob("*.1")), ids=lambda p: p.name)
def test_man_page_sections(page: Path) -> None:
    wanted = OVERVIEW_SECTIONS if page.name == "mqtier.1" else COMMAND_PAGE_SECTIONS
    sections = roff_sections(page)
    missing = [s for s in wanted if s not in sections]
    assert not missing, f"{page.name} lacks sections {missing}"
    assert page.read_text(encoding="utf-8").count(".TH ") == 1


def test_overview_exit_codes_match_errors() -> None:
    from mqtier import errors

    text = roff_text(MAN / "mqtier.1")
    table = text[text.index(".SH EXIT STATUS") : text.index(".SH ENVIRONMENT")]
    listed = {int(m) for m in re.findall(r"^(\d+)\|", table, flags=re.MULTILINE)}
    codes = {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.MqtierError)
    }
    assert codes | {0} <= listed


@pytest.mark.parametrize("page", sorted(MAN.glob("*.1")), ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page: Path) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed")
    done = subprocess.run(
        [groff, "-t", "-man", "-Tutf8", "-ww", "-z", str(page)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr


# --- (b) docs/cli-json.md ---------------------------------------------------------------------


def test_compatibility_rule_is_stated() -> None:
    text = CLI_JSON.read_text(encoding="utf-8")
    assert "never rename or remove" in text
    assert "must ignore fields they do not know" in text
    # the version rule, with the number the code writes
    assert "Readers check `version`" in text
    assert (
        f'starts with `"version"`: the version of\nthis contract it follows, now **{JSON_VERSION}**'
        in text
    )


def json_sections() -> dict[str, str]:
    """``## heading`` -> its text, for the headings of docs/cli-json.md."""
    parts = re.split(r"^## (.+)$", CLI_JSON.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


# Commands whose --json output is JSON Lines of message objects, which are not documents.
JSON_LINES_COMMANDS = {"read", "query"}


def document_commands() -> list[str]:
    """Every command whose --json writes one document (its name, as its section's heading)."""
    return sorted(
        {
            path[0]
            for path, cmd in LEAVES
            if "--json" in option_names(cmd) and path[0] not in JSON_LINES_COMMANDS
        }
    )


def test_every_document_is_listed_and_versioned() -> None:
    """Each command's document has a row in the command table and a section whose field table
    starts with ``version``, as does the error object's."""
    text = CLI_JSON.read_text(encoding="utf-8")
    table = text[: text.index("\n## ")]
    sections = json_sections()
    commands = document_commands()
    assert {"ingest", "offsets", "dispatch", "clean", "expire", "compact"} <= set(commands)
    for name in commands:
        assert re.search(rf"^\| `{name}` \| one \[", table, flags=re.MULTILINE), (
            f"docs/cli-json.md's command table has no row for {name}"
        )
        section = sections.get(f"`{name}`")
        assert section is not None, f"docs/cli-json.md has no '## `{name}`' section"
        first_row = re.search(r"^\|---\|---\|---\|\n(\|[^\n]*)", section, flags=re.MULTILINE)
        assert first_row and first_row.group(1).startswith("| `version` | int |"), (
            f"'## `{name}`': the first field of its table must be `version`"
        )
    assert "| `version` | int |" in sections["Error object"]


def test_message_record_keys_documented() -> None:
    text_body = sample_record(b"hello").to_json()
    binary_body = sample_record(b"\xff\x00binary").to_json()
    forced = sample_record(b"hello").to_json(b64=True)
    assert "body" in text_body and "body_b64" not in text_body
    assert "body_b64" in binary_body and "body" not in binary_body
    assert "body_b64" in forced and "body" not in forced
    keys = set(text_body) | set(binary_body) | set(forced)
    assert_documented(keys, "MessageRecord.to_json")


def test_ingest_summary_keys_documented() -> None:
    summary = IngestSummary(messages=2, bytes=10, seconds=0.5, first_offset=0, end_offset=300)
    summary.queues = {"orders": {0: 1, 1: 1}}
    keys = set(summary.to_json()) | {"store"}  # the CLI adds "store"
    assert_documented(keys, "IngestSummary.to_json")


def test_recovery_report_keys_documented() -> None:
    report = RecoveryReport(clean_shutdown=False, dry_run=True, torn_bytes_at=5, torn_reason="x")
    keys = set(report.to_json()) | {"store"}  # the CLI adds "store"
    assert_documented(keys, "RecoveryReport.to_json")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs") / "store"
    config = StoreConfig(
        broker_name="broker-docs",
        commitlog_file_bytes=64 * 1024,
        cq_units_per_file=64,
        index_slots=97,
        index_items=512,
        flush_interval_ms=50,
    )
    with Store.open(root, create=True, config=config) as st:
        for i in range(5):
            st.append(
                Message(
                    topic="orders",
                    body=f"order {i}".encode() if i % 2 else b"\xff\xfe",
                    queue_id=i % 2,
                    keys=(f"ORDER-{i}",),
                    tags="paid",
                    properties={"origin": "docs"},
                )
            )
        st.wait_dispatched()
    return root


def run_json(*args: str) -> Any:
    """A command's --json document, checked to start with the contract's version."""
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert next(iter(doc)) == "version" and doc["version"] == JSON_VERSION, doc
    return doc


def test_offsets_keys_documented(small_store: Path) -> None:
    doc = run_json("offsets", "--store", str(small_store), "--at", "now", "--json")
    assert doc["queues"], doc
    assert_documented(json_keys(doc), "offsets --json")


def test_recover_cli_keys_documented(small_store: Path) -> None:
    doc = run_json("recover", "--store", str(small_store), "--dry-run", "--json")
    assert_documented(json_keys(doc), "recover --json")


def test_read_and_query_keys_documented(small_store: Path) -> None:
    res = runner.invoke(app, ["read", "--store", str(small_store), "-t", "orders", "--json"])
    assert res.exit_code == 0, res.output
    msgs = [json.loads(line) for line in res.stdout.splitlines()]
    assert msgs
    assert_documented(json_keys(msgs, data_maps=frozenset({"properties"})), "read --json")


@pytest.mark.parametrize(
    "relative",
    [
        "commitlog/00000000000000000000",
        "consumequeue/orders/0/00000000000000000000",
        "index",
        "checkpoint",
        "mqtier.dispatch",
        "config/topics.json",
        "lock",
    ],
)
def test_inspect_keys_documented(small_store: Path, relative: str) -> None:
    path = small_store / relative
    if path.is_dir():  # index/: the one file, whatever its time-based name
        (path,) = path.iterdir()
    doc = run_json("inspect", str(path), "--json")
    keys = json_keys(doc, data_maps=frozenset({"properties", "content"}))
    assert_documented(keys, f"inspect --json ({doc['kind']})")
    assert f"`{doc['kind']}`" in CLI_JSON.read_text(encoding="utf-8")


def test_error_object_keys_documented(small_store: Path) -> None:
    res = runner.invoke(
        app, ["query", "key", "NO-SUCH-KEY", "--store", str(small_store), "-t", "orders", "--json"]
    )
    assert res.exit_code == 3
    doc = json.loads(res.stderr.strip().splitlines()[-1])
    assert doc["error"]["exit_code"] == 3
    assert next(iter(doc)) == "version" and doc["version"] == JSON_VERSION
    assert_documented(json_keys(doc), "error object")


# --- (c) docs/FORMAT.md -----------------------------------------------------------------------

# The fixed structures whose Total lines the spec must give (brief: 88/20/20/40/4/20/40/12).
REQUIRED_STRUCTS = (
    "RECORD_HEADER_V4V4",
    "CQ_UNIT",
    "CQ_EXT_UNIT_HEAD",
    "INDEX_HEADER",
    "INDEX_SLOT",
    "INDEX_ITEM",
    "CHECKPOINT",
    "DISPATCH_CHECKPOINT",
)
_TOTAL = re.compile(r"^\|\s*Total\s*\|\s*(\d+)\s*\|\s*\|\s*$")
_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|")


def format_sections() -> list[tuple[str, list[str]]]:
    """(heading, lines) for each heading of FORMAT.md, outside fenced code blocks."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in FORMAT.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            sections.append((line, []))
        else:
            sections[-1][1].append(line)
    return sections


def struct_names_in(heading: str) -> list[str]:
    return [
        name
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", heading)
        if isinstance(getattr(L, name, None), struct.Struct)
    ]


def format_totals() -> dict[str, tuple[int, list[tuple[int, int]]]]:
    """struct name -> (Total, [(offset, size) rows of its table])."""
    found: dict[str, tuple[int, list[tuple[int, int]]]] = {}
    for heading, lines in format_sections():
        totals = [int(m.group(1)) for line in lines if (m := _TOTAL.match(line))]
        names = struct_names_in(heading)
        if not totals:
            assert not names, f"{heading!r} names {names} but has no '| Total | N | |' line"
            continue
        assert len(names) == 1, f"{heading!r}: a Total line needs exactly one struct in the heading"
        assert len(totals) == 1, f"{heading!r}: more than one Total line"
        assert names[0] not in found, f"{names[0]} has two sections"
        rows = [(int(m.group(1)), int(m.group(2))) for line in lines if (m := _ROW.match(line))]
        found[names[0]] = (totals[0], rows)
    return found


def test_format_totals_match_layout() -> None:
    found = format_totals()
    missing = [name for name in REQUIRED_STRUCTS if name not in found]
    assert not missing, f"docs/FORMAT.md has no Total line for {missing}"
    for name, (total, _) in found.items():
        assert total == getattr(L, name).size, f"{name}: FORMAT.md says {total}"
    # The brief's numbers, so a change to layout.py also has to change this test on purpose.
    assert {n: t for n, (t, _) in found.items() if n in REQUIRED_STRUCTS} == {
        "RECORD_HEADER_V4V4": 88,
        "CQ_UNIT": 20,
        "CQ_EXT_UNIT_HEAD": 20,
        "INDEX_HEADER": 40,
        "INDEX_SLOT": 4,
        "INDEX_ITEM": 20,
        "CHECKPOINT": 40,
        "DISPATCH_CHECKPOINT": 12,
    }


def test_format_tables_are_contiguous() -> None:
    for name, (total, rows) in format_totals().items():
        assert rows, f"{name}: no Offset | Size rows"
        offset = 0
        for row_offset, size in rows:
            assert row_offset == offset, f"{name}: field at {row_offset}, expected {offset}"
            offset += size
        assert offset == total, f"{name}: fields add up to {offset}, Total says {total}"


def test_format_cites_every_layout_constant() -> None:
    doc = FORMAT.read_text(encoding="utf-8")
    names = [n for n in vars(L) if n.isupper() and not n.startswith("_")]
    missing = [n for n in names if not re.search(rf"\b{n}\b", doc)]
    assert not missing, f"docs/FORMAT.md never mentions {missing}"


def test_format_glossary_separates_offsets() -> None:
    doc = FORMAT.read_text(encoding="utf-8")
    glossary = doc[doc.index("## 14. Glossary") :]
    assert "**phy offset**" in glossary and "**queue offset**" in glossary


# --- (d) examples -----------------------------------------------------------------------------

EXAMPLE_FILES = sorted(p for p in EXAMPLES.iterdir() if p.is_file())


def test_demo_example_exists() -> None:
    assert EXAMPLES / "demo.py" in EXAMPLE_FILES


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    if example.suffix != ".py":
        pytest.fail(f"examples/{example.name}: only Python examples can be run")
    done = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def _documented_options(page: Path) -> set[str]:
    """The options a page's SYNOPSIS shows and its OPTIONS items are headed by."""
    lines = page.read_text(encoding="utf-8").splitlines()
    section, heads = "", []
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            section = line[4:].strip().strip('"')
        elif section == "SYNOPSIS" or (section == "OPTIONS" and i and lines[i - 1] == ".TP"):
            heads.append(line)
    words = roff_text_of("\n".join(heads))
    return set(re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", words))


def roff_text_of(text: str) -> str:
    text = text.replace("\\-", "-").replace("\\&", "")
    return re.sub(r"\\f(\(..|\[[^]]*\]|.)", "", text)


@pytest.mark.parametrize("page", sorted({page_for(p) for p, _ in LEAVES}), ids=lambda p: p.name)
def test_man_page_shows_no_option_the_command_lacks(page: Path) -> None:
    # A removed option (--read-only went in #10) must leave the pages too.
    root = typer.main.get_command(app)
    real = {"-h", "--help"} | set(option_names(root))
    for path, cmd in LEAVES:
        if page_for(path) == page:
            real |= set(option_names(cmd))
    stale = sorted(_documented_options(page) - real)
    assert not stale, f"{page.name} shows options the command does not have: {stale}"
