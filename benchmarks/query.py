"""Key, UNIQ_KEY and message-id queries through the cold index (issue #12), against baselines.

Setup (timed and printed, not part of any figure): a hot store (default 1 GiB commit-log files,
broker "bench", topic "orders", 16 queues) gets N messages (``--messages``, default 1,000,000)
in R tiering runs (``--runs``, default 100): per run N/R messages by ``Store.append_batch``
(4,096 per batch), then ``run_dispatch(force=True)`` to moto S3 on 127.0.0.1 (through s3fs),
so each run commits one level-0 index object. Each message carries one KEYS token out of K
distinct keys (``--keys``, default N/5): a tenth of the keys are "shared" and carry
10 or more messages each (the rest of the messages once the others have 1..4 each), and the
message order is shuffled, so a shared key's messages lie in many runs and blocks. Bodies are
~100..300 B of JSON-like text.

Queries, each kind on ``--picks`` random picks (default 200), through the library
(``open_cold_index``, ``query_key``, ``query_uniq``, ``query_msg_id``), on the whole time range:

  key hit      a KEYS token carried by 1..4 messages        key shared  one of the shared keys
  key window   a message's (rare) key, the window its tiering run's time range (begin and end
               to the millisecond): only the objects overlapping it are consulted
  key miss     a key no message carries                     uniq hit    a message's UNIQ_KEY
  id hit       a message's offsetMsgId

in four variants: cache "warm" (an ``ImmutableCache`` in a temporary folder, filled by one untimed
query first) or "cold" (no cache), and catalog "incl" (``open_cold_index`` per query, as the CLI
does: the catalog load is in the latency and the requests) or "excl" (the catalog state loaded
once; a fresh ``ColdIndex`` per query on it, so index tails come from the cache or the tier as the
variant says, never from a previous query's memory). Per query: requests (the metered store's
``RequestBill``), index objects consulted (``explain.index_objects``), distinct blocks of the
hits, wall latency. Every answer is checked (a hit query returns min(true count, 64) messages
carrying the key; a miss returns none). This runs in three stages: "before" compaction, "after"
the level compaction (``merge_indexes``, ``--fanout``, default 8) and "full", after a full
compaction on top of it (``MergeOptions(full=True)``, as ``compact --full-index``: every index
object merged into as few as possible).

moto (``--moto``): "process" (the default) runs ``python -m moto.server -H 127.0.0.1 -p PORT``
in a child process, so its request handling runs beside the client (mqtier, s3fs's event loop)
as a real object store's does; "in-process" runs moto's ``ThreadedMotoServer`` in this process,
where client and server share one GIL and concurrent requests cannot overlap (8 concurrent
GETs took ~9.5x one GET there). Both run on the same 2 vCPUs, and a moto GET is CPU work on
both sides (here ~5 ms in s3fs's one event-loop thread, ~6 ms in moto under its own GIL), so
even in a process of its own 8 concurrent GETs take several times one GET where a real store's
(mostly waiting) would overlap. Every figure of one run, the
baselines (one ranged GET, 8 concurrent GETs, RocketMQ) included, is measured against the same
server, so the ratios compare like with like; ratios from runs in different modes do not.

Baselines, same run, same moto server:
  GET          one ranged GET of 1 KiB at a random offset of a data object of the tier; and
               the same GETs 8 at a time (p50 of 8 concurrent: ~1x one GET when requests
               overlap, ~8x when they queue); and the floor of a lookup after a full
               compaction: one GET, then k GETs at once (k = 1..4), to which the key and
               UNIQ_KEY hit latencies of the "full" stage are compared (k = their blocks).
  RocketMQ     its tiered index (``_rocketmq_index.py``) built on the same messages (items: each
               KEYS token and the UNIQ_KEY), uploaded as real objects (slot table + items per
               file), queried with real ranged GETs: per file the slot entry, then (slot not
               empty) its items, then one GET per hit. Files roll at a fixed item count, scaled
               so that the data gives RocketMQ's files per tiering run: RocketMQ rolls at 20M
               items, i.e. 86.4 files a day at the issue's 10k msgs/s x 2 items; the default
               data (1M messages, 100 runs) is taken as one day of tiering (a run every
               14.4 min), so files = ceil(0.864 x R) (``--rmq-files-per-run``) and the roll count
               is items / files. RocketMQ cannot find an offsetMsgId once tiered: "n/a".
  hot store    ``Store.query_key`` (warm page cache) against SQLite (file on the same disk, WAL,
               table (key, topic, queue_id, queue_offset, body) with an index on key, same N
               rows), ``SELECT ... WHERE key = ? LIMIT 64``, same keys.

compact: a separate store of ``--compact-items`` index items (default 2M; the issue's figure is
``--compact-items 20M``), messages with ``--compact-keys`` KEYS tokens each (default 20, plus the
UNIQ_KEY), tiered in ``fanout`` runs to ``file://``; then one ``merge_indexes`` timed: items/s,
MB/s read and written (its report). The query setup's own compaction is reported too.

Goals (warm cache, catalog excluded; the catalog-included figures beside), each reported for
every stage (a verdict after compaction, level or full; "(info)" before it): hit p50 <= 3x GET
p50; miss p50 <= 1.5x GET p50; requests of a hit <= index objects consulted + distinct blocks of
its hits (every query); a whole-range query consults <= 32 index objects; issue item 4: a
UNIQ_KEY hit with warm caches costs <= 6 requests in all, the catalog load included; issue
item 5: an id hit, catalog loaded, <= 2 requests; hot ``query_key`` p50 <= 1x SQLite p50 (the
issue's "within 1x").

    .venv/bin/python benchmarks/query.py [--quick] [--messages 1000000] [--keys N] [--runs 100] [--picks 200]
        [--fanout 8] [--compact-items 2M] [--skip queries,stages,compact,hot,rocketmq,cold,full]
        [--moto process|in-process] [--json]

``--json`` prints the results document on stdout (progress and tables go to stderr); it is
always saved as benchmarks/out/query-<UTC time>.json and query-latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C
import _rocketmq_index as R

TOPIC = "orders"
BROKER = "bench"
QUEUES = 16
BUCKET = "mqtier-bench-query"
BATCH = 4096
MAX_RESULTS = 64
GET_BYTES = 1024
KINDS = ("key hit", "key window", "key shared", "key miss", "uniq hit", "id hit")
RMQ_KINDS = ("key hit", "key window", "key shared", "key miss", "uniq hit")
VARIANTS = (("warm", "excl"), ("warm", "incl"), ("cold", "excl"), ("cold", "incl"))
GOAL_HIT = 3.0
GOAL_MISS = 1.5
GOAL_OBJECTS = 32
GOAL_HOT = 1.0
STAGES = {"before": "before", "after": "level", "full": "full"}  # phase -> name in the goals

out = sys.stdout  # progress and tables; stderr under --json


def say(text: str = "") -> None:
    print(text, file=out, flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000, help="messages (default 1,000,000)")
    ap.add_argument("--keys", type=int, default=None, help="distinct keys (default messages/5)")
    ap.add_argument("--runs", type=int, default=100, help="tiering runs (default 100)")
    ap.add_argument("--picks", type=int, default=200, help="queries per kind and variant")
    ap.add_argument("--fanout", type=int, default=8, help="index merge fanout (default 8)")
    ap.add_argument("--compact-items", default="2M", help="index items of the compact cell")
    ap.add_argument("--compact-keys", type=int, default=20, help="KEYS tokens per message there")
    ap.add_argument(
        "--rmq-files-per-run",
        type=float,
        default=0.864,
        help="RocketMQ index files per tiering run (default 0.864: 86.4 a day, 100 runs a day)",
    )
    ap.add_argument(
        "--skip",
        default="",
        help=(
            "comma list of: queries (all but compact), stages (the cold query stages), "
            "compact, hot, rocketmq, cold, full"
        ),
    )
    ap.add_argument(
        "--moto",
        choices=("process", "in-process"),
        default="process",
        help="moto S3 server in a child process (default) or in this process (shares the GIL)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--quick", action="store_true", help="--messages 100000 --runs 20 --picks 40 (unless given)"
    )
    ap.add_argument("--json", action="store_true", help="results JSON on stdout")
    args = ap.parse_args()
    if args.quick:
        given = set(sys.argv)
        for flag, value in (("--messages", 100_000), ("--runs", 20), ("--picks", 40)):
            if flag not in given:
                setattr(args, flag[2:], value)
    args.keys = args.keys or max(10, args.messages // 5)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.messages < args.runs or args.keys * 2 > args.messages:
        ap.error("need messages >= runs and keys <= messages / 2")
    return args


def count_items(text: str) -> int:
    t = text.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


# ---- data ------------------------------------------------------------------------------------


def key_name(j: int) -> str:
    return f"ORDER-{j:09d}"


def key_counts(n: int, k: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """Messages per key: the last 90 % of keys 1..4 each, the first 10 % (shared) the rest,
    at least 10 each."""
    shared = max(1, k // 10)
    counts = np.zeros(k, dtype=np.int64)
    counts[shared:] = rng.integers(1, 5, size=k - shared)
    if n - counts.sum() < 10 * shared:
        counts[shared:] = 1
    left = n - int(counts.sum())
    if left < 10 * shared:
        raise SystemExit(f"error: {n} messages cannot give {shared} shared keys 10 each")
    counts[:shared] = left // shared
    counts[: left % shared] += 1
    return counts


class Data:
    """What was appended: per message its key number and where it went."""

    def __init__(self, n: int, k: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.counts = key_counts(n, k, rng)
        self.shared = max(1, k // 10)
        self.key_of = np.repeat(np.arange(k), self.counts)
        rng.shuffle(self.key_of)
        self.n, self.k = n, k
        self.queue = np.zeros(n, dtype=np.int64)
        self.qoff = np.zeros(n, dtype=np.int64)
        self.phy = np.zeros(n, dtype=np.int64)
        self.size = np.zeros(n, dtype=np.int64)
        self.uniq: list[str] = [""] * n
        self.msg_id: list[str] = [""] * n
        self.filler = C.wide_filler(1 << 20)
        self.run_ms: list[tuple[int, int]] = []  # per tiering run: store times lie within
        self.per_run = 1

    def run_of(self, i: np.ndarray[Any, Any] | int) -> Any:
        return np.minimum(np.asarray(i) // self.per_run, len(self.run_ms) - 1)

    def body(self, i: int) -> bytes:
        at = (i * 7919) % (len(self.filler) - 300)
        return (
            f'{{"order":"{key_name(int(self.key_of[i]))}","n":{i},"note":"'
            f'{self.filler[at : at + 60 + (i * 31) % 200]}"}}'
        ).encode()


def fill_and_tier(st: Any, cold: Any, data: Data, runs: int) -> dict[str, Any]:
    from mqtier.format.message import Message
    from mqtier.tier.dispatch import DispatchOptions, run_dispatch

    t0 = time.perf_counter()
    append_s = dispatch_s = 0.0
    per_run = data.per_run = data.n // runs
    reports = []
    for r in range(runs):
        lo, hi = r * per_run, data.n if r == runs - 1 else (r + 1) * per_run
        ta = time.perf_counter()
        begin_ms = int(time.time() * 1000)
        for b in range(lo, hi, BATCH):
            idx = range(b, min(b + BATCH, hi))
            msgs = [
                Message(TOPIC, data.body(i), queue_id=i % QUEUES, keys=(key_name(data.key_of[i]),))
                for i in idx
            ]
            for i, res in zip(idx, st.append_batch(msgs), strict=True):
                data.queue[i], data.qoff[i] = res.queue_id, res.queue_offset
                data.phy[i], data.size[i] = res.phy_offset, res.size
                data.uniq[i], data.msg_id[i] = res.uniq_key, res.msg_id
        st.wait_dispatched()
        data.run_ms.append((begin_ms - 1, int(time.time() * 1000) + 1))
        time.sleep(0.005)  # runs' time ranges never touch
        td = time.perf_counter()
        append_s += td - ta
        rep = run_dispatch(st, cold, DispatchOptions(force=True))
        dispatch_s += time.perf_counter() - td
        if rep.messages != hi - lo or rep.commits != 1:
            raise AssertionError(f"run {r}: {rep.messages} messages in {rep.commits} commits")
        reports.append({"objects": rep.objects, "stored_bytes": rep.stored_bytes})
        if (r + 1) % max(1, runs // 10) == 0:
            say(f"  tiered run {r + 1}/{runs}: {time.perf_counter() - t0:.0f} s")
    return {
        "messages": data.n,
        "keys": data.k,
        "shared_keys": data.shared,
        "messages_of_shared_keys_min": int(data.counts[: data.shared].min()),
        "record_bytes": int(data.size.sum()),
        "runs": runs,
        "data_objects": sum(x["objects"] for x in reports),
        "stored_bytes": sum(x["stored_bytes"] for x in reports),
        "append_s": append_s,
        "dispatch_s": dispatch_s,
        "seconds": time.perf_counter() - t0,
    }


# ---- picks -----------------------------------------------------------------------------------


class Pick:
    """One query and what it must answer: the key (or id) and the messages carrying it."""

    def __init__(
        self, kind: str, arg: str, expect: int, window: tuple[int, int, int] | None = None
    ) -> None:
        self.kind, self.arg, self.expect = kind, arg, expect
        self.window = window  # (run, begin_ms, end_ms)


def make_picks(data: Data, picks: int, seed: int) -> dict[str, list[Pick]]:
    rng = random.Random(seed)
    rare = [rng.randrange(data.shared, data.k) for _ in range(picks)]
    shared = [rng.randrange(0, data.shared) for _ in range(picks)]
    msgs = [rng.randrange(data.n) for _ in range(picks)]
    c = data.counts
    windowed: list[Pick] = []
    runs = data.run_of(np.arange(data.n))
    while len(windowed) < picks:
        i = rng.randrange(data.n)
        j = int(data.key_of[i])
        if j < data.shared:
            continue  # a rare key: its other messages mostly lie in other runs
        r = int(runs[i])
        expect = int(np.count_nonzero((data.key_of == j) & (runs == r)))
        b, e = data.run_ms[r]
        windowed.append(Pick("key window", key_name(j), min(expect, MAX_RESULTS), (r, b, e)))
    return {
        "key hit": [Pick("key hit", key_name(j), min(int(c[j]), MAX_RESULTS)) for j in rare],
        "key window": windowed,
        "key shared": [
            Pick("key shared", key_name(j), min(int(c[j]), MAX_RESULTS)) for j in shared
        ],
        "key miss": [Pick("key miss", f"NOPE-{rng.getrandbits(40):010x}", 0) for _ in range(picks)],
        "uniq hit": [Pick("uniq hit", data.uniq[i], 1) for i in msgs],
        "id hit": [Pick("id hit", data.msg_id[i], 1) for i in msgs],
    }


def ask(pick: Pick, index: Any) -> Any:
    from mqtier.index.query import query_key, query_msg_id, query_uniq

    if pick.kind.startswith("key"):
        b, e = pick.window[1:] if pick.window else (0, 2**63 - 1)
        return query_key(
            topic=TOPIC, key=pick.arg, index=index, max_results=MAX_RESULTS, begin_ms=b, end_ms=e
        )
    if pick.kind == "uniq hit":
        return query_uniq(uniq_key=pick.arg, index=index, max_results=MAX_RESULTS)
    return query_msg_id(msg_id=pick.arg, index=index)


def check(pick: Pick, result: Any) -> None:
    got = result.hits
    ok = len(got) == pick.expect
    for h in got:
        m = h.message
        if pick.kind.startswith("key"):
            ok = ok and pick.arg in m.keys and m.topic == TOPIC
            if pick.window:
                ok = ok and pick.window[1] <= m.store_ts <= pick.window[2]
        elif pick.kind == "uniq hit":
            ok = ok and m.uniq_key == pick.arg
        else:
            ok = ok and m.msg_id == pick.arg
    if not ok or result.unindexed:
        raise AssertionError(
            f"{pick.kind} {pick.arg}: {len(got)} hits, expected {pick.expect}"
            + (f"; unindexed {result.unindexed}" if result.unindexed else "")
        )


# ---- timed cells -----------------------------------------------------------------------------


def lat_stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "p50_ms": C.percentile(s, 50),
        "p99_ms": C.percentile(s, 99),
        "mean_ms": sum(s) / len(s),
    }


def query_cell(
    cold: Any, bill: Any, picks: list[Pick], opener: Callable[[], Any]
) -> dict[str, Any]:
    """Each pick through a fresh index from ``opener``: latency, requests, objects, blocks."""
    rows = []
    for p in picks:
        r0 = bill.requests
        t0 = time.perf_counter()
        index = opener()
        try:
            result = ask(p, index)
        finally:
            index.close()
        ms = (time.perf_counter() - t0) * 1000
        check(p, result)
        ex = result.explain
        cat = ex.steps.get("catalog")
        blocks = len({(h.object, h.byte_range) for h in result.hits if h.tier == "cold"})
        rows.append(
            {
                "ms": ms,
                "requests": bill.requests - r0,
                "catalog_requests": cat.requests if cat is not None else 0,
                "index_objects": ex.index_objects,
                "slots_read": ex.slots_read,
                "blocks": blocks,
                "hits": len(result.hits),
            }
        )
    n = len(rows)

    def mean(k: str) -> float:
        return float(sum(r[k] for r in rows)) / n

    lookup = [r["requests"] - r["catalog_requests"] for r in rows]
    return {
        **lat_stats([r["ms"] for r in rows]),
        "queries": n,
        "requests_mean": mean("requests"),
        "requests_max": max(r["requests"] for r in rows),
        "catalog_requests_mean": mean("catalog_requests"),
        "lookup_requests_mean": sum(lookup) / n,
        "lookup_requests_max": max(lookup),
        "index_objects_mean": mean("index_objects"),
        "index_objects_max": max(r["index_objects"] for r in rows),
        "slots_read_mean": mean("slots_read"),
        "blocks_mean": mean("blocks"),
        "hits_mean": mean("hits"),
        # issue #12: a lookup costs <= one GET per index object + one per distinct block
        "within_request_bound": sum(
            1 for r, lk in zip(rows, lookup, strict=True) if lk <= r["index_objects"] + r["blocks"]
        ),
    }


def phase_cells(
    cold: Any, bill: Any, picks: dict[str, list[Pick]], work: Path, phase: str, skip: set[str]
) -> dict[str, Any]:
    from mqtier.index.cache import ImmutableCache
    from mqtier.index.lookup import ColdIndex
    from mqtier.index.query import open_cold_index
    from mqtier.tier.catalog import load_catalog

    cache = ImmutableCache(cold.url, root=work / f"cache-{phase}")
    state_warm = load_catalog(cold, BROKER, cache=cache)
    state = load_catalog(cold, BROKER)
    warm_up = picks["key hit"][0]
    check(warm_up, ask(warm_up, ColdIndex(cold, state_warm, cache=cache)))  # fills the tails
    openers: dict[tuple[str, str], Callable[[], Any]] = {
        ("warm", "excl"): lambda: ColdIndex(cold, state_warm, cache=cache),
        ("warm", "incl"): lambda: open_cold_index(cold, BROKER, cache=cache),
        ("cold", "excl"): lambda: ColdIndex(cold, state, cache=None),
        ("cold", "incl"): lambda: open_cold_index(cold, BROKER, cache=None),
    }
    cells: dict[str, Any] = {"index_objects_committed": len(state.indexes)}
    levels: dict[int, int] = {}
    for e in state.indexes.values():
        levels[e.level] = levels.get(e.level, 0) + 1
    cells["levels"] = {str(k): v for k, v in sorted(levels.items())}
    for variant in VARIANTS:
        if variant[0] == "cold" and "cold" in skip:
            continue
        for kind in KINDS:
            t0 = time.perf_counter()
            cell = query_cell(cold, bill, picks[kind], openers[variant])
            name = f"{kind} | {variant[0]} | catalog {variant[1]}"
            cells[name] = cell
            say(
                f"  {phase:6s} {name:34s} p50 {cell['p50_ms']:7.2f} ms  p99 "
                f"{cell['p99_ms']:7.2f} ms  req {cell['requests_mean']:6.1f}  objects "
                f"{cell['index_objects_mean']:5.1f}  blocks {cell['blocks_mean']:4.1f}  "
                f"({time.perf_counter() - t0:.0f} s)"
            )
    return cells


def get_cell(cold: Any, bill: Any, obj: str, size: int, picks: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    ms = []
    r0 = bill.requests
    for _ in range(picks):
        at = rng.randrange(max(1, size - GET_BYTES))
        t0 = time.perf_counter()
        got = cold.get(obj, at, at + GET_BYTES)
        ms.append((time.perf_counter() - t0) * 1000)
        assert len(got) == GET_BYTES
    # The same GETs 8 at a time from a pool started beforehand: does concurrency overlap here?
    # (With --moto in-process, moto and s3fs's event loop share this process's GIL: they cannot.)
    wide = []
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda at: cold.get(obj, at, at + GET_BYTES), range(8)))  # threads started
        for _ in range(max(1, picks // 8)):
            ats = [rng.randrange(max(1, size - GET_BYTES)) for _ in range(8)]
            t0 = time.perf_counter()
            list(pool.map(lambda at: cold.get(obj, at, at + GET_BYTES), ats))
            wide.append((time.perf_counter() - t0) * 1000)
        # The floor of a lookup on this server: one GET (the slot), then k at once (the
        # blocks of k hits), as a key query after a full compaction does its requests.
        floors: dict[str, float] = {}
        for k in range(1, 5):
            chain = []
            for _ in range(max(1, picks // 8)):
                ats = [rng.randrange(max(1, size - GET_BYTES)) for _ in range(k + 1)]
                t0 = time.perf_counter()
                cold.get(obj, ats[0], ats[0] + GET_BYTES)
                list(pool.map(lambda at: cold.get(obj, at, at + GET_BYTES), ats[1:]))
                chain.append((time.perf_counter() - t0) * 1000)
            floors[str(k)] = lat_stats(chain)["p50_ms"]
    x8 = lat_stats(wide)
    return {
        **lat_stats(ms),
        "x8_concurrent_p50_ms": x8["p50_ms"],
        "x8_concurrent_p99_ms": x8["p99_ms"],
        "get_then_k_concurrent_p50_ms": floors,
        "requests": bill.requests - r0,
        "bytes": GET_BYTES,
        "object": obj,
    }


# ---- RocketMQ baseline -----------------------------------------------------------------------


def rocketmq_cells(
    cold: Any,
    bill: Any,
    data: Data,
    picks: dict[str, list[Pick]],
    files_per_run: float,
    runs: int,
    data_obj: tuple[str, int],
) -> dict[str, Any]:
    from mqtier.format.javahash_batch import index_key_hashes

    t0 = time.perf_counter()
    # items in arrival order: per message its KEYS token, then its UNIQ_KEY
    names = [f"{TOPIC}#{key_name(int(j))}" for j in data.key_of]
    key_h = index_key_hashes(names)
    uniq_h = index_key_hashes([f"{TOPIC}#{u}" for u in data.uniq])
    hashes = np.empty(2 * data.n, dtype=np.int64)
    hashes[0::2], hashes[1::2] = key_h, uniq_h
    times = np.repeat(data.run_of(np.arange(data.n)), 2).astype(np.int64)
    q = np.repeat(data.queue, 2)
    off = np.repeat(data.qoff, 2)
    size = np.repeat(data.size, 2)
    files = max(1, int(np.ceil(files_per_run * runs)))
    roll = -(-len(hashes) // files)
    sims = R.upload_files(cold, "rocketmq-sim", hashes, q, off, size, times, roll)
    build_s = time.perf_counter() - t0
    say(
        f"  RocketMQ design: {len(sims)} files of {roll:,} items ({R.slots_for(roll):,} slots), "
        f"{sum(f.size for f in sims) / 1e6:.1f} MB uploaded in {build_s:.1f} s"
    )
    sim = R.SimIndex(cold, sims, data_obj[0], data_obj[1])
    cells: dict[str, Any] = {
        "files": len(sims),
        "roll_items": roll,
        "slots_per_file": R.slots_for(roll),
        "bytes": sum(f.size for f in sims),
        "scaling": f"ceil({files_per_run} x {runs} runs) files; RocketMQ: 20M items, 5M slots",
        "method": "real objects on moto, real ranged GETs (slot entry, slot items, 1 per hit)",
    }
    try:
        for kind in RMQ_KINDS:
            rows = []
            for p in picks[kind]:
                h = int(index_key_hashes([f"{TOPIC}#{p.arg}"])[0])
                r0 = bill.requests
                res = sim.lookup(h, MAX_RESULTS, p.window[0] if p.window else None)
                if bill.requests - r0 != res.requests:
                    raise AssertionError("RocketMQ sim: requests miscounted")
                if res.hits < p.expect:
                    raise AssertionError(f"RocketMQ sim {kind} {p.arg}: {res.hits} < {p.expect}")
                rows.append(res)
            cells[kind] = {
                **lat_stats([r.seconds * 1000 for r in rows]),
                "requests_mean": sum(r.requests for r in rows) / len(rows),
                "requests_max": max(r.requests for r in rows),
                "model_requests_mean": sum(2 * r.files + r.hits for r in rows) / len(rows),
                "files_mean": sum(r.files for r in rows) / len(rows),
                "hits_mean": sum(r.hits for r in rows) / len(rows),
            }
            c = cells[kind]
            say(
                f"  RocketMQ {kind:10s} p50 {c['p50_ms']:7.2f} ms  p99 {c['p99_ms']:7.2f} ms  "
                f"req {c['requests_mean']:6.1f} (2/file + 1/hit: {c['model_requests_mean']:.1f})"
            )
    finally:
        sim.close()
    cells["id hit"] = "n/a: RocketMQ's offsetMsgId lookup reads the local commit log only"
    return cells


# ---- hot store against SQLite ----------------------------------------------------------------


def hot_cells(st: Any, data: Data, picks: dict[str, list[Pick]], work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    db = sqlite3.connect(work / "hot.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE m (key TEXT, topic TEXT, queue_id INT, queue_offset INT, body BLOB)")
    for lo in range(0, data.n, 50_000):
        rows = (
            (key_name(int(data.key_of[i])), TOPIC, int(data.queue[i]), int(data.qoff[i]),
             data.body(i))
            for i in range(lo, min(lo + 50_000, data.n))
        )  # fmt: skip
        db.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?)", rows)
        db.commit()
    db.execute("CREATE INDEX m_key ON m (key)")
    db.commit()
    say(f"  SQLite table of {data.n:,} rows built in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    # Both sides from a warm page cache, as the goal says: every file of each read once.
    warmed = C.read_through(st.root, work / "hot.sqlite")
    say(f"  page cache warmed: {warmed / 2**20:,.0f} MiB read in {time.perf_counter() - t0:.1f} s")
    cells: dict[str, Any] = {"sqlite_rows": data.n}
    for kind in ("key hit", "key shared", "key miss"):
        ps = picks[kind]
        for p in ps[:5]:  # warm both (page cache, statement cache)
            st.query_key(TOPIC, p.arg)
            db.execute("SELECT * FROM m WHERE key = ? LIMIT 64", (p.arg,)).fetchall()
        hot_ms, sql_ms = [], []
        for p in ps:
            t1 = time.perf_counter()
            got = st.query_key(TOPIC, p.arg, max_results=MAX_RESULTS)
            hot_ms.append((time.perf_counter() - t1) * 1000)
            t1 = time.perf_counter()
            found = db.execute(
                "SELECT topic, queue_id, queue_offset, body FROM m WHERE key = ? LIMIT 64",
                (p.arg,),
            ).fetchall()
            sql_ms.append((time.perf_counter() - t1) * 1000)
            if len(got) != p.expect or len(found) != p.expect:
                raise AssertionError(f"hot {p.arg}: {len(got)} / sqlite {len(found)} / {p.expect}")
        hot, sql = lat_stats(hot_ms), lat_stats(sql_ms)
        cells[kind] = {
            "store": hot,
            "sqlite": sql,
            "ratio_p50": C.ratio(hot["p50_ms"], sql["p50_ms"]),
        }
        say(
            f"  hot {kind:10s} Store.query_key p50 {hot['p50_ms']:.3f} ms, SQLite p50 "
            f"{sql['p50_ms']:.3f} ms: {cells[kind]['ratio_p50']:.2f}x"
        )
    db.close()
    return cells


# ---- compact ---------------------------------------------------------------------------------


def merge_json(rep: Any) -> dict[str, Any]:
    d: dict[str, Any] = rep.to_json()
    d.pop("merges", None)
    s = rep.seconds or float("nan")
    d["items_per_s"] = rep.items_read / s
    d["read_mb_per_s"] = C.mb(rep.bytes_read) / s
    d["written_mb_per_s"] = C.mb(rep.bytes_written) / s
    return d


def compact_cell(work: Path, items: int, keys_per_msg: int, fanout: int) -> dict[str, Any]:
    from mqtier.backend.metered import RequestBill
    from mqtier.format.message import Message
    from mqtier.index.merge import MergeOptions, merge_indexes
    from mqtier.tier.catalog import load_catalog
    from mqtier.tier.dispatch import DispatchOptions, run_dispatch

    per_msg = keys_per_msg + 1  # the KEYS tokens and the UNIQ_KEY
    n = -(-items // per_msg)
    t0 = time.perf_counter()
    st = C.bench_store(work / "compact-store", BROKER, 1 << 30, TOPIC, QUEUES)
    cold = C.open_warm_cold(f"file://{work / 'compact-cold'}", None, RequestBill())
    try:
        for r in range(fanout):
            lo, hi = r * n // fanout, (r + 1) * n // fanout
            for b in range(lo, hi, BATCH):
                st.append_batch(
                    [
                        Message(
                            TOPIC,
                            b"x" * 60,
                            queue_id=i % QUEUES,
                            keys=tuple(f"K{i:09d}-{t:02d}" for t in range(keys_per_msg)),
                        )
                        for i in range(b, min(b + BATCH, hi))
                    ]
                )
            st.wait_dispatched()
            run_dispatch(st, cold, DispatchOptions(force=True))
        setup = time.perf_counter() - t0
        state = load_catalog(cold, BROKER)
        rep = merge_indexes(cold, state, MergeOptions(fanout=fanout))
    finally:
        cold.close()
        st.close()
        C.remove_tree(work / "compact-store")
        C.remove_tree(work / "compact-cold")
    d = merge_json(rep)
    d.update({"messages": n, "keys_per_message": keys_per_msg, "setup_s": setup, "tier": "file://"})
    say(
        f"  compact: {rep.items_read:,} items in {rep.seconds:.2f} s = {d['items_per_s']:,.0f} "
        f"items/s, read {d['read_mb_per_s']:.1f} MB/s, written {d['written_mb_per_s']:.1f} MB/s "
        f"(setup {setup:.0f} s)"
    )
    return d


# ---- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def summary(results: dict[str, Any]) -> None:
    if "baseline_get" not in results:  # --skip queries: the goals table only
        say()
        say(C.table(results["goals"], ["goal", "figure", "measured", "verdict"]))
        return
    get = results["baseline_get"]
    rmq = results.get("rocketmq", {})
    rows = []
    for phase in results["phases"]:
        cells = results["phases"][phase]
        for kind in KINDS:
            for cache, cat in VARIANTS:
                c = cells.get(f"{kind} | {cache} | catalog {cat}")
                if c is None:
                    continue
                rm = rmq.get(kind) if cache == "warm" and cat == "excl" else None
                rows.append(
                    [
                        phase,
                        kind,
                        f"{cache}/{cat}",
                        f"{c['p50_ms']:.2f}",
                        f"{c['p99_ms']:.2f}",
                        f"{C.ratio(c['p50_ms'], get['p50_ms']):.2f}x",
                        f"{c['requests_mean']:.1f}",
                        f"{c['catalog_requests_mean']:.1f}",
                        f"{c['index_objects_mean']:.1f}",
                        f"{c['blocks_mean']:.1f}",
                        f"{rm['requests_mean']:.1f}" if isinstance(rm, dict) else "",
                        f"{rm['p50_ms']:.2f}" if isinstance(rm, dict) else "",
                    ]
                )
    say()
    say(
        C.table(
            rows,
            [
                "phase",
                "query",
                "cache/catalog",
                "p50 ms",
                "p99 ms",
                "p50/GET",
                "requests",
                "of which catalog",
                "index objects",
                "blocks",
                "RocketMQ req",
                "RocketMQ p50",
            ],
        )
    )
    say(
        f"\none ranged GET of {GET_BYTES} B: p50 {get['p50_ms']:.2f} ms, p99 {get['p99_ms']:.2f} ms"
        f" (8 concurrent: p50 {get['x8_concurrent_p50_ms']:.2f} ms)"
        f"  (RocketMQ columns: same picks, on the warm/excl rows; "
        f"{rmq.get('files', '?')} files of {rmq.get('roll_items', '?')} items)"
    )
    say()
    say(C.table(results["goals"], ["goal", "figure", "measured", "verdict"]))


def stage_goals(results: dict[str, Any], phase: str) -> list[list[str]]:
    """The goals table's rows of one stage; verdicts "(info)" before compaction."""
    get = results["baseline_get"]["p50_ms"]
    cells = results["phases"][phase]
    stage = STAGES[phase]
    info = " (info)" if phase == "before" else ""
    out = []
    for kind in KINDS:
        for cat in ("excl", "incl"):
            c = cells[f"{kind} | warm | catalog {cat}"]
            r = C.ratio(c["p50_ms"], get)
            limit = GOAL_MISS if kind == "key miss" else GOAL_HIT
            label = "miss" if kind == "key miss" else "hit"
            out.append(
                [
                    f"{label} p50 <= {limit:g}x one GET ({stage}, {kind}, catalog {cat})",
                    f"{c['p50_ms']:.2f} ms vs {get:.2f} ms",
                    f"{r:.2f}x",
                    verdict(r <= limit) + (info if cat == "excl" else " (info)"),
                ]
            )
    floors = results["baseline_get"].get("get_then_k_concurrent_p50_ms", {})
    for kind in ("key hit", "key shared", "uniq hit") if floors and phase == "full" else ():
        # One index object after a full compaction: a lookup is one slot GET, then its hits'
        # blocks at once. Against that floor measured on this server, not against one GET.
        c = cells[f"{kind} | warm | catalog excl"]
        if c["blocks_mean"] > 4.5:
            continue  # a floor of more blocks was not measured
        k = max(1, round(c["blocks_mean"]))
        out.append(
            [
                f"hit p50 / floor: 1 GET then {k} concurrent ({stage}, {kind})",
                f"{c['p50_ms']:.2f} ms vs {floors[str(k)]:.2f} ms",
                f"{C.ratio(c['p50_ms'], floors[str(k)]):.2f}x",
                "report",
            ]
        )
    for kind in KINDS:
        c = cells[f"{kind} | warm | catalog excl"]
        out.append(
            [
                f"requests <= index objects + blocks ({stage}, {kind})",
                (
                    f"{c['lookup_requests_mean']:.1f} vs "
                    f"{c['index_objects_mean']:.1f} + {c['blocks_mean']:.1f}"
                ),
                f"{c['within_request_bound']}/{c['queries']} queries",
                verdict(c["within_request_bound"] == c["queries"]),
            ]
        )
    whole = [k for k in KINDS if k not in ("key window", "id hit")]
    worst = max(cells[f"{k} | warm | catalog excl"]["index_objects_max"] for k in whole)
    out.append(
        [
            f"whole-range query consults <= {GOAL_OBJECTS} index objects ({stage})",
            f"{cells['index_objects_committed']} committed, levels {cells['levels']}",
            f"max {worst}",
            verdict(worst <= GOAL_OBJECTS) + info,
        ]
    )
    uniq = cells["uniq hit | warm | catalog incl"]
    out.append(
        [
            f"(issue 4) uniq hit, warm, catalog included: <= 6 requests ({stage})",
            f"mean {uniq['requests_mean']:.1f} (catalog {uniq['catalog_requests_mean']:.1f})",
            f"max {uniq['requests_max']}",
            verdict(uniq["requests_max"] <= 6) + info,
        ]
    )
    idc = cells["id hit | warm | catalog excl"]
    out.append(
        [
            f"(issue 5) id hit, catalog loaded: <= 2 requests ({stage})",
            f"mean {idc['lookup_requests_mean']:.1f}",
            f"max {idc['lookup_requests_max']}",
            verdict(idc["lookup_requests_max"] <= 2) + info,
        ]
    )
    return out


def goals(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for phase in results["phases"]:
        out.extend(stage_goals(results, phase))
    stages = [*results["phases"]]
    after = results["phases"][stages[-1]] if stages else {}  # the last stage run
    if "baseline_get" in results:
        get = results["baseline_get"]["p50_ms"]
        get_x8 = results["baseline_get"]["x8_concurrent_p50_ms"]
        out.append(
            [
                "8 concurrent GETs p50 / one GET p50 (~1x: requests overlap)",
                f"{get_x8:.2f} ms vs {get:.2f} ms",
                f"{C.ratio(get_x8, get):.2f}x",
                "report",
            ]
        )
    rmq = results.get("rocketmq")
    if rmq and after:
        for kind in RMQ_KINDS:
            ours = after[f"{kind} | warm | catalog excl"]["requests_mean"]
            out.append(
                [
                    f"requests against the RocketMQ design ({kind}, last stage)",
                    f"ours {ours:.1f}, RocketMQ {rmq[kind]['requests_mean']:.1f}",
                    f"{C.ratio(ours, rmq[kind]['requests_mean']):.2f}x",
                    "report",
                ]
            )
    hot = results.get("hot")
    if hot:
        for kind in ("key hit", "key shared", "key miss"):
            r = hot[kind]["ratio_p50"]
            out.append(
                [
                    f"hot Store.query_key p50 <= {GOAL_HOT:g}x SQLite ({kind})",
                    f"{hot[kind]['store']['p50_ms']:.3f} vs {hot[kind]['sqlite']['p50_ms']:.3f} ms",
                    f"{r:.2f}x",
                    verdict(r <= GOAL_HOT),
                ]
            )
    for name in ("compaction_of_query_setup", "full_compaction_of_query_setup", "compact"):
        m = results.get(name)
        if m:
            out.append(
                [
                    f"{name}: items merged/s, MB/s read / written",
                    f"{m['items_read']:,} items, {m['seconds']:.2f} s",
                    (
                        f"{m['items_per_s']:,.0f}/s, {m['read_mb_per_s']:.1f} / "
                        f"{m['written_mb_per_s']:.1f} MB/s"
                    ),
                    "report",
                ]
            )
    return out


# ---- main ------------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_tier(work: Path, mode: str) -> Iterator[tuple[Any, Any, Any]]:
    from mqtier.backend.metered import RequestBill

    tempfile.tempdir = str(work)  # moto spills big objects to temporary files
    moto = C.MotoS3(process=mode == "process", tmpdir=work)
    try:
        moto.bucket(BUCKET)
        bill = RequestBill()
        cold = C.open_warm_cold(f"s3://{BUCKET}/tier", moto.storage_options(), bill)
        try:
            yield moto, cold, bill
        finally:
            cold.close()
    finally:
        moto.close()
        tempfile.tempdir = None


def main() -> None:
    global out
    args = parse_args()
    if args.json:
        out = sys.stderr
    info = C.machine_info()
    say(
        f"mqtier query benchmark: {info['date']}, {info['nproc']} CPUs, Python {info['python']}; "
        f"{args.messages:,} messages, {args.keys:,} keys, {args.runs} runs, {args.picks} picks; "
        f"moto {args.moto}"
    )
    work = C.tmp_dir("query-")
    results: dict[str, Any] = {"machine": info, "params": vars(args) | {"skip": sorted(args.skip)}}
    results["phases"] = {}
    try:
        if "queries" not in args.skip:
            query_stages(args, work, results)
        if "compact" not in args.skip:
            results["compact"] = compact_cell(
                work, count_items(args.compact_items), args.compact_keys, args.fanout
            )
    finally:
        C.remove_tree(work)
    results["goals"] = goals(results)
    summary(results)
    path = C.write_results("query", results)
    say(f"results: {path}")
    if args.json:
        print(json.dumps(results, indent=2, default=str))


def query_stages(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    """The query setup, its baselines and the query stages (all but ``compact``)."""
    from mqtier.index.merge import MergeOptions, merge_indexes
    from mqtier.tier.catalog import load_catalog

    with moto_tier(work, args.moto) as (_moto, cold, bill):
        data = Data(args.messages, args.keys, args.seed)
        st = C.bench_store(work / "store", BROKER, 1 << 30, TOPIC, QUEUES)
        try:
            say("setup:")
            setup = fill_and_tier(st, cold, data, args.runs)
            results["setup"] = setup
            say(
                f"  setup: {setup['messages']:,} msgs ({setup['record_bytes'] / 1e6:.0f} MB "
                f"of records) in {setup['runs']} runs, {setup['data_objects']} data objects: "
                f"{setup['seconds']:.0f} s (append {setup['append_s']:.0f} s, dispatch "
                f"{setup['dispatch_s']:.0f} s)"
            )
            picks = make_picks(data, args.picks, args.seed)
            state = load_catalog(cold, BROKER)
            seg = next(iter(state.queues.values()))[0]
            data_obj = (seg.object, seg.index_pos)  # the blocks end where its index begins
            results["baseline_get"] = get_cell(
                cold, bill, data_obj[0], data_obj[1], args.picks, args.seed
            )
            g = results["baseline_get"]
            say(
                f"  one GET of 1 KiB: p50 {g['p50_ms']:.2f} ms, p99 {g['p99_ms']:.2f} ms; "
                f"8 concurrent: p50 {g['x8_concurrent_p50_ms']:.2f} ms"
            )
            if "rocketmq" not in args.skip:
                results["rocketmq"] = rocketmq_cells(
                    cold, bill, data, picks, args.rmq_files_per_run, args.runs, data_obj
                )
            if "hot" not in args.skip:
                results["hot"] = hot_cells(st, data, picks, work)
        finally:
            st.close()
            C.remove_tree(work / "store")
        if "stages" in args.skip:
            return  # setup, baselines and the hot store only
        say("queries before compaction:")
        results["phases"]["before"] = phase_cells(cold, bill, picks, work, "before", args.skip)
        stages = [("after", "level", "compaction_of_query_setup", MergeOptions(fanout=args.fanout))]
        if "full" not in args.skip:
            stages.append(
                ("full", "full", "full_compaction_of_query_setup", MergeOptions(full=True))
            )
        for phase, what, name, opts in stages:
            rep = merge_indexes(cold, load_catalog(cold, BROKER), opts)
            results[name] = merge_json(rep)
            say(
                f"{what} compaction: {len(rep.merges)} merges, {rep.items_read:,} items read in "
                f"{rep.seconds:.1f} s"
            )
            say(f"queries after {what} compaction:")
            results["phases"][phase] = phase_cells(cold, bill, picks, work, phase, args.skip)
        # a second baseline GET run after the queries, to see the drift of the machine
        results["baseline_get_end"] = get_cell(
            cold, bill, data_obj[0], data_obj[1], args.picks, args.seed + 1
        )


if __name__ == "__main__":
    main()
