"""Review of the hot-store commands under faults: what a dry run promises, and a signal that
comes while an ingest rolls back after a failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mqtier import Message, Store
from mqtier.cli import app
from mqtier.format import layout as L
from mqtier.store.commitlog import CommitLog
from tests.geometry import TINY

runner = CliRunner()


def build(root: Path) -> None:
    with Store.open(root, create=True, config=TINY) as st:
        st.create_topic("t1", 4)
        st.append_batch([Message("t1", f"m{i}".encode(), keys=(f"K{i}",)) for i in range(200)])


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_recover_dry_run_says_lost_derived_files_would_be_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "s"
    build(root)
    shutil.rmtree(root / "consumequeue" / "t1" / "2")
    before = tree(root)

    res = runner.invoke(app, ["recover", "--store", str(root), "--dry-run"])
    assert res.exit_code == 0, res.output
    # was: "nothing to recover: already consistent", though the real run rebuilds
    assert "nothing to recover" not in res.stdout
    assert "would rebuild" in res.stdout and "consumequeue/t1/2" in res.stdout
    res = runner.invoke(app, ["recover", "--store", str(root), "--dry-run", "--json"])
    doc = json.loads(res.stdout)
    assert doc["would_rebuild"] == ["consumequeue/t1/2"] and doc["changed"] is True
    assert tree(root) == before  # a dry run writes nothing

    res = runner.invoke(app, ["recover", "--store", str(root)])
    assert res.exit_code == 0, res.output
    assert "rebuilt" in res.stdout and "nothing to recover" not in res.stdout
    res = runner.invoke(app, ["recover", "--store", str(root), "--dry-run", "--json"])
    assert "would_rebuild" not in json.loads(res.stdout)


def test_a_signal_during_an_ingest_rollback_does_not_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails an ingest, and SIGTERM comes while it rolls back (a service manager
    stopping a stuck job). The rollback used to stop where the signal came, leaving the
    fence, ``abort`` and a changed checkpoint, while the CLI said "rolled back"."""
    root = tmp_path / "s"
    build(root)
    before = {k: v[0] for k, v in tree(root).items()}
    lines = [json.dumps({"topic": "t1", "body": f"n{i}"}) for i in range(3000)] + ["{not json"]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")

    real = CommitLog.truncate

    def signalled_truncate(self: CommitLog, *args: Any, **kwargs: Any) -> Any:
        # mid-rollback: a real signal, handled on this (main) thread
        os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CommitLog, "truncate", signalled_truncate)
    res = runner.invoke(app, ["ingest", "--store", str(root), str(src)])
    monkeypatch.undo()

    assert res.exit_code in (8, 128 + signal.SIGTERM), res.output
    assert not (root / L.FILE_ABORT).exists()
    assert not (root / L.FILE_INGEST_FENCE).exists()
    after = {k: v[0] for k, v in tree(root).items()}
    for name in (L.FILE_CHECKPOINT, L.FILE_DISPATCH_CHECKPOINT):
        assert after[name] == before[name], name
    with Store.open(root) as st:
        assert st.health.state == "clean"
        assert sum(q.max_offset - q.min_offset for q in st.offsets()) == 200
