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

Open cost (``--open-cost 1G,8G``, issue #13): broker-style stores (1 GiB commit-log files, filled
with the "mixed" workload, then mqtier's own files removed: its dispatch checkpoint, derived-file
manifest and config, as a RocketMQ broker leaves a store) are tiered whole to a ``file://`` cold
tier, then each of ``mqtier offsets``, ``mqtier read`` (10 messages of one queue) and ``mqtier
dispatch --once`` (nothing pending) is timed as a user runs it: a fresh process, interpreter
start included, median of ``--repeats`` (default 3), with and without ``abort``. Baseline, same
run: the same commands on the same store with mqtier's dispatch checkpoint put back. States: a
clean shutdown; a live broker (``abort`` present and a process holding the store's lock; its
consume queues are all in the page cache); a crashed broker (``abort``, nobody holding the
lock: the consume queues may lag, so the open scans as RocketMQ's rule says; reported, no
goal). Goals (clean and live): the largest store within 1.5x of the smallest for each command,
and under 1 s wall.

For each crash variant: wall seconds of ``Store.open`` (which runs recovery), the bytes it scanned
(``recovery.end_offset - recovery.scan_from``), MB/s of that, the bytes it replayed into the
consume queues and index (``end_offset - redispatch_from``; recovery may replay from further
back than it scans) and messages re-dispatched per second. "cold" needs root (``echo 3 > /proc/sys/vm/drop_caches``); the JSON records whether the
drop worked.

    .venv/bin/python benchmarks/recover.py [--quick] [--repeats N] [--file-size 256M]
    .venv/bin/python benchmarks/recover.py --open-cost 1G,8G [--repeats N]
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
        # A rebuild (derived files gone) replays the whole log after recovery found its end.
        rebuilt = st.rebuild_report
        t1 = time.perf_counter()
    finally:
        st.close()
    redispatch_from = rebuilt.replayed_from if rebuilt is not None else rep.redispatch_from
    # (When no derived file was left, recovery's replay is the rebuild: the same records.)
    messages = max(rep.messages_redispatched, rebuilt.messages if rebuilt is not None else 0)
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
        "redispatch_from": redispatch_from,
        "messages_redispatched": messages,
        "index_files_dropped": len(rep.index_files_dropped),
        "files_removed": len(rep.files_removed),
        "replayed_bytes": rep.end_offset - redispatch_from,
        "scan_mb_per_s": C.mb(scanned) / seconds,
        "replay_mb_per_s": C.mb(rep.end_offset - redispatch_from) / seconds,
        "redispatch_msgs_per_s": messages / seconds,
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


# ---- open cost on a broker's store ---------------------------------------------------------

MQTIER_ONLY = ("mqtier.dispatch", "mqtier.derived", "config/mqtier.json")


def mqtier_cli(*args: str) -> tuple[float, str]:
    """Wall seconds of one ``mqtier`` command in a fresh process, and its stdout."""
    exe = Path(sys.executable).with_name("mqtier")
    t0 = time.perf_counter()
    res = subprocess.run([str(exe), *args], check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"mqtier {' '.join(args)}: exit {res.returncode}: {res.stderr[-500:]}")
    return seconds, res.stdout


def broker_style_store(root: Path, cold: str, size: int) -> dict[str, Any]:
    """Fill ``root`` with ``size`` bytes of records in 1 GiB files, tier it all, strip mqtier's
    own files; returns the fill figures and the stripped files' bytes (to put them back)."""
    from mqtier import Store, StoreConfig

    with Store.open(root, create=True, config=StoreConfig(commitlog_file_bytes=FULL_BYTES)) as st:
        st.create_topic(TOPIC, QUEUES)
        fill = C.fill_store(st, TOPIC, size, lambda r: r.randrange(QUEUES), workload="mixed")
    mqtier_cli("dispatch", "--store", str(root), "--to", cold, "--force", "--once", "--json")
    kept = {}
    for name in MQTIER_ONLY:
        kept[name] = (root / name).read_bytes()
        (root / name).unlink()
    (root / "abort").unlink(missing_ok=True)
    return {"fill": fill, "kept": kept}


def hold_lock(root: Path) -> subprocess.Popen[str]:
    """A process holding the store's lock as a running broker does (``abort`` is present)."""
    code = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0); print('held', flush=True); time.sleep(3600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root / "lock")],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def open_cost_commands(root: Path, cold: str) -> dict[str, list[str]]:
    store = ["--store", str(root)]
    return {
        "offsets": ["offsets", *store, "--json"],
        "read": ["read", *store, "--topic", TOPIC, "--queue", "0", "--count", "10", "--json"],
        "dispatch --once": ["dispatch", *store, "--to", cold, "--once", "--json"],
    }


def open_cost(sizes: list[int], repeats: int) -> dict[str, Any]:
    work = C.tmp_dir("open-cost-")
    out: dict[str, Any] = {"sizes": sizes, "repeats": repeats, "stores": {}}
    try:
        for size in sizes:
            root, cold = work / f"store-{size}", f"file://{work / f'cold-{size}'}"
            t0 = time.perf_counter()
            made = broker_style_store(root, cold, size)
            fill = made["fill"]
            print(
                f"  {size / 2**30:g} GiB store: {fill['messages']:,} msgs, "
                f"{fill['record_bytes'] / 2**30:.2f} GiB of records, filled and tiered in "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            cells: dict[str, Any] = {"record_bytes": fill["record_bytes"]}
            states = [("broker, clean", False, False), ("broker, live", True, False),
                      ("broker, crashed", True, False), ("mqtier checkpoint", False, True)]  # fmt: skip
            for state, abort, checkpointed in states:
                if abort:
                    (root / "abort").write_text("0")
                else:
                    (root / "abort").unlink(missing_ok=True)
                for name, data in made["kept"].items():
                    if checkpointed:
                        (root / name).write_bytes(data)
                    else:
                        (root / name).unlink(missing_ok=True)
                holder = hold_lock(root) if state == "broker, live" else None
                for cmd, args in open_cost_commands(root, cold).items():
                    walls = [mqtier_cli(*args)[0] for _ in range(repeats)]
                    cells[f"{state} / {cmd}"] = {"wall_s": C.median(walls), "walls": walls}
                    print(f"    {state:17s} {cmd:15s} {C.median(walls):6.3f} s", flush=True)
                if holder is not None:
                    holder.kill()
                    holder.wait()
            out["stores"][str(size)] = cells
            C.remove_tree(root)
            C.remove_tree(work / f"cold-{size}")
    finally:
        C.remove_tree(work)
    small, large = (out["stores"][str(s)] for s in (min(sizes), max(sizes)))
    rows, verdicts = [], []
    for key in small:
        if key == "record_bytes":
            continue
        a, b = small[key]["wall_s"], large[key]["wall_s"]
        ok = b <= 1.5 * a and b < 1.0
        if key.startswith(("broker, clean", "broker, live")):
            verdicts.append(ok)
        rows.append([key, f"{a:.3f}", f"{b:.3f}", f"{C.ratio(b, a):.2f}x",
                     "PASS" if ok else "MISS"])  # fmt: skip
    print()
    print(C.table(rows, ["state / command", f"{min(sizes) / 2**30:g} GiB s",
                         f"{max(sizes) / 2**30:g} GiB s", "large/small", "<=1.5x, <1 s"]))  # fmt: skip
    out["all_pass"] = all(verdicts)
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--fill-child":
        fill_child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~128 MiB instead of ~1 GiB")
    ap.add_argument("--repeats", type=int, default=None, help="default 2 (quick: 1)")
    ap.add_argument("--file-size", default="256M", help="commit-log file size (default 256M)")
    ap.add_argument("--size", default=None, help="commit-log bytes to fill (default 1G / 128M)")
    ap.add_argument("--open-cost", default=None, metavar="SIZES",
                    help="time commands on broker-style stores of these sizes (e.g. 1G,8G)")  # fmt: skip
    args = ap.parse_args()
    if args.open_cost:
        sizes = [parse_size(x) for x in args.open_cost.split(",")]
        info = C.machine_info()
        print(f"mqtier open cost: {info['date']}, {info['nproc']} CPUs, Python {info['python']}")
        doc = {"machine": info, "open_cost": open_cost(sizes, args.repeats or 3)}
        print(f"results: {C.write_results('recover-open', doc)}")
        return
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
