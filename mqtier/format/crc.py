"""CRC32 of zlib's polynomial: what Java's ``CRC32``, RocketMQ's records and our objects use.

isal's is the same function, 4-5x faster on a 1 KiB body (ISA-L's folding with carry-less
multiply). Where no isal wheel exists for the platform, zlib's gives the same values, slower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

try:
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - platforms without an isal wheel
    from zlib import crc32 as _crc32

crc32: Final[Callable[..., int]] = _crc32
