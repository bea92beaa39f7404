"""What the checks of issue #10 cost on the hot paths, against a base revision, in CPU time.

The checks added for trust under faults sit on hot paths: every consume-queue put reserves
blocks before it writes (``MappedFile.reserve``), every read and every record packed for the
cold tier checks the record header (``check_record_header``), checkpoints keep the derived-file
manifest. This measures three workloads with this tree and with ``--base`` (a git revision,
checked out in a temporary worktree), interleaved in ABBA order, and reports the median
ratio new/base:

  append    ``Store.append_batch`` of 60,000 1 KiB messages over 8 queues, then
            ``wait_dispatched`` (writer + reput: reserve, manifest)
  read      ``Store.read`` of every message back, 32 at a time (header check per record)
  dispatch  ``run_dispatch(force=True)`` of the store to a ``file://`` tier (header check
            before packing)

Process CPU time (user + system of the child), not wall time: these machines are shared and
noisy, and CPU time is what the checks add. fsync waits are not CPU time, so ``append`` shows
the Python-side cost only (the disk is measured by ``ingest.py``).

  .venv/bin/python benchmarks/trust_overhead.py [--base 71e3693] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 60_000

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from mqtier import Message, Store, StoreConfig
from mqtier.backend.open import open_cold_store
from mqtier.tier.dispatch import DispatchOptions, run_dispatch

work = Path(sys.argv[1]); n = int(sys.argv[2])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
body = bytes(range(32, 96)) * 16  # 1 KiB
msgs = [Message("bench", body, keys=(f"k{i}",), queue_id=i % 8) for i in range(n)]
out = {}
cfg = StoreConfig(commitlog_file_bytes=256 << 20)
t = cpu()
with Store.open(work / "hot", create=True, config=cfg) as st:
    for i in range(0, n, 512):
        st.append_batch(msgs[i:i + 512])
    st.wait_dispatched()
out["append"] = cpu() - t
with Store.open(work / "hot") as st:
    t = cpu()
    for q in range(8):
        off = 0
        while True:
            got = st.read("bench", q, off, 32)
            if not got:
                break
            off += len(got)
    out["read"] = cpu() - t
    cold = open_cold_store((work / "cold").as_uri())
    t = cpu()
    run_dispatch(st, cold, DispatchOptions(force=True))
    out["dispatch"] = cpu() - t
print(json.dumps(out))
"""


def run_once(tree: Path, n: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="mqtier-trust-", dir=ROOT / "benchmarks"))
    try:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(work), str(n)],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", default="71e3693", help="git revision to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--messages", type=int, default=MESSAGES)
    args = ap.parse_args()
    base_tree = Path(tempfile.mkdtemp(prefix="mqtier-base-"))
    subprocess.run(
        ["git", "worktree", "add", "-q", "--detach", str(base_tree), args.base],
        cwd=ROOT,
        check=True,
    )
    try:
        runs: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
        pair = (("base", base_tree), ("new", ROOT))
        for i in range(args.repeats):
            # ABBA order: on these VMs the speed drifts, and a fixed order would bias one side
            for name, tree in pair if i % 2 == 0 else pair[::-1]:
                runs[name].append(run_once(tree, args.messages))
                print(f"  rep {i + 1} {name:4}: {runs[name][-1]}", file=sys.stderr)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False
        )
    print(f"CPU seconds, median of {args.repeats} (base {args.base} vs this tree)")
    print(f"{'workload':10} {'base s':>8} {'new s':>8} {'new/base':>9}")
    for work in ("append", "read", "dispatch"):
        b = statistics.median(r[work] for r in runs["base"])
        n = statistics.median(r[work] for r in runs["new"])
        print(f"{work:10} {b:8.2f} {n:8.2f} {n / b:9.2f}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"(children used {usage.ru_utime + usage.ru_stime:.0f} CPU s in all)")


if __name__ == "__main__":
    main()
