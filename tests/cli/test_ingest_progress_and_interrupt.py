"""The ingest progress reaches its total, and Ctrl-C says what it removed (issue #11, item 11).

The bar's total is the inputs' size in bytes; it used to be filled with body bytes, which
leave out the JSON around each body, so it stopped at 173 of 195 MB. Ctrl-C of an ingest that
created its store removed that store without a word. Real files, a real subprocess, a real
SIGINT.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqtier import Store
from mqtier.cli.ingest import _input_size
from mqtier.format import layout as L
from mqtier.ingest import ingest
from mqtier.inputs import Defaults


def _jsonl(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"topic": "orders", "body": f"order {i}", "keys": [f"K{i}"]}) + "\n"
            for i in range(n)
        )
    )
    return path


def test_progress_of_a_jsonl_ingest_reaches_the_file_size(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "in.jsonl", 5000)
    seen: list[tuple[int, int]] = []
    with Store.open(tmp_path / "s", create=True) as st:
        summary = ingest(
            st,
            [str(src)],
            defaults=Defaults(None, None),
            on_progress=lambda m, b: seen.append((m, b)),
        )
    assert summary.messages == 5000
    size = src.stat().st_size
    assert _input_size([str(src)]) == size  # the bar's total
    assert seen[-1] == (5000, size)  # filled to the total, not to the 5000 bodies' bytes
    assert summary.bytes < size
    assert [b for _, b in seen] == sorted(b for _, b in seen)


def test_progress_of_a_file_ingest_counts_every_file_of_a_directory(tmp_path: Path) -> None:
    src = tmp_path / "files"
    (src / "sub").mkdir(parents=True)
    for i in range(30):
        (src / ("sub" if i % 2 else "") / f"f{i}.bin").write_bytes(bytes(100 + i))
    total = _input_size([str(src)])
    assert total == sum(100 + i for i in range(30))
    seen: list[int] = []
    with Store.open(tmp_path / "s", create=True) as st:
        ingest(
            st,
            [str(src)],
            fmt="file",
            defaults=Defaults("blobs", None),
            on_progress=lambda _m, b: seen.append(b),
        )
    assert seen[-1] == total


def test_stdin_has_no_known_total(tmp_path: Path) -> None:
    assert _input_size(["-"]) == 0
    assert _input_size([str(_jsonl(tmp_path / "a.jsonl", 3)), "-"]) == 0


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("nested", [False, True])
def test_ctrl_c_of_an_ingest_that_created_its_store_says_it_removed_it(
    tmp_path: Path, nested: bool
) -> None:
    store = tmp_path / "new" / "deeper" / "s" if nested else tmp_path / "s"
    err_path = tmp_path / "err.txt"
    # -X faulthandler: should the run hang, SIGABRT makes it print every thread's stack.
    args = [sys.executable, "-X", "faulthandler", "-m", "mqtier", "ingest", "--store", str(store)]
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [*args, "-t", "t", "--commitlog-file-size", "16M", "-f", "raw", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_default_signals,  # noqa: PLW1509 - no threads in the child yet
        )
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"one line\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not (store / L.FILE_INGEST_FENCE).exists():  # the run waits for more stdin
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # seen once under a loaded CI-like run (2026-12-04)
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=30)
            pytest.fail(f"no exit within 60 s of SIGINT; its threads:\n{err_path.read_text()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    lines = err_path.read_text().strip().splitlines()
    assert rc == 130, lines
    assert len(lines) == 1, lines
    assert "SIGINT" in lines[0] and f"removed the store {store} this run created" in lines[0]
    if nested:
        assert f"and {tmp_path / 'new'}, made for it" in lines[0]
    assert not store.exists() and list(tmp_path.iterdir()) == [err_path]
