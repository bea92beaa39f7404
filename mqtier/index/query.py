"""Key, UNIQ_KEY and offsetMsgId queries over the hot store, the cold tier, or both.

Each query asks each tier it is given, merges the answers without duplicates (a message still
hot and already tiered is one answer, the hot copy), newest first by store time, and cuts at
``max_results``. Example::

    from mqtier.index.query import open_cold_index, query_key
    with open_cold_index(cold, "broker-a") as index:
        result = query_key(topic="orders", key="ORDER-42", index=index)
    for hit in result.hits:
        print(hit.tier, hit.message.queue_offset, hit.message.body)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mqtier.backend.base import ColdStore
from mqtier.errors import ConfigError, MissingCommittedObjectError, NotFoundError
from mqtier.format.coldindex import key_hash, offset_hash
from mqtier.format.message import MessageRecord, parse_msg_id
from mqtier.index.cache import ImmutableCache
from mqtier.index.lookup import ColdHit, ColdIndex, Explain, _Timed
from mqtier.store.reads import MAX_TIME_MS
from mqtier.store.store import Store
from mqtier.tier.catalog import load_catalog

DEFAULT_MAX = 64


@dataclass(frozen=True, slots=True)
class Hit:
    """One answer and where it was read: ``hot``, or ``cold`` with the object and its bytes."""

    message: MessageRecord
    tier: str
    object: str | None = None
    byte_range: tuple[int, int] | None = None

    def where(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"tier": self.tier}
        if self.object is not None:
            doc["object"] = self.object
        if self.byte_range is not None and self.byte_range != (0, 0):
            doc["bytes"] = list(self.byte_range)
        return doc


@dataclass
class QueryResult:
    hits: list[Hit]
    explain: Explain = field(default_factory=Explain)
    # committed cold ranges no index object covers (tiered before the index existed)
    unindexed: list[tuple[str, int, int, int]] = field(default_factory=list)

    @property
    def messages(self) -> list[MessageRecord]:
        return [h.message for h in self.hits]


def open_cold_index(
    cold: ColdStore, broker: str, *, cache: ImmutableCache | None = None
) -> ColdIndex:
    """The committed index of ``broker``'s cold tier (the catalog loaded through ``cache``)."""
    explain = Explain()
    with _Timed(cold, explain.step("catalog")):
        state = load_catalog(cold, broker, cache=cache)
    return ColdIndex(cold, state, cache=cache, explain=explain)


def _newest_first(h: Hit) -> tuple[int, str, int, int]:
    m = h.message
    return (-m.store_ts, m.topic, -m.queue_id, -m.queue_offset)


def _merge(hot: list[MessageRecord], cold: list[ColdHit], max_results: int) -> list[Hit]:
    seen: dict[tuple[str, int, int], Hit] = {}
    for m in hot:
        seen.setdefault((m.topic, m.queue_id, m.queue_offset), Hit(m, "hot"))
    for c in cold:
        m = c.message
        seen.setdefault(
            (m.topic, m.queue_id, m.queue_offset), Hit(m, "cold", c.object, c.byte_range)
        )
    return sorted(seen.values(), key=_newest_first)[:max_results]


def _cold_answers(
    index: ColdIndex | None,
    h: int,
    accept: Callable[[MessageRecord], bool],
    max_results: int,
    *,
    topic: str | None,
    begin_ms: int = 0,
    end_ms: int = MAX_TIME_MS,
    phy: int | None = None,
    hot_holds: Callable[[str, int, int], bool] | None = None,
) -> tuple[list[ColdHit], list[tuple[str, int, int, int]]]:
    if index is None:
        return [], []
    index.new_query()
    try:
        return _ask_cold(index, h, accept, max_results, topic, begin_ms, end_ms, phy, hot_holds)
    except MissingCommittedObjectError:
        if not index.reload():  # the latest catalog names it: lost, not replaced
            raise
        return _ask_cold(index, h, accept, max_results, topic, begin_ms, end_ms, phy, hot_holds)


def _ask_cold(
    index: ColdIndex,
    h: int,
    accept: Callable[[MessageRecord], bool],
    max_results: int,
    topic: str | None,
    begin_ms: int,
    end_ms: int,
    phy: int | None,
    hot_holds: Callable[[str, int, int], bool] | None,
) -> tuple[list[ColdHit], list[tuple[str, int, int, int]]]:
    entries = index.entries(topic=topic, begin_ms=begin_ms, end_ms=end_ms, phy=phy)
    cands = index.candidates(h, entries, topic=topic, begin_ms=begin_ms, end_ms=end_ms)
    # What the hot store holds, it answered (its copy is the one shown): not fetched again.
    if hot_holds is not None:
        cands = [c for c in cands if not hot_holds(c.topic, c.queue, c.queue_offset)]
    return index.fetch(cands, accept, max_results), index.unindexed(topic)


def query_key(
    *,
    topic: str,
    key: str,
    store: Store | None = None,
    index: ColdIndex | None = None,
    begin_ms: int = 0,
    end_ms: int = MAX_TIME_MS,
    max_results: int = DEFAULT_MAX,
) -> QueryResult:
    """Messages of ``topic`` whose KEYS hold ``key`` (or whose UNIQ_KEY is ``key``), stored
    within ``[begin_ms, end_ms]``, from the hot store and/or the cold index."""

    def accept(m: MessageRecord) -> bool:
        return m.topic == topic and m.carries_key(key) and begin_ms <= m.store_ts <= end_ms

    hot = _hot(store, lambda st: st.query_key(
        topic, key, begin_ms=begin_ms, end_ms=end_ms, max_results=max_results
    ))  # fmt: skip
    cold, unindexed = _cold_answers(
        index,
        key_hash(key),
        accept,
        max_results,
        topic=topic,
        begin_ms=begin_ms,
        end_ms=end_ms,
        hot_holds=_holds(store),
    )
    return _result(index, _merge(hot, cold, max_results), unindexed)


def query_uniq(
    *,
    uniq_key: str,
    topic: str | None = None,
    store: Store | None = None,
    index: ColdIndex | None = None,
    max_results: int = DEFAULT_MAX,
) -> QueryResult:
    """Messages whose UNIQ_KEY (the client-side message id) is ``uniq_key``, of any topic or
    of ``topic``."""

    def accept(m: MessageRecord) -> bool:
        return m.uniq_key == uniq_key and (topic is None or m.topic == topic)

    hot = _hot(store, lambda st: st.query_uniq(uniq_key, topic))
    cold, unindexed = _cold_answers(
        index, key_hash(uniq_key), accept, max_results, topic=topic, hot_holds=_holds(store)
    )
    return _result(index, _merge(hot, cold, max_results), unindexed)


def query_msg_id(
    *, msg_id: str, store: Store | None = None, index: ColdIndex | None = None
) -> QueryResult:
    """The message an offsetMsgId names (store host + commit-log offset), in either tier.

    Raises:
        ConfigError: ``msg_id`` is not an offsetMsgId's form.
        NotFoundError: only the hot store was asked, and it has no message there.
    """
    try:
        _ip, _port, phy = parse_msg_id(msg_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    hot: list[MessageRecord] = []
    if store is not None:
        try:
            hot = [store.query_msg_id(msg_id)]
        except NotFoundError:
            if index is None:
                raise  # the store's own answer says why (no record starts there, ...)

    def accept(m: MessageRecord) -> bool:
        return m.phy_offset == phy

    if phy < 0 or hot:
        # No record starts at a negative offset (a UNIQ_KEY read as an offsetMsgId often
        # reads so), and one the hot store has needs no cold request.
        return _result(index, _merge(hot, [], 1), [])
    cold, unindexed = _cold_answers(index, offset_hash(phy), accept, 1, topic=None, phy=phy)
    return _result(index, _merge(hot, cold, 1), unindexed)


def _holds(store: Store | None) -> Callable[[str, int, int], bool] | None:
    """Whether the hot store still holds a queue offset (then its own query found it, if it
    was among the newest ``max_results``), per queue from its readable range."""
    if store is None:
        return None
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for qo in store.offsets():
        first = store.first_readable(qo.topic, qo.queue_id)
        ranges[(qo.topic, qo.queue_id)] = (first, qo.max_offset)

    def holds(topic: str, queue: int, offset: int) -> bool:
        lo, hi = ranges.get((topic, queue), (0, 0))
        return lo <= offset < hi

    return holds


def _hot(store: Store | None, ask: Callable[[Store], list[MessageRecord]]) -> list[MessageRecord]:
    return [] if store is None else ask(store)


def _result(
    index: ColdIndex | None, hits: list[Hit], unindexed: list[tuple[str, int, int, int]]
) -> QueryResult:
    return QueryResult(hits, index.explain if index is not None else Explain(), unindexed)
