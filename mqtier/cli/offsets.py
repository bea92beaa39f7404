"""``mqtier offsets``: per topic/queue offset ranges and the commit-log range."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from mqtier.backend.metered import RequestBill
from mqtier.cli._cold import (
    Broker,
    ColdTimeout,
    ColdUrl,
    EndpointUrl,
    StorageOptions,
    broker_name,
    cold_url,
    open_cold,
    report_bill,
)
from mqtier.cli._common import (
    ConfigPath,
    JsonOut,
    handle_errors,
    open_store_to_read,
    parse_time,
)
from mqtier.cli._output import Column, Listing, Output
from mqtier.errors import ConfigError, NotFoundError
from mqtier.redact import redact_url
from mqtier.store.store import Store
from mqtier.tier.catalog import load_catalog
from mqtier.tier.dispatch import check_store_history
from mqtier.tier.reader import ColdReader
from mqtier.tier.tiered import offset_by_time_tiered


def _cold_columns(
    doc: dict[str, Any],
    cold: str,
    broker: str | None,
    options: list[str] | None,
    *,
    store: Store | None = None,
    at_ms: int | None = None,
    topic: str | None = None,
) -> RequestBill:
    """Add the cold tier's committed range and the pending count to every queue of ``doc``,
    and the queues (of ``topic``, if given) that only the cold tier holds.

    With ``at_ms``, also each queue's first offset stored at or after it, over both tiers.
    """
    cold_store, bill = open_cold(cold, options)
    name = broker_name(broker, doc.get("broker"))
    if not name:
        raise ConfigError("reading the cold tier without --store needs --broker")
    state = load_catalog(cold_store, name)
    if store is not None:
        # Another store's cold range would show as a negative pending count: exit 15 instead.
        shown = {(q["topic"], q["queue"]) for q in doc["queues"]}
        check_store_history(
            store, state, [qo for qo in store.offsets() if (qo.topic, qo.queue_id) in shown]
        )
    doc["cold"] = {"url": cold_store.url, "broker": name, "committed_seq": state.seq}
    seen = set()
    for q in doc["queues"]:
        key = (q["topic"], q["queue"])
        seen.add(key)
        first, nxt = state.first_offset(key), state.next_offset(key)
        q["cold_min_offset"] = first
        q["cold_max_offset"] = nxt
        q["pending"] = q["max_offset"] - max(q["min_offset"], nxt if nxt is not None else 0)
    for (cold_topic, queue), _segs in sorted(state.queues.items()):
        if (cold_topic, queue) in seen or topic not in (None, cold_topic):
            continue
        doc["queues"].append(
            {
                "topic": cold_topic,
                "queue": queue,
                "min_offset": None,
                "max_offset": None,
                "messages": 0,
                "min_commitlog_offset": None,
                "max_commitlog_offset": None,
                "cold_min_offset": state.first_offset((cold_topic, queue)),
                "cold_max_offset": state.next_offset((cold_topic, queue)),
                "pending": 0,
            }
        )
    doc["queues"].sort(key=lambda q: (q["topic"], q["queue"]))  # cold-only queues in place
    if at_ms is not None:
        with ColdReader(cold_store, name, state=state, read_ahead=False) as reader:
            for q in doc["queues"]:
                q["offset_at_time"] = offset_by_time_tiered(
                    store, reader, q["topic"], q["queue"], at_ms
                )
    cold_store.close()
    return bill


@handle_errors
def offsets(
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            "-s",
            metavar="DIR",
            envvar="MQTIER_STORE",
            help="Store directory (or $MQTIER_STORE).",
        ),
    ] = None,
    topic: Annotated[
        str | None, typer.Option("--topic", "-t", metavar="TOPIC", help="Only this topic.")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="TIME",
            help="Also give each queue's first offset stored at/after this time.",
        ),
    ] = None,
    cold: ColdUrl = None,
    broker: Broker = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Show each queue's offsets and commit-log range, and with --cold its cold range.

    With --cold (or a configured cold tier) each queue also shows its committed cold range and
    how many hot messages are not tiered yet (pending).

    max_offset is the next offset to be written (a queue holds [min_offset, max_offset)).

    Example: mqtier offsets --store ./store --json

    Example: mqtier offsets --store ./store --cold s3://bucket/prefix --at 2026-11-01T00:00
    """
    at_ms = parse_time(at, "--at") if at else None
    cold = cold_url(cold)
    if store is None and cold is not None:
        doc: dict[str, Any] = {
            "store": None,
            "broker": broker,
            "read_only": None,
            "queues": [],
        }
        bill = _cold_columns(doc, cold, broker, storage_option, at_ms=at_ms, topic=topic)
        hint = f"mqtier offsets --cold {_q(cold)} --broker {_q(str(doc['cold']['broker']))}"
        _require_topic(doc, topic, redact_url(cold), hint)
        doc["requests"] = bill.to_json()
        _show(doc, json_out=json_out)
        report_bill(bill, json_out=json_out)
        return
    store = store or Path("store")
    with open_store_to_read(store) as st:
        rows = [q for q in st.offsets() if topic is None or q.topic == topic]
        hot_at = at_ms if cold is None else None  # with a cold tier both tiers answer, below
        doc = {
            "store": str(store),
            "broker": st.config.broker_name,
            "read_only": st.read_only,
            "health": st.health.to_json(),
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
                    **(
                        {"offset_at_time": st.offset_by_time(q.topic, q.queue_id, hot_at)}
                        if hot_at is not None
                        else {}
                    ),
                }
                for q in rows
            ],
        }
        cold_bill = (
            _cold_columns(doc, cold, broker, storage_option, store=st, at_ms=at_ms, topic=topic)
            if cold
            else None
        )
    where = f"{store} or {redact_url(cold)}" if cold else str(store)
    _require_topic(doc, topic, where, f"mqtier offsets --store {_q(str(store))}")
    if cold_bill is not None:
        doc["requests"] = cold_bill.to_json()
    _show(doc, json_out=json_out)
    if cold_bill is not None:
        report_bill(cold_bill, json_out=json_out)


def _require_topic(doc: dict[str, Any], topic: str | None, where: str, hint: str) -> None:
    """--topic naming no queue in either tier is a typo or the wrong store: exit 3, as for
    ``read``, not an empty table that looks like an idle topic. (A topic that only the
    cold tier still holds has rows, from the catalog.)"""
    if topic is not None and not doc["queues"]:
        raise NotFoundError(f"no topic {topic!r} in {where}", hint=hint)


def _q(text: str) -> str:
    return shlex.quote(redact_url(text))


def _show(doc: dict[str, Any], *, json_out: bool) -> None:
    cl = doc.get("commitlog")
    title = f"{doc['store'] or doc.get('cold', {}).get('url')}  broker {doc['broker']}"
    if cl:
        title += f"  commit log [{cl['min_offset']:,}, {cl['max_offset']:,})"
    cold = "cold" in doc
    columns = [
        Column("topic"),
        Column("queue", kind="int"),
        Column("min_offset", kind="int", title="min"),
        Column("max_offset", kind="int", title="max"),
        Column("messages", kind="int"),
        # With the cold columns a terminal has no room for these: plain lines keep them.
        Column("min_commitlog_offset", kind="int", title="commit-log min", in_table=not cold),
        Column("max_commitlog_offset", kind="int", title="commit-log max", in_table=not cold),
    ]
    if cold:
        columns += [
            Column("cold_min_offset", kind="int", title="cold min"),
            Column("cold_max_offset", kind="int", title="cold max"),
            Column("pending", kind="int"),
        ]
    if any("offset_at_time" in q for q in doc["queues"]):
        columns.append(Column("offset_at_time", kind="int", title="offset at time"))
    out = Output.choose(json_out=json_out)
    out.show(doc, Listing(columns, doc["queues"], title=title))
