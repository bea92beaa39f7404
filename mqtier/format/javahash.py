"""Java ``String.hashCode`` and the RocketMQ hashes built on it (tag codes, index keys)."""

from __future__ import annotations

import operator
from functools import lru_cache
from typing import Final

_MASK32: Final = 0xFFFFFFFF
_POWERS_LEN: Final = 1024


# 31**k modulo 2**32 for k = 0, 1, 2, ...: a string of n code units hashes as one C-level
# sum(map(mul, reversed(units), _POWERS)) instead of a Python loop per character (map stops at
# the shorter input, so no slicing either).
_POWERS: Final = [pow(31, k, 1 << 32) for k in range(_POWERS_LEN)]


def _units(s: str) -> bytes | list[int]:
    if s.isascii():
        return s.encode("ascii")
    raw = s.encode("utf-16-be")  # Java strings are UTF-16: hash code units, not code points
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def _unsigned_hash(s: str) -> tuple[int, int]:
    """(``hashCode`` modulo 2**32, length in UTF-16 code units)."""
    units = _units(s)
    n = len(units)
    if n <= _POWERS_LEN:
        h: int = sum(map(operator.mul, reversed(units), _POWERS)) & _MASK32
    else:
        h = 0
        for c in units:
            h = (31 * h + c) & _MASK32
    return h, n


def _signed(h: int) -> int:
    return h - (1 << 32) if h & 0x80000000 else h


def java_string_hash(s: str) -> int:
    """``String.hashCode()`` of ``s`` as a signed 32-bit int."""
    return _signed(_unsigned_hash(s)[0])


@lru_cache(maxsize=4096)
def tags_code(tags: str | None) -> int:
    """Consume-queue tags code: ``TAGS.hashCode()``, or 0 without tags."""
    if not tags:
        return 0
    return java_string_hash(tags)


@lru_cache(maxsize=1024)
def _topic_prefix_hash(topic: str) -> int:
    return _unsigned_hash(f"{topic}#")[0]


def index_key_hash(topic: str, key: str) -> int:
    """IndexFile key hash: ``abs(hashCode(topic#key))``, with ``Integer.MIN_VALUE`` mapped to 0.

    ``hashCode(a + b) = hashCode(a) * 31**len(b) + hashCode(b)`` (mod 2**32), so the topic's
    part is computed once per topic and only the key's characters are hashed per message.
    """
    kh, n = _unsigned_hash(key)
    scale = _POWERS[n] if n < _POWERS_LEN else pow(31, n, 1 << 32)
    h = _signed((_topic_prefix_hash(topic) * scale + kh) & _MASK32)
    if h == -(2**31):
        return 0
    return -h if h < 0 else h
