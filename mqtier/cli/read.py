"""``mqtier read``: messages of one queue by offset, through its consume queue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mqtier.cli._common import (
    JsonOut,
    ReadOnly,
    StoreDir,
    emit_jsonl,
    handle_errors,
    out_console,
)
from mqtier.format.message import MessageRecord
from mqtier.store.store import Store

B64 = Annotated[bool, typer.Option("--b64", help="Always give bodies as body_b64 in --json.")]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="milliseconds")


def print_messages(msgs: Sequence[MessageRecord], *, json_out: bool, b64: bool) -> None:
    """JSON Lines with --json, else a table (body shown up to 60 characters)."""
    if json_out:
        emit_jsonl(m.to_json(b64=b64) for m in msgs)
        return
    table = Table()
    for name in ("topic", "queue", "offset", "msg id", "keys", "tags", "stored", "body"):
        table.add_column(name, overflow="fold" if name == "body" else "ellipsis")
    for m in msgs:
        try:
            body = m.body.decode("utf-8")
        except UnicodeDecodeError:
            body = f"<{len(m.body)} bytes>"
        if len(body) > 60:
            body = body[:57] + "..."
        table.add_row(
            m.topic,
            str(m.queue_id),
            str(m.queue_offset),
            m.msg_id,
            " ".join(m.keys),
            m.tags or "",
            _when(m.store_ts),
            body,
        )
    out_console.print(table)


@handle_errors
def read(
    store: StoreDir = Path("store"),
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic to read.")] = ...,  # type: ignore[assignment]
    queue: Annotated[int, typer.Option("--queue", "-q", help="Queue id.")] = 0,
    from_offset: Annotated[int, typer.Option("--from", help="First queue offset.")] = 0,
    count: Annotated[int, typer.Option("--count", "-n", help="Most messages to return.")] = 32,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", help="Only messages with this tag (repeatable).")
    ] = None,
    b64: B64 = False,
    read_only: ReadOnly = False,
    json_out: JsonOut = False,
) -> None:
    """Read messages of one queue from an offset, in order.

    Example: mqtier read --store ./store --topic orders --queue 3 --from 100 --count 10 --json
    """
    with Store.open(store, read_only=read_only) as st:
        msgs = st.read(topic, queue, from_offset, count, tags=tags)
        print_messages(msgs, json_out=json_out, b64=b64)
