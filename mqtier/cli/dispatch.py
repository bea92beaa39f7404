"""``mqtier dispatch``: tier a store's messages to a cold tier, exactly once per queue offset."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
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
from mqtier.cli._common import (
    ConfigPath,
    JsonOut,
    StoreDir,
    handle_errors,
    note,
    open_store_to_read,
    parse_duration,
    parse_size,
)
from mqtier.cli._output import Column, Listing, Output, counted, size_text
from mqtier.cli._progress import DispatchProgress
from mqtier.tier.dispatch import BatchPolicy, DispatchOptions, DispatchReport, run_dispatch

MAX_COUNT = 1 << 40  # messages or requests: far beyond any run, far inside 64 bits
MAX_CONCURRENCY = 256  # uploads in flight; more only exhausts sockets and memory
MAX_OBJECT_BYTES = 1 << 30  # 1G: an object is uploaded (and read back) whole
MIN_INTERVAL_S = 0.1  # --follow's pause: below this it only spins


@handle_errors
def dispatch(
    store: StoreDir = Path("store"),
    cold: ColdUrl = None,
    once: Annotated[bool, typer.Option("--once", help="One run, then exit (default).")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep tiering until SIGTERM/SIGINT, then exit.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Tier every pending message, ignoring thresholds.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be tiered; upload nothing.")
    ] = False,
    batch_count: Annotated[
        int,
        typer.Option(
            "--batch-count",
            metavar="N",
            min=1,
            max=MAX_COUNT,
            help="Tier a queue once it has this many pending.",
        ),
    ] = 4096,
    batch_bytes: Annotated[
        str, typer.Option("--batch-bytes", metavar="SIZE", help="... or this many pending bytes.")
    ] = "4M",
    batch_age: Annotated[
        str,
        typer.Option(
            "--batch-age", metavar="DURATION", help="... or its oldest pending message is this old."
        ),
    ] = "60s",
    max_bytes: Annotated[
        str | None,
        typer.Option("--max-bytes", metavar="SIZE", help="Stop a run after this many bytes."),
    ] = None,
    max_bytes_per_sec: Annotated[
        str | None,
        typer.Option(
            "--max-bytes-per-sec", metavar="SIZE", help="Cap the upload rate, e.g. 50M (bytes/s)."
        ),
    ] = None,
    max_requests: Annotated[
        int | None,
        typer.Option(
            "--max-requests",
            metavar="N",
            min=4,
            max=MAX_COUNT,
            help="Stop a run before it sends more requests (at least 4: load, PUT, commit).",
        ),
    ] = None,
    max_duration: Annotated[
        str | None,
        typer.Option(
            "--max-duration", metavar="DURATION", help="With --follow: stop after this long."
        ),
    ] = None,
    interval: Annotated[
        str | None,
        typer.Option(
            "--interval", metavar="DURATION", help="With --follow: pause between runs (5s)."
        ),
    ] = None,
    object_size: Annotated[
        str,
        typer.Option(
            "--object-size",
            metavar="SIZE",
            help="Target compressed bytes per uploaded object (at most 32 MiB of records).",
        ),
    ] = "8M",
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            metavar="N",
            min=1,
            max=MAX_CONCURRENCY,
            help=f"Parallel uploads (1 to {MAX_CONCURRENCY}).",
        ),
    ] = 4,
    broker: Broker = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Tier what is ready to the cold tier and commit it (cron-friendly; exit 0 when up to date).

    A queue is ready when its pending messages reach --batch-count, --batch-bytes or
    --batch-age, whichever comes first; --force tiers everything. The store may be in use by a
    writer meanwhile: the run tiers what was durable when it started.

    Example: mqtier dispatch --store ./store --to s3://bucket/prefix --once --json
    """
    cold = require_cold_url(cold, "dispatch")
    if once and follow:
        raise typer.BadParameter("--once and --follow exclude each other")
    if not follow and (max_duration or interval):
        raise typer.BadParameter("--max-duration and --interval need --follow")
    opts = DispatchOptions(
        policy=BatchPolicy(
            batch_count,
            parse_size(batch_bytes, "--batch-bytes"),
            parse_duration(batch_age, "--batch-age", minimum_s=0),
        ),
        force=force,
        dry_run=dry_run,
        object_bytes=parse_size(object_size, "--object-size", maximum=MAX_OBJECT_BYTES),
        upload_concurrency=concurrency,
        max_bytes=parse_size(max_bytes, "--max-bytes") if max_bytes else None,
        max_bytes_per_sec=(
            parse_size(max_bytes_per_sec, "--max-bytes-per-sec") if max_bytes_per_sec else None
        ),
        max_requests=max_requests,
    )
    # Parsed before the first run: a bad value must not surface after an upload.
    run_for = parse_duration(max_duration, "--max-duration") if max_duration else None
    pause = parse_duration(interval or "5s", "--interval", minimum_s=MIN_INTERVAL_S)
    # A fresh local directory is fine (the first run creates it); a missing bucket is not.
    cold_store, bill = open_cold(cold, storage_option, root="creatable")
    if not cold_store.atomic_create:
        note(
            f"warning: {cold_store.url} cannot create objects atomically; run only one "
            "dispatch job per prefix at a time"
        )
    stop = threading.Event()
    if follow:

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()  # the current run finishes and commits; then we exit

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    deadline = time.monotonic() + run_for if run_for is not None else None
    reports: list[DispatchReport] = []
    name: str | None = None
    while True:
        # Read-only: a writer may own the store. Reopened per run to see what it added since.
        with open_store_to_read(store) as st, DispatchProgress(json_out=json_out) as bar:
            name = name or broker_name(broker, st.config.broker_name)  # once: it may note
            hook = bar.update if bar.shown else None
            reports.append(run_dispatch(st, cold_store, opts, broker=name, on_progress=hook))
        if not follow or stop.is_set():
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        stop.wait(pause)
        if stop.is_set():
            break
    cold_store.close()
    _print(reports, bill.to_json(), json_out=json_out)
    report_bill(bill, json_out=json_out)


def _print(reports: list[DispatchReport], requests: dict[str, Any], *, json_out: bool) -> None:
    last = reports[-1]
    total_msgs = sum(r.messages for r in reports)
    total_raw = sum(r.raw_bytes for r in reports)
    total_stored = sum(r.stored_bytes for r in reports)
    if json_out:
        # One document for the whole command: counts are totals over every run (--follow
        # makes several); states (queues, waiting, up_to_date, committed_seq) are the last run's.
        doc = last.to_json()
        doc.update(
            runs=len(reports),
            committed_seq_before=reports[0].committed_seq_before,
            messages=total_msgs,
            raw_bytes=total_raw,
            stored_bytes=total_stored,
            queues_tiered=sum(r.queues_tiered for r in reports),
            objects=sum(r.objects for r in reports),
            commits=sum(r.commits for r in reports),
            garbage_deleted=sum(r.garbage_deleted for r in reports),
            warnings=[w for r in reports for w in r.warnings],
            seconds=round(sum(r.seconds for r in reports), 3),
            compression_ratio=round(total_raw / total_stored, 3) if total_stored else None,
            requests=requests,
        )
        Output("json").show(doc)
        return
    out = Output.choose(json_out=False)
    if total_msgs == 0 and not any(r.queues_pending for r in reports):
        waiting = sum(p.end - p.start for p in last.waiting)
        if waiting:
            out.answer(
                f"nothing ready: {waiting:,} messages in {len(last.waiting)} queues wait for a "
                "batch threshold (--force tiers them now)"
            )
        else:
            out.answer(f"already up to date (cold catalog at commit {last.committed_seq})")
        return
    if reports[0].plans and total_msgs == 0:
        # The plan is a dry run's answer: every queue, on stdout (a pipe gets plain rows).
        plans = reports[0].to_json()["queues"]  # the --json names, as every listing's
        columns = [
            Column("topic"),
            Column("queue", kind="int"),
            Column("from", kind="int", title="from offset"),
            Column("to", kind="int", title="to offset"),
            Column("messages", get=lambda q: q["to"] - q["from"], kind="int"),
            Column("bytes", kind="size"),
            Column("reason"),
        ]
        out.show({}, Listing(columns, plans), [f"dry run: {len(plans)} queues would be tiered"])
        return
    ratio = f", {total_raw / total_stored:.1f}x smaller" if total_stored else ""
    secs = sum(r.seconds for r in reports)
    out.answer(
        f"tiered {counted(total_msgs, 'message')} ({size_text(total_raw)}{ratio}) from "
        f"{counted(sum(r.queues_tiered for r in reports), 'queue')} in "
        f"{counted(sum(r.objects for r in reports), 'object')}, "
        f"{counted(sum(r.commits for r in reports), 'commit')}, {secs:.2f}s; "
        f"cold catalog at commit {last.committed_seq}"
    )
