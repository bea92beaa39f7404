"""``mqtier query key|id|uniq``: find messages by business key, offsetMsgId or UNIQ_KEY.

Each query asks the hot store (``--store``), the cold tier's index (``--cold``), or both,
and prints the answers merged, without duplicates, newest first.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from mqtier.backend.base import ColdStore
from mqtier.backend.retrying import is_retryable
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
    parse_time,
)
from mqtier.cli._json import versioned
from mqtier.cli._messages import (
    B64,
    MESSAGE_COLUMNS,
    Full,
    MessageTemplate,
    Template,
    write_messages,
)
from mqtier.cli._output import Column, Listing, Output
from mqtier.errors import (
    ColdStoreError,
    ColdTimeoutError,
    ConfigError,
    MissingCommittedObjectError,
    MqtierError,
    NotFoundError,
)
from mqtier.format import layout as L
from mqtier.format.message import parse_msg_id
from mqtier.index.cache import ImmutableCache
from mqtier.index.lookup import ColdIndex
from mqtier.index.query import Hit, QueryResult, open_cold_index
from mqtier.index.query import query_key as find_key
from mqtier.index.query import query_msg_id as find_msg_id
from mqtier.index.query import query_uniq as find_uniq
from mqtier.store.reads import MAX_TIME_MS
from mqtier.store.store import Store
from mqtier.tier.dispatch import check_store_history

QueryStore = Annotated[
    Path | None,
    typer.Option(
        "--store",
        "-s",
        metavar="DIR",
        envvar="MQTIER_STORE",
        help="Store directory (or $MQTIER_STORE; default ./store without --cold).",
    ),
]
Explain = Annotated[
    bool,
    typer.Option(
        "--explain",
        help="Also say, on stderr, where each hit was read (tier, object, bytes) and what the "
        "query cost (index objects, requests, bytes, time per step).",
    ),
]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Do not use the local cache of immutable cold objects ($MQTIER_CACHE_DIR, else "
        "~/.cache/mqtier).",
    ),
]
MaxResults = Annotated[
    int, typer.Option("--max", metavar="N", min=1, max=1 << 20, help="Most messages to return.")
]


@dataclass(frozen=True)
class _Tiers:
    store: Path | None
    cold: str | None
    broker: str | None
    storage_option: list[str] | None
    no_cache: bool

    def where(self) -> str:
        store = self.store if self.store is not None or self.cold is not None else Path("store")
        parts = [str(store)] if store is not None else []
        if self.cold is not None:
            parts.append(f"the cold tier of broker {self.broker or '?'}")
        return " or ".join(parts)


@contextlib.contextmanager
def _open(tiers: _Tiers, json_out: bool) -> Iterator[tuple[Store | None, ColdIndex | None]]:
    """The hot store and the cold index the options name; the request bill at the end."""
    if tiers.cold is None:
        with open_store_to_read(tiers.store or Path("store")) as st:
            yield st, None
        return
    # The root (bucket, directory) is checked only when something turns out missing: a
    # found catalog proves it exists, and the HEAD would be a 7th request on a warm-cache
    # hit, past the 6 a query may cost in all (an empty tier, or an object gone, asks it
    # then, so a wrong URL or a deleted bucket still says so, exit 3).
    cold_store, bill = open_cold(tiers.cold, tiers.storage_option, root="none")
    try:
        with contextlib.ExitStack() as stack:
            hot = stack.enter_context(open_store_to_read(tiers.store)) if tiers.store else None
            store_broker = hot.config.broker_name if hot is not None else None
            name = broker_name(tiers.broker, store_broker)
            if not name:
                raise ConfigError("querying the cold tier without --store needs --broker")
            cache = None if tiers.no_cache else ImmutableCache(cold_store.url)
            index = _load_index(cold_store, name, cache)
            stack.callback(index.close)
            if not index.state.queues and not index.state.seq:
                cold_store.check_root(may_create=False)
                raise NotFoundError(
                    f"broker {name!r} has nothing in the cold tier {cold_store.url}"
                )
            if hot is not None:
                check_store_history(hot, index.state)  # another store's messages: exit 15
            try:
                yield hot, index
            except MissingCommittedObjectError:
                cold_store.check_root(may_create=False)  # the whole tier gone, not one object
                raise
    except MqtierError:
        report_bill(bill, json_out=json_out, json_lines=True)  # a failed query costs too
        raise
    report_bill(bill, json_out=json_out, json_lines=True)


def _load_index(cold: ColdStore, broker: str, cache: ImmutableCache | None) -> ColdIndex:
    """The broker's cold index; a first request refused outright is explained by the root
    check, which words a bad storage option as exit 2 (the first request without it fails
    deep in the client library as ``AttributeError: ...``, exit 14)."""
    try:
        return open_cold_index(cold, broker, cache=cache)
    except ColdStoreError as exc:
        cause = exc.__cause__
        if isinstance(exc, ColdTimeoutError) or cause is None or is_retryable(cause):
            raise  # the tier is slow or unreachable: a HEAD would only wait again
        cold.check_root(may_create=False)
        raise


def _known_topic(topic: str, hot: Store | None, index: ColdIndex | None) -> None:
    in_hot = hot is not None and any(qo.topic == topic for qo in hot.offsets())
    in_cold = index is not None and any(t == topic for t, _ in index.state.queues)
    if not in_hot and not in_cold:
        where = " nor ".join(
            w
            for w, there in (("the store", hot is not None), ("the cold tier", index is not None))
            if there
        )
        raise NotFoundError(f"topic {topic!r} is in neither {where}" if " nor " in where else
                            f"topic {topic!r} is not in {where}")  # fmt: skip


def _show(
    result: QueryResult,
    *,
    b64: bool,
    full: bool,
    template: MessageTemplate | None,
    json_out: bool,
    explain: bool,
    with_tier: bool,
) -> None:
    _warn_unindexed(result)
    out = Output.choose(json_out=json_out, full=full)
    if json_out and with_tier and template is None:
        _json_lines(result.hits, b64=b64, explain=explain)
    elif with_tier and template is None:
        # which tier answered, first: with both tiers given, that is what an operator asks
        docs = ({"tier": h.tier, **h.message.to_json(b64=b64)} for h in result.hits)
        out.rows(Listing((Column("tier"), *MESSAGE_COLUMNS), docs))
    else:
        write_messages(out, [result.messages], b64=b64, template=template)
    if explain:
        _explain(result, json_out=json_out)


def _warn_unindexed(result: QueryResult) -> None:
    """Say what the cold index could not search: never a silent "not found"."""
    for t, q, a, b in result.unindexed:
        note(
            f"warning: {t}/{q} offsets {a}..{b - 1} were tiered before the cold tier had an "
            "index and are not searched; `mqtier compact` indexes them"
        )


def _json_lines(hits: list[Hit], *, b64: bool, explain: bool) -> None:
    """Messages as ``read --json`` writes them, plus the tier each came from."""
    sys.stdout.flush()
    for h in hits:
        doc: dict[str, Any] = h.message.to_json(b64=b64)
        where = h.where()
        doc["tier"] = where["tier"]
        if explain:
            doc.update({k: v for k, v in where.items() if k != "tier"})
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))
    sys.stdout.buffer.flush()


def _explain(result: QueryResult, *, json_out: bool) -> None:
    doc = result.explain.to_json()
    if json_out:
        line = versioned({"explain": doc})
        sys.stderr.write(orjson.dumps(line).decode() + "\n")
        return
    for i, h in enumerate(result.hits, 1):
        w, m = h.where(), h.message
        span = f" bytes [{w['bytes'][0]}, {w['bytes'][1]})" if "bytes" in w else ""
        obj = f" {w['object']}" if "object" in w else ""
        note(f"hit {i} ({m.topic}/{m.queue_id}@{m.queue_offset}): {w['tier']}{obj}{span}")
    note(
        f"index objects consulted: {doc['index_objects']}, slots read: {doc['slots_read']}, "
        f"candidates: {doc['candidates']}"
    )
    for s in doc["steps"]:
        note(f"{s['step']}: {s['requests']} requests, {s['bytes']} bytes, {s['seconds']:.3f} s")


def _run(
    tiers: _Tiers,
    ask: Callable[[Store | None, ColdIndex | None], QueryResult],
    nothing: Callable[[Store | None], NotFoundError],
    *,
    b64: bool,
    full: bool,
    template: MessageTemplate | None,
    json_out: bool,
    explain: bool,
    topic: str | None = None,
) -> None:
    with _open(tiers, json_out) as (hot, index):
        if topic is not None:
            _known_topic(topic, hot, index)
        result = ask(hot, index)
        if not result.hits:
            _warn_unindexed(result)
            if explain:
                _explain(result, json_out=json_out)
            raise nothing(hot)
        _show(
            result,
            b64=b64,
            full=full,
            template=template,
            json_out=json_out,
            explain=explain,
            with_tier=index is not None,
        )


@handle_errors
def query_key(
    key: Annotated[str, typer.Argument(metavar="KEY", help="Business key (one token of KEYS).")],
    store: QueryStore = None,
    topic: Annotated[
        str, typer.Option("--topic", "-t", metavar="TOPIC", help="Topic to search.")
    ] = ...,  # type: ignore[assignment]
    begin: Annotated[
        str | None,
        typer.Option("--begin", metavar="TIME", help="Stored at or after (ms, ISO 8601, -1h)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", metavar="TIME", help="Stored at or before.")
    ] = None,
    max_results: MaxResults = 64,
    b64: B64 = False,
    full: Full = False,
    template: Template = None,
    explain: Explain = False,
    cold: ColdUrl = None,
    broker: Broker = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    no_cache: NoCache = False,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Find messages by key, newest first, in the hot store, the cold tier's index, or both.

    Matches are found by hash and then checked against the message's real KEYS (or
    UNIQ_KEY). Exit code 3 when nothing matches.

    Example: mqtier query key ORDER-42 --store ./store --topic orders --json

    Example: mqtier query key ORDER-42 --topic orders --cold s3://bucket/mq --broker broker-a
    """
    begin_ms = parse_time(begin, "--begin") if begin else 0
    end_ms = parse_time(end, "--end") if end else MAX_TIME_MS
    fmt = MessageTemplate(template) if template is not None else None  # a typo fails first
    _check_key(key, "key")  # before any request: it could match nothing
    tiers = _Tiers(store, cold_url(cold), broker, storage_option, no_cache)
    _run(
        tiers,
        lambda hot, index: find_key(
            topic=topic,
            key=key,
            store=hot,
            index=index,
            begin_ms=begin_ms,
            end_ms=end_ms,
            max_results=max_results,
        ),
        lambda _hot: NotFoundError(
            f"no message with key {_shown(key)} in topic {topic!r} of {tiers.where()}"
        ),
        b64=b64,
        full=full,
        template=fmt,
        json_out=json_out,
        explain=explain,
        topic=topic,
    )


@handle_errors
def query_id(
    msg_id: Annotated[
        str, typer.Argument(metavar="MSG_ID", help="offsetMsgId: 32 (IPv4) or 56 (IPv6) hex chars.")
    ],
    store: QueryStore = None,
    b64: B64 = False,
    full: Full = False,
    template: Template = None,
    explain: Explain = False,
    cold: ColdUrl = None,
    broker: Broker = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    no_cache: NoCache = False,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Fetch the message an offsetMsgId names (store host + commit-log offset), hot or cold.

    Example: mqtier query id C0A8C77C00001FBB00000000000000AC --store ./store

    Example: mqtier query id C0A8C77C00001FBB00000000000000AC --cold s3://bucket/mq --broker b
    """
    fmt = MessageTemplate(template) if template is not None else None  # a typo fails first
    _check_msg_id(msg_id)  # before the store: a typo is exit 2 wherever --store points
    tiers = _Tiers(store, cold_url(cold), broker, storage_option, no_cache)

    def nothing(hot: Store | None) -> NotFoundError:
        if _looks_like_uniq_key(msg_id, hot):
            where = (
                f"--cold {shlex.quote(tiers.cold)} --broker {shlex.quote(tiers.broker or 'NAME')}"
                if tiers.cold is not None
                else f"--store {shlex.quote(str(store or Path('store')))}"
            )
            return NotFoundError(
                f"no message with offsetMsgId {msg_id} in {tiers.where()}: this looks like a "
                "UNIQ_KEY (the client-side message id)",
                hint=f"mqtier query uniq {msg_id} {where}",
            )
        return NotFoundError(f"no message with offsetMsgId {msg_id} in {tiers.where()}")

    _run(
        tiers,
        lambda hot, index: _by_id(msg_id, hot, index, nothing),
        nothing,
        b64=b64,
        full=full,
        template=fmt,
        json_out=json_out,
        explain=explain,
    )


def _by_id(
    msg_id: str,
    hot: Store | None,
    index: ColdIndex | None,
    nothing: Callable[[Store | None], NotFoundError],
) -> QueryResult:
    try:
        return find_msg_id(msg_id=msg_id, store=hot, index=index)
    except NotFoundError:
        if _looks_like_uniq_key(msg_id, hot):
            raise nothing(hot) from None
        raise


def _check_key(key: str, what: str) -> None:
    """Refuse a key no message can carry: the store refuses to write an empty one or one with
    a 0x01/0x02 separator (it would split the properties), so asking would only cost requests
    to answer "not found" (exit 3) for what is a typo or a quoting mistake."""
    if not key or "\x01" in key or "\x02" in key:
        raise ConfigError(
            f"{what} {_shown(key)} is empty or contains a 0x01/0x02 separator: no message can "
            "carry it"
        )
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > L.MAX_PROPERTIES_BYTES:
        raise ConfigError(
            f"{what} {_shown(key)} is {size:,} bytes: a message's properties hold at most "
            f"{L.MAX_PROPERTIES_BYTES:,}, so no message can carry it"
        )


def _shown(key: str, limit: int = 120) -> str:
    """A key as an error line shows it: quoted, and cut short when long."""
    text = repr(key)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(key):,} characters)"


def _check_msg_id(msg_id: str) -> None:
    try:
        parse_msg_id(msg_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _looks_like_uniq_key(msg_id: str, st: Store | None = None) -> bool:
    """Whether an id that named no message is a UNIQ_KEY (both are 32 or 56 hex chars).

    An offsetMsgId is store IP + port (int32) + commit-log offset (int64); a UNIQ_KEY is
    client IP + pid (int16) + class-loader hash (int32) + ms since month start (int32) +
    counter (int16). Read as an offsetMsgId, a UNIQ_KEY's "port" starts with the client's
    pid, so it is past 65535 (no TCP port is), and its "offset" is far past any commit log.
    A message in this store with that UNIQ_KEY settles it either way.
    """
    _, port, _ = parse_msg_id(msg_id)
    return port > 0xFFFF or (st is not None and bool(st.query_uniq(msg_id)))


@handle_errors
def query_uniq(
    uniq_key: Annotated[
        str, typer.Argument(metavar="UNIQ_KEY", help="UNIQ_KEY: the client-side message id.")
    ],
    store: QueryStore = None,
    topic: Annotated[
        str | None, typer.Option("--topic", "-t", metavar="TOPIC", help="Only this topic.")
    ] = None,
    max_results: MaxResults = 64,
    b64: B64 = False,
    full: Full = False,
    template: Template = None,
    explain: Explain = False,
    cold: ColdUrl = None,
    broker: Broker = None,
    storage_option: StorageOptions = None,
    endpoint_url: EndpointUrl = None,
    timeout: ColdTimeout = None,
    no_cache: NoCache = False,
    config: ConfigPath = None,
    json_out: JsonOut = False,
) -> None:
    """Find messages by UNIQ_KEY (what RocketMQ clients show as the message id), hot or cold.

    Example: mqtier query uniq 7F00000100002A9F0000000000000001 --store ./store

    Example: mqtier query uniq 7F00000100002A9F0000000000000001 --cold s3://b/mq --broker b
    """
    fmt = MessageTemplate(template) if template is not None else None  # a typo fails first
    _check_key(uniq_key, "UNIQ_KEY")
    tiers = _Tiers(store, cold_url(cold), broker, storage_option, no_cache)
    _run(
        tiers,
        lambda hot, index: find_uniq(
            uniq_key=uniq_key, topic=topic, store=hot, index=index, max_results=max_results
        ),
        lambda _hot: NotFoundError(
            f"no message with UNIQ_KEY {_shown(uniq_key)} in {tiers.where()}"
        ),
        b64=b64,
        full=full,
        template=fmt,
        json_out=json_out,
        explain=explain,
        topic=topic,
    )
