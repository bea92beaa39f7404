"""``mqtier recover``: run (or preview) crash recovery and report it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mqtier.cli._common import ConfigPath, JsonOut, StoreDir, handle_errors
from mqtier.cli._output import Output
from mqtier.store.store import Store


@handle_errors
def recover(
    store: StoreDir = Path("store"),
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only report what recovery would truncate and rebuild."),
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Also delete every consume queue and IndexFile and derive them again from "
            "the whole commit log.",
        ),
    ] = False,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Find the end of valid data, cut a torn tail, rebuild consume queues and index.

    Writing commands (ingest, clean) recover a crashed store when they open it; reading
    commands only show what recovery would keep. This command runs it alone and reports it.

    --rebuild repairs lost or damaged consume queues and IndexFiles (a queue directory
    deleted by hand, an emptied index/): it replays every record of the commit log.

    Example: mqtier recover --store ./store --dry-run

    Example: mqtier recover --store ./store --rebuild --json
    """
    if rebuild and dry_run:
        raise typer.BadParameter("--rebuild cannot be combined with --dry-run")
    with Store.open(store, writable=not dry_run, recover_dry_run=dry_run, rebuild=rebuild) as st:
        report = st.recovery
        assert report is not None
        doc = {"store": str(store), **report.to_json()}
        # A dry run finds lost derived files but rebuilds nothing: say what a real run would.
        missing = list(st.health.missing_derived) if dry_run else []
        if missing:
            doc["would_rebuild"] = missing
            doc["changed"] = True
        if st.rebuild_report is not None:
            doc["rebuild"] = st.rebuild_report.to_json()
    out = Output.choose(json_out=json_out)
    if out.json:
        out.show(doc)
        return
    # The report is the answer of recover (dry run or not): stdout.
    if st.rebuild_report is not None:
        r = st.rebuild_report
        out.answer(
            f"{store}: rebuilt {r.queues:,} consume queues and {r.index_files:,} index files "
            f"from {r.messages:,} messages (commit log [{r.replayed_from:,}, "
            f"{r.replayed_to:,})); removed {r.consume_queue_files_removed:,} consume-queue "
            f"files and {len(r.index_files_removed):,} index files"
        )
    verb = "would" if dry_run else "did"
    state = "clean shutdown" if report.clean_shutdown else "crashed (abort file present)"
    out.answer(f"{store}: {state}; valid data ends at commit-log offset {report.end_offset:,}")
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if missing[3:] else "")
        out.answer(
            f"  would rebuild consume queues and index from the whole commit log: {listed} "
            "went missing"
        )
    if not report.changed:
        if not missing and st.rebuild_report is None:
            out.answer("nothing to recover: already consistent")
        return
    if report.ingest_rolled_back_from is not None:
        out.answer(
            f"  {verb} roll back an ingest that died unfinished: "
            f"{report.ingest_bytes_dropped:,} bytes from offset {report.ingest_rolled_back_from:,}"
        )
    if report.torn_bytes_at is not None:
        out.answer(
            f"  {verb} truncate a torn tail at {report.torn_bytes_at:,}: {report.torn_reason}"
        )
    if report.files_removed:
        out.answer(f"  {verb} remove commit-log files: {', '.join(report.files_removed)}")
    if report.cq_units_dropped:
        out.answer(f"  {verb} drop {report.cq_units_dropped:,} consume-queue units past the end")
    if report.index_files_dropped:
        out.answer(f"  {verb} rebuild index files: {', '.join(report.index_files_dropped)}")
    # (A rebuild's line above already counts them when recovery's replay was the rebuild.)
    if report.messages_redispatched and st.rebuild_report is None:
        out.answer(
            f"  {verb} re-dispatch {report.messages_redispatched:,} messages from offset "
            f"{report.redispatch_from:,} into consume queues and index"
        )
