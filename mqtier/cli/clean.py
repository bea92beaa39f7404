"""``mqtier clean``: free hot space by deleting commit-log files already committed cold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
from mqtier.cli._common import ConfigPath, JsonOut, StoreDir, handle_errors, parse_duration
from mqtier.cli._output import Column, Listing, Output, counted, size_text
from mqtier.store.store import Store, configured_broker_name
from mqtier.tier.catalog import load_catalog
from mqtier.tier.clean import clean as run_clean
from mqtier.tier.dispatch import check_store_history


@handle_errors
def clean(
    store: StoreDir = Path("store"),
    cold: ColdUrl = None,
    keep: Annotated[
        str,
        typer.Option(
            "--keep", metavar="DURATION", help="Keep messages younger than this (e.g. 72h, 7d)."
        ),
    ] = "72h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    broker: Broker = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Delete whole commit-log files whose every message is committed cold and older than --keep.

    Never deletes a message the cold tier has not committed, nor the active file. Consume-queue
    and index files that point only below the new minimum go too. Needs the store's lock.

    Example: mqtier clean --store ./store --cold s3://bucket/prefix --keep 72h --dry-run
    """
    # 0 is meaningful: delete every file whose messages are all committed cold, however young.
    keep_ms = int(parse_duration(keep, "--keep", minimum_s=0) * 1000)
    cold_store, bill = open_cold(require_cold_url(cold, "clean"), storage_option)
    # The catalog first: a damaged or unreachable cold tier must stop clean before its
    # writable open recovers or checkpoints anything in the store.
    name = broker_name(broker, configured_broker_name(store))
    assert name is not None
    state = load_catalog(cold_store, name)
    if not dry_run:
        # A writable open writes (checkpoint, recovery): check first that the prefix holds
        # this store's history, on a read-only open (a dry run's one open checks it anyway).
        with Store.open(store) as st:
            check_store_history(st, state)
    with Store.open(store, writable=not dry_run) as st:
        report = run_clean(st, state, keep_ms=keep_ms, dry_run=dry_run, cold=cold_store)
    cold_store.close()
    out = Output.choose(json_out=json_out)
    verb = "would delete" if dry_run else "deleted"
    summary = [f"nothing to clean (cold catalog at commit {state.seq})"]
    if report.files:
        summary = [
            f"{verb} {counted(len(report.files), 'commit-log file')} "
            f"({size_text(report.freed_bytes)})"
            + (f" and {report.derived_files} consume-queue/index files" if not dry_run else "")
        ]
    if report.blocked_by:
        summary.append(f"kept from here on: {report.blocked_by}")
    # The files are the answer (what goes, or went): on stdout, one per line in a pipe.
    listing = Listing(
        [
            Column("file", title="commit-log file"),
            Column("base", kind="int", title="first offset"),
            Column("newest_store_time", kind="time", title="newest message"),
        ],
        report.files,
    )
    report_doc = report.to_json()
    report_doc["requests"] = bill.to_json()
    out.show(report_doc, listing if report.files else None, summary)
    report_bill(bill, json_out=json_out)
