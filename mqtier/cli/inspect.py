"""``mqtier inspect``: dump any store file, like kafka-dump-log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mqtier.cli._common import JsonOut, emit_json, handle_errors, out_console
from mqtier.errors import CorruptRecordError
from mqtier.inspect import inspect_file


@handle_errors
def inspect(
    path: Annotated[
        Path, typer.Argument(help="A commit-log, consume-queue, index, checkpoint or config file.")
    ],
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=0, max=1 << 40, help="Most entries to list (0 = all)."),
    ] = 100,
    no_crc: Annotated[bool, typer.Option("--no-crc", help="Skip body CRC checks.")] = False,
    json_out: JsonOut = False,
) -> None:
    """Describe a store file: its kind, a summary, and its entries.

    Exits 4 when the file holds a corrupt record (after printing what precedes it).

    Example: mqtier inspect ./store/commitlog/00000000000000000000 --json
    """
    doc = inspect_file(path, limit=limit, verify_crc=not no_crc)
    if json_out:
        emit_json(doc)
    else:
        _print(doc)
    err = doc.get("error")
    if err:
        raise CorruptRecordError(path, err["offset"], err["detail"])


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


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _print(doc: dict[str, Any]) -> None:
    out_console.print(
        f"[bold]{doc['file']}[/]  kind={doc['kind']}  size={doc['size']:,}", highlight=False
    )
    for k, v in (doc.get("summary") or {}).items():
        out_console.print(f"  {k}: {v}", highlight=False)
    if "content" in doc:
        out_console.print_json(data=doc["content"])
    entries = doc.get("entries") or []
    if entries:
        # The text table keeps the columns a person scans; --json has every field.
        columns = [c for c in _TEXT_COLUMNS.get(doc["kind"], list(entries[0])) if c in entries[0]]
        table = Table(*columns)
        for e in entries:
            table.add_row(*(_cell(e[c]) for c in columns))
        out_console.print(table)
        if doc.get("entries_truncated"):
            out_console.print("  ... more entries; use --limit 0 for all", highlight=False)
