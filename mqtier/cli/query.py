"""``mqtier query key|id|uniq``: find messages by business key, offsetMsgId or UNIQ_KEY."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mqtier.cli._common import JsonOut, StoreDir, handle_errors, open_store_to_read, parse_time
from mqtier.cli.read import B64, print_messages
from mqtier.errors import NotFoundError
from mqtier.store.store import MAX_TIME_MS


@handle_errors
def query_key(
    key: Annotated[str, typer.Argument(help="Business key (one token of KEYS).")],
    store: StoreDir = Path("store"),
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic to search.")] = ...,  # type: ignore[assignment]
    begin: Annotated[
        str | None, typer.Option("--begin", help="Stored at or after (ms, ISO 8601, -1h).")
    ] = None,
    end: Annotated[str | None, typer.Option("--end", help="Stored at or before.")] = None,
    max_results: Annotated[
        int, typer.Option("--max", min=1, max=1 << 20, help="Most messages to return.")
    ] = 64,
    b64: B64 = False,
    json_out: JsonOut = False,
) -> None:
    """Find messages by key through the index (hash, then the real key is re-checked).

    Exit code 3 when nothing matches.

    Example: mqtier query key ORDER-42 --store ./store --topic orders --json
    """
    begin_ms = parse_time(begin, "--begin") if begin else 0
    end_ms = parse_time(end, "--end") if end else MAX_TIME_MS
    with open_store_to_read(store) as st:
        msgs = st.query_key(topic, key, begin_ms=begin_ms, end_ms=end_ms, max_results=max_results)
        if not msgs:
            raise NotFoundError(f"no message with key {key!r} in topic {topic!r} of {store}")
        print_messages(msgs, json_out=json_out, b64=b64)


@handle_errors
def query_id(
    msg_id: Annotated[str, typer.Argument(help="offsetMsgId: 32 (IPv4) or 56 (IPv6) hex chars.")],
    store: StoreDir = Path("store"),
    b64: B64 = False,
    json_out: JsonOut = False,
) -> None:
    """Fetch the message an offsetMsgId names (store host + commit-log offset).

    Example: mqtier query id C0A8C77C00001FBB00000000000000AC --store ./store
    """
    with open_store_to_read(store) as st:
        print_messages([st.query_msg_id(msg_id)], json_out=json_out, b64=b64)


@handle_errors
def query_uniq(
    uniq_key: Annotated[str, typer.Argument(help="UNIQ_KEY: the client-side message id.")],
    store: StoreDir = Path("store"),
    topic: Annotated[str | None, typer.Option("--topic", "-t", help="Only this topic.")] = None,
    b64: B64 = False,
    json_out: JsonOut = False,
) -> None:
    """Find messages by UNIQ_KEY (what RocketMQ clients show as the message id).

    Example: mqtier query uniq 7F00000100002A9F0000000000000001 --store ./store
    """
    with open_store_to_read(store) as st:
        msgs = st.query_uniq(uniq_key, topic)
        if not msgs:
            raise NotFoundError(f"no message with UNIQ_KEY {uniq_key} in {store}")
        print_messages(msgs, json_out=json_out, b64=b64)
