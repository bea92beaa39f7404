"""``mqtier clean``: free hot space by deleting commit-log files already committed cold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mqtier.cli._cold import (
    Broker,
    ColdUrl,
    StorageOptions,
    broker_name,
    emit_with_bill,
    open_cold,
    report_bill,
    require_cold_url,
)
from mqtier.cli._common import JsonOut, StoreDir, handle_errors, note, parse_duration
from mqtier.store.store import Store, configured_broker_name
from mqtier.tier.catalog import load_catalog
from mqtier.tier.clean import clean as run_clean


@handle_errors
def clean(
    store: StoreDir = Path("store"),
    cold: ColdUrl = None,
    keep: Annotated[
        str, typer.Option("--keep", help="Keep messages younger than this (e.g. 72h, 7d).")
    ] = "72h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    broker: Broker = None,
    storage_option: StorageOptions = None,
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
    with Store.open(store, writable=not dry_run) as st:
        report = run_clean(st, state, keep_ms=keep_ms, dry_run=dry_run, cold=cold_store)
    cold_store.close()
    if json_out:
        emit_with_bill(report.to_json(), bill)
        return
    verb = "would delete" if dry_run else "deleted"
    if report.files:
        note(
            f"{verb} {len(report.files)} commit-log files ({report.freed_bytes / 2**20:,.0f} MiB)"
            + (f" and {report.derived_files} consume-queue/index files" if not dry_run else "")
        )
    else:
        note("nothing to clean")
    if report.blocked_by:
        note(f"kept from here on: {report.blocked_by}")
    report_bill(bill, json_out=json_out)
