"""Index key hashes for a whole dispatch batch at once (numpy).

The reput hashes two or more keys per message. One Python loop per key costs about 2 us,
which at 100k messages/s is a core by itself; here the characters of every key of a batch are
hashed in a handful of array operations.

``hashCode`` is a polynomial in 31 modulo 2**32. Over the concatenation of all keys (total
length ``T``), weighting the byte at position ``j`` by ``31**(T-1-j)`` and summing one key's
span gives that key's hash times ``31**(T-end)``, and 31 is odd, so it has an inverse modulo
2**32 that takes the extra factor off. Unsigned 64-bit arithmetic wraps modulo 2**64, a multiple
of 2**32, so overflow never changes the low 32 bits we keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from mqtier.format.javahash import _unsigned_hash

_MASK32: Final = np.uint64(0xFFFFFFFF)
_INV31: Final = pow(31, -1, 1 << 32)

_tables: dict[str, npt.NDArray[np.uint64]] = {}
Ints = npt.NDArray[np.int64]


def _powers(base: int, n: int, name: str) -> npt.NDArray[np.uint64]:
    """``base**k`` modulo 2**32 for k in 0..n-1 (cached, grown by doubling)."""
    table = _tables.get(name)
    if table is None or len(table) < n:
        size = max(n, 2 * len(table) if table is not None else 4096)
        steps = np.full(size, base, dtype=np.uint64)
        steps[0] = 1
        table = np.cumprod(steps, dtype=np.uint64) & _MASK32
        _tables[name] = table
    return table[:n]


def java_hashes_unsigned(strings: Sequence[str]) -> npt.NDArray[np.uint64]:
    """``String.hashCode()`` of every string, modulo 2**32 (as unsigned)."""
    n = len(strings)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    encoded = [s.encode("utf-8") for s in strings]
    joined = b"".join(encoded)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    hashes = span_hashes(np.frombuffer(joined, dtype=np.uint8), ends - lengths, ends)
    if not joined.isascii():
        # Java hashes UTF-16 code units, not UTF-8 bytes: redo the few non-ASCII strings.
        for i, s in enumerate(strings):
            if not s.isascii():
                hashes[i] = _unsigned_hash(s)[0]
    return hashes


def java_hashes(strings: Sequence[str]) -> npt.NDArray[np.int64]:
    """``String.hashCode()`` of every string, as signed 32-bit values."""
    return _signed(java_hashes_unsigned(strings))


def _signed(unsigned: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    as_int = unsigned.astype(np.int64)
    out: npt.NDArray[np.int64] = np.where(as_int >= 1 << 31, as_int - (1 << 32), as_int)
    return out


def index_key_hashes(full_keys: Sequence[str]) -> npt.NDArray[np.int64]:
    """:func:`~mqtier.format.javahash.index_key_hash` of each ``topic#key`` string."""
    return index_hashes_of(java_hashes_unsigned(full_keys))


def span_hashes(data: npt.NDArray[np.uint8], starts: Ints, ends: Ints) -> npt.NDArray[np.uint64]:
    """``String.hashCode()`` modulo 2**32 of each byte span ``data[starts[i]:ends[i]]`` read
    as text of one-byte characters (exact for ASCII spans only)."""
    total = len(data)
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64)
    weights = _powers(31, total, "31")[::-1]
    # sums[j] = weighted sum of data[0..j-1]; a span's weighted sum is a difference of two.
    sums = np.zeros(total + 1, dtype=np.uint64)
    np.cumsum(data.astype(np.uint64) * weights, dtype=np.uint64, out=sums[1:])
    span = sums[ends] - sums[starts]
    unscale = _powers(_INV31, total + 1, "inv31")[total - ends]
    out: npt.NDArray[np.uint64] = (span * unscale) & _MASK32
    return out


def powers_of_31(lengths: Ints) -> npt.NDArray[np.uint64]:
    """``31**n`` modulo 2**32 for each ``n`` in ``lengths``."""
    top = int(lengths.max()) + 1 if len(lengths) else 1
    table = _powers(31, top, "31")
    out: npt.NDArray[np.uint64] = table[lengths]
    return out


def index_hashes_of(unsigned: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """IndexFile key hashes from ``hashCode(topic#key)`` modulo 2**32."""
    out: npt.NDArray[np.int64] = np.abs(_signed(unsigned))
    out[out == 1 << 31] = 0  # abs(Integer.MIN_VALUE) stays negative in Java; RocketMQ uses 0
    return out
