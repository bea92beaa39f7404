"""Java ``String.hashCode`` and the tag / index-key hashes built on it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtier.format.javahash import index_key_hash, java_string_hash, tags_code

INT_MIN = -(2**31)


def ref_hash(s: str) -> int:
    """Straightforward reference: ``h = 31*h + c`` over UTF-16 code units, as a signed int32."""
    raw = s.encode("utf-16-be")
    h = 0
    for i in range(0, len(raw), 2):
        h = (31 * h + int.from_bytes(raw[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def string_with_hash(prefix: str, target: int) -> str:
    """``prefix`` + 7 chars from 'A'..'_' whose Java hash is ``target`` (solved, not searched).

    hash(prefix + c0..c6) = hash(prefix)*31**7 + sum(c_i * 31**(6-i)) mod 2**32, and with
    c_i = 65 + d_i (d_i in 0..30) the digits d_i are the base-31 expansion of the residue.
    """
    n = 7
    ones = sum(31**j for j in range(n))
    residue = (target - ref_hash(prefix) * 31**n - 65 * ones) % 2**32
    assert residue < 31**n
    digits = []
    for _ in range(n):
        residue, d = divmod(residue, 31)
        digits.append(d)
    return prefix + "".join(chr(65 + d) for d in reversed(digits))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 97),
        ("abc", 96354),
        ("TAG1", 2567159),  # the tags code held by fixture store-b's ConsumeQueueExt units
        ("hello", 99162322),
        ("polygenelubricants", INT_MIN),  # Integer.MIN_VALUE
        ("Aa", 2112),  # the classic Java collision pair
        ("BB", 2112),
    ],
)
def test_known_java_values(text, expected):
    assert java_string_hash(text) == expected
    assert ref_hash(text) == expected


def test_surrogate_pair_hashes_as_two_code_units():
    # U+1F600 is the UTF-16 pair D83D DE00; hashing the code point 0x1F600 would give another value.
    emoji = "\U0001f600"
    assert java_string_hash(emoji) == 31 * 0xD83D + 0xDE00 == ref_hash(emoji)
    assert java_string_hash(emoji) != 0x1F600
    assert java_string_hash("a\U0001f600b") == ref_hash("a\U0001f600b")


def test_non_ascii_bmp():
    assert java_string_hash("\u00e9") == 0xE9
    assert java_string_hash("\u4e2d\u6587") == 31 * 0x4E2D + 0x6587


@given(st.text(max_size=200))
def test_matches_reference_loop(s):
    assert java_string_hash(s) == ref_hash(s)


@settings(max_examples=25)
@given(st.text(min_size=1, max_size=40), st.integers(1025, 3000))
def test_long_strings_use_the_fallback_path(unit, length):
    s = (unit * (length // len(unit) + 1))[:length]
    assert len(s.encode("utf-16-be")) // 2 > 1024
    assert java_string_hash(s) == ref_hash(s)


@pytest.mark.parametrize("n_units", [1023, 1024, 1025, 2048])
@pytest.mark.parametrize("char", ["x", "\u00e9", "\U0001f600"])
def test_power_table_boundary(n_units, char):
    per_char = len(char.encode("utf-16-be")) // 2
    s = char * (n_units // per_char) + "z" * (n_units % per_char)
    assert len(s.encode("utf-16-be")) // 2 == n_units
    assert java_string_hash(s) == ref_hash(s)


@given(st.text(max_size=50))
def test_result_is_a_signed_int32(s):
    assert INT_MIN <= java_string_hash(s) < 2**31


def test_tags_code():
    assert tags_code(None) == 0
    assert tags_code("") == 0
    assert tags_code("TAG1") == 2567159
    assert tags_code("polygenelubricants") == INT_MIN


@given(st.text(max_size=30), st.text(max_size=30))
def test_index_key_hash_is_abs_of_topic_hash_key(topic, key):
    h = ref_hash(f"{topic}#{key}")
    expected = 0 if h == INT_MIN else abs(h)
    assert index_key_hash(topic, key) == expected
    assert 0 <= index_key_hash(topic, key) < 2**31


def test_index_key_hash_maps_int_min_to_zero():
    s = string_with_hash("T#K", INT_MIN)
    topic, key = s.split("#", 1)
    assert ref_hash(f"{topic}#{key}") == INT_MIN
    assert java_string_hash(f"{topic}#{key}") == INT_MIN
    assert index_key_hash(topic, key) == 0


def test_index_key_hash_negative_hash_is_negated():
    s = string_with_hash("abc#k", -12345)
    topic, key = s.split("#", 1)
    assert index_key_hash(topic, key) == 12345
    s = string_with_hash("abc#k", INT_MIN + 1)
    topic, key = s.split("#", 1)
    assert index_key_hash(topic, key) == 2**31 - 1


@given(st.text(min_size=1, max_size=20), st.text(min_size=1000, max_size=1100))
def test_index_key_hash_long_keys_match_the_reference(topic, key):
    h = ref_hash(f"{topic}#{key}")
    assert index_key_hash(topic, key) == (0 if h == -(2**31) else abs(h))
