"""``mqtier offsets``: per topic/queue offset ranges and the commit-log range."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mqtier.cli._common import (
    JsonOut,
    ReadOnly,
    StoreDir,
    emit_json,
    handle_errors,
    out_console,
    parse_time,
)
from mqtier.store.store import Store


@handle_errors
def offsets(
    store: StoreDir = Path("store"),
    topic: Annotated[str | None, typer.Option("--topic", "-t", help="Only this topic.")] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Also give each queue's first offset stored at/after this time."),
    ] = None,
    read_only: ReadOnly = False,
    json_out: JsonOut = False,
) -> None:
    """Show each queue's min/max offset and where its messages sit in the commit log.

    max_offset is the next offset to be written (a queue holds [min_offset, max_offset)).

    Example: mqtier offsets --store ./store --json
    """
    at_ms = parse_time(at) if at else None
    with Store.open(store, read_only=read_only) as st:
        rows = [q for q in st.offsets() if topic is None or q.topic == topic]
        by_time = {
            (q.topic, q.queue_id): st.offset_by_time(q.topic, q.queue_id, at_ms)
            for q in rows
            if at_ms is not None
        }
        doc: dict[str, Any] = {
            "store": str(store),
            "broker": st.config.broker_name,
            "read_only": st.read_only,
            "commitlog": {
                "min_offset": st.commitlog.min_offset,
                "max_offset": st.commitlog.durable_end,
                "file_size": st.commitlog.file_bytes,
                "files": len(st.commitlog.files),
            },
            "queues": [
                {
                    "topic": q.topic,
                    "queue": q.queue_id,
                    "min_offset": q.min_offset,
                    "max_offset": q.max_offset,
                    "messages": q.max_offset - q.min_offset,
                    "min_commitlog_offset": q.min_phy,
                    "max_commitlog_offset": q.max_phy,
                    **({"offset_at_time": by_time[(q.topic, q.queue_id)]} if by_time else {}),
                }
                for q in rows
            ],
        }
    if json_out:
        emit_json(doc)
        return
    cl = doc["commitlog"]
    table = Table(
        title=f"{store}  broker {doc['broker']}  commit log [{cl['min_offset']:,}, {cl['max_offset']:,})",
        title_justify="left",
    )
    for name in ("topic", "queue", "min", "max", "messages", "commit-log range"):
        table.add_column(name, justify="left" if name in ("topic", "commit-log range") else "right")
    if by_time:
        table.add_column("offset at time", justify="right")
    for q in doc["queues"]:
        row = [
            q["topic"],
            str(q["queue"]),
            f"{q['min_offset']:,}",
            f"{q['max_offset']:,}",
            f"{q['messages']:,}",
            f"{q['min_commitlog_offset']:,} .. {q['max_commitlog_offset']:,}",
        ]
        if by_time:
            row.append(f"{q['offset_at_time']:,}")
        table.add_row(*row)
    out_console.print(table)
