"""Shared helpers for the mqtier benchmarks: workloads, statistics, batching, results.

Workloads follow docs/machine-facts.md section 1c: body sizes are uniform between a low and a
high bound, "1k" averages 1 KiB (100 B..1948 B) and "mixed" averages ~8.5 KiB (100 B..17308 B).
Bodies are ASCII JSON-like text, so their UTF-8 length is their size and they survive a round
trip through a JSON Lines ``"body"`` string unchanged. Everything is seeded: two runs with the
same arguments generate the same bytes.

Units: MB = 1e6 bytes of message *body*; KiB/MiB are binary.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
TMP_ROOT = OUT_DIR / "tmp"  # same disk as /work, never /dev/shm

# The CLI's ingest chunking rule (mqtier/ingest_chunks.py CHUNK_MESSAGES / CHUNK_BYTES).
BATCH_MESSAGES = 1024
BATCH_BYTES = 1 << 20

WORKLOADS: dict[str, tuple[int, int]] = {
    "1k": (100, 1948),  # mean 1024 B
    "mixed": (100, 17308),  # mean 8704 B (~8.5 KiB)
}
TAGS = ("TagA", "TagB", "TagC", "TagD")


@dataclass(frozen=True, slots=True)
class Workload:
    """Messages of one benchmark cell: bodies, one key each, a tag each."""

    name: str
    bodies: list[bytes]
    keys: list[str]
    tags: list[str]

    @property
    def count(self) -> int:
        return len(self.bodies)

    @property
    def body_bytes(self) -> int:
        return sum(len(b) for b in self.bodies)


_FILLER_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "item",
    "price",
    "quantity",
    "customer",
    "warehouse",
    "shipped",
    "pending",
    "paid",
    "refund",
    "express",
    "standard",
)


def _filler(rng: random.Random, nbytes: int) -> str:
    """Pseudo-text made of words (about as compressible as real JSON payloads)."""
    words = []
    n = 0
    while n < nbytes:
        w = rng.choice(_FILLER_WORDS)
        words.append(w)
        n += len(w) + 1
    return " ".join(words)[:nbytes]


@functools.cache
def wide_filler(nbytes: int = 16 << 20) -> str:
    """A filler far wider than a zstd window, so bodies that compress together rarely overlap.

    With it a block of bodies compresses about as well as word-level text does (~3-4x at zstd
    level 1), not ~10x as bodies cut from one small shared filler do.
    """
    return _filler(random.Random("wide-filler"), nbytes)


def json_body(rng: random.Random, i: int, size: int, filler: str) -> bytes:
    """A JSON object of exactly ``size`` ASCII bytes (``size`` >= ~90)."""
    head = (
        f'{{"id":{i},"user":"u{rng.randrange(10**6):06d}","amount":{rng.randrange(10**5)}.'
        f'{rng.randrange(100):02d},"status":"{rng.choice(TAGS)}","note":"'
    )
    room = size - len(head) - 2
    if room < 0:  # cannot happen for size >= 100; keep the size exact anyway
        return (head + '"}').encode()[:size]
    start = rng.randrange(max(1, len(filler) - room))
    return (head + filler[start : start + room] + '"}').encode()


def make_workload(name: str, count: int, seed: int = 1, *, filler: str | None = None) -> Workload:
    """``count`` messages of workload ``name`` ("1k" or "mixed"), deterministic for ``seed``.

    Each body's text is a window of ``filler``; by default a filler of 4 bodies' worth made for
    this call, so neighbouring bodies share text (zstd finds it: fine for ingest, which does not
    compress). Pass :func:`wide_filler` where compression is measured.
    """
    lo, hi = WORKLOADS[name]
    rng = random.Random(f"{name}-{seed}")
    if filler is None:
        filler = _filler(rng, hi * 4)
    bodies = []
    keys = []
    tags = []
    for i in range(count):
        size = rng.randint(lo, hi)
        bodies.append(json_body(rng, i, size, filler))
        keys.append(f"{rng.getrandbits(120):030x}")  # 30 hex chars, as machine-facts 3
        tags.append(TAGS[i % len(TAGS)])
    return Workload(name, bodies, keys, tags)


def body_pool(name: str, count: int, seed: int = 7) -> list[bytes]:
    """A reusable pool of bodies (for duration-based or very large runs)."""
    return make_workload(name, count, seed).bodies


def batch_bounds(sizes: Sequence[int], overhead: int = 0) -> list[tuple[int, int]]:
    """[start, end) index ranges cut with the CLI's rule: 1024 messages or 1 MiB, whichever first.

    ``overhead`` is added to each size (the framing around a body), as mqtier counts record bytes.
    """
    out = []
    start = 0
    nbytes = 0
    for i, s in enumerate(sizes):
        nbytes += s + overhead
        if i + 1 - start >= BATCH_MESSAGES or nbytes >= BATCH_BYTES:
            out.append((start, i + 1))
            start = i + 1
            nbytes = 0
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


# ---- statistics and formatting -------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[k])


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt_ratio(r: float, goal: float | None = None) -> str:
    text = f"{r:.2f}x"
    if goal is not None:
        text += f" (goal >= {goal:g}x: {'met' if r >= goal else 'MISSED'})"
    return text


def fmt_int(v: float) -> str:
    return f"{v:,.0f}"


def mb(nbytes: float) -> float:
    return nbytes / 1e6


def spread(values: Sequence[float]) -> str:
    """``min..max`` of the repeats, for the noise column."""
    if len(values) < 2:
        return ""
    return f"{min(values):,.0f}..{max(values):,.0f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines.extend(
        "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )
    return "\n".join(lines)


# ---- files and the machine -----------------------------------------------------------------


def tmp_dir(prefix: str) -> Path:
    """A fresh directory under benchmarks/out/tmp (on the /work disk, not tmpfs)."""
    TMP_ROOT.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=TMP_ROOT))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def prewrite_zero_file(path: Path, size: int) -> None:
    """A file of ``size`` zero bytes, really written and synced (as RocketMQ pre-maps files)."""
    chunk = bytes(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left > 0:
            n = min(left, len(chunk))
            os.write(fd, chunk[:n])
            left -= n
        os.fdatasync(fd)
    finally:
        os.close(fd)


def drop_caches() -> bool:
    """sync + drop the page cache (needs root); True if it worked."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _git(*args: str) -> str:
    """Output of a read-only git command in the repository, or "" when git is unavailable."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        ).stdout.strip("\n")
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    rev = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "mqtier").splitlines()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "mem_total": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "git_head": rev,
        "mqtier_uncommitted_changes": dirty,
        "argv": sys.argv,
    }


def write_results(name: str, doc: dict[str, Any]) -> Path:
    """Save ``doc`` as benchmarks/out/<name>-<UTC timestamp>.json and <name>-latest.json."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT_DIR / f"{name}-{stamp}.json"
    text = json.dumps(doc, indent=2, default=str) + "\n"
    path.write_text(text)
    (OUT_DIR / f"{name}-latest.json").write_text(text)
    return path


def chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def run_threads_for(
    worker: Callable[[int], None],
    threads: int,
    barrier: threading.Barrier,
    stop: threading.Event,
    duration: float,
) -> float:
    """Start ``threads`` workers (each waits on ``barrier``), let them run ``duration`` seconds,
    set ``stop`` and join them; return the measured seconds."""
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


# ---- hot-store fill and the cold tier (dispatch.py, cold_read.py) --------------------------


def parse_size(text: str) -> int:
    """``256M``, ``1G``, ``64MiB`` or a plain byte count."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def fill_store(
    st: Any,
    topic: str,
    target_record_bytes: int,
    pick_queue: Callable[[random.Random], int],
    *,
    workload: str = "mixed",
    seed: int = 1,
    batch: int = 4096,
    in_flight: int = 3,
) -> dict[str, Any]:
    """Append ``workload`` messages to ``st`` until ``target_record_bytes`` of records are durable.

    Bodies are generated ``batch`` at a time (``make_workload`` with a seed per batch, so no body
    repeats), each message goes to ``pick_queue(rng)`` (a seeded ``random.Random``), and up to
    ``in_flight`` ``append_batch_async`` batches are in flight. Waits for the reput at the end.
    """
    from collections import deque

    from mqtier.format.message import Message

    rng = random.Random(f"queues-{seed}")
    pending: deque[Any] = deque()
    n = body_bytes = record_bytes = submitted = chunk = 0
    per_queue: dict[int, int] = {}

    def settle() -> None:
        nonlocal record_bytes
        for r in pending.popleft().wait():
            record_bytes += r.size
            per_queue[r.queue_id] = per_queue.get(r.queue_id, 0) + r.size

    t0 = time.perf_counter()
    while submitted < target_record_bytes:
        wl = make_workload(workload, batch, seed=seed * 1_000_003 + chunk, filler=wide_filler())
        chunk += 1
        msgs = []
        for body, key, tag in zip(wl.bodies, wl.keys, wl.tags, strict=True):
            msgs.append(Message(topic, body, queue_id=pick_queue(rng), keys=(key,), tags=tag))
            body_bytes += len(body)
            submitted += len(body) + 200  # a guess of the framing, only to decide when to stop
            n += 1
            if submitted >= target_record_bytes:
                break
        pending.append(st.append_batch_async(msgs))
        if len(pending) >= in_flight:
            settle()
    while pending:
        settle()
    appended = time.perf_counter() - t0
    st.wait_dispatched()
    seconds = time.perf_counter() - t0
    return {
        "messages": n,
        "body_bytes": body_bytes,
        "record_bytes": record_bytes,
        "append_seconds": appended,
        "seconds": seconds,
        "queues_used": len(per_queue),
        "record_bytes_per_queue": per_queue,
    }


# ``python -m moto.server -H 127.0.0.1 -p PORT``, with werkzeug's access log at WARNING as the
# in-process server has it (a log line per request costs the server CPU the client then lacks).
# Its stderr goes to an unnamed temporary file (a pipe nobody reads could fill and stall it),
# read back only when it fails to start. A watchdog thread ends it once its parent is gone, so a
# benchmark killed before close() leaves no server behind.
MOTO_PROCESS_CODE = """
import logging, os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
logging.getLogger("werkzeug").setLevel(logging.WARNING)
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"""


class MotoS3:
    """A moto S3 server on 127.0.0.1, as machine-facts 4 and the tests run it.

    ``process=False`` (the default): moto's ``ThreadedMotoServer`` in this process. The client
    and the server then share the GIL (and the 2 vCPUs): requests cannot overlap, so N
    concurrent GETs take about N times one GET. ``process=True``: ``python -m moto.server`` in a
    child process (``MOTO_PROCESS_CODE``), so the server's work runs beside the client's, as a
    real object store's does; it still runs on the same 2 vCPUs, and moto itself handles
    requests under its own GIL. Either way the figures describe the test environment, not real
    S3. Objects over ~5 MiB spill to moto's temporary files (``tempfile.gettempdir()`` in this
    process, ``$TMPDIR`` = ``tmpdir`` in the child; the scripts point them at their work
    directory).

    Neither mode applies tests/moto_s3.py's atomic-PUT patch (object PUTs one at a time, so two
    racing ``If-None-Match: *`` creates of one key cannot both succeed): the benchmarks run one
    writer at a time (one dispatcher, one merge), so no two conditional creates race, and reads
    do not touch the patched path.
    """

    def __init__(self, *, process: bool = False, tmpdir: Path | None = None) -> None:
        import logging

        import boto3

        self.server: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        if process:
            port = self._start_process(tmpdir)
        else:
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request
            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self.server.start()
            _host, port = self.server.get_host_and_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.client = boto3.client(
            "s3",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
        )
        self.buckets: list[str] = []

    def _start_process(self, tmpdir: Path | None) -> int:
        """Start moto's server in a child process on a free port; wait until it listens."""
        import socket

        with socket.socket() as s:  # a free port; the child binds it right after
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        env = dict(os.environ)
        if tmpdir is not None:
            env["TMPDIR"] = str(tmpdir)
        self._log = tempfile.TemporaryFile(dir=tmpdir)  # noqa: SIM115 (closed in _stop_process)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MOTO_PROCESS_CODE, str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace").strip()
                self._log.close()
                raise RuntimeError(f"moto server process exited ({self.proc.returncode}): {err}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return port
            except OSError:
                time.sleep(0.1)
        self._stop_process()
        raise RuntimeError(f"moto server process did not listen on 127.0.0.1:{port} in 30 s")

    def _stop_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()  # moto.server exits on SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._log.close()

    def storage_options(self) -> dict[str, Any]:
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            "skip_instance_cache": True,
        }

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)  # not s3fs mkdir: moto rejects its constraint
        self.buckets.append(name)
        return name

    def empty(self, bucket: str, prefix: str = "") -> int:
        """Delete every object under ``prefix``; returns how many."""
        n = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                n += len(keys)
        return n

    def close(self) -> None:
        try:
            for b in self.buckets:
                self.empty(b)
                self.client.delete_bucket(Bucket=b)
        finally:
            if self.server is not None:
                self.server.stop()
            self._stop_process()


def read_through(*roots: Path) -> int:
    """Read every file under ``roots`` once, so that a "warm page cache" cell finds them in it
    (this machine's page cache does not keep what a setup wrote for long). Returns bytes read."""
    total = 0
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            with path.open("rb", buffering=0) as f:
                while chunk := f.read(8 << 20):
                    total += len(chunk)
    return total


def open_warm_cold(url: str, storage_options: dict[str, Any] | None, bill: Any) -> Any:
    """``open_cold_store(url, ...)`` metered into ``bill``, after one *unmetered* request.

    s3fs builds its HTTP client on first use, and botocore each operation's model on its first
    call (~100 ms for GetObject here); the warm-up (a HEAD and a GET of a missing key) keeps that
    out of timed sections and out of the request bill.
    """
    from mqtier.backend.open import open_cold_store
    from mqtier.errors import ColdObjectNotFoundError

    def warm(store: Any) -> Any:
        store.exists("warm-up/none")
        try:
            store.get("warm-up/none")
        except ColdObjectNotFoundError:
            pass
        return store

    return open_cold_store(url, storage_options, bill=bill, wrap=warm)


def bill_counts(bill: Any) -> dict[str, int]:
    return {k: bill.count(k) for k in bill.KINDS}


def object_payload(nbytes: int, seed: int = 11) -> bytes:
    """``nbytes`` of mixed-workload JSON text: what a baseline uploads in place of records."""
    out = bytearray()
    i = 0
    while len(out) < nbytes:
        out += b"".join(
            make_workload("mixed", 256, seed=seed * 1000 + i, filler=wide_filler()).bodies
        )
        i += 1
    return bytes(out[:nbytes])


# ---- shared set-up of the cold-tier benchmarks ------------------------------------------------


def size_args(
    doc: str | None,
    quick_help: str,
    full_bytes: int,
    quick_bytes: int,
    *extra: tuple[str, dict[str, Any]],
) -> tuple[Any, int, int]:
    """Parse ``--quick --repeats --size`` (and ``extra`` options): (args, target bytes, repeats)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 1)")
    ap.add_argument("--size", default=None, help="record bytes to fill")
    for flag, kwargs in extra:
        ap.add_argument(flag, **kwargs)
    args = ap.parse_args()
    target = parse_size(args.size) if args.size else (quick_bytes if args.quick else full_bytes)
    return args, target, args.repeats or (1 if args.quick else 3)


def bench_store(path: Path, broker: str, file_bytes: int, topic: str, queues: int) -> Any:
    """A new hot store named ``broker`` with one topic of ``queues`` queues."""
    from mqtier.store.config import StoreConfig
    from mqtier.store.store import Store

    st = Store.open(
        path, create=True, config=StoreConfig(commitlog_file_bytes=file_bytes, broker_name=broker)
    )
    st.create_topic(topic, queues)
    return st


def fill_line(fill: dict[str, Any]) -> str:
    return (
        f"fill: {fill['messages']:,} msgs, {fill['record_bytes'] / 2**20:,.1f} MiB of records "
        f"({mb(fill['body_bytes']):,.1f} MB of bodies) in {fill['seconds']:.1f} s"
    )
