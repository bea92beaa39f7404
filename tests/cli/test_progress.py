"""The tiering progress bar (shown on a terminal only)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mqtier.cli import _progress
from mqtier.format.coldobject import Segment
from mqtier.tier.compact import CompactReport
from mqtier.tier.dispatch import DispatchReport, QueuePlan


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stderr as a 160-column terminal; returns what was written to it."""
    out = io.StringIO()
    monkeypatch.setattr(_progress, "err_console", Console(file=out, force_terminal=True, width=160))
    return out


def shown(bar: _progress.DispatchProgress | _progress.CompactProgress) -> tuple[float, float]:
    """(completed, total) of the bar's task, after drawing it once."""
    task = bar._progress.tasks[0]
    bar._progress.refresh()
    assert task.total is not None
    return task.completed, task.total


def test_bar_shows_bytes_messages_and_queues(terminal: io.StringIO) -> None:
    report = DispatchReport("b")
    report.plans = [
        QueuePlan("t", 0, 0, 10, 4_000_000, "force"),
        QueuePlan("t", 1, 0, 5, 1_000_000, "age"),
    ]
    with _progress.DispatchProgress(json_out=False) as bar:
        assert bar.shown
        bar.update(report)
        report.messages, report.raw_bytes, report.queues_tiered = 12, 2_500_000, 1
        bar.update(report)
        assert shown(bar) == (2_500_000, 5_000_000)
    text = terminal.getvalue()
    assert "12 msgs, 1/2 queues" in text and "tier" in text


def test_no_bar_with_json(terminal: io.StringIO) -> None:
    assert not _progress.DispatchProgress(json_out=True).shown
    assert not _progress.CompactProgress(json_out=True).shown


def test_compaction_bar_shows_stored_bytes_messages_and_runs(terminal: io.StringIO) -> None:
    seg = Segment("o", "t", 0, 0, 40, 0, 0, 0, 0, 12_000_000, 3_000_000, 0, 0, 0)
    report = CompactReport(runs=[[seg, seg], [seg]])
    with _progress.CompactProgress(json_out=False) as bar:
        report.runs_done, report.messages_done, report.stored_bytes_done = 1, 80, 6_000_000
        bar.update(report)
        assert shown(bar) == (6_000_000, 9_000_000)
    text = terminal.getvalue()
    assert "80 msgs, 1/2 runs" in text and "compact" in text
