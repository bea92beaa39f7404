"""Parsers of the sizes, durations and times options take, each with a range it enforces.

Whatever a user types, a parser returns a value inside its range or raises
:class:`~mqtier.errors.ConfigError` (exit 2) with one line naming the option, the value and the
allowed range. Nothing that overflows a 64-bit field, is NaN or infinite, or carries junk gets
through to code that would fail later with an internal error.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from fractions import Fraction
from typing import Final

from mqtier.errors import ConfigError

# Far beyond any real store, object or budget, and far inside a signed 64-bit count of bytes.
MAX_SIZE: Final = 1 << 50  # 1 PiB
# 100 years: no TTL, age or pause is longer; in ms still far inside a signed 64-bit field.
MAX_DURATION_S: Final = 100 * 365 * 86400
# The last millisecond ISO 8601 can name (9999-12-31T23:59:59.999Z); times start at the epoch.
MAX_TIME_MS: Final = 253_402_300_799_999

_SIZE_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(
    r"(\d{1,20}(?:\.\d{1,20})?)\s*(?:([kmgtp])(?:i?b)?|b)?", re.IGNORECASE | re.ASCII
)
_DURATION_UNITS: Final = {
    "ms": Fraction(1, 1000),
    "": Fraction(1),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_DURATION = re.compile(r"(\d{1,20}(?:\.\d{1,20})?)\s*(ms|s|m|h|d)?", re.IGNORECASE | re.ASCII)
_RELATIVE = re.compile(r"-(\d{1,20})\s*(s|m|h|d)", re.IGNORECASE | re.ASCII)


def _fail(option: str | None, text: str, why: str) -> ConfigError:
    # Callers name the option; "value" only for library-style calls that have none.
    return ConfigError(f"{option or 'value'}: {_show(text)} {why}")


def _show(text: str) -> str:
    """The bad value, quoted, and cut short if someone pasted a book."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def human_size(n: int) -> str:
    for unit in ("P", "T", "G", "M", "K"):
        mult = _SIZE_UNITS[unit.lower()]
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return f"{n}"


def parse_size(
    text: str, option: str | None = None, *, minimum: int = 1, maximum: int = MAX_SIZE
) -> int:
    """Bytes from '64M', '1G', '4096', '512K', '1.5GiB' (binary units), in [minimum, maximum]."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise _fail(option, text, "is not a size (like 4096, 512K, 64M or 1G)")
    value = Fraction(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]
    if not minimum <= value <= maximum:
        raise _fail(
            option,
            text,
            f"is out of range: allowed {human_size(minimum)} to {human_size(maximum)} bytes",
        )
    return math.floor(value)


def parse_duration(
    text: str,
    option: str | None = None,
    *,
    minimum_s: float = 0.001,
    maximum_s: float = MAX_DURATION_S,
) -> float:
    """Seconds from '30s', '5m', '2h', '7d', '250ms' or plain seconds, in [minimum, maximum]."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise _fail(option, text, "is not a duration (like 250ms, 30s, 5m, 2h or 7d)")
    value = Fraction(m.group(1)) * _DURATION_UNITS[(m.group(2) or "").lower()]
    # Via str(): Fraction(0.001) is a hair above 1/1000, which would refuse "1ms" itself.
    if not Fraction(str(minimum_s)) <= value <= Fraction(str(maximum_s)):
        raise _fail(
            option,
            text,
            f"is out of range: allowed {_human_s(minimum_s)} to {_human_s(maximum_s)}",
        )
    return float(value)


def _human_s(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, mult in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= mult and seconds % mult == 0:
            return f"{int(seconds // mult)}{unit}"
    return f"{seconds:g}s"


def parse_time(text: str, option: str | None = None) -> int:
    """Milliseconds since the epoch from ms digits, ISO 8601, or 'now'/'-5m'-style offsets.

    Allowed: the epoch up to the end of year 9999 (what ISO 8601 can name).
    """
    t = text.strip()
    now_ms = int(time.time() * 1000)
    if t.lower() == "now":
        return now_ms
    if t.isascii() and t.isdigit():
        ms: int | Fraction = int(t) if len(t) <= 20 else MAX_TIME_MS + 1
    elif (rel := _RELATIVE.fullmatch(t)) is not None:
        back = Fraction(rel.group(1)) * _DURATION_UNITS[rel.group(2).lower()] * 1000
        ms = now_ms - back if back <= now_ms else -1
    else:
        ms = _iso_ms(option, text, t)
    if not 0 <= ms <= MAX_TIME_MS:
        raise _fail(
            option,
            text,
            "is out of range: allowed from the epoch (0) to 9999-12-31T23:59:59.999Z "
            f"({MAX_TIME_MS} ms)",
        )
    return int(ms)


def _iso_ms(option: str | None, text: str, t: str) -> int:
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        raise _fail(
            option, text, "is not a time (ms since the epoch, ISO 8601, 'now' or '-5m')"
        ) from None
    try:
        return int(when.timestamp() * 1000)  # naive means local time, as a user typing it means
    except (OverflowError, OSError, ValueError):
        # 0001-01-01 in a zone east of UTC, say: before the epoch anyway
        return -1 if when.replace(tzinfo=when.tzinfo or UTC).year < 1970 else MAX_TIME_MS + 1
