"""``mqtier inspect``: dump any store file, like kafka-dump-log."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from mqtier.cli._common import ConfigPath, JsonOut, handle_errors, out_console
from mqtier.cli._output import Column, Listing, Output
from mqtier.errors import ConfigError, CorruptRecordError
from mqtier.inspect import inspect_file
from mqtier.store.store import is_store_dir


@handle_errors
def inspect(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="A commit-log, consume-queue, index, checkpoint or config file."
        ),
    ],
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", metavar="N", min=0, max=1 << 40, help="Most entries to list (0 = all)."
        ),
    ] = 100,
    no_crc: Annotated[bool, typer.Option("--no-crc", help="Skip body CRC checks.")] = False,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Describe a store file: its kind, a summary, and its entries.

    Exits 4 when the file holds a corrupt record (after printing what precedes it).

    Example: mqtier inspect ./store/commitlog/00000000000000000000 --json
    """
    if path.is_dir():
        raise _a_directory(path)
    doc = inspect_file(path, limit=limit, verify_crc=not no_crc)
    out = Output.choose(json_out=json_out)
    if out.json:
        out.show(doc)
    else:
        _print(doc, out)
    err = doc.get("error")
    if err:
        raise CorruptRecordError(path, err["offset"], err["detail"])


def _a_directory(path: Path) -> ConfigError:
    """inspect reads one file: for a store, offsets is what describes it; for another
    directory (commitlog/, a consume queue), the first file in it is one to inspect."""
    if is_store_dir(path):
        return ConfigError(
            f"{path} is a store directory; inspect describes one file of a store",
            hint=f"mqtier offsets --store {shlex.quote(str(path))}",
        )
    first = next((p for p in sorted(path.rglob("*")) if p.is_file()), None)
    return ConfigError(
        f"{path} is a directory; inspect describes one file",
        hint=f"mqtier inspect {shlex.quote(str(first))}" if first else None,
    )


_TEXT_COLUMNS = {
    "commitlog": [
        "position",
        "size",
        "topic",
        "queue",
        "queue_offset",
        "store_time",
        "keys",
        "tags",
        "body_size",
    ],
}


_OFFSETS = {"position", "size", "queue", "queue_offset", "commitlog_offset", "body_size", "offset"}


def _summary_value(value: Any) -> str:
    """A summary value as text: maps as name=value pairs, booleans as JSON spells them."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_summary_value(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if all(isinstance(v, dict) and len(v) == 2 for v in value):  # [{"topic", "records"}]
            return ", ".join("=".join(map(_summary_value, v.values())) for v in value)
        return ", ".join(map(_summary_value, value))
    return "-" if value is None else str(value)


def _column(name: str) -> Column:
    if name.endswith("_time"):
        return Column(name, kind="time")
    if name in _OFFSETS:
        return Column(name, kind="int")
    return Column(name, fit="elide" if name in ("keys", "tags") else "keep")


def _print(doc: dict[str, Any], out: Output) -> None:
    entries = doc.get("entries") or []
    # With entries, the header and summary are context (stderr in a pipe, above the table).
    beside = bool(entries)
    out.answer(f"{doc['file']}  kind={doc['kind']}  size={doc['size']:,}", beside_rows=beside)
    for k, v in (doc.get("summary") or {}).items():
        out.answer(f"  {k}: {_summary_value(v)}", beside_rows=beside)
    if "content" in doc:
        if out.mode == "table":
            out_console.print_json(data=doc["content"])
        else:
            sys.stdout.write(orjson.dumps(doc["content"], option=orjson.OPT_INDENT_2).decode())
            sys.stdout.write("\n")
    if entries:
        # The text columns are the ones a person scans; --json has every field.
        names = [c for c in _TEXT_COLUMNS.get(doc["kind"], list(entries[0])) if c in entries[0]]
        out.rows(Listing([_column(n) for n in names], entries))
        if doc.get("entries_truncated"):
            out.note("  ... more entries; use --limit 0 for all")
