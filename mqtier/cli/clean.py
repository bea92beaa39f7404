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
from mqtier.cli._common import JsonOut, StoreDir, handle_errors, note
from mqtier.cli.dispatch import parse_duration
from mqtier.errors import ReadOnlyStoreError, StoreLockedError
from mqtier.store.lock import is_locked_elsewhere
from mqtier.store.store import Store
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
    cold_store, bill = open_cold(require_cold_url(cold, "clean"), storage_option)
    with Store.open(store, read_only=dry_run) as st:
        if not dry_run and st.read_only:
            if is_locked_elsewhere(Path(store)):
                raise StoreLockedError(
                    f"{store}: store is locked by another process; clean needs it to itself"
                )
            raise ReadOnlyStoreError(f"{store}: cannot clean a store in a read-only directory")
        name = broker_name(broker, st.config.broker_name)
        assert name is not None
        state = load_catalog(cold_store, name)
        report = run_clean(st, state, keep_ms=int(parse_duration(keep) * 1000), dry_run=dry_run)
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
