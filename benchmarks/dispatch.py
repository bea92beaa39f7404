"""Tiering speed and request count: ``run_dispatch`` from a hot store into the cold tier.

Setup (not timed): a hot store (256 MiB commit-log files, broker "bench") gets ~1 GiB of records
(``--quick``: ~64 MiB) of the "mixed" workload (JSON-like bodies uniform in 100..17,308 B, one key
and a tag each) on topic "bench" with 1,000 queues, **skewed**: 100 queues (a seeded sample) get
each message with probability 0.9, so they carry ~90 % of the bytes; the other 900 share the rest.
Append batches of 4,096 messages, 3 in flight; then ``wait_dispatched``. The commit log is in the
page cache when the timed cells run (warm hot reads).

Timed cells, per repeat and per target (moto S3 in this process, and ``file://`` on this disk):

  dispatch  ``run_dispatch(store, cold, DispatchOptions(force=True))`` into a fresh, empty prefix
            (defaults: 8 MiB objects, zstd level 1, 4 concurrent uploads). Its ``seconds`` cover
            catalog load, planning, hot reads with CRC checks, compression, uploads, commits and
            the garbage pass. Input MB/s = raw record bytes tiered / seconds.
  baseline  the same number of raw bytes uploaded as 8 MiB objects (last one shorter) with
            ``cold.put`` of a store from the same ``open_cold_store`` (metered and retried; for
            S3 that is s3fs ``pipe_file``, for file:// a write + fsync + rename) on a pool of
            4 threads. Payload: mixed-workload JSON text, made before the clock starts.

The dispatch and baseline alternate which goes first from one repeat to the next. Each cold store
sends one unmetered, untimed request first (s3fs builds its client on first use).

"sparse" cell (moto S3 only): a separate store with 1,000 queues x 10 messages of 200 B, one
``run_dispatch(force=True)``; counts its PUT and create requests.

Goals (printed with verdicts): dispatch MB/s >= 0.70 x the same-run s3fs baseline (8 MiB PUTs to
moto), for both targets, as the issue names it; file:// is also shown against file:// 8 MiB PUTs
(page-cache writes at ~1 GB/s), as information;
PUT+create <= ceil(stored_bytes / 4 MiB) + 2 (stored_bytes: the report's compressed block bytes);
compression (raw / stored) >= 3x; sparse PUT+create <= 5.

On the ratio: bodies cut their text from a 16 MiB word filler (``_common.wide_filler``), far
wider than a zstd window, so neighbouring bodies rarely share text and the ratio is that of
word-level JSON text (~4.4x on the bodies alone with 256 KiB blocks). Cut from a small shared
filler, as ``ingest.py``'s bodies are, the same blocks compress ~10x. Records add headers and
keys, which compress less.

MB = 10^6 bytes. Here they are bytes of *records* (RocketMQ framing, properties and body), which
is what the dispatcher reads and tiers, not body bytes alone as in ingest.py.

    .venv/bin/python benchmarks/dispatch.py [--quick] [--repeats N] [--size 1G]
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

TOPIC = "bench"
BROKER = "bench"
QUEUES = 1000
HOT_QUEUES = 100
HOT_SHARE = 0.9
FULL_BYTES = 1 << 30
QUICK_BYTES = 64 << 20
FILE_BYTES = 256 << 20
BASE_OBJECT = 8 << 20
THREADS = 4
BUDGET_UNIT = 4 << 20
SPARSE_PER_QUEUE = 10
SPARSE_BODY = 200
GOAL_RATIO = 0.70
GOAL_COMPRESSION = 3.0
GOAL_SPARSE = 5
BUCKET = "mqtier-bench-dispatch"
TARGETS = ("s3", "file")


def skewed_picker(seed: int = 1) -> tuple[Callable[[random.Random], int], list[int]]:
    """Queue choice: one of 100 hot queues with probability 0.9, else one of the other 900."""
    hot = sorted(random.Random(f"hot-queues-{seed}").sample(range(QUEUES), HOT_QUEUES))
    hot_set = set(hot)
    rest = [q for q in range(QUEUES) if q not in hot_set]

    def pick(rng: random.Random) -> int:
        return rng.choice(hot) if rng.random() < HOT_SHARE else rng.choice(rest)

    return pick, hot


class Target:
    """A fresh, empty location per cell on one kind of cold tier."""

    def __init__(self, kind: str, moto: C.MotoS3 | None, work: Path) -> None:
        self.kind = kind
        self.moto = moto
        self.work = work

    def location(self, name: str) -> tuple[str, dict[str, Any] | None]:
        if self.kind == "s3":
            assert self.moto is not None
            return f"s3://{BUCKET}/{name}", self.moto.storage_options()
        path = self.work / "cold" / name
        return f"file://{path}", None

    def cleanup(self, name: str) -> None:
        if self.kind == "s3":
            assert self.moto is not None
            self.moto.empty(BUCKET, f"{name}/")
        else:
            C.remove_tree(self.work / "cold" / name)


def dispatch_cell(st: Any, target: Target, name: str) -> dict[str, Any]:
    from mqtier.backend.metered import RequestBill
    from mqtier.tier.dispatch import DispatchOptions, run_dispatch

    url, opts = target.location(name)
    bill = RequestBill()
    cold = C.open_warm_cold(url, opts, bill)
    try:
        t0 = time.perf_counter()
        report = run_dispatch(st, cold, DispatchOptions(force=True))
        wall = time.perf_counter() - t0
    finally:
        cold.close()
        target.cleanup(name)
    rep = report.to_json()
    rep.pop("queues", None)  # 1,000 entries; the count is enough here
    counts = C.bill_counts(bill)
    puts = counts["put"] + counts["create"]
    budget = math.ceil(report.stored_bytes / BUDGET_UNIT) + 2
    return {
        "report": rep,
        "wall_s": wall,
        "bill": bill.to_json(),
        "requests": counts,
        "put_create": puts,
        "put_budget": budget,
        "mb_per_s": C.mb(report.raw_bytes) / report.seconds,
        "compression": C.ratio(report.raw_bytes, report.stored_bytes),
    }


def baseline_cell(
    target: Target, name: str, raw_bytes: int, payload: bytes, tail: bytes
) -> dict[str, Any]:
    from mqtier.backend.metered import RequestBill

    n_full = raw_bytes // BASE_OBJECT
    datas = [payload] * n_full + ([tail] if tail else [])
    url, opts = target.location(name)
    bill = RequestBill()
    cold = C.open_warm_cold(url, opts, bill)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(THREADS, thread_name_prefix="bench-put") as pool:
            futs = [pool.submit(cold.put, f"base/{i:06d}.bin", d) for i, d in enumerate(datas)]
            for f in futs:
                f.result()
        seconds = time.perf_counter() - t0
    finally:
        cold.close()
        target.cleanup(name)
    sent = sum(len(d) for d in datas)
    assert sent == raw_bytes, (sent, raw_bytes)
    return {
        "objects": len(datas),
        "bytes": sent,
        "seconds": seconds,
        "mb_per_s": C.mb(sent) / seconds,
        "requests": C.bill_counts(bill),
    }


def make_sparse_store(root: Path) -> Any:
    """1,000 queues x 10 messages of 200 B (JSON text), all durable and dispatched."""
    from mqtier.format.message import Message

    rng = random.Random("sparse")
    filler = C._filler(rng, 4096)
    st = C.bench_store(root, BROKER, FILE_BYTES, TOPIC, QUEUES)
    msgs = [
        Message(
            TOPIC,
            C.json_body(rng, i, SPARSE_BODY, filler),
            queue_id=i % QUEUES,
            keys=(f"{rng.getrandbits(120):030x}",),
            tags=C.TAGS[i % 4],
        )
        for i in range(QUEUES * SPARSE_PER_QUEUE)
    ]
    for part in C.chunks(msgs, 4096):
        st.append_batch(part)
    st.wait_dispatched()
    return st


def sparse_cell(st: Any, target: Target, name: str) -> dict[str, Any]:
    from mqtier.backend.metered import RequestBill
    from mqtier.tier.dispatch import DispatchOptions, run_dispatch

    url, opts = target.location(name)
    bill = RequestBill()
    cold = C.open_warm_cold(url, opts, bill)
    try:
        report = run_dispatch(st, cold, DispatchOptions(force=True))
    finally:
        cold.close()
        target.cleanup(name)
    rep = report.to_json()
    rep.pop("queues", None)
    counts = C.bill_counts(bill)
    return {
        "report": rep,
        "bill": bill.to_json(),
        "requests": counts,
        "put_create": counts["put"] + counts["create"],
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    _args, target_bytes, repeats = C.size_args(
        __doc__, "~64 MiB instead of ~1 GiB", FULL_BYTES, QUICK_BYTES
    )

    info = C.machine_info()
    print(
        f"mqtier dispatch benchmark: {info['date']}, {info['nproc']} CPUs, {info['mem_total']}, "
        f"Python {info['python']}; fill {target_bytes / 2**20:,.0f} MiB of mixed records over "
        f"{QUEUES} queues ({HOT_QUEUES} carry ~{HOT_SHARE:.0%}), repeats {repeats}",
        flush=True,
    )
    work = C.tmp_dir("dispatch-")
    tempfile.tempdir = str(work)  # moto spills objects over ~5 MiB to temporary files
    moto: C.MotoS3 | None = None
    st = sparse_st = None
    try:
        moto = C.MotoS3()
        moto.bucket(BUCKET)
        targets = {k: Target(k, moto, work) for k in TARGETS}

        pick, hot = skewed_picker()
        st = C.bench_store(work / "store", BROKER, FILE_BYTES, TOPIC, QUEUES)
        fill = C.fill_store(st, TOPIC, target_bytes, pick, workload="mixed", seed=1)
        per_queue = fill.pop("record_bytes_per_queue")
        hot_bytes = sum(per_queue.get(q, 0) for q in hot)
        fill["hot_queue_share"] = C.ratio(hot_bytes, fill["record_bytes"])
        fill["record_bytes_per_queue_max"] = max(per_queue.values())
        fill["record_bytes_per_queue_median_cold"] = C.median(
            [per_queue.get(q, 0) for q in range(QUEUES) if q not in set(hot)]
        )
        print(
            f"{C.fill_line(fill)}; {fill['queues_used']} queues used, the 100 hot ones hold "
            f"{fill['hot_queue_share']:.1%} of the bytes",
            flush=True,
        )

        t0 = time.perf_counter()
        sparse_st = make_sparse_store(work / "sparse")
        print(
            f"sparse store: {QUEUES} queues x {SPARSE_PER_QUEUE} msgs of {SPARSE_BODY} B, made in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        payload = C.object_payload(BASE_OBJECT)
        tail = payload[: fill["record_bytes"] % BASE_OBJECT]
        runs: list[dict[str, Any]] = []
        for rep in range(1, repeats + 1):
            run: dict[str, Any] = {}
            for kind, target in targets.items():
                cells: dict[str, Any] = {}
                order = ("dispatch", "baseline") if rep % 2 else ("baseline", "dispatch")
                for cell in order:
                    name = f"{cell}-r{rep}"
                    if cell == "dispatch":
                        d = dispatch_cell(st, target, name)
                        assert d["report"]["messages"] == fill["messages"], d["report"]
                        assert d["report"]["raw_bytes"] == fill["record_bytes"], d["report"]
                        cells[cell] = d
                        print(
                            f"  rep {rep} {kind:4s} dispatch: {d['mb_per_s']:.1f} MB/s, "
                            f"{d['report']['seconds']:.2f} s, ratio {d['compression']:.2f}, "
                            f"{d['report']['objects']} objects, {d['report']['commits']} commits, "
                            f"{d['put_create']} PUT+create (budget {d['put_budget']})",
                            flush=True,
                        )
                    else:
                        b = baseline_cell(target, name, fill["record_bytes"], payload, tail)
                        cells[cell] = b
                        print(
                            f"  rep {rep} {kind:4s} baseline: {b['mb_per_s']:.1f} MB/s, "
                            f"{b['seconds']:.2f} s, {b['objects']} x 8 MiB put",
                            flush=True,
                        )
                cells["ratio"] = C.ratio(
                    cells["dispatch"]["mb_per_s"], cells["baseline"]["mb_per_s"]
                )
                run[kind] = cells
            s = sparse_cell(sparse_st, targets["s3"], f"sparse-r{rep}")
            run["sparse"] = s
            print(
                f"  rep {rep} s3   sparse: {s['report']['messages']:,} msgs in "
                f"{s['report']['queues_tiered']} queues, {s['report']['objects']} objects, "
                f"{s['put_create']} PUT+create, {s['report']['seconds']:.2f} s",
                flush=True,
            )
            runs.append(run)
    finally:
        for store in (st, sparse_st):
            if store is not None:
                store.close()
        if moto is not None:
            moto.close()
        tempfile.tempdir = None
        C.remove_tree(work)

    results: dict[str, Any] = {
        "machine": info,
        "params": {
            "target_record_bytes": target_bytes,
            "queues": QUEUES,
            "hot_queues": HOT_QUEUES,
            "hot_share": HOT_SHARE,
            "commitlog_file_bytes": FILE_BYTES,
            "baseline_object_bytes": BASE_OBJECT,
            "baseline_threads": THREADS,
            "baseline_call": "cold.put via open_cold_store (s3: s3fs pipe_file)",
            "repeats": repeats,
        },
        "fill": fill,
        "runs": runs,
        "median": {},
    }
    rows = []
    goals = []
    for kind in TARGETS:
        ds = [r[kind]["dispatch"] for r in runs]
        bs = [r[kind]["baseline"] for r in runs]
        m = {
            "dispatch_mb_per_s": C.median([d["mb_per_s"] for d in ds]),
            "baseline_mb_per_s": C.median([b["mb_per_s"] for b in bs]),
            "ratio": C.median([r[kind]["ratio"] for r in runs]),
            "compression": C.median([d["compression"] for d in ds]),
            "objects": C.median([d["report"]["objects"] for d in ds]),
            "commits": C.median([d["report"]["commits"] for d in ds]),
            "put": C.median([d["requests"]["put"] for d in ds]),
            "create": C.median([d["requests"]["create"] for d in ds]),
            "put_create": C.median([d["put_create"] for d in ds]),
            "put_budget": C.median([d["put_budget"] for d in ds]),
            "other_requests": C.median(
                [sum(v for k, v in d["requests"].items() if k not in ("put", "create")) for d in ds]
            ),
            "stored_mib": C.median([d["report"]["stored_bytes"] / 2**20 for d in ds]),
        }
        results["median"][kind] = m
        label = "moto S3" if kind == "s3" else "file://"
        rows.append(
            [
                label,
                f"{m['dispatch_mb_per_s']:.1f}",
                C.spread([d["mb_per_s"] for d in ds]),
                f"{m['baseline_mb_per_s']:.1f}",
                f"{m['ratio']:.2f}x",
                f"{m['compression']:.2f}x",
                f"{m['stored_mib']:,.1f}",
                C.fmt_int(m["objects"]),
                C.fmt_int(m["commits"]),
                f"{m['put']:.0f}+{m['create']:.0f}",
                C.fmt_int(m["put_budget"]),
                C.fmt_int(m["other_requests"]),
            ]
        )
        # The baseline is s3fs PUTs of 8 MiB objects, for both targets; file:// is also
        # held to a page-cache PUT of its own, which is information, not the goal.
        m["ratio_vs_s3fs"] = C.median(
            [r[kind]["dispatch"]["mb_per_s"] / r["s3"]["baseline"]["mb_per_s"] for r in runs]
        )
        goals.append(
            [
                f"dispatch MB/s >= {GOAL_RATIO:.2f} x s3fs 8 MiB PUTs",
                label,
                f"{m['ratio_vs_s3fs']:.2f}x",
                verdict(m["ratio_vs_s3fs"] >= GOAL_RATIO),
            ]
        )
        if kind != "s3":
            goals.append(
                [
                    "(info) dispatch MB/s vs file:// 8 MiB PUTs",
                    label,
                    f"{m['ratio']:.2f}x",
                    "not a goal",
                ]
            )
        goals.append(
            [
                "PUT+create <= ceil(stored / 4 MiB) + 2",
                label,
                f"{m['put_create']:.0f} vs {m['put_budget']:.0f}",
                verdict(m["put_create"] <= m["put_budget"]),
            ]
        )
        goals.append(
            [
                f"compression >= {GOAL_COMPRESSION:g}x",
                label,
                f"{m['compression']:.2f}x",
                verdict(m["compression"] >= GOAL_COMPRESSION),
            ]
        )
    sp = [r["sparse"] for r in runs]
    sparse_m = {
        "put_create": C.median([s["put_create"] for s in sp]),
        "put": C.median([s["requests"]["put"] for s in sp]),
        "create": C.median([s["requests"]["create"] for s in sp]),
        "objects": C.median([s["report"]["objects"] for s in sp]),
        "seconds": C.median([s["report"]["seconds"] for s in sp]),
    }
    results["median"]["sparse"] = sparse_m
    goals.append(
        [
            f"sparse (1,000 queues x 10 msgs) PUT+create <= {GOAL_SPARSE}",
            "moto S3",
            (
                f"{sparse_m['put_create']:.0f} ({sparse_m['put']:.0f} put + "
                f"{sparse_m['create']:.0f} create, {sparse_m['objects']:.0f} objects, "
                f"{sparse_m['seconds']:.2f} s)"
            ),
            verdict(sparse_m["put_create"] <= GOAL_SPARSE),
        ]
    )
    print()
    print(
        C.table(
            rows,
            [
                "target",
                "dispatch MB/s",
                "range",
                "baseline MB/s",
                "vs baseline",
                "compression",
                "stored MiB",
                "objects",
                "commits",
                "put+create",
                "PUT budget",
                "other reqs",
            ],
        )
    )
    print(
        f"\nMB = 10^6 bytes of records ({fill['record_bytes'] / 2**20:,.1f} MiB, "
        f"{fill['messages']:,} msgs). Baseline: the same bytes as 8 MiB objects, cold.put via "
        f"open_cold_store (s3: s3fs pipe_file), {THREADS} threads. Medians of {repeats} repeat(s)."
    )
    print()
    print(C.table(goals, ["goal", "target", "measured", "verdict"]))
    path = C.write_results("dispatch", results)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
