"""A cron job that tiers a store and frees local space, deciding by exit codes and --json.

Run it from cron every few minutes, for example::

    */5 * * * *  python cron_tiering.py --store /data/store --cold s3://bucket/mq --keep 72h

Each run: `mqtier dispatch --once --json` tiers what is ready; exit 5 (another job committed to
the same prefix first) and 14 (the cold tier did not answer) are left for the next run, any
other failure is reported and the run stops before `clean`; then `mqtier clean --keep` frees
commit-log files whose every message is committed cold. One summary line goes to stdout (for
the cron mail or a log collector), and the script exits non-zero only when someone must look.

With a single argument (a directory) it runs on a demo store it creates there, twice: the
second run has nothing to tier.

    python examples/cron_tiering.py ./cron-demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

RETRY_NEXT_RUN = {5: "another job committed first", 14: "the cold tier did not answer"}
JSON_VERSION = 2  # the docs/cli-json.md version this script reads (breaking changes bump it)


def mqtier(*args: str) -> tuple[int, dict[str, object] | None, str]:
    """Run one mqtier command; (exit code, its --json document or None, its stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "mqtier", *args], capture_output=True, text=True, check=False
    )
    try:
        doc = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    if doc is not None and doc.get("version") != JSON_VERSION:
        # Another shape of the same fields: reading it as this one could misjudge the data.
        raise SystemExit(f"mqtier {args[0]} --json is version {doc.get('version')}, not 2")
    return done.returncode, doc, done.stderr.strip()


def tier_and_clean(store: str, cold: str, keep: str, batch_age: str | None = None) -> int:
    age = ["--batch-age", batch_age] if batch_age else []
    code, run, err = mqtier("dispatch", "--store", store, "--to", cold, "--once", *age, "--json")
    if code in RETRY_NEXT_RUN:
        print(f"dispatch: {RETRY_NEXT_RUN[code]}; retrying next run ({err})")
        return 0
    if code != 0 or run is None:
        print(f"dispatch FAILED with exit {code}: {err}")
        return code or 1
    if run["nothing_to_do"]:
        tiered = "nothing to tier"
    else:
        tiered = f"tiered {run['messages']} msgs ({run['raw_bytes']} B) in {run['objects']} objects"
    if run["waiting_messages"]:
        tiered += f", {run['waiting_messages']} msgs wait for a batch threshold"
    code, cleaned, err = mqtier("clean", "--store", store, "--cold", cold, "--keep", keep, "--json")
    if code != 0 or cleaned is None:
        print(f"{tiered}; clean FAILED with exit {code}: {err}")
        return code or 1
    files = cleaned["commitlog_files"]
    assert isinstance(files, list)
    print(f"{tiered}; freed {len(files)} commit-log files ({cleaned['freed_bytes']} B)")
    return 0


def demo(root: Path) -> int:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    lines = root / "in.jsonl"
    lines.write_text(
        "".join(json.dumps({"body": f"event {i}", "keys": [f"E{i}"]}) + "\n" for i in range(3000))
    )
    store, cold = str(root / "store"), (root / "cold").resolve().as_uri()
    code, _, err = mqtier(
        "ingest", "--store", store, "--topic", "events", "--queues", "4",
        "--commitlog-file-size", "64K", str(lines), "--json",
    )  # fmt: skip
    if code != 0:
        print(f"ingest failed: {err}")
        return code
    # --batch-age 0s: everything ingested so far is old enough (the default waits 60 s).
    first = tier_and_clean(store, cold, "0s", batch_age="0s")
    return first or tier_and_clean(store, cold, "0s", batch_age="0s")


def main() -> int:
    if len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
        return demo(Path(sys.argv[1]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="the hot store directory")
    ap.add_argument("--cold", required=True, help="the cold tier's root URL")
    ap.add_argument("--keep", default="72h", help="keep hot messages younger than this")
    ap.add_argument("--batch-age", help="tier a queue once its oldest pending message is this old")
    args = ap.parse_args()
    return tier_and_clean(args.store, args.cold, args.keep, args.batch_age)


if __name__ == "__main__":
    sys.exit(main())
