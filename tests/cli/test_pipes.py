"""A reader that stops early (``| head``) is no error: exit 0 and nothing on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(
    "args", [["inspect", "{cl}"], ["read", "--store", "{store}", "--topic", "abc", "-n", "179"]]
)
def test_a_closed_pipe_exits_0(store_b: Path, args: list[str]) -> None:
    cl = store_b / "commitlog" / "00000000000000000000"
    argv = [a.format(cl=cl, store=store_b) for a in args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqtier", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
