"""What every command shares: error handling, consoles, option types, JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console

# The option parsers live in _parse; commands import them from here with the rest.
from mqtier.cli._json import versioned
from mqtier.cli._parse import parse_duration as parse_duration  # noqa: PLC0414
from mqtier.cli._parse import parse_size as parse_size  # noqa: PLC0414
from mqtier.cli._parse import parse_time as parse_time  # noqa: PLC0414
from mqtier.errors import MqtierError
from mqtier.redact import redact
from mqtier.store.store import Store

P = ParamSpec("P")
R = TypeVar("R")


class _PipeConsole(Console):
    """Rich's console exits 1 when the reader goes away (``mqtier inspect ... | head``); a
    reader that has seen enough is no error, so the broken pipe goes to ``handle_errors``,
    which exits 0 as for every other command."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        raise BrokenPipeError


err_console = Console(stderr=True)  # progress, logs, warnings, errors
out_console = _PipeConsole()  # text-mode tables only; data for scripts goes through emit_*()

JsonOut = Annotated[
    bool, typer.Option("--json", help="Write JSON to stdout (see docs/cli-json.md).")
]
StoreDir = Annotated[
    Path,
    typer.Option(
        "--store",
        "-s",
        envvar="MQTIER_STORE",
        metavar="DIR",
        help="Store directory (or $MQTIER_STORE).",
    ),
]


def _set_config(value: Path | None) -> Path | None:
    """``--config`` after the command (``mqtier offsets --config f.toml``) wins over the root's."""
    if value is not None:
        from mqtier.cli import _cold  # _cold imports this module

        _cold.config_path = value
    return value


ConfigPath = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="MQTIER_CONFIG",
        metavar="FILE",
        callback=_set_config,
        help="Config file (default ./mqtier.toml if present; see mqtier(1)).",
    ),
]


def open_store_to_read(path: Path) -> Store:
    """Open a store read-only (no byte written) and warn on stderr if it was left unclean."""
    st = Store.open(path)
    warning = st.health.warning(path)
    if warning:
        note(f"[yellow]warning:[/] {warning}")
    return st


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn an MqtierError into one line on stderr and the exit code of its class."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from mqtier.cli import _cold  # _cold imports this module

        _cold.opened_url = None  # tests run many commands in one process
        try:
            return func(*args, **kwargs)
        except MqtierError as exc:
            _report(
                bool(kwargs.get("json_out")),
                type(exc).__name__,
                str(exc) + _notes(exc),
                exc.exit_code,
                hint=_filled_in(exc.hint),
            )
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            # `mqtier read ... | head`: the reader went away; that is not an error.
            sys.stderr.close()
            raise typer.Exit(0) from None
        except OSError as exc:  # disk full, permission denied, ...: one line, not a traceback
            where = f" ({exc.filename})" if exc.filename else ""
            _report(
                bool(kwargs.get("json_out")),
                type(exc).__name__,
                f"{exc.strerror or exc}{where}{_notes(exc)}",
                1,
            )
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, typer.BadParameter):
            raise  # the root group reports a bad parameter in the one style (cli/__init__.py)
        except Exception as exc:
            if os.environ.get("MQTIER_DEBUG"):
                raise
            _report(
                bool(kwargs.get("json_out")),
                "InternalError",
                f"{type(exc).__name__}: {exc} (set MQTIER_DEBUG=1 for a traceback; please report it)",
                70,
            )
            raise typer.Exit(70) from None

    return wrapper


def _filled_in(hint: str | None) -> str | None:
    """A library hint with the command's own cold URL in place of ``--cold URL``."""
    from mqtier.cli._cold import with_cold_url  # _cold imports this module

    return with_cold_url(hint)


def _notes(exc: BaseException) -> str:
    """What a command added to an error on its way out (``exc.add_note``), on the same line."""
    return "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))


def _report(
    json_out: bool, kind: str, message: str, exit_code: int, *, hint: str | None = None
) -> None:
    """What an error prints on stderr: ``error: <what and where>`` and, when there is a command
    that would work, ``try: <it>`` on a second line; or the JSON error object with --json."""
    # Backend libraries quote URLs and options in their messages; none may carry a secret out.
    message = redact(message)
    if json_out:
        doc: dict[str, Any] = {"type": kind, "message": message, "exit_code": exit_code}
        if hint:
            doc["hint"] = redact(hint)
        print(json.dumps(versioned({"error": doc})), file=sys.stderr)
    else:
        label = "internal error" if exit_code == 70 else "error"
        # The message is data (paths, ids, option values): never rich markup, and never a
        # raw newline or escape sequence (a library quoting an argument): one line each.
        err_console.print(f"[bold red]{label}:[/] ", end="", highlight=False)
        err_console.print(one_line(message), markup=False, highlight=False, soft_wrap=True)
        if hint:
            err_console.print("[bold]try:[/] ", end="", highlight=False)
            err_console.print(one_line(redact(hint)), markup=False, highlight=False, soft_wrap=True)


def one_line(text: str, *, backslashes: bool = False) -> str:
    """``text`` with control characters as escapes (``\\n``, ``\\x1b``): one terminal line.

    With ``backslashes``, a backslash is written ``\\\\`` too, so that the escapes can be read
    back unambiguously (plain output in a pipe)."""
    if text.isprintable() and not (backslashes and "\\" in text):
        return text
    return "".join(
        ("\\\\" if backslashes else ch)
        if ch == "\\"
        else ch
        if ch.isprintable()
        else repr(ch)[1:-1]
        for ch in text
    )


def report_usage_error(json_out: bool, message: str, hint: str | None) -> None:
    """An option-parser error (unknown option, bad value, missing argument) in the one style."""
    _report(json_out, "UsageError", message, 2, hint=hint)


def emit_json(doc: Mapping[str, Any]) -> None:
    """One JSON document on stdout (bounded results), ``"version"`` first (docs/cli-json.md)."""
    sys.stdout.write(orjson.dumps(versioned(doc), option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def emit_jsonl(docs: Iterable[Any]) -> None:
    """JSON Lines on stdout (streams of messages)."""
    out = sys.stdout.buffer
    for doc in docs:
        out.write(orjson.dumps(doc) + b"\n")
    out.flush()


def note(text: str) -> None:
    """A human line on stderr (kept out of stdout so pipes carry only data), secrets masked."""
    err_console.print(redact(text), highlight=False, soft_wrap=True)
