"""The fast CRC32 must be zlib's function exactly: records and objects are checked with it."""

from __future__ import annotations

import mmap
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtier.format import crc
from mqtier.format.message import body_crc


@given(st.binary(max_size=20_000), st.integers(0, 2**32 - 1))
def test_it_is_zlibs_crc32_for_any_bytes_and_start_value(data: bytes, start: int) -> None:
    assert crc.crc32(data) == zlib.crc32(data)
    assert crc.crc32(data, start) == zlib.crc32(data, start)
    assert body_crc(data) == zlib.crc32(data) & 0x7FFFFFFF


def test_it_reads_slices_of_a_mapped_file_as_scans_pass_them() -> None:
    with mmap.mmap(-1, 1 << 16) as mm:
        mm[100:1124] = bytes(range(256)) * 4
        view = memoryview(mm)
        try:
            assert crc.crc32(view[100:1124]) == zlib.crc32(bytes(range(256)) * 4)
        finally:
            view.release()


def test_the_installed_dependency_is_the_one_in_use() -> None:
    pytest.importorskip("isal", reason="no isal wheel for this platform: zlib's CRC is used")
    # isal is a declared dependency: the zlib fallback is for platforms without its wheel, and
    # a broken import here would silently make every append and scan 4-5x slower on the CRC.
    assert crc.crc32.__module__.startswith("isal")
