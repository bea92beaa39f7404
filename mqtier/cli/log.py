"""``mqtier log``: the cold tier's recent commits, newest first (what last night's job did)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from mqtier.cli._cold import (
    Broker,
    ColdTimeout,
    ColdUrl,
    EndpointUrl,
    StorageOptions,
    broker_name,
    open_cold,
    report_bill,
    require_cold_url,
)
from mqtier.cli._common import ConfigPath, JsonOut, handle_errors, open_store_to_read, parse_time
from mqtier.cli._output import Column, Listing, Output, local_time
from mqtier.errors import ConfigError, CorruptionError, NotFoundError
from mqtier.tier.catalog import check_broker, operation_of
from mqtier.tier.history import CommitEntry, History, recent_commits

MAX_LIMIT = 1 << 40  # far beyond any history; bounds what a hostile value can ask for
DEFAULT_LIMIT = 20


@handle_errors
def log(
    cold: ColdUrl = None,
    broker: Broker = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            "-s",
            metavar="DIR",
            help="Take the broker name from this store (read only; no byte of it is written).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            metavar="N",
            min=0,
            max=MAX_LIMIT,
            help=f"Show the newest N commits (default {DEFAULT_LIMIT}, or all with --since; "
            "0: all).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TIME",
            help="Only commits made at or after TIME (ISO 8601, ms, now, -12h).",
        ),
    ] = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """List the cold tier's recent commits, newest first: what each run added or removed.

    One line per commit and queue: when, from which host and run, which operation (dispatch,
    compact, expire), the queue offsets it added and removed, their stored bytes, and the
    requests the run sent for it (recorded by commits since mqtier log exists; older ones
    show -). About one GET per commit shown, plus the few records after the catalog's newest
    snapshot: never a replay of the whole history. Nothing is written.

    A damaged commit record is listed as damaged and named at the end (exit 4).

    Example: mqtier log --cold s3://bucket/prefix --broker broker-a --since -12h

    Example: mqtier log --cold file:///mnt/cold --store ./store --limit 1 --json
    """
    url = require_cold_url(cold, "log")
    since_ms = parse_time(since, "--since") if since is not None else None
    store_broker = None
    if store is not None:
        with open_store_to_read(store) as st:
            store_broker = st.config.broker_name
    name = broker_name(broker, store_broker)
    if not name:
        raise ConfigError(
            "log needs the broker: give --broker NAME (or --store DIR, or [cold] broker in "
            "mqtier.toml)"
        )
    check_broker(name)
    wanted = limit if limit is not None else (0 if since_ms is not None else DEFAULT_LIMIT)
    cold_store, bill = open_cold(url, storage_option)
    try:
        history = recent_commits(cold_store, name, limit=wanted or None, since_ms=since_ms)
    finally:
        cold_store.close()
    if history.newest == 0 and not history.damage:
        raise NotFoundError(
            f"{cold_store.url}: broker {name!r} has no commits (no {name}/catalog/commits/1)",
            hint=f"mqtier log --cold {cold_store.url} --store DIR (the broker of the store "
            "that was tiered)",
        )
    out = Output.choose(json_out=json_out)
    for warning in history.warnings:
        out.note(f"warning: {warning}")
    commits = [commit_doc(e) for e in history.entries]
    doc = {  # emit_json puts the contract's "version" first
        "cold": {"url": cold_store.url, "broker": name, "newest_seq": history.newest},
        "broker": name,
        "limit": wanted,
        "since": since_ms,
        "more": history.more,
        "commits": commits,
        "damaged": history.damage,
        "requests": bill.to_json(),
    }
    title = f"{cold_store.url}  broker {name}  newest commit {history.newest}"
    listing = Listing(COLUMNS, rows(commits), title=title)
    out.show(doc, listing, summary=_summary(history, since is not None))
    report_bill(bill, json_out=json_out)
    if history.damage:
        more = f" (and {len(history.damage) - 1} more)" if len(history.damage) > 1 else ""
        raise CorruptionError(history.damage[0] + more)


def _summary(history: History, since: bool) -> list[str]:
    shown = len(history.entries)
    line = f"{shown} commit{'s' if shown != 1 else ''} shown"
    if history.more:
        line += "; older commits not shown" + ("" if since else " (--limit 0 shows all)")
    return [line]


# -- the JSON document ---------------------------------------------------------------------


def commit_doc(entry: CommitEntry) -> dict[str, Any]:
    """One commit as docs/cli-json.md (section log) describes it; all null when damaged."""
    rec = entry.record
    if rec is None:
        return {
            "seq": entry.seq,
            "time": None,
            "time_iso": None,
            "host": None,
            "run_id": None,
            "operation": None,
            "seconds": None,
            "queues": [],
            "added": None,
            "removed": None,
            "requests": None,
            "damaged": entry.damage,
        }
    added, removed = rec["added"], rec["removed"]
    keys = sorted({(d["topic"], d["queue"]) for d in [*added, *removed]})
    return {
        "seq": entry.seq,
        "time": rec["time_ms"],
        "time_iso": local_time(rec["time_ms"]),
        "host": rec["host"],
        "run_id": rec["run_id"],
        "operation": rec.get("operation") or operation_of(added, removed),
        "seconds": rec.get("seconds"),
        "queues": [
            {
                "topic": topic,
                "queue": queue,
                "added": _change([d for d in added if (d["topic"], d["queue"]) == (topic, queue)]),
                "removed": _change(
                    [d for d in removed if (d["topic"], d["queue"]) == (topic, queue)]
                ),
            }
            for topic, queue in keys
        ],
        "added": _change(added, offsets=False),
        "removed": _change(removed, offsets=False),
        "requests": rec.get("requests"),
        "damaged": None,
    }


def _change(segs: list[Mapping[str, Any]], *, offsets: bool = True) -> dict[str, Any] | None:
    """What segments add up to: offsets [min, max), messages, bytes, segments, objects.

    A removed entry of a record older than ``mqtier log`` names only its first offset: its
    end, messages and bytes are then unknown (null), not guessed.
    """
    if not segs:
        return None

    def total(name: str) -> int | None:
        values = [d.get(name) for d in segs]
        return None if None in values else sum(v for v in values if v is not None)

    messages = total("count")
    out: dict[str, Any] = {}
    if offsets:
        first = min(d["first"] for d in segs)
        out["min_offset"] = first
        # The segments of one queue in one commit are contiguous (check_contiguous)
        out["max_offset"] = None if messages is None else first + messages
    out |= {
        "messages": messages,
        "stored_bytes": total("stored_bytes"),
        "raw_bytes": total("raw_bytes"),
        "segments": len(segs),
        "objects": len({d["object"] for d in segs}),
    }
    return out


# -- rows: one per commit and queue, each standing alone (plain lines are for awk) -----------


def rows(commits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in commits:
        common = {
            "seq": c["seq"],
            "time": c["time"],
            "operation": c["operation"] if c["damaged"] is None else "damaged",
            "host": c["host"],
            "run_id": c["run_id"],
            "seconds": c["seconds"],
            "requests": (c["requests"] or {}).get("requests"),
        }
        for q in c["queues"] or [{}]:
            add, rem = q.get("added") or {}, q.get("removed") or {}
            out.append(
                common
                | {
                    "topic": q.get("topic"),
                    "queue": q.get("queue"),
                    "added": _range(add),
                    "added_messages": add.get("messages"),
                    "added_bytes": add.get("stored_bytes"),
                    "added_objects": add.get("objects"),
                    "removed": _range(rem),
                    "removed_messages": rem.get("messages"),
                    "removed_bytes": rem.get("stored_bytes"),
                }
            )
    return out


def _range(change: Mapping[str, Any]) -> str | None:
    if not change:
        return None
    end = change["max_offset"]
    return f"[{change['min_offset']}, {'?' if end is None else end})"


COLUMNS = (
    Column("seq", kind="int"),
    Column("time", kind="time"),
    Column("operation"),
    Column("host"),
    # 32 hex digits: plain lines and JSON carry it whole, the terminal's width goes to offsets
    Column("run_id", title="run id", in_table=False),
    Column("topic"),
    Column("queue", kind="int"),
    Column("added"),
    Column("added_messages", kind="int", in_table=False),
    Column("added_bytes", kind="size", title="added bytes", in_table=False),
    Column("added_objects", kind="int", in_table=False),
    Column("removed"),
    Column("removed_messages", kind="int", in_table=False),
    Column("removed_bytes", kind="size", in_table=False),
    Column("seconds", in_table=False),
    Column("requests", kind="int"),
)
