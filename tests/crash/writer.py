"""Crash-test child: append forever from several threads, print each acknowledged append.

Run as ``python -m tests.crash.writer STORE_DIR SEED`` from the project root. Every line on stdout
is written only after ``Store.append``/``append_batch`` returned, i.e. after the message is
durable, so the parent may SIGKILL this process at any instant and then demand that every line it
saw is in the store. Message contents are a pure function of ``(seed, thread, i)`` (see
:func:`make_message`), so the parent can rebuild them without any other channel.

Line format: ``thread i topic queue queue_offset phy_offset``.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import traceback
from pathlib import Path

from mqtier import Message, Store
from tests.geometry import TINY

THREADS = 4
TOPICS = ("crash-a", "crash-b", "crash-c")
MAX_BODY = 3 * 1024

# The tests' tiny geometry (small files roll often), with frequent checkpoints so that kills
# land between, during and after checkpoint writes.
CONFIG = TINY.with_changes(flush_interval_ms=20)


def message_key(seed: int, thread: int, i: int) -> str:
    return f"k-{seed}-{thread}-{i}"


def make_message(seed: int, thread: int, i: int) -> Message:
    """The ``i``-th message of ``thread``: deterministic in ``(seed, thread, i)``."""
    rng = random.Random(f"{seed}/{thread}/{i}")
    size = rng.randint(1, MAX_BODY)
    body = rng.randbytes(size)
    topic = rng.choice(TOPICS)
    # Half the messages name their queue; the others let the store pick it (from the key).
    queue_id = rng.randrange(3) if rng.random() < 0.5 else None
    tags = f"tag{rng.randrange(4)}" if rng.random() < 0.7 else None
    return Message(
        topic=topic,
        body=body,
        queue_id=queue_id,
        keys=(message_key(seed, thread, i),),
        tags=tags,
    )


def _die(args: threading.ExceptHookArgs) -> None:
    """A failing writer thread ends the process, so the parent sees it at once."""
    traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback)
    sys.stderr.flush()
    os._exit(3)


def _worker(st: Store, seed: int, thread: int, out_lock: threading.Lock) -> None:
    rng = random.Random(f"{seed}/{thread}/batches")
    i = 0
    out = sys.stdout
    while True:
        n = rng.randint(2, 6) if rng.random() < 0.25 else 1
        msgs = [make_message(seed, thread, i + j) for j in range(n)]
        acked = [st.append(msgs[0])] if n == 1 else st.append_batch(msgs)
        lines = "".join(
            f"{thread} {i + j} {r.topic} {r.queue_id} {r.queue_offset} {r.phy_offset}\n"
            for j, r in enumerate(acked)
        )
        with out_lock:
            out.write(lines)
            out.flush()
        i += n


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.crash.writer STORE_DIR SEED", file=sys.stderr)
        return 2
    root = Path(argv[0])
    seed = int(argv[1])
    st = Store.open(root, create=True, config=CONFIG)
    threading.excepthook = _die
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_worker, args=(st, seed, t, lock), daemon=True)
        for t in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()  # forever: the parent kills us
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
