"""One output layer for every command: a table for people, plain lines for pipes, JSON for scripts.

A command builds its answer once, as the JSON document of docs/cli-json.md, and says how a person
reads it: a :class:`Listing` (columns over the document's items) and summary lines. An
:class:`Output` then writes it in one of three modes:

* ``json`` (``--json``): the document, or one JSON line per item for streams.
* ``table`` (stdout is a terminal): aligned columns fitted to the width by eliding the columns
  marked ``elide`` (bodies, keys); ids, offsets and times are never shortened.
* ``plain`` (stdout is a pipe or file): a header line, then one tab-separated line per item, with
  nothing shortened or grouped, so ``awk -F'\\t'``, ``cut`` and ``sort`` see every field.

Summaries that are the command's answer go to stdout; progress, notes and warnings go to stderr.
In ``plain`` mode a listing's title and summary go to stderr, so stdout holds the rows alone.
"""

from __future__ import annotations

import base64
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, TextIO

import orjson
from rich.cells import cell_len, chop_cells, set_cell_size
from rich.markup import escape

from mqtier.cli._common import emit_json, err_console, one_line, out_console
from mqtier.redact import redact

Mode = Literal["json", "table", "plain"]
# keep: never shortened (ids, offsets, times, names); elide: cut to fit the width with "…";
# a column marked elide shows whole and wraps inside its width with --full.
Fit = Literal["keep", "elide"]
Kind = Literal["text", "int", "time", "size"]
Cell = str | int | float | None

_GAP = "  "
_TIME_SHAPE = "2026-12-01 22:41:42.852+00:00"  # what local_time() writes
_ELIDED_FLOOR = 8  # an elided column keeps at least this many cells (or its header's width)


def local_time(ms: int) -> str:
    """A store timestamp as local ISO 8601 with its UTC offset, milliseconds kept."""
    return (
        datetime.fromtimestamp(ms / 1000).astimezone().isoformat(sep=" ", timespec="milliseconds")
    )


def size_text(n: int) -> str:
    """Bytes for people: ``812 B``, ``128.0 KiB``, ``3.4 GiB`` (binary units, as --object-size)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def counted(n: int, noun: str) -> str:
    """``1 object``, ``3 objects``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Column:
    """One column of a listing: ``name`` is the plain header (the JSON field's name)."""

    name: str
    get: Callable[[Mapping[str, Any]], Cell] | None = None  # default: item[name]
    kind: Kind = "text"
    fit: Fit = "keep"
    title: str | None = None  # the table's header; default: name with spaces
    in_table: bool = True  # False: plain lines and JSON only (the terminal's width is scarce)

    def value(self, item: Mapping[str, Any]) -> Cell:
        return self.get(item) if self.get is not None else item.get(self.name)

    @property
    def header(self) -> str:
        return self.title or self.name.replace("_", " ")


@dataclass
class Listing:
    """Items of a document shown as rows (``items`` may be a generator for streams)."""

    columns: Sequence[Column]
    items: Iterable[Mapping[str, Any]]
    title: str | None = None


def _escape_controls(text: str) -> str:
    """Tabs, newlines, backslashes and other control characters as escapes: one item, one line."""
    return one_line(text, backslashes=True)


def body_text(item: Mapping[str, Any]) -> str:
    """A message's body as one line of text: UTF-8 as is, other bytes as ``\\xNN`` escapes."""
    if "body" in item:
        return str(item["body"])
    raw = base64.b64decode(item.get("body_b64", ""))
    return raw.decode("utf-8", errors="backslashreplace")


def _plain_cell(value: Cell | Sequence[Any], kind: Kind) -> str:
    if value is None:
        return "-"
    if kind == "time" and isinstance(value, int):
        return local_time(value)
    if isinstance(value, list | tuple):
        return _escape_controls(" ".join(map(str, value)))
    if isinstance(value, bool):
        return "true" if value else "false"
    return _escape_controls(str(value))


def _table_cell(value: Cell | Sequence[Any], kind: Kind) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and kind in ("int", "size"):
        return f"{value:,}"
    return _plain_cell(value, kind)


@dataclass
class Output:
    """Where and how a command writes its answer; see the module docstring for the modes."""

    mode: Mode
    full: bool = False  # --full: elided columns shown whole
    width: int = 80
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    live: bool = False  # rows never end (read --follow): a table prints each as it comes

    @classmethod
    def choose(cls, *, json_out: bool, full: bool = False) -> Output:
        """JSON with --json, a table on a terminal, plain lines otherwise."""
        if json_out:
            return cls("json", full=full)
        if out_console.is_terminal:
            # $COLUMNS, else the terminal's own size (rich's guess is 80 on TERM=dumb).
            return cls("table", full=full, width=shutil.get_terminal_size().columns)
        return cls("plain", full=full)

    @property
    def json(self) -> bool:
        return self.mode == "json"

    # -- what commands call -------------------------------------------------------------

    def show(
        self,
        doc: Mapping[str, Any],
        listing: Listing | None = None,
        summary: Sequence[str] = (),
    ) -> None:
        """A command's whole answer: ``doc`` in JSON mode, else the listing and the summary."""
        if self.json:
            emit_json(doc)
            return
        if listing is not None:
            self.rows(listing)
        for line in summary:
            self.answer(line, beside_rows=listing is not None)

    def rows(self, listing: Listing) -> None:
        """The listing's rows (in JSON mode, one JSON line per item, as they come)."""
        if self.json:
            self.stream.flush()
            out = self.stream.buffer  # bytes straight from orjson: no decode, no text layer
            for item in listing.items:
                out.write(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE))
            out.flush()
        elif self.mode == "plain":
            if listing.title:
                self.note(listing.title)
            self._plain(listing)
        elif self.live:
            self._live_table(listing)
        else:
            self._table(listing)

    def answer(self, text: str, *, beside_rows: bool = False) -> None:
        """A human line that is the command's answer: stdout, unless it would mix with the
        tab-separated rows of a pipe (then stderr). Nothing in JSON mode: the document has it."""
        if self.json:
            return
        if self.mode == "plain" and beside_rows:
            self.note(text)
            return
        self.stream.write(redact(text) + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """Progress, logs and warnings: stderr in every mode, secrets masked."""
        err_console.print(escape(redact(text)), highlight=False, soft_wrap=True)

    # -- plain: a header, then tab-separated lines, streamed ------------------------------

    def _plain(self, listing: Listing) -> None:
        out = self.stream
        header = "\t".join(c.name for c in listing.columns) + "\n"
        for item in listing.items:
            # The header comes with the first row (or alone at the end): a stream that fails
            # before its first item leaves stdout empty, not a header over nothing.
            out.write(header)
            header = ""
            out.write("\t".join(_plain_cell(c.value(item), c.kind) for c in listing.columns))
            out.write("\n")
        out.write(header)
        out.flush()

    # -- table: aligned, fitted to the terminal -------------------------------------------

    def _table(self, listing: Listing) -> None:
        items = list(listing.items)
        columns = [c for c in listing.columns if c.in_table]
        cells = [[_table_cell(c.value(item), c.kind) for c in columns] for item in items]
        headers = [c.header for c in columns]
        title_parts = [listing.title] if listing.title else []
        # Group what every row shares into the title, so the width goes to what differs: the
        # leading names (topic, queue) of a read of one queue, the day and zone of messages
        # stored on one date. Plain lines never group: each line stands alone for awk.
        if len(items) > 1:
            grouped: set[int] = set()
            for i, col in enumerate(columns):
                values = {row[i] for row in cells}
                if i == len(grouped) and col.fit == "keep" and len(values) == 1:
                    title_parts.append(f"{col.header} {values.pop()}")
                    grouped.add(i)
                elif col.kind == "time" and all(len(v) == len(_TIME_SHAPE) for v in values):
                    # "2026-12-01 22:41:42.852+00:00": the zone, and the day if all share
                    # it, into the title.
                    days = {v[:10] for v in values}
                    zones = {v[23:] for v in values}
                    if len(zones) == 1:
                        cut = 11 if len(days) == 1 else 0
                        for row in cells:
                            row[i] = row[i][cut:23]
                        day = f"{days.pop()} " if cut else ""
                        title_parts.append(f"{headers[i]} {day}{zones.pop()}")
            keep = [i for i in range(len(columns)) if i not in grouped]
            columns = [columns[i] for i in keep]
            headers = [headers[i] for i in keep]
            cells = [[row[i] for i in keep] for row in cells]
        if title_parts:
            self._line("  ".join(title_parts), bold=True)
        if not items:
            self._line("(no rows)")
            return
        beneath = None
        if self.full:
            # --full: every column whole; the last elided one (the body) on its own lines under
            # its row, wrapped to the width, where even a narrow terminal has room for it.
            elided = [i for i, c in enumerate(columns) if c.fit == "elide"]
            beneath = elided[-1] if elided else None
            columns = [c if c.fit == "keep" else replace(c, fit="keep") for c in columns]
        shown = [i for i in range(len(columns)) if i != beneath]
        widths = self._fit(
            [columns[i] for i in shown],
            [headers[i] for i in shown],
            [[row[i] for i in shown] for row in cells],
        )
        right = [columns[i].kind in ("int", "size") for i in shown]
        elide = [columns[i].fit == "elide" for i in shown]
        self._line(
            _join([headers[i] for i in shown], widths, right, [False] * len(shown)), bold=True
        )
        for row in cells:
            self._line(_join([row[i] for i in shown], widths, right, elide))
            if beneath is not None:
                for chunk in chop_cells(row[beneath], max(20, self.width - 4)):
                    self._line("    " + chunk)

    def _fit(
        self, columns: Sequence[Column], headers: Sequence[str], cells: list[list[str]]
    ) -> list[int]:
        """Natural widths, with the widest elided column cut first until the row fits."""
        widths = [
            max([cell_len(h)] + [cell_len(row[i]) for row in cells]) for i, h in enumerate(headers)
        ]
        budget = self.width - len(_GAP) * (len(widths) - 1)
        floors = [
            min(widths[i], max(cell_len(headers[i]), _ELIDED_FLOOR))
            if c.fit == "elide"
            else widths[i]
            for i, c in enumerate(columns)
        ]
        excess = sum(widths) - budget
        while excess > 0:
            shrinkable = [i for i in range(len(widths)) if widths[i] > floors[i]]
            if not shrinkable:
                break  # only never-shortened columns left: the line runs past the width
            widest = max(shrinkable, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
        return widths

    def _line(self, text: str, *, bold: bool = False) -> None:
        if bold:
            out_console.print(f"[bold]{escape(text)}[/]", highlight=False, soft_wrap=True)
        else:
            out_console.print(escape(text), highlight=False, soft_wrap=True)

    # -- live table: rows that never end (read --follow), each printed as it comes ----------

    def _live_table(self, listing: Listing) -> None:
        """A table whose widths come from the first row, not from every row (a stream that
        never ends has no last row): elided columns share what the terminal's width leaves,
        never-shortened ones widen a line when a later value is longer."""
        columns = [c for c in listing.columns if c.in_table]
        headers = [c.header for c in columns]
        right = [c.kind in ("int", "size") for c in columns]
        elide = [c.fit == "elide" and not self.full for c in columns]
        if listing.title:
            self._line(listing.title, bold=True)
        widths: list[int] | None = None
        for item in listing.items:
            row = [_table_cell(c.value(item), c.kind) for c in columns]
            if widths is None:
                # The last elided column (the body) asks for the whole width, so it gets what
                # the others, as wide as in the first row, leave.
                last = max((i for i, e in enumerate(elide) if e), default=None)
                wide = [" " * self.width if i == last else cell for i, cell in enumerate(row)]
                widths = self._fit(columns, headers, [wide])
                self._line(_join(headers, widths, right, [False] * len(columns)), bold=True)
            self._line(_join(row, widths, right, elide))
            out_console.file.flush()


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * max(0, width - cell_len(text))
    return gap + text if right else text + gap


def _join(
    row: Sequence[str], widths: Sequence[int], right: Sequence[bool], elide: Sequence[bool]
) -> str:
    parts = []
    for text, width, r, e in zip(row, widths, right, elide, strict=True):
        if e and cell_len(text) > width:
            text = set_cell_size(text, width - 1) + "…"
        parts.append(_pad(text, width, r))
    return _GAP.join(parts).rstrip()
