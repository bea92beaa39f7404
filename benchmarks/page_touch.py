"""What writing into pages the page cache does not hold yet costs on this machine.

The plain-file cell A of ``ingest.py`` writes into a file it pre-wrote (untimed) just before,
so every page it writes is in the page cache already; a store's commit log grows into pages
nobody touched. This script writes the same 1 MiB blocks with ``os.pwrite`` (then one
``fdatasync``) into a file three ways, each into a new file of the same size:

  new       a sparse file, never written: every page is new to the page cache
  cached    a file whose zeros were just written and synced: every page is cached
  evicted   the same, with its pages then dropped (``POSIX_FADV_DONTNEED``): blocks allocated
            and zeroed on disk, pages not cached

On a virtual machine whose memory the host backs lazily, "new" can cost many times "cached"
the first time the guest uses memory, and far less once the guest recycles pages it freed
(run it twice). Figures in benchmarks/README.md ("column framing, block parsing").

    .venv/bin/python benchmarks/page_touch.py [--mib 350] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BLOCK = 1 << 20


def _zeros(fd: int, mib: int) -> None:
    zeros = bytes(BLOCK)
    for i in range(mib):
        os.pwrite(fd, zeros, i * BLOCK)
    os.fdatasync(fd)


def _evicted(fd: int, mib: int) -> None:
    _zeros(fd, mib)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def run(path: Path, mib: int, prepare: Callable[[int, int], None]) -> tuple[float, float]:
    """(pwrite MB/s, pwrite + fdatasync MB/s) of ``mib`` MiB of random blocks."""
    data = os.urandom(BLOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, mib * BLOCK)
        prepare(fd, mib)
        t0 = time.perf_counter()
        for i in range(mib):
            os.pwrite(fd, data, i * BLOCK)
        t1 = time.perf_counter()
        os.fdatasync(fd)
        t2 = time.perf_counter()
    finally:
        os.close(fd)
        path.unlink()
    megabytes = mib * BLOCK / 1e6
    return megabytes / (t1 - t0), megabytes / (t2 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=350)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    ways: dict[str, Callable[[int, int], None]] = {
        "new": lambda fd, mib: None,
        "cached": _zeros,
        "evicted": _evicted,
    }
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        path = Path(tmp) / "pages.bin"
        print(f"{'round':>5}  {'way':8}  {'pwrite MB/s':>11}  {'+ fdatasync MB/s':>16}")
        for rep in range(1, args.repeats + 1):
            for name, prepare in ways.items():
                written, synced = run(path, args.mib, prepare)
                print(f"{rep:>5}  {name:8}  {written:>11,.0f}  {synced:>16,.0f}", flush=True)


if __name__ == "__main__":
    main()
