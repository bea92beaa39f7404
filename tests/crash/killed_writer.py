"""Crash-test child: append messages, let the reput write their consume-queue units, then die
by SIGKILL, leaving a store in the state a kill -9 leaves (``abort`` present, nothing closed).

Run as ``python -m tests.crash.killed_writer STORE COUNT PREFIX [--fence] [--topic=T]`` from
the project root, on an existing store. ``--fence`` appends as an unfinished ingest does: the records are
fenced off, so the next open must show none of them. Message ``i`` goes to queue ``i % 4`` of
topic ``t`` (or ``T``) with key ``PREFIX-i``.
"""

from __future__ import annotations

import os
import signal
import sys

from mqtier import Message, Store

QUEUES = 4


def message(prefix: str, i: int, topic: str = "t") -> Message:
    return Message(
        topic=topic,
        body=f"{prefix} {i} ".encode() * 8,
        queue_id=i % QUEUES,
        keys=(f"{prefix}-{i}",),
    )


def main() -> None:
    root, count, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    topic = next((a.split("=", 1)[1] for a in sys.argv[4:] if a.startswith("--topic=")), "t")
    st = Store.open(root, writable=True)
    if "--fence" in sys.argv[4:]:
        st.fence_ingest(st.commitlog.durable_end)
    st.append_batch([message(prefix, i, topic) for i in range(count)])
    assert st.wait_dispatched(timeout=30)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
