"""Run every mqtier benchmark, one after the other, in subprocesses.

    .venv/bin/python benchmarks/run_all.py [--quick] [--repeats N]

Each benchmark prints its own table and writes benchmarks/out/<name>-<timestamp>.json (and
<name>-latest.json). The exit status is the first failing benchmark's, else 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("ingest.py", "recover.py", "dispatch.py", "cold_read.py")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument("--repeats", type=int, default=None, help="pass --repeats N to every one")
    args = ap.parse_args()
    extra = ["--quick"] if args.quick else []
    if args.repeats:
        extra += ["--repeats", str(args.repeats)]
    status = 0
    for name in BENCHMARKS:
        cmd = [sys.executable, str(HERE / name), *extra]
        print(f"\n=== {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, check=False).returncode
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc and not status:
            status = rc
    return status


if __name__ == "__main__":
    sys.exit(main())
