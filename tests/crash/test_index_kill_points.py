"""Every kill -9 point of an IndexFile roll, then every one of the next recovery's first index
write, then an open: every acknowledged key is still found by ``query_key``.

An image of a kill is a copy of the store directory taken from a line-trace hook in the thread
that writes the index while no other thread writes: mmap writes are in the files at once, so
the copy is the disk that a SIGKILL at that line leaves. Found by the kill -9 test in CI: a
kill between creating the next IndexFile and storing the full one's header, then a kill in the
next recovery between a batch's slot heads and its item bytes, lost up to half a file of keys.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

from mqtier import Message, Store
from mqtier.format import layout as L
from mqtier.store import indexfile, reputbatch
from tests.geometry import TINY

pytestmark = pytest.mark.crash

ROOT = Path(__file__).resolve().parents[2]
# Checkpoints only at close, and no commit-log pre-write thread: the images are copied while
# no other thread writes (a pre-write renaming its .tmp file under the copy failed it).
QUIET = TINY.with_changes(flush_interval_ms=3_600_000, prewrite=False)

Tracer = Callable[[FrameType, str, Any], Any]


def _append(st: Store, lo: int, hi: int) -> dict[str, int]:
    """One group commit, so one dispatch batch: the writer is idle while it is dispatched."""
    msgs = [
        Message(topic="t", body=f"body {i}".encode(), queue_id=i % 2, keys=(f"key{i}",))
        for i in range(lo, hi)
    ]
    return {m.keys[0]: r.phy_offset for m, r in zip(msgs, st.append_batch(msgs), strict=True)}


def _images_at_each_line(
    code: CodeType,
    src: Path,
    out: Path,
    run: Callable[[], None],
    when: Callable[[FrameType], bool] = lambda frame: True,
) -> list[Path]:
    """Run ``run`` and copy ``src`` before each line of the first call of ``code`` for which
    ``when(frame)`` holds (threads that ``run`` starts are traced too)."""
    images: list[Path] = []
    calls = 0

    def local(frame: FrameType, event: str, arg: Any) -> Tracer:
        if event == "line":
            image = out / f"{code.co_name}-{len(images):02d}-line{frame.f_lineno}"
            shutil.copytree(src, image)
            images.append(image)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Tracer | None:
        nonlocal calls
        if frame.f_code is code and event == "call" and when(frame):
            calls += 1
            if calls == 1:
                return local
        return None

    sys.settrace(tracer)
    threading.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
    return images


def _lost(root: Path, acked: dict[str, int]) -> list[str]:
    with Store.open(root, writable=True) as st:
        return [
            k for k, phy in acked.items() if [m.phy_offset for m in st.query_key("t", k)] != [phy]
        ]


def _rolls(frame: FrameType) -> bool:
    service = frame.f_locals["self"]
    return bool(service.files) and service.files[-1].full


def test_every_kill_point_of_a_roll_and_of_the_next_recovery_keeps_every_key(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    with Store.open(live, create=True, config=QUIET) as st:
        acked = _append(st, 0, 100)  # 200 items; the close stores the header with 201

    def roll() -> None:
        with Store.open(live, writable=True) as st:  # its reput thread is traced
            acked.update(_append(st, 100, 300))  # the file fills at message 255 and rolls
            assert st.wait_dispatched(10)

    kills1 = _images_at_each_line(
        indexfile.IndexService.writable_file.__code__, live, tmp_path / "k1", roll, when=_rolls
    )
    assert len(kills1) > 5
    failures = []
    for image1 in kills1:
        # the recovery of image1, killed before each line of its first put_items
        kills2 = _images_at_each_line(
            reputbatch.put_items.__code__,
            image1,
            tmp_path / "k2" / image1.name,
            lambda image1=image1: Store.open(image1, writable=True).close(),  # type: ignore[misc]
        )
        for image2 in [image1, *kills2]:
            lost = _lost(image2, acked)
            if lost:
                failures.append(f"{image1.name} then {image2.name}: {len(lost)} keys lost")
        shutil.rmtree(tmp_path / "k2" / image1.name, ignore_errors=True)
    assert not failures, "\n".join(failures)


_ROLL_AND_DIE = """
import os, signal, sys
from mqtier import Message, Store
st = Store.open(sys.argv[1], writable=True)
st.append_batch([Message(topic="t", body=b"y", keys=("n%d" % i,)) for i in range(40)])  # rolls
assert st.wait_dispatched(10) and len(st.index.files) == 2
os.kill(os.getpid(), signal.SIGKILL)  # before the next checkpoint
"""


def test_a_kill_after_a_roll_replays_from_the_new_file_not_the_whole_log(tmp_path: Path) -> None:
    # The new file's header is stored when it is made: a zero header's begin offset (0) made
    # recovery index the whole commit log again, duplicating every key once per such crash.
    root = tmp_path / "s"
    with Store.open(root, create=True, config=QUIET) as st:
        acked = _append(st, 0, 240)  # 480 items of a file's 511: the next 40 messages roll it
    done = subprocess.run(
        [sys.executable, "-c", _ROLL_AND_DIE, str(root)], check=False, cwd=ROOT, capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    with Store.open(root, writable=True) as st:
        assert st.recovery is not None
        assert st.recovery.messages_redispatched <= 40, st.recovery
        assert [len(st.query_key("t", k)) for k in acked] == [1] * len(acked)
        # items: each message's two keys, plus at most the replayed 40 messages' again
        assert sum(f.header.index_count - 1 for f in st.index.files) <= 2 * (280 + 40)


def test_recovery_rewinds_the_file_that_becomes_last_when_a_torn_one_is_dropped(
    tmp_path: Path,
) -> None:
    # A disk an older writer or a power cut can leave: a full IndexFile whose stored header
    # is stale (its slot heads point past the count), then a last file whose heads point at
    # items that never reached the disk. Recovery drops the torn file; the full one, now last,
    # must be rewound before the replay appends to it, or the appends cut its chains.
    root = tmp_path / "s"
    with Store.open(root, create=True, config=QUIET) as st:
        acked = _append(st, 0, 100)  # 200 items: the close stores A's header with 201
    (a_path,) = (root / "index").iterdir()
    stale = a_path.read_bytes()[: L.INDEX_HEADER.size]
    with Store.open(root, writable=True, config=QUIET) as st:
        acked.update(_append(st, 100, 300))  # A fills and rolls into B
    a_path.write_bytes(stale + a_path.read_bytes()[L.INDEX_HEADER.size :])  # A's old header
    b_path = max((root / "index").iterdir())
    b = bytearray(b_path.read_bytes())
    torn = L.INDEX_HEADER.size + 3 * L.INDEX_SLOT_BYTES  # slot 3's head at an unwritten item
    b[torn : torn + 4] = (QUIET.index_items - 1).to_bytes(4, "big")
    b_path.write_bytes(bytes(b))
    (root / L.FILE_ABORT).write_text("1")  # a crash, not a clean close
    assert _lost(root, acked) == []
