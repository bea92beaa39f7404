"""``mqtier ingest``: append messages from JSON Lines, raw lines or files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from mqtier.cli._common import (
    JsonOut,
    StoreDir,
    emit_json,
    err_console,
    handle_errors,
    note,
    parse_size,
)
from mqtier.errors import InputFormatError
from mqtier.format import layout as L
from mqtier.ingest import ingest as run_ingest
from mqtier.inputs import FORMATS, Defaults
from mqtier.store.config import StoreConfig
from mqtier.store.store import Store, is_store_dir


@handle_errors
def ingest(
    inputs: Annotated[
        list[str], typer.Argument(help="Input files, or '-' for stdin.", show_default=False)
    ],
    store: StoreDir = Path("store"),
    topic: Annotated[
        str | None, typer.Option("--topic", "-t", help="Topic for lines without one.")
    ] = None,
    queue: Annotated[
        int | None,
        typer.Option(
            "--queue",
            "-q",
            min=0,
            help="Queue for lines without one (default: by key hash, else round robin).",
        ),
    ] = None,
    queues: Annotated[
        int | None,
        typer.Option("--queues", min=1, help="Create --topic with this many queues."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"Input format: {', '.join(FORMATS)}.")
    ] = "jsonl",
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip and count bad lines instead of failing.")
    ] = False,
    broker: Annotated[
        str | None,
        typer.Option("--broker", help="Broker name of a new store (default: host name)."),
    ] = None,
    commitlog_file_size: Annotated[
        str | None,
        typer.Option(
            "--commitlog-file-size", help="Commit-log file size of a new store (default 1G)."
        ),
    ] = None,
    max_message_size: Annotated[
        str | None,
        typer.Option("--max-message-size", help="Largest body of a new store (default 4M)."),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Append messages to a store, creating it if absent; durable before it returns.

    JSON Lines fields: topic, queue, body | body_b64, keys, tags, properties. Any bad line stops
    the run with its line number and rolls back what this run wrote (unless --skip-bad).

    Example: mqtier ingest --store ./store --topic orders --queues 8 orders.jsonl
    """
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    if queues and not topic:
        raise typer.BadParameter("--queues needs --topic")
    for name in inputs:
        if name != "-" and not os.path.exists(name):
            raise InputFormatError(name, 0, "no such file or directory")
    changes: dict[str, object] = {}
    if broker:
        changes["broker_name"] = broker
    if commitlog_file_size:
        changes["commitlog_file_bytes"] = parse_size(commitlog_file_size)
    if max_message_size:
        changes["max_message_bytes"] = parse_size(max_message_size)
    config = StoreConfig().with_changes(**changes) if changes else StoreConfig()
    total = sum(os.path.getsize(p) for p in inputs if p != "-" and os.path.isfile(p))
    # A failed first ingest must not leave a new, empty store (with its pre-written file) behind,
    # and must not touch what was in the directory before (a broker's config/, say).
    created_dir = not store.exists()
    # the outermost directory this command will create (the store's, or a missing parent's)
    made = store
    while created_dir and not made.parent.exists() and made.parent != made:
        made = made.parent
    created_store = not is_store_dir(store)
    existed = _paths_under(store) if created_store and not created_dir else set()
    rewritten = {p: p.read_bytes() for p in _store_written_files(store) if p in existed}
    try:
        with Store.open(store, create=True, config=config) as st:
            if topic and queues:
                st.create_topic(topic, queues, save=False)  # saved when the ingest succeeds
            show = not json_out and err_console.is_terminal
            progress = Progress(
                TextColumn("ingest"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[messages]} msgs"),
                console=err_console,
                transient=True,
                disable=not show,
            )
            with progress:
                task = progress.add_task("ingest", total=total or None, messages=0)

                def on_progress(messages: int, nbytes: int) -> None:
                    progress.update(task, completed=nbytes, messages=messages)

                summary = run_ingest(
                    st,
                    inputs,
                    fmt=fmt,
                    defaults=Defaults(topic, queue),
                    skip_bad=skip_bad,
                    on_progress=on_progress if show else None,
                )
    except BaseException:
        if created_dir:
            shutil.rmtree(made, ignore_errors=True)
        elif created_store:
            _remove_new_paths(store, existed)
            for path, data in rewritten.items():
                path.write_bytes(data)
        raise
    doc = summary.to_json()
    doc["store"] = str(store)
    if json_out:
        emit_json(doc)
        return
    rate = f", {summary.messages / summary.seconds:,.0f} msgs/s" if summary.seconds else ""
    note(
        f"ingested {summary.messages:,} messages ({summary.bytes:,} body bytes) into {store} "
        f"in {summary.seconds:.2f}s{rate}"
        + (f"; skipped {summary.bad_lines} bad lines" if summary.bad_lines else "")
    )
    for sample in summary.bad_samples:
        note(f"  skipped: {sample}")


def _store_written_files(root: Path) -> list[Path]:
    """Files a store open rewrites that a broker's directory may already hold."""
    config = root / L.DIR_CONFIG
    return [
        root / L.FILE_CHECKPOINT,
        root / L.FILE_ABORT,
        root / L.FILE_LOCK,
        config / L.FILE_TOPICS,
        config / (L.FILE_TOPICS + ".bak"),
    ]


_STORE_DIRS = {L.DIR_COMMITLOG, L.DIR_CONSUMEQUEUE, L.DIR_INDEX, L.DIR_CONFIG}


def _paths_under(root: Path) -> set[Path]:
    """What ``root`` holds where a store writes: its entries, and below those a store uses.

    Other directories (``--store`` may name any existing directory) are not walked: a store
    never writes into them, and they may be large.
    """
    paths: set[Path] = set()
    for entry in root.iterdir():
        paths.add(entry)
        if entry.name in _STORE_DIRS and entry.is_dir() and not entry.is_symlink():
            paths.update(Path(d) / n for d, dirs, files in os.walk(entry) for n in (*dirs, *files))
    return paths


def _remove_new_paths(root: Path, existed: set[Path]) -> None:
    """Delete what a failed first ingest added under ``root``, deepest first; nothing else."""
    for path in sorted(_paths_under(root) - existed, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
