"""Progress bars on stderr for long cold-tier runs (only on a terminal, never with --json)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mqtier.cli._common import err_console
from mqtier.tier.compact import CompactReport
from mqtier.tier.dispatch import DispatchReport


class _BytesProgress:
    """A bar of bytes with rate, ETA and a text of messages and queues (or runs)."""

    def __init__(self, label: str, *, json_out: bool) -> None:
        self.shown = not json_out and err_console.is_terminal
        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[messages]:,} msgs, {task.fields[queues]}"),
            console=err_console,
            transient=True,
            disable=not self.shown,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(kind, exc, tb)

    def _show(self, total: int, completed: int, messages: int, queues: str) -> None:
        if self._task is None:
            self._task = self._progress.add_task("", total=total, messages=0, queues=queues)
        self._progress.update(
            self._task, total=total, completed=completed, messages=messages, queues=queues
        )


class DispatchProgress(_BytesProgress):
    """Bytes, messages, queues and ETA of a tiering run; ``update`` is run_dispatch's hook."""

    def __init__(self, *, json_out: bool) -> None:
        super().__init__("tier", json_out=json_out)

    def update(self, report: DispatchReport) -> None:
        total = sum(p.pending_bytes for p in report.plans)
        queues = f"{report.queues_tiered}/{len(report.plans)} queues"
        self._show(total, report.raw_bytes, report.messages, queues)


class CompactProgress(_BytesProgress):
    """Stored bytes read, messages and runs of a compaction; ``update`` is compact's hook."""

    def __init__(self, *, json_out: bool) -> None:
        super().__init__("compact", json_out=json_out)

    def update(self, report: CompactReport) -> None:
        runs = f"{report.runs_done}/{len(report.runs)} runs"
        total = report.stored_bytes_to_merge
        self._show(total, report.stored_bytes_done, report.messages_done, runs)
