"""``mqtier ingest``: append messages from JSON Lines, raw lines or files."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Annotated, Self

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from mqtier.cli._common import (
    ConfigPath,
    JsonOut,
    StoreDir,
    _report,
    err_console,
    handle_errors,
    note,
    parse_size,
)
from mqtier.cli._output import Output
from mqtier.errors import NotAStoreError, ReadOnlyStoreError
from mqtier.format import layout as L
from mqtier.ingest import IngestSummary, checkpoint_files
from mqtier.ingest import ingest as run_ingest
from mqtier.inputs import FORMATS, Defaults, files_in
from mqtier.store.config import StoreConfig
from mqtier.store.store import Store, is_store_dir
from mqtier.store.topics import MAX_QUEUES


@handle_errors
def ingest(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE...", help="Input files, or '-' for stdin.", show_default=False
        ),
    ],
    store: StoreDir = Path("store"),
    topic: Annotated[
        str | None,
        typer.Option("--topic", "-t", metavar="TOPIC", help="Topic for lines without one."),
    ] = None,
    queue: Annotated[
        int | None,
        typer.Option(
            "--queue",
            "-q",
            metavar="N",
            min=0,
            max=MAX_QUEUES - 1,
            help=f"Queue for lines without one, 0 to {MAX_QUEUES - 1} (default: by key hash, "
            "else round robin).",
        ),
    ] = None,
    queues: Annotated[
        int | None,
        typer.Option(
            "--queues",
            metavar="N",
            min=1,
            max=MAX_QUEUES,
            help=f"Create --topic with this many queues (at most {MAX_QUEUES}).",
        ),
    ] = None,
    grow_queues: Annotated[
        bool,
        typer.Option(
            "--grow-queues", help="Widen a topic to the queue a line names (else an error)."
        ),
    ] = False,
    create: Annotated[
        bool,
        typer.Option(
            "--create", help="Make a store in a directory that holds other files (else refused)."
        ),
    ] = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", metavar="FORMAT", help=f"Input format: {', '.join(FORMATS)}."
        ),
    ] = "jsonl",
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip and count bad lines instead of failing.")
    ] = False,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker", metavar="NAME", help="Broker name of a new store (default: host name)."
        ),
    ] = None,
    commitlog_file_size: Annotated[
        str | None,
        typer.Option(
            "--commitlog-file-size",
            metavar="SIZE",
            help="Commit-log file size of a new store (default 1G).",
        ),
    ] = None,
    max_message_size: Annotated[
        str | None,
        typer.Option(
            "--max-message-size", metavar="SIZE", help="Largest body of a new store (default 4M)."
        ),
    ] = None,
    config_file: ConfigPath = None,  # its callback sets _cold.config_path
    json_out: JsonOut = False,
) -> None:
    """Append messages to a store, creating it if absent; durable before it returns.

    JSON Lines fields: topic, queue, body | body_b64, keys, tags, properties. Any bad line stops
    the run with its line number and rolls back what this run wrote (unless --skip-bad); so
    do SIGINT, SIGTERM and SIGHUP (exit 128 + the signal). A topic has at most 1024 queues.

    Example: mqtier ingest --store ./store --topic orders --queues 8 orders.jsonl
    """
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    if queues and not topic:
        raise typer.BadParameter("--queues needs --topic")
    for name in inputs:
        if name != "-" and not os.path.exists(name):
            # Before a store is made; an operating-system error (exit 1), not malformed input.
            raise FileNotFoundError(errno.ENOENT, "no such input file", name)
    changes: dict[str, object] = {}
    if broker:
        changes["broker_name"] = broker
    if commitlog_file_size:
        changes["commitlog_file_bytes"] = parse_size(commitlog_file_size, "--commitlog-file-size")
    if max_message_size:
        changes["max_message_bytes"] = parse_size(max_message_size, "--max-message-size")
    config = StoreConfig().with_changes(**changes) if changes else StoreConfig()
    total = _input_size(inputs)
    # A failed first ingest must not leave a new, empty store (with its pre-written file) behind,
    # and must not touch what was in the directory before (a broker's config/, say).
    created_dir = not store.exists()
    # the outermost directory this command will create (the store's, or a missing parent's)
    made = store
    while created_dir and not made.parent.exists() and made.parent != made:
        made = made.parent
    created_store = not is_store_dir(store)
    if created_store and not created_dir:
        _check_may_create_in(store, create)
    _check_writable(store)
    existed = _paths_under(store) if created_store and not created_dir else set()
    rewritten = {p: p.read_bytes() for p in _store_written_files(store) if p in existed}
    guard = _SignalGuard()
    try:
        with guard, _garbage_collected_rarely():
            try:
                summary = _run(
                    store,
                    config,
                    guard,
                    inputs,
                    fmt=fmt,
                    defaults=Defaults(topic, queue),
                    queues=queues,
                    skip_bad=skip_bad,
                    grow_queues=grow_queues,
                    show=not json_out and err_console.is_terminal,
                    total=total,
                )
            except BaseException as exc:
                if created_dir:
                    shutil.rmtree(made, ignore_errors=True)
                elif created_store:
                    _remove_new_paths(store, existed)
                    for path, data in rewritten.items():
                        path.write_bytes(data)
                if created_store:
                    # Still one error line (handle_errors adds notes to it), and it says the
                    # new store is gone, not kept empty.
                    exc.add_note(
                        _what_is_left(
                            store, made, created_dir=created_dir, created_store=created_store
                        )
                    )
                raise
    except _Interrupted as exc:
        name = signal.Signals(exc.signum).name
        _report(
            json_out,
            "Interrupted",
            f"interrupted by {name}: the ingest was rolled back; "
            + _what_is_left(store, made, created_dir=created_dir, created_store=created_store),
            128 + exc.signum,
        )
        raise typer.Exit(128 + exc.signum) from None
    if guard.received is not None:  # it came while the run was made final: too late to undo
        name = signal.Signals(guard.received).name
        note(f"{name} came after every message was durable; the ingest completed")
    doc = summary.to_json()
    doc["store"] = str(store)
    out = Output.choose(json_out=json_out)
    rate = f", {summary.messages / summary.seconds:,.0f} msgs/s" if summary.seconds else ""
    # What was ingested is the command's answer: stdout; the skipped lines' samples: stderr.
    out.show(
        doc,
        summary=[
            f"ingested {summary.messages:,} messages ({summary.bytes:,} body bytes) into {store} "
            f"in {summary.seconds:.2f}s{rate}"
            + (f"; skipped {summary.bad_lines} bad lines" if summary.bad_lines else "")
        ],
    )
    if out.json:
        return
    for sample in summary.bad_samples:
        note(f"  skipped: {sample}")


def _run(
    store: Path,
    config: StoreConfig,
    guard: _SignalGuard,
    inputs: list[str],
    *,
    fmt: str,
    defaults: Defaults,
    queues: int | None,
    skip_bad: bool,
    grow_queues: bool,
    show: bool,
    total: int,
) -> IngestSummary:
    """Open the store and ingest; anything that stops the run before it is final undoes it."""
    with _open_for_ingest(store, config) as st:
        start = st.commitlog.durable_end
        saved = checkpoint_files(st)
        try:
            guard.arm()  # a signal from now on rolls back (one during the open does so now)
            if defaults.topic and queues:
                st.create_topic(defaults.topic, queues, save=False)  # saved if the run succeeds
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

                return run_ingest(
                    st,
                    inputs,
                    fmt=fmt,
                    defaults=defaults,
                    skip_bad=skip_bad,
                    grow_queues=grow_queues,
                    on_progress=on_progress if show else None,
                    before_commit=guard.disarm,
                    before_rollback=guard.hold,
                )
        except BaseException:
            if not guard.committing:
                # Stopped before the ingest began (or it rolled back already: then a no-op).
                # Closing normally would save the topic table --queues changed.
                guard.hold()
                st.rollback_to(start, restore=saved)
            raise


@contextlib.contextmanager
def _garbage_collected_rarely() -> Iterator[None]:
    """An ingest makes a few tuples and lists per message and almost never a cycle: with the
    collector's default (a pass every 700 new containers, and now and then one over every
    object the imports made) it spends a few percent of its time finding nothing."""
    before = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _what_is_left(store: Path, made: Path, *, created_dir: bool, created_store: bool) -> str:
    """What a rolled-back ingest left, said: a store this run created is gone, not kept empty."""
    if created_dir:
        above = f" (and {made}, made for it)" if made != store else ""
        return f"removed the store {store} this run created{above}"
    if created_store:
        return f"removed the store files this run created in {store}; what was there is kept"
    return f"{store} holds what it held before the run"


def _input_size(inputs: list[str]) -> int:
    """Bytes the inputs hold (a directory's files too), what the progress bar fills up to;
    0 when one is stdin or a pipe, whose size is unknown."""
    if any(name == "-" or not os.path.exists(name) for name in inputs):
        return 0
    try:
        return sum(p.stat().st_size for name in inputs for p in files_in(Path(name)))
    except OSError:
        return 0


def _open_for_ingest(store: Path, config: StoreConfig) -> Store:
    """Store.open for writing, with a read-only file system named as such (exit 12)."""
    try:
        return Store.open(store, create=True, config=config)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            where = exc.filename or store
            raise ReadOnlyStoreError(
                f"{store}: cannot write {where} ({exc.strerror}); ingest needs a writable store"
            ) from None
        raise


class _Interrupted(BaseException):
    """A signal stopped the ingest. A BaseException, so that no ``except Exception`` on the
    way out swallows it before the rollback."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """SIGINT, SIGTERM and SIGHUP roll an ingest back, then exit 128 + the signal.

    Without this, SIGTERM and SIGHUP kill the process where it stands: the run's records stay
    (``abort`` too), and the next open keeps them. The signal becomes an exception only while
    the run may still be undone (:meth:`arm` to :meth:`disarm`); while the store opens, while
    the run is made final and while a rollback runs, it waits (a second one is ignored).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self.committing = False
        self._armed = False
        self._raised = False
        self._saved: dict[int, object] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():  # signal.signal needs it
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # under nohup, say: an ignored hangup must not stop the run
                self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._armed and not self._raised:
            self._raised = True
            raise _Interrupted(self.received)

    def arm(self) -> None:
        # armed first, then the check: a signal in between raises from the handler itself
        self._armed = True
        if self.received is not None and not self._raised:
            self._raised = True
            raise _Interrupted(self.received)

    def hold(self) -> None:
        """A rollback begins (after a failure, say a full disk): a signal now must wait, or
        it would stop the rollback half-way and leave the fence and ``abort`` behind."""
        self._armed = False

    def disarm(self) -> None:
        """Every message is durable and the run is about to be made final: no rollback now."""
        self._armed = False
        self.committing = True


_STORE_ENTRIES = {
    L.DIR_COMMITLOG,
    L.DIR_CONSUMEQUEUE,
    L.DIR_CONSUMEQUEUE_EXT,
    L.DIR_INDEX,
    L.DIR_CONFIG,
    L.FILE_CHECKPOINT,
    L.FILE_ABORT,
    L.FILE_LOCK,
    L.FILE_DISPATCH_CHECKPOINT,
    L.FILE_INGEST_FENCE,
    # a broker's other store entries (docs: rocketmq-formats.md, store root layout)
    "batchconsumequeue",
    "timerlog",
    "timerwheel",
    "tiered_index_file",
    "lost+found",  # an ext4 file system's root, empty otherwise
}


def _check_may_create_in(store: Path, create: bool) -> None:
    """Refuse to make a store inside a directory of someone's files unless told to.

    ``--store ~/Documents`` by mistake would otherwise scatter a store's directories among
    them. An empty directory, or one holding only what a broker's store holds (its config/
    and checkpoint before the first message, say), is fine.
    """
    if not store.is_dir():
        raise NotAStoreError(f"{store}: not a directory")
    if create:
        return
    foreign = sorted(
        e.name for e in store.iterdir() if e.name not in _STORE_ENTRIES and e.suffix != ".tmp"
    )
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise NotAStoreError(
            f"{store}: not a store, and it holds other files ({shown}); "
            "give --create to make a store in it anyway"
        )


def _check_writable(store: Path) -> None:
    """A store directory (or the directory it would be made in) that cannot be written is a
    read-only store (exit 12), said before anything is opened."""
    here = store
    while not here.exists() and here.parent != here:
        here = here.parent
    if not here.is_dir():
        return  # a file where a directory should be: the open names it
    if os.statvfs(here).f_flag & os.ST_RDONLY:
        reason = "read-only file system"
    elif not os.access(here, os.W_OK) or not here.stat().st_mode & 0o222:
        # no write bit counts even for root, as for Store.open: the owner meant it
        reason = "no write permission"
    else:
        return
    raise ReadOnlyStoreError(
        f"{store}: cannot write {here} ({reason}); ingest needs a writable store"
    )


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
