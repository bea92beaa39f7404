"""``mqtier query key|id|uniq``: find messages by business key, offsetMsgId or UNIQ_KEY."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from mqtier.cli._common import (
    ConfigPath,
    JsonOut,
    StoreDir,
    handle_errors,
    open_store_to_read,
    parse_time,
)
from mqtier.cli._messages import B64, Full, MessageTemplate, Template, write_messages
from mqtier.cli._output import Output
from mqtier.errors import ConfigError, NotFoundError
from mqtier.format.message import MessageRecord, parse_msg_id
from mqtier.store.store import MAX_TIME_MS, Store


@handle_errors
def query_key(
    key: Annotated[str, typer.Argument(metavar="KEY", help="Business key (one token of KEYS).")],
    store: StoreDir = Path("store"),
    topic: Annotated[
        str, typer.Option("--topic", "-t", metavar="TOPIC", help="Topic to search.")
    ] = ...,  # type: ignore[assignment]
    begin: Annotated[
        str | None,
        typer.Option("--begin", metavar="TIME", help="Stored at or after (ms, ISO 8601, -1h)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", metavar="TIME", help="Stored at or before.")
    ] = None,
    max_results: Annotated[
        int, typer.Option("--max", metavar="N", min=1, max=1 << 20, help="Most messages to return.")
    ] = 64,
    b64: B64 = False,
    full: Full = False,
    template: Template = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Find messages by key through the index (hash, then the real key is re-checked).

    Exit code 3 when nothing matches.

    Example: mqtier query key ORDER-42 --store ./store --topic orders --json
    """
    begin_ms = parse_time(begin, "--begin") if begin else 0
    end_ms = parse_time(end, "--end") if end else MAX_TIME_MS
    fmt = MessageTemplate(template) if template is not None else None  # a typo fails first
    with open_store_to_read(store) as st:
        msgs = st.query_key(topic, key, begin_ms=begin_ms, end_ms=end_ms, max_results=max_results)
        if not msgs:
            raise NotFoundError(f"no message with key {key!r} in topic {topic!r} of {store}")
        _write(msgs, b64=b64, full=full, template=fmt, json_out=json_out)


@handle_errors
def query_id(
    msg_id: Annotated[
        str, typer.Argument(metavar="MSG_ID", help="offsetMsgId: 32 (IPv4) or 56 (IPv6) hex chars.")
    ],
    store: StoreDir = Path("store"),
    b64: B64 = False,
    full: Full = False,
    template: Template = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Fetch the message an offsetMsgId names (store host + commit-log offset).

    Example: mqtier query id C0A8C77C00001FBB00000000000000AC --store ./store
    """
    fmt = MessageTemplate(template) if template is not None else None  # a typo fails first
    _check_msg_id(msg_id)  # before the store: a typo is exit 2 wherever --store points
    with open_store_to_read(store) as st:
        try:
            msg = st.query_msg_id(msg_id)
        except NotFoundError:
            if _is_uniq_key(st, msg_id):
                raise NotFoundError(
                    f"no message with offsetMsgId {msg_id} in {store}: this looks like a "
                    "UNIQ_KEY (the client-side message id)",
                    hint=f"mqtier query uniq {msg_id} --store {shlex.quote(str(store))}",
                ) from None
            raise
        _write([msg], b64=b64, full=full, template=fmt, json_out=json_out)


def _check_msg_id(msg_id: str) -> None:
    try:
        parse_msg_id(msg_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _is_uniq_key(st: Store, msg_id: str) -> bool:
    """Whether an id that named no message is a UNIQ_KEY (both are 32 or 56 hex chars).

    An offsetMsgId is store IP + port (int32) + commit-log offset (int64); a UNIQ_KEY is
    client IP + pid (int16) + class-loader hash (int32) + ms since month start (int32) +
    counter (int16). Read as an offsetMsgId, a UNIQ_KEY's "port" starts with the client's
    pid, so it is past 65535 (no TCP port is), and its "offset" is far past any commit log.
    A message in this store with that UNIQ_KEY settles it either way.
    """
    _, port, _ = parse_msg_id(msg_id)
    return port > 0xFFFF or bool(st.query_uniq(msg_id))


@handle_errors
def query_uniq(
    uniq_key: Annotated[
        str, typer.Argument(metavar="UNIQ_KEY", help="UNIQ_KEY: the client-side message id.")
    ],
    store: StoreDir = Path("store"),
    topic: Annotated[
        str | None, typer.Option("--topic", "-t", metavar="TOPIC", help="Only this topic.")
    ] = None,
    b64: B64 = False,
    full: Full = False,
    template: Template = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Find messages by UNIQ_KEY (what RocketMQ clients show as the message id).

    Example: mqtier query uniq 7F00000100002A9F0000000000000001 --store ./store
    """
    fmt = MessageTemplate(template) if template is not None else None  # a typo fails first
    with open_store_to_read(store) as st:
        msgs = st.query_uniq(uniq_key, topic)
        if not msgs:
            raise NotFoundError(f"no message with UNIQ_KEY {uniq_key} in {store}")
        _write(msgs, b64=b64, full=full, template=fmt, json_out=json_out)


def _write(
    msgs: list[MessageRecord],
    *,
    b64: bool,
    full: bool,
    template: MessageTemplate | None,
    json_out: bool,
) -> None:
    write_messages(Output.choose(json_out=json_out, full=full), [msgs], b64=b64, template=template)
