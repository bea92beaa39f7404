"""``mqtier read``: messages of one queue by offset, through its consume queue."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mqtier.cli._cold import (
    Broker,
    ColdUrl,
    StorageOptions,
    broker_name,
    cold_url,
    open_cold,
    report_bill,
)
from mqtier.cli._common import (
    JsonOut,
    emit_jsonl,
    handle_errors,
    note,
    open_store_to_read,
    out_console,
)
from mqtier.errors import ColdStoreError, ConfigError
from mqtier.format.message import MessageRecord
from mqtier.store.store import Store
from mqtier.store.topics import MAX_QUEUES
from mqtier.tier.reader import ColdReader
from mqtier.tier.tiered import ReadPolicy, iter_tiered

log = logging.getLogger(__name__)

MAX_QUEUE_ID = MAX_QUEUES - 1
MAX_OFFSET = 2**63 - 1  # a Java long, as RocketMQ stores queue offsets
MAX_COUNT = 1 << 40

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


Policy = Annotated[
    ReadPolicy | None,
    typer.Option(
        "--policy",
        help="Which tier serves the read (default not_in_disk with --cold, else disable).",
        case_sensitive=False,
    ),
]


@handle_errors
def read(
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", "-s", envvar="MQTIER_STORE", help="Store directory (or $MQTIER_STORE)."
        ),
    ] = None,
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic to read.")] = ...,  # type: ignore[assignment]
    queue: Annotated[
        int, typer.Option("--queue", "-q", min=0, max=MAX_QUEUE_ID, help="Queue id.")
    ] = 0,
    from_offset: Annotated[
        int, typer.Option("--from", min=0, max=MAX_OFFSET, help="First queue offset.")
    ] = 0,
    count: Annotated[
        int, typer.Option("--count", "-n", min=0, max=MAX_COUNT, help="Most messages to return.")
    ] = 32,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", help="Only messages with this tag (repeatable).")
    ] = None,
    b64: B64 = False,
    cold: ColdUrl = None,
    policy: Policy = None,
    broker: Broker = None,
    storage_option: StorageOptions = None,
    json_out: JsonOut = False,
) -> None:
    """Read messages of one queue from an offset, in order, from either tier.

    --policy decides which tier serves which offsets when a cold tier is given.

    Example: mqtier read --store ./store --topic orders --queue 3 --from 100 --count 10 --json

    Example: mqtier read --cold s3://bucket/prefix --broker broker-a --topic orders --queue 3
    """
    cold = cold_url(cold)
    if policy is not None and policy is not ReadPolicy.DISABLE and cold is None:
        raise typer.BadParameter("--policy needs a cold tier (--cold, $MQTIER_COLD or config)")
    if cold is None or policy is ReadPolicy.DISABLE:
        with open_store_to_read(store or Path("store")) as st:
            first = st.first_readable(topic, queue)
            if from_offset < first:
                # As documented: a read from below the queue's minimum starts at it, and says so
                # (after `clean`, offset 0 is long gone and an empty answer would mislead).
                note(
                    f"{topic}/{queue} starts at offset {first:,} in this store (older messages "
                    "were cleaned; read them with --cold); reading from there"
                )
                from_offset = first
            msgs = st.read(topic, queue, from_offset, count, tags=tags)
            print_messages(msgs, json_out=json_out, b64=b64)
        return
    # The root is checked below, where an unreachable tier (not a missing one) falls back to hot.
    cold_store, bill = open_cold(cold, storage_option, root="none")
    with contextlib.ExitStack() as stack:
        hot: Store | None = None
        if store is not None:
            hot = stack.enter_context(open_store_to_read(store))
        name = broker_name(broker, hot.config.broker_name if hot is not None else None)
        if not name:
            raise ConfigError("reading the cold tier without --store needs --broker")
        try:
            cold_store.check_root(may_create=False)  # missing: NotFoundError, exit 3
            reader: ColdReader | None = stack.enter_context(ColdReader(cold_store, name))
        except ColdStoreError as exc:
            if hot is None:
                raise
            log.warning("cold tier unavailable, reading the hot store only: %s", exc)
            reader = None
        chosen = policy or ReadPolicy.NOT_IN_DISK
        batches = iter_tiered(
            hot, reader, topic, queue, from_offset, count, policy=chosen, tags=tags
        )
        if json_out:  # stream: a long read prints as it goes, in bounded memory
            for msgs in batches:
                print_messages(msgs, json_out=True, b64=b64)
        else:
            print_messages([m for msgs in batches for m in msgs], json_out=False, b64=b64)
    report_bill(bill, json_out=json_out, json_lines=True)
