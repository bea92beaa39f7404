"""``mqtier recover``: run (or preview) crash recovery and report it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mqtier.cli._common import JsonOut, StoreDir, emit_json, handle_errors, note
from mqtier.store.store import Store


@handle_errors
def recover(
    store: StoreDir = Path("store"),
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only report what recovery would truncate and rebuild."),
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Find the end of valid data, cut a torn tail, rebuild consume queues and index.

    Recovery also runs on every open; this command runs it alone and reports the result.

    Example: mqtier recover --store ./store --dry-run
    """
    with Store.open(store, recover_dry_run=dry_run) as st:
        report = st.recovery
        assert report is not None
        doc = {"store": str(store), **report.to_json()}
    if json_out:
        emit_json(doc)
        return
    verb = "would" if dry_run else "did"
    state = "clean shutdown" if report.clean_shutdown else "crashed (abort file present)"
    note(f"{store}: {state}; valid data ends at commit-log offset {report.end_offset:,}")
    if not report.changed:
        note("nothing to recover: already consistent")
        return
    if report.torn_bytes_at is not None:
        note(f"  {verb} truncate a torn tail at {report.torn_bytes_at:,}: {report.torn_reason}")
    if report.files_removed:
        note(f"  {verb} remove commit-log files: {', '.join(report.files_removed)}")
    if report.cq_units_dropped:
        note(f"  {verb} drop {report.cq_units_dropped:,} consume-queue units past the end")
    if report.index_files_dropped:
        note(f"  {verb} rebuild index files: {', '.join(report.index_files_dropped)}")
    if report.messages_redispatched:
        note(
            f"  {verb} re-dispatch {report.messages_redispatched:,} messages from offset "
            f"{report.redispatch_from:,} into consume queues and index"
        )
