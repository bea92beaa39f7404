"""Long waits on the cold tier, seen and bounded: a line per retry, and ``--timeout``.

The library never prints: :class:`~mqtier.backend.retrying.RetryingColdStore` tells
:func:`print_retry` of each retry, and the command's :class:`Deadline` stops requests and
retries once the time limit has passed (between requests, never cutting one in half).
"""

from __future__ import annotations

import time

import typer

from mqtier.backend.retrying import Deadline, RetryNotice
from mqtier.cli._common import err_console
from mqtier.cli._parse import parse_duration
from mqtier.errors import ConfigError
from mqtier.redact import redact

# The --timeout of the running command and when its parsing began (set by the option's
# callback, as --config sets _cold.config_path): the limit covers the whole command.
_given: str | None = None
_started: float = 0.0


def timeout_option(value: str | None) -> str | None:
    """Typer callback of --timeout: note when the command started; refuse a bad value now."""
    global _given, _started  # one command per process; reset on every parse
    _given, _started = value, time.monotonic()
    if value is not None:
        try:
            parse_duration(value, "--timeout")
        except ConfigError as exc:
            raise typer.BadParameter(str(exc).removeprefix("--timeout: ")) from None
    return value


def command_deadline(configured: str | None) -> Deadline | None:
    """The deadline --timeout (or $MQTIER_TIMEOUT, else the config file's) sets, if any."""
    text, option = (_given, "--timeout") if _given else (configured, "[cold] timeout")
    if not text:
        return None
    seconds = parse_duration(text, option)
    started = _started or time.monotonic()
    return Deadline(started + seconds, f"{option} {text.strip()}")


def print_retry(notice: RetryNotice) -> None:
    """``retrying GET .../LATEST (2/6) in 1.6 s: connection refused`` on stderr."""
    err_console.print(redact(str(notice)), markup=False, highlight=False, soft_wrap=True)
