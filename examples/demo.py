"""The end-to-end demo behind `make demo`: a hot store tiered to a file:// cold tier.

What this shows: a fresh store is created under the given directory (default ./demo-store),
5,000 JSON-like order messages are ingested through the CLI from a generated JSON Lines file,
and every read-side command is run on the result, exactly as a shell user would. Then the store
is tiered to a cold tier in ./demo-store/cold (file://), read back from the cold tier alone,
tiered again after more messages, compacted, and its local space reclaimed.

    python examples/demo.py ./demo-store
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path


def mqtier(*args: str) -> str:
    cmd = [sys.executable, "-m", "mqtier", *args]
    print(f"\n$ mqtier {' '.join(args)}", flush=True)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    sys.stderr.write(done.stderr)
    print(done.stdout, end="", flush=True)
    return done.stdout


def write_orders(path: Path, first: int, count: int, rng: random.Random) -> None:
    with path.open("w") as fh:
        for i in range(first, first + count):
            doc = {
                "order_id": f"ORDER-{i}",
                "customer": f"C{rng.randrange(500):04d}",
                "amount": round(rng.uniform(1, 500), 2),
                "items": [f"SKU-{rng.randrange(10_000)}" for _ in range(rng.randint(1, 4))],
            }
            fh.write(
                json.dumps(
                    {
                        "body": json.dumps(doc),
                        "keys": [doc["order_id"]],
                        "tags": rng.choice(["paid", "created", "shipped"]),
                    }
                )
                + "\n"
            )


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-store")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    store = root / "store"
    orders = root / "orders.jsonl"
    rng = random.Random(7)
    write_orders(orders, 0, 5000, rng)
    mqtier(
        "ingest",
        "--store",
        str(store),
        "--topic",
        "orders",
        "--queues",
        "8",
        "--commitlog-file-size",
        "256K",
        "--broker",
        "broker-demo",
        str(orders),
    )
    mqtier("offsets", "--store", str(store))
    mqtier(
        "read",
        "--store",
        str(store),
        "--topic",
        "orders",
        "--queue",
        "3",
        "--from",
        "0",
        "--count",
        "3",
        "--json",
    )
    found = mqtier("query", "key", "ORDER-42", "--store", str(store), "--topic", "orders", "--json")
    msg = json.loads(found.splitlines()[0])
    mqtier("query", "id", msg["msg_id"], "--store", str(store))
    mqtier("query", "uniq", msg["uniq_key"], "--store", str(store), "--json")
    mqtier("inspect", str(store / "commitlog" / "00000000000000000000"), "--limit", "3")
    mqtier("recover", "--store", str(store), "--dry-run")

    # The cold tier: any fsspec URL; here a directory next to the store.
    cold = f"file://{(root / 'cold').resolve()}"
    mqtier("dispatch", "--store", str(store), "--to", cold, "--force")
    mqtier("offsets", "--store", str(store), "--cold", cold)
    mqtier(
        "read", "--cold", cold, "--broker", "broker-demo",
        "--topic", "orders", "--queue", "3", "--from", "0", "--count", "3", "--json",
    )  # fmt: skip
    more = root / "more.jsonl"
    write_orders(more, 5000, 400, rng)
    mqtier("ingest", "--store", str(store), "--topic", "orders", str(more))
    mqtier("dispatch", "--store", str(store), "--to", cold, "--force")
    mqtier("compact", "--cold", cold, "--broker", "broker-demo", "--dry-run")
    mqtier("compact", "--cold", cold, "--broker", "broker-demo")
    mqtier("clean", "--store", str(store), "--cold", cold, "--keep", "0s")
    mqtier(
        "read", "--store", str(store), "--cold", cold, "--policy", "not_in_disk",
        "--topic", "orders", "--queue", "3", "--from", "600", "--count", "3",
    )  # fmt: skip
    mqtier("expire", "--cold", cold, "--broker", "broker-demo", "--ttl", "30d", "--dry-run")
    print(f"\ndemo store left in {store}, its cold tier in {cold}")
    # mqtier is installed in the venv, not on PATH: say how to run it next.
    exe = Path(sys.executable).parent / "mqtier"
    print(f"try it yourself: {exe} offsets --store {store}")
    print(f"(or `source {exe.parent / 'activate'}`, then `mqtier --help`)")


if __name__ == "__main__":
    main()
