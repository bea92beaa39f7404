"""What the operator's CLI of issue #11 costs a command, against a base revision, in CPU time.

The output layer (plain lines in a pipe, tables fitted by our own code instead of rich's
tables), the shared options and the error layer sit on every command's path: its imports on
start-up, its formatting on every message printed. This measures real ``mqtier`` processes of
this tree and of ``--base`` (a git revision, checked out in a temporary worktree) on one store
written once, interleaved in ABBA order, and reports the median ratio new/base:

  offsets     ``mqtier offsets --store S`` piped: start-up, a read-only open, a short listing
  read-plain  ``mqtier read`` of 10,000 messages of one queue, stdout a pipe (base: a rich table)
  read-json   the same read with ``--json`` (JSON Lines)

CPU time (user + system) of the child, so a shared, noisy machine disturbs it less than wall
time; the pipe's reader discards what it gets.

  .venv/bin/python benchmarks/cli_output.py [--base b132cd1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 10_000


def child_cpu(args: list[str], cwd: Path) -> float:
    """CPU seconds of one ``python -m mqtier args`` run from ``cwd`` (that tree's code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    env.pop("MQTIER_CONFIG", None)
    subprocess.run(
        [sys.executable, "-m", "mqtier", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_store(work: Path) -> Path:
    src = work / "in.jsonl"
    with src.open("w") as fh:
        for i in range(MESSAGES):
            body = json.dumps({"order": i, "customer": "acme", "items": list(range(i % 9))})
            fh.write(json.dumps({"keys": [f"ORDER-{i}"], "tags": "paid", "body": body}) + "\n")
    store = work / "store"
    subprocess.run(
        [sys.executable, "-m", "mqtier", "ingest", "--store", str(store), "-t", "orders", str(src)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="b132cd1", help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=5, help="ABBA rounds (each runs 2x2)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mqtier-cli-bench-") as tmp:
        work = Path(tmp)
        base = work / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base), opts.base],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            store = make_store(work)
            s = str(store)
            workloads = {
                "offsets": ["offsets", "--store", s],
                "read-plain": ["read", "--store", s, "-t", "orders", "-q", "0", "-n", str(MESSAGES)],
                "read-json": [
                    "read", "--store", s, "-t", "orders", "-q", "0", "-n", str(MESSAGES), "--json"
                ],
            }  # fmt: skip
            ratios: dict[str, list[float]] = {name: [] for name in workloads}
            times: dict[str, dict[str, list[float]]] = {
                name: {"new": [], "base": []} for name in workloads
            }
            for _ in range(opts.repeats):
                for name, args in workloads.items():
                    new_a = child_cpu(args, ROOT)
                    base_a = child_cpu(args, base)
                    base_b = child_cpu(args, base)
                    new_b = child_cpu(args, ROOT)
                    ratios[name].append((new_a + new_b) / (base_a + base_b))
                    times[name]["new"] += [new_a, new_b]
                    times[name]["base"] += [base_a, base_b]
            print(f"CPU time new/base ({opts.base}), median of {opts.repeats} ABBA rounds:")
            for name in workloads:
                new = statistics.median(times[name]["new"])
                old = statistics.median(times[name]["base"])
                print(
                    f"  {name:<11} {statistics.median(ratios[name]):.2f}x"
                    f"  (new {new * 1000:.0f} ms, base {old * 1000:.0f} ms)"
                )
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base)],
                cwd=ROOT,
                capture_output=True,
                check=False,
            )


if __name__ == "__main__":
    main()
