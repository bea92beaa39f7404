"""``mqtier read``: messages of one queue by offset, or of every queue of a topic merged by
store time, through the consume queues; ``--follow`` keeps reading as messages arrive."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import select
import signal
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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
    cold_url,
    open_cold,
    report_bill,
)
from mqtier.cli._common import (
    ConfigPath,
    JsonOut,
    handle_errors,
    note,
    open_store_to_read,
    parse_duration,
    parse_time,
)
from mqtier.cli._messages import B64, Full, MessageTemplate, Template, write_messages
from mqtier.cli._output import Output
from mqtier.errors import ColdStoreError, ColdTimeoutError, ConfigError
from mqtier.format.message import MessageRecord
from mqtier.store.reads import QueueOffsets
from mqtier.store.store import Store
from mqtier.store.topics import MAX_QUEUES
from mqtier.tier.dispatch import check_store_history
from mqtier.tier.follow import follow as follow_store
from mqtier.tier.reader import ColdReader
from mqtier.tier.tiered import (
    READ_BATCH,
    ReadPolicy,
    batched,
    iter_merged,
    iter_tiered,
    start_offset,
    topic_queues,
)

log = logging.getLogger(__name__)

MAX_QUEUE_ID = MAX_QUEUES - 1
MAX_OFFSET = 2**63 - 1  # a Java long, as RocketMQ stores queue offsets
MAX_COUNT = 1 << 40
DEFAULT_COUNT = 32

Policy = Annotated[
    ReadPolicy | None,
    typer.Option(
        "--policy",
        metavar="POLICY",
        help="Which tier serves the read: disable, not_in_disk, not_in_mem or force (default "
        "not_in_disk with --cold, else disable).",
        case_sensitive=False,
    ),
]


@handle_errors
def read(
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            "-s",
            metavar="DIR",
            envvar="MQTIER_STORE",
            help="Store directory (or $MQTIER_STORE).",
        ),
    ] = None,
    topic: Annotated[
        str, typer.Option("--topic", "-t", metavar="TOPIC", help="Topic to read.")
    ] = ...,  # type: ignore[assignment]
    queue: Annotated[
        int | None,
        typer.Option(
            "--queue",
            "-q",
            metavar="N",
            min=0,
            max=MAX_QUEUE_ID,
            help=f"Queue id (0 to {MAX_QUEUE_ID}); default: every queue of the topic, "
            "merged by store time.",
        ),
    ] = None,
    from_offset: Annotated[
        int | None,
        typer.Option(
            "--from",
            metavar="OFFSET",
            min=0,
            max=MAX_OFFSET,
            help="First queue offset (with --queue; default: the queue's first).",
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            "-n",
            metavar="N",
            min=0,
            max=MAX_COUNT,
            help=f"Most messages to return (default {DEFAULT_COUNT}; no limit with --follow).",
        ),
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            "--from-time",
            metavar="TIME",
            help="Start each queue at its first message stored at or after TIME, in either "
            "tier (ms, ISO 8601, 'now' or '-1h').",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep printing new messages as they become durable, until interrupted.",
        ),
    ] = False,
    poll: Annotated[
        str,
        typer.Option(
            "--poll",
            metavar="DURATION",
            help="With --follow, how long to wait between looks for new messages.",
        ),
    ] = "500ms",
    tags: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Only messages with this tag (repeatable)."),
    ] = None,
    b64: B64 = False,
    full: Full = False,
    template: Template = None,
    cold: ColdUrl = None,
    policy: Policy = None,
    broker: Broker = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Read messages of a topic's queues, or of one queue from an offset, from either tier.

    Without --queue, every queue of the topic is read, merged by store time. --policy decides
    which tier serves which offsets when a cold tier is given.

    Example: mqtier read --store ./store --topic orders --queue 3 --from 100 --count 10 --json

    Example: mqtier read --store ./store --topic orders --from-time -1h --follow

    Example: mqtier read --cold s3://bucket/prefix --broker broker-a --topic orders --queue 3
    """
    out = Output.choose(json_out=json_out, full=full)
    out.live = follow  # a table that never ends prints each row as it comes
    fmt = MessageTemplate(template) if template is not None else None
    cold = cold_url(cold)
    if policy is not None and policy is not ReadPolicy.DISABLE and cold is None:
        raise typer.BadParameter("--policy needs a cold tier (--cold, $MQTIER_COLD or config)")
    req = _Request.check(
        topic, queue, from_offset, from_time, count, follow, poll, tags, policy, store, cold
    )
    if cold is None or policy is ReadPolicy.DISABLE:
        with open_store_to_read(store or Path("store")) as st:
            batches = _batches(req, st, None, store or Path("store"))
            with _follow_ends_cleanly(follow):
                write_messages(out, batches, b64=b64, template=fmt)
        return
    # The root is checked below, where an unreachable tier (not a missing one) falls back to hot.
    cold_store, bill = open_cold(cold, storage_option, root="none")
    with contextlib.ExitStack() as stack:
        hot: Store | None = None
        if store is not None:
            hot = stack.enter_context(open_store_to_read(store))
        name = broker_name(broker, hot.config.broker_name if hot is not None else None)
        if not name:
            raise ConfigError("reading the cold tier without --store needs --broker")
        try:
            cold_store.check_root(may_create=False)  # missing: NotFoundError, exit 3
            reader: ColdReader | None = stack.enter_context(ColdReader(cold_store, name))
        except ColdStoreError as exc:
            # --timeout bounds the whole command (exit 14): a hot read after it ran out would
            # pass the limit and hide it; an unreachable tier is what falls back to hot.
            if hot is None or isinstance(exc, ColdTimeoutError):
                raise
            log.warning("cold tier unavailable, reading the hot store only: %s", exc)
            reader = None
        if hot is not None and reader is not None:
            # Another store's cold messages must not pass for this one's (exit 15).
            check_store_history(hot, reader.state, _queues_read(hot, topic, queue))
        # JSON, template and plain lines print as they come, in bounded memory.
        batches = _batches(req, hot, reader, store)
        with _follow_ends_cleanly(follow):
            write_messages(out, batches, b64=b64, template=fmt)
    report_bill(bill, json_out=json_out, json_lines=True)


def _queues_read(hot: Store, topic: str, queue: int | None) -> list[QueueOffsets]:
    """The store's queues a read of ``topic`` (one ``queue``, or all with None) goes through."""
    return [qo for qo in hot.offsets() if qo.topic == topic and queue in (None, qo.queue_id)]


# -- which messages: one queue, every queue of the topic, and --follow ------------------------


@dataclass(frozen=True)
class _Request:
    """The read's options, checked against each other before anything is opened."""

    topic: str
    queue: int | None
    from_offset: int | None
    from_ms: int | None
    count: int | None  # None: no limit (--follow without --count)
    follow: bool
    poll_s: float
    tags: list[str] | None
    policy: ReadPolicy

    @classmethod
    def check(
        cls,
        topic: str,
        queue: int | None,
        from_offset: int | None,
        from_time: str | None,
        count: int | None,
        follow: bool,
        poll: str,
        tags: list[str] | None,
        policy: ReadPolicy | None,
        store: Path | None,
        cold: str | None,
    ) -> _Request:
        if from_offset is not None and from_time is not None:
            raise ConfigError("--from and --from-time both say where to start: give one")
        if from_offset is not None and queue is None:
            # Offsets are per queue: one offset for every queue of a topic means nothing.
            raise ConfigError(
                f"--from {from_offset} needs --queue: queue offsets differ from queue to queue",
                hint=f"mqtier read --topic {topic} --from-time TIME",
            )
        if follow and cold is not None and policy is not ReadPolicy.DISABLE:
            if store is None:
                raise ConfigError(
                    "--follow reads new messages from the hot store: give --store",
                    hint=f"mqtier read --store DIR --topic {topic} --follow",
                )
            if policy is ReadPolicy.FORCE:
                raise ConfigError(
                    "--follow reads new messages from the hot store; --policy force reads "
                    "the cold tier alone"
                )
        poll_s = parse_duration(poll, "--poll", minimum_s=0.01, maximum_s=3600)
        return cls(
            topic,
            queue,
            from_offset,
            parse_time(from_time, "--from-time") if from_time is not None else None,
            count if count is not None or follow else DEFAULT_COUNT,
            follow,
            poll_s,
            tags or None,
            policy or (ReadPolicy.DISABLE if cold is None else ReadPolicy.NOT_IN_DISK),
        )


def _batches(
    req: _Request, hot: Store | None, reader: ColdReader | None, path: Path | None
) -> Iterator[list[MessageRecord]]:
    """The batches of messages the read prints. Where each queue starts is found here, before
    anything is printed, so a missing topic or queue fails cleanly (exit 3)."""
    if req.policy is ReadPolicy.DISABLE:
        reader = None
    ids = (
        [req.queue]
        if req.queue is not None
        else topic_queues(hot, reader, req.topic, policy=req.policy)
    )
    starts = _starts(req, hot, reader, ids)
    if req.follow:
        assert hot is not None  # checked in _Request.check
        assert path is not None
        batches = follow_store(
            hot,
            reader,
            req.topic,
            starts,
            reopen=lambda: Store.open(path),
            queue=req.queue,
            policy=req.policy,
            tags=req.tags,
            poll_s=req.poll_s,
            idle=_idle,
        )
        return batches if req.count is None else _at_most(batches, req.count)
    assert req.count is not None
    if req.queue is not None:
        first = starts[req.queue]
        if reader is None:
            assert hot is not None
            return iter([hot.read(req.topic, req.queue, first, req.count, tags=req.tags)])
        return iter_tiered(
            hot, reader, req.topic, req.queue, first, req.count, policy=req.policy, tags=req.tags
        )
    ranges: dict[int, tuple[int, int | None]] = {q: (starts[q], None) for q in ids}
    merged = iter_merged(hot, reader, req.topic, ranges, policy=req.policy, tags=req.tags)
    return batched(itertools.islice(merged, req.count), READ_BATCH)


def _starts(
    req: _Request, hot: Store | None, reader: ColdReader | None, ids: list[int]
) -> dict[int, int]:
    """Where the read of each queue starts: --from, the first message at or after
    --from-time, or the queue's first message."""
    if req.from_ms is not None:
        return {
            q: start_offset(hot, reader, req.topic, q, policy=req.policy, from_ms=req.from_ms)
            for q in ids
        }
    starts = dict.fromkeys(ids, req.from_offset or 0)
    if reader is not None or hot is None:
        return starts  # the cold tier serves what the hot store cleaned
    later = []
    for q in ids:
        held = hot.first_readable(req.topic, q)  # no such queue: exit 3
        if starts[q] < held:
            later.append(f"{req.topic}/{q} starts at offset {held:,}")
            starts[q] = held
    if later:
        # As documented: a read from below a queue's minimum starts at it, and says so
        # (after `clean`, offset 0 is long gone and an empty answer would mislead).
        more = f" and {len(later) - 3} more queues start later" if len(later) > 3 else ""
        note(
            f"{', '.join(later[:3])}{more} in this store (older messages were cleaned; read "
            "them with --cold); reading from there"
        )
    return starts


def _at_most(batches: Iterator[list[MessageRecord]], count: int) -> Iterator[list[MessageRecord]]:
    """The first ``count`` messages of ``batches``; stops as soon as it has them (a follower
    would otherwise wait for one more batch that is never printed)."""
    left = count
    while left > 0:
        msgs = next(batches, None)
        if msgs is None:
            return
        yield msgs[:left]
        left -= len(msgs)


def _idle() -> None:
    """Before a follower waits: what it printed reaches the reader now, and a reader that went
    away (``| head -3``) ends the command at once, not at the next message."""
    sys.stdout.flush()
    if _stdout_reader_gone():
        raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (as GNU ``tail -f`` checks)."""
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
    except (AttributeError, OSError, ValueError):
        return False  # not a real file (a test's capture, a closed stream)
    p = select.poll()
    p.register(fd, 0)  # POLLERR and POLLHUP are always reported; a closed reader is POLLERR
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in p.poll(0))


@contextlib.contextmanager
def _follow_ends_cleanly(follow: bool) -> Iterator[None]:
    """With --follow, Ctrl-C (SIGINT) and SIGTERM are how a reader stops it: exit 0, no
    traceback, with what was printed flushed."""
    if not follow:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt:
        sys.stdout.flush()
        raise typer.Exit(0) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
