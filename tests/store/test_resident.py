"""What a long ingest keeps in memory: the pages of derived files it wrote and flushed are
unmapped (their bytes stay), and the reput's backlog is bounded (the writer waits for it)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mqtier.store import reput as reput_module
from mqtier.store.mapped import MappedFile
from mqtier.store.reput import Reput

MIB = 1 << 20


def _resident_kib(path: Path) -> int:
    """This process's resident KiB of its maps of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's first line
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_dropped_pages_leave_the_resident_set_and_keep_their_bytes(tmp_path: Path) -> None:
    path = tmp_path / "units"
    f = MappedFile(path, 0, 8 * MIB, writable=True, create=True, reserve=8 * MIB)
    try:
        data = bytes(range(256)) * (6 * MIB // 256)
        f.mm[: len(data)] = data
        f.dirty = True
        f.flush()
        before = _resident_kib(path)
        assert before >= 6 * 1024 - 64  # written through the map: resident
        f.drop_resident(0, 5 * MIB)
        assert _resident_kib(path) <= before - 5 * 1024 + 64
        assert f.mm[: len(data)] == data  # a read maps them again, from the page cache
        f.drop_resident(0, 6 * MIB)
        f.drop_resident(0, 2 * MIB)  # (below what was dropped: nothing to do)
    finally:
        f.close()
    assert path.read_bytes()[: len(data)] == data


def test_a_writer_waits_while_the_reput_backlog_is_full(monkeypatch: Any) -> None:
    monkeypatch.setattr(reput_module, "MAX_BACKLOG_BYTES", 100)
    release = threading.Event()
    applied: list[int] = []

    def apply(job: list[Any]) -> int:
        release.wait(10)
        applied.append(job[0])
        return int(job[0])

    d = Reput(apply, lambda _: None, start_offset=0, flush_interval_s=60)
    try:
        d.submit([1], 150)  # over the limit by itself: taken, and the next one waits
        second = threading.Thread(target=d.submit, args=([2], 10))
        second.start()
        second.join(0.5)
        assert second.is_alive()  # waiting for the backlog to drain
        release.set()
        second.join(10)
        assert not second.is_alive()
        assert d.wait_for(2, 10)
        assert applied == [1, 2]
    finally:
        release.set()
        d.close()
