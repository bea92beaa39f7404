"""What every command shares: error handling, consoles, option types, JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console

from mqtier.errors import MqtierError

P = ParamSpec("P")
R = TypeVar("R")

err_console = Console(stderr=True)  # progress, logs, warnings, errors
out_console = Console()  # text-mode tables only; data for scripts goes through emit_*()

JsonOut = Annotated[
    bool, typer.Option("--json", help="Write JSON to stdout (see docs/cli-json.md).")
]
StoreDir = Annotated[
    Path,
    typer.Option(
        "--store", "-s", envvar="MQTIER_STORE", help="Store directory (or $MQTIER_STORE)."
    ),
]
ReadOnly = Annotated[
    bool,
    typer.Option(
        "--read-only",
        help="Never write to the store (automatic when another process holds its lock).",
    ),
]


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn an MqtierError into one line on stderr and the exit code of its class."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except MqtierError as exc:
            _report(bool(kwargs.get("json_out")), type(exc).__name__, str(exc), exc.exit_code)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            # `mqtier read ... | head`: the reader went away; that is not an error.
            sys.stderr.close()
            raise typer.Exit(0) from None
        except OSError as exc:  # disk full, permission denied, ...: one line, not a traceback
            where = f" ({exc.filename})" if exc.filename else ""
            _report(
                bool(kwargs.get("json_out")), type(exc).__name__, f"{exc.strerror or exc}{where}", 1
            )
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, typer.BadParameter):
            raise  # typer reports a bad parameter itself, with usage (exit 2)
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


def _report(json_out: bool, kind: str, message: str, exit_code: int) -> None:
    """The one line an error prints on stderr: text, or the JSON error object with --json."""
    if json_out:
        doc = {"type": kind, "message": message, "exit_code": exit_code}
        print(json.dumps({"error": doc}), file=sys.stderr)
    else:
        label = "internal error" if exit_code == 70 else "error"
        err_console.print(f"[bold red]{label}:[/] {message}", highlight=False, soft_wrap=True)


def emit_json(doc: Any) -> None:
    """One JSON document on stdout (bounded results)."""
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def emit_jsonl(docs: Iterable[Any]) -> None:
    """JSON Lines on stdout (streams of messages)."""
    out = sys.stdout.buffer
    for doc in docs:
        out.write(orjson.dumps(doc) + b"\n")
    out.flush()


def note(text: str) -> None:
    """A human line on stderr (kept out of stdout so pipes carry only data)."""
    err_console.print(text, highlight=False, soft_wrap=True)


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from ms digits, ISO 8601, or 'now'/'-5m'-style offsets."""
    import time
    from datetime import datetime

    t = text.strip()
    if t == "now":
        return int(time.time() * 1000)
    if t.lstrip("-").isdigit():
        return int(t)
    if t.startswith("-") and t[-1] in "smhd" and t[1:-1].isdigit():
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[t[-1]]
        return int((time.time() - int(t[1:-1]) * unit) * 1000)
    try:
        return int(datetime.fromisoformat(t).timestamp() * 1000)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a time (ms since epoch, ISO 8601, 'now' or '-5m')"
        ) from None


def parse_size(text: str) -> int:
    """Bytes from '64M', '1G', '4096', '512K' (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(t[-1]) + 1)
        t = t[:-1]
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a size (like 64M or 1G)") from None
    if value <= 0:
        raise typer.BadParameter(f"{text!r} must be positive")
    return value
