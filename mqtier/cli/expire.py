"""``mqtier expire``: delete cold data older than a TTL (per topic if wanted)."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from mqtier.cli._cold import (
    ColdTimeout,
    ColdUrl,
    EndpointUrl,
    StorageOptions,
    broker_name,
    open_cold,
    report_bill,
    require_cold_url,
)
from mqtier.cli._common import ConfigPath, JsonOut, handle_errors, parse_duration
from mqtier.cli._output import Column, Listing, Output, size_text
from mqtier.errors import ConfigError
from mqtier.tier.catalog import load_catalog
from mqtier.tier.expire import expire as run_expire

CONFIRM_TTL_MS = 3_600_000  # TTLs under an hour need --yes


@handle_errors
def expire(
    cold: ColdUrl = None,
    ttl: Annotated[
        str | None,
        typer.Option(
            "--ttl", metavar="DURATION", help="Delete cold data older than this (e.g. 30d)."
        ),
    ] = None,
    topic_ttl: Annotated[
        list[str] | None,
        typer.Option(
            "--topic-ttl",
            metavar="TOPIC=DURATION",
            help="TOPIC=TTL for one topic, e.g. orders=7d (repeatable).",
        ),
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option("--topic", metavar="TOPIC", hidden=True)
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm a TTL under an hour (it deletes recent data).")
    ] = False,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            metavar="NAME",
            help="Broker whose cold data expires (or the config file's).",
        ),
    ] = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Delete cold segments whose every message is older than the TTL of its topic.

    A queue loses only its oldest segments, so it never gets a gap. Catalog entries go first,
    then the objects no committed segment names any more. Topics with neither --ttl nor a
    --topic-ttl are kept.

    Example: mqtier expire --cold s3://bucket/prefix --broker broker-a --ttl 30d --topic-ttl orders=7d
    """
    if topic:
        # "--ttl 30d --topic orders --ttl 7d" pairs options by their order on the command line,
        # which the parser does not keep; for a command that deletes data, one spelling only
        raise typer.BadParameter(
            f"--topic: give a topic's TTL as --topic-ttl {topic[0]}=7d (repeatable); "
            "--ttl alone is the default for every other topic"
        )
    default_ttl_ms, per_topic = _ttls(ttl, topic_ttl)
    if not yes and not dry_run:
        _confirm_short_ttls(ttl, default_ttl_ms, per_topic)
    cold = require_cold_url(cold, "expire")
    broker = broker_name(broker)
    if not broker:
        raise ConfigError("expire needs --broker (the cold tier keeps each broker apart)")
    cold_store, bill = open_cold(cold, storage_option)
    state = load_catalog(cold_store, broker)
    report = run_expire(
        cold_store,
        state,
        default_ttl_ms=default_ttl_ms,
        topic_ttl_ms=per_topic,
        dry_run=dry_run,
        run_id=f"expire-{uuid.uuid4().hex}",
    )
    cold_store.close()
    doc = report.to_json()
    doc["requests"] = bill.to_json()
    verb = "would expire" if dry_run else "expired"
    summary = [
        f"{verb} {report.messages:,} messages in {len(report.segments)} segments "
        f"({size_text(report.stored_bytes)} stored)"
        + ("" if dry_run else f"; deleted {report.objects_deleted} objects")
        if report.segments
        else "nothing has expired"
    ]
    # The segments are the answer (what goes, or went), oldest first per queue.
    listing = Listing(SEGMENT_COLUMNS, [seg.to_json() for seg in report.segments])
    Output.choose(json_out=json_out).show(doc, listing if report.segments else None, summary)
    report_bill(bill, json_out=json_out)


SEGMENT_COLUMNS = (
    Column("topic"),
    Column("queue", kind="int"),
    Column("from", get=lambda s: s["first"], kind="int", title="from offset"),
    Column("to", get=lambda s: s["first"] + s["count"], kind="int", title="to offset"),
    Column("messages", get=lambda s: s["count"], kind="int"),
    Column("newest_store_time", get=lambda s: s["max_ts"], kind="time", title="newest message"),
    Column("stored_bytes", kind="size", title="stored bytes"),
    Column("object"),
)


def _ttls(ttl: str | None, topic_ttl: list[str] | None) -> tuple[int | None, dict[str, int]]:
    """--ttl and --topic-ttl in ms, each range-checked (0 up to 100 years)."""
    per_topic: dict[str, int] = {}
    for item in topic_ttl or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--topic-ttl {item[:60]!r}: expected TOPIC=TTL (like orders=7d)")
        ms = int(parse_duration(value, f"--topic-ttl {name}", minimum_s=0) * 1000)
        if per_topic.get(name, ms) != ms:
            # For a command that deletes data, "the last one wins" is a guess at a typo
            raise ConfigError(f"--topic-ttl {name[:60]!r}: given twice with different TTLs")
        per_topic[name] = ms
    if ttl is None and not per_topic:
        raise typer.BadParameter("give --ttl and/or --topic-ttl")
    default_ms = int(parse_duration(ttl, "--ttl", minimum_s=0) * 1000) if ttl is not None else None
    return default_ms, per_topic


def _confirm_short_ttls(ttl: str | None, default_ms: int | None, per_topic: dict[str, int]) -> None:
    """A TTL under an hour deletes what was tiered minutes ago (``--ttl 0``: everything)."""
    short = [f"--ttl {ttl}"] if default_ms is not None and default_ms < CONFIRM_TTL_MS else []
    short += [f"--topic-ttl {t}" for t, ms in sorted(per_topic.items()) if ms < CONFIRM_TTL_MS]
    if short:
        raise ConfigError(
            f"{', '.join(short)}: a TTL under an hour expires recent data (0 expires all of "
            "it); add --yes to confirm, or --dry-run to see what would go"
        )
