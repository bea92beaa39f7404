"""``mqtier compact``: merge each queue's runs of small cold segments into large ones."""

from __future__ import annotations

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
from mqtier.cli._common import ConfigPath, JsonOut, handle_errors, parse_size
from mqtier.cli._output import Column, Listing, Output
from mqtier.cli._progress import CompactProgress
from mqtier.cli.dispatch import MAX_OBJECT_BYTES
from mqtier.errors import ConfigError
from mqtier.index.backfill import backfill
from mqtier.index.merge import FANOUT, MergeOptions, merge_indexes
from mqtier.tier.catalog import load_catalog
from mqtier.tier.compact import CompactOptions
from mqtier.tier.compact import compact as run_compact
from mqtier.tier.packer import PackOptions


@handle_errors
def compact(
    cold: ColdUrl = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            metavar="NAME",
            help="Broker whose cold data to compact (or the config file's).",
        ),
    ] = None,
    small: Annotated[
        str,
        typer.Option(
            "--small", metavar="SIZE", help="A segment under this many stored bytes is small."
        ),
    ] = "2M",
    min_run: Annotated[
        int,
        typer.Option(
            "--min-run",
            metavar="N",
            min=2,
            max=1 << 20,
            help="Merge runs of at least this many small segments.",
        ),
    ] = 2,
    object_size: Annotated[
        str,
        typer.Option(
            "--object-size", metavar="SIZE", help="Target compressed bytes per new object."
        ),
    ] = "8M",
    fanout: Annotated[
        int,
        typer.Option(
            "--fanout",
            metavar="N",
            min=2,
            max=1024,
            help="Merge index objects N at a time, level by level.",
        ),
    ] = FANOUT,
    full_index: Annotated[
        bool,
        typer.Option(
            "--full-index",
            help="Merge every index object, whatever its level, into as few as possible "
            "(rewrites the whole index; the fewest requests per query).",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would merge.")] = False,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Merge small cold segments into large ones, and small index objects into large ones.

    Quiet queues get one small segment per tiering run; reading them back costs two GETs per
    segment. Compaction reads such runs, checks every block and record, writes the records
    again (unchanged) into large objects, and swaps old for new in one commit: readers see one
    or the other, never a gap. Then it merges index objects: each tiering run adds one, and a
    key query reads one slot of each, so every --fanout objects of a level become one of the
    next (dropping expired entries); a query then consults a few per level. Objects nothing
    names any more are deleted. Safe to run beside dispatch: if both commit at once, one of
    them exits with code 5 and commits nothing.

    Example: mqtier compact --cold s3://bucket/prefix --broker broker-a --dry-run

    Example: mqtier compact --cold file:///mnt/cold --broker broker-a --small 4M --json
    """
    url = require_cold_url(cold, "compact")
    name = broker_name(broker)
    if not name:
        raise ConfigError("compact needs --broker (the cold tier keeps each broker apart)")
    opts = CompactOptions(
        small_bytes=parse_size(small, "--small", maximum=MAX_OBJECT_BYTES),
        min_run=min_run,
        pack=PackOptions(
            object_bytes=parse_size(object_size, "--object-size", maximum=MAX_OBJECT_BYTES)
        ),
        dry_run=dry_run,
    )
    cold_store, bill = open_cold(url, storage_option)
    try:
        with CompactProgress(json_out=json_out) as bar:
            hook = bar.update if bar.shown else None
            state = load_catalog(cold_store, name)
            report = run_compact(cold_store, state, opts, on_progress=hook)
        # on the state the segment compaction left (it commits into it): first index what
        # was tiered before the cold tier had an index, then merge
        filled = backfill(cold_store, state, dry_run=dry_run)
        merged = merge_indexes(
            cold_store,
            state,
            MergeOptions(
                fanout=fanout,
                dry_run=dry_run,
                full=full_index,
                # a segment compaction that committed has just collected the garbage
                collect_when_idle=not report.runs,
            ),
        )
    finally:
        cold_store.close()
    doc = report.to_json()
    doc["index"] = {**merged.to_json(), "backfill": filled.to_json()}
    doc["requests"] = bill.to_json()
    summary = ["nothing to compact"]
    if report.runs:
        verb = "would merge" if dry_run else "merged"
        summary = [
            f"{verb} {doc['segments_merged']} segments of {len(doc['queues'])} queues "
            f"({doc['messages']:,} messages)"
            + (
                ""
                if dry_run
                else f" into {doc['segments_written']} segments in {report.objects} objects; "
                f"deleted {report.objects_deleted} objects"
            )
        ]
    if filled.segments:
        verb = "would index" if dry_run else "indexed"
        summary = [
            *(s for s in summary if s != "nothing to compact"),
            (
                f"{verb} {filled.messages:,} messages of {filled.segments} segments tiered "
                "before the cold tier had an index"
            ),
        ]
    if merged.merges:
        verb = "would merge" if dry_run else "merged"
        items = sum(e.items for g in merged.merges for e in g)
        line = f"{verb} {doc['index']['objects_merged']} index objects ({items:,} entries)"
        if not dry_run:
            line += f" into {len(merged.written)}; dropped {merged.items_dropped:,} expired entries"
        summary = [*(s for s in summary if s != "nothing to compact"), line]
    if merged.objects_deleted:
        n = merged.objects_deleted
        line = f"deleted {n} object{'s' if n != 1 else ''} no commit names any more"
        summary = [*(s for s in summary if s != "nothing to compact"), line]
    # The runs of small segments are the answer (what is, or was, merged).
    runs = [
        {
            "topic": run[0].topic,
            "queue": run[0].queue,
            "from": run[0].first,
            "to": run[-1].end,
            "segments_before": len(run),
            "messages": sum(seg.count for seg in run),
            "stored_bytes": sum(seg.stored_bytes for seg in run),
        }
        for run in report.runs
    ]
    listing = Listing(RUN_COLUMNS, runs)
    Output.choose(json_out=json_out).show(doc, listing if runs else None, summary)
    report_bill(bill, json_out=json_out)


RUN_COLUMNS = (
    Column("topic"),
    Column("queue", kind="int"),
    Column("from", kind="int", title="from offset"),
    Column("to", kind="int", title="to offset"),
    Column("segments_before", kind="int", title="segments"),
    Column("messages", kind="int"),
    Column("stored_bytes", kind="size", title="stored bytes"),
)
