"""What every command shares: error handling, consoles, option types, JSON output."""

from __future__ import annotations

import functools
import json
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
            if kwargs.get("json_out"):
                doc = {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
                print(json.dumps({"error": doc}), file=sys.stderr)
            else:
                err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            # `mqtier read ... | head`: the reader went away; that is not an error.
            sys.stderr.close()
            raise typer.Exit(0) from None

    return wrapper


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
