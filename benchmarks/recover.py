"""Recovery speed: how fast ``Store.open`` scans the commit log and rebuilds derived files.

A child process fills a store (1 KiB-average JSON bodies, one key each, ``append_batch`` of 4096
messages with up to 3 batches in flight) with ~1 GiB of commit log in 256 MiB files, prints the
durable end once its last batch is acknowledged, and is SIGKILLed by this script. Then:

  crash, warm     Store.open right after the kill (page cache as the crash left it): recovery
                  scans from the dispatch checkpoint (at most ~1 s of data behind) and replays.
  crash, cold     the same crashed state (derived files restored from a copy taken right after
                  the kill), with the page cache dropped first: a machine crash/reboot.
  rebuild, cold   ``abort`` recreated; ``mqtier.dispatch``, ``checkpoint``, ``consumequeue/`` and
                  ``index/`` deleted: recovery must scan and re-dispatch everything from offset 0.
  rebuild, warm   the same, with the commit log in the page cache.

For each: wall seconds of ``Store.open`` (which runs recovery), the bytes it scanned
(``recovery.end_offset - recovery.scan_from``), MB/s of that, the bytes it replayed into the
consume queues and index (``end_offset - redispatch_from``; recovery may replay from further
back than it scans) and messages re-dispatched per second. "cold" needs root (``echo 3 > /proc/sys/vm/drop_caches``); the JSON records whether the
drop worked.

    .venv/bin/python benchmarks/recover.py [--quick] [--repeats N] [--file-size 256M]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

TOPIC = "bench"
QUEUES = 8
FILL_BATCH = 4096
FULL_BYTES = 1 << 30
QUICK_BYTES = 128 << 20
DERIVED = ("consumequeue", "index", "checkpoint", "mqtier.dispatch")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


# ---- the child: fill, report, wait to be killed --------------------------------------------


def fill_child(root: Path, target: int, file_bytes: int) -> None:
    from collections import deque

    from mqtier import Message, Store, StoreConfig

    bodies = C.body_pool("1k", 16384, seed=3)
    st = Store.open(root, create=True, config=StoreConfig(commitlog_file_bytes=file_bytes))
    st.create_topic(TOPIC, QUEUES)
    t0 = time.perf_counter()
    n = 0
    body_bytes = 0
    acked_end = 0
    in_flight: deque[Any] = deque()
    tags = C.TAGS
    while acked_end < target:
        msgs = []
        for _ in range(FILL_BATCH):
            body = bodies[n & 16383]
            msgs.append(Message(TOPIC, body, keys=(f"key-{n:024d}",), tags=tags[n & 3]))
            body_bytes += len(body)
            n += 1
        in_flight.append(st.append_batch_async(msgs))
        if len(in_flight) >= 3:
            res = in_flight.popleft().wait()
            acked_end = res[-1].phy_offset + res[-1].size
    while in_flight:
        res = in_flight.popleft().wait()
        acked_end = res[-1].phy_offset + res[-1].size
    seconds = time.perf_counter() - t0
    doc = {
        "acked_end": acked_end,
        "messages": n,
        "body_bytes": body_bytes,
        "seconds": seconds,
        "durable_end": st.commitlog.durable_end,
    }
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
    time.sleep(3600)  # the parent SIGKILLs us now: every batch above was acknowledged


def crash_fill(root: Path, target: int, file_bytes: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--fill-child",
        str(root),
        str(target),
        str(file_bytes),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fill child exited {proc.wait()} without reporting")
        doc: dict[str, Any] = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    doc["wall_s"] = time.perf_counter() - t0
    doc["fill_msgs_per_s"] = doc["messages"] / doc["seconds"]
    doc["fill_mb_per_s"] = C.mb(doc["body_bytes"]) / doc["seconds"]
    return doc


# ---- the parent: prepare a state, time Store.open ------------------------------------------


def snapshot(root: Path, snap: Path) -> None:
    """Copy everything but the commit log (sparse files stay sparse)."""
    snap.mkdir()
    for p in root.iterdir():
        if p.name != "commitlog":
            subprocess.run(["cp", "-a", "--sparse=always", str(p), str(snap)], check=True)


def restore(root: Path, snap: Path) -> None:
    for p in root.iterdir():
        if p.name == "commitlog":
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    for p in snap.iterdir():
        subprocess.run(["cp", "-a", "--sparse=always", str(p), str(root)], check=True)


def make_rebuild_state(root: Path) -> None:
    for name in DERIVED:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    (root / "abort").write_text("0")
    os.sync()


def timed_open(root: Path, *, cold: bool) -> dict[str, Any]:
    from mqtier import Store

    dropped = C.drop_caches() if cold else False
    os.sync()
    t0 = time.perf_counter()
    st = Store.open(root, writable=True)
    seconds = time.perf_counter() - t0
    try:
        rep = st.recovery
        assert rep is not None
        t1 = time.perf_counter()
    finally:
        st.close()
    close_s = time.perf_counter() - t1
    scanned = rep.end_offset - rep.scan_from
    return {
        "cache": ("cold" if dropped else "cold requested, drop FAILED: warm") if cold else "warm",
        "open_s": seconds,
        "recovery_s": rep.seconds,
        "close_s": close_s,
        "clean_shutdown": rep.clean_shutdown,
        "scan_from": rep.scan_from,
        "end_offset": rep.end_offset,
        "scanned_bytes": scanned,
        "redispatch_from": rep.redispatch_from,
        "messages_redispatched": rep.messages_redispatched,
        "index_files_dropped": len(rep.index_files_dropped),
        "files_removed": len(rep.files_removed),
        "replayed_bytes": rep.end_offset - rep.redispatch_from,
        "scan_mb_per_s": C.mb(scanned) / seconds,
        "replay_mb_per_s": C.mb(rep.end_offset - rep.redispatch_from) / seconds,
        "redispatch_msgs_per_s": rep.messages_redispatched / seconds,
    }


def one_repeat(target: int, file_bytes: int, rep: int) -> dict[str, Any]:
    work = C.tmp_dir("recover-")
    root = work / "store"
    out: dict[str, Any] = {}
    try:
        fill = crash_fill(root, target, file_bytes)
        out["fill"] = fill
        print(
            f"  rep {rep} fill: {fill['messages']:,} msgs, commit log {fill['acked_end'] / 2**20:,.0f}"
            f" MiB in {fill['seconds']:.1f} s ({fill['fill_msgs_per_s']:,.0f} msgs/s, "
            f"{fill['fill_mb_per_s']:.0f} MB/s), then SIGKILL",
            flush=True,
        )
        snap = work / "snap"
        snapshot(root, snap)
        variants: tuple[tuple[str, Callable[[], None] | None, bool], ...] = (
            ("crash, warm", None, False),
            ("crash, cold", functools.partial(restore, root, snap), True),
            ("rebuild, cold", functools.partial(make_rebuild_state, root), True),
            ("rebuild, warm", functools.partial(make_rebuild_state, root), False),
        )
        for variant, prepare, cold in variants:
            if prepare is not None:
                prepare()
            r = timed_open(root, cold=cold)
            out[variant] = r
            assert r["end_offset"] == fill["acked_end"], (r["end_offset"], fill["acked_end"])
            print(
                f"  rep {rep} {variant:13s}: open {r['open_s']:.2f} s, scanned "
                f"{r['scanned_bytes'] / 2**20:,.0f} MiB from {r['scan_from']:,} "
                f"({r['scan_mb_per_s']:.0f} MB/s), re-dispatched {r['messages_redispatched']:,} "
                f"from {r['redispatch_from']:,} ({r['redispatch_msgs_per_s']:,.0f} msgs/s, "
                f"{r['replay_mb_per_s']:.0f} MB/s of log replayed) [{r['cache']}]",
                flush=True,
            )
    finally:
        C.remove_tree(work)
    return out


VARIANTS = ("crash, warm", "crash, cold", "rebuild, cold", "rebuild, warm")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--fill-child":
        fill_child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~128 MiB instead of ~1 GiB")
    ap.add_argument("--repeats", type=int, default=None, help="default 2 (quick: 1)")
    ap.add_argument("--file-size", default="256M", help="commit-log file size (default 256M)")
    ap.add_argument("--size", default=None, help="commit-log bytes to fill (default 1G / 128M)")
    args = ap.parse_args()
    target = parse_size(args.size) if args.size else (QUICK_BYTES if args.quick else FULL_BYTES)
    file_bytes = parse_size(args.file_size)
    repeats = args.repeats or (1 if args.quick else 2)
    info = C.machine_info()
    print(
        f"mqtier recovery benchmark: {info['date']}, {info['nproc']} CPUs, {info['mem_total']}, "
        f"Python {info['python']}; fill {target / 2**20:,.0f} MiB in "
        f"{file_bytes / 2**20:,.0f} MiB files, repeats {repeats}"
    )
    runs = [one_repeat(target, file_bytes, rep + 1) for rep in range(repeats)]
    results: dict[str, Any] = {
        "machine": info,
        "params": {"target_bytes": target, "file_bytes": file_bytes, "repeats": repeats},
        "runs": runs,
        "median": {},
    }
    rows = []
    for v in VARIANTS:
        rs = [r[v] for r in runs]
        m = {
            k: C.median([r[k] for r in rs])
            for k in (
                "open_s",
                "scanned_bytes",
                "replayed_bytes",
                "messages_redispatched",
                "scan_mb_per_s",
                "replay_mb_per_s",
                "redispatch_msgs_per_s",
            )
        }
        m["cache"] = rs[0]["cache"]
        results["median"][v] = m
        rows.append(
            [
                v,
                str(m["cache"]),
                f"{m['open_s']:.2f}",
                f"{m['scanned_bytes'] / 2**20:,.0f}",
                f"{m['scan_mb_per_s']:.0f}",
                f"{m['replayed_bytes'] / 2**20:,.0f}",
                C.fmt_int(m["messages_redispatched"]),
                C.fmt_int(m["redispatch_msgs_per_s"]),
            ]
        )
    fill_mb = C.median([r["fill"]["fill_mb_per_s"] for r in runs])
    fill_msgs = C.median([r["fill"]["fill_msgs_per_s"] for r in runs])
    results["fill"] = {"mb_per_s": fill_mb, "msgs_per_s": fill_msgs}
    print()
    print(
        C.table(
            rows,
            [
                "variant",
                "page cache",
                "open s",
                "scanned MiB",
                "scan MB/s",
                "replayed MiB",
                "re-dispatched",
                "re-dispatch msgs/s",
            ],
        )
    )
    print(
        f"\nfill (library append_batch, 4096/batch, 3 in flight): {fill_msgs:,.0f} msgs/s, "
        f"{fill_mb:.0f} MB/s of bodies (median)"
    )
    path = C.write_results("recover", results)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
