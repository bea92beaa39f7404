"""Durable ingest throughput: mqtier against a plain-file limit and SQLite, in the same run.

Cells (see benchmarks/README.md for the goals):

  A  plain-file limit: pure-Python framing (RocketMQ-like header + zlib.crc32 + key + body,
     b"".join per batch) then os.pwrite + os.fdatasync per batch, on a pre-written file.
  B  SQLite WAL, synchronous=FULL, table (topic, queue_id, offset, key, body) + index on key,
     one transaction per batch.
  C  ``mqtier ingest --json`` of a JSON Lines file with the same messages, in a subprocess
     (store created beforehand by a one-message ingest, so the 1 GiB pre-write is not timed).
  D  64 threads, each appending one message at a time with ``Store.append`` (group commit).
  D0 the same 64 threads against a minimal pure-Python group commit (the anchor for D).
  F  a new store: ``Store.open(create=True)`` then one ``append``, until it is durable (goal
     <= 50 ms), against creating one file, writing the same record and fdatasync-ing it and
     its directory (the floor); then ``mqtier ingest`` of 5,000 1 KiB messages into another
     new store, its wall time and the disk its commit log takes (``du``: allocated blocks).

  R  (``--rss SIZE`` only) peak RSS of ``mqtier ingest`` of SIZE of 1 KiB JSON lines (goal:
     <= 256 MiB for 2 GB), the child's own maximum resident set from ``wait4``.

A, B and C use the same messages and the CLI's batching rule (1024 messages or 1 MiB).

    .venv/bin/python benchmarks/ingest.py [--quick] [--repeats N]
    .venv/bin/python benchmarks/ingest.py --rss 2G
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

TOPIC = "bench"
QUEUES = 8
FULL_COUNTS = {"1k": 300_000, "mixed": 40_000}
GOALS = {
    "ca_msgs_1k": 0.60,
    "ca_mbps_mixed": 0.70,
    "cb": 5.0,
    "threads_msgs": 50_000,
    "threads_p99_ms": 5.0,
}

# A RocketMQ v4 record header (17 fields, 88 B) plus topic length, topic and key length: 96 B.
FRAME = struct.Struct(">iiiiiqqiq4siq4siiqiB5sH")
HOST = bytes([127, 0, 0, 1])
MAGIC = 0xDAA320A7 - (1 << 32)  # RocketMQ MESSAGE_MAGIC_CODE as a signed int32


# ---- A: the plain-file limit ---------------------------------------------------------------


def run_plain_file(wl: C.Workload, workdir: Path) -> dict[str, Any]:
    keys = [k.encode() for k in wl.keys]
    overhead = FRAME.size + len(keys[0])
    bounds = C.batch_bounds([len(b) for b in wl.bodies], overhead)
    total = wl.body_bytes + overhead * wl.count
    path = workdir / "plain.log"
    C.prewrite_zero_file(path, (total // (1 << 20) + 2) << 20)
    fd = os.open(path, os.O_RDWR)
    bodies = wl.bodies
    pack = FRAME.pack
    crc32 = zlib.crc32
    topic = TOPIC.encode()
    try:
        t0 = time.perf_counter()
        pos = 0
        now = int(time.time() * 1000)
        for start, end in bounds:
            parts = []
            for i in range(start, end):
                body = bodies[i]
                key = keys[i]
                size = FRAME.size + len(key) + len(body)
                parts.append(
                    pack(
                        size,
                        MAGIC,
                        crc32(body) & 0x7FFFFFFF,
                        i & 7,
                        0,
                        i,
                        pos,
                        0,
                        now,
                        HOST,
                        0,
                        now,
                        HOST,
                        10911,
                        0,
                        0,
                        len(body),
                        5,
                        topic,
                        len(key),
                    )
                )
                parts.append(key)
                parts.append(body)
            data = b"".join(parts)
            os.pwrite(fd, data, pos)
            os.fdatasync(fd)
            pos += len(data)
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
    return {
        "seconds": seconds,
        "messages": wl.count,
        "body_bytes": wl.body_bytes,
        "disk_bytes": pos,
        "batches": len(bounds),
        "msgs_per_s": wl.count / seconds,
        "mb_per_s": C.mb(wl.body_bytes) / seconds,
    }


# ---- B: SQLite -----------------------------------------------------------------------------


def run_sqlite(wl: C.Workload, workdir: Path) -> dict[str, Any]:
    bounds = C.batch_bounds([len(b) for b in wl.bodies], FRAME.size + len(wl.keys[0]))
    path = workdir / "bench.sqlite"
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute(
            "CREATE TABLE msgs (topic TEXT, queue_id INTEGER, offset INTEGER, key TEXT, body BLOB)"
        )
        con.execute("CREATE INDEX msgs_key ON msgs(key)")
        bodies, keys = wl.bodies, wl.keys
        offsets = [0] * QUEUES
        sql = "INSERT INTO msgs VALUES (?, ?, ?, ?, ?)"
        t0 = time.perf_counter()
        for start, end in bounds:
            rows = []
            for i in range(start, end):
                q = zlib.crc32(keys[i].encode()) % QUEUES
                rows.append((TOPIC, q, offsets[q], keys[i], bodies[i]))
                offsets[q] += 1
            con.execute("BEGIN")
            con.executemany(sql, rows)
            con.execute("COMMIT")
        seconds = time.perf_counter() - t0
        (count,) = con.execute("SELECT count(*) FROM msgs").fetchone()
        assert count == wl.count, count
    finally:
        con.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {
        "seconds": seconds,
        "messages": wl.count,
        "body_bytes": wl.body_bytes,
        "batches": len(bounds),
        "msgs_per_s": wl.count / seconds,
        "mb_per_s": C.mb(wl.body_bytes) / seconds,
    }


# ---- C: the mqtier CLI ---------------------------------------------------------------------


def mqtier_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("mqtier")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mqtier"]


def write_jsonl(wl: C.Workload, path: Path) -> None:
    import orjson

    dumps = orjson.dumps

    with open(path, "wb") as f:
        f.writelines(
            dumps({"body": body.decode("ascii"), "keys": [key], "tags": tag}) + b"\n"
            for body, key, tag in zip(wl.bodies, wl.keys, wl.tags, strict=True)
        )


def cli_ingest(store: Path, jsonl: Path) -> tuple[float, dict[str, Any]]:
    cmd = [
        *mqtier_cmd(),
        "ingest",
        "--store",
        str(store),
        "--topic",
        TOPIC,
        "--queues",
        str(QUEUES),
        "--commitlog-file-size",
        "1G",
        "--json",
        str(jsonl),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return wall, json.loads(proc.stdout)


def run_cli(wl: C.Workload, jsonl: Path, one: Path, workdir: Path) -> dict[str, Any]:
    store = workdir / "store"
    try:
        create_wall, _ = cli_ingest(store, one)  # creates the store and pre-writes file 0
        overhead_wall, _ = cli_ingest(store, one)  # fixed cost of one command on a store
        wall, doc = cli_ingest(store, jsonl)
        assert doc["messages"] == wl.count, doc["messages"]
        disk = doc["commitlog_end"] - doc["commitlog_start"]
    finally:
        C.remove_tree(store)
    return {
        "seconds": wall,
        "cmd_seconds": doc["seconds"],
        "messages": wl.count,
        "body_bytes": wl.body_bytes,
        "disk_bytes": disk,
        "msgs_per_s": wl.count / wall,
        "mb_per_s": C.mb(wl.body_bytes) / wall,
        "cmd_msgs_per_s": doc["messages_per_second"],
        "cmd_mb_per_s": C.mb(wl.body_bytes) / doc["seconds"],
        "create_store_wall_s": create_wall,
        "one_message_wall_s": overhead_wall,
    }


# ---- D0: the same 64 threads against a minimal pure-Python group commit ---------------------


def run_threads_minimal(threads: int, duration: float, workdir: Path) -> dict[str, Any]:
    """The thread cell's anchor: the least a CPython group commit can do per message.

    Each thread frames its message (header + crc32 + key + body), appends it to the open batch
    under one Condition and waits on the batch's Event; one writer thread joins the batch and
    does pwrite + fdatasync on a pre-written file, then sets the Event. No queues, no index.
    """
    pool = C.make_workload("1k", 8192, seed=11)
    bodies, keys = pool.bodies, [k.encode() for k in pool.keys]
    path = workdir / "gc-min.log"
    C.prewrite_zero_file(path, 1 << 30)
    fd = os.open(path, os.O_RDWR)
    cond = threading.Condition()
    state: dict[str, Any] = {"items": [], "event": threading.Event(), "closed": False}
    counts = {"batches": 0, "items": 0, "pos": 0}
    topic = TOPIC.encode()

    def writer() -> None:
        while True:
            with cond:
                while not state["items"] and not state["closed"]:
                    cond.wait()
                if not state["items"]:
                    return
                items, event = state["items"], state["event"]
                state["items"], state["event"] = [], threading.Event()
            data = b"".join(items)
            if counts["pos"] + len(data) > 1 << 30:
                counts["pos"] = 0
            os.pwrite(fd, data, counts["pos"])
            os.fdatasync(fd)
            counts["pos"] += len(data)
            counts["batches"] += 1
            counts["items"] += len(items)
            event.set()

    w = threading.Thread(target=writer, name="gc-min-writer")
    w.start()
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()
    lats: list[list[int]] = [[] for _ in range(threads)]

    def worker(n: int) -> None:
        out = lats[n]
        j = n * 127
        perf = time.perf_counter_ns
        barrier.wait()
        while not stop.is_set():
            j = (j + 1) & 8191
            body, key = bodies[j], keys[j]
            t0 = perf()
            rec = FRAME.pack(
                FRAME.size + len(key) + len(body),
                MAGIC,
                zlib.crc32(body) & 0x7FFFFFFF,
                j & 7,
                0,
                j,
                0,
                0,
                0,
                HOST,
                0,
                0,
                HOST,
                10911,
                0,
                0,
                len(body),
                5,
                topic,
                len(key),
            )
            with cond:
                items = state["items"]
                items.append(rec + key + body)
                event = state["event"]
                if len(items) == 1:
                    cond.notify()
            event.wait()
            out.append(perf() - t0)

    seconds = C.run_threads_for(worker, threads, barrier, stop, duration)
    with cond:
        state["closed"] = True
        cond.notify()
    w.join()
    os.close(fd)
    path.unlink()
    all_lat = sorted(x for lst in lats for x in lst)
    n = len(all_lat)
    return {
        "threads": threads,
        "seconds": seconds,
        "messages": n,
        "msgs_per_s": n / seconds,
        "p50_ms": C.percentile(all_lat, 50) / 1e6,
        "p99_ms": C.percentile(all_lat, 99) / 1e6,
        "avg_batch": counts["items"] / counts["batches"] if counts["batches"] else float("nan"),
    }


# ---- D: 64 threads, one message per append -------------------------------------------------


def run_threads(threads: int, duration: float, workdir: Path) -> dict[str, Any]:
    from mqtier import Message, Store, StoreConfig

    pool = C.make_workload("1k", 8192, seed=11)
    bodies, keys = pool.bodies, pool.keys
    root = workdir / "tstore"
    t_open = time.perf_counter()
    st = Store.open(root, create=True, config=StoreConfig(commitlog_file_bytes=1 << 30))
    open_s = time.perf_counter() - t_open
    try:
        st.create_topic(TOPIC, QUEUES)
        for i in range(64):  # warm up the writer and the reput
            st.append(Message(TOPIC, bodies[i], keys=(keys[i],)))
        before = st.stats()
        barrier = threading.Barrier(threads + 1)
        stop = threading.Event()
        lats: list[list[int]] = [[] for _ in range(threads)]
        body_bytes = [0] * threads
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            out = lats[n]
            nb = 0
            j = n * 127
            perf = time.perf_counter_ns
            append = st.append
            barrier.wait()
            try:
                while not stop.is_set():
                    j = (j + 1) & 8191
                    body = bodies[j]
                    msg = Message(TOPIC, body, keys=(keys[j],))
                    t0 = perf()
                    append(msg)
                    out.append(perf() - t0)
                    nb += len(body)
            except Exception as exc:  # noqa: BLE001 - re-raised on the main thread
                errors.append(exc)
            body_bytes[n] = nb

        seconds = C.run_threads_for(worker, threads, barrier, stop, duration)
        after = st.stats()
        if errors:
            raise errors[0]
        t_close = time.perf_counter()
    finally:
        st.close()
    close_s = time.perf_counter() - t_close
    C.remove_tree(root)
    all_lat = sorted(x for lst in lats for x in lst)
    n = len(all_lat)
    commits = after["group_commits"] - before["group_commits"]
    committed = after["messages_committed"] - before["messages_committed"]
    return {
        "threads": threads,
        "seconds": seconds,
        "messages": n,
        "body_bytes": sum(body_bytes),
        "msgs_per_s": n / seconds,
        "mb_per_s": C.mb(sum(body_bytes)) / seconds,
        "p50_ms": C.percentile(all_lat, 50) / 1e6,
        "p90_ms": C.percentile(all_lat, 90) / 1e6,
        "p99_ms": C.percentile(all_lat, 99) / 1e6,
        "max_ms": all_lat[-1] / 1e6 if all_lat else float("nan"),
        "group_commits": commits,
        "avg_batch": committed / commits if commits else float("nan"),
        "open_s": open_s,
        "close_s": close_s,
    }


# ---- driver --------------------------------------------------------------------------------


def run_first_append(workdir: Path) -> dict[str, Any]:
    from mqtier import Message, Store

    body = b"x" * 1024
    floor_dir = workdir / "floor"
    floor_dir.mkdir()
    t0 = time.perf_counter()
    fd = os.open(floor_dir / "file", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, bytes(FRAME.size) + body)  # the same bytes as a record of it
    os.fdatasync(fd)
    os.close(fd)
    dfd = os.open(floor_dir, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    floor_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    st = Store.open(workdir / "first", create=True)
    try:
        st.append(Message(TOPIC, body, keys=("first",)))
        first_s = time.perf_counter() - t0
    finally:
        st.close()
    wl = C.make_workload("1k", 5000, seed=99)
    jsonl = workdir / "five-thousand.jsonl"
    write_jsonl(wl, jsonl)
    t0 = time.perf_counter()
    subprocess.run(
        [*mqtier_cmd(), "ingest", "--store", str(workdir / "five"), "--topic", TOPIC, str(jsonl)],
        check=True,
        capture_output=True,
    )
    ingest_s = time.perf_counter() - t0
    du = sum(p.stat().st_blocks * 512 for p in (workdir / "five" / "commitlog").iterdir())
    for d in ("floor", "first", "five"):
        C.remove_tree(workdir / d)
    return {"first_append_s": first_s, "floor_s": floor_s, "ingest_5000_s": ingest_s,
            "commitlog_du_bytes": du, "body_bytes": wl.body_bytes}  # fmt: skip


def run_rss(total_bytes: int) -> dict[str, Any]:
    """Cell R: peak RSS of one ingest of ``total_bytes`` of 1 KiB JSON lines (written in
    pieces, so this script's own memory stays small)."""
    import orjson

    workdir = C.tmp_dir("ingest-rss-")
    try:
        jsonl, store = workdir / "big.jsonl", workdir / "store"
        one = workdir / "one.jsonl"
        one.write_text('{"body": "warm-up"}\n')
        cli_ingest(store, one)  # creates the store, as cell C does
        count = written = 0
        with open(jsonl, "wb") as f:
            while written < total_bytes:
                wl = C.make_workload("1k", 10_000, seed=count + 1)
                lines = b"".join(
                    orjson.dumps({"body": b.decode("ascii"), "keys": [k], "tags": t}) + b"\n"
                    for b, k, t in zip(wl.bodies, wl.keys, wl.tags, strict=True)
                )
                f.write(lines)
                written += len(lines)
                count += wl.count
        cmd = [*mqtier_cmd(), "ingest", "--store", str(store), "--topic", TOPIC, "--queues",
               str(QUEUES), "--commitlog-file-size", "1G", "--json", str(jsonl)]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
        # (communicate has reaped it: its rusage is in RUSAGE_CHILDREN, the largest child yet)
        import resource

        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            raise RuntimeError(f"ingest exited {proc.returncode}: {err.decode(errors='replace')}")
        doc = json.loads(out)
        assert doc["messages"] == count, (doc["messages"], count)
        return {
            "jsonl_bytes": written,
            "messages": count,
            "seconds": wall,
            "msgs_per_s": count / wall,
            "peak_rss_bytes": peak_kib * 1024,
        }
    finally:
        C.remove_tree(workdir)


def med(runs: list[dict[str, Any]], key: str) -> float:
    return C.median([r[key] for r in runs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1/10 of the volume, 2 s thread cell")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per cell (default 3; 1)")
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--duration", type=float, default=None, help="thread cell seconds (5; 2)")
    ap.add_argument("--skip", default="", help="comma list of cells to skip: A,B,C,D,F")
    ap.add_argument("--rss", default=None, help="only cell R: peak RSS of an ingest of SIZE")
    args = ap.parse_args()
    if args.rss:
        r = run_rss(C.parse_size(args.rss))
        print(
            f"R: ingest of {r['jsonl_bytes'] / 1e9:.2f} GB of JSONL ({r['messages']:,} msgs) in "
            f"{r['seconds']:.1f} s ({r['msgs_per_s']:,.0f} msgs/s): peak RSS "
            f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB (goal <= 256 MiB for 2 GB)"
        )
        C.write_results("ingest-rss", {"machine": C.machine_info(), "R": r})
        return
    scale = 10 if args.quick else 1
    repeats = args.repeats or (1 if args.quick else 3)
    duration = args.duration or (2.0 if args.quick else 5.0)
    skip = {s.strip().upper() for s in args.skip.split(",") if s.strip()}
    counts = {k: v // scale for k, v in FULL_COUNTS.items()}

    info = C.machine_info()
    print(f"mqtier ingest benchmark: {info['date']}, {info['nproc']} CPUs, {info['mem_total']}, ")
    print(f"  Python {info['python']}, SQLite {info['sqlite']}, repeats {repeats}, {counts}")
    workdir = C.tmp_dir("ingest-")
    results: dict[str, Any] = {
        "machine": info,
        "params": {
            "counts": counts,
            "repeats": repeats,
            "batch_messages": C.BATCH_MESSAGES,
            "batch_bytes": C.BATCH_BYTES,
            "threads": args.threads,
            "thread_seconds": duration,
            "frame_header_bytes": FRAME.size,
            "workdir": str(workdir),
        },
        "workloads": {},
        "goals": GOALS,
    }
    try:
        one = workdir / "one.jsonl"
        one.write_text('{"body": "warm-up"}\n')
        loads: dict[str, tuple[C.Workload, Path]] = {}
        for name, count in counts.items():
            wl = C.make_workload(name, count)
            jsonl = workdir / f"{name}.jsonl"
            write_jsonl(wl, jsonl)
            loads[name] = (wl, jsonl)
            print(
                f"  workload {name}: {wl.count:,} msgs, {C.mb(wl.body_bytes):.1f} MB of bodies, "
                f"JSONL {jsonl.stat().st_size / 1e6:.1f} MB"
            )
        cells: dict[str, dict[str, list[dict[str, Any]]]] = {
            n: {"A": [], "B": [], "C": []} for n in loads
        }
        threads_runs: list[dict[str, Any]] = []
        minimal_runs: list[dict[str, Any]] = []
        first_runs: list[dict[str, Any]] = []
        for rep in range(repeats):
            if "F" not in skip:
                r = run_first_append(workdir)
                first_runs.append(r)
                print(
                    f"  rep {rep + 1} first append: {r['first_append_s'] * 1000:.1f} ms (one file"
                    f" written and synced: {r['floor_s'] * 1000:.1f} ms); ingest of 5,000: "
                    f"{r['ingest_5000_s']:.2f} s, commit log du {r['commitlog_du_bytes'] / 2**20:.1f}"
                    f" MiB for {C.mb(r['body_bytes']):.1f} MB of bodies",
                    flush=True,
                )
            for name, (wl, jsonl) in loads.items():
                cells_of: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
                    ("A", functools.partial(run_plain_file, wl, workdir)),
                    ("B", functools.partial(run_sqlite, wl, workdir)),
                    ("C", functools.partial(run_cli, wl, jsonl, one, workdir)),
                )
                for cell, fn in cells_of:
                    if cell in skip:
                        continue
                    r = fn()
                    cells[name][cell].append(r)
                    print(
                        f"  rep {rep + 1} {name:5s} {cell}: {r['msgs_per_s']:>10,.0f} msgs/s "
                        f"{r['mb_per_s']:>7.1f} MB/s ({r['seconds']:.2f} s)",
                        flush=True,
                    )
            if "D" not in skip:
                r = run_threads(args.threads, duration, workdir)
                threads_runs.append(r)
                r0 = run_threads_minimal(args.threads, duration, workdir)
                minimal_runs.append(r0)
                for label, x in (("D ", r), ("D0", r0)):
                    print(
                        f"  rep {rep + 1} threads {label}: {x['msgs_per_s']:>10,.0f} msgs/s, "
                        f"p50 {x['p50_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms, "
                        f"avg batch {x['avg_batch']:.1f}",
                        flush=True,
                    )
    finally:
        C.remove_tree(workdir)

    # ---- summary ----
    rows = []
    for name, by_cell in cells.items():
        summary: dict[str, Any] = {"runs": by_cell}
        for cell, runs in by_cell.items():
            if not runs:
                continue
            summary[cell] = {
                "msgs_per_s": med(runs, "msgs_per_s"),
                "mb_per_s": med(runs, "mb_per_s"),
            }
            if cell == "C":
                summary[cell]["cmd_msgs_per_s"] = med(runs, "cmd_msgs_per_s")
                summary[cell]["cmd_mb_per_s"] = med(runs, "cmd_mb_per_s")
                summary[cell]["one_message_wall_s"] = med(runs, "one_message_wall_s")
            label = {
                "A": "A plain file pwrite+fdatasync",
                "B": "B SQLite WAL FULL",
                "C": "C mqtier ingest (wall)",
            }[cell]
            rows.append(
                [
                    f"{name}",
                    label,
                    C.fmt_int(summary[cell]["msgs_per_s"]),
                    f"{summary[cell]['mb_per_s']:.1f}",
                    C.spread([r["msgs_per_s"] for r in runs]),
                ]
            )
            if cell == "C":
                rows.append(
                    [
                        f"{name}",
                        "C mqtier ingest (its own seconds)",
                        C.fmt_int(summary[cell]["cmd_msgs_per_s"]),
                        f"{summary[cell]['cmd_mb_per_s']:.1f}",
                        C.spread([r["cmd_msgs_per_s"] for r in runs]),
                    ]
                )
        if "A" in summary and "C" in summary:
            summary["C/A msgs"] = C.ratio(summary["C"]["msgs_per_s"], summary["A"]["msgs_per_s"])
            summary["C/A MB"] = C.ratio(summary["C"]["mb_per_s"], summary["A"]["mb_per_s"])
            summary["Ccmd/A msgs"] = C.ratio(
                summary["C"]["cmd_msgs_per_s"], summary["A"]["msgs_per_s"]
            )
            summary["Ccmd/A MB"] = C.ratio(summary["C"]["cmd_mb_per_s"], summary["A"]["mb_per_s"])
        if "B" in summary and "C" in summary:
            summary["C/B"] = C.ratio(summary["C"]["msgs_per_s"], summary["B"]["msgs_per_s"])
            summary["Ccmd/B"] = C.ratio(summary["C"]["cmd_msgs_per_s"], summary["B"]["msgs_per_s"])
        if "A" in summary and "B" in summary:
            summary["A/B"] = C.ratio(summary["A"]["msgs_per_s"], summary["B"]["msgs_per_s"])
        results["workloads"][name] = summary

    print()
    print(C.table(rows, ["workload", "cell", "msgs/s (median)", "MB/s (body)", "msgs/s range"]))
    print()
    ratio_rows = []
    w1, wm = results["workloads"].get("1k", {}), results["workloads"].get("mixed", {})
    checks = [
        ("1k", "C/A msgs/s (wall)", w1.get("C/A msgs"), GOALS["ca_msgs_1k"]),
        ("1k", "C/A msgs/s (cmd seconds)", w1.get("Ccmd/A msgs"), GOALS["ca_msgs_1k"]),
        ("mixed", "C/A MB/s (wall)", wm.get("C/A MB"), GOALS["ca_mbps_mixed"]),
        ("mixed", "C/A MB/s (cmd seconds)", wm.get("Ccmd/A MB"), GOALS["ca_mbps_mixed"]),
        ("1k", "C/B msgs/s (wall)", w1.get("C/B"), GOALS["cb"]),
        ("mixed", "C/B msgs/s (wall)", wm.get("C/B"), GOALS["cb"]),
        ("1k", "A/B msgs/s (reference)", w1.get("A/B"), None),
        ("mixed", "A/B msgs/s (reference)", wm.get("A/B"), None),
    ]
    for wname, what, value, goal in checks:
        if value is not None:
            ratio_rows.append([wname, what, C.fmt_ratio(value, goal)])
    if ratio_rows:
        print(C.table(ratio_rows, ["workload", "ratio", "value"]))
        print()
    if threads_runs:
        d = {
            k: med(threads_runs, k)
            for k in (
                "msgs_per_s",
                "mb_per_s",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "max_ms",
                "avg_batch",
                "group_commits",
            )
        }
        d0 = {k: med(minimal_runs, k) for k in ("msgs_per_s", "p50_ms", "p99_ms", "avg_batch")}
        results["threads"] = {"runs": threads_runs, **d}
        results["threads_minimal"] = {"runs": minimal_runs, **d0}
        results["threads"]["D/D0 msgs"] = C.ratio(d["msgs_per_s"], d0["msgs_per_s"])
        ok_rate = d["msgs_per_s"] >= GOALS["threads_msgs"]
        ok_p99 = d["p99_ms"] <= GOALS["threads_p99_ms"]
        print(
            C.table(
                [
                    [
                        f"D  mqtier: {args.threads} threads x Store.append(1 msg), 1 KiB",
                        C.fmt_int(d["msgs_per_s"]),
                        f"{d['p50_ms']:.2f}",
                        f"{d['p99_ms']:.2f}",
                        f"{d['avg_batch']:.1f}",
                        C.spread([r["msgs_per_s"] for r in threads_runs]),
                    ],
                    [
                        f"D0 minimal Python group commit, {args.threads} threads",
                        C.fmt_int(d0["msgs_per_s"]),
                        f"{d0['p50_ms']:.2f}",
                        f"{d0['p99_ms']:.2f}",
                        f"{d0['avg_batch']:.1f}",
                        C.spread([r["msgs_per_s"] for r in minimal_runs]),
                    ],
                ],
                ["thread cell", "msgs/s", "p50 ms", "p99 ms", "msgs/commit", "msgs/s range"],
            )
        )
        print(f"  D/D0 msgs/s: {C.fmt_ratio(results['threads']['D/D0 msgs'])}")
        print(
            f"  goal >= {GOALS['threads_msgs']:,} msgs/s: {'met' if ok_rate else 'MISSED'}; "
            f"goal p99 <= {GOALS['threads_p99_ms']} ms: {'met' if ok_p99 else 'MISSED'}"
        )
    if first_runs:
        f = {k: med(first_runs, k) for k in first_runs[0]}
        results["first_append"] = {"runs": first_runs, **f}
        ok = f["first_append_s"] <= 0.050
        print(
            f"\nF  first append on a new store: {f['first_append_s'] * 1000:.1f} ms "
            f"(goal <= 50 ms: {'met' if ok else 'MISSED'}; one file written and synced "
            f"{f['floor_s'] * 1000:.1f} ms); ingest of 5,000 1 KiB messages into a new store "
            f"{f['ingest_5000_s']:.2f} s, commit log du {f['commitlog_du_bytes'] / 2**20:.1f} MiB"
        )
    path = C.write_results("ingest", results)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
